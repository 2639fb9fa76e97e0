//! What the saga's in-process tests share: its topics, the saga wired to
//! them with offline codecs, the engine's harness over its inputs, and an
//! order-create built from lines.

#![allow(dead_code)] // each test file uses its own part of it

use chrono::DateTime;
use surge_core::settings::OrdersSettings;
use surge_engine::harness::Harness;
use surge_engine::Processor;
use surge_order::{OrderSaga, SagaCodecs, SagaTopics};
use surge_schemas::order::{OrderCreate, OrderItem};
use surge_schemas::{Money, TopicCodec};

pub const STATUS: &str = "order-status";
pub const PAYMENTS: &str = "payment-request";
pub const INVENTORY: &str = "inventory-commands";
pub const COUPONS: &str = "coupon-issue";

/// The saga under `rules`, sending to the topics above.
pub fn saga(rules: OrdersSettings) -> OrderSaga {
    OrderSaga::new(
        rules,
        SagaTopics {
            status: STATUS.into(),
            payments: PAYMENTS.into(),
            inventory: INVENTORY.into(),
            coupons: COUPONS.into(),
        },
        SagaCodecs {
            status: TopicCodec::offline(1),
            payments: TopicCodec::offline(2),
            inventory: TopicCodec::offline(3),
            coupons: TopicCodec::offline(4),
        },
    )
}

/// The harness over the saga's three co-partitioned inputs and its outputs,
/// six partitions each.
pub fn harness<P: Processor>(processor: P) -> Harness<P> {
    Harness::new(
        processor,
        &[
            ("order-create", 6),
            ("order-cancel", 6),
            ("order-replies", 6),
        ],
        &[(STATUS, 6), (PAYMENTS, 6), (INVENTORY, 6), (COUPONS, 6)],
    )
}

pub fn at(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// Order `id` of `user` for `lines` (product, quantity, unit price).
pub fn order(
    id: &str,
    user: &str,
    lines: &[(&str, i32, i64)],
    coupon: Option<&str>,
) -> OrderCreate {
    OrderCreate {
        order_id: id.into(),
        user_id: user.into(),
        items: lines
            .iter()
            .map(|(p, q, price)| OrderItem {
                product_id: p.to_string(),
                quantity: *q,
                unit_price: Money(*price),
            })
            .collect(),
        currency: "KRW".into(),
        coupon_id: coupon.map(String::from),
        requested_at: at(1_000),
    }
}
