//! Helpers that build JSON Schema values for the route descriptions (each
//! module's `ROUTES`) and the OpenAPI document's components.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// A time in an answer, in the `Timestamp` shape: RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "maxLength": 256 } })
}

pub fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": schema })
}

/// `cursor` and `limit`; `default_page` items when no limit is given. A limit
/// outside 1–100 is refused (400 `invalid_query`).
pub fn list_params(default_page: usize) -> Vec<Value> {
    vec![
        query_param(
            "cursor",
            "Opaque cursor from a previous page's `next_cursor`.",
            json!({ "type": "string", "minLength": 1 }),
        ),
        query_param(
            "limit",
            "Page size, 1-100.",
            json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": default_page }),
        ),
    ]
}

/// 10 to 128 bytes of UTF-8 (the server counts bytes; a schema counts
/// characters, so its bounds are the loosest that bytes allow).
pub fn password_schema() -> Value {
    use nexus_core::domain::account::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
    json!({ "type": "string",
            "minLength": MIN_PASSWORD_BYTES.div_ceil(4), "maxLength": MAX_PASSWORD_BYTES,
            "description": format!("{MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes of UTF-8.") })
}

pub fn idempotency_header() -> Value {
    json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Optional. A key of your choosing (1 to 255 printable characters; a UUID is good) that makes a retry safe: the same key with the same request replays the first answer instead of acting twice; with another request it is 422 `idempotency_key_reused`. Kept at least 24 hours.",
            "schema": { "type": "string", "maxLength": 255 } })
}

pub fn list_of(item: &str) -> Value {
    obj(
        &["items", "next_cursor"],
        json!({ "items": { "type": "array", "maxItems": 100, "items": schema_ref(item) },
                "next_cursor": { "type": ["string", "null"] } }),
    )
}

pub fn required_query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": true, "description": description,
            "schema": schema })
}

/// A service code as the domain takes it (`ServiceCode::new`).
pub fn service_code() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9_]{1,16}$" })
}

/// An ISO 3166-1 alpha-2 code, either case (`CountryCode::new`).
pub fn country_code() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z]{2}$" })
}

/// A closed object: exactly these properties, `required` always present.
pub fn obj(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required,
            "properties": properties })
}

pub fn money() -> Value {
    schema_ref("Money")
}

pub fn time() -> Value {
    schema_ref("Timestamp")
}

/// `schema` or `null`.
pub fn nullable(schema: Value) -> Value {
    json!({ "oneOf": [schema, { "type": "null" }] })
}

pub fn string() -> Value {
    json!({ "type": "string" })
}

pub fn string_or_null() -> Value {
    json!({ "type": ["string", "null"] })
}

pub fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

pub fn boolean() -> Value {
    json!({ "type": "boolean" })
}

pub fn string_enum(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

pub fn array_of(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// `{"items": [...]}`, the whole collection in one answer.
pub fn items_of(item: Value) -> Value {
    obj(&["items"], json!({ "items": array_of(item) }))
}
