//! Invariant 5 of DESIGN.md, checked from the outside: from what was sent
//! (order-create, order-cancel), what read_committed consumers see on
//! order-status, payment-request, inventory-result and coupon-result, and —
//! when given — the payment provider's own ledger. Used by the tests and
//! `surge verify`, so both prove the same thing.
//!
//! Checked, once every order has settled:
//! - every order sent has a history of transitions with versions 1, 2, 3 …
//!   ending in a terminal state, with nothing after it — except that a PAID
//!   order may be cancelled (refunded) once;
//! - every cancel request gets exactly one answer (CANCELLED naming it, or
//!   CANCEL_REFUSED);
//! - per product, every inventory decision conserves stock (available +
//!   reserved + sold = created, none negative), and the final reserved and
//!   sold units equal what the PAYMENT_PENDING and PAID orders hold — so
//!   every rejected, failed or cancelled order gave its units back, once;
//! - no coupon unit is used by two orders at once, and the units in use at
//!   the end are exactly those of PAYMENT_PENDING and PAID orders (every
//!   other order's coupon is usable again);
//! - payment-request holds at most one CHARGE per order, under the order's
//!   charge id, for its total after the coupon's discount, and at most one
//!   REFUND, under its refund id, of that charge and amount;
//! - from the provider's ledger: every PAID order was charged exactly once,
//!   no other order keeps a net charge, every order whose approved charge
//!   was followed by a cancel or expiry was refunded exactly once, and
//!   charges minus refunds equal the total of the PAID orders.

use std::collections::{BTreeMap, HashMap, HashSet};

use surge_schemas::coupon::{CouponDecision, Discount, Outcome};
use surge_schemas::inventory::InventoryEvent;
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderEvent, OrderState, OrderStatus, PaymentKind, PaymentRequest,
};
use surge_schemas::Money;

use crate::payment::{charge_id, refund_id};

/// One definite payment in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPayment {
    /// The idempotency key it was made under.
    pub key: String,
    pub kind: PaymentKind,
    pub approved: bool,
    pub order_id: String,
    /// Minor units.
    pub amount: i64,
}

/// What the audit read, each in log order per partition.
pub struct Observed<'a> {
    pub creates: &'a [OrderCreate],
    pub cancels: &'a [OrderCancel],
    pub statuses: &'a [OrderStatus],
    pub payments: &'a [PaymentRequest],
    pub inventory: &'a [InventoryEvent],
    pub coupons: &'a [CouponDecision],
    /// The provider's ledger; `None` skips the money checks.
    pub ledger: Option<&'a [LedgerPayment]>,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct OrderAudit {
    pub orders: usize,
    pub by_final_state: BTreeMap<&'static str, usize>,
    pub cancel_refusals: usize,
    /// PAID orders later cancelled with a refund.
    pub refunded_after_paid: usize,
    pub late_charges_refunded: usize,
    pub products: usize,
    pub payment_requests: usize,
    /// From the ledger: approved charges and refunds, minor units.
    pub charged: i64,
    pub refunded: i64,
    /// Human-readable violations with examples; empty = the invariants hold.
    pub violations: Vec<String>,
}

impl OrderAudit {
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, what: &str, examples: &[String]) {
        if !examples.is_empty() {
            self.violations.push(format!(
                "{what}: {} case(s), e.g. {:?}",
                examples.len(),
                &examples[..examples.len().min(3)]
            ));
        }
    }
}

pub fn audit(seen: &Observed<'_>) -> OrderAudit {
    let mut report = OrderAudit::default();

    // The first order-create per order id is the order (repeats get no saga).
    let mut created: BTreeMap<&str, &OrderCreate> = BTreeMap::new();
    for c in seen.creates {
        created.entry(c.order_id.as_str()).or_insert(c);
    }
    report.orders = created.len();

    // Histories.
    let mut history: HashMap<&str, Vec<&OrderStatus>> = HashMap::new();
    let mut answers: HashMap<&str, usize> = HashMap::new();
    let mut late_refunds: Vec<&OrderStatus> = Vec::new();
    for s in seen.statuses {
        match s.event {
            OrderEvent::Transition => history.entry(s.order_id.as_str()).or_default().push(s),
            OrderEvent::CancelRefused => report.cancel_refusals += 1,
            OrderEvent::LateChargeRefunded => late_refunds.push(s),
        }
        if let Some(k) = s.cancel_request_id.as_deref() {
            *answers.entry(k).or_default() += 1;
        }
    }
    report.late_charges_refunded = late_refunds.len();
    let mut final_state: HashMap<&str, &OrderStatus> = HashMap::new();
    let (mut unsent, mut no_history, mut bad_versions, mut bad_ends) =
        (vec![], vec![], vec![], vec![]);
    for (id, h) in &history {
        if !created.contains_key(id) {
            unsent.push(id.to_string());
        }
        let versions: Vec<i32> = h.iter().map(|s| s.version).collect();
        if versions != (1..=h.len() as i32).collect::<Vec<_>>() {
            bad_versions.push(format!("{id}: {versions:?}"));
        }
        let last = h.last().expect("a history has a record");
        let states: Vec<OrderState> = h.iter().map(|s| s.state).collect();
        let first_end = states.iter().position(|s| s.is_terminal());
        // Nothing follows a terminal state but a refund of a paid order.
        let well_ended = match first_end {
            Some(i) if i + 1 == states.len() => true,
            Some(i) if i + 2 == states.len() => {
                states[i] == OrderState::Paid && states[i + 1] == OrderState::Cancelled
            }
            _ => false,
        };
        if well_ended && states.len() >= 2 && states[states.len() - 2] == OrderState::Paid {
            report.refunded_after_paid += 1;
        }
        if !well_ended {
            let states: Vec<&str> = h.iter().map(|s| s.state.symbol()).collect();
            bad_ends.push(format!("{id}: {states:?}"));
        }
        final_state.insert(id, last);
        *report
            .by_final_state
            .entry(last.state.symbol())
            .or_default() += 1;
    }
    for id in created.keys() {
        if !history.contains_key(id) {
            no_history.push(id.to_string());
        }
    }
    report.violation("order sent but no order-status", &no_history);
    report.violation("order-status for an order never sent", &unsent);
    report.violation("versions not 1, 2, 3 …", &bad_versions);
    report.violation(
        "not ended in one terminal state (or PAID then CANCELLED)",
        &bad_ends,
    );
    let mut unanswered = vec![];
    let mut asked: HashSet<&str> = HashSet::new();
    for k in seen.cancels {
        if !asked.insert(k.request_id.as_str()) {
            continue;
        }
        let n = answers.get(k.request_id.as_str()).copied().unwrap_or(0);
        if n != 1 {
            unanswered.push(format!("{} ({}): {n} answers", k.request_id, k.order_id));
        }
    }
    report.violation("a cancel request not answered exactly once", &unanswered);

    let holding =
        |s: &OrderStatus| matches!(s.state, OrderState::PaymentPending | OrderState::Paid);

    // Stock.
    let mut last_event: BTreeMap<&str, &InventoryEvent> = BTreeMap::new();
    let mut unconserved = vec![];
    for e in seen.inventory {
        if !e.is_conserved() || e.available < 0 || e.reserved < 0 || e.sold < 0 {
            unconserved.push(format!(
                "{} after {}: available {} + reserved {} + sold {} vs created {}",
                e.product_id, e.request_id, e.available, e.reserved, e.sold, e.created
            ));
        }
        last_event.insert(e.product_id.as_str(), e);
    }
    report.products = last_event.len();
    report.violation("stock not conserved or negative", &unconserved);
    let mut held: HashMap<(&str, bool), i64> = HashMap::new();
    for (id, s) in &final_state {
        if !holding(s) {
            continue;
        }
        let Some(c) = created.get(id) else { continue };
        for item in &c.items {
            let key = (item.product_id.as_str(), s.state == OrderState::Paid);
            *held.entry(key).or_default() += i64::from(item.quantity);
        }
    }
    let mut stock_mismatch = vec![];
    for (p, e) in &last_event {
        let reserved = held.get(&(*p, false)).copied().unwrap_or(0);
        let sold = held.get(&(*p, true)).copied().unwrap_or(0);
        if e.reserved != reserved || e.sold != sold {
            stock_mismatch.push(format!(
                "{p}: reserved {} sold {} on inventory-result, orders hold {reserved} reserved and {sold} sold",
                e.reserved, e.sold
            ));
        }
    }
    report.violation(
        "stock held differs from the orders holding it",
        &stock_mismatch,
    );

    // Coupons: one order per unit at any time; what is in use at the end.
    let mut discount_of: HashMap<&str, Option<Discount>> = HashMap::new();
    let mut in_use: HashMap<(&str, &str), &str> = HashMap::new();
    let mut double_use = vec![];
    for d in seen.coupons {
        match d.outcome {
            Outcome::Created => {
                discount_of.insert(d.coupon_id.as_str(), d.discount);
            }
            Outcome::Redeemed => {
                let (Some(user), Some(order)) = (d.user_id.as_deref(), d.order_id.as_deref())
                else {
                    continue;
                };
                let key = (d.coupon_id.as_str(), user);
                match in_use.get(&key) {
                    Some(o) if *o != order => {
                        double_use.push(format!("{}/{user}: {o} and {order}", d.coupon_id))
                    }
                    _ => {
                        in_use.insert(key, order);
                    }
                }
            }
            Outcome::Released => {
                if let Some(order) = d.order_id.as_deref() {
                    in_use.retain(|(c, _), o| !(*c == d.coupon_id && *o == order));
                }
            }
            _ => {}
        }
    }
    report.violation("a coupon unit used by two orders", &double_use);
    let using: HashSet<(&str, &str)> = in_use.iter().map(|((c, _), o)| (*c, *o)).collect();
    let mut coupon_mismatch = vec![];
    for (id, s) in &final_state {
        let Some(c) = created.get(id) else { continue };
        let Some(coupon) = c.coupon_id.as_deref() else {
            continue;
        };
        let uses = using.contains(&(coupon, *id));
        if uses != holding(s) {
            coupon_mismatch.push(format!(
                "{id} is {} but uses coupon {coupon}: {uses}",
                s.state.symbol()
            ));
        }
    }
    for ((coupon, user), order) in &in_use {
        if !final_state.get(order).is_some_and(|s| holding(s)) {
            coupon_mismatch.push(format!(
                "{coupon}/{user} is in use by {order}, which holds nothing"
            ));
        }
    }
    report.violation(
        "coupon in use differs from the order's state",
        &coupon_mismatch,
    );

    // Payment requests.
    report.payment_requests = seen.payments.len();
    let mut by_payment: HashMap<&str, &PaymentRequest> = HashMap::new();
    let mut asked_charge: HashMap<&str, i64> = HashMap::new();
    let mut asked_refund: HashSet<&str> = HashSet::new();
    let (mut reused, mut wrong) = (vec![], vec![]);
    for p in seen.payments {
        if let Some(other) = by_payment.insert(p.payment_id.as_str(), p) {
            if other != p {
                reused.push(p.payment_id.clone());
            }
            continue;
        }
        let Some(c) = created.get(p.order_id.as_str()) else {
            wrong.push(format!("{}: no such order", p.order_id));
            continue;
        };
        let total: i64 = c
            .items
            .iter()
            .map(|i| i.unit_price.0 * i64::from(i.quantity))
            .sum();
        let off = c
            .coupon_id
            .as_deref()
            .and_then(|k| discount_of.get(k).copied().flatten())
            .map_or(0, |d| d.apply(Money(total)).0);
        let expect = Money(total - off);
        let charge = charge_id(&p.order_id);
        let (id_ok, of_ok) = match p.kind {
            PaymentKind::Charge => {
                asked_charge.insert(p.order_id.as_str(), p.amount.0);
                (p.payment_id == charge, p.refund_of.is_none())
            }
            PaymentKind::Refund => {
                asked_refund.insert(p.order_id.as_str());
                (
                    p.payment_id == refund_id(&p.order_id),
                    p.refund_of.as_deref() == Some(charge.as_str()),
                )
            }
        };
        if p.amount != expect || !id_ok || !of_ok || p.currency != c.currency {
            wrong.push(format!(
                "{}: {:?} {} {} as {} (expected {expect})",
                p.order_id, p.kind, p.amount, p.currency, p.payment_id
            ));
        }
    }
    report.violation("a payment id used for two different requests", &reused);
    report.violation("payment-request with the wrong amount or id", &wrong);
    let mut charge_asks = vec![];
    for (id, s) in &final_state {
        let charged = asked_charge.contains_key(id);
        let fine = match s.state {
            OrderState::PaymentPending | OrderState::PaymentFailed => charged,
            // Free orders are paid without a charge.
            OrderState::Paid => charged || created.get(id).is_some_and(|_| s.total.0 == 0),
            OrderState::Rejected => !charged,
            _ => true,
        };
        if !fine {
            charge_asks.push(format!(
                "{id} ({}): charge asked {charged}",
                s.state.symbol()
            ));
        }
    }
    report.violation("charge asked contradicts the order's state", &charge_asks);

    if let Some(ledger) = seen.ledger {
        money(&mut report, ledger, &final_state, &late_refunds);
    }
    report
}

/// The provider's ledger against the orders' final states.
fn money(
    report: &mut OrderAudit,
    ledger: &[LedgerPayment],
    final_state: &HashMap<&str, &OrderStatus>,
    late_refunds: &[&OrderStatus],
) {
    #[derive(Default)]
    struct Net {
        charges: Vec<i64>,
        refunds: Vec<i64>,
    }
    let mut by_order: HashMap<&str, Net> = HashMap::new();
    for p in ledger.iter().filter(|p| p.approved) {
        let net = by_order.entry(p.order_id.as_str()).or_default();
        match p.kind {
            PaymentKind::Charge => {
                report.charged += p.amount;
                net.charges.push(p.amount);
            }
            PaymentKind::Refund => {
                report.refunded += p.amount;
                net.refunds.push(p.amount);
            }
        }
    }
    let (mut stranger, mut paid_wrong, mut kept, mut refunds_wrong) =
        (vec![], vec![], vec![], vec![]);
    let mut paid_total = 0i64;
    for (order, net) in &by_order {
        let charged: i64 = net.charges.iter().sum();
        let refunded: i64 = net.refunds.iter().sum();
        let Some(s) = final_state.get(order) else {
            stranger.push(format!("{order}: charged {charged}, refunded {refunded}"));
            continue;
        };
        if s.state == OrderState::Paid {
            continue;
        }
        if charged != refunded {
            kept.push(format!(
                "{order} ({}): charged {charged}, refunded {refunded}",
                s.state.symbol()
            ));
        }
        if net.refunds.len() != usize::from(!net.charges.is_empty()) || net.charges.len() > 1 {
            refunds_wrong.push(format!(
                "{order}: {} charge(s), {} refund(s)",
                net.charges.len(),
                net.refunds.len()
            ));
        }
    }
    for (order, s) in final_state {
        if s.state != OrderState::Paid {
            continue;
        }
        paid_total += s.total.0;
        let net = by_order.get(order);
        let charges = net.map_or(&[][..], |n| &n.charges[..]);
        let refunds = net.map_or(0, |n| n.refunds.len());
        let once = match s.total.0 {
            0 => charges.is_empty(),
            t => charges == [t],
        };
        if !once || refunds != 0 {
            paid_wrong.push(format!(
                "{order}: total {}, charges {charges:?}, {refunds} refund(s)",
                s.total
            ));
        }
    }
    let mut late_unbacked = vec![];
    for s in late_refunds {
        let backed = by_order
            .get(s.order_id.as_str())
            .is_some_and(|n| !n.refunds.is_empty());
        if !backed {
            late_unbacked.push(s.order_id.clone());
        }
    }
    report.violation("charged by the provider, but no such order", &stranger);
    report.violation("a PAID order not charged exactly once", &paid_wrong);
    report.violation("an order not PAID keeps a net charge", &kept);
    report.violation(
        "a charged, then cancelled order not refunded exactly once",
        &refunds_wrong,
    );
    report.violation(
        "LATE_CHARGE_REFUNDED without a refund in the ledger",
        &late_unbacked,
    );
    if report.charged - report.refunded != paid_total {
        report.violations.push(format!(
            "charges {} minus refunds {} differ from the total of PAID orders {}",
            Money(report.charged),
            Money(report.refunded),
            Money(paid_total)
        ));
    }
}
