//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Built in code (no handler annotations), once, and cached. A unit test scans the
//! route registrations in this directory and fails when the document disagrees.

use std::sync::OnceLock;

use actix_web::{get, web, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::Problem;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json);
}

#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .json(document())
}

/// Every stable problem `code` the API answers with, in the table's order.
fn error_codes() -> Vec<&'static str> {
    Problem::ALL.iter().map(|p| p.code()).collect()
}

/// The methods the document declares for a request path, upper case and
/// sorted: a `{param}` segment of a path template takes any non-empty segment.
/// Empty when no path template matches.
pub(super) fn methods_for(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let matches = |template: &str| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                part == segment || (part.starts_with('{') && !segment.is_empty())
            })
    };
    let mut methods: Vec<String> = document()["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(template, _)| matches(template))
        .flat_map(|(_, item)| item.as_object().into_iter().flatten())
        .map(|(method, _)| method.to_ascii_uppercase())
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

/// The document, built on first use.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// Who may call a route.
#[derive(Clone, Copy)]
enum Auth {
    None,
    /// An API key (bearer) or the session cookie.
    Customer,
    /// The session cookie only.
    Session,
    Admin,
}

/// One operation: method, path and what it takes and answers.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    params: Vec<Value>,
    body: Option<Value>,
    success: (u16, &'static str, Option<Value>),
    /// The problems the route answers besides those every route shares.
    errors: Vec<Problem>,
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "maxLength": 256 } })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": schema })
}

/// `cursor` and `limit`; `default_page` items when no limit is given. A limit
/// outside 1–100 is refused (400 `invalid_query`).
fn list_params(default_page: usize) -> Vec<Value> {
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
fn password_schema() -> Value {
    use nexus_core::domain::account::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
    json!({ "type": "string",
            "minLength": MIN_PASSWORD_BYTES.div_ceil(4), "maxLength": MAX_PASSWORD_BYTES,
            "description": format!("{MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes of UTF-8.") })
}

fn idempotency_header() -> Value {
    json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Replays the first answer for the same request; another request with the same key is 422 `idempotency_key_reused`.",
            "schema": { "type": "string", "maxLength": 255 } })
}

fn list_of(item: &str) -> Value {
    obj(
        &["items", "next_cursor"],
        json!({ "items": { "type": "array", "maxItems": 100, "items": schema_ref(item) },
                "next_cursor": { "type": ["string", "null"] } }),
    )
}

fn required_query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": true, "description": description,
            "schema": schema })
}

/// A service code as the domain takes it (`ServiceCode::new`).
fn service_code() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9_]{1,16}$" })
}

/// An ISO 3166-1 alpha-2 code, either case (`CountryCode::new`).
fn country_code() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z]{2}$" })
}

fn problem_response(codes: &[&str]) -> Value {
    let mut schema = json!({ "allOf": [ schema_ref("Problem") ] });
    if !codes.is_empty() {
        if let Some(parts) = schema["allOf"].as_array_mut() {
            parts.push(json!({ "type": "object", "properties": { "code": { "enum": codes } } }));
        }
    }
    json!({ "description": format!("Problem ({})", codes.join(", ")),
            "content": { "application/problem+json": { "schema": schema } } })
}

fn operation(op: &Op) -> Value {
    let mut responses = Map::new();
    let (status, description, schema) = &op.success;
    let mut ok = json!({ "description": description });
    if let Some(schema) = schema {
        ok["content"] = json!({ "application/json": { "schema": schema } });
    }
    responses.insert(status.to_string(), ok);
    let mut errors = op.errors.clone();
    // Every route but the compatible endpoint (which answers in its own
    // tokens) refuses a long query string; every route with a body, a large one.
    if op.path != super::smsactivate::PATH {
        errors.push(Problem::QueryTooLong);
    }
    if op.body.is_some() {
        errors.push(Problem::BodyTooLarge);
    }
    match op.auth {
        Auth::None => {}
        _ => errors.push(Problem::Unauthorized),
    }
    errors.push(Problem::RateLimited);
    errors.push(Problem::Internal);
    // One response per status: codes of the same status are merged.
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for problem in errors {
        let listed = by_status.entry(problem.status().as_u16()).or_default();
        if !listed.contains(&problem.code()) {
            listed.push(problem.code());
        }
    }
    for (status, codes) in by_status {
        responses.insert(status.to_string(), problem_response(&codes));
    }
    let security = match op.auth {
        Auth::None => json!([]),
        Auth::Customer => json!([{ "apiKey": [] }, { "session": [] }]),
        Auth::Session => json!([{ "session": [] }]),
        Auth::Admin => json!([{ "adminToken": [] }]),
    };
    let mut value = json!({
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": format!("{}_{}", op.method, op.path.trim_start_matches('/')
            .replace(['/', '.', '-'], "_").replace(['{', '}'], "")),
        "parameters": op.params,
        "responses": responses,
        "security": security,
    });
    if let Some(body) = &op.body {
        value["requestBody"] = json!({ "required": true,
            "content": { "application/json": { "schema": body } } });
    }
    value
}

/// A closed object: exactly these properties, `required` always present.
fn obj(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required,
            "properties": properties })
}

fn money() -> Value {
    schema_ref("Money")
}

fn time() -> Value {
    schema_ref("Timestamp")
}

/// `schema` or `null`.
fn nullable(schema: Value) -> Value {
    json!({ "oneOf": [schema, { "type": "null" }] })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn string_or_null() -> Value {
    json!({ "type": ["string", "null"] })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn string_enum(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn array_of(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// `{"items": [...]}`, the whole collection in one answer.
fn items_of(item: Value) -> Value {
    obj(&["items"], json!({ "items": array_of(item) }))
}

/// The order statuses a placed order can have.
const ORDER_STATUSES: &[&str] = &[
    "placed",
    "number_assigned",
    "code_received",
    "code_delivered",
    "completed",
    "cancelled",
    "expired",
];

/// The properties of an order as `orders::order_view` writes them.
fn order_properties() -> Map<String, Value> {
    let properties = json!({
        "id": string(),
        "status": string_enum(ORDER_STATUSES),
        "service": string_or_null(),
        "country": string_or_null(),
        "channel": { "type": ["string", "null"], "enum": ["sms", "voice", null] },
        "phone": { "type": ["string", "null"], "description": "Assigned number; null before assignment or once erased." },
        "price": money(),
        "created_at": time(),
        "expires_at": time(),
        "cancel_available_at": nullable(time())
    });
    match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

const ORDER_REQUIRED: &[&str] = &[
    "id",
    "status",
    "phone",
    "price",
    "created_at",
    "expires_at",
    "cancel_available_at",
];

fn schemas() -> Value {
    let mut tracked = order_properties();
    tracked.insert(
        "code".into(),
        json!({ "type": ["string", "null"], "description": "The code once received; null before, and once erased." }),
    );
    tracked.insert(
        "credit".into(),
        json!({ "allOf": [money()], "description": "The anonymous credit left." }),
    );
    let mut tracked_required = ORDER_REQUIRED.to_vec();
    tracked_required.extend(["code", "credit"]);
    json!({
        "Money": { "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,6})?$",
            "description": "US dollars as a decimal string (stored as integer micro-dollars).",
            "examples": ["1.50"] },
        "Timestamp": { "type": "string", "format": "date-time", "description": "RFC 3339, UTC." },
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail", "code"],
            "additionalProperties": false,
            "description": "RFC 9457 problem details with a stable machine `code`.",
            "properties": {
                "type": { "type": "string", "format": "uri" }, "title": { "type": "string" },
                "status": { "type": "integer" }, "detail": { "type": "string" },
                "code": { "type": "string", "enum": error_codes() }
            }
        },
        "Order": {
            "type": "object", "additionalProperties": false, "required": ORDER_REQUIRED,
            "description": "`service`, `country` and `channel` are left out (single order) or null (lists) once the order's personal details are erased.",
            "properties": order_properties()
        },
        "TrackedOrder": {
            "type": "object", "additionalProperties": false, "required": tracked_required,
            "properties": tracked
        },
        "PlaceOrder": obj(&["service", "country"], json!({
            "service": service_code(), "country": country_code(),
            "channel": { "type": ["string", "null"], "enum": ["sms", "voice", null], "default": "sms" },
            "max_price": nullable(money()) })),
        "PlaceAnonymousOrder": obj(&["service", "country"], json!({
            "service": service_code(), "country": country_code(),
            "channel": { "type": ["string", "null"], "enum": ["sms", "voice", null], "default": "sms" } })),
        "Code": { "oneOf": [
            obj(&["code", "text", "received_at"], json!({
                "code": string(), "text": { "type": "string", "description": "The SMS text or call transcript." },
                "received_at": time() })),
            obj(&["code", "status"], json!({
                "code": { "type": "null" }, "status": string_enum(ORDER_STATUSES) }))
        ] },
        "Wallet": obj(&["balance", "held", "available"], json!({
            "balance": money(), "held": money(), "available": money() })),
        "LedgerEntry": obj(&["at", "reason", "available_change", "held_change", "available", "held", "balance"], json!({
            "at": time(),
            "reason": string_enum(&["deposit", "anonymous_payment", "hold", "capture", "void",
                "cashback", "provider_cost", "unclaimed"]),
            "available_change": money(), "held_change": money(),
            "available": money(), "held": money(), "balance": money() })),
        "Deposit": obj(&["id", "amount", "paid", "status", "created_at", "expires_at"], json!({
            "id": string(), "amount": money(), "paid": money(),
            "status": string_enum(&["waiting", "paid", "failed"]),
            "created_at": time(), "expires_at": time() })),
        "Invoice": obj(&["id", "amount", "status", "pay_currency", "pay_amount", "pay_address", "expires_at"], json!({
            "id": string(), "amount": money(), "status": string_enum(&["waiting"]),
            "pay_currency": string(),
            "pay_amount": { "type": "string", "description": "Amount in `pay_currency`, as the gateway quotes it." },
            "pay_address": string(), "expires_at": time() })),
        "DepositRequest": obj(&["amount"], json!({
            "amount": money(),
            "pay_currency": { "type": "string", "description": "Crypto to pay with; the gateway's default when absent." } })),
        "ApiKey": obj(&["id", "prefix", "created_at"], json!({
            "id": string(), "prefix": string(), "created_at": time(),
            "revoked_at": { "allOf": [time()], "description": "Present once revoked." } })),
        "NewApiKey": obj(&["id", "key", "prefix", "created_at"], json!({
            "id": string(), "key": { "type": "string", "description": "Shown only once." },
            "prefix": string(), "created_at": time() })),
        "Credentials": obj(&["email", "password"], json!({
            "email": { "type": "string", "format": "email", "maxLength": 254 },
            "password": password_schema() })),
        "Me": obj(&["id", "email", "verified", "verified_at", "status", "deletion", "objection", "created_at"], json!({
            "id": string(),
            "email": { "type": ["string", "null"], "description": "null once erased." },
            "verified": boolean(),
            "verified_at": nullable(time()),
            "status": string_enum(&["active", "deletion_pending"]),
            "deletion": nullable(obj(&["requested_at", "erase_due_at"], json!({
                "requested_at": time(), "erase_due_at": time() }))),
            "objection": boolean(),
            "created_at": time() })),
        "Export": { "type": "object",
            "description": "Machine-readable export of the account's data, streamed; every field in docs/EXPORT.md.",
            "required": ["schema_version", "generated_at", "as_of_log_position", "account", "api_keys",
                "webhook", "wallet", "deposits", "orders", "complete"],
            "properties": {
                "schema_version": { "type": "integer", "const": 1 },
                "generated_at": time(),
                "as_of_log_position": integer(),
                "account": schema_ref("Me"),
                "api_keys": export_api_keys(),
                "webhook": nullable(obj(&["url", "set_at"], json!({
                    "url": string(), "set_at": time() }))),
                "wallet": export_wallet(),
                "deposits": export_deposits(),
                "orders": export_orders(),
                "complete": { "const": true }
            } },
        "Webhook": obj(&["url", "set_at"], json!({
            "url": { "type": "string", "format": "uri" }, "set_at": time() })),
        "NewWebhook": obj(&["url", "set_at", "secret"], json!({
            "url": { "type": "string", "format": "uri" }, "set_at": time(),
            "secret": { "type": "string", "description": "Signing secret; shown only in this answer." } })),
        "SetWebhook": obj(&["url"], json!({ "url": { "type": "string", "format": "uri" } })),
        "AnonymousOrder": obj(&["tracking_id", "order", "invoice"], json!({
            "tracking_id": { "type": "string", "description": "The only handle on the order; keep it." },
            "order": obj(&["status", "price"], json!({
                "status": string_enum(&["awaiting_payment"]), "price": money() })),
            "invoice": obj(&["id", "amount", "pay_currency", "pay_amount", "pay_address", "expires_at"], json!({
                "id": string(), "amount": money(), "pay_currency": string(), "pay_amount": string(),
                "pay_address": string(), "expires_at": time() })) })),
        "Outcome": obj(&["outcome"], json!({ "outcome": string() })),
        "LegalHold": obj(&["subject", "reason", "reference", "placed_at"], json!({
            "subject": string(),
            "reason": string_enum(&["litigation", "regulator", "law_enforcement"]),
            "reference": string(), "placed_at": time() })),
        "PolicyChange": obj(&["id", "title", "summary", "effective_at", "url", "announced_at"], json!({
            "id": string(), "title": string(), "summary": string(), "effective_at": time(),
            "url": string_or_null(), "announced_at": time() }))
    })
}

// The export's parts, apart: one `json!` for all of them is too deep for the macro.

fn export_api_keys() -> Value {
    array_of(obj(
        &["id", "prefix", "created_at", "revoked_at"],
        json!({
                    "id": string(), "prefix": string(), "created_at": time(),
                    "revoked_at": nullable(time()) }),
    ))
}

fn export_wallet() -> Value {
    obj(
        &["currency", "balance", "held", "available", "entries"],
        json!({
                    "currency": { "const": "USD" }, "balance": money(), "held": money(),
                    "available": money(),
                    "entries": array_of(obj(
                        &["position", "at", "reason", "reference", "available_change",
                          "held_change", "available", "held", "balance"],
                        json!({ "position": integer(), "at": time(),
                            "reason": string_enum(&["deposit", "hold", "capture", "void", "cashback",
                                "anonymous_payment", "provider_cost", "unclaimed"]),
                            "reference": obj(&["kind", "id"], json!({
                                "kind": string_enum(&["order", "deposit"]), "id": string() })),
                            "available_change": money(), "held_change": money(),
                            "available": money(), "held": money(), "balance": money() }))) }),
    )
}

fn export_deposits() -> Value {
    array_of(obj(
        &[
            "id",
            "amount",
            "paid",
            "status",
            "failure",
            "created_at",
            "expires_at",
            "payment_count",
            "payments",
        ],
        json!({ "id": string(), "amount": money(), "paid": money(),
                        "status": string_enum(&["waiting", "paid", "failed"]),
                        "failure": string_or_null(), "created_at": time(), "expires_at": time(),
                        "payment_count": integer(),
                        "payments": { "type": "array", "maxItems": 16, "items": obj(
                            &["network", "tx_hash", "amount", "outcome", "late", "at"],
                            json!({ "network": string(), "tx_hash": string(), "amount": money(),
                                "outcome": string_enum(&["exact", "partial", "over"]),
                                "late": boolean(), "at": time() })) } }),
    ))
}

fn export_orders() -> Value {
    array_of(obj(
        &[
            "id",
            "status",
            "service",
            "country",
            "channel",
            "phone",
            "price",
            "placed_at",
            "expires_at",
            "number_assigned_at",
            "provider",
            "codes_received",
            "first_code_at",
            "delivered_at",
            "delivered_via",
            "resend_requested",
            "closed_at",
            "cancel_reason",
            "code",
        ],
        json!({ "id": string(),
                        "status": string_enum(&["placed", "number_assigned", "code_received",
                            "code_delivered", "completed", "cancelled", "expired"]),
                        "service": string_or_null(), "country": string_or_null(),
                        "channel": nullable(string_enum(&["sms", "voice"])),
                        "phone": string_or_null(), "price": money(), "placed_at": time(),
                        "expires_at": time(), "number_assigned_at": nullable(time()),
                        "provider": string_or_null(), "codes_received": integer(),
                        "first_code_at": nullable(time()), "delivered_at": nullable(time()),
                        "delivered_via": nullable(string_enum(&["api", "compatible_api", "webhook", "tracking"])),
                        "resend_requested": boolean(), "closed_at": nullable(time()),
                        "cancel_reason": nullable(string_enum(&["customer", "no_numbers"])),
                        "code": obj(&["state", "value", "text", "received_at"], json!({
                            "state": string_enum(&["none", "awaiting_first_read", "readable", "erased"]),
                            "value": string_or_null(), "text": string_or_null(),
                            "received_at": nullable(time()) })) }),
    ))
}

fn operations() -> Vec<Op> {
    use Auth::*;
    let op = |method, path, summary, tag, auth, params, body, success, errors| Op {
        method,
        path,
        summary,
        tag,
        auth,
        params,
        body,
        success,
        errors,
    };
    let order_id = || vec![path_param("id", "Order id.")];
    vec![
        op(
            "get",
            "/health",
            "Liveness and log head",
            "ops",
            None,
            vec![],
            Option::None,
            (
                200,
                "Up",
                Some(obj(
                    &["status", "log_head"],
                    json!({ "status": string_enum(&["ok"]), "log_head": integer() }),
                )),
            ),
            vec![],
        ),
        op(
            "get",
            "/ready",
            "Readiness: projections within lag bound",
            "ops",
            None,
            vec![],
            Option::None,
            (
                200,
                "Ready (503 with the same body, `status: not_ready`, when not)",
                Some(obj(
                    &["status", "log_head", "projections"],
                    json!({
                        "status": string_enum(&["ready", "not_ready"]),
                        "log_head": integer(),
                        "projections": array_of(obj(
                            &["name", "position", "lag_events", "lag_seconds", "running"],
                            json!({
                                "name": string(), "position": integer(), "lag_events": integer(),
                                "lag_seconds": { "type": ["number", "null"] },
                                "running": boolean() }))) }),
                )),
            ),
            vec![],
        ),
        op(
            "get",
            "/openapi.json",
            "This document",
            "ops",
            None,
            vec![],
            Option::None,
            (
                200,
                "OpenAPI 3.1 document",
                Some(json!({ "type": "object",
                    "required": ["openapi", "info", "paths", "components", "x-error-codes"],
                    "properties": { "openapi": { "const": "3.1.0" }, "info": { "type": "object" },
                        "paths": { "type": "object" }, "components": { "type": "object" },
                        "x-error-codes": array_of(string()) } })),
            ),
            vec![],
        ),
        op(
            "post",
            "/v1/accounts",
            "Register",
            "accounts",
            None,
            vec![],
            Some(schema_ref("Credentials")),
            (
                201,
                "Registered; a verification mail is sent",
                Some(obj(&["id"], json!({ "id": string() }))),
            ),
            vec![
                Problem::InvalidJson,
                Problem::InvalidEmail,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::AlreadyRegistered,
                Problem::EmailTaken,
                Problem::Contention,
            ],
        ),
        op(
            "post",
            "/v1/accounts/verify",
            "Verify the e-mail with the mailed token",
            "accounts",
            None,
            vec![],
            Some(obj(&["token"], json!({ "token": string() }))),
            (
                200,
                "Verified",
                Some(obj(
                    &["id", "verified"],
                    json!({ "id": string(), "verified": { "const": true } }),
                )),
            ),
            vec![
                Problem::InvalidJson,
                Problem::VerificationTokenInvalid,
                Problem::NotFound,
                Problem::AlreadyVerified,
                Problem::VerificationTokenUsed,
                Problem::Contention,
                Problem::VerificationTokenExpired,
            ],
        ),
        op(
            "get",
            "/verify",
            "The verification mail's link: verifies and answers an HTML page",
            "accounts",
            None,
            vec![required_query_param(
                "token",
                "The token from the mail.",
                string(),
            )],
            Option::None,
            (
                200,
                "Verified: a short HTML page (`text/html`)",
                Option::None,
            ),
            vec![
                Problem::InvalidQuery,
                Problem::VerificationTokenInvalid,
                Problem::NotFound,
                Problem::AlreadyVerified,
                Problem::VerificationTokenUsed,
                Problem::Contention,
                Problem::VerificationTokenExpired,
            ],
        ),
        op(
            "post",
            "/v1/sessions",
            "Sign in (sets the session cookie)",
            "accounts",
            None,
            vec![],
            Some(schema_ref("Credentials")),
            (
                201,
                "Signed in; `Set-Cookie` carries the session",
                Some(obj(
                    &["account", "verified"],
                    json!({ "account": string(), "verified": boolean() }),
                )),
            ),
            vec![
                Problem::InvalidJson,
                Problem::InvalidCredentials,
                Problem::AccountDisabled,
            ],
        ),
        op(
            "delete",
            "/v1/sessions",
            "Sign out (ends the cookie's session, if any)",
            "accounts",
            None,
            vec![],
            Option::None,
            (204, "Signed out", Option::None),
            vec![],
        ),
        op(
            "post",
            "/v1/me/password",
            "Change the password",
            "accounts",
            Customer,
            vec![],
            Some(obj(
                &["old_password", "new_password"],
                json!({ "old_password": string(),
                    "new_password": password_schema() }),
            )),
            (204, "Changed", Option::None),
            vec![
                Problem::InvalidJson,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::InvalidCredentials,
                Problem::NotFound,
                Problem::Contention,
            ],
        ),
        op(
            "post",
            "/v1/api-keys",
            "Create an API key",
            "accounts",
            Customer,
            vec![],
            Option::None,
            (201, "Created", Some(schema_ref("NewApiKey"))),
            vec![
                Problem::NotFound,
                Problem::TooManyApiKeys,
                Problem::Contention,
            ],
        ),
        op(
            "get",
            "/v1/api-keys",
            "List API keys, newest first (all of them: their number is capped)",
            "accounts",
            Customer,
            vec![],
            Option::None,
            (
                200,
                "Every key, revoked ones included",
                Some(obj(
                    &["items", "next_cursor"],
                    json!({ "items": array_of(schema_ref("ApiKey")), "next_cursor": { "type": "null" } }),
                )),
            ),
            vec![Problem::NotFound],
        ),
        op(
            "delete",
            "/v1/api-keys/{id}",
            "Revoke an API key",
            "accounts",
            Customer,
            vec![path_param("id", "API key id.")],
            Option::None,
            (204, "Revoked", Option::None),
            vec![Problem::NotFound, Problem::Contention],
        ),
        op(
            "post",
            "/v1/orders",
            "Buy a number",
            "orders",
            Customer,
            vec![idempotency_header()],
            Some(schema_ref("PlaceOrder")),
            (
                201,
                "Placed (waits up to 3 s for a number)",
                Some(schema_ref("Order")),
            ),
            vec![
                Problem::InvalidJson,
                Problem::UnknownService,
                Problem::UnknownCountry,
                Problem::InvalidChannel,
                Problem::InvalidAmount,
                Problem::InvalidIdempotencyKey,
                Problem::InsufficientFunds,
                Problem::NotFound,
                Problem::NoNumbers,
                Problem::PriceAboveMax,
                Problem::OrderExists,
                Problem::WalletConflict,
                Problem::Contention,
                Problem::IdempotencyKeyReused,
            ],
        ),
        op(
            "get",
            "/v1/orders",
            "List orders",
            "orders",
            Customer,
            list_params(super::wallet::DEFAULT_PAGE),
            Option::None,
            (200, "Page", Some(list_of("Order"))),
            vec![Problem::InvalidCursor, Problem::InvalidQuery],
        ),
        op(
            "get",
            "/v1/orders/{id}",
            "An order",
            "orders",
            Customer,
            order_id(),
            Option::None,
            (200, "The order", Some(schema_ref("Order"))),
            vec![Problem::NotFound],
        ),
        op(
            "get",
            "/v1/orders/{id}/code",
            "Read the code (the first read is the delivery)",
            "orders",
            Customer,
            {
                let mut p = order_id();
                p.push(query_param(
                    "wait",
                    "Seconds to wait for a code (at most 60).",
                    json!({ "type": "integer", "minimum": 0, "maximum": 60 }),
                ));
                p
            },
            Option::None,
            (
                200,
                "The code, or `code: null` with the status",
                Some(schema_ref("Code")),
            ),
            vec![
                Problem::InvalidQuery,
                Problem::NotFound,
                Problem::OrderExpired,
                Problem::Contention,
                Problem::CodeErased,
            ],
        ),
        op(
            "post",
            "/v1/orders/{id}/resend",
            "Ask for another code",
            "orders",
            Customer,
            order_id(),
            Option::None,
            (200, "The order", Some(schema_ref("Order"))),
            vec![
                Problem::NotFound,
                Problem::OrderWrongStatus,
                Problem::OrderExpired,
                Problem::Contention,
            ],
        ),
        op(
            "post",
            "/v1/orders/{id}/cancel",
            "Cancel (full refund)",
            "orders",
            Customer,
            order_id(),
            Option::None,
            (200, "Cancelled", Some(schema_ref("Order"))),
            vec![
                Problem::NotFound,
                Problem::OrderNotCancellable,
                Problem::CancelTooEarly,
                Problem::OrderWrongStatus,
                Problem::Contention,
            ],
        ),
        op(
            "post",
            "/v1/orders/{id}/complete",
            "Complete",
            "orders",
            Customer,
            order_id(),
            Option::None,
            (200, "Completed", Some(schema_ref("Order"))),
            vec![
                Problem::NotFound,
                Problem::OrderWrongStatus,
                Problem::NoCodeYet,
                Problem::Contention,
            ],
        ),
        op(
            "get",
            "/v1/wallet",
            "Wallet balance",
            "wallet",
            Customer,
            vec![],
            Option::None,
            (200, "Wallet", Some(schema_ref("Wallet"))),
            vec![],
        ),
        op(
            "get",
            "/v1/wallet/entries",
            "Ledger entries of the wallet",
            "wallet",
            Customer,
            list_params(super::wallet::DEFAULT_PAGE),
            Option::None,
            (200, "Page", Some(list_of("LedgerEntry"))),
            vec![Problem::InvalidCursor, Problem::InvalidQuery],
        ),
        op(
            "get",
            "/v1/deposits",
            "List deposits",
            "wallet",
            Customer,
            list_params(super::wallet::DEFAULT_PAGE),
            Option::None,
            (200, "Page", Some(list_of("Deposit"))),
            vec![Problem::InvalidCursor, Problem::InvalidQuery],
        ),
        op(
            "post",
            "/v1/deposits",
            "Create a crypto deposit invoice",
            "wallet",
            Customer,
            vec![],
            Some(schema_ref("DepositRequest")),
            (201, "Invoice", Some(schema_ref("Invoice"))),
            vec![
                Problem::InvalidJson,
                Problem::InvalidAmount,
                Problem::InvalidDeposit,
                Problem::UnsupportedCurrency,
                Problem::WalletConflict,
                Problem::Contention,
                Problem::Unavailable,
            ],
        ),
        op(
            "post",
            "/v1/payments/ipn",
            "Payment gateway notification (signed)",
            "wallet",
            None,
            vec![
                json!({ "name": "x-nowpayments-sig", "in": "header", "required": true,
                "description": "HMAC-SHA512 of the canonical body.", "schema": string() }),
            ],
            Some(json!({ "type": "object",
                "description": "The gateway's notification; fields Nexus does not read are ignored.",
                "required": ["payment_id", "payment_status", "order_id"],
                "properties": {
                    "payment_id": { "type": ["string", "integer"] },
                    "payment_status": string_enum(&["waiting", "confirming", "confirmed", "sending",
                        "partially_paid", "finished", "failed", "refunded", "expired"]),
                    "order_id": string(),
                    "price_amount": { "type": ["string", "number", "null"] },
                    "price_currency": string_or_null(),
                    "pay_amount": { "type": ["string", "number", "null"] },
                    "actually_paid": { "type": ["string", "number", "null"] },
                    "actually_paid_at_fiat": { "type": ["string", "number", "null"] },
                    "pay_currency": string_or_null(),
                    "outcome_amount": { "type": ["string", "number", "null"] },
                    "payin_hash": string_or_null() } })),
            (200, "Accepted", Some(schema_ref("Outcome"))),
            vec![
                Problem::UnreadableBody,
                Problem::IpnMalformedBody,
                Problem::IpnUnsigned,
                Problem::IpnMalformedSignature,
                Problem::IpnBadSignature,
                Problem::UnknownDeposit,
                Problem::IpnMissingField,
                Problem::IpnInvalidField,
                Problem::IpnUnsupportedCurrency,
                Problem::IpnNothingPaid,
                Problem::IpnNotConfigured,
                Problem::IpnFailed,
            ],
        ),
        op(
            "post",
            "/v1/dev/payments/{id}/pay",
            "Pay an invoice with the simulated gateway (embedded default only)",
            "wallet",
            None,
            vec![path_param("id", "Invoice id.")],
            Option::None,
            (200, "Paid", Some(schema_ref("Outcome"))),
            vec![Problem::NotFound],
        ),
        op(
            "get",
            "/v1/catalog/countries",
            "Countries",
            "catalog",
            None,
            vec![],
            Option::None,
            (
                200,
                "Countries",
                Some(items_of(obj(
                    &["code", "name", "dial_code"],
                    json!({ "code": string(), "name": string(), "dial_code": string() }),
                ))),
            ),
            vec![],
        ),
        op(
            "get",
            "/v1/catalog/services",
            "Services",
            "catalog",
            None,
            vec![],
            Option::None,
            (
                200,
                "Services",
                Some(items_of(obj(
                    &["code", "name"],
                    json!({ "code": string(), "name": string() }),
                ))),
            ),
            vec![],
        ),
        op(
            "get",
            "/v1/catalog/prices",
            "Price and stock of one service in one country",
            "catalog",
            None,
            vec![
                required_query_param("country", "ISO country code.", country_code()),
                required_query_param("service", "Service code.", service_code()),
            ],
            Option::None,
            (
                200,
                "One item; `price: null` and `stock: 0` when no upstream has numbers",
                Some(items_of(obj(
                    &["service", "country", "price", "stock"],
                    json!({ "service": string(), "country": string(),
                        "price": nullable(money()), "stock": integer() }),
                ))),
            ),
            vec![
                Problem::InvalidQuery,
                Problem::UnknownService,
                Problem::UnknownCountry,
            ],
        ),
        op(
            "get",
            "/v1/catalog/availability",
            "Availability: success rate and time to code per route",
            "catalog",
            None,
            {
                let mut p = vec![
                    query_param("country", "ISO country code.", country_code()),
                    query_param("service", "Service code.", service_code()),
                ];
                p.extend(list_params(super::catalog::AVAILABILITY_DEFAULT_PAGE));
                p
            },
            Option::None,
            (
                200,
                "Page",
                Some(obj(
                    &["items", "next_cursor"],
                    json!({ "items": array_of(obj(
                        &["service", "country", "orders", "successes", "success_rate_bp",
                          "median_time_to_code_secs"],
                        json!({ "service": string(), "country": string(),
                            "orders": integer(), "successes": integer(),
                            "success_rate_bp": { "type": "integer", "minimum": 0, "maximum": 10000,
                                "description": "Basis points." },
                            "median_time_to_code_secs": { "type": ["integer", "null"] } }))),
                        "next_cursor": string_or_null() }),
                )),
            ),
            vec![
                Problem::InvalidQuery,
                Problem::InvalidCursor,
                Problem::UnknownService,
                Problem::UnknownCountry,
            ],
        ),
        op(
            "post",
            "/v1/anonymous/orders",
            "Anonymous order, paid by crypto",
            "anonymous",
            None,
            vec![],
            Some(schema_ref("PlaceAnonymousOrder")),
            (
                201,
                "Tracking id, order and invoice",
                Some(schema_ref("AnonymousOrder")),
            ),
            vec![
                Problem::InvalidJson,
                Problem::UnknownService,
                Problem::UnknownCountry,
                Problem::InvalidChannel,
                Problem::InvalidDeposit,
                Problem::NoNumbers,
                Problem::AnonymousOrderConflict,
                Problem::Contention,
                Problem::Unavailable,
            ],
        ),
        op(
            "get",
            "/v1/track/{tracking_id}",
            "Follow an anonymous order",
            "anonymous",
            None,
            vec![path_param("tracking_id", "Tracking id.")],
            Option::None,
            (
                200,
                "Awaiting payment, or the latest order with its code and the credit left",
                Some(json!({ "oneOf": [
                    obj(&["status", "credit"], json!({
                        "status": string_enum(&["awaiting_payment"]), "credit": money() })),
                    schema_ref("TrackedOrder")
                ] })),
            ),
            vec![
                Problem::NotFound,
                Problem::OrderExpired,
                Problem::Contention,
            ],
        ),
        op(
            "post",
            "/v1/track/{tracking_id}/reorder",
            "Another number for an anonymous order, from its credit",
            "anonymous",
            None,
            vec![path_param("tracking_id", "Tracking id.")],
            Option::None,
            (
                201,
                "Placed",
                Some(obj(
                    &["id", "status"],
                    json!({ "id": string(), "status": string_enum(&["placed"]) }),
                )),
            ),
            vec![
                Problem::InsufficientFunds,
                Problem::NotFound,
                Problem::AnonymousOrderConflict,
                Problem::OrderExists,
                Problem::WalletConflict,
                Problem::Contention,
            ],
        ),
        op(
            "put",
            "/v1/me/webhook",
            "Set the order webhook",
            "webhook",
            Customer,
            vec![],
            Some(schema_ref("SetWebhook")),
            (
                200,
                "Set; the signing secret is shown only here",
                Some(schema_ref("NewWebhook")),
            ),
            vec![
                Problem::InvalidJson,
                Problem::InvalidWebhookUrl,
                Problem::NotFound,
                Problem::Contention,
            ],
        ),
        op(
            "get",
            "/v1/me/webhook",
            "The order webhook",
            "webhook",
            Customer,
            vec![],
            Option::None,
            (200, "Webhook", Some(schema_ref("Webhook"))),
            vec![Problem::NotFound],
        ),
        op(
            "delete",
            "/v1/me/webhook",
            "Remove the order webhook",
            "webhook",
            Customer,
            vec![],
            Option::None,
            (204, "Removed", Option::None),
            vec![Problem::NotFound, Problem::Contention],
        ),
        op(
            "get",
            "/v1/me",
            "The account (also while a deletion is pending)",
            "me",
            Customer,
            vec![],
            Option::None,
            (200, "Account", Some(schema_ref("Me"))),
            vec![Problem::NotFound],
        ),
        op(
            "patch",
            "/v1/me",
            "Correct the account (e-mail)",
            "me",
            Customer,
            vec![],
            Some(obj(
                &["email"],
                json!({ "email": { "type": "string", "format": "email", "maxLength": 254 } }),
            )),
            (200, "Account", Some(schema_ref("Me"))),
            vec![
                Problem::InvalidJson,
                Problem::InvalidEmail,
                Problem::NotFound,
                Problem::EmailTaken,
                Problem::Contention,
                Problem::EmailUnchanged,
            ],
        ),
        op(
            "post",
            "/v1/me/deletion",
            "Request deletion (erased 30 days later)",
            "me",
            Customer,
            vec![],
            Option::None,
            (202, "Requested", Some(schema_ref("Me"))),
            vec![
                Problem::NotFound,
                Problem::ActiveOrders,
                Problem::DeletionAlreadyRequested,
                Problem::Contention,
            ],
        ),
        op(
            "delete",
            "/v1/me/deletion",
            "Withdraw the deletion request (session, or credentials in the body)",
            "me",
            Session,
            vec![],
            Some(schema_ref("Credentials")),
            (200, "Withdrawn", Some(schema_ref("Me"))),
            vec![
                Problem::InvalidJson,
                Problem::UnreadableBody,
                Problem::InvalidCredentials,
                Problem::AccountDisabled,
                Problem::NotFound,
                Problem::NoDeletionPending,
                Problem::DeletionWindowOver,
                Problem::Contention,
            ],
        ),
        op(
            "put",
            "/v1/me/objection",
            "Object to non-essential processing (or withdraw the objection)",
            "me",
            Customer,
            vec![],
            Some(obj(&["object"], json!({ "object": boolean() }))),
            (200, "Recorded", Some(schema_ref("Me"))),
            vec![Problem::InvalidJson, Problem::NotFound, Problem::Contention],
        ),
        op(
            "get",
            "/v1/me/export",
            "Export all data (portability)",
            "me",
            Customer,
            vec![],
            Option::None,
            (200, "Export (docs/EXPORT.md)", Some(schema_ref("Export"))),
            vec![Problem::NotFound, Problem::Unavailable],
        ),
        op(
            "get",
            "/v1/admin/projections",
            "Projection status",
            "admin",
            Admin,
            vec![],
            Option::None,
            (
                200,
                "Projections",
                Some(obj(
                    &["log_head", "items"],
                    json!({ "log_head": integer(), "items": array_of(obj(
                        &["name", "position", "head", "lag_events", "lag_seconds", "state", "failure"],
                        json!({ "name": string(), "position": integer(), "head": integer(),
                            "lag_events": integer(), "lag_seconds": { "type": ["number", "null"] },
                            "state": string_enum(&["running", "stopped", "failed"]),
                            "failure": nullable(obj(&["position", "reason"], json!({
                                "position": integer(), "reason": string() }))) }))) }),
                )),
            ),
            vec![Problem::NotFound],
        ),
        op(
            "get",
            "/v1/admin/providers",
            "Upstream providers",
            "admin",
            Admin,
            vec![],
            Option::None,
            (
                200,
                "Providers",
                Some(items_of(obj(
                    &[
                        "name",
                        "breaker",
                        "consecutive_failures",
                        "latency_ms",
                        "successes",
                        "failures",
                        "reconciled_cancelled",
                        "reconciled_absent",
                        "unreconciled",
                    ],
                    json!({ "name": string(),
                        "breaker": string_enum(&["closed", "open", "half_open"]),
                        "consecutive_failures": integer(), "latency_ms": integer(),
                        "successes": integer(), "failures": integer(),
                        "reconciled_cancelled": integer(), "reconciled_absent": integer(),
                        "unreconciled": integer() }),
                ))),
            ),
            vec![Problem::NotFound],
        ),
        op(
            "get",
            "/v1/admin/retention",
            "Retention schedule: subjects due by `until`",
            "admin",
            Admin,
            {
                let mut p = vec![query_param(
                    "until",
                    "RFC 3339 time; now when absent.",
                    json!({ "type": "string", "format": "date-time" }),
                )];
                p.extend(list_params(super::admin::DEFAULT_PAGE));
                p
            },
            Option::None,
            (
                200,
                "Page",
                Some(obj(
                    &["until", "due_now", "due_now_capped", "items", "next_cursor"],
                    json!({ "until": time(), "due_now": integer(), "due_now_capped": boolean(),
                        "items": array_of(obj(&["subject", "kind", "due_at", "held"], json!({
                            "subject": string(), "kind": string_enum(&["account", "anonymous"]),
                            "due_at": time(), "held": boolean() }))),
                        "next_cursor": string_or_null() }),
                )),
            ),
            vec![
                Problem::InvalidQuery,
                Problem::InvalidTime,
                Problem::InvalidCursor,
                Problem::NotFound,
            ],
        ),
        op(
            "post",
            "/v1/admin/retention/sweep",
            "Run the retention sweeps now: erase what is due and not held",
            "admin",
            Admin,
            vec![],
            Option::None,
            (
                200,
                "What the sweep did",
                Some(obj(
                    &[
                        "examined",
                        "accounts_erased",
                        "anonymous_erased",
                        "held",
                        "skipped",
                        "failed",
                        "more_due",
                    ],
                    json!({ "examined": integer(), "accounts_erased": integer(),
                        "anonymous_erased": integer(), "held": integer(), "skipped": integer(),
                        "failed": integer(), "more_due": boolean() }),
                )),
            ),
            vec![Problem::NotFound],
        ),
        op(
            "get",
            "/v1/admin/retention/verify",
            "Prove the sweeps: recorded erasures have no key left, nothing overdue unless held",
            "admin",
            Admin,
            vec![],
            Option::None,
            (
                200,
                "The proof",
                Some(obj(
                    &[
                        "ok",
                        "events_checked",
                        "erasures_recorded",
                        "keys_still_present",
                        "overdue",
                    ],
                    json!({ "ok": boolean(), "events_checked": integer(),
                        "erasures_recorded": integer(),
                        "keys_still_present": array_of(string()), "overdue": array_of(string()) }),
                )),
            ),
            vec![Problem::NotFound],
        ),
        op(
            "post",
            "/v1/admin/legal-holds",
            "Place a legal hold",
            "admin",
            Admin,
            vec![],
            Some(obj(
                &["subject", "reference"],
                json!({ "subject": string(), "reference": string(),
                    "reason": { "type": "string", "enum": ["litigation", "regulator", "law_enforcement"],
                        "default": "litigation" } }),
            )),
            (201, "Held", Some(schema_ref("LegalHold"))),
            vec![
                Problem::InvalidJson,
                Problem::InvalidSubject,
                Problem::InvalidReason,
                Problem::InvalidReference,
                Problem::NotFound,
                Problem::AlreadyHeld,
                Problem::TooManyHolds,
                Problem::Contention,
            ],
        ),
        op(
            "delete",
            "/v1/admin/legal-holds/{subject}",
            "Release a legal hold",
            "admin",
            Admin,
            vec![path_param("subject", "Held subject.")],
            Option::None,
            (204, "Released", Option::None),
            vec![Problem::NotFound, Problem::Contention],
        ),
        op(
            "get",
            "/v1/admin/legal-holds",
            "Legal holds in force",
            "admin",
            Admin,
            vec![],
            Option::None,
            (200, "Holds", Some(items_of(schema_ref("LegalHold")))),
            vec![Problem::NotFound],
        ),
        op(
            "post",
            "/v1/admin/policy-changes",
            "Announce a policy change (>= 14 days ahead)",
            "admin",
            Admin,
            vec![idempotency_header()],
            Some(obj(
                &["title", "summary", "effective_at"],
                json!({ "title": string(), "summary": string(),
                    "effective_at": time(), "url": { "type": "string", "format": "uri" } }),
            )),
            (
                201,
                "Announced (200 when an Idempotency-Key replays it)",
                Some(schema_ref("PolicyChange")),
            ),
            vec![
                Problem::InvalidJson,
                Problem::InvalidTime,
                Problem::InvalidIdempotencyKey,
                Problem::NotFound,
                Problem::TooManyAnnouncements,
                Problem::Contention,
                Problem::InvalidTitle,
                Problem::InvalidSummary,
                Problem::InvalidUrl,
                Problem::NoticeTooShort,
                Problem::NoticeTooLong,
                Problem::IdempotencyKeyReused,
            ],
        ),
        op(
            "get",
            "/v1/admin/policy-changes",
            "Policy changes",
            "admin",
            Admin,
            list_params(super::admin::DEFAULT_PAGE),
            Option::None,
            (200, "Page", Some(list_of("PolicyChange"))),
            vec![
                Problem::InvalidCursor,
                Problem::InvalidQuery,
                Problem::NotFound,
            ],
        ),
        op(
            "post",
            "/v1/upstreams/{name}/webhook",
            "Signed push from an upstream provider",
            "upstreams",
            None,
            vec![path_param("name", "Configured upstream name.")],
            Some(json!({ "type": "object",
                "description": "The upstream's own push format, verified by its signature before it is read." })),
            (
                200,
                "Accepted (queued for the worker) or ignored",
                Some(obj(
                    &["status"],
                    json!({ "status": string_enum(&["accepted", "ignored"]) }),
                )),
            ),
            vec![
                Problem::UnreadableBody,
                Problem::PushStale,
                Problem::PushMalformed,
                Problem::PushUnsigned,
                Problem::PushBadSignature,
                Problem::PushSourceNotAllowed,
                Problem::NotFound,
                Problem::PushNotSupported,
                Problem::PushNotConfigured,
                Problem::PushBusy,
            ],
        ),
        op(
            "get",
            "/stubs/handler_api.php",
            "SMS-Activate-compatible endpoint (plain-text tokens)",
            "compat",
            None,
            vec![
                query_param(
                    "api_key",
                    "API key.",
                    json!({ "type": "string", "maxLength": 256 }),
                ),
                query_param("action", "SMS-Activate action.", string()),
            ],
            Option::None,
            (200, "SMS-Activate answer", Some(string())),
            vec![],
        ),
        op(
            "post",
            "/stubs/handler_api.php",
            "SMS-Activate-compatible endpoint, form-encoded",
            "compat",
            None,
            vec![],
            Option::None,
            (200, "SMS-Activate answer", Some(string())),
            vec![],
        ),
    ]
}

/// The actions of the SMS-Activate-compatible endpoint and how each answers.
const COMPAT_ACTIONS: [(&str, &str); 13] = [
    ("getBalance", "text: `ACCESS_BALANCE:<available>`"),
    ("getNumber", "text: `ACCESS_NUMBER:<activation id>:<phone>`; params `service`, `country`, opt. `maxPrice`"),
    ("getNumberV2", "JSON: `{activationId, phoneNumber, activationCost, currency, countryCode, countryPhoneCode, canGetAnotherSms, activationTime, activationEndTime, activationOperator, serviceCode, subtype}`; params as `getNumber`"),
    ("getStatus", "text: `STATUS_WAIT_CODE`, `STATUS_WAIT_RESEND`, `STATUS_OK:<code>`, `STATUS_WAIT_RETRY:<code>`, `STATUS_CANCEL`; param `id`"),
    ("getStatusV2", "JSON always (refusals too): `{verificationType, sms, call}`; param `id`"),
    ("setStatus", "text: `ACCESS_READY` (1), `ACCESS_RETRY_GET` (3: another SMS), `ACCESS_ACTIVATION` (6: complete), `ACCESS_CANCEL` (8 or -1: cancel); params `id`, `status`"),
    ("finishActivation", "text: `ACCESS_ACTIVATION`; param `id`"),
    ("cancelActivation", "text: `ACCESS_CANCEL`; param `id`"),
    ("getActiveActivations", "JSON: a bare list of `{activationId, serviceCode, phoneNumber, activationCost, activationStatus, smsCode, smsText, activationTime, discount, repeated, canGetAnotherSms, countryCode, countryName, currency}`; opt. `start`, `limit`"),
    ("getPrices", "JSON: `{<country id>: {<service>: {cost, count, physicalCount}}}`; opt. `service`, `country`"),
    ("getCountries", "JSON: `{<id>: {id, rus, eng, chn, visible, retry, rent}}`"),
    ("getServicesList", "JSON: a bare list `[{code, name}]`"),
    ("getOperators", "JSON: `{status, countryOperators: {<id>: [\"any\"]}}`; opt. `country`"),
];

/// The compatible endpoint answers the protocol's tokens, not problems: its
/// actions, success forms and refusals (with the status of each), from the
/// handler's own list.
fn describe_compat(op: &mut Value, method: &str) {
    let actions: Vec<&str> = COMPAT_ACTIONS.iter().map(|(name, _)| *name).collect();
    let table: Vec<String> = COMPAT_ACTIONS
        .iter()
        .map(|(name, answer)| format!("- `{name}`: {answer}"))
        .collect();
    let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for refusal in crate::http::smsactivate::Refusal::ALL {
        let token = match refusal {
            crate::http::smsactivate::Refusal::WrongMaxPrice(_) => {
                "WRONG_MAX_PRICE:<price>".to_owned()
            }
            other => other.token(),
        };
        by_status
            .entry(refusal.status().as_u16())
            .or_default()
            .push(token);
    }
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": format!("The action's answer:\n{}", table.join("\n")),
            "content": {
                "text/plain": { "schema": string() },
                "application/json": { "schema": {} },
            },
        }),
    );
    for (status, tokens) in by_status {
        responses.insert(
            status.to_string(),
            json!({
                "description": format!(
                    "One of these tokens as the whole body (`getStatusV2`: JSON `{{title, details}}` with the token as `title`): {}",
                    tokens.join(", ")
                ),
                "content": {
                    "text/plain": { "schema": string_enum_owned(&tokens) },
                    "application/json": { "schema": obj(&["title", "details"], json!({
                        "title": string(), "details": string(),
                        "info": { "type": "object" } })) },
                },
            }),
        );
    }
    op["responses"] = Value::Object(responses);
    let action = json!({ "name": "action", "in": "query", "required": true,
        "description": "The SMS-Activate action.", "schema": { "type": "string", "enum": actions } });
    if method == "get" {
        if let Some(params) = op["parameters"].as_array_mut() {
            for param in params.iter_mut() {
                if param["name"] == "action" {
                    *param = action.clone();
                }
            }
        }
    } else {
        op["requestBody"] = json!({ "required": true, "content": {
            "application/x-www-form-urlencoded": { "schema": {
                "type": "object", "required": ["api_key", "action"],
                "properties": { "api_key": { "type": "string", "maxLength": 256 },
                    "action": { "type": "string", "enum": actions } } } } } });
    }
}

fn string_enum_owned(values: &[String]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn build() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation(&op);
    }
    // Withdrawing a deletion takes credentials in the body only without a session.
    if let Some(body) = paths
        .get_mut("/v1/me/deletion")
        .and_then(|item| item.get_mut("delete"))
        .and_then(|op| op.get_mut("requestBody"))
    {
        body["required"] = json!(false);
        body["description"] =
            json!("Credentials, when there is no session (a deletion pending disables API keys).");
    }
    for method in ["get", "post"] {
        if let Some(op) = paths
            .get_mut("/stubs/handler_api.php")
            .and_then(|item| item.get_mut(method))
        {
            describe_compat(op, method);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Nexus API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Phone-verification backend. Money is a decimal string in USD; errors are RFC 9457 problem+json with a stable `code`." },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": { "type": "http", "scheme": "bearer", "description": "A customer API key." },
                "session": { "type": "apiKey", "in": "cookie", "name": super::sessions::COOKIE_NAME },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "The admin token from config." }
            }
        },
        "x-error-codes": error_codes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// (method, path) pairs registered in the source files of this directory.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut found = BTreeSet::new();
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src/http") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                    continue;
                }
                let source = std::fs::read_to_string(&path).expect("read source");
                scan(&source, &mut found);
            }
        }
        found
    }

    fn scan(source: &str, found: &mut BTreeSet<(String, String)>) {
        let consts: Vec<(String, String)> = source
            .lines()
            .filter_map(|l| {
                let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
                let rest = l.strip_prefix("const ")?;
                let (name, value) = rest.split_once(": &str = \"")?;
                Some((name.to_owned(), value.split('"').next()?.to_owned()))
            })
            .collect();
        let lines: Vec<&str> = source.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            for method in ["get", "post", "put", "patch", "delete"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap_or_default();
                    found.insert((method.to_owned(), path.to_owned()));
                }
            }
            if let Some(idx) = line.find("web::resource(") {
                let arg = line[idx + "web::resource(".len()..]
                    .split(')')
                    .next()
                    .unwrap_or_default();
                let path = match arg.strip_prefix('"') {
                    Some(literal) => literal.trim_end_matches('"').to_owned(),
                    None => consts
                        .iter()
                        .find(|(name, _)| name == arg.trim())
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("unresolved resource path {arg}")),
                };
                // The methods follow on this line or the next few, until the `;`.
                let mut tail = String::new();
                for next in &lines[i..] {
                    tail.push_str(next);
                    if next.contains(';') {
                        break;
                    }
                }
                let tail = &tail[tail.find("web::resource(").unwrap_or(0)..];
                for method in ["get", "post", "put", "patch", "delete"] {
                    if tail.contains(&format!("web::{method}()")) {
                        found.insert((method.to_owned(), path.clone()));
                    }
                }
            }
        }
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                found.insert((method.clone(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn document_lists_exactly_the_registered_routes() {
        let registered = registered_routes();
        assert!(
            registered.len() > 40,
            "scan found too few routes: {registered:?}"
        );
        let documented = documented_routes();
        let missing: Vec<_> = registered.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "undocumented routes: {missing:?}; documented but not registered: {extra:?}"
        );
    }

    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            let pointer = reference.strip_prefix('#').expect("local ref");
            assert!(doc.pointer(pointer).is_some(), "unresolved {reference}");
        }
    }

    fn sources_under(dir: std::path::PathBuf) -> Vec<(std::path::PathBuf, String)> {
        let mut found = Vec::new();
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read source dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                    let source = std::fs::read_to_string(&path).expect("read source");
                    found.push((path, source));
                }
            }
        }
        found
    }

    /// The names of the problems the handlers and the error mapping answer
    /// with: every `Problem::Name` outside the table itself, this document and
    /// the tests.
    fn answered_problems() -> BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut answered = BTreeSet::new();
        for (path, source) in sources_under(root.join("src/http")) {
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default();
            if file == "problem.rs" || file == "openapi.rs" {
                continue;
            }
            // Tests of a file may build errors that no route answers.
            let source = source
                .split("\n#[cfg(test)]\nmod ")
                .next()
                .unwrap_or_default();
            for (at, _) in source.match_indices("Problem::") {
                let name: String = source[at + "Problem::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                answered.insert(name);
            }
        }
        answered
    }

    #[test]
    fn every_problem_in_the_table_is_answered_and_documented() {
        let answered = answered_problems();
        for expected in [
            "Unauthorized",
            "NotFound",
            "Internal",
            "Unavailable",
            "RateLimited",
        ] {
            assert!(
                answered.contains(expected),
                "the scan missed {expected}: {answered:?}"
            );
        }
        let listed: BTreeSet<String> = Problem::ALL.iter().map(|p| p.name().to_owned()).collect();
        let unused: Vec<_> = listed.difference(&answered).collect();
        assert!(
            unused.is_empty(),
            "in the table but never answered: {unused:?}"
        );
        let documented = document()["x-error-codes"].as_array().expect("codes");
        assert_eq!(documented.len(), Problem::ALL.len());
        for problem in Problem::ALL {
            assert!(
                documented.iter().any(|c| c == problem.code()),
                "{} is not in x-error-codes",
                problem.code()
            );
        }
    }

    #[test]
    fn methods_are_found_through_path_templates() {
        assert_eq!(methods_for("/v1/orders"), ["GET", "POST"]);
        assert_eq!(methods_for("/v1/orders/abc"), ["GET"]);
        assert_eq!(methods_for("/v1/orders/abc/cancel"), ["POST"]);
        assert_eq!(methods_for("/v1/me"), ["GET", "PATCH"]);
        assert!(methods_for("/v1/orders//cancel").is_empty());
        assert!(methods_for("/v1/nothing").is_empty());
        assert!(methods_for("/v1/orders/abc/cancel/more").is_empty());
    }

    #[test]
    fn problem_codes_are_unique_snake_case_errors() {
        let codes: BTreeSet<&str> = Problem::ALL.iter().map(|p| p.code()).collect();
        assert_eq!(codes.len(), Problem::ALL.len(), "a code is listed twice");
        for problem in Problem::ALL {
            let code = problem.code();
            assert!(
                !code.is_empty()
                    && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && !code.starts_with('_')
                    && !code.ends_with('_'),
                "{code} is not snake_case"
            );
            let status = problem.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}: {status}"
            );
            assert!(!problem.title().is_empty(), "{code} has no title");
        }
    }

    #[test]
    fn every_documented_problem_code_is_listed() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                for (status, response) in op["responses"].as_object().expect("responses") {
                    let Some(parts) =
                        response.pointer("/content/application~1problem+json/schema/allOf")
                    else {
                        continue;
                    };
                    for code in parts[1]["properties"]["code"]["enum"]
                        .as_array()
                        .expect("codes")
                    {
                        let code = code.as_str().expect("code");
                        assert!(
                            error_codes().contains(&code),
                            "{method} {path} {status}: {code}"
                        );
                    }
                }
            }
        }
    }

    /// An object schema that says nothing of its fields.
    fn is_bare_object(schema: &Value) -> bool {
        schema["type"] == "object"
            && schema.get("properties").is_none()
            && schema.get("$ref").is_none()
            && schema.get("oneOf").is_none()
            && schema.get("allOf").is_none()
    }

    #[test]
    fn no_body_is_a_bare_object() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let request = op.pointer("/requestBody/content/application~1json/schema");
                // An upstream's push is in that upstream's own format.
                if path != "/v1/upstreams/{name}/webhook" {
                    assert!(
                        !request.is_some_and(is_bare_object),
                        "{method} {path}: bare request body"
                    );
                }
                for (status, response) in op["responses"].as_object().expect("responses") {
                    let schema = response.pointer("/content/application~1json/schema");
                    assert!(
                        !schema.is_some_and(is_bare_object),
                        "{method} {path} {status}: bare response body"
                    );
                }
            }
        }
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            assert!(!is_bare_object(schema), "schema {name} is bare");
        }
    }

    #[test]
    fn document_has_the_openapi_31_structure() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("schemes");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(path.starts_with('/'));
            for (method, op) in item.as_object().expect("item") {
                assert!(op["summary"].is_string(), "{method} {path} lacks a summary");
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}: no success"
                );
                for requirement in op["security"].as_array().expect("security") {
                    for scheme in requirement.as_object().expect("requirement").keys() {
                        assert!(schemes.contains_key(scheme), "unknown scheme {scheme}");
                    }
                }
                // Every path template parameter is declared.
                for segment in path.split('/').filter(|s| s.starts_with('{')) {
                    let name = segment.trim_matches(|c| c == '{' || c == '}');
                    let declared = op["parameters"]
                        .as_array()
                        .expect("parameters")
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == name);
                    assert!(
                        declared,
                        "{method} {path}: path parameter {name} undeclared"
                    );
                }
            }
        }
        let codes = doc["x-error-codes"].as_array().expect("codes");
        assert!(codes.iter().any(|c| c == "insufficient_funds"));
    }
}
