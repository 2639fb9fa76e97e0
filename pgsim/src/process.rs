//! The life of one charge or refund, after its request was validated:
//! claim the key (or meet the request that holds it), then the faults in
//! their order — conflict, latency, error before, apply (decide, record the
//! payment and its answer in one transaction), error after, hang — and the
//! answer. Replays, reused keys and requests in flight are answered from
//! the key alone: faults only happen to requests that act.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::faults::Plan;
use crate::idempotency::{judge, takeover_after, KnownKey, Verdict};
use crate::ledger::{Claim, ClaimToken, StoredAnswer};
use crate::metrics::RequestOutcome;
use crate::payment::{decide_refund, decline_message, Decision, Kind, Payment, PaymentRequest};
use crate::state::Sim;

/// How a request is answered, and the outcome it counts as.
#[derive(Debug)]
pub struct Answer {
    pub outcome: RequestOutcome,
    pub reply: Reply,
}

#[derive(Debug)]
pub enum Reply {
    /// A stored answer: the first one, or a replay of it.
    Stored {
        answer: StoredAnswer,
        replayed: bool,
    },
    /// The stored answer, held back for `hang` (the client times out first).
    Held {
        answer: StoredAnswer,
        hang: Duration,
    },
    Error(ApiError),
}

impl Answer {
    fn error(outcome: RequestOutcome, error: ApiError) -> Answer {
        Answer {
            outcome,
            reply: Reply::Error(error),
        }
    }

    fn in_flight() -> Answer {
        Answer::error(
            RequestOutcome::Conflict,
            ApiError::new(
                StatusCode::CONFLICT,
                "request_in_flight",
                "a request with this Idempotency-Key is being processed; retry later",
            ),
        )
    }

    pub fn unavailable() -> Answer {
        Answer::error(RequestOutcome::Unavailable, ApiError::unavailable())
    }

    fn internal(outcome: RequestOutcome, message: &str) -> Answer {
        Answer::error(
            outcome,
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message),
        )
    }
}

/// Runs the request to its answer. Spawned, so a client that hangs up
/// mid-request cannot stop it between claiming the key and completing it
/// (which would leave the key in flight until the claim is abandoned).
pub async fn submit(sim: Arc<Sim>, key: String, request: PaymentRequest) -> Answer {
    let task = tokio::spawn(async move {
        match act(&sim, &key, request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(message = "ledger unavailable", %error, key);
                Answer::unavailable()
            }
        }
    });
    task.await.unwrap_or_else(|error| {
        tracing::error!(message = "payment request task failed", %error);
        Answer::internal(
            RequestOutcome::Unavailable,
            "the request failed inside pg-sim",
        )
    })
}

async fn act(sim: &Sim, key: &str, request: PaymentRequest) -> Result<Answer, sqlx::Error> {
    let faults = sim.faults.current();
    let hash = request.hash();
    let claim = sim
        .ledger
        .claim(
            key,
            request.kind.endpoint(),
            &hash,
            sim.key_retention,
            takeover_after(faults.hang),
        )
        .await?;
    let token = match claim {
        Claim::Known(known) => return known_key(sim, &known, &hash).await,
        Claim::Claimed { token, renewed } => {
            if renewed {
                tracing::info!(
                    message = "idempotency key expired or abandoned, treated as new",
                    key
                );
            }
            token
        }
    };
    let plan = Plan::sample(&faults, request.kind == Kind::Charge, &mut rand::rng());
    if plan.conflict {
        sim.ledger.release(&token).await?;
        return Ok(Answer::in_flight());
    }
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    if plan.error_before {
        sim.ledger.release(&token).await?;
        return Ok(Answer::internal(
            RequestOutcome::ErrorBefore,
            "injected failure before the payment (nothing was done)",
        ));
    }
    let (payment, answer) = match apply(sim, &token, request, plan.decline).await {
        Ok(Some(done)) => done,
        Ok(None) => {
            tracing::warn!(message = "idempotency claim taken over mid-request", key);
            return Ok(Answer::unavailable());
        }
        Err(error) => {
            // The transaction rolled back; the key is free again. (A done
            // key is never released: `release` only drops in-flight claims.)
            let _ = sim.ledger.release(&token).await;
            return Err(error);
        }
    };
    let r = &payment.request;
    if payment.decision == Decision::Approve {
        sim.metrics.applied(r.kind, r.amount_minor, &r.currency);
    }
    tracing::debug!(
        message = "payment recorded",
        kind = r.kind.as_str(),
        key,
        id = %payment.id,
        status = payment.status(),
        code = payment.code(),
        order_id = %r.order_id,
        amount_minor = r.amount_minor,
        currency = %r.currency
    );
    if plan.error_after {
        return Ok(Answer::internal(
            RequestOutcome::ErrorAfter,
            "injected failure after the payment was applied",
        ));
    }
    if plan.timeout_after {
        return Ok(Answer {
            outcome: RequestOutcome::TimeoutAfter,
            reply: Reply::Held {
                answer,
                hang: faults.hang,
            },
        });
    }
    Ok(Answer {
        outcome: match payment.decision {
            Decision::Approve => RequestOutcome::Approved,
            Decision::Decline { .. } => RequestOutcome::Declined,
        },
        reply: Reply::Stored {
            answer,
            replayed: false,
        },
    })
}

/// Decides and records the payment; `None` when the claim was lost.
async fn apply(
    sim: &Sim,
    token: &ClaimToken,
    request: PaymentRequest,
    decline: Option<String>,
) -> Result<Option<(Payment, StoredAnswer)>, sqlx::Error> {
    match request.kind {
        Kind::Charge => {
            let decision = match decline {
                Some(code) => Decision::Decline {
                    message: decline_message(&code),
                    code,
                },
                None => Decision::Approve,
            };
            let payment = Payment::new(&token.key, request, decision);
            let answer = sim.ledger.record_charge(token, &payment).await?;
            Ok(answer.map(|a| (payment, a)))
        }
        Kind::Refund => {
            let charge_key = request.charge_key.clone().unwrap_or_default();
            sim.ledger
                .record_refund(token, &charge_key, |totals| {
                    let decision = decide_refund(totals, request.amount_minor, &request.currency);
                    Payment::new(&token.key, request, decision)
                })
                .await
        }
    }
}

/// The same request again, a different one under the key, or one in flight.
async fn known_key(sim: &Sim, known: &KnownKey, hash: &str) -> Result<Answer, sqlx::Error> {
    Ok(match judge(known, hash) {
        Verdict::Replay { payment_id } => match sim.ledger.answer_of(&payment_id).await? {
            Some(answer) => Answer {
                outcome: RequestOutcome::Replayed,
                reply: Reply::Stored {
                    answer,
                    replayed: true,
                },
            },
            // A done key always points at its payment (same transaction, FK).
            None => Answer::unavailable(),
        },
        Verdict::KeyReused { endpoint } => Answer::error(
            RequestOutcome::KeyReused,
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used for a different request (to {endpoint}); use a new key"
                ),
            ),
        ),
        Verdict::InFlight => Answer::in_flight(),
    })
}
