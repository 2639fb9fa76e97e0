//! The HTTP client for pg-sim's API (`surge pg-sim`; the same shape as
//! Stripe's and Toss's): `POST /v1/charges` and `POST /v1/refunds` under an
//! `Idempotency-Key` header, `GET /v1/payments/{key}` for lookups.
//!
//! Only a stored answer is definite: 200 APPROVED, 402 DECLINED (and for a
//! lookup, 404 `payment_not_found`). Everything else is [`Unknown`] and is
//! retried with the same key, including a 4xx other than 402/409/429: that
//! one means surge sent something the provider refuses (a malformed body,
//! a key reused for another body, a wrong URL or credentials). It is a bug
//! or a misconfiguration on our side, not a decline — reading it as one
//! would cancel an order that may well be charged under another attempt —
//! so it stays unknown (kind `transport`, the provider's body in `detail`)
//! and is logged as an ERROR on every call, for an operator to fix while
//! the pipeline keeps retrying.

use std::time::Duration;

use serde::Deserialize;

use crate::{format_minor, Charge, Outcome, PaymentGateway, Refund, Unknown, UnknownKind};

/// A [`PaymentGateway`] over HTTP, with a keep-alive connection pool.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    http: reqwest::Client,
    base: reqwest::Url,
}

impl HttpGateway {
    /// `base_url` is the API root (`http://127.0.0.1:8090`); every call
    /// gives up after `call_timeout` (its outcome is then unknown).
    pub fn new(base_url: &str, call_timeout: Duration) -> Result<Self, String> {
        // The URL may carry credentials (basic auth): errors never repeat it.
        let base = reqwest::Url::parse(base_url)
            .map_err(|e| format!("the payment provider URL is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err("the payment provider URL must be http:// or https://".to_string());
        }
        let http = reqwest::Client::builder()
            // A refused or unroutable provider fails fast instead of eating the call's budget.
            .connect_timeout(call_timeout.min(Duration::from_secs(2)))
            .timeout(call_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("building the payment HTTP client: {e}"))?;
        Ok(Self { http, base })
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, Unknown> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| unknown(UnknownKind::Transport, "the base URL cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn post(
        &self,
        endpoint: &'static str,
        key: &str,
        body: serde_json::Value,
    ) -> Result<Outcome, Unknown> {
        let url = self.url(&["v1", endpoint])?;
        let response = self
            .http
            .post(url)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .map_err(|e| call_error(endpoint, key, e))?;
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let bytes = response
            .bytes()
            .await
            .map_err(|e| call_error(endpoint, key, e))?;
        let outcome = outcome_of(status, &bytes);
        tracing::debug!(message = "payment call", endpoint, key, status, replayed);
        if let Err(u) = &outcome {
            refused(endpoint, key, status, u);
        }
        outcome
    }
}

impl PaymentGateway for HttpGateway {
    async fn charge(&self, charge: &Charge) -> Result<Outcome, Unknown> {
        let body = serde_json::json!({
            "orderId": charge.order_id,
            "userId": charge.user_id,
            "amount": format_minor(charge.amount),
            "currency": charge.currency,
        });
        self.post("charges", &charge.key, body).await
    }

    async fn refund(&self, refund: &Refund) -> Result<Outcome, Unknown> {
        let body = serde_json::json!({
            "chargeKey": refund.charge_key,
            "orderId": refund.order_id,
            "amount": format_minor(refund.amount),
            "currency": refund.currency,
        });
        self.post("refunds", &refund.key, body).await
    }

    async fn lookup(&self, key: &str) -> Result<Option<Outcome>, Unknown> {
        let url = self.url(&["v1", "payments", key])?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| call_error("payments", key, e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| call_error("payments", key, e))?;
        let found = lookup_of(status, &bytes);
        tracing::debug!(message = "payment lookup", key, status);
        if let Err(u) = &found {
            refused("payments", key, status, u);
        }
        found
    }
}

/// The part of an answer the client reads.
#[derive(Deserialize)]
struct Answer {
    id: Option<String>,
    status: Option<String>,
    code: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

/// A charge's or refund's answer. Only a well-formed 200 APPROVED or 402
/// DECLINED is definite.
fn outcome_of(status: u16, body: &[u8]) -> Result<Outcome, Unknown> {
    match status {
        200 | 402 => stored_outcome(body)
            .filter(|o| {
                matches!(
                    (status, o),
                    (200, Outcome::Approved { .. }) | (402, Outcome::Declined { .. })
                )
            })
            .ok_or_else(|| broken(status, body)),
        _ => Err(not_definite(status, body)),
    }
}

/// A lookup's answer: the stored payment (200), none (404
/// `payment_not_found`, and only that: a 404 from a wrong URL is no proof).
fn lookup_of(status: u16, body: &[u8]) -> Result<Option<Outcome>, Unknown> {
    match status {
        200 => stored_outcome(body)
            .map(Some)
            .ok_or_else(|| broken(status, body)),
        404 if serde_json::from_slice::<Answer>(body)
            .is_ok_and(|a| a.error.as_deref() == Some("payment_not_found")) =>
        {
            Ok(None)
        }
        _ => Err(not_definite(status, body)),
    }
}

/// The outcome a stored body states, if it states one.
fn stored_outcome(body: &[u8]) -> Option<Outcome> {
    let a: Answer = serde_json::from_slice(body).ok()?;
    match a.status.as_deref()? {
        "APPROVED" => Some(Outcome::Approved {
            provider_id: a.id.filter(|id| !id.is_empty())?,
        }),
        "DECLINED" => Some(Outcome::Declined {
            code: a.code.filter(|c| !c.is_empty())?,
            message: a.message.unwrap_or_default(),
        }),
        _ => None,
    }
}

fn not_definite(status: u16, body: &[u8]) -> Unknown {
    let kind = match status {
        409 => UnknownKind::InFlight,
        429 => UnknownKind::Throttled,
        500..=599 => UnknownKind::ServerError,
        _ => UnknownKind::Transport,
    };
    unknown(kind, format!("HTTP {status}: {}", excerpt(body)))
}

fn broken(status: u16, body: &[u8]) -> Unknown {
    unknown(
        UnknownKind::Transport,
        format!("HTTP {status} with an unreadable answer: {}", excerpt(body)),
    )
}

/// A 4xx that is neither an answer nor "try again": ours to fix (see the module doc).
fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 402 | 409 | 429)
}

fn refused(endpoint: &str, key: &str, status: u16, u: &Unknown) {
    if is_refusal(status) {
        tracing::error!(
            message = "payment provider refused the request; retrying, but this needs a fix",
            endpoint,
            key,
            status,
            detail = %u.detail
        );
    }
}

/// A call that got no answer: timed out, or the connection failed.
fn call_error(endpoint: &str, key: &str, e: reqwest::Error) -> Unknown {
    // reqwest's message names the URL, credentials included; `endpoint`
    // says which call it was.
    let e = e.without_url();
    if e.is_builder() {
        // Nothing was sent (e.g. a key that is not a valid header value).
        tracing::error!(message = "payment request could not be built", endpoint, key, error = %chain(&e));
    }
    let kind = if e.is_timeout() {
        UnknownKind::Timeout
    } else {
        UnknownKind::Transport
    };
    unknown(kind, chain(&e))
}

/// The error with its causes ("error sending request: ...: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unknown(kind: UnknownKind, detail: impl Into<String>) -> Unknown {
    Unknown {
        kind,
        detail: detail.into(),
    }
}

/// The start of a body, for `detail` (bounded: it ends up in logs).
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).into_owned();
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<T: std::fmt::Debug>(r: Result<T, Unknown>) -> UnknownKind {
        r.unwrap_err().kind
    }

    /// A provider URL with basic-auth credentials never shows its password
    /// in an error: neither a bad URL nor a call that failed.
    #[tokio::test]
    async fn errors_never_show_the_urls_password() {
        for bad in ["ftp://u:s3cret@h/", "http://u:s3cret@[::1"] {
            let Err(e) = HttpGateway::new(bad, Duration::from_secs(1)) else {
                panic!("{bad} accepted");
            };
            assert!(!e.contains("s3cret"), "{e}");
        }
        // Port 9 (discard) on loopback: nothing listens, the call fails fast.
        let gateway =
            HttpGateway::new("http://u:s3cret@127.0.0.1:9", Duration::from_secs(2)).unwrap();
        let unknown = gateway.lookup("k1").await.expect_err("nothing listens");
        assert_eq!(unknown.kind, UnknownKind::Transport, "{}", unknown.detail);
        assert!(!unknown.detail.contains("s3cret"), "{}", unknown.detail);
    }

    #[test]
    fn stored_answers_are_definite() {
        let approved = br#"{"id":"ch_1","status":"APPROVED","kind":"CHARGE"}"#;
        assert_eq!(
            outcome_of(200, approved),
            Ok(Outcome::Approved {
                provider_id: "ch_1".into()
            })
        );
        let declined =
            br#"{"id":"ch_2","status":"DECLINED","code":"card_declined","message":"no"}"#;
        assert_eq!(
            outcome_of(402, declined),
            Ok(Outcome::Declined {
                code: "card_declined".into(),
                message: "no".into()
            })
        );
    }

    #[test]
    fn everything_else_is_unknown_never_a_decline() {
        let err = br#"{"error":"x","message":"y"}"#;
        assert_eq!(kind(outcome_of(409, err)), UnknownKind::InFlight);
        assert_eq!(kind(outcome_of(429, err)), UnknownKind::Throttled);
        assert_eq!(kind(outcome_of(500, err)), UnknownKind::ServerError);
        assert_eq!(kind(outcome_of(503, b"")), UnknownKind::ServerError);
        for bug in [400, 401, 403, 404, 422] {
            let u = outcome_of(bug, br#"{"error":"idempotency_key_reused"}"#).unwrap_err();
            assert_eq!(u.kind, UnknownKind::Transport, "{bug}");
            assert!(u.detail.contains("idempotency_key_reused"), "{}", u.detail);
            assert!(is_refusal(bug));
        }
        assert!(!is_refusal(402) && !is_refusal(409) && !is_refusal(429) && !is_refusal(500));
        // A definite status with a body that does not say so is not trusted.
        assert_eq!(kind(outcome_of(200, b"<html>")), UnknownKind::Transport);
        assert_eq!(kind(outcome_of(402, b"{}")), UnknownKind::Transport);
        assert_eq!(
            kind(outcome_of(
                200,
                br#"{"id":"ch_1","status":"DECLINED","code":"x"}"#
            )),
            UnknownKind::Transport
        );
        assert_eq!(
            kind(outcome_of(402, br#"{"id":"ch_1","status":"APPROVED"}"#)),
            UnknownKind::Transport
        );
        assert_eq!(kind(outcome_of(302, b"")), UnknownKind::Transport);
    }

    #[test]
    fn a_lookup_finds_either_outcome_and_only_payment_not_found_is_none() {
        assert_eq!(
            lookup_of(200, br#"{"id":"rf_1","status":"APPROVED"}"#),
            Ok(Some(Outcome::Approved {
                provider_id: "rf_1".into()
            }))
        );
        assert!(matches!(
            lookup_of(
                200,
                br#"{"id":"ch_1","status":"DECLINED","code":"expired_card"}"#
            ),
            Ok(Some(Outcome::Declined { .. }))
        ));
        assert_eq!(
            lookup_of(404, br#"{"error":"payment_not_found","message":"none"}"#),
            Ok(None)
        );
        assert_eq!(kind(lookup_of(404, b"")), UnknownKind::Transport);
        assert_eq!(
            kind(lookup_of(404, br#"{"error":"not_found"}"#)),
            UnknownKind::Transport
        );
        assert_eq!(kind(lookup_of(503, b"")), UnknownKind::ServerError);
    }

    #[test]
    fn keys_are_escaped_into_the_path() {
        let gw = HttpGateway::new("http://127.0.0.1:8090/", Duration::from_secs(1)).unwrap();
        let url = gw.url(&["v1", "payments", "a b/c?d"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8090/v1/payments/a%20b%2Fc%3Fd"
        );
        let nested = HttpGateway::new("http://h/pg", Duration::from_secs(1)).unwrap();
        assert_eq!(
            nested.url(&["v1", "charges"]).unwrap().as_str(),
            "http://h/pg/v1/charges"
        );
        assert!(HttpGateway::new("not a url", Duration::from_secs(1)).is_err());
        assert!(HttpGateway::new("ftp://h", Duration::from_secs(1)).is_err());
    }
}
