//! Turning one attempt into the provider's definite outcome.
//!
//! The call is repeated under the same idempotency key until the answer is
//! definite (approved or declined): a timeout, 5xx, 409 or reset says
//! nothing about whether money moved, so it is never taken for a decline.
//! The provider only promises replays while it remembers the key, so no
//! call is started once `key_retention − lookup_margin − call_timeout` has
//! passed since the request (the earliest the key can have been used);
//! from then on the attempt is resolved by looking the payment up, which
//! reads the provider's ledger rather than its key memory.

use std::time::Duration;

use surge_core::settings::PaymentSettings;
use surge_engine::Millis;
use surge_payment_gateway::{Charge, Outcome, PaymentGateway, Refund, Unknown, UnknownKind};

use crate::attempts::{Attempt, Kind, Resolution};
use crate::metrics::PaymentMetrics;

/// Decline code of an attempt the provider has no payment for once its key
/// was forgotten: nothing was charged, and nothing will be.
pub const NOT_FOUND_AFTER_RETENTION: &str = "not_found_after_key_retention";

/// How unknown outcomes are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub call_timeout: Duration,
    pub initial: Duration,
    pub max: Duration,
    pub key_retention: Duration,
    pub lookup_margin: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &PaymentSettings) -> Self {
        Self {
            call_timeout: s.call_timeout,
            initial: s.retry_initial,
            max: s.retry_max,
            key_retention: s.key_retention,
            lookup_margin: s.lookup_margin,
        }
    }

    /// The last moment a call with the key may start.
    pub fn last_call_at(&self, requested_at: Millis) -> Millis {
        let window = self
            .key_retention
            .saturating_sub(self.lookup_margin)
            .saturating_sub(self.call_timeout);
        requested_at.saturating_add(window.as_millis() as i64)
    }

    fn next_delay(&self, delay: Duration) -> Duration {
        (delay * 2).min(self.max)
    }
}

pub fn wall_clock() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Charge => "charge",
        Kind::Refund => "refund",
    }
}

fn resolution(outcome: Outcome, by_lookup: bool) -> Resolution {
    match outcome {
        Outcome::Approved { provider_id } => Resolution {
            approved: true,
            code: None,
            provider_ref: Some(provider_id),
            by_lookup,
        },
        Outcome::Declined { code, .. } => Resolution {
            approved: false,
            code: Some(code),
            provider_ref: None,
            by_lookup,
        },
    }
}

/// One call under the attempt's key.
async fn call<G: PaymentGateway>(
    gateway: &G,
    a: &Attempt,
    policy: &RetryPolicy,
) -> Result<Outcome, Unknown> {
    let fut = async {
        match a.kind {
            Kind::Charge => {
                gateway
                    .charge(&Charge {
                        key: a.payment_id.clone(),
                        order_id: a.order_id.clone(),
                        user_id: a.user_id.clone(),
                        amount: a.amount,
                        currency: a.currency.clone(),
                    })
                    .await
            }
            Kind::Refund => {
                gateway
                    .refund(&Refund {
                        key: a.payment_id.clone(),
                        charge_key: a.refund_of.clone().unwrap_or_default(),
                        order_id: a.order_id.clone(),
                        amount: a.amount,
                        currency: a.currency.clone(),
                    })
                    .await
            }
        }
    };
    // The gateway has its own timeout; this one guards against an adapter
    // that has none.
    match tokio::time::timeout(policy.call_timeout + Duration::from_secs(1), fut).await {
        Ok(r) => r,
        Err(_) => Err(Unknown {
            kind: UnknownKind::Timeout,
            detail: "no answer within the call timeout".into(),
        }),
    }
}

/// Resolves `a`; returns only once the outcome is definite.
pub async fn resolve<G: PaymentGateway>(
    gateway: &G,
    a: &Attempt,
    policy: &RetryPolicy,
    metrics: &PaymentMetrics,
    clock: impl Fn() -> Millis,
) -> Resolution {
    let kind = kind_label(a.kind);
    let mut delay = policy.initial;
    loop {
        if clock() >= policy.last_call_at(a.requested_at) {
            match gateway.lookup(&a.payment_id).await {
                Ok(Some(outcome)) => {
                    metrics.lookups.with_label_values(&["found"]).inc();
                    return resolution(outcome, true);
                }
                Ok(None) => {
                    metrics.lookups.with_label_values(&["not_found"]).inc();
                    return Resolution {
                        approved: false,
                        code: Some(NOT_FOUND_AFTER_RETENTION.into()),
                        provider_ref: None,
                        by_lookup: true,
                    };
                }
                Err(e) => {
                    metrics.lookups.with_label_values(&["unknown"]).inc();
                    tracing::warn!(message = "payment lookup failed; retrying", payment_id = %a.payment_id, error = %e);
                }
            }
        } else {
            let timer = metrics.call_seconds.start_timer();
            let answer = call(gateway, a, policy).await;
            timer.observe_duration();
            match answer {
                Ok(outcome) => {
                    let result = match outcome {
                        Outcome::Approved { .. } => "approved",
                        Outcome::Declined { .. } => "declined",
                    };
                    metrics.calls.with_label_values(&[kind, result]).inc();
                    return resolution(outcome, false);
                }
                Err(e) => {
                    metrics.calls.with_label_values(&[kind, "unknown"]).inc();
                    metrics.unknown.with_label_values(&[e.kind.label()]).inc();
                    tracing::debug!(message = "payment outcome unknown; retrying with the same key", payment_id = %a.payment_id, error = %e, retry_in = ?delay);
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = policy.next_delay(delay);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A provider that answers from a script, then remembers keys like a
    /// real one: a repeat of an applied call replays its answer.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<Vec<Result<Outcome, Unknown>>>,
        applied: Mutex<HashMap<String, Outcome>>,
        calls: Mutex<u32>,
        lookups: Mutex<u32>,
    }

    fn unknown(kind: UnknownKind) -> Result<Outcome, Unknown> {
        Err(Unknown {
            kind,
            detail: "scripted".into(),
        })
    }

    impl PaymentGateway for Scripted {
        async fn charge(&self, c: &Charge) -> Result<Outcome, Unknown> {
            *self.calls.lock().unwrap() += 1;
            if let Some(o) = self.applied.lock().unwrap().get(&c.key) {
                return Ok(o.clone());
            }
            let next = self.script.lock().unwrap().remove(0);
            if let Ok(o) = &next {
                self.applied
                    .lock()
                    .unwrap()
                    .insert(c.key.clone(), o.clone());
            }
            next
        }
        async fn refund(&self, _: &Refund) -> Result<Outcome, Unknown> {
            unreachable!("charges only")
        }
        async fn lookup(&self, key: &str) -> Result<Option<Outcome>, Unknown> {
            *self.lookups.lock().unwrap() += 1;
            Ok(self.applied.lock().unwrap().get(key).cloned())
        }
    }

    fn attempt(requested_at: Millis) -> Attempt {
        Attempt {
            payment_id: "pay_1".into(),
            order_id: "o1".into(),
            user_id: "u1".into(),
            kind: Kind::Charge,
            amount: 500,
            currency: "KRW".into(),
            requested_at,
            refund_of: None,
            resolution: None,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            call_timeout: Duration::from_millis(50),
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            key_retention: Duration::from_secs(3600),
            lookup_margin: Duration::from_secs(600),
        }
    }

    #[tokio::test]
    async fn unknown_outcomes_are_retried_until_definite_never_taken_for_a_decline() {
        let gw = Scripted::default();
        *gw.script.lock().unwrap() = vec![
            unknown(UnknownKind::Timeout),
            unknown(UnknownKind::ServerError),
            unknown(UnknownKind::InFlight),
            Ok(Outcome::Approved {
                provider_id: "ch_9".into(),
            }),
        ];
        let m = PaymentMetrics::detached();
        let r = resolve(&gw, &attempt(0), &policy(), &m, || 1).await;
        assert!(r.approved && !r.by_lookup);
        assert_eq!(r.provider_ref.as_deref(), Some("ch_9"));
        assert_eq!(*gw.calls.lock().unwrap(), 4);
        assert_eq!(m.unknown.with_label_values(&["in_flight"]).get(), 1);
        assert_eq!(*gw.lookups.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn past_the_key_window_the_attempt_is_looked_up_never_called_again() {
        let gw = Scripted::default();
        gw.applied.lock().unwrap().insert(
            "pay_1".into(),
            Outcome::Approved {
                provider_id: "ch_old".into(),
            },
        );
        let p = policy();
        let now = p.last_call_at(0);
        let m = PaymentMetrics::detached();
        let r = resolve(&gw, &attempt(0), &p, &m, || now).await;
        assert!(r.approved && r.by_lookup);
        assert_eq!(*gw.calls.lock().unwrap(), 0, "no call after the window");

        let empty = Scripted::default();
        let r = resolve(&empty, &attempt(0), &p, &m, || now + 1).await;
        assert!(!r.approved);
        assert_eq!(r.code.as_deref(), Some(NOT_FOUND_AFTER_RETENTION));
        assert_eq!(*empty.calls.lock().unwrap(), 0);
    }

    #[test]
    fn the_last_call_leaves_the_margin_and_a_call_timeout_inside_the_window() {
        let p = policy();
        assert_eq!(p.last_call_at(1_000), 1_000 + 3_000_000 - 50);
        let mut d = p.initial;
        for _ in 0..10 {
            d = p.next_delay(d);
        }
        assert_eq!(d, p.max, "backoff is capped");
    }
}
