//! The order saga (`surge pipeline order`, key orderId).
//!
//! Reads order-create, order-cancel and order-replies (co-partitioned by
//! orderId), asks the inventory pipeline for stock and the coupon pipeline
//! for the coupon, and moves each order through CREATED → PAYMENT_PENDING,
//! or to REJECTED / CANCELLED with whatever it held released. Every
//! transition is one order-status record with a version one higher than the
//! last.
//!
//! `book` owns the per-partition state and its changelog; `saga` holds the
//! rules and nothing else; `identity` tells a retried order-create from a
//! reused order id; `inputs` decodes the three inputs; `metrics` the
//! gauges derived from the state; `audit` checks the saga's invariants from
//! the topics alone, for tests and `surge verify`.

pub mod audit;
pub mod book;
pub mod identity;
pub mod inputs;
pub mod metrics;
pub mod payment;
pub mod saga;
pub mod scenario;

pub use book::{Order, OrderBook, Stage};
pub use identity::ORDER_ID_REUSED;
pub use inputs::{SagaInput, SagaInputs};
pub use metrics::SagaGauges;
pub use payment::{charge_id, refund_id};
pub use saga::{OrderSaga, SagaCodecs, SagaTopics};
