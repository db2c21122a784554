//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Built once, on first use, from the route table (`http::table()`): each route's
//! method and path come from the same entry the server registers its handler from,
//! and its description from that entry's `doc`. This module holds the schema
//! helpers the descriptions use and the shared components.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::error::Problem;
use nexus_core::domain::account::{MAX_ALLOWED_IP_RANGES, MAX_API_KEY_LABEL_CHARS};

use super::route::{Auth, Method, Op, Route, FRESH_SESSION_MINUTES};
use super::schema::{
    array_of, boolean, country_code, integer, money, nullable, obj, password_schema, schema_ref,
    service_code, string, string_enum, string_or_null, time,
};

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[Route {
    method: Method::Get,
    path: "/openapi.json",
    handler: |route| route.to(openapi_json),
    doc: || Op {
        summary: "This document",
        tag: "ops",
        auth: Auth::None,
        params: vec![],
        body: None,
        success: (
            200,
            "OpenAPI 3.1 document",
            Some(json!({ "type": "object",
                    "required": ["openapi", "info", "paths", "components", "x-error-codes"],
                    "properties": { "openapi": { "const": "3.1.0" }, "info": { "type": "object" },
                        "paths": { "type": "object" }, "components": { "type": "object" },
                        "x-error-codes": array_of(string()) } })),
        ),
        errors: vec![],
    },
}];

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

static DOCUMENT: OnceLock<Value> = OnceLock::new();

/// Builds the document from the route table the server registers (called by
/// `http::configure`; every worker registers the same table, the first wins).
pub(super) fn publish<'a>(table: impl IntoIterator<Item = &'a Route>) {
    DOCUMENT.get_or_init(|| build(table));
}

/// The published document (`null` before [`publish`]: no route is served then).
pub fn document() -> &'static Value {
    static NOTHING: Value = Value::Null;
    DOCUMENT.get().unwrap_or(&NOTHING)
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

fn operation(method: Method, path: &str, op: &Op) -> Value {
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
    if path != super::smsactivate::PATH {
        errors.push(Problem::QueryTooLong);
    }
    if op.body.is_some() {
        errors.push(Problem::BodyTooLarge);
    }
    match op.auth {
        Auth::None => {}
        Auth::Customer(_) => {
            errors.extend([
                Problem::Unauthorized,
                Problem::AccountDeletionPending,
                Problem::InsufficientScope,
            ]);
            errors.push(Problem::IpNotAllowed);
        }
        Auth::Session => errors.extend([Problem::Unauthorized, Problem::SessionRequired]),
        Auth::FreshSession => errors.extend([
            Problem::Unauthorized,
            Problem::SessionRequired,
            Problem::ReauthenticationRequired,
        ]),
        Auth::Admin => errors.push(Problem::Unauthorized),
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
        Auth::Customer(_) => json!([{ "apiKey": [] }, { "session": [] }]),
        Auth::Session | Auth::FreshSession => json!([{ "session": [] }]),
        Auth::Admin => json!([{ "adminToken": [] }]),
    };
    let mut value = json!({
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": format!("{}_{}", method.openapi_name(), path.trim_start_matches('/')
            .replace(['/', '.', '-'], "_").replace(['{', '}'], "")),
        "parameters": op.params,
        "responses": responses,
        "security": security,
    });
    // What an API key needs here, and whether the session must be fresh.
    match op.auth {
        Auth::Customer(scope) => value["x-api-key-scope"] = json!(scope.name()),
        Auth::FreshSession => value["x-fresh-session-minutes"] = json!(FRESH_SESSION_MINUTES),
        Auth::None | Auth::Session | Auth::Admin => {}
    }
    if let Some(body) = &op.body {
        value["requestBody"] = json!({ "required": true,
            "content": { "application/json": { "schema": body } } });
    }
    value
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

fn api_key_scope() -> Value {
    json!({ "type": "string", "enum": ["read", "orders", "full"],
        "description": "read: orders, codes, wallet, deposits; orders: read, and place, cancel, complete, resend orders and ask for deposits; full: everything an API key may do." })
}

fn api_key_label() -> Value {
    json!({ "type": ["string", "null"], "maxLength": MAX_API_KEY_LABEL_CHARS,
        "description": "The owner's name for the key; no control characters." })
}

fn allowed_ips() -> Value {
    json!({ "type": "array", "maxItems": MAX_ALLOWED_IP_RANGES,
        "items": { "type": "string", "description": "A CIDR range (IPv4 or IPv6) or an address." },
        "description": "The client addresses the key is accepted from; empty: any." })
}

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
        "Money": { "type": "string", "pattern": "^-?[0-9]+\\.[0-9]{6}$",
            "description": "US dollars as a decimal string with exactly six decimals, the unit's whole precision (integer micro-dollars): every amount in an answer has this shape.",
            "examples": ["1.500000"] },
        "Amount": { "type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,6})?$",
            "description": "US dollars asked for in a request: a decimal string with up to six decimals (`10`, `10.5`, `0.015`).",
            "examples": ["10.00"] },
        "Timestamp": { "type": "string", "format": "date-time", "description": "RFC 3339, UTC." },
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail", "code"],
            "additionalProperties": false,
            "description": "RFC 9457 problem details with a stable machine `code`.",
            "properties": {
                "type": { "type": "string", "format": "uri-reference",
                    "description": "The page explaining the code (`/problems/{code}`), relative to the server." },
                "title": { "type": "string" },
                "status": { "type": "integer" }, "detail": { "type": "string" },
                "code": { "type": "string", "enum": error_codes() },
                "active_orders": { "type": "array", "items": string(),
                    "description": "With `active_orders`: the ids of the orders still active." },
                "forfeit_balance": { "allOf": [money()],
                    "description": "With `balance_not_forfeited`: the wallet's available balance, which moves to unclaimed balances when the account is erased." }
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
            "max_price": nullable(schema_ref("Amount")) })),
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
        "LedgerEntry": obj(&["position", "at", "reason", "reference", "available_change",
                "held_change", "available", "held", "balance"], json!({
            "position": { "type": "integer", "minimum": 0,
                "description": "The log position of the event that moved the money (the audit's record)." },
            "at": time(),
            "reason": string_enum(&["deposit", "anonymous_payment", "hold", "capture", "void",
                "cashback", "provider_cost", "unclaimed"]),
            "reference": obj(&["kind", "id"], json!({
                "kind": { "type": "string", "enum": ["order", "deposit", "unclaimed"],
                    "description": "What the entry is for: `GET /v1/orders/{id}` or `GET /v1/deposits/{id}`; `unclaimed`: the balance moved to unclaimed balances at the account's erasure." },
                "id": { "type": ["string", "null"], "description": "null for `unclaimed`." } })),
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
            "amount": schema_ref("Amount"),
            "pay_currency": { "type": "string", "description": "Crypto to pay with; the gateway's default when absent." } })),
        "ApiKey": obj(&["id", "prefix", "scope", "label", "allowed_ips", "created_at"], json!({
            "id": string(), "prefix": string(), "scope": api_key_scope(),
            "label": api_key_label(), "allowed_ips": allowed_ips(), "created_at": time(),
            "revoked_at": { "allOf": [time()], "description": "Present once revoked." } })),
        "NewApiKey": obj(&["id", "key", "prefix", "scope", "label", "allowed_ips", "created_at"], json!({
            "id": string(), "key": { "type": "string", "description": "Shown only once." },
            "prefix": string(), "scope": api_key_scope(), "label": api_key_label(),
            "allowed_ips": allowed_ips(), "created_at": time() })),
        "NewApiKeyRequest": obj(&[], json!({
            "scope": { "allOf": [api_key_scope()], "default": "orders" },
            "label": api_key_label(), "allowed_ips": allowed_ips() })),
        "Credentials": obj(&["email", "password"], json!({
            "email": { "type": "string", "format": "email", "maxLength": 254 },
            "password": password_schema() })),
        "SignIn": obj(&["email", "password"], json!({
            "email": { "type": "string", "format": "email", "maxLength": 254 },
            "password": password_schema(),
            "totp": { "type": "string", "description": "The authenticator app's 6-digit code, when two-factor is on." },
            "recovery_code": { "type": "string", "description": "Instead of `totp`: an unused recovery code." } }))
            .as_object()
            .cloned()
            .map(|mut sign_in| {
                // One second factor at most.
                sign_in.insert("not".into(), json!({ "required": ["totp", "recovery_code"] }));
                Value::Object(sign_in)
            })
            .unwrap_or_default(),
        "Me": obj(&["id", "email", "verified", "verified_at", "status", "deletion", "objection", "created_at"], json!({
            "id": string(),
            "email": { "type": ["string", "null"], "description": "null once erased." },
            "verified": boolean(),
            "verified_at": nullable(time()),
            "status": string_enum(&["active", "deletion_pending"]),
            "deletion": nullable(obj(&["requested_at", "erase_due_at", "forfeit_balance"], json!({
                "requested_at": time(), "erase_due_at": time(),
                "forfeit_balance": { "allOf": [money()],
                    "description": "The wallet's available balance now: what moves to unclaimed balances at the erasure, and can no longer be spent (money arriving before then included)." } }))),
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
        &[
            "id",
            "prefix",
            "scope",
            "label",
            "allowed_ips",
            "created_at",
            "revoked_at",
        ],
        json!({
                    "id": string(), "prefix": string(), "scope": api_key_scope(),
                    "label": api_key_label(), "allowed_ips": allowed_ips(), "created_at": time(),
                    "revoked_at": nullable(time()) }),
    ))
}

fn export_wallet() -> Value {
    obj(
        &["currency", "balance", "held", "available", "entries"],
        json!({
                    "currency": { "const": "USD" }, "balance": money(), "held": money(),
                    "available": money(),
                    "entries": array_of(schema_ref("LedgerEntry")) }),
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

fn build<'a>(table: impl IntoIterator<Item = &'a Route>) -> Value {
    let mut paths = Map::new();
    for route in table {
        let op = (route.doc)();
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.openapi_name()] = operation(route.method, route.path, &op);
    }
    // Requesting a deletion takes a body only to confirm the forfeit of a balance.
    if let Some(body) = paths
        .get_mut("/v1/me/deletion")
        .and_then(|item| item.get_mut("post"))
        .and_then(|op| op.get_mut("requestBody"))
    {
        body["required"] = json!(false);
        body["description"] = json!(
            "Optional. `confirm_forfeit_balance`: true to delete an account whose wallet has \
             money available (it moves to unclaimed balances at the erasure); absent, an empty \
             body and `{}` mean false."
        );
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
        "servers": [{ "url": "/", "description": "The server that serves this document." }],
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

    /// The document of the server's own table.
    fn document() -> &'static Value {
        publish(super::super::table());
        super::document()
    }
    use std::collections::BTreeSet;

    /// Every `.rs` file under `src/http`, with its source.
    fn http_sources() -> Vec<(std::path::PathBuf, String)> {
        sources_under(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"))
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

    fn table_routes() -> Vec<(String, String)> {
        super::super::table()
            .map(|r| (r.method.openapi_name().to_owned(), r.path.to_owned()))
            .collect()
    }

    #[test]
    fn document_lists_exactly_the_table() {
        let table = table_routes();
        let unique: BTreeSet<_> = table.iter().cloned().collect();
        assert_eq!(unique.len(), table.len(), "a route is in the table twice");
        assert!(table.len() > 40, "too few routes: {table:?}");
        assert_eq!(documented_routes(), unique);
    }

    /// No handler is registered except through a `ROUTES` table: no route
    /// attribute macros, resources or ad hoc routes in the handler modules.
    #[test]
    fn no_route_is_registered_outside_the_table() {
        let mut forbidden: Vec<String> = ["get", "post", "put", "patch", "delete", "route"]
            .iter()
            .map(|m| format!("#[{m}("))
            .collect();
        forbidden.extend(["web::resource(", "cfg.service(", ".configure("].map(String::from));
        let mut found = Vec::new();
        for (path, source) in http_sources() {
            // `route::register` is the one place that registers the table.
            if path.ends_with("http/route.rs") {
                continue;
            }
            // Test modules may build their own apps.
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if forbidden.iter().any(|f| line.contains(f.as_str())) {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(found.is_empty(), "routes outside the table: {found:#?}");
    }

    /// Through the real registration (`configure`), a request with each table
    /// route's method on a concrete path reaches a handler: with no state
    /// configured, the handler's extractors refuse (5xx), where a request no
    /// route takes gets the unrouted 404 or 405.
    #[actix_web::test]
    async fn every_table_route_reaches_its_handler() {
        use actix_web::{test, App};
        let app = test::init_service(App::new().configure(super::super::configure)).await;
        let call = |method: &str, path: &str| {
            test::TestRequest::default()
                .method(method.to_ascii_uppercase().parse().expect("method"))
                .uri(path)
                .to_request()
        };
        for (method, template) in table_routes() {
            let concrete: Vec<String> = template
                .split('/')
                .map(|s| {
                    if s == "{code}" {
                        // A problem page exists for the codes there are only.
                        "not_found".to_owned()
                    } else if s.starts_with('{') {
                        "x1".to_owned()
                    } else {
                        s.to_owned()
                    }
                })
                .collect();
            let answer = test::call_service(&app, call(&method, &concrete.join("/"))).await;
            let status = answer.status().as_u16();
            assert!(
                ![404, 405].contains(&status),
                "{method} {template} was not routed: {status}"
            );
        }
        let answer = test::call_service(&app, call("put", "/v1/orders")).await;
        assert_eq!(answer.status(), 405);
        assert_eq!(
            answer.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"GET, POST"[..])
        );
        let answer = test::call_service(&app, call("get", "/v1/nothing")).await;
        assert_eq!(answer.status(), 404);
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

    /// Who may call an operation, in the words of the README's route table.
    fn readme_who(path: &str, op: &Value) -> String {
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_object().and_then(|o| o.keys().next()))
            .map(String::as_str)
            .collect();
        if path == super::super::smsactivate::PATH {
            "`api_key` parameter".to_owned()
        } else if op.get("x-fresh-session-minutes").is_some() {
            "fresh session".to_owned()
        } else {
            match (schemes.as_slice(), op["x-api-key-scope"].as_str()) {
                ([], _) => "none".to_owned(),
                (["session"], _) => "session".to_owned(),
                (["adminToken"], _) => "admin token".to_owned(),
                (_, Some(scope)) => format!("key `{scope}`, session"),
                (other, None) => other.join(" or "),
            }
        }
    }

    /// The README's route table is the document's: every route once, with who
    /// may call it and its summary, and nothing else.
    #[test]
    fn the_readme_route_table_is_the_documents() {
        let readme = include_str!("../../../README.md");
        let (_, section) = readme
            .split_once("\n## Routes\n")
            .expect("a Routes section");
        // Up to the next heading (the admin routes' own table follows).
        let section = section.split("\n#").next().unwrap_or_default();
        let in_readme: BTreeSet<String> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(str::to_owned)
            .collect();
        let mut documented = BTreeSet::new();
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let summary = op["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('|', "\\|");
                documented.insert(format!(
                    "| `{}` | `{path}` | {} | {summary} |",
                    method.to_uppercase(),
                    readme_who(path, op)
                ));
            }
        }
        let missing: Vec<_> = documented.difference(&in_readme).collect();
        let extra: Vec<_> = in_readme.difference(&documented).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README rows to add: {missing:#?}\nREADME rows to remove: {extra:#?}"
        );
    }
}
