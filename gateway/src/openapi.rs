//! The OpenAPI 3.1 document of the gateway, served at /openapi.json. Written
//! by hand next to the routes it describes, from the same constants and
//! settings the server enforces (id rules, timestamp range, limits), so the
//! two say the same thing; tests check every route is in it and that the
//! server's answers are the ones it lists.

use serde_json::{json, Value};
use surge_core::settings::GatewaySettings;

use crate::api::{
    money_pattern, percent_pattern, positive_money_pattern, timestamp_excluded_pattern, EARLIEST,
    ID_FORBIDDEN, LATEST, MAX_ID_CHARS, MONEY_INTEGER_DIGITS,
};

/// Every path the router serves, with its methods (kept in one place so the
/// test can compare it with the document).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/coupons/{couponId}/issue"),
    ("post", "/coupon-requests"),
    ("get", "/coupons/{couponId}"),
    ("get", "/coupon-requests/{requestId}"),
    ("get", "/coupons/{couponId}/requests/{requestId}"),
    ("post", "/orders"),
    ("post", "/orders/{orderId}/cancel"),
    ("get", "/orders/{orderId}"),
    ("get", "/products/{productId}"),
    ("post", "/admin/coupons"),
    ("post", "/admin/coupons/{couponId}/stock"),
    ("post", "/admin/products"),
    ("post", "/admin/products/{productId}/stock"),
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
    let idempotency_as = |what: &str| {
        json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": format!("Becomes the {what}: a retry with the same key is the same request (one decision); the same key on a different request is refused 422. Without it the gateway makes a UUIDv7. Unique per request; visible ASCII without spaces, at most {MAX_ID_CHARS} characters, in exactly one Idempotency-Key header; otherwise 400 naming `Idempotency-Key`. After a 503, retry with the 503's requestId as the key."),
            "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": "^[!-~]+$" }
        })
    };
    let idempotency = idempotency_as("request id");
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
    let write_of = |accepted: &str| {
        let mut responses = with(
            &common,
            json!({
                "202": {
                    "description": "Accepted: in the log, will be decided. Poll the Location.",
                    "headers": { "Location": { "required": true, "description": "The poll path of the body", "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{accepted}") } } }
                },
                "400": error("Malformed JSON, a body that is not a JSON object, or a field (named in `field`) that is missing, unknown, null, mistyped, empty, too long, out of range or with forbidden characters; or a bad id in the path or Idempotency-Key, or more than one Idempotency-Key header (named in `field`)"),
                "413": error(&format!("Body larger than {} bytes (answered before reading it when its Content-Length says so)", settings.max_body_bytes)),
                "415": error("Content-Type is not application/json (nor application/*+json)"),
                "503": { "description": "Kafka did not acknowledge in time. The record may still be delivered: retry with Idempotency-Key set to the body's requestId (the one sent, or the one the gateway made), so that the retry is the same request",
                         "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Unavailable" } } } },
            }),
        );
        if !settings.accepted_marker_ttl.is_zero() {
            responses["422"] = error(&format!("The Idempotency-Key was already used in the last {} for a different request (another route, path id or body; `field` is Idempotency-Key): a key names one request", secs(settings.accepted_marker_ttl)));
        }
        responses
    };
    let write = write_of("Accepted");
    let admin_of = |write: &Value| {
        with(
            write,
            json!({
                "401": with(&error("No bearer token: no Authorization header, one of another scheme (Basic, say), or Bearer without a token (with WWW-Authenticate: Bearer). Uses up no attempt of the wrong-token throttle"), json!({
                    "headers": { "WWW-Authenticate": { "required": true, "schema": { "const": "Bearer" } } } })),
                "403": error("Wrong token in `Bearer <token>` (the scheme is case-insensitive), or admin disabled (no token configured)"),
                "429": {
                    "description": format!("This client address sent {} wrong tokens in a burst; one more attempt is allowed per {}. Every admin request from it is refused until then, even with the right token.", settings.admin_auth_burst, secs(settings.admin_auth_refill)),
                    "headers": { "Retry-After": { "required": true, "description": "Seconds until the next attempt is allowed", "schema": { "type": "integer", "minimum": 1 } } },
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                },
            }),
        )
    };
    let admin = admin_of(&write);
    let product_admin = admin_of(&write_of("ProductAccepted"));
    let read = |ok: Value, extra: Value| {
        with(
            &with(
                &common,
                json!({ "200": ok, "400": error("A bad id in the path (named in `field`)"), "503": error("Neither Redis nor PostgreSQL answered") }),
            ),
            extra,
        )
    };
    // A poll of a coupon request: `whose` narrows the marker ("" or " for
    // this coupon"), `straight` says what a record produced straight to
    // Kafka reads as, `extra` adds route-specific answers.
    let decision_read = |whose: &str, straight: &str, extra: Value| {
        let ttl = settings.accepted_marker_ttl;
        let ok = if ttl.is_zero() {
            "The decision, or PENDING while undecided".to_string()
        } else {
            format!("The decision; or PENDING while undecided if this gateway accepted the request{whose} in the last {} (or Redis cannot tell)", secs(ttl))
        };
        let not_found = if ttl.is_zero() {
            json!({})
        } else {
            json!({ "404": error(&format!("Not decided, and not accepted{whose} by this gateway in the last {} (`field` is requestId){straight}", secs(ttl))) })
        };
        read(
            json!({ "description": ok, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Decision" } } } }),
            with(&extra, not_found),
        )
    };
    let timestamp = json!({ "type": "string", "format": "date-time",
        "not": { "pattern": timestamp_excluded_pattern() },
        "description": format!("RFC 3339 (T between date and time), between {EARLIEST} and {LATEST} (years 1 to 9999, readable by every Avro consumer): the year as written is 0001 to 9999, on 0001-01-01 and 9999-12-31 the offset is Z or ±00:00 (the `not` pattern), and no leap second (:60); otherwise 400 naming the field. Omit it rather than send null.") });
    let ops = |description: &str, media: &str, schema: Value| {
        with(
            &common,
            json!({ "200": { "description": description, "content": { media: { "schema": schema } } } }),
        )
    };
    let health = with(
        &common,
        json!({
            "200": { "description": "Kafka answered in the last 10 s", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
            "503": { "description": "Kafka has not answered in the last 10 s", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
        }),
    );
    // Built apart: one json! of the whole document would pass the macro
    // recursion limit.
    let batch_result = |description: &str| {
        json!({ "description": format!("{description} Each request has its own outcome: PENDING (in the log){}, or UNAVAILABLE (Kafka did not acknowledge it in time: retry it with the same requestId).", if settings.accepted_marker_ttl.is_zero() { "" } else { ", REFUSED (its requestId was used for a different request; `field` names it)" }),
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchAccepted" } } } })
    };
    let batch_path = json!({
        "summary": "Ask for units of coupons, many requests in one call (each as POST /coupons/{couponId}/issue would make it)",
        "description": format!("1 to {} issue requests. The body is checked whole first (400 naming the item's field, e.g. requests[3].userId; nothing is sent); then each request stands alone and is polled at /coupon-requests/{{requestId}}. An item's requestId is its Idempotency-Key: a retry with the same requestId is the same request, the same requestId on a different request is REFUSED. At most {} batch calls are handled at once; more wait for a turn.", settings.max_batch_requests, settings.max_batch_calls),
        "requestBody": body("BatchIssueRequest"),
        "responses": with(&common, json!({
            "202": batch_result("Every request is in the log."),
            "207": batch_result("Some requests are in the log, not all."),
            "503": batch_result("Kafka took none of the requests."),
            "400": error("Malformed JSON, a body that is not a JSON object, no requests or more than the most a batch holds (`field` requests), an item's field (named in `field`, e.g. requests[3].userId) missing, unknown, null, mistyped, empty, too long or with forbidden characters, or one requestId on two different requests (`field` names the second; the same request twice is a retry)"),
            "413": error(&format!("Body larger than {} bytes", settings.max_batch_body_bytes())),
            "415": error("Content-Type is not application/json (nor application/*+json)"),
        })),
    });
    let order_path = json!({ "get": {
        "summary": "An order: its state, amount, coupon, payment, lines and whole status history (PENDING until the saga answers)",
        "parameters": [id_param("orderId")],
        "responses": read(
            json!({ "description": if settings.accepted_marker_ttl.is_zero() { "The order, or PENDING while no store holds it yet".to_string() } else { format!("The order; or PENDING while no store holds it yet if this gateway accepted it in the last {} (or Redis cannot tell)", secs(settings.accepted_marker_ttl)) }, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Order" } } } }),
            if settings.accepted_marker_ttl.is_zero() {
                json!({})
            } else {
                json!({ "404": error(&format!("No store holds it, and this gateway did not accept it in the last {} (`field` is orderId); an order produced straight to Kafka reads as 404 until the saga answers it", secs(settings.accepted_marker_ttl))) })
            },
        )
    }});
    let product_path = json!({ "get": {
        "summary": "A product's available, reserved, sold and created units",
        "parameters": [id_param("productId")],
        "responses": read(
            json!({ "description": "The product's stock after its latest inventory decision", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Product" } } } }),
            json!({ "404": error("Unknown product (`field` is productId)") }),
        )
    }});
    let decimal = |what: &str| {
        json!({ "type": "string", "pattern": money_pattern(),
        "description": format!("{what}: a decimal string (an optional -, 1 to {MONEY_INTEGER_DIGITS} digits, then optionally . and 1 or 2 digits), not a JSON number") })
    };
    // The contract's rules per kind (Discount::validate), as patterns:
    // FIXED has a positive value and no cap; PERCENT a value in (0, 100]
    // and optionally a positive cap.
    let discount_schema = json!({ "type": "object",
        "description": "What the coupon takes off an order redeemed with it. FIXED: value > 0 is the amount off, no cap. PERCENT: value in (0, 100] is the percentage, cap > 0 the most taken off. Otherwise 400 naming the field (discount.kind, discount.value, discount.cap).",
        "oneOf": [
            { "type": "object", "additionalProperties": false, "required": ["kind", "value"], "properties": {
                "kind": { "const": "FIXED" },
                "value": with(&decimal("The amount off, more than 0"), json!({ "pattern": positive_money_pattern() })) } },
            { "type": "object", "additionalProperties": false, "required": ["kind", "value"], "properties": {
                "kind": { "const": "PERCENT" },
                "value": with(&decimal("The percentage, more than 0 and at most 100"), json!({ "pattern": percent_pattern() })),
                "cap": with(&decimal("The most taken off, more than 0; omit it rather than send null"), json!({ "pattern": positive_money_pattern() })) } }
        ] });
    let order_schema = json!({ "type": "object", "required": ["orderId", "status"], "properties": {
                    "orderId": { "type": "string" },
                    "status": { "enum": ["PENDING", "DECIDED"], "description": "PENDING: no store holds the order yet; only orderId and status are present" },
                    "userId": { "type": "string" },
                    "state": { "enum": ["CREATED", "PAYMENT_PENDING", "PAID", "REJECTED", "PAYMENT_FAILED", "CANCELLED"] },
                    "terminal": { "type": "boolean" },
                    "reason": { "type": ["string", "null"] },
                    "total": { "type": "string", "description": "What is charged (after the coupon), a decimal string" },
                    "currency": { "type": "string" },
                    "couponId": { "type": ["string", "null"] },
                    "paymentId": { "type": ["string", "null"] },
                    "refundId": { "type": ["string", "null"] },
                    "version": { "type": "integer" },
                    "updatedAt": { "type": ["string", "null"], "format": "date-time" },
                    "lines": { "type": "array", "items": { "type": "object", "required": ["productId", "quantity", "unitPrice"], "properties": {
                        "productId": { "type": "string" }, "quantity": { "type": "integer" }, "unitPrice": { "type": "string" } } } },
                    "history": { "type": "array", "description": "Every order-status record of the order, in log order", "items": { "type": "object", "required": ["version", "event", "state"], "properties": {
                        "version": { "type": "integer" },
                        "event": { "enum": ["TRANSITION", "CANCEL_REFUSED", "LATE_CHARGE_REFUNDED"] },
                        "state": { "type": "string" },
                        "reason": { "type": ["string", "null"] },
                        "cancelRequestId": { "type": ["string", "null"] },
                        "refundId": { "type": ["string", "null"] },
                        "occurredAt": { "type": ["string", "null"], "format": "date-time" } } } },
                    "source": { "enum": ["redis", "postgres"] } } });
    let product_schema = json!({ "type": "object", "required": ["productId", "available", "reserved", "sold", "created"], "properties": {
                    "productId": { "type": "string" },
                    "available": { "type": "integer" }, "reserved": { "type": "integer" }, "sold": { "type": "integer" }, "created": { "type": "integer" },
                    "updatedAt": { "type": ["string", "null"], "format": "date-time" },
                    "source": { "enum": ["redis", "postgres"] } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "surge gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Flash-sale coupons and orders as an asynchronous API: a request is accepted (202) once it is in Kafka, decided by the exactly-once pipelines (coupons first come first served, orders by the order saga), and polled by its id.\n\n\
                 Every error, on every path, is application/json with the Error schema. HTTP/1.1 only. A connection that sends nothing within {} of its accept is closed without an answer, as is a kept-alive connection idle for {}. At most {} connections are open at once; beyond that new connections wait to be accepted until others close.",
                secs(settings.header_read_timeout), secs(settings.idle_timeout), settings.max_connections
            )
        },
        "paths": {
            "/coupon-requests": { "post": batch_path },
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
                "description": "A request id names a request of one coupon. This gateway never accepts one id for two coupons, but a producer straight to Kafka can; the answer is then for the coupon this gateway accepted the id for, else for the one coupon with a decision under it, and 409 naming the coupons when there are several (poll /coupons/{couponId}/requests/{requestId}).",
                "parameters": [id_param("requestId")],
                "responses": decision_read(
                    "",
                    "; a request produced straight to Kafka reads as 404 until decided",
                    json!({ "409": error("Decisions of several coupons under this request id, named in `error` (`field` is requestId)") }),
                )
            }},
            "/coupons/{couponId}/requests/{requestId}": { "get": {
                "summary": "The decision of one coupon's request (PENDING until decided)",
                "parameters": [id_param("couponId"), id_param("requestId")],
                "responses": decision_read(" for this coupon", "", json!({})),
            }},
            "/orders": { "post": {
                "summary": "Place an order (decided by the order saga; REJECTED on its own rules)",
                "parameters": [idempotency_as("order id")],
                "requestBody": body("CreateOrder"),
                "responses": write_of("OrderAccepted")
            }},
            "/orders/{orderId}/cancel": { "post": {
                "summary": "Ask to cancel an order (the saga applies it or answers CANCEL_REFUSED)",
                "parameters": [id_param("orderId"), idempotency_as("cancel request id")],
                "requestBody": body("CancelOrder"),
                "responses": write_of("CancelAccepted")
            }},
            "/orders/{orderId}": order_path,
            "/products/{productId}": product_path,
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
            "/admin/products": { "post": {
                "summary": "Create a product with its initial stock (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [idempotency],
                "requestBody": body("CreateProduct"),
                "responses": product_admin
            }},
            "/admin/products/{productId}/stock": { "post": {
                "summary": "Add delta to a product's available (and created) units (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [id_param("productId"), idempotency],
                "requestBody": body("AdjustProductStock"),
                "responses": product_admin
            }},
            "/health": { "get": { "summary": "200 when Kafka answered in the last 10 s, else 503", "responses": health } },
            "/metrics": { "get": { "summary": "Prometheus metrics (text exposition format)", "responses": ops("The Prometheus text format, version 0.0.4 (Content-Type: text/plain; version=0.0.4)", "text/plain", json!({ "type": "string" })) } },
            "/openapi.json": { "get": { "summary": "This document", "responses": ops("OpenAPI 3.1", "application/json", json!({ "type": "object", "required": ["openapi", "info", "paths"] })) } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "Authorization: Bearer <[gateway] admin_token>; the scheme is matched case-insensitively, the token compared in constant time." } },
            "schemas": {
                "Error": { "type": "object", "additionalProperties": false, "required": ["error"], "properties": {
                    "error": { "type": "string", "minLength": 1, "description": "What is wrong, for people" },
                    "field": { "type": "string", "description": "The field, path parameter or header at fault, as this document names it" } } },
                "Unavailable": { "type": "object", "additionalProperties": false, "required": ["error", "requestId"], "properties": {
                    "error": { "type": "string", "minLength": 1, "description": "What is wrong, for people; names the Idempotency-Key to retry with" },
                    "requestId": { "type": "string", "description": "The id of the request that was not acknowledged (for POST /orders, the order id): the Idempotency-Key it was sent with, or the one the gateway made. Retry with Idempotency-Key set to it." } } },
                "Accepted": { "type": "object", "required": ["requestId", "status", "poll"], "properties": {
                    "requestId": { "type": "string" }, "status": { "const": "PENDING" }, "poll": { "type": "string" } } },
                "Order": order_schema,
                "Product": product_schema,
                "OrderAccepted": { "type": "object", "required": ["orderId", "status", "poll"], "properties": {
                    "orderId": { "type": "string" }, "status": { "const": "PENDING" },
                    "poll": { "type": "string", "description": "/orders/{orderId}" } } },
                "CancelAccepted": { "type": "object", "required": ["requestId", "orderId", "status", "poll"], "properties": {
                    "requestId": { "type": "string" }, "orderId": { "type": "string" }, "status": { "const": "PENDING" },
                    "poll": { "type": "string", "description": "/orders/{orderId}" } } },
                "ProductAccepted": { "type": "object", "required": ["requestId", "productId", "status", "poll"], "properties": {
                    "requestId": { "type": "string" }, "productId": { "type": "string" }, "status": { "const": "PENDING" },
                    "poll": { "type": "string", "description": "/products/{productId}" } } },
                "CreateOrder": { "type": "object", "additionalProperties": false, "required": ["userId", "items", "currency"],
                    "description": "What the order-create contract requires; the saga's own rules (accepted currencies, lines per order, units per line, non-negative prices, one line per product) are checked by the saga, which answers REJECTED with the reason.",
                    "properties": {
                    "userId": id_schema,
                    "items": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/OrderItem" } },
                    "currency": id_schema,
                    "couponId": with(&id_schema, json!({ "description": "An issued coupon the buyer redeems with this order. Omit it rather than send null." })) } },
                "OrderItem": { "type": "object", "additionalProperties": false, "required": ["productId", "quantity", "unitPrice"], "properties": {
                    "productId": id_schema,
                    "quantity": { "type": "integer", "minimum": 1, "maximum": i32::MAX },
                    "unitPrice": { "type": "string", "pattern": money_pattern(),
                        "description": format!("A decimal string in the order's currency: an optional -, 1 to {MONEY_INTEGER_DIGITS} digits, then optionally . and 1 or 2 digits (decimal(18,2)), e.g. \"12.50\". Not a JSON number.") } } },
                "CancelOrder": { "type": "object", "additionalProperties": false, "required": ["userId"], "properties": {
                    "userId": with(&id_schema, json!({ "description": "Who asks; the saga refuses (CANCEL_REFUSED) anyone but the buyer." })),
                    "reason": { "type": "string", "description": "Why, free text. Omit it rather than send null." } } },
                "CreateProduct": { "type": "object", "additionalProperties": false, "required": ["productId", "stock"], "properties": {
                    "productId": id_schema,
                    "stock": { "type": "integer", "minimum": 0, "maximum": i64::MAX } } },
                "AdjustProductStock": { "type": "object", "additionalProperties": false, "required": ["delta"],
                    "description": "The inventory pipeline answers INVALID when available would drop below 0, UNKNOWN_PRODUCT for a product never created.",
                    "properties": {
                    "delta": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX, "not": { "const": 0 } },
                    "reason": { "type": "string", "description": "Omit it rather than send null." } } },
                "IssueRequest": { "type": "object", "additionalProperties": false, "required": ["userId"], "properties": {
                    "userId": id_schema } },
                "BatchIssueRequest": { "type": "object", "additionalProperties": false, "required": ["requests"], "properties": {
                    "requests": { "type": "array", "minItems": 1, "maxItems": settings.max_batch_requests, "items": {
                        "type": "object", "additionalProperties": false, "required": ["couponId", "userId"], "properties": {
                            "couponId": id_schema, "userId": id_schema,
                            "requestId": with(&id_schema, json!({ "description": "The request's Idempotency-Key (any id, not only visible ASCII: it is not a header here). Absent: the gateway makes a UUIDv7. Omit it rather than send null." })) } } } } },
                "BatchAccepted": { "type": "object", "required": ["accepted", "results"], "properties": {
                    "accepted": { "type": "integer", "minimum": 0, "description": "How many of the requests are in the log (PENDING)" },
                    "results": { "type": "array", "description": "One per request, in the order sent", "items": { "type": "object", "required": ["requestId", "status"], "properties": {
                        "requestId": { "type": "string" },
                        "status": { "enum": ["PENDING", "REFUSED", "UNAVAILABLE"] },
                        "poll": { "type": "string", "description": "/coupon-requests/{requestId}, when PENDING" },
                        "error": { "type": "string" },
                        "field": { "type": ["string", "null"] } } } } } },
                "CreateCoupon": { "type": "object", "additionalProperties": false, "required": ["couponId", "stock"],
                    "description": "activeUntil, when both are given, must be after activeFrom.",
                    "properties": {
                    "couponId": id_schema,
                    "stock": { "type": "integer", "minimum": 0, "maximum": i64::MAX },
                    "activeFrom": timestamp,
                    "activeUntil": timestamp,
                    "discount": discount_schema } },
                "AdjustStock": { "type": "object", "additionalProperties": false, "required": ["delta"], "properties": {
                    "delta": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX, "not": { "const": 0 } },
                    "reason": { "type": "string", "description": "Omit it rather than send null." } } },
                "Coupon": { "type": "object", "required": ["couponId", "stock", "issued", "remaining", "source"], "properties": {
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
    fn every_reference_resolves() {
        let doc = document(&GatewaySettings::default());
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 10);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").expect(&r);
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not defined"
            );
        }
    }

    #[test]
    fn order_bodies_say_what_the_server_enforces() {
        let doc = document(&GatewaySettings::default());
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["CreateOrder"]["properties"]["items"]["minItems"], 1);
        let item = &schemas["OrderItem"]["properties"];
        assert_eq!(item["quantity"]["minimum"], 1);
        assert_eq!(item["quantity"]["maximum"], i32::MAX);
        assert_eq!(item["unitPrice"]["pattern"], money_pattern());
        assert_eq!(schemas["CancelOrder"]["required"], json!(["userId"]));
        assert_eq!(
            schemas["CreateProduct"]["properties"]["stock"]["minimum"],
            0
        );
        for name in [
            "CreateOrder",
            "OrderItem",
            "CancelOrder",
            "CreateProduct",
            "AdjustProductStock",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"], false,
                "{name}: unknown fields are refused"
            );
        }
        let op = |path: &str| &doc["paths"][path]["post"];
        assert!(op("/admin/products")["responses"]["401"].is_object());
        assert!(op("/admin/products/{productId}/stock")["responses"]["429"].is_object());
        assert!(
            op("/orders")["responses"]["401"].is_null(),
            "no token for orders"
        );
        assert_eq!(
            op("/orders")["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/OrderAccepted"
        );
    }

    #[test]
    fn coupon_bodies_say_what_the_server_enforces() {
        let doc = document(&GatewaySettings::default());
        let create = &doc["components"]["schemas"]["CreateCoupon"]["properties"];
        for field in ["activeFrom", "activeUntil"] {
            assert_eq!(create[field]["format"], "date-time");
            assert_eq!(
                create[field]["not"]["pattern"],
                timestamp_excluded_pattern()
            );
        }
        let kinds = create["discount"]["oneOf"].as_array().unwrap();
        let fixed = &kinds[0]["properties"];
        let percent = &kinds[1]["properties"];
        assert_eq!(fixed["kind"]["const"], "FIXED");
        assert_eq!(fixed["value"]["pattern"], positive_money_pattern());
        assert!(fixed["cap"].is_null(), "a FIXED discount has no cap");
        assert_eq!(percent["kind"]["const"], "PERCENT");
        assert_eq!(percent["value"]["pattern"], percent_pattern());
        assert_eq!(percent["cap"]["pattern"], positive_money_pattern());
        for kind in kinds {
            assert_eq!(kind["additionalProperties"], false);
        }
    }

    #[test]
    fn unknown_request_ids_are_404_only_with_markers() {
        let poll = |s: &GatewaySettings| {
            document(s)["paths"]["/coupon-requests/{requestId}"]["get"]["responses"]["404"]
                .is_object()
        };
        assert!(poll(&GatewaySettings::default()));
        assert!(!poll(&GatewaySettings {
            accepted_marker_ttl: std::time::Duration::ZERO,
            ..Default::default()
        }));
    }

    #[test]
    fn a_write_503_carries_the_request_id_and_two_keys_are_400() {
        let doc = document(&GatewaySettings::default());
        let unavailable = &doc["components"]["schemas"]["Unavailable"];
        assert_eq!(unavailable["required"], json!(["error", "requestId"]));
        assert_eq!(unavailable["additionalProperties"], false);
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method];
            let Some(idempotency) = op["parameters"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
            else {
                continue;
            };
            assert!(
                idempotency["description"]
                    .as_str()
                    .unwrap()
                    .contains("exactly one Idempotency-Key header"),
                "{path}"
            );
            let responses = &op["responses"];
            assert_eq!(
                responses["503"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Unavailable",
                "{path}"
            );
            assert!(
                responses["400"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("more than one Idempotency-Key header"),
                "{path}"
            );
        }
        let admin = &doc["paths"]["/admin/coupons"]["post"]["responses"];
        assert!(admin["401"]["description"]
            .as_str()
            .unwrap()
            .contains("of another scheme"));
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
