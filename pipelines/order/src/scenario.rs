//! An order flash sale, deterministic for a seed: products with scarce
//! stock, a coupon sale (half the users ask, fewer units than askers),
//! orders of one to three lines from many users (some with a coupon they
//! hold, some with one they do not), and cancels for about one in ten
//! orders — some retried, some sent twice under another request id — each
//! due some waves after its order, so they land before, during and after
//! its payment. Used by `surge loadgen --orders` and by the tests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_schemas::coupon::{CouponAction, CouponCommand, Discount};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};
use surge_schemas::order::{OrderCancel, OrderCreate, OrderItem};
use surge_schemas::Money;

/// What to generate.
#[derive(Debug, Clone)]
pub struct OrderScenario {
    /// Every id starts with it: products `<prefix>-p<n>`, coupons
    /// `<prefix>-c-fixed` and `<prefix>-c-percent`, users `<prefix>-u<n>`,
    /// orders `<prefix>-o<n>`.
    pub prefix: String,
    pub orders: usize,
    pub users: usize,
    pub products: usize,
    /// Orders are sent in this many waves; cancels up to 8 waves later.
    pub waves: usize,
    pub seed: u64,
}

/// The generated sale, in the order to send it.
#[derive(Debug, Clone, Default)]
pub struct OrderSale {
    /// Products and their stock (inventory-commands).
    pub products: Vec<InventoryCommand>,
    /// The coupons and the coupon sale (coupon-issue).
    pub coupons: Vec<CouponCommand>,
    /// Wave `i`: the orders to send, then the cancels due then.
    pub waves: Vec<(Vec<OrderCreate>, Vec<OrderCancel>)>,
}

impl OrderSale {
    pub fn creates(&self) -> impl Iterator<Item = &OrderCreate> {
        self.waves.iter().flat_map(|(c, _)| c)
    }

    /// Every cancel sent (a retried one once per send).
    pub fn cancels(&self) -> impl Iterator<Item = &OrderCancel> {
        self.waves.iter().flat_map(|(_, k)| k)
    }
}

fn epoch(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl OrderScenario {
    pub fn generate(&self) -> OrderSale {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let px = &self.prefix;
        let products: Vec<String> = (0..self.products).map(|i| format!("{px}-p{i}")).collect();
        // Scarce: about one order's worth per product per `products` orders,
        // more for later products, so many orders are refused and many pass.
        let per = (self.orders / self.products.max(1)) as i64;
        let product_cmds = products
            .iter()
            .enumerate()
            .map(|(i, p)| InventoryCommand {
                request_id: format!("admin-{p}"),
                product_id: p.clone(),
                requested_at: epoch(0),
                command: InventoryAction::CreateProduct {
                    stock: per + 20 * i as i64,
                },
            })
            .collect();
        let coupon_ids = [format!("{px}-c-fixed"), format!("{px}-c-percent")];
        let discounts = [
            Discount::fixed(Money(1_000)),
            Discount::percent(Money(1_000), Some(Money(5_000))),
        ];
        let mut coupons = Vec::new();
        for (c, d) in coupon_ids.iter().zip(discounts) {
            coupons.push(CouponCommand {
                request_id: format!("admin-{c}"),
                coupon_id: c.clone(),
                requested_at: epoch(0),
                command: CouponAction::Create {
                    stock: (self.users / 8) as i64,
                    active_from: None,
                    active_until: None,
                    discount: Some(d),
                },
            });
            for u in (0..self.users).step_by(2) {
                coupons.push(CouponCommand {
                    request_id: format!("issue-{c}-{u}"),
                    coupon_id: c.clone(),
                    requested_at: epoch(0),
                    command: CouponAction::Issue {
                        user_id: format!("{px}-u{u}"),
                    },
                });
            }
        }

        let waves = self.waves.max(1);
        let per_wave = self.orders.div_ceil(waves).max(1);
        let mut out: Vec<(Vec<OrderCreate>, Vec<OrderCancel>)> =
            vec![Default::default(); waves + 8];
        for i in 0..self.orders {
            let order_id = format!("{px}-o{i}");
            let user = format!("{px}-u{}", rng.random_range(0..self.users.max(1)));
            let mut items: Vec<OrderItem> = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                let p = products[rng.random_range(0..products.len())].clone();
                if items.iter().all(|it| it.product_id != p) {
                    items.push(OrderItem {
                        product_id: p,
                        quantity: rng.random_range(1..=3),
                        unit_price: Money(rng.random_range(500..50_000)),
                    });
                }
            }
            let coupon_id = match rng.random_range(0..5) {
                0 => Some(coupon_ids[0].clone()),
                1 => Some(coupon_ids[1].clone()),
                _ => None,
            };
            let wave = i / per_wave;
            if rng.random_bool(0.1) {
                let who = if rng.random_bool(0.9) {
                    user.clone()
                } else {
                    "mallory".into()
                };
                let cancel = OrderCancel {
                    request_id: format!("cancel-{order_id}"),
                    order_id: order_id.clone(),
                    user_id: who,
                    reason: Some("changed my mind".into()),
                    requested_at: epoch(2),
                };
                out[wave + rng.random_range(0..8)].1.push(cancel.clone());
                if rng.random_bool(0.1) {
                    // A retried cancel, and a second cancel of the same order.
                    out[wave + rng.random_range(0..8)].1.push(cancel.clone());
                    let again = OrderCancel {
                        request_id: format!("again-{order_id}"),
                        ..cancel
                    };
                    out[wave + rng.random_range(0..8)].1.push(again);
                }
            }
            out[wave].0.push(OrderCreate {
                order_id,
                user_id: user,
                items,
                currency: "KRW".into(),
                coupon_id,
                requested_at: epoch(1),
            });
        }
        OrderSale {
            products: product_cmds,
            coupons,
            waves: out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(seed: u64) -> OrderScenario {
        OrderScenario {
            prefix: "s".into(),
            orders: 1_000,
            users: 200,
            products: 10,
            waves: 5,
            seed,
        }
    }

    #[test]
    fn a_sale_is_deterministic_and_has_every_kind_of_order() {
        let sale = scenario(3).generate();
        assert_eq!(sale.creates().count(), 1_000);
        assert_eq!(sale.products.len(), 10);
        let again = scenario(3).generate();
        assert_eq!(
            sale.creates().collect::<Vec<_>>(),
            again.creates().collect::<Vec<_>>()
        );
        assert!(sale.creates().any(|c| c.coupon_id.is_some()));
        assert!(sale.creates().any(|c| c.items.len() > 1));
        let cancels: Vec<_> = sale.cancels().collect();
        assert!(cancels.len() > 50, "about one order in ten is cancelled");
        assert!(cancels.iter().any(|k| k.user_id == "mallory"));
        assert!(cancels.iter().any(|k| k.request_id.starts_with("again-")));
        // Every cancel comes no earlier than its order's wave.
        for (w, (_, ks)) in sale.waves.iter().enumerate() {
            for k in ks {
                let created = sale
                    .waves
                    .iter()
                    .position(|(cs, _)| cs.iter().any(|c| c.order_id == k.order_id))
                    .unwrap();
                assert!(created <= w, "{} cancelled before its wave", k.order_id);
            }
        }
    }
}
