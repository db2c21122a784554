//! A fake SMSCode (`/v1` and `/v2`): Bearer token, the success/failure
//! envelope, stable error codes with their fixed HTTP statuses, idempotency keys
//! (a replay with the same key and body returns the stored answer and charges
//! nothing; another body → 422 `IDEMPOTENCY_KEY_REUSED`), IDR and Money amounts,
//! over real HTTP on 127.0.0.1 with switchable behaviours. Runs on its own thread.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use nexus_tests::loopback::LoopbackServer;
use serde_json::{json, Value};

pub const RATE: i64 = 16_000;

#[derive(Clone, Debug)]
pub struct Product {
    pub id: u64,
    pub country_id: u64,
    pub platform_id: u64,
    pub catalog_product_id: u64,
    pub available: u64,
    pub price_idr: i64,
    pub active: bool,
}

#[derive(Clone, Debug)]
pub struct Order {
    pub id: u64,
    pub status: &'static str,
    pub phone: String,
    pub product_id: u64,
    pub catalog_product_id: u64,
    pub amount_idr: i64,
    pub otp_code: Option<String>,
    pub otp_message: Option<String>,
    pub sms_revision: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub cancel_available_at: DateTime<Utc>,
    pub polls: u32,
    /// (deliver on or after this poll, code, message).
    pub scheduled: Vec<(u32, Option<String>, String)>,
}

/// A canned failure: (status, code, extra header, details).
pub type Canned = (u16, &'static str, Option<(&'static str, String)>, Value);

pub struct State {
    pub token: String,
    pub products: Vec<Product>,
    pub balance_idr: i64,
    pub next_order: u64,
    pub orders: HashMap<u64, Order>,
    /// idempotency key → (request body, status, stored answer).
    pub idempotency: HashMap<String, (Value, u16, Value)>,
    /// Keys whose first request is "still running".
    pub in_progress: Vec<String>,
    /// Orders really created (each one charged once).
    pub charges: u32,
    /// The next creates fail with (status, code).
    pub create_error: Option<(u16, &'static str)>,
    /// A create that finds no number answers `orders: []` with `failed_count: 1`.
    pub create_fails_softly: bool,
    pub code_after_polls: u32,
    /// The first SMS carries no classified code (`otp_code: null`).
    pub code_unclassified: bool,
    pub resend_after_polls: u32,
    /// Resend answers `resent: false` (cool-down).
    pub resend_cooldown: bool,
    /// Cancel is refused this long after creation.
    pub cancel_window: chrono::Duration,
    /// Cancel fails upstream (422 PROVIDER_ERROR).
    pub cancel_provider_error: bool,
    /// Every call answers this failure instead.
    pub fail_all: Option<Canned>,
    /// "METHOD /vN/path" → (status, raw body).
    pub answers: HashMap<String, (u16, String)>,
    /// Answers are sent this late (after the work is done: a timed-out create
    /// has still created its order).
    pub delay: Option<Duration>,
    /// (method, path, query, idempotency-key, authorization, body).
    pub requests: Vec<Request>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub body: Value,
}

impl Default for State {
    fn default() -> Self {
        let product =
            |id, country_id, platform_id, catalog_product_id, available, price_idr| Product {
                id,
                country_id,
                platform_id,
                catalog_product_id,
                available,
                price_idr,
                active: true,
            };
        Self {
            token: "S".into(),
            products: vec![
                // Indonesia (6) / WhatsApp (3): three products of catalog product 88.
                product(1024, 6, 3, 88, 10, 750),
                product(1025, 6, 3, 88, 0, 600),
                product(1026, 6, 3, 88, 5, 900),
                // Indonesia / Telegram (4).
                product(2001, 6, 4, 91, 3, 1500),
                // A platform Nexus does not map.
                product(3001, 6, 77, 95, 3, 1500),
            ],
            balance_idr: 460_480,
            next_order: 90210,
            orders: HashMap::new(),
            idempotency: HashMap::new(),
            in_progress: Vec::new(),
            charges: 0,
            create_error: None,
            create_fails_softly: false,
            code_after_polls: 2,
            code_unclassified: false,
            resend_after_polls: 1,
            resend_cooldown: false,
            cancel_window: chrono::Duration::zero(),
            cancel_provider_error: false,
            fail_all: None,
            answers: HashMap::new(),
            delay: None,
            requests: Vec::new(),
        }
    }
}

impl State {
    pub fn calls(&self, method: &str, path: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    pub fn last(&self, method: &str, path: &str) -> Option<Request> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.method == method && r.path == path)
            .cloned()
    }
}

pub struct FakeSmsCode {
    /// `http://127.0.0.1:<port>` (the version goes after it).
    pub base: String,
    pub state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl FakeSmsCode {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = web::Data::from(state.clone());
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(shared.clone())
                .default_service(web::to(handle));
        });
        Self {
            base: server.url(""),
            state,
            _server: server,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn fx() -> Value {
    json!({ "pair": "USD/IDR", "rate": RATE, "rate_as_of": "2026-05-11T00:00:00+00:00" })
}

/// An amount as the version writes it.
fn money(v2: bool, idr: i64, decimals: usize) -> Value {
    if !v2 {
        return json!(idr);
    }
    // amount = idr / RATE, rounded half-up to `decimals` (the fake's own FX).
    let scale = 10i64.pow(decimals as u32);
    let scaled = (idr * scale * 2 + RATE) / (2 * RATE);
    let amount = format!(
        "{}.{:0width$}",
        scaled / scale,
        scaled % scale,
        width = decimals
    );
    json!({ "amount": amount, "currency": "USD", "canonical_amount": idr, "canonical_currency": "IDR" })
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn order_json(order: &Order, v2: bool) -> Value {
    let terminal = matches!(order.status, "COMPLETED" | "CANCELED" | "EXPIRED");
    let has_sms = order.sms_revision > 0;
    let now = Utc::now();
    json!({
        "id": order.id,
        "status": order.status,
        "phone_number": order.phone,
        "product_id": order.product_id,
        "catalog_product_id": order.catalog_product_id,
        "operator_id": null,
        "operator_name": null,
        "amount": money(v2, order.amount_idr, 4),
        "otp_code": order.otp_code,
        "otp_message": order.otp_message,
        "sms_revision": order.sms_revision,
        "otp_received_at": if has_sms { Some(time(order.created_at)) } else { None },
        "expires_at": time(order.expires_at),
        "created_at": time(order.created_at),
        "canceled_at": null,
        "failed_reason": null,
        "can_finish": has_sms && !terminal,
        "can_resend": has_sms && !terminal,
        "can_cancel": !has_sms && !terminal && now >= order.cancel_available_at,
        "can_replace": !has_sms && !terminal && now >= order.cancel_available_at,
        "can_reactivate": false,
        "resend_available_at": null,
        "cancel_available_at": if now < order.cancel_available_at { Some(time(order.cancel_available_at)) } else { None },
        "replace_available_at": null,
    })
}

fn envelope(status: u16, data: Value, v2: bool) -> (u16, Value) {
    let mut body = json!({ "success": true, "status": status, "data": data });
    if v2 {
        body["meta"] = json!({ "fx": fx() });
    }
    (status, body)
}

fn error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({ "success": false, "status": status, "error": { "code": code, "message": message } }),
    )
}

fn respond(status: u16, body: Value, header: Option<(&'static str, String)>) -> HttpResponse {
    let mut builder = HttpResponse::build(StatusCode::from_u16(status).unwrap());
    builder
        .content_type("application/json")
        .insert_header(("X-Request-Id", "req-1"));
    if let Some(header) = header {
        builder.insert_header(header);
    }
    builder.body(body.to_string())
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let method = req.method().as_str().to_owned();
    let path = req.path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let response = {
        let mut s = state.lock().unwrap();
        s.requests.push(Request {
            method: method.clone(),
            path: path.clone(),
            query: req.query_string().to_owned(),
            idempotency_key: header("idempotency-key"),
            authorization: header("authorization"),
            body: body.clone(),
        });
        answer(
            &mut s,
            &method,
            &path,
            &query,
            header("authorization"),
            header("idempotency-key"),
            body,
        )
    };
    let delay = state.lock().unwrap().delay;
    if let Some(delay) = delay {
        actix_web::rt::time::sleep(delay).await;
    }
    response
}

fn answer(
    s: &mut State,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    auth: Option<String>,
    idempotency_key: Option<String>,
    body: Value,
) -> HttpResponse {
    if let Some((status, raw)) = s.answers.get(&format!("{method} {path}")) {
        return HttpResponse::build(StatusCode::from_u16(*status).unwrap()).body(raw.clone());
    }
    if let Some((status, code, header, details)) = &s.fail_all {
        let (status, mut body) = error(*status, code, "refused");
        if !details.is_null() {
            body["error"]["details"] = details.clone();
        }
        return respond(status, body, header.clone());
    }
    if auth.as_deref() != Some(&format!("Bearer {}", s.token)) {
        let (status, body) = error(401, "UNAUTHORIZED", "token missing or invalid");
        return respond(status, body, None);
    }
    let (v2, rest) = match path
        .split_once('/')
        .map(|(_, r)| r)
        .and_then(|r| r.split_once('/'))
    {
        Some(("v1", rest)) => (false, format!("/{rest}")),
        Some(("v2", rest)) => (true, format!("/{rest}")),
        _ => return respond(404, error(404, "NOT_FOUND", "no such route").1, None),
    };
    let id_of = |body: &Value| body.get("id").and_then(Value::as_u64).unwrap_or(0);
    let (status, body) = match (method, rest.as_str()) {
        ("GET", "/balance") => {
            if v2 {
                envelope(
                    200,
                    json!({ "balance": money(true, s.balance_idr, 2) }),
                    true,
                )
            } else {
                envelope(
                    200,
                    json!({ "currency": "IDR", "balance": s.balance_idr }),
                    false,
                )
            }
        }
        ("GET", "/catalog/products") => {
            let want = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
            let mut list: Vec<&Product> = s
                .products
                .iter()
                .filter(|p| want("country_id").is_none_or(|c| c == p.country_id))
                .filter(|p| want("platform_id").is_none_or(|c| c == p.platform_id))
                .collect();
            list.sort_by_key(|p| p.price_idr);
            let items: Vec<Value> = list
                .iter()
                .map(|p| json!({ "id": p.id, "name": format!("product {}", p.id), "country_id": p.country_id,
                    "platform_id": p.platform_id, "available": p.available, "price": money(v2, p.price_idr, 4),
                    "active": p.active, "catalog_product_id": p.catalog_product_id, "operator_id": null, "operator_name": null }))
                .collect();
            let count = items.len();
            let (status, mut body) = envelope(200, Value::Array(items), v2);
            body["meta"]["page"] = json!(1);
            body["meta"]["limit"] = json!(1000);
            body["meta"]["count"] = json!(count);
            (status, body)
        }
        ("POST", "/orders/create") => create(s, v2, idempotency_key, body),
        ("GET", order_path) if order_path.starts_with("/orders/") => {
            let id: u64 = order_path
                .trim_start_matches("/orders/")
                .parse()
                .unwrap_or(0);
            match s.orders.get_mut(&id) {
                None => error(404, "NOT_FOUND", "order not found"),
                Some(order) => {
                    order.polls += 1;
                    let polls = order.polls;
                    if order.status == "ACTIVE" || order.status == "OTP_RECEIVED" {
                        let due: Vec<_> = order
                            .scheduled
                            .iter()
                            .filter(|(at, ..)| *at <= polls)
                            .cloned()
                            .collect();
                        order.scheduled.retain(|(at, ..)| *at > polls);
                        for (_, code, message) in due {
                            order.status = "OTP_RECEIVED";
                            order.sms_revision += 1;
                            order.otp_code = code.or(order.otp_code.take());
                            order.otp_message = Some(message);
                        }
                    }
                    envelope(200, order_json(order, v2), v2)
                }
            }
        }
        ("POST", "/orders/cancel") => {
            let provider_error = s.cancel_provider_error;
            match s.orders.get_mut(&id_of(&body)) {
                None => error(404, "NOT_FOUND", "order not found"),
                Some(order) if order.sms_revision > 0 || order.status != "ACTIVE" => {
                    error(409, "CONFLICT", "order is not cancelable")
                }
                Some(order) if Utc::now() < order.cancel_available_at => {
                    error(409, "CANCEL_TOO_EARLY", "too early")
                }
                Some(_) if provider_error => error(422, "PROVIDER_ERROR", "upstream cancel failed"),
                Some(order) => {
                    order.status = "CANCELED";
                    let (id, refund) = (order.id, order.amount_idr);
                    s.balance_idr += refund;
                    let balance = s.balance_idr;
                    envelope(
                        200,
                        json!({ "order_id": id, "status": "CANCELED", "refund_amount": money(v2, refund, 4), "new_balance": money(v2, balance, 2) }),
                        v2,
                    )
                }
            }
        }
        ("POST", "/orders/finish") => match s.orders.get_mut(&id_of(&body)) {
            None => error(404, "NOT_FOUND", "order not found"),
            Some(order) if order.sms_revision == 0 || order.status != "OTP_RECEIVED" => {
                error(409, "CONFLICT", "order is not finishable")
            }
            Some(order) => {
                order.status = "COMPLETED";
                envelope(
                    200,
                    json!({ "order_id": order.id, "status": "COMPLETED" }),
                    v2,
                )
            }
        },
        ("POST", "/orders/resend") => {
            let (cooldown, after) = (s.resend_cooldown, s.resend_after_polls);
            match s.orders.get_mut(&id_of(&body)) {
                None => error(404, "NOT_FOUND", "order not found"),
                Some(order) if order.sms_revision == 0 || order.status != "OTP_RECEIVED" => {
                    error(409, "CONFLICT", "order cannot be resent")
                }
                Some(order) if cooldown => envelope(
                    200,
                    json!({ "order_id": order.id, "status": order.status, "resent": false }),
                    v2,
                ),
                Some(order) => {
                    let at = order.polls + after;
                    order
                        .scheduled
                        .push((at, Some("771100".into()), "Your code is 771100".into()));
                    envelope(
                        200,
                        json!({ "order_id": order.id, "status": order.status, "resent": true }),
                        v2,
                    )
                }
            }
        }
        _ => error(404, "NOT_FOUND", "no such route"),
    };
    let header = (status == 429).then(|| ("Retry-After", "3".to_owned()));
    respond(status, body, header)
}

fn create(s: &mut State, v2: bool, key: Option<String>, body: Value) -> (u16, Value) {
    if let Some(key) = &key {
        if s.in_progress.contains(key) {
            return error(409, "REQUEST_IN_PROGRESS", "original request still running");
        }
        if let Some((stored_body, status, stored)) = s.idempotency.get(key) {
            return if *stored_body == body {
                (*status, stored.clone())
            } else {
                error(422, "IDEMPOTENCY_KEY_REUSED", "same key, different body")
            };
        }
    }
    let answer = create_once(s, v2, &body);
    if let Some(key) = key {
        s.idempotency
            .insert(key, (body, answer.0, answer.1.clone()));
    }
    answer
}

fn create_once(s: &mut State, v2: bool, body: &Value) -> (u16, Value) {
    if let Some((status, code)) = s.create_error {
        return error(status, code, "refused");
    }
    let Some(catalog_product_id) = body.get("catalog_product_id").and_then(Value::as_u64) else {
        return error(422, "VALIDATION_ERROR", "catalog_product_id is required");
    };
    let max_idr = match body.get("max_price") {
        None => i64::MAX,
        Some(Value::Number(n)) if !v2 => n.as_i64().unwrap_or(0),
        // v2: USD string, floor-converted to IDR.
        Some(Value::String(usd)) if v2 => {
            let (whole, fraction) = usd.split_once('.').unwrap_or((usd, ""));
            let fraction = format!("{fraction:0<4}");
            let ten_thousandths: i64 = whole.parse::<i64>().unwrap_or(0) * 10_000
                + fraction[..4].parse::<i64>().unwrap_or(0);
            ten_thousandths * RATE / 10_000
        }
        Some(_) => return error(422, "VALIDATION_ERROR", "max_price has the wrong type"),
    };
    let product = s
        .products
        .iter()
        .filter(|p| {
            p.catalog_product_id == catalog_product_id
                && p.available > 0
                && p.active
                && p.price_idr <= max_idr
        })
        .min_by_key(|p| p.price_idr)
        .cloned();
    let Some(product) = product else {
        if s.create_fails_softly {
            return envelope(200, json!({ "orders": [], "failed_count": 1 }), v2);
        }
        return error(422, "NO_OFFER_AVAILABLE", "no matching offer");
    };
    if s.balance_idr < product.price_idr {
        return error(409, "INSUFFICIENT_BALANCE", "balance too low");
    }
    s.balance_idr -= product.price_idr;
    s.charges += 1;
    let id = s.next_order;
    s.next_order += 1;
    let now = Utc::now();
    let scheduled_code = (!s.code_unclassified).then(|| "482913".to_owned());
    let order = Order {
        id,
        status: "ACTIVE",
        phone: format!("+628123456{:04}", id % 10_000),
        product_id: product.id,
        catalog_product_id,
        amount_idr: product.price_idr,
        otp_code: None,
        otp_message: None,
        sms_revision: 0,
        created_at: now,
        expires_at: now + chrono::Duration::minutes(20),
        cancel_available_at: now + s.cancel_window,
        polls: 0,
        scheduled: vec![(
            s.code_after_polls,
            scheduled_code,
            "Your code is 482913".into(),
        )],
    };
    let json = order_json(&order, v2);
    s.orders.insert(id, order);
    envelope(200, json!({ "orders": [json], "failed_count": 0 }), v2)
}
