//! order-status → the order hash (its state after the latest transition),
//! its lines (once) and its history (one field per record).
//!
//! As in PostgreSQL: TRANSITION and LATE_CHARGE_REFUNDED records carry the
//! order as it stands and replace the hash; a CANCEL_REFUSED record's reason
//! is the refusal's, so it goes to the history only.

use std::collections::HashMap;

use surge_schemas::order::OrderStatus;
use surge_sink::views::{carries_order_state, history_entry, HistoryView, LineView};
use surge_sink::{Mapping, Position};

use super::{HashWrite, KeyMapping, KeyWrites};
use crate::keys::Keyspace;

#[derive(Debug, Default)]
pub struct OrderStatusKeys {
    pub orders: HashMap<String, (Position, OrderStatus)>,
    pub lines: Vec<(String, Vec<LineView>)>,
    pub history: Vec<(Position, String, HistoryView)>,
}

impl Mapping for OrderStatusKeys {
    type Value = OrderStatus;

    /// order-status has no tombstones (orders are kept): a null value is skipped.
    fn add(&mut self, at: Position, _key: Option<&[u8]>, value: Option<OrderStatus>) {
        let Some(mut s) = value else { return };
        if let Some(lines) = s.lines.take() {
            let lines = lines
                .into_iter()
                .map(|l| LineView {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price.minor_units(),
                })
                .collect();
            self.lines.push((s.order_id.clone(), lines));
        }
        self.history
            .push((at, s.order_id.clone(), history_entry(at.offset, &s)));
        if carries_order_state(&s) {
            self.orders.insert(s.order_id.clone(), (at, s));
        }
    }

    fn writes(&self) -> usize {
        self.orders.len() + self.lines.len() + self.history.len()
    }
}

/// The fields of an order hash (besides `offset`); absent values are left out.
pub fn order_fields(at: Position, s: &OrderStatus) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("user_id", s.user_id.clone()),
        ("state", s.state.symbol().to_string()),
        ("terminal", s.state.is_terminal().to_string()),
        ("total_minor", s.total.minor_units().to_string()),
        ("currency", s.currency.clone()),
        ("version", s.version.to_string()),
        ("updated_at", s.occurred_at.timestamp_millis().to_string()),
        ("partition", at.partition.to_string()),
    ];
    for (name, v) in [
        ("reason", &s.reason),
        ("coupon_id", &s.coupon_id),
        ("payment_id", &s.payment_id),
        ("refund_id", &s.refund_id),
    ] {
        if let Some(v) = v {
            f.push((name, v.clone()));
        }
    }
    f
}

impl KeyMapping for OrderStatusKeys {
    fn key_writes(&self, keys: &Keyspace) -> KeyWrites {
        let mut w = KeyWrites::default();
        for (at, s) in self.orders.values() {
            w.hashes.push(HashWrite {
                key: keys.order(&s.order_id),
                offset: at.offset,
                only_existing: false,
                fields: order_fields(*at, s),
            });
        }
        for (order, lines) in &self.lines {
            w.once.push((
                keys.order_lines(order),
                "lines".into(),
                serde_json::to_string(lines).expect("lines serialize"),
            ));
        }
        for (at, order, entry) in &self.history {
            w.once.push((
                keys.order_history(order),
                format!("{}:{}", at.partition, at.offset),
                serde_json::to_string(entry).expect("history serializes"),
            ));
        }
        w
    }
}
