//! The order sale, on the real stack: products with limited stock, a coupon
//! sale, then orders from thousands of users (several products per order for
//! some; coupons held, not held and used twice), cancels at random moments,
//! while the saga, the inventory and the coupon pipelines are each SIGKILLed
//! at random moments at least 5 times and the broker is restarted once.
//! Then, from what read_committed consumers see, the order audit must hold:
//! versions 1, 2, 3 … and one settled outcome per order, stock conserved and
//! never negative and held exactly by the orders holding it, no coupon unit
//! used by two orders, one charge request per PAYMENT_PENDING order for the
//! right amount under the order's own payment id.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::coupon::{signal, Fixture, Instance};
use common::orders::{produce, spawn, stack, BrokerRestart, Tail, PIPELINES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_order::audit::{audit, Observed};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Discount};
use surge_schemas::inventory::{InventoryAction, InventoryCommand, InventoryEvent};
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderEvent, OrderItem, OrderState, OrderStatus, PaymentRequest,
};
use surge_schemas::{Contract, Money, TopicCodec};

/// Sizes: the issue's acceptance numbers by default; smaller with env vars.
fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_sale_with_crashes_and_a_broker_restart_keeps_every_order_invariant() {
    let orders = size("SURGE_TEST_ORDERS", 20_000);
    let users = size("SURGE_TEST_ORDER_USERS", 5_000);
    let kills_each = size("SURGE_TEST_KILLS_EACH", 5);
    let fx = Fixture::new("order-sale").await;
    let mut rng = StdRng::seed_from_u64(11);

    // Stock: 40 products, scarce enough that many orders are refused.
    let products: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    let admin: Vec<InventoryCommand> = products
        .iter()
        .enumerate()
        .map(|(i, p)| InventoryCommand {
            request_id: format!("admin-{p}"),
            product_id: p.clone(),
            requested_at: at(0),
            command: InventoryAction::CreateProduct {
                stock: (orders as i64 / 40) + 20 * i as i64,
            },
        })
        .collect();
    produce(&fx, &admin).await;
    // A coupon sale: half the users ask, a limited stock is issued.
    let coupons = [
        ("c-fixed", Discount::fixed(Money(1_000))),
        (
            "c-percent",
            Discount::percent(Money(1_000), Some(Money(5_000))),
        ),
    ];
    let mut coupon_cmds = Vec::new();
    for (c, d) in coupons {
        coupon_cmds.push(CouponCommand {
            request_id: format!("admin-{c}"),
            coupon_id: c.into(),
            requested_at: at(0),
            command: CouponAction::Create {
                stock: (users / 8) as i64,
                active_from: None,
                active_until: None,
                discount: Some(d),
            },
        });
        for u in (0..users).step_by(2) {
            coupon_cmds.push(CouponCommand {
                request_id: format!("issue-{c}-{u}"),
                coupon_id: c.into(),
                requested_at: at(0),
                command: CouponAction::Issue {
                    user_id: format!("u{u}"),
                },
            });
        }
    }
    produce(&fx, &coupon_cmds).await;

    // The orders, and cancels for about one in ten of them.
    let mut creates = Vec::with_capacity(orders);
    let mut cancels = Vec::new();
    for i in 0..orders {
        let order_id = format!("o{i}");
        let user = format!("u{}", rng.random_range(0..users));
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
            0 => Some("c-fixed".to_string()),
            1 => Some("c-percent".to_string()),
            _ => None,
        };
        let create = OrderCreate {
            order_id: order_id.clone(),
            user_id: user.clone(),
            items,
            currency: "KRW".into(),
            coupon_id,
            requested_at: at(1),
        };
        if rng.random_bool(0.1) {
            let who = if rng.random_bool(0.9) {
                user
            } else {
                "mallory".into()
            };
            cancels.push(OrderCancel {
                request_id: format!("cancel-{order_id}"),
                order_id,
                user_id: who,
                reason: Some("changed my mind".into()),
                requested_at: at(2),
            });
        }
        creates.push(create);
    }

    let mut running: BTreeMap<&str, Instance> =
        PIPELINES.iter().map(|p| (*p, spawn(&fx, p))).collect();

    // Orders and cancels arrive in chunks while pipelines die.
    let producer = {
        let prefix = fx.prefix.clone();
        let (creates, cancels) = (creates.clone(), cancels.clone());
        tokio::spawn(async move {
            let fx = Fixture::reuse(&prefix).await;
            let chunks = 20;
            let (cs, ks) = (
                creates.len().div_ceil(chunks),
                cancels.len().div_ceil(chunks).max(1),
            );
            for (i, chunk) in creates.chunks(cs).enumerate() {
                produce(&fx, chunk).await;
                if let Some(k) = cancels.chunks(ks).nth(i) {
                    produce(&fx, k).await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    let mut kills: BTreeMap<&str, usize> = PIPELINES.iter().map(|p| (*p, 0)).collect();
    let mut broker_restarted = false;
    let started = Instant::now();
    while kills.values().any(|k| *k < kills_each) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2_500))).await;
        let candidates: Vec<&str> = PIPELINES
            .iter()
            .copied()
            .filter(|p| kills[p] < kills_each)
            .collect();
        let victim = candidates[rng.random_range(0..candidates.len())];
        let child = running.get_mut(victim).unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            // Fenced after the broker restart (exit 3) is a supervisor's job.
            assert_eq!(
                status.code(),
                Some(3),
                "{victim} exited on its own with {status}; see {}",
                fx.logs.display()
            );
        } else {
            signal(child, "KILL");
            child.wait().unwrap();
        }
        *kills.get_mut(victim).unwrap() += 1;
        eprintln!(
            "SIGKILL {victim} ({} so far) at {:?}",
            kills[victim],
            started.elapsed()
        );
        running.insert(victim, spawn(&fx, victim));
        if !broker_restarted && kills.values().sum::<usize>() == kills_each {
            eprintln!("broker restart at {:?}", started.elapsed());
            let guard = BrokerRestart;
            stack(&["kill", "kafka"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(guard);
            broker_restarted = true;
        }
    }
    producer.await.unwrap();
    eprintln!("all sent, {kills:?} at {:?}", started.elapsed());

    // Settle: every order has a settled outcome on order-status.
    let status_codec: TopicCodec<OrderStatus> = common::codec(&fx.settings).await;
    let mut status_tail = Tail::new(&fx, OrderStatus::TOPIC);
    let distinct: HashSet<&str> = creates.iter().map(|c| c.order_id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let statuses = loop {
        // A pipeline fenced after the broker restart is restarted, as a supervisor would.
        for p in PIPELINES {
            let child = running.get_mut(p).unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(3), "{p} exited with {status}");
                running.insert(p, spawn(&fx, p));
            }
        }
        status_tail.catch_up(Duration::from_secs(2));
        let statuses = status_tail.decoded(&status_codec).await;
        let settled: HashSet<&str> = statuses
            .iter()
            .filter(|s| {
                s.event == OrderEvent::Transition
                    && (s.state.is_terminal() || s.state == OrderState::PaymentPending)
            })
            .map(|s| s.order_id.as_str())
            .collect();
        let open = distinct.iter().filter(|o| !settled.contains(**o)).count();
        eprintln!("{open} orders not settled yet at {:?}", started.elapsed());
        if open == 0 {
            break statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{open} orders never settled; see {}",
            fx.logs.display()
        );
    };
    // Late releases and redemptions of settled orders: let them land.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let read = |base: &'static str| {
        let mut t = Tail::new(&fx, base);
        t.catch_up(Duration::from_secs(3));
        t
    };
    let payments: Vec<PaymentRequest> = read(PaymentRequest::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let events: Vec<InventoryEvent> = read(InventoryEvent::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let decisions: Vec<CouponDecision> = read(CouponDecision::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;

    let report = audit(&Observed {
        creates: &creates,
        statuses: &statuses,
        payments: &payments,
        inventory: &events,
        coupons: &decisions,
    });
    eprintln!("{report:#?}");
    assert!(report.holds(), "{:#?}", report.violations);
    assert_eq!(report.orders, orders);
    for state in ["PAYMENT_PENDING", "REJECTED", "CANCELLED"] {
        assert!(
            report.by_final_state.get(state).copied().unwrap_or(0) > 0,
            "no {state}: {:?}",
            report.by_final_state
        );
    }
    assert!(report.cancel_refusals > 0, "some cancels could not apply");
    let redeemed = decisions
        .iter()
        .filter(|d| d.outcome == surge_schemas::coupon::Outcome::Redeemed)
        .count();
    let refused = decisions
        .iter()
        .filter(|d| d.outcome == surge_schemas::coupon::Outcome::RedeemRejected)
        .count();
    assert!(
        redeemed > 0 && refused > 0,
        "coupons held and not held: {redeemed} / {refused}"
    );
    assert!(broker_restarted);
}
