//! The OpenAPI 3.1 document of the gateway, served at /openapi.json. Written
//! by hand next to the routes it describes, from the same constants and
//! settings the server enforces (id rules, timestamp range, limits), so the
//! two say the same thing; tests check every route is in it and that the
//! server's answers are the ones it lists.

use serde_json::{json, Value};
use surge_core::settings::GatewaySettings;

use crate::api::{EARLIEST, ID_FORBIDDEN, LATEST, MAX_ID_CHARS};

/// Every path the router serves, with its methods (kept in one place so the
/// test can compare it with the document).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/coupons/{couponId}/issue"),
    ("get", "/coupons/{couponId}"),
    ("get", "/coupon-requests/{requestId}"),
    ("post", "/admin/coupons"),
    ("post", "/admin/coupons/{couponId}/stock"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The id rule of [`crate::api::check_id`] as an ECMA-262 pattern.
pub fn id_pattern() -> String {
    let class: String = ID_FORBIDDEN
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                format!("\\u{:04x}", *lo as u32)
            } else {
                format!("\\u{:04x}-\\u{:04x}", *lo as u32, *hi as u32)
            }
        })
        .collect();
    format!("^[^{class}]+$")
}

pub fn document(settings: &GatewaySettings) -> Value {
    let secs = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let error = |description: &str| {
        json!({ "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
    };
    let id_schema = json!({ "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": id_pattern() });
    let id_param = |name: &str| {
        json!({ "name": name, "in": "path", "required": true,
                "description": format!("Percent-decoded, it must be UTF-8 and 1 to {MAX_ID_CHARS} characters without whitespace or control characters; otherwise 400 naming `{name}`."),
                "schema": id_schema })
    };
    let idempotency = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": format!("Becomes the request id: a retry with the same key is the same request (one decision). Unique per request; visible ASCII without spaces, at most {MAX_ID_CHARS} characters; otherwise 400 naming `Idempotency-Key`."),
        "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": "^[!-~]+$" }
    });
    let body = |schema: &str| json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });

    // What any operation can answer, whatever its own logic.
    let common = json!({
        "408": error(&format!("The request head was not complete within {} of the connection's accept or of its first byte (then the connection is closed), or its body not within {} of the head", secs(settings.header_read_timeout), secs(settings.body_read_timeout))),
        "431": error(&format!("Request head (request line and headers) larger than {} bytes, or more than 100 headers", settings.max_header_bytes)),
        "default": error("Any other error, on any path: 400 for an HTTP request that cannot be parsed, 404 for a path no route serves, 405 for a method the path does not serve (with Allow), 414 for a URI too long"),
    });
    let with = |base: &Value, extra: Value| {
        let mut merged = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            merged[k] = v.clone();
        }
        merged
    };
    let write = with(
        &common,
        json!({
            "202": {
                "description": "Accepted: in the log, will be decided. Poll the Location.",
                "headers": { "Location": { "schema": { "type": "string" } } },
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } }
            },
            "400": error("Malformed JSON, a body that is not a JSON object, or a field (named in `field`) that is missing, unknown, null, mistyped, empty, too long, out of range or with forbidden characters; or a bad id in the path or Idempotency-Key (named in `field`)"),
            "413": error(&format!("Body larger than {} bytes", settings.max_body_bytes)),
            "415": error("Content-Type is not application/json (nor application/*+json)"),
            "503": error("Kafka did not acknowledge in time; retry with the same Idempotency-Key"),
        }),
    );
    let admin = with(
        &write,
        json!({
            "401": error("No Authorization header (with WWW-Authenticate: Bearer)"),
            "403": error("Wrong token (not `Bearer <token>`; the scheme is case-insensitive), or admin disabled (no token configured)"),
            "429": {
                "description": format!("This client address sent {} wrong tokens in a burst; one more attempt is allowed per {}. Every admin request from it is refused until then, even with the right token.", settings.admin_auth_burst, secs(settings.admin_auth_refill)),
                "headers": { "Retry-After": { "description": "Seconds until the next attempt is allowed", "schema": { "type": "integer", "minimum": 1 } } },
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
            },
        }),
    );
    let read = |ok: Value, extra: Value| {
        with(
            &with(
                &common,
                json!({ "200": ok, "400": error("A bad id in the path (named in `field`)"), "503": error("Neither Redis nor PostgreSQL answered") }),
            ),
            extra,
        )
    };
    let timestamp = json!({ "type": "string", "format": "date-time",
        "description": format!("RFC 3339, whose UTC instant lies between {EARLIEST} and {LATEST} (years 1 to 9999, readable by every Avro consumer); otherwise 400 naming the field. Omit it rather than send null.") });
    let ops = |description: &str| with(&common, json!({ "200": { "description": description } }));
    let health = with(
        &common,
        json!({
            "200": { "description": "Kafka answered in the last 10 s", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
            "503": { "description": "Kafka has not answered in the last 10 s", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "surge gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Flash-sale coupons as an asynchronous API: a request is accepted (202) once it is in Kafka, decided first come first served by the exactly-once coupon pipeline, and polled by request id.\n\n\
                 Every error, on every path, is application/json with the Error schema. HTTP/1.1 only. A connection that sends nothing within {} of its accept is closed without an answer, as is a kept-alive connection idle for {}. At most {} connections are open at once; beyond that new connections wait to be accepted until others close.",
                secs(settings.header_read_timeout), secs(settings.idle_timeout), settings.max_connections
            )
        },
        "paths": {
            "/coupons/{couponId}/issue": { "post": {
                "summary": "Ask for one unit of a coupon",
                "parameters": [id_param("couponId"), idempotency],
                "requestBody": body("IssueRequest"),
                "responses": write
            }},
            "/coupons/{couponId}": { "get": {
                "summary": "Stock, issued and remaining of a coupon",
                "parameters": [id_param("couponId")],
                "responses": read(
                    json!({ "description": "The coupon", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Coupon" } } } }),
                    json!({ "404": error("Unknown coupon (`field` is couponId)") }),
                )
            }},
            "/coupon-requests/{requestId}": { "get": {
                "summary": "A request's decision (PENDING until decided)",
                "parameters": [id_param("requestId")],
                "responses": read(
                    json!({ "description": "PENDING, or the decision", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Decision" } } } }),
                    json!({}),
                )
            }},
            "/admin/coupons": { "post": {
                "summary": "Create a coupon (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [idempotency],
                "requestBody": body("CreateCoupon"),
                "responses": admin
            }},
            "/admin/coupons/{couponId}/stock": { "post": {
                "summary": "Change a coupon's total stock (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [id_param("couponId"), idempotency],
                "requestBody": body("AdjustStock"),
                "responses": admin
            }},
            "/health": { "get": { "summary": "200 when Kafka answered in the last 10 s, else 503", "responses": health } },
            "/metrics": { "get": { "summary": "Prometheus metrics (text exposition format)", "responses": ops("text/plain; version=0.0.4") } },
            "/openapi.json": { "get": { "summary": "This document", "responses": ops("OpenAPI 3.1") } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "Authorization: Bearer <[gateway] admin_token>; the scheme is matched case-insensitively, the token compared in constant time." } },
            "schemas": {
                "Error": { "type": "object", "additionalProperties": false, "required": ["error"], "properties": {
                    "error": { "type": "string", "minLength": 1, "description": "What is wrong, for people" },
                    "field": { "type": "string", "description": "The field, path parameter or header at fault, as this document names it" } } },
                "Accepted": { "type": "object", "required": ["requestId", "status", "poll"], "properties": {
                    "requestId": { "type": "string" }, "status": { "const": "PENDING" }, "poll": { "type": "string" } } },
                "IssueRequest": { "type": "object", "additionalProperties": false, "required": ["userId"], "properties": {
                    "userId": id_schema } },
                "CreateCoupon": { "type": "object", "additionalProperties": false, "required": ["couponId", "stock"],
                    "description": "activeUntil, when both are given, must be after activeFrom.",
                    "properties": {
                    "couponId": id_schema,
                    "stock": { "type": "integer", "minimum": 0, "maximum": i64::MAX },
                    "activeFrom": timestamp,
                    "activeUntil": timestamp } },
                "AdjustStock": { "type": "object", "additionalProperties": false, "required": ["delta"], "properties": {
                    "delta": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX, "not": { "const": 0 } },
                    "reason": { "type": "string", "description": "Omit it rather than send null." } } },
                "Coupon": { "type": "object", "properties": {
                    "couponId": { "type": "string" }, "stock": { "type": "integer" },
                    "issued": { "type": "integer" }, "remaining": { "type": "integer" },
                    "source": { "enum": ["redis", "postgres"] } } },
                "Decision": { "type": "object", "required": ["requestId", "status"], "properties": {
                    "requestId": { "type": "string" },
                    "status": { "enum": ["PENDING", "DECIDED"] },
                    "outcome": { "enum": ["ISSUED", "SOLD_OUT", "DUPLICATE", "NOT_ACTIVE", "UNKNOWN_COUPON", "INVALID", "CREATED", "ADJUSTED"] },
                    "couponId": { "type": "string" }, "userId": { "type": ["string", "null"] },
                    "sequence": { "type": ["integer", "null"] }, "stock": { "type": "integer" },
                    "issued": { "type": "integer" }, "remaining": { "type": "integer" },
                    "reason": { "type": ["string", "null"] }, "decidedAt": { "type": "string", "format": "date-time" },
                    "source": { "enum": ["redis", "postgres"] } } },
                "Health": { "type": "object", "required": ["status", "detail"], "properties": {
                    "status": { "enum": ["ok", "unavailable"] }, "detail": { "type": "string" } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document(&GatewaySettings::default());
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn the_id_pattern_is_check_id() {
        let pattern = regex_lite::Regex::new(&id_pattern()).unwrap();
        let sample = (0..0x3100u32).chain((0x3100..=0x10FFFF).step_by(97));
        for c in sample.filter_map(char::from_u32) {
            let id = format!("a{c}b");
            assert_eq!(
                pattern.is_match(&id),
                crate::api::check_id("id", &id).is_ok(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn the_limits_in_force_are_the_ones_documented() {
        let s = GatewaySettings {
            max_header_bytes: 1234,
            max_body_bytes: 999,
            ..Default::default()
        };
        let doc = document(&s).to_string();
        assert!(doc.contains("1234 bytes"));
        assert!(doc.contains("999 bytes"));
        let doc = document(&s);
        assert_eq!(
            doc["components"]["schemas"]["IssueRequest"]["properties"]["userId"]["maxLength"],
            MAX_ID_CHARS
        );
    }
}
