//! How surge talks to a payment provider.
//!
//! A charge is the one side effect that cannot join a Kafka transaction, so
//! every call carries an idempotency key fixed before the first attempt
//! (the payment id for a charge, the refund id for a refund). The provider
//! promises, for as long as it remembers the key, that a repeat of the same
//! call returns the first call's answer and never acts twice. Everything the
//! payment pipeline does to be exactly-once rests on that promise and on
//! [`PaymentGateway::lookup`], which finds a payment by its key after the
//! provider has forgotten the key itself.
//!
//! An adapter for a real provider implements [`PaymentGateway`]:
//! - send the key as the provider's idempotency key (Stripe and Toss:
//!   the `Idempotency-Key` header);
//! - map a definite answer to [`Outcome`] (approved, or declined with the
//!   provider's code) and everything else — a timeout, a 5xx, a 409 "in
//!   flight", a reset connection, a 429 — to [`Unknown`], never to a decline:
//!   an unknown outcome is retried with the same key;
//! - implement `lookup` with the provider's "find payment by key/order id"
//!   call, answering `Ok(None)` only when the provider is sure no payment
//!   under that key exists.

mod http;
mod money;

pub use http::HttpGateway;
pub use money::{format_minor, parse_minor};

use std::future::Future;

/// A charge to make: `amount` in minor units (two decimals) of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The idempotency key (the payment id).
    pub key: String,
    pub order_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
}

/// A refund of (part of) a charge made under `charge_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The idempotency key (the refund id).
    pub key: String,
    /// The idempotency key the charge was made with.
    pub charge_key: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
}

/// A definite answer from the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The charge (or refund) is done; `provider_id` is the provider's id for it.
    Approved { provider_id: String },
    /// Refused, with the provider's code (e.g. `insufficient_funds`), and
    /// nothing done.
    Declined { code: String, message: String },
}

/// The call may or may not have been applied: retry with the same key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Unknown {
    pub kind: UnknownKind,
    pub detail: String,
}

/// Why an outcome is unknown (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKind {
    Timeout,
    /// 5xx.
    ServerError,
    /// 409: a request with the same key is still being processed.
    InFlight,
    /// 429.
    Throttled,
    /// Connection refused or reset, or a broken answer.
    Transport,
}

impl UnknownKind {
    pub const ALL: [UnknownKind; 5] = [
        UnknownKind::Timeout,
        UnknownKind::ServerError,
        UnknownKind::InFlight,
        UnknownKind::Throttled,
        UnknownKind::Transport,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UnknownKind::Timeout => "timeout",
            UnknownKind::ServerError => "server_error",
            UnknownKind::InFlight => "in_flight",
            UnknownKind::Throttled => "throttled",
            UnknownKind::Transport => "transport",
        }
    }
}

impl std::fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A payment provider, called under idempotency keys.
pub trait PaymentGateway: Send + Sync + 'static {
    fn charge(&self, charge: &Charge) -> impl Future<Output = Result<Outcome, Unknown>> + Send;
    fn refund(&self, refund: &Refund) -> impl Future<Output = Result<Outcome, Unknown>> + Send;
    /// The definite outcome of the payment made under `key`, charge or
    /// refund; `Ok(None)` when the provider has none under that key.
    fn lookup(&self, key: &str) -> impl Future<Output = Result<Option<Outcome>, Unknown>> + Send;
}
