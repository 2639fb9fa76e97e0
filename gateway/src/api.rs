//! The API's edges: every error is `{"error": ..., "field": ...}` with a
//! status that says whose fault it is, and bodies are read through
//! [`Body`], which turns axum's plain-text JSON rejections into that shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest id (coupon, request, user, Idempotency-Key) in bytes.
pub const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
        }
    }

    pub fn field(status: StatusCode, field: &str, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: Some(field.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.error,
            field: self.field.as_deref(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body whose every rejection is an [`ApiError`]:
/// wrong content type 415, over the size limit 413, anything malformed 400
/// (naming the field serde names: missing, unknown or mistyped).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(from_rejection(rejection)),
        }
    }
}

fn from_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            ApiError {
                status: StatusCode::BAD_REQUEST,
                field: quoted_field(&detail),
                error: detail,
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {}", e.body_text()),
        ),
        other => ApiError::new(other.status(), other.body_text()),
    }
}

/// serde names the culprit as a path before the message (`stock: invalid
/// type ...`, `user: unknown field ...`) or, at the top level, in backticks
/// (`missing field `userId``).
fn quoted_field(detail: &str) -> Option<String> {
    let message = detail
        .split_once("target type: ")
        .map_or(detail, |(_, rest)| rest);
    if let Some((path, _)) = message.split_once(": ") {
        if !path.is_empty() && !path.contains(' ') {
            return Some(path.to_string());
        }
    }
    let (_, rest) = message.split_once('`')?;
    rest.split_once('`').map(|(field, _)| field.to_string())
}

/// An id as the contracts want it: non-empty, at most [`MAX_ID_BYTES`],
/// printable, no whitespace (ids travel in URLs, keys and logs).
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!("{field} {why}"),
        ))
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.len() > MAX_ID_BYTES {
        return bad(&format!("must be at most {MAX_ID_BYTES} bytes"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            quoted_field("Failed to deserialize the JSON body into the target type: missing field `userId` at line 1 column 2").as_deref(),
            Some("userId")
        );
        assert_eq!(
            quoted_field("Failed to deserialize the JSON body into the target type: stock: invalid type: string \"x\", expected i64 at line 1 column 12").as_deref(),
            Some("stock")
        );
        assert_eq!(
            quoted_field("Failed to deserialize the JSON body into the target type: extra: unknown field `extra`, expected `userId` at line 1 column 21").as_deref(),
            Some("extra")
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("userId", "u-1").is_ok());
        assert_eq!(
            check_id("userId", "").unwrap_err().field.as_deref(),
            Some("userId")
        );
        assert!(check_id("userId", &"x".repeat(129)).is_err());
        assert!(check_id("userId", &"x".repeat(128)).is_ok());
        assert!(check_id("userId", "a b").is_err());
    }
}
