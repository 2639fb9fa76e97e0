//! The HTTP edge: routes, request bodies and the error shape. Every error
//! is `{"error": "<code>", "message": "<text>"}` (plus `field` when one field
//! is at fault); a stored answer is sent as the exact bytes stored.
//!
//! - `POST /v1/charges`, `POST /v1/refunds` (header `Idempotency-Key`)
//! - `GET /v1/payments/{key}`: the latest payment made under a key
//! - `GET`/`PUT /admin/faults`: the fault knobs (bearer token when configured)
//! - `/metrics`, `/health` come from surge-core's telemetry router.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use surge_payment_gateway::parse_minor;

use crate::idempotency::{parse_key, MAX_KEY_BYTES};
use crate::metrics::RequestOutcome;
use crate::payment::{Kind, PaymentRequest};
use crate::process::{self, Answer, Reply};
use crate::state::Sim;

/// Payment bodies are a few hundred bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The header that marks an answer as a replay of a stored one.
pub const REPLAYED: &str = "idempotent-replayed";

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/refunds", post(refund))
        .route("/v1/payments/{key}", get(lookup))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sim)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            field: None,
        }
    }

    /// 503: the ledger cannot be reached (or is not created yet).
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the ledger cannot be reached; retry with the same Idempotency-Key",
        )
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            message: &self.message,
            field: self.field.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn charge(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    pay(sim, Kind::Charge, &headers, body).await
}

async fn refund(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    pay(sim, Kind::Refund, &headers, body).await
}

async fn pay(
    sim: Arc<Sim>,
    kind: Kind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let answer = match admit(&sim, kind, headers, body) {
        Ok(Some((key, request))) => process::submit(sim.clone(), key, request).await,
        Ok(None) => Answer::unavailable(),
        Err(error) => Answer {
            outcome: RequestOutcome::BadRequest,
            reply: Reply::Error(error),
        },
    };
    // Counted before a hang: a client that gave up drops this future then.
    sim.metrics
        .request(kind, &key, answer.outcome, started.elapsed());
    match answer.reply {
        Reply::Stored { answer, replayed } => stored(answer, replayed),
        Reply::Held { answer, hang } => {
            tokio::select! {
                _ = tokio::time::sleep(hang) => {}
                _ = sim.shutdown.clone().wait() => {}
            }
            stored(answer, false)
        }
        Reply::Error(error) => error.into_response(),
    }
}

/// The key and the validated request; `None` while the ledger is not ready.
/// Nothing is stored for a request refused here.
fn admit(
    sim: &Sim,
    kind: Kind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<(String, PaymentRequest)>, ApiError> {
    if !sim.is_ready() {
        return Ok(None);
    }
    let key = parse_key(headers.get("idempotency-key").map(HeaderValue::as_bytes))
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "idempotency_key_required", m))?;
    let body = body.map_err(|r| ApiError::new(r.status(), "invalid_request", r.body_text()))?;
    Ok(Some((key, parse_request(kind, &body)?)))
}

/// The body of a charge or refund: every field required, none unknown.
pub fn parse_request(kind: Kind, body: &[u8]) -> Result<PaymentRequest, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body must be a JSON object: {e}"),
        )
    })?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be a JSON object",
        ));
    };
    let mut take = |name: &'static str| -> Result<String, ApiError> {
        match fields.remove(name) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
            None => Err(ApiError::invalid(name, format!("{name} is required"))),
        }
    };
    let charge_key = match kind {
        Kind::Refund => {
            let k = take("chargeKey")?;
            parse_key(Some(k.as_bytes())).map_err(|_| {
                ApiError::invalid(
                    "chargeKey",
                    format!("chargeKey must be 1 to {MAX_KEY_BYTES} bytes of printable ASCII"),
                )
            })?;
            Some(k)
        }
        Kind::Charge => None,
    };
    let order_id = id("orderId", take("orderId")?)?;
    let user_id = match kind {
        Kind::Charge => Some(id("userId", take("userId")?)?),
        Kind::Refund => None,
    };
    let amount = take("amount")?;
    let amount_minor = parse_minor(&amount).filter(|m| *m > 0).ok_or_else(|| {
        ApiError::invalid(
            "amount",
            format!("amount must be a positive decimal string with at most two places, like \"12.30\"; got {amount:?}"),
        )
    })?;
    let currency = take("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid(
            "currency",
            format!("currency must be an ISO 4217 code like \"KRW\"; got {currency:?}"),
        ));
    }
    if let Some(extra) = fields.keys().next() {
        return Err(ApiError::invalid(extra, format!("unknown field {extra:?}")));
    }
    Ok(PaymentRequest {
        kind,
        order_id,
        user_id,
        charge_key,
        amount_minor,
        currency,
    })
}

fn id(field: &'static str, value: String) -> Result<String, ApiError> {
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 255 bytes without control characters"),
        ));
    }
    Ok(value)
}

fn stored(answer: crate::ledger::StoredAnswer, replayed: bool) -> Response {
    let status = StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// The latest payment under the key, from the ledger (the key's retention
/// does not matter). A request still in flight has no payment yet: 404.
async fn lookup(State(sim): State<Arc<Sim>>, key: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(key)) = key else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "bad key in the path",
        )
        .into_response();
    };
    if !sim.is_ready() {
        sim.metrics.lookup("unavailable");
        return ApiError::unavailable().into_response();
    }
    match sim.ledger.lookup(&key).await {
        Ok(Some(answer)) => {
            sim.metrics.lookup("found");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                answer.body,
            )
                .into_response()
        }
        Ok(None) => {
            sim.metrics.lookup("not_found");
            ApiError::new(
                StatusCode::NOT_FOUND,
                "payment_not_found",
                "no payment was made under this key",
            )
            .into_response()
        }
        Err(error) => {
            tracing::warn!(message = "ledger unavailable", %error, key);
            sim.metrics.lookup("unavailable");
            ApiError::unavailable().into_response()
        }
    }
}

async fn get_faults(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&sim, &headers) {
        return e.into_response();
    }
    Json(sim.faults.current()).into_response()
}

async fn put_faults(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = authorize(&sim, &headers) {
        return e.into_response();
    }
    let changes = match body
        .map_err(|r| r.body_text())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .and_then(|v| sim.faults.update(v))
    {
        Ok(faults) => faults,
        Err(message) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_faults", message)
                .into_response()
        }
    };
    tracing::info!(message = "faults changed", faults = ?changes);
    Json(changes).into_response()
}

/// Open when no token is configured (pg-sim is a test double on loopback);
/// otherwise 401 without credentials and 403 with wrong ones.
fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = sim.admin_token.as_deref() else {
        return Ok(());
    };
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/admin needs Authorization: Bearer <token>",
        ));
    };
    let token = given
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    if !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong admin token",
        ));
    }
    Ok(())
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(kind: Kind, body: &str) -> Option<String> {
        parse_request(kind, body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_valid_charge_and_refund_parse() {
        let c = parse_request(
            Kind::Charge,
            br#"{"orderId":"o1","userId":"u1","amount":"12.3","currency":"KRW"}"#,
        )
        .unwrap();
        assert_eq!(c.amount_minor, 1230);
        assert_eq!(c.user_id.as_deref(), Some("u1"));
        let r = parse_request(
            Kind::Refund,
            br#"{"chargeKey":"k1","orderId":"o1","amount":"1.00","currency":"KRW"}"#,
        )
        .unwrap();
        assert_eq!(r.charge_key.as_deref(), Some("k1"));
        assert_eq!(r.user_id, None);
    }

    #[test]
    fn bad_fields_are_named() {
        let ok = r#""orderId":"o1","userId":"u1","currency":"KRW""#;
        assert_eq!(
            field_of(Kind::Charge, &format!("{{{ok}}}")),
            Some("amount".to_string())
        );
        for amount in [r#""0""#, r#""-1.00""#, r#""1.234""#, "12.30", r#""""#] {
            assert_eq!(
                field_of(Kind::Charge, &format!(r#"{{{ok},"amount":{amount}}}"#)),
                Some("amount".to_string()),
                "{amount}"
            );
        }
        assert_eq!(
            field_of(
                Kind::Charge,
                r#"{"userId":"u1","amount":"1","currency":"KRW"}"#
            ),
            Some("orderId".to_string())
        );
        assert_eq!(
            field_of(
                Kind::Charge,
                r#"{"orderId":"o1","userId":"u1","amount":"1","currency":"krw"}"#
            ),
            Some("currency".to_string())
        );
        assert_eq!(
            field_of(
                Kind::Refund,
                r#"{"orderId":"o1","amount":"1","currency":"KRW"}"#
            ),
            Some("chargeKey".to_string())
        );
        let extra = parse_request(
            Kind::Charge,
            br#"{"orderId":"o1","userId":"u1","amount":"1","currency":"KRW","tip":"1"}"#,
        )
        .unwrap_err();
        assert_eq!(extra.field.as_deref(), Some("tip"), "{}", extra.message);
        assert!(parse_request(Kind::Charge, b"not json").is_err());
        assert!(parse_request(Kind::Charge, b"[1]").is_err());
    }

    #[test]
    fn tokens_compare_in_constant_time() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret-longer"));
    }
}
