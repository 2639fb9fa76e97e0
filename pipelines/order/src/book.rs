//! The order book of one partition: every order the saga has seen, where
//! its saga stands, and an index of the open ones (for the gauges).
//!
//! A change replaces one order's entry as a whole (`before` → `after`), so
//! revert is exact and the changelog is one record per order: key orderId,
//! value the entry as JSON (orders are small and rare next to coupon
//! requests; a readable changelog is worth the bytes). Fields added since
//! the first layout default when absent (`#[serde(default)]`), so every
//! older entry still restores; an entry without `fingerprint` restores as
//! an unchecked order (see [`crate::identity`]). Orders are never
//! deleted: a repeated order-create must find its order, and a cancel of
//! a finished order must be answered with its state.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use surge_engine::{ChangelogRecord, Millis, PartitionState};
use surge_schemas::order::OrderState;

use crate::identity::Fingerprint;

/// Where one product line's reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineStock {
    /// Not asked yet: the order's coupon is asked first, and stock only once
    /// it is redeemed, so an order refused for its coupon never holds units
    /// that other orders of a flash sale are being refused for meanwhile.
    Waiting,
    /// Reserve sent, no answer yet.
    Asked,
    Reserved,
    /// The inventory said no (see the order's reason).
    Refused,
    /// Commit sent (the order is paid): the units are sold.
    Sold,
    /// Release sent (compensation, or a refund of a paid order: the
    /// inventory then returns sold units); the units go back whatever the
    /// answer.
    Releasing,
    Released,
}

/// Where the order's charge or its refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStep {
    /// payment-request sent, no definite answer yet.
    Asked,
    Approved,
    Declined,
}

/// A cancel accepted while the payment is in flight (or refunding): it
/// completes when the payment pipeline answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelling {
    pub request_id: String,
    pub reason: String,
}

/// Where the order's coupon redemption stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CouponUse {
    Asked,
    /// Redeemed; the order's payable amount is reduced by `off` (minor units).
    Redeemed {
        off: i64,
    },
    Refused,
    Releasing,
    Released,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i32,
    /// Minor units (two decimals).
    pub unit_price: i64,
    pub stock: LineStock,
}

/// The saga's states, as the order-status contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Created,
    PaymentPending,
    Paid,
    Rejected,
    PaymentFailed,
    Cancelled,
}

impl Stage {
    pub fn contract(self) -> OrderState {
        match self {
            Stage::Created => OrderState::Created,
            Stage::PaymentPending => OrderState::PaymentPending,
            Stage::Paid => OrderState::Paid,
            Stage::Rejected => OrderState::Rejected,
            Stage::PaymentFailed => OrderState::PaymentFailed,
            Stage::Cancelled => OrderState::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.contract().is_terminal()
    }

    /// The label of the open-sagas gauge.
    pub fn label(self) -> &'static str {
        self.contract().symbol()
    }
}

/// One order and its saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub currency: String,
    pub lines: Vec<Line>,
    pub coupon_id: Option<String>,
    pub coupon: Option<CouponUse>,
    pub stage: Stage,
    /// Version of the last order-status transition (1 for the first).
    pub version: i32,
    /// Sum of the lines before the coupon (minor units).
    pub total: i64,
    /// What is charged: total minus the coupon's discount.
    pub payable: i64,
    pub payment_id: Option<String>,
    /// The order-create record's timestamp.
    pub created_at: Millis,
    pub reason: Option<String>,
    /// Cancel request ids already answered (a retried cancel gets no second answer).
    pub cancels: Vec<String>,
    /// The charge (its id is `payment_id`), once asked.
    #[serde(default)]
    pub charge: Option<PaymentStep>,
    /// When the charge was asked: payment expiry counts from here.
    #[serde(default)]
    pub charge_asked_at: Option<Millis>,
    /// The refund of the charge, once asked.
    #[serde(default)]
    pub refund_id: Option<String>,
    #[serde(default)]
    pub refund: Option<PaymentStep>,
    /// A cancel waiting for the payment (or the refund) to resolve.
    #[serde(default)]
    pub cancelling: Option<Cancelling>,
    /// A placeholder: cancels were read for this order id before any
    /// order-create (their refusals are in `cancels`); an order-create
    /// replaces it with the order.
    #[serde(default)]
    pub awaiting_create: bool,
    /// What the order-create that made this order asked for: a repeat with
    /// another fingerprint is a reused order id. `None` for a placeholder,
    /// and for an order restored from a changelog written before
    /// fingerprints ("unchecked": any repeat is taken as a retry). Left out
    /// of the JSON when `None`, so such entries keep their old layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

impl Order {
    /// Every reservation and the redemption have been answered well.
    pub fn all_held(&self) -> bool {
        self.lines.iter().all(|l| l.stock == LineStock::Reserved)
            && matches!(self.coupon, None | Some(CouponUse::Redeemed { .. }))
    }

    pub fn discount(&self) -> i64 {
        match self.coupon {
            Some(CouponUse::Redeemed { off }) => off,
            _ => 0,
        }
    }
}

/// All orders of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    orders: HashMap<String, Order>,
    /// Open (non-terminal) orders by creation time: the oldest is first.
    open: BTreeSet<(Millis, String)>,
}

impl OrderBook {
    pub fn order(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id)
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Open orders, oldest first.
    pub fn open(&self) -> impl Iterator<Item = &Order> {
        self.open.iter().filter_map(|(_, id)| self.orders.get(id))
    }

    fn put(&mut self, order: Order) {
        if let Some(old) = self.orders.get(&order.order_id) {
            self.open.remove(&(old.created_at, old.order_id.clone()));
        }
        if !order.stage.is_terminal() {
            self.open.insert((order.created_at, order.order_id.clone()));
        }
        self.orders.insert(order.order_id.clone(), order);
    }

    fn remove(&mut self, order_id: &str) {
        if let Some(old) = self.orders.remove(order_id) {
            self.open.remove(&(old.created_at, old.order_id));
        }
    }
}

/// One order's entry replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    pub before: Option<Box<Order>>,
    pub after: Box<Order>,
}

impl PartitionState for OrderBook {
    type Change = OrderChange;

    fn apply(&mut self, change: &OrderChange) {
        self.put((*change.after).clone());
    }

    fn revert(&mut self, change: &OrderChange) {
        match &change.before {
            Some(before) => self.put((**before).clone()),
            None => self.remove(&change.after.order_id),
        }
    }

    fn changelog_records(&self, change: &OrderChange, out: &mut Vec<ChangelogRecord>) {
        // The entry as it stands at commit (last value per key wins).
        let id = &change.after.order_id;
        if let Some(order) = self.orders.get(id) {
            let value = serde_json::to_vec(order).expect("an order serializes");
            out.push((id.as_bytes().to_vec(), Some(value)));
        }
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let id = std::str::from_utf8(key).map_err(|e| format!("order id: {e}"))?;
        match value {
            None => self.remove(id),
            Some(v) => {
                let order: Order =
                    serde_json::from_slice(v).map_err(|e| format!("order {id}: {e}"))?;
                if order.order_id != id {
                    return Err(format!("order {id} holds the entry of {}", order.order_id));
                }
                self.put(order);
            }
        }
        Ok(())
    }

    fn approx_bytes(&self) -> usize {
        self.orders
            .values()
            .map(|o| {
                std::mem::size_of::<Order>()
                    + o.order_id.len() * 3
                    + o.user_id.len()
                    + o.lines
                        .iter()
                        .map(|l| 48 + l.product_id.len())
                        .sum::<usize>()
                    + o.cancels.iter().map(String::len).sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::laws;

    fn order(id: &str, stage: Stage, version: i32, at: Millis) -> Order {
        Order {
            order_id: id.into(),
            user_id: "u".into(),
            currency: "KRW".into(),
            lines: vec![Line {
                product_id: "p".into(),
                quantity: 2,
                unit_price: 150,
                stock: LineStock::Asked,
            }],
            coupon_id: Some("c".into()),
            coupon: Some(CouponUse::Redeemed { off: 30 }),
            stage,
            version,
            total: 300,
            payable: 270,
            payment_id: None,
            created_at: at,
            reason: None,
            cancels: vec!["k".into()],
            charge: Some(PaymentStep::Asked),
            charge_asked_at: Some(at),
            refund_id: None,
            refund: None,
            cancelling: None,
            awaiting_create: false,
            fingerprint: Some(Fingerprint(0x5eed_0000_0000_0000_0000_0000_0000_0001)),
        }
    }

    fn changes() -> Vec<OrderChange> {
        let a1 = order("a", Stage::Created, 1, 5);
        let a2 = order("a", Stage::PaymentPending, 2, 5);
        let b1 = order("b", Stage::Created, 1, 3);
        let b2 = order("b", Stage::Cancelled, 2, 3);
        vec![
            OrderChange {
                before: None,
                after: Box::new(a1.clone()),
            },
            OrderChange {
                before: None,
                after: Box::new(b1.clone()),
            },
            OrderChange {
                before: Some(Box::new(a1)),
                after: Box::new(a2),
            },
            OrderChange {
                before: Some(Box::new(b1)),
                after: Box::new(b2),
            },
        ]
    }

    #[test]
    fn the_book_obeys_the_state_laws() {
        let all = changes();
        laws::assert_apply_revert_identity(&OrderBook::default(), &all);
        for n in 0..=all.len() {
            let (state, log) = laws::changelog_of::<OrderBook>(&all[..n]);
            laws::assert_restore_rebuilds(&state, &log);
        }
    }

    /// An entry as the version before fingerprints wrote it (byte for byte
    /// what `serde_json` made of its `Order`).
    const BEFORE_FINGERPRINTS: &str = r#"{"order_id":"a","user_id":"u","currency":"KRW","lines":[{"product_id":"p","quantity":2,"unit_price":150,"stock":"Reserved"}],"coupon_id":"c","coupon":{"Redeemed":{"off":30}},"stage":"PaymentPending","version":2,"total":300,"payable":270,"payment_id":"pay_1","created_at":5,"reason":null,"cancels":["k"],"charge":"Asked","charge_asked_at":7,"refund_id":null,"refund":null,"cancelling":null,"awaiting_create":false}"#;

    #[test]
    fn an_entry_written_before_fingerprints_restores_unchecked() {
        let mut book = OrderBook::default();
        book.restore(b"a", Some(BEFORE_FINGERPRINTS.as_bytes()))
            .unwrap();
        let o = book.order("a").expect("restored");
        assert_eq!(o.fingerprint, None, "unchecked: any repeat is a retry");
        let mut expected = order("a", Stage::PaymentPending, 2, 5);
        expected.lines[0].stock = LineStock::Reserved;
        expected.payment_id = Some("pay_1".into());
        expected.charge_asked_at = Some(7);
        expected.fingerprint = None;
        assert_eq!(o, &expected, "every other field as it was written");
        // Written back unchanged: the old layout, with no fingerprint key.
        let change = OrderChange {
            before: None,
            after: Box::new(o.clone()),
        };
        let mut out = Vec::new();
        book.changelog_records(&change, &mut out);
        assert_eq!(
            out,
            [(b"a".to_vec(), Some(BEFORE_FINGERPRINTS.as_bytes().to_vec()))]
        );
    }

    #[test]
    fn an_entry_of_the_first_layout_restores_unchecked() {
        // Before payments, expiry, placeholders and fingerprints.
        let first = r#"{"order_id":"b","user_id":"u","currency":"KRW","lines":[],"coupon_id":null,"coupon":null,"stage":"Rejected","version":1,"total":0,"payable":0,"payment_id":null,"created_at":3,"reason":"r","cancels":[]}"#;
        let mut book = OrderBook::default();
        book.restore(b"b", Some(first.as_bytes())).unwrap();
        let o = book.order("b").unwrap();
        assert_eq!(o.fingerprint, None);
        assert!(!o.awaiting_create);
        assert_eq!((o.stage, o.version), (Stage::Rejected, 1));
    }

    #[test]
    fn an_entry_keeps_its_fingerprint_through_the_changelog() {
        let a = order("a", Stage::Created, 1, 5);
        let change = OrderChange {
            before: None,
            after: Box::new(a.clone()),
        };
        let mut book = OrderBook::default();
        book.apply(&change);
        let mut out = Vec::new();
        book.changelog_records(&change, &mut out);
        let value = out[0].1.clone().unwrap();
        let text = String::from_utf8(value.clone()).unwrap();
        assert!(
            text.ends_with(
                r#","awaiting_create":false,"fingerprint":"5eed0000000000000000000000000001"}"#
            ),
            "{text}"
        );
        let mut restored = OrderBook::default();
        restored.restore(b"a", Some(&value)).unwrap();
        assert_eq!(restored.order("a"), Some(&a));

        // A damaged fingerprint is an error, never an unchecked order.
        let bad = text.replace("5eed0000000000000000000000000001", "5eed");
        let err = OrderBook::default()
            .restore(b"a", Some(bad.as_bytes()))
            .unwrap_err();
        assert!(err.contains("fingerprint"), "{err}");
    }

    #[test]
    fn only_open_orders_are_indexed_oldest_first() {
        let mut book = OrderBook::default();
        for c in &changes()[..2] {
            book.apply(c);
        }
        let open: Vec<&str> = book.open().map(|o| o.order_id.as_str()).collect();
        assert_eq!(open, ["b", "a"], "b was created first");
        for c in &changes()[2..] {
            book.apply(c);
        }
        let open: Vec<&str> = book.open().map(|o| o.order_id.as_str()).collect();
        assert_eq!(open, ["a"], "a cancelled order is no longer open");
        assert_eq!(book.len(), 2);
    }
}
