//! The payment pipeline (`surge pipeline payment`): charges and refunds the
//! order saga asks for, through a [`surge_payment_gateway::PaymentGateway`],
//! each answered exactly once on order-replies.
//!
//! - `attempts`: what the pipeline remembers per payment id (its state);
//! - `resolve`: one attempt to a definite outcome (retries, lookup);
//! - `pipeline`: the processor, splitting each payment into steps that
//!   are durable on their own (see its module comment);
//! - `hold`: the test hook that stops it at a step.

pub mod attempts;
pub mod hold;
pub mod metrics;
pub mod pipeline;
pub mod resolve;

pub use attempts::PaymentBook;
pub use metrics::PaymentMetrics;
pub use pipeline::PaymentPipeline;
pub use resolve::RetryPolicy;
