//! The read model every store holds, whichever store it is: what the gateway
//! serves and `surge verify` compares. A store's connector owns its queries
//! and returns these; nothing above the connectors knows a table or a key.

use serde::Serialize;

/// An order as its latest transition left it, with its lines and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    pub user_id: String,
    /// The order-status state symbol (CREATED … CANCELLED).
    pub state: String,
    pub terminal: bool,
    pub reason: Option<String>,
    /// What is charged (total after the coupon), in minor units.
    pub total_minor: i64,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub payment_id: Option<String>,
    pub refund_id: Option<String>,
    pub version: i32,
    pub updated_at_ms: i64,
    pub lines: Vec<LineView>,
    /// Every order-status record of the order, in log order.
    pub history: Vec<HistoryView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineView {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// One order-status record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    pub version: i32,
    /// TRANSITION, CANCEL_REFUSED or LATE_CHARGE_REFUNDED.
    pub event: String,
    pub state: String,
    pub reason: Option<String>,
    pub cancel_request_id: Option<String>,
    pub refund_id: Option<String>,
    pub occurred_at_ms: i64,
    /// The record's offset in its order-status partition.
    pub offset: i64,
}

/// A product's stock after its latest inventory decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockView {
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub created: i64,
    pub updated_at_ms: i64,
}

/// A coupon request's decision, as coupon-result gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub request_id: String,
    pub coupon_id: String,
    /// `None` for requests no user made (stock changes, coupon creation).
    pub user_id: Option<String>,
    /// The outcome symbol (ISSUED, DUPLICATE, SOLD_OUT …).
    pub outcome: String,
    /// The unit's sequence (1..=stock) for ISSUED.
    pub sequence: Option<i64>,
    pub stock: i64,
    pub issued: i64,
    pub remaining: i64,
    pub reason: Option<String>,
    pub decided_at_ms: i64,
}

/// A coupon's stock after its latest decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponView {
    pub coupon_id: String,
    pub stock: i64,
    pub issued: i64,
    pub remaining: i64,
}

/// Whether an order-status record carries the order as it stands (a
/// TRANSITION or LATE_CHARGE_REFUNDED) and so replaces what a store holds
/// for the order. A CANCEL_REFUSED record's reason is the refusal's: it
/// belongs to the history only.
pub fn carries_order_state(s: &surge_schemas::order::OrderStatus) -> bool {
    s.event != surge_schemas::order::OrderEvent::CancelRefused
}

/// One order-status record as an order's history shows it.
pub fn history_entry(offset: i64, s: &surge_schemas::order::OrderStatus) -> HistoryView {
    HistoryView {
        version: s.version,
        event: s.event.symbol().to_string(),
        state: s.state.symbol().to_string(),
        reason: s.reason.clone(),
        cancel_request_id: s.cancel_request_id.clone(),
        refund_id: s.refund_id.clone(),
        occurred_at_ms: s.occurred_at.timestamp_millis(),
        offset,
    }
}

/// What every store must hold for each order, computed from order-status
/// in log order (one partition per order); history offsets are the
/// record's offset.
pub fn expected_orders(
    statuses: &[(i64, surge_schemas::order::OrderStatus)],
) -> std::collections::BTreeMap<String, OrderView> {
    let mut out: std::collections::BTreeMap<String, OrderView> = Default::default();
    let mut lines: std::collections::HashMap<&str, Vec<LineView>> = Default::default();
    let mut history: std::collections::HashMap<&str, Vec<HistoryView>> = Default::default();
    for (offset, s) in statuses {
        if let Some(l) = &s.lines {
            lines.entry(&s.order_id).or_insert_with(|| {
                l.iter()
                    .map(|l| LineView {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price_minor: l.unit_price.minor_units(),
                    })
                    .collect()
            });
        }
        history
            .entry(&s.order_id)
            .or_default()
            .push(history_entry(*offset, s));
        if carries_order_state(s) {
            out.insert(
                s.order_id.clone(),
                OrderView {
                    order_id: s.order_id.clone(),
                    user_id: s.user_id.clone(),
                    state: s.state.symbol().to_string(),
                    terminal: s.state.is_terminal(),
                    reason: s.reason.clone(),
                    total_minor: s.total.minor_units(),
                    currency: s.currency.clone(),
                    coupon_id: s.coupon_id.clone(),
                    payment_id: s.payment_id.clone(),
                    refund_id: s.refund_id.clone(),
                    version: s.version,
                    updated_at_ms: s.occurred_at.timestamp_millis(),
                    lines: Vec::new(),
                    history: Vec::new(),
                },
            );
        }
    }
    for (id, view) in out.iter_mut() {
        view.lines = lines.remove(id.as_str()).unwrap_or_default();
        view.history = history.remove(id.as_str()).unwrap_or_default();
    }
    out
}

/// The differences between what a store holds and what it should, one
/// readable line each (at most `limit` lines, then a count).
pub fn compare_orders(
    store: &str,
    expected: &std::collections::BTreeMap<String, OrderView>,
    held: &std::collections::BTreeMap<String, OrderView>,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut more = 0usize;
    let mut say = |line: String| {
        if out.len() < limit {
            out.push(line);
        } else {
            more += 1;
        }
    };
    for (id, want) in expected {
        match held.get(id) {
            None => say(format!(
                "{store}: order {id} missing (topic: {})",
                want.state
            )),
            Some(got) if got != want => {
                let (w, g) = (
                    serde_json::to_value(want).expect("view serializes"),
                    serde_json::to_value(got).expect("view serializes"),
                );
                let fields: Vec<String> = w
                    .as_object()
                    .expect("object")
                    .iter()
                    .filter(|(k, v)| g.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: topic {v}, store {}", g[k.as_str()]))
                    .collect();
                say(format!(
                    "{store}: order {id} differs ({})",
                    fields.join("; ")
                ));
            }
            Some(_) => {}
        }
    }
    for id in held.keys().filter(|id| !expected.contains_key(*id)) {
        say(format!("{store}: order {id} is not on order-status"));
    }
    if more > 0 {
        out.push(format!("{store}: … and {more} more"));
    }
    out
}

/// The same for product stock, from inventory-result in log order.
pub fn expected_stock(
    events: &[surge_schemas::inventory::InventoryEvent],
) -> std::collections::BTreeMap<String, StockView> {
    use surge_schemas::inventory::InventoryOutcome;
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        if e.outcome == InventoryOutcome::UnknownProduct
            || (e.outcome != InventoryOutcome::Created && !out.contains_key(&e.product_id))
        {
            continue;
        }
        out.insert(
            e.product_id.clone(),
            StockView {
                available: e.available,
                reserved: e.reserved,
                sold: e.sold,
                created: e.created,
                updated_at_ms: e.decided_at.timestamp_millis(),
            },
        );
    }
    out
}

/// Differences between a store's product stock and inventory-result's.
pub fn compare_stock(
    store: &str,
    expected: &std::collections::BTreeMap<String, StockView>,
    held: &std::collections::BTreeMap<String, StockView>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, want) in expected {
        match held.get(id) {
            None => out.push(format!("{store}: product {id} missing")),
            Some(got) if got != want => out.push(format!(
                "{store}: product {id} holds available/reserved/sold/created {}/{}/{}/{}, the topic says {}/{}/{}/{}",
                got.available, got.reserved, got.sold, got.created,
                want.available, want.reserved, want.sold, want.created
            )),
            Some(_) => {}
        }
    }
    for id in held.keys().filter(|id| !expected.contains_key(*id)) {
        out.push(format!("{store}: product {id} is not on inventory-result"));
    }
    out
}

#[cfg(test)]
mod tests {
    use surge_schemas::order::{OrderEvent, OrderItem, OrderState, OrderStatus};
    use surge_schemas::Money;

    use super::*;

    fn status(
        state: OrderState,
        version: i32,
        event: OrderEvent,
        reason: Option<&str>,
    ) -> OrderStatus {
        OrderStatus {
            order_id: "o-1".into(),
            user_id: "u-1".into(),
            state,
            reason: reason.map(Into::into),
            total: Money(1500),
            currency: "KRW".into(),
            coupon_id: None,
            payment_id: (version > 1).then(|| "pay-1".into()),
            version,
            occurred_at: chrono::DateTime::from_timestamp_millis(version as i64).unwrap(),
            event,
            cancel_request_id: None,
            refund_id: None,
            lines: (version == 1).then(|| {
                vec![OrderItem {
                    product_id: "p-1".into(),
                    quantity: 3,
                    unit_price: Money(500),
                }]
            }),
        }
    }

    #[test]
    fn the_order_is_its_latest_state_carrying_record_with_lines_from_the_first_and_every_record_in_history(
    ) {
        let log = [
            (
                10,
                status(OrderState::Created, 1, OrderEvent::Transition, None),
            ),
            (
                11,
                status(OrderState::PaymentPending, 2, OrderEvent::Transition, None),
            ),
            (
                12,
                status(OrderState::Paid, 3, OrderEvent::Transition, None),
            ),
            // Refused: the order keeps its own reason (none).
            (
                13,
                status(
                    OrderState::Paid,
                    3,
                    OrderEvent::CancelRefused,
                    Some("already refunded"),
                ),
            ),
        ];
        let want = expected_orders(&log);
        let o = &want["o-1"];
        assert_eq!(
            (o.state.as_str(), o.version, o.reason.as_deref()),
            ("PAID", 3, None)
        );
        assert_eq!(o.lines.len(), 1);
        assert_eq!(
            o.history.iter().map(|h| h.offset).collect::<Vec<_>>(),
            [10, 11, 12, 13]
        );
        assert!(compare_orders("pg", &want, &want, 5).is_empty());

        let mut held = want.clone();
        held.get_mut("o-1").unwrap().total_minor = 1;
        held.insert("o-2".into(), o.clone());
        let diff = compare_orders("pg", &want, &held, 5);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(
            diff[0].starts_with("pg: order o-1 differs (totalMinor: topic 1500, store 1)"),
            "{diff:?}"
        );
        assert_eq!(diff[1], "pg: order o-2 is not on order-status");
        assert_eq!(
            compare_orders("pg", &want, &Default::default(), 5),
            ["pg: order o-1 missing (topic: PAID)"]
        );
    }
}

/// One batch of inventory-result reduced to what the stores keep: each
/// product's latest decision, and whether the batch created the product (a
/// product row or hash exists from its CREATED decision on; answers about
/// products that do not exist — UNKNOWN_PRODUCT, an INVALID create — carry
/// no stock and may only update one that does). Both stores' mappings use it,
/// and [`expected_stock`] follows the same rule.
#[derive(Debug, Default)]
pub struct LatestStock {
    pub products: std::collections::HashMap<
        String,
        (
            crate::Position,
            surge_schemas::inventory::InventoryEvent,
            bool,
        ),
    >,
}

impl LatestStock {
    pub fn add(&mut self, at: crate::Position, e: surge_schemas::inventory::InventoryEvent) {
        use surge_schemas::inventory::InventoryOutcome;
        if e.outcome == InventoryOutcome::UnknownProduct {
            return;
        }
        let created = e.outcome == InventoryOutcome::Created
            || self.products.get(&e.product_id).is_some_and(|(_, _, c)| *c);
        self.products.insert(e.product_id.clone(), (at, e, created));
    }
}
