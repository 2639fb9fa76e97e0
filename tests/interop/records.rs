//! The records the interop tests produce with surge's own codec, and the JSON
//! a stock reader must print for each: the Python reader
//! (read_with_confluent_kafka.py) and the Java one (java/, Apicurio's
//! AvroKafkaDeserializer) print the same shape, so both are held to this.
//!
//! The shape: every field of the schema by its Avro name; a union as the
//! value of its branch (null included); an enum as its symbol; a decimal as a
//! plain string with its scale ("19.99", "-0.05"); a timestamp-millis as
//! epoch milliseconds. Included by surge/tests/python_interop.rs and
//! java_interop.rs with `#[path]`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use surge_schemas::coupon::{CouponDecision, Discount, DiscountKind, Outcome};
use surge_schemas::order::{OrderEvent, OrderItem, OrderState, OrderStatus};
use surge_schemas::Money;

/// An ISSUED decision, a CREATED one with a FIXED discount and a REDEEMED one
/// with a capped PERCENT discount: nulls and values in every union, both
/// enums, and the nested Discount record with its decimals.
pub fn coupon_decisions(at: DateTime<Utc>) -> Vec<CouponDecision> {
    let base = CouponDecision {
        request_id: "req-1".into(),
        coupon_id: "flash-7".into(),
        user_id: Some("user-9".into()),
        outcome: Outcome::Issued,
        sequence: Some(1),
        stock: 100,
        issued: 1,
        remaining: 99,
        reason: None,
        source_partition: 3,
        source_offset: 41,
        requested_at: at,
        decided_at: at + Duration::milliseconds(7),
        order_id: None,
        discount: None,
    };
    vec![
        base.clone(),
        CouponDecision {
            request_id: "req-2".into(),
            user_id: None,
            outcome: Outcome::Created,
            sequence: None,
            issued: 0,
            remaining: 100,
            source_offset: 42,
            discount: Some(Discount {
                kind: DiscountKind::Fixed,
                value: Money(500),
                cap: None,
            }),
            ..base.clone()
        },
        CouponDecision {
            request_id: "req-3".into(),
            outcome: Outcome::Redeemed,
            sequence: None,
            reason: Some("unit 1 used by o-1 \"quoted\"".into()),
            source_offset: 43,
            order_id: Some("o-1".into()),
            discount: Some(Discount {
                kind: DiscountKind::Percent,
                value: Money(1250),
                cap: Some(Money(1_234_567_890_12)),
            }),
            ..base
        },
    ]
}

/// The JSON a stock reader prints for `d`.
pub fn decision_json(d: &CouponDecision) -> Value {
    json!({
        "requestId": d.request_id,
        "couponId": d.coupon_id,
        "userId": d.user_id,
        "outcome": d.outcome.symbol(),
        "sequence": d.sequence,
        "stock": d.stock,
        "issued": d.issued,
        "remaining": d.remaining,
        "reason": d.reason,
        "sourcePartition": d.source_partition,
        "sourceOffset": d.source_offset,
        "requestedAt": d.requested_at.timestamp_millis(),
        "decidedAt": d.decided_at.timestamp_millis(),
        "orderId": d.order_id,
        "discount": d.discount.map(|x| json!({
            "kind": x.kind.symbol(),
            "value": x.value.to_string(),
            "cap": x.cap.map(|c| c.to_string()),
        })),
    })
}

/// One order's life: CREATED with its lines (a large total, a negative unit
/// price), PAID, a CANCEL_REFUSED answer, then CANCELLED with the refund.
pub fn order_statuses(at: DateTime<Utc>) -> Vec<OrderStatus> {
    let created = OrderStatus {
        order_id: "o-1".into(),
        user_id: "u-1".into(),
        state: OrderState::Created,
        reason: None,
        total: Money(1_234_567_890_12),
        currency: "EUR".into(),
        coupon_id: Some("flash-7".into()),
        payment_id: None,
        version: 1,
        occurred_at: at,
        event: OrderEvent::Transition,
        cancel_request_id: None,
        refund_id: None,
        lines: Some(vec![
            OrderItem {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price: Money(1999),
            },
            OrderItem {
                product_id: "p-2".into(),
                quantity: 1,
                unit_price: Money(-5),
            },
        ]),
    };
    let paid = OrderStatus {
        state: OrderState::Paid,
        payment_id: Some("pay-1".into()),
        version: 2,
        occurred_at: at + Duration::milliseconds(250),
        lines: None,
        ..created.clone()
    };
    let refused = OrderStatus {
        reason: Some("already paid; cancel refunds it".into()),
        event: OrderEvent::CancelRefused,
        cancel_request_id: Some("cancel-1".into()),
        occurred_at: at + Duration::milliseconds(300),
        ..paid.clone()
    };
    let cancelled = OrderStatus {
        state: OrderState::Cancelled,
        reason: Some("user cancelled".into()),
        total: Money(0),
        version: 3,
        occurred_at: at + Duration::seconds(2),
        cancel_request_id: Some("cancel-2".into()),
        refund_id: Some("ref-1".into()),
        ..paid.clone()
    };
    vec![created, paid, refused, cancelled]
}

/// The JSON a stock reader prints for `s`.
pub fn status_json(s: &OrderStatus) -> Value {
    json!({
        "orderId": s.order_id,
        "userId": s.user_id,
        "state": s.state.symbol(),
        "terminal": s.state.is_terminal(),
        "reason": s.reason,
        "total": s.total.to_string(),
        "currency": s.currency,
        "couponId": s.coupon_id,
        "paymentId": s.payment_id,
        "version": s.version,
        "occurredAt": s.occurred_at.timestamp_millis(),
        "event": s.event.symbol(),
        "cancelRequestId": s.cancel_request_id,
        "refundId": s.refund_id,
        "lines": s.lines.as_ref().map(|lines| lines.iter().map(|l| json!({
            "productId": l.product_id,
            "quantity": l.quantity,
            "unitPrice": l.unit_price.to_string(),
        })).collect::<Vec<_>>()),
    })
}

/// Checks what a reader printed, record by record: the key is the contract's
/// key and the value is field for field what was produced.
pub fn assert_read(reader: &str, got: &[Value], keys: &[&str], want: &[Value]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{reader} printed {} records, {} were produced",
        got.len(),
        want.len()
    );
    for (i, ((got, key), want)) in got.iter().zip(keys).zip(want).enumerate() {
        assert_eq!(got["key"], *key, "{reader}: record {i}'s key");
        assert_eq!(
            got["value"], *want,
            "{reader}: record {i} (left: what it read, right: what surge wrote)"
        );
    }
}
