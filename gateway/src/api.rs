//! The API's edges: every error is `{"error": ..., "field": ...}` as
//! `application/json`, with a status that says whose fault it is — also
//! for unknown routes, wrong methods and rejections axum would answer in
//! plain text. Bodies are read through [`Body`], path ids through
//! [`PathId`]; both name the field they refuse.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use surge_schemas::Money;

use crate::server::BodyReadTimeout;

/// Longest id (coupon, request, user, Idempotency-Key), in characters
/// (Unicode code points, as JSON Schema's `maxLength` counts).
pub const MAX_ID_CHARS: usize = 128;

/// Characters no id may contain: whitespace and control characters
/// (exactly `char::is_whitespace || char::is_control`, as ranges so that
/// the OpenAPI pattern is made from the same list).
pub const ID_FORBIDDEN: &[(char, char)] = &[
    ('\u{0}', '\u{20}'),
    ('\u{7f}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// Timestamps must lie in years 1..=9999 (UTC): what RFC 3339 can write
/// and what every consumer of coupon-issue (Python's datetime among them)
/// can read back.
pub const EARLIEST: &str = "0001-01-01T00:00:00Z";
pub const LATEST: &str = "9999-12-31T23:59:59.999Z";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
    /// More string members of the body, after `error` and `field` (the
    /// `requestId` of a 503: see [`ApiError::with`]).
    pub extra: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten)]
    extra: std::collections::BTreeMap<&'a str, &'a str>,
}

/// The error body as bytes, for answers written outside axum.
pub fn error_json(error: &str, field: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error,
        field,
        extra: Default::default(),
    })
    .expect("strings serialize")
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
            extra: Vec::new(),
        }
    }

    pub fn field(status: StatusCode, field: &str, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: Some(field.to_string()),
            extra: Vec::new(),
        }
    }

    /// The error with one more member in its body (`"requestId": "..."`);
    /// `name` must not be `error` or `field`.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        debug_assert!(name != "error" && name != "field", "{name}");
        self.extra.retain(|(n, _)| *n != name);
        self.extra.push((name, value.into()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.error,
            field: self.field.as_deref(),
            extra: self.extra.iter().map(|(n, v)| (*n, v.as_str())).collect(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON object body whose every rejection is an [`ApiError`]:
/// wrong content type 415, over the size limit 413 (at once, unread, when
/// its Content-Length already says so), not in within body_read_timeout
/// 408, anything malformed or not an object 400 (naming the field serde
/// names: missing, unknown, mistyped or null).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let req = refuse_declared_too_large(req)?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_read_error(&rejection, rejection.status()))?;
        // serde would read `["u1"]` into a struct; the contract is an object.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the request body must be a JSON object",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(from_rejection(rejection)),
        }
    }
}

/// 413 before a byte is read when the body's declared length (its
/// Content-Length, as the body's size hint) is over the route's limit
/// ([`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)): the limited
/// body only counts the bytes that arrive, so a client declaring more than
/// the limit and sending nothing would otherwise wait out
/// body_read_timeout for a 408. The request comes back with its body
/// limited (reading it as [`Bytes`] limits it again, to the same length).
fn refuse_declared_too_large(req: Request) -> Result<Request, ApiError> {
    use axum::RequestExt;
    use http_body::Body as _;
    let declared = req.body().size_hint().lower();
    let req = req.with_limited_body();
    // A limited body never hints more than the limit: what it may yield is
    // at most the limit and at most the declared length.
    match req.body().size_hint().upper() {
        Some(allowed) if declared > allowed => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large: Content-Length {declared} is over the limit of {allowed} bytes"
            ),
        )),
        _ => Ok(req),
    }
}

/// `application/json` or `application/<anything>+json`, parameters ignored
/// (what axum's `Json` accepts).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

fn body_read_error(error: &(dyn std::error::Error + 'static), status: StatusCode) -> ApiError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(timeout) = e.downcast_ref::<BodyReadTimeout>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, timeout.to_string());
        }
        cause = e.source();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("request body could not be read: {error}"),
    )
}

fn from_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            ApiError {
                status: StatusCode::BAD_REQUEST,
                field: quoted_field(&detail),
                error: detail,
                extra: Vec::new(),
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
    if let Some((path, rest)) = message.split_once(": ") {
        if !path.is_empty() && !path.contains(' ') {
            // A nested object missing a field (`items[0]: missing field
            // `productId``) names the field, not its parent.
            if let Some(missing) = rest
                .strip_prefix("missing field `")
                .and_then(|r| r.split_once('`'))
            {
                return Some(format!("{path}.{}", missing.0));
            }
            return Some(path.to_string());
        }
    }
    let (_, rest) = message.split_once('`')?;
    rest.split_once('`').map(|(field, _)| field.to_string())
}

/// For optional string fields: absent is `None`, `null` is refused (the
/// contract says string; omit the field instead).
pub fn string_if_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// An integer as JSON Schema (and so the OpenAPI document's `"type":
/// "integer"`) counts one: any JSON number whose value is whole, written
/// `5`, `5.0` or `5e0`, within `T`'s range; serde alone refuses `5.0`
/// although the document calls it valid. Read from the number's text, not
/// through a float: `-9223372036854775809` is out of range even though it
/// rounds to i64::MIN as a float. Fractions, other types and null are
/// refused (serde names the field).
pub fn integer<'de, D: Deserializer<'de>, T: Integer>(d: D) -> Result<T, D::Error> {
    use serde::de::{Error, Unexpected};
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    let text = raw.get();
    let expected = format!("{} (a whole number)", T::NAME);
    let expected = expected.as_str();
    let kind = match text.as_bytes().first() {
        Some(b'"') => Some("string"),
        Some(b'[') => Some("sequence"),
        Some(b'{') => Some("map"),
        Some(b't' | b'f') => Some("boolean"),
        Some(b'n') => Some("null"),
        _ => None,
    };
    if let Some(kind) = kind {
        return Err(D::Error::invalid_type(Unexpected::Other(kind), &expected));
    }
    whole_number(text)
        .and_then(|v| i64::try_from(v).ok())
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::invalid_value(Unexpected::Other(text), &expected))
}

/// The exact value of a JSON number's text when it is whole and at most
/// 20 digits long; `None` otherwise.
fn whole_number(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e),
        None => (unsigned, "0"),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    let trimmed = significant.trim_end_matches('0');
    // An exponent too long for i64 is far out of range either way.
    let exponent: i64 = exponent.parse().ok()?;
    let scale =
        i128::from(exponent) - fraction.len() as i128 + (significant.len() - trimmed.len()) as i128;
    if scale < 0 || trimmed.len() as i128 + scale > 20 {
        return None;
    }
    let value = trimmed.parse::<i128>().ok()? * 10i128.checked_pow(scale as u32)?;
    Some(if negative { -value } else { value })
}

/// The integer types bodies carry.
pub trait Integer: TryFrom<i64> {
    const NAME: &'static str;
}

impl Integer for i32 {
    const NAME: &'static str = "i32";
}

impl Integer for i64 {
    const NAME: &'static str = "i64";
}

/// The route's one path parameter (named as in the contract), percent-
/// decoded and checked with [`check_id`].
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathIds(ids) = PathIds::from_request_parts(parts, state).await?;
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "route has no id"))?;
        Ok(PathId(id))
    }
}

/// Every id in the path, in order, each checked like [`PathId`].
pub struct PathIds(pub Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => {
                let mut ids = Vec::with_capacity(params.len());
                for (name, value) in params {
                    check_id(&name, &value)?;
                    ids.push(value);
                }
                Ok(PathIds(ids))
            }
            Err(PathRejection::FailedToDeserializePathParams(e)) => match e.into_kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    &key,
                    format!("{key} must be UTF-8 once percent-decoded"),
                )),
                other => Err(ApiError::new(StatusCode::BAD_REQUEST, other.to_string())),
            },
            Err(other) => Err(ApiError::new(other.status(), other.body_text())),
        }
    }
}

/// An id as the contracts want it: 1 to [`MAX_ID_CHARS`] characters, none
/// of them whitespace or control (ids travel in URLs, keys and logs).
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
    if value.chars().count() > MAX_ID_CHARS {
        return bad(&format!("must be at most {MAX_ID_CHARS} characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    Ok(())
}

/// Most digits before the decimal point of an amount: with two after it,
/// the 18 digits of the contracts' `decimal(18,2)`.
pub const MONEY_INTEGER_DIGITS: usize = 16;

/// The amount rule of [`money`] as an ECMA-262 pattern (for the OpenAPI
/// document; a test checks the two agree).
pub fn money_pattern() -> String {
    format!("^-?[0-9]{{1,{MONEY_INTEGER_DIGITS}}}(\\.[0-9]{{1,2}})?$")
}

/// An amount [`money`] reads as more than 0, as an ECMA-262 pattern: a
/// FIXED discount's value, a PERCENT discount's cap (the contract's rules,
/// `Discount::validate`). Leading zeros count among the 16 digits, as in
/// [`money`], so the first non-zero digit's place is spelled out.
pub fn positive_money_pattern() -> String {
    let d = MONEY_INTEGER_DIGITS;
    let whole: Vec<String> = (0..d)
        .map(|zeros| {
            let lead = if zeros == 0 {
                String::new()
            } else {
                format!("0{{{zeros}}}")
            };
            let rest = d - 1 - zeros;
            let tail = if rest == 0 {
                String::new()
            } else {
                format!("[0-9]{{0,{rest}}}")
            };
            format!("{lead}[1-9]{tail}")
        })
        .collect();
    format!(
        "^(?:(?:{})(?:\\.[0-9]{{1,2}})?|0{{1,{d}}}\\.(?:0[1-9]|[1-9][0-9]?))$",
        whole.join("|")
    )
}

/// An amount [`money`] reads as more than 0 and at most 100: a PERCENT
/// discount's value, as an ECMA-262 pattern.
pub fn percent_pattern() -> String {
    let d = MONEY_INTEGER_DIGITS;
    format!(
        "^(?:0{{0,{}}}100(?:\\.0{{1,2}})?|0{{0,{}}}[1-9](?:\\.[0-9]{{1,2}})?|0{{0,{}}}[1-9][0-9](?:\\.[0-9]{{1,2}})?|0{{1,{d}}}\\.(?:0[1-9]|[1-9][0-9]?))$",
        d - 3,
        d - 1,
        d - 2
    )
}

/// An amount as a decimal string — an optional `-`, 1 to 16 digits, then
/// optionally `.` and 1 or 2 digits (`"12.50"`, `"3"`, `"0.5"`) — in minor
/// units (cents). Exactly what `decimal(18,2)` can carry; whether an
/// amount makes sense (a negative price, say) is the pipeline's rule.
pub fn money(field: &str, value: &str) -> Result<Money, ApiError> {
    let bad = || {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!(
                "{field} must be a decimal string with at most {MONEY_INTEGER_DIGITS} digits before the point and 2 after it, such as \"12.50\""
            ),
        )
    };
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, cents) = match unsigned.split_once('.') {
        Some((w, c)) => (w, c),
        None => (unsigned, "00"),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > MONEY_INTEGER_DIGITS
        || !digits(whole)
        || cents.is_empty()
        || cents.len() > 2
        || !digits(cents)
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let cents: i64 = format!("{cents:0<2}").parse().map_err(|_| bad())?;
    // At most 16 + 2 digits: far inside i64.
    let minor = whole * 100 + cents;
    Ok(Money(if negative { -minor } else { minor }))
}

/// `id` as one URL path segment: every byte but RFC 3986's unreserved
/// characters and `:` `@` percent-encoded, so a poll path or `Location`
/// built from an id (`/orders/a%2Fb`) routes back to the same id.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An optional RFC 3339 `date-time` (the document's format) in years
/// 1..=9999, so that every reader of the contract (Python's datetime among
/// them) can hold it. Beyond the format: the year as written is 0001 to
/// 9999; on the first and last day, 0001-01-01 and 9999-12-31, it is
/// written in UTC (`Z` or `±00:00`), so no offset takes its instant out of
/// those years; and no leap second (`:60`), which timestamp-millis cannot
/// carry. [`timestamp_excluded_pattern`] says the same for the document.
pub fn timestamp(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let bad = |why: String| {
        Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!("{field} {why}"),
        ))
    };
    // chrono also takes a space for the T; RFC 3339's date-time does not.
    if !matches!(v.as_bytes().get(10), Some(b'T' | b't')) {
        return bad("must be an RFC 3339 timestamp: date, T, time and offset".into());
    }
    let t = match DateTime::parse_from_rfc3339(v) {
        Ok(t) => t,
        Err(e) => return bad(format!("must be an RFC 3339 timestamp: {e}")),
    };
    if t.nanosecond() >= 1_000_000_000 {
        return bad("must not be a leap second (:60), which timestamps cannot carry".into());
    }
    let local = t.naive_local().date();
    let edge = [(1, 1, 1), (9999, 12, 31)].contains(&(local.year(), local.month(), local.day()));
    if !(1..=9999).contains(&local.year()) || (edge && t.offset().local_minus_utc() != 0) {
        return bad(format!(
            "must lie between {EARLIEST} and {LATEST}, written in UTC on the first and last day"
        ));
    }
    let t = t.with_timezone(&Utc);
    debug_assert!((1..=9999).contains(&t.year()));
    Ok(Some(t))
}

/// What [`timestamp`] refuses among RFC 3339 date-times, as one ECMA-262
/// pattern (the document's `not`): year 0000, a leap second, or a non-zero
/// offset on 0001-01-01 or 9999-12-31.
pub fn timestamp_excluded_pattern() -> String {
    let edge = "(?:0001-01-01|9999-12-31)[Tt].*[+-]";
    format!(
        "^(?:0000-|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[Tt][0-9]{{2}}:[0-9]{{2}}:60|{edge}(?:0[1-9]|1[0-9]|2[0-3]):[0-5][0-9]$|{edge}00:(?:0[1-9]|[1-5][0-9])$)"
    )
}

/// 404 for paths no route serves.
pub async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", shorten(uri.path())),
    )
}

/// 405 for a served path and another method (axum adds `Allow`).
pub async fn wrong_method(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the Allow header lists what is",
            shorten(uri.path())
        ),
    )
}

fn shorten(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((at, _)) => &path[..at],
        None => path,
    }
}

/// Last line of defence: an error response that is not JSON (a rejection
/// some future extractor answers in plain text) is given the error body,
/// keeping its status and headers such as `Allow` and `Retry-After`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let message = status.canonical_reason().unwrap_or("request failed");
    let replaced = ApiError::new(status, message).into_response();
    let (replaced_parts, body) = replaced.into_parts();
    parts.headers.extend(replaced_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Body`] of a request declaring `declared` bytes and sending none,
    /// under a limit of `limit`: its answer within 200 ms, if any.
    async fn declared(declared: u64, limit: Option<usize>) -> Option<Result<(), ApiError>> {
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri("/coupons/c1/issue")
            .header("content-type", "application/json")
            .body(axum::body::Body::new(crate::routes::testing::Declared(
                declared,
            )))
            .unwrap();
        match limit {
            Some(n) => axum::extract::DefaultBodyLimit::max(n).apply(&mut req),
            None => axum::extract::DefaultBodyLimit::disable().apply(&mut req),
        }
        let read = Body::<serde_json::Value>::from_request(req, &());
        tokio::time::timeout(std::time::Duration::from_millis(200), read)
            .await
            .ok()
            .map(|r| r.map(|_| ()))
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_any_byte() {
        for (length, limit) in [(17, 16), (20_000, 16 * 1024), (99_999_999_999, 16 * 1024)] {
            let e = declared(length, Some(limit))
                .await
                .expect("answered without waiting for the body")
                .unwrap_err();
            assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{length}");
            assert!(
                e.error.contains(&format!("Content-Length {length}")),
                "{}",
                e.error
            );
            assert!(e.error.contains(&format!("{limit} bytes")), "{}", e.error);
        }
        // At or under the limit, or with no limit, the body is waited for.
        for (length, limit) in [(16, Some(16)), (1, Some(16)), (1 << 40, None)] {
            assert!(
                declared(length, limit).await.is_none(),
                "{length} {limit:?}"
            );
        }
    }

    #[tokio::test]
    async fn extra_members_follow_error_and_field() {
        let e = ApiError::field(StatusCode::SERVICE_UNAVAILABLE, "f", "down")
            .with("requestId", "r1")
            .with("requestId", "r2");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({ "error": "down", "field": "f", "requestId": "r2" })
        );
        assert_eq!(error_json("x", None), br#"{"error":"x"}"#);
    }

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
    fn nested_missing_fields_are_named_in_full() {
        assert_eq!(
            quoted_field("Failed to deserialize the JSON body into the target type: items[0]: missing field `productId` at line 1 column 30").as_deref(),
            Some("items[0].productId")
        );
        assert_eq!(
            quoted_field("Failed to deserialize the JSON body into the target type: items[1].quantity: invalid type: string \"1\", expected i32 at line 1 column 9").as_deref(),
            Some("items[1].quantity")
        );
    }

    #[test]
    fn amounts_are_decimal_strings_of_at_most_two_places() {
        for (text, minor) in [
            ("12.50", 1250),
            ("12.5", 1250),
            ("12", 1200),
            ("0.05", 5),
            ("0", 0),
            ("-0.01", -1),
            ("-3", -300),
            ("007.10", 710),
            ("9999999999999999.99", 999_999_999_999_999_999),
            ("-9999999999999999.99", -999_999_999_999_999_999),
        ] {
            assert_eq!(money("unitPrice", text), Ok(Money(minor)), "{text}");
        }
        for bad in [
            "",
            "-",
            ".",
            "1.",
            ".5",
            "1.005",
            "1,50",
            " 1",
            "1 ",
            "+1",
            "--1",
            "1e3",
            "0x10",
            "12345678901234567",
            "１",
            "NaN",
            "1.-5",
            "-.5",
        ] {
            let e = money("items[0].unitPrice", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("items[0].unitPrice"), "{bad}");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn the_money_pattern_is_money() {
        let pattern = regex_lite::Regex::new(&money_pattern()).unwrap();
        let alphabet = ['0', '1', '9', '.', '-', '+', ' ', 'e'];
        // Every string of up to 5 characters over the alphabet, and long ones.
        let mut samples: Vec<String> = vec![String::new()];
        let mut frontier = samples.clone();
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            samples.extend(frontier.iter().cloned());
        }
        for n in 14..=18 {
            let digits = "9".repeat(n);
            samples.extend([
                digits.clone(),
                format!("{digits}.99"),
                format!("-{digits}.9"),
            ]);
        }
        for s in samples {
            assert_eq!(
                pattern.is_match(&s),
                money("m", &s).is_ok(),
                "{s:?} against {}",
                money_pattern()
            );
        }
    }

    #[test]
    fn integers_are_json_schema_integers() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Numbers {
            #[serde(deserialize_with = "integer")]
            small: i32,
            #[serde(default, deserialize_with = "integer")]
            big: i64,
        }
        let parse = |json: &str| {
            let body = format!(r#"{{"small":{json}}}"#);
            Json::<Numbers>::from_bytes(body.as_bytes())
                .map(|Json(n)| n.small)
                .map_err(from_rejection)
        };
        for (json, want) in [
            ("5", 5),
            ("5.0", 5),
            ("5e0", 5),
            ("0.5e1", 5),
            ("-3.0", -3),
            ("-0.0", 0),
            ("2147483647", i32::MAX),
            ("2147483647.0", i32::MAX),
            ("-2147483648", i32::MIN),
        ] {
            assert_eq!(parse(json), Ok(want), "{json}");
        }
        for bad in [
            "1.5",
            "\"5\"",
            "null",
            "true",
            "[]",
            "2147483648",
            "2147483648.0",
            "-2147483649",
            "1e300",
            "18446744073709551615",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.field.as_deref(), Some("small"), "{bad}: {}", e.error);
        }
        let big = |json: &str| {
            let body = format!(r#"{{"small":1,"big":{json}}}"#);
            Json::<Numbers>::from_bytes(body.as_bytes())
                .map(|Json(n)| n.big)
                .map_err(from_rejection)
        };
        assert_eq!(big("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(big("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(big("-9223372036854775808.0"), Ok(i64::MIN));
        assert_eq!(big("4611686018427387905.0"), Ok((1 << 62) + 1), "exact");
        assert_eq!(big("92233720368547758.07e2"), Ok(i64::MAX));
        assert_eq!(big("-0.0000000000000000001e19"), Ok(-1));
        assert_eq!(big("1000e-3"), Ok(1));
        for bad in [
            "9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808.0",
            "1e19",
            "1e-1",
            "1.0000000000000001",
            "1e99999999999999999999",
            "123456789012345678901234567890",
        ] {
            assert_eq!(big(bad).unwrap_err().field.as_deref(), Some("big"), "{bad}");
        }
    }

    #[test]
    fn the_discount_patterns_are_the_contracts_rules() {
        use surge_schemas::coupon::{Discount, DiscountKind};
        let positive = regex_lite::Regex::new(&positive_money_pattern()).unwrap();
        let percent = regex_lite::Regex::new(&percent_pattern()).unwrap();
        let alphabet = ['0', '1', '9', '.', '-'];
        let mut samples: Vec<String> = vec![String::new()];
        let mut frontier = samples.clone();
        for _ in 0..6 {
            frontier = frontier
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            samples.extend(frontier.iter().cloned());
        }
        for n in 12..=18 {
            for body in [
                "1", "100", "100.00", "100.01", "99.99", "101", "0.01", "0.00", "0", "1.5",
            ] {
                let padded = format!("{}{body}", "0".repeat(n));
                samples.push(padded.clone());
                samples.push(format!("-{padded}"));
            }
            samples.push(format!("9{}", "0".repeat(n)));
            samples.push(format!("{}.99", "9".repeat(n)));
        }
        let valid = |kind, value: &str, cap: Option<&str>| {
            let Ok(value) = money("v", value) else {
                return false;
            };
            let cap = match cap.map(|c| money("c", c)) {
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => return false,
                None => None,
            };
            Discount { kind, value, cap }.validate().is_ok()
        };
        for s in &samples {
            assert_eq!(
                positive.is_match(s),
                valid(DiscountKind::Fixed, s, None),
                "FIXED value {s:?} against {}",
                positive_money_pattern()
            );
            assert_eq!(
                positive.is_match(s),
                valid(DiscountKind::Percent, "10", Some(s)),
                "PERCENT cap {s:?}"
            );
            assert_eq!(
                percent.is_match(s),
                valid(DiscountKind::Percent, s, None),
                "PERCENT value {s:?} against {}",
                percent_pattern()
            );
        }
        assert!(
            !valid(DiscountKind::Fixed, "1", Some("1")),
            "FIXED has no cap"
        );
    }

    #[test]
    fn ids_become_path_segments() {
        assert_eq!(path_segment("0190a-b_c.d~e:f@g"), "0190a-b_c.d~e:f@g");
        assert_eq!(path_segment("a/b?c#d%e"), "a%2Fb%3Fc%23d%25e");
        assert_eq!(path_segment("é"), "%C3%A9");
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
        assert!(
            check_id("userId", &"é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_id("userId", &"é".repeat(129)).is_err());
        assert!(check_id("userId", "a b").is_err());
        assert!(check_id("userId", "a\u{a0}b").is_err());
    }

    #[test]
    fn the_forbidden_ranges_are_whitespace_and_control_exactly() {
        let listed = |c: char| ID_FORBIDDEN.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert_eq!(
                listed(c),
                c.is_whitespace() || c.is_control(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn the_timestamp_rules_are_the_documented_ones() {
        let excluded = regex_lite::Regex::new(&timestamp_excluded_pattern()).unwrap();
        let dates = [
            "0000-01-01",
            "0000-12-31",
            "0001-01-01",
            "0001-01-02",
            "2026-06-30",
            "9999-12-30",
            "9999-12-31",
        ];
        let times = [
            "00:00:00",
            "00:30:00",
            "05:00:00.5",
            "12:00:60",
            "23:59:59.999",
            "23:59:59.123456789123",
            "23:59:60",
        ];
        let offsets = [
            "Z", "z", "+00:00", "-00:00", "+00:01", "-00:01", "+01:00", "-01:00", "+23:59",
            "-23:59",
        ];
        let mut checked = 0;
        for date in dates {
            for time in times {
                for offset in offsets {
                    for t in ["T", "t"] {
                        let s = format!("{date}{t}{time}{offset}");
                        assert_eq!(
                            timestamp("activeFrom", Some(&s)).is_ok(),
                            !excluded.is_match(&s),
                            "{s} against {}",
                            timestamp_excluded_pattern()
                        );
                        checked += 1;
                    }
                    // Not RFC 3339's date-time (chrono alone would take it).
                    let spaced = format!("{date} {time}{offset}");
                    let e = timestamp("activeFrom", Some(&spaced)).unwrap_err();
                    assert_eq!(e.field.as_deref(), Some("activeFrom"), "{spaced}");
                }
            }
        }
        assert_eq!(checked, 7 * 7 * 10 * 2);
        assert!(excluded.is_match("0000-01-01T00:00:00Z"));
        assert!(!excluded.is_match(EARLIEST) && !excluded.is_match(LATEST));
    }

    #[test]
    fn timestamps_are_rfc3339_in_years_1_to_9999() {
        assert!(timestamp("activeFrom", Some("2026-01-01T00:00:00Z")).is_ok());
        assert!(timestamp("activeFrom", Some(EARLIEST)).unwrap().is_some());
        assert!(timestamp("activeFrom", Some(LATEST)).unwrap().is_some());
        for bad in [
            "0000-01-01T00:00:00Z",
            // Year 1 in its own zone, year 0 in UTC.
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "tomorrow",
        ] {
            let e = timestamp("activeFrom", Some(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("activeFrom"), "{bad}");
        }
        assert_eq!(timestamp("activeFrom", None), Ok(None));
    }
}
