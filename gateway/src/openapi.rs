//! The OpenAPI 3.1 document of the gateway, served at /openapi.json. Written
//! by hand next to the routes it describes; a test checks that every route
//! of the router is in it.

use serde_json::{json, Value};

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

pub fn document() -> Value {
    let error = |description: &str| {
        json!({ "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
    };
    let accepted = json!({
        "description": "Accepted: in the log, will be decided. Poll the Location.",
        "headers": { "Location": { "schema": { "type": "string" } } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } }
    });
    let idempotency = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Becomes the request id: a retry with the same key is the same request (one decision). Unique per request, at most 128 bytes.",
        "schema": { "type": "string", "maxLength": 128 }
    });
    let id_param = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "maxLength": 128 } });
    let body = |schema: &str| json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    let write_errors = json!({
        "202": accepted,
        "400": error("Malformed JSON, a missing, empty, oversized or unknown field (named in `field`)"),
        "413": error("Body larger than [gateway] max_body_bytes"),
        "415": error("Content-Type is not application/json"),
        "503": error("Kafka did not acknowledge in time; retry with the same Idempotency-Key"),
    });
    let mut admin_errors = write_errors.clone();
    admin_errors["401"] = error("No Authorization: Bearer token");
    admin_errors["403"] = error("Wrong token, or admin disabled (no token configured)");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "surge gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Flash-sale coupons as an asynchronous API: a request is accepted (202) once it is in Kafka, decided first come first served by the exactly-once coupon pipeline, and polled by request id."
        },
        "paths": {
            "/coupons/{couponId}/issue": { "post": {
                "summary": "Ask for one unit of a coupon",
                "parameters": [id_param("couponId"), idempotency],
                "requestBody": body("IssueRequest"),
                "responses": write_errors
            }},
            "/coupons/{couponId}": { "get": {
                "summary": "Stock, issued and remaining of a coupon",
                "parameters": [id_param("couponId")],
                "responses": {
                    "200": { "description": "The coupon", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Coupon" } } } },
                    "404": error("Unknown coupon"),
                    "503": error("Neither Redis nor PostgreSQL answered")
                }
            }},
            "/coupon-requests/{requestId}": { "get": {
                "summary": "A request's decision (PENDING until decided)",
                "parameters": [id_param("requestId")],
                "responses": {
                    "200": { "description": "PENDING, or the decision", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Decision" } } } },
                    "503": error("Neither Redis nor PostgreSQL answered")
                }
            }},
            "/admin/coupons": { "post": {
                "summary": "Create a coupon (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [idempotency],
                "requestBody": body("CreateCoupon"),
                "responses": admin_errors
            }},
            "/admin/coupons/{couponId}/stock": { "post": {
                "summary": "Change a coupon's total stock (admin)",
                "security": [{ "bearer": [] }],
                "parameters": [id_param("couponId"), idempotency],
                "requestBody": body("AdjustStock"),
                "responses": admin_errors
            }},
            "/health": { "get": { "summary": "200 when Kafka answered in the last 10 s, else 503",
                "responses": { "200": { "description": "healthy" }, "503": { "description": "Kafka unreachable" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics",
                "responses": { "200": { "description": "text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "string" }, "field": { "type": "string" } } },
                "Accepted": { "type": "object", "required": ["requestId", "status", "poll"], "properties": {
                    "requestId": { "type": "string" }, "status": { "const": "PENDING" }, "poll": { "type": "string" } } },
                "IssueRequest": { "type": "object", "additionalProperties": false, "required": ["userId"], "properties": {
                    "userId": { "type": "string", "minLength": 1, "maxLength": 128 } } },
                "CreateCoupon": { "type": "object", "additionalProperties": false, "required": ["couponId", "stock"], "properties": {
                    "couponId": { "type": "string", "minLength": 1, "maxLength": 128 },
                    "stock": { "type": "integer", "minimum": 0 },
                    "activeFrom": { "type": "string", "format": "date-time" },
                    "activeUntil": { "type": "string", "format": "date-time" } } },
                "AdjustStock": { "type": "object", "additionalProperties": false, "required": ["delta"], "properties": {
                    "delta": { "type": "integer", "not": { "const": 0 } },
                    "reason": { "type": "string" } } },
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
                    "source": { "enum": ["redis", "postgres"] } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
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
}
