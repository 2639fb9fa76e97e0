//! order-status → tables orders, order_lines, order_status_history.
//!
//! A TRANSITION or LATE_CHARGE_REFUNDED record carries the order as it
//! stands, so the orders row takes the latest of them (a CANCEL_REFUSED
//! record's reason is the refusal's, not the order's: history only). Lines
//! come once, on the order's first transition; history keeps every record
//! under its position, so a replay writes nothing twice.

use std::collections::HashMap;

use sqlx::PgConnection;
use surge_schemas::order::OrderStatus;
use surge_sink::views::carries_order_state;
use surge_sink::{Mapping, Position};

use super::Rows;

#[derive(Debug, Default)]
pub struct OrderStatusRows {
    /// Latest state-carrying record per order.
    pub orders: HashMap<String, (Position, OrderStatus)>,
    /// (order, line number, line) from first transitions.
    pub lines: Vec<(String, i32, surge_schemas::order::OrderItem)>,
    pub history: Vec<(Position, OrderStatus)>,
}

impl Mapping for OrderStatusRows {
    type Value = OrderStatus;

    /// order-status has no tombstones (orders are kept): a null value is skipped.
    fn add(&mut self, at: Position, _key: Option<&[u8]>, value: Option<OrderStatus>) {
        let Some(s) = value else { return };
        if let Some(lines) = &s.lines {
            for (n, l) in lines.iter().enumerate() {
                self.lines.push((s.order_id.clone(), n as i32, l.clone()));
            }
        }
        if carries_order_state(&s) {
            self.orders
                .insert(s.order_id.clone(), (at, strip_lines(&s)));
        }
        self.history.push((at, strip_lines(&s)));
    }

    fn writes(&self) -> usize {
        self.orders.len() + self.lines.len() + self.history.len()
    }
}

fn strip_lines(s: &OrderStatus) -> OrderStatus {
    OrderStatus {
        lines: None,
        ..s.clone()
    }
}

impl Rows for OrderStatusRows {
    async fn write(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.orders.is_empty() {
            let o: Vec<_> = self.orders.values().collect();
            sqlx::query(
                "insert into orders (order_id, user_id, state, terminal, reason, total_minor, currency, coupon_id,
                                     payment_id, refund_id, version, source_partition, source_offset, updated_at)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[],
                                      $7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::int[],
                                      $13::bigint[], $14::timestamptz[])
                 on conflict (order_id) do update set user_id = excluded.user_id, state = excluded.state,
                   terminal = excluded.terminal, reason = excluded.reason, total_minor = excluded.total_minor,
                   currency = excluded.currency, coupon_id = excluded.coupon_id, payment_id = excluded.payment_id,
                   refund_id = excluded.refund_id, version = excluded.version,
                   source_partition = excluded.source_partition, source_offset = excluded.source_offset,
                   updated_at = excluded.updated_at
                 where orders.source_offset < excluded.source_offset or orders.source_partition <> excluded.source_partition",
            )
            .bind(o.iter().map(|(_, s)| s.order_id.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.user_id.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.state.symbol().to_string()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.state.is_terminal()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.reason.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.total.minor_units()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.currency.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.coupon_id.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.payment_id.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.refund_id.clone()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.version).collect::<Vec<_>>())
            .bind(o.iter().map(|(at, _)| at.partition).collect::<Vec<_>>())
            .bind(o.iter().map(|(at, _)| at.offset).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, s)| s.occurred_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !self.lines.is_empty() {
            let l = &self.lines;
            sqlx::query(
                "insert into order_lines (order_id, line, product_id, quantity, unit_price_minor)
                 select * from unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::bigint[])
                 on conflict do nothing",
            )
            .bind(l.iter().map(|(o, _, _)| o.clone()).collect::<Vec<_>>())
            .bind(l.iter().map(|(_, n, _)| *n).collect::<Vec<_>>())
            .bind(
                l.iter()
                    .map(|(_, _, i)| i.product_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(l.iter().map(|(_, _, i)| i.quantity).collect::<Vec<_>>())
            .bind(
                l.iter()
                    .map(|(_, _, i)| i.unit_price.minor_units())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        if !self.history.is_empty() {
            let h = &self.history;
            sqlx::query(
                "insert into order_status_history (order_id, source_partition, source_offset, version, event, state,
                                                   reason, cancel_request_id, refund_id, occurred_at)
                 select * from unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::text[], $10::timestamptz[])
                 on conflict do nothing",
            )
            .bind(h.iter().map(|(_, s)| s.order_id.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|(at, _)| at.partition).collect::<Vec<_>>())
            .bind(h.iter().map(|(at, _)| at.offset).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.version).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.event.symbol().to_string()).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.state.symbol().to_string()).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.reason.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.cancel_request_id.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.refund_id.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|(_, s)| s.occurred_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
