//! The order invariants of DESIGN.md (5, as far as orders reach before
//! payment), checked from the outside: from what was sent (order-create)
//! and what read_committed consumers see on order-status, payment-request,
//! inventory-result and coupon-result. Used by the tests and `surge
//! verify`, so both prove the same thing.
//!
//! Checked, once every order has settled:
//! - every order sent has a history of transitions with versions 1, 2, 3 …
//!   and ends in exactly one terminal state or PAYMENT_PENDING, with nothing
//!   after a terminal state;
//! - per product, every inventory decision conserves stock (available +
//!   reserved + sold = created, none negative), and the final reserved and
//!   sold units equal what the PAYMENT_PENDING and PAID orders hold — so
//!   every rejected or cancelled order gave its units back, exactly once;
//! - no coupon unit is used by two orders at once, and the units in use at
//!   the end are exactly those of PAYMENT_PENDING and PAID orders (every
//!   rejected or cancelled order's coupon is usable again);
//! - every payment-request is one CHARGE per PAYMENT_PENDING order, for
//!   the order's total after its coupon's discount, with the order's own
//!   payment id, and no payment id serves two requests.

use std::collections::{BTreeMap, HashMap, HashSet};

use surge_schemas::coupon::{CouponDecision, Discount, Outcome};
use surge_schemas::inventory::InventoryEvent;
use surge_schemas::order::{
    OrderCreate, OrderEvent, OrderState, OrderStatus, PaymentKind, PaymentRequest,
};
use surge_schemas::Money;

use crate::saga::charge_id;

/// What the audit read, each in log order per partition.
pub struct Observed<'a> {
    pub creates: &'a [OrderCreate],
    pub statuses: &'a [OrderStatus],
    pub payments: &'a [PaymentRequest],
    pub inventory: &'a [InventoryEvent],
    pub coupons: &'a [CouponDecision],
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct OrderAudit {
    pub orders: usize,
    pub by_final_state: BTreeMap<&'static str, usize>,
    pub cancel_refusals: usize,
    pub products: usize,
    pub payment_requests: usize,
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
    for s in seen.statuses {
        match s.event {
            OrderEvent::Transition => history.entry(s.order_id.as_str()).or_default().push(s),
            OrderEvent::CancelRefused => report.cancel_refusals += 1,
        }
    }
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
        let ends = h
            .iter()
            .filter(|s| s.state.is_terminal() || s.state == OrderState::PaymentPending)
            .count();
        let last = h.last().expect("a history has a record");
        let settled = last.state.is_terminal() || last.state == OrderState::PaymentPending;
        if ends != 1 || !settled {
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
        "not exactly one terminal or PAYMENT_PENDING outcome, last",
        &bad_ends,
    );

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

    // Payments.
    report.payment_requests = seen.payments.len();
    let mut by_payment: HashMap<&str, &PaymentRequest> = HashMap::new();
    let mut charges: HashMap<&str, usize> = HashMap::new();
    let (mut reused, mut wrong) = (vec![], vec![]);
    for p in seen.payments {
        if let Some(other) = by_payment.insert(p.payment_id.as_str(), p) {
            if other != p {
                reused.push(p.payment_id.clone());
            }
        }
        if p.kind == PaymentKind::Charge {
            *charges.entry(p.order_id.as_str()).or_default() += 1;
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
        if p.amount != expect || p.payment_id != charge_id(&p.order_id) || p.currency != c.currency
        {
            wrong.push(format!(
                "{}: {} {} as {} (expected {expect} as {})",
                p.order_id,
                p.amount,
                p.currency,
                p.payment_id,
                charge_id(&p.order_id)
            ));
        }
    }
    report.violation("a payment id used for two different requests", &reused);
    report.violation("payment-request with the wrong amount or id", &wrong);
    let mut charge_count = vec![];
    for (id, s) in &final_state {
        let n = charges.get(id).copied().unwrap_or(0);
        let want = usize::from(s.state == OrderState::PaymentPending);
        if n != want {
            charge_count.push(format!(
                "{id} ({}): {n} charge request(s)",
                s.state.symbol()
            ));
        }
    }
    report.violation(
        "not one charge request per PAYMENT_PENDING order",
        &charge_count,
    );
    report
}
