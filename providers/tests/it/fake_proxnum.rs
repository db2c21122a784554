//! A fake Proxnum reseller API (`/api/v1`): Bearer token, JSON bodies, the
//! documented success shapes and error envelopes (and the unconfirmed variants:
//! `{"error":{…}}`, 200 vs 404 errors, HTML for a bad token), over real HTTP on
//! 127.0.0.1 with switchable behaviours. Runs on its own thread.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use nexus_tests::loopback::LoopbackServer;
use serde_json::{json, Value};

#[derive(Clone, Debug, Default)]
pub struct Activation {
    pub id: u64,
    pub phone: String,
    pub service: String,
    pub country: u64,
    /// `pending`, `completed`, `cancelled`, `expired`.
    pub status: String,
    pub code: Option<String>,
    pub msg: String,
    pub polls: u32,
    /// (deliver on or after this status poll, code, message).
    pub scheduled: Vec<(u32, String, String)>,
    /// `date_created` as written (zone-less, in the fake's zone).
    pub created: String,
}

/// Shapes of the paginated `GET /resell/activations` (documented only as
/// "paginated"; these are the usual Laravel renderings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListShape {
    /// `{"success":true,"activations":{"current_page","data":[…],"last_page",…}}`
    Nested,
    /// `{"success":true,"data":[…],"current_page","last_page","per_page","total"}`
    Flat,
    /// `{"data":[…],"meta":{"current_page","last_page"},"links":{…}}`
    Resource,
    /// `{"success":true,"activations":[…]}` (no paging fields)
    PlainList,
}

/// How a refused token is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadToken {
    /// 401 with an HTML page.
    Html401,
    /// 200 with an HTML page (a login page).
    Html200,
    /// 401 `{"success":false,"code":"unauthenticated",…}`.
    Json401,
}

pub struct State {
    pub token: String,
    pub bad_token: BadToken,
    /// The HTTP status of error envelopes (undocumented: 200 or 4xx).
    pub error_status: u16,
    /// Use `{"error":{"code","message"}}` instead of the flat envelope.
    pub nested_errors: bool,
    /// country id (text) → service → (base, sell, available) as raw JSON numbers.
    pub prices: Vec<(String, String, &'static str, &'static str, u64)>,
    /// `/user/balance` body.
    pub balance_body: Value,
    /// The error code a buy answers with, if any.
    pub buy_error: Option<&'static str>,
    pub next_id: u64,
    pub next_activation: u64,
    pub amount_paid: &'static str,
    pub activations: HashMap<String, Activation>,
    pub code_after_polls: u32,
    pub code: String,
    /// Put the code only in `msg` (no `code` field).
    pub code_in_msg_only: bool,
    /// Resend moves the order to a new activation id.
    pub resend_new_id: bool,
    pub resend_after_polls: u32,
    /// Refuse cancels even without a code (too early).
    pub refuse_cancel: bool,
    /// The waiting status string.
    pub waiting_status: &'static str,
    /// "METHOD /path" → (status, raw body).
    pub answers: HashMap<String, (u16, String)>,
    pub delay: Option<Duration>,
    /// A buy does its work at once (buys, or refuses), then answers this late.
    pub hang_buys: Option<Duration>,
    /// The fake's zone: minutes east of UTC; times are written without it.
    pub zone_offset_minutes: i64,
    pub list_shape: ListShape,
    /// (method, path, authorization header, body).
    pub requests: Vec<(String, String, Option<String>, Value)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            token: "T".into(),
            bad_token: BadToken::Html401,
            error_status: 200,
            nested_errors: false,
            prices: vec![
                ("6".into(), "tg".into(), "0.0334", "0.1114892", 42),
                ("6".into(), "wa".into(), "0.05", "0.2", 0),
                ("187".into(), "tg".into(), "0.2", "0.31", 7),
                ("999".into(), "tg".into(), "0.2", "0.31", 7),
                ("6".into(), "zz_not_a_service".into(), "0.2", "0.31", 7),
            ],
            balance_body: json!({ "success": true, "balance": 12.5 }),
            buy_error: None,
            next_id: 812,
            next_activation: 5500112233,
            amount_paid: "0.0975",
            activations: HashMap::new(),
            code_after_polls: 2,
            code: "482913".into(),
            code_in_msg_only: false,
            resend_new_id: false,
            resend_after_polls: 1,
            refuse_cancel: false,
            waiting_status: "pending",
            answers: HashMap::new(),
            delay: None,
            hang_buys: None,
            zone_offset_minutes: 0,
            list_shape: ListShape::Nested,
            requests: Vec::new(),
        }
    }
}

impl State {
    /// Now plus `shift_seconds`, written as Proxnum does (zone-less).
    pub fn now_written(&self, shift_seconds: i64) -> String {
        (chrono::Utc::now()
            + chrono::Duration::minutes(self.zone_offset_minutes)
            + chrono::Duration::seconds(shift_seconds))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
    }

    /// Adds a waiting activation bought `age_seconds` ago without a buy call
    /// (someone else's, or an order's from before a restart); its activation id.
    pub fn seed(&mut self, service: &str, country: u64, age_seconds: i64) -> String {
        let (id, activation_id) = (self.next_id, self.next_activation.to_string());
        self.next_id += 1;
        self.next_activation += 1;
        let created = self.now_written(-age_seconds);
        self.activations.insert(
            activation_id.clone(),
            Activation {
                id,
                phone: format!("62812998877{:02}", id % 100),
                service: service.to_owned(),
                country,
                status: self.waiting_status.to_owned(),
                msg: "Waiting Sms".into(),
                created,
                ..Activation::default()
            },
        );
        activation_id
    }

    pub fn calls(&self, method: &str, path: &str) -> usize {
        self.requests
            .iter()
            .filter(|(m, p, _, _)| m == method && p == path)
            .count()
    }

    pub fn last(&self, method: &str, path: &str) -> Option<(Option<String>, Value)> {
        self.requests
            .iter()
            .rev()
            .find(|(m, p, _, _)| m == method && p == path)
            .map(|(_, _, auth, body)| (auth.clone(), body.clone()))
    }
}

pub struct FakeProxnum {
    /// `http://127.0.0.1:<port>/api/v1`
    pub base: String,
    pub state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl FakeProxnum {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = web::Data::from(state.clone());
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(shared.clone())
                .default_service(web::to(handle));
        });
        Self {
            base: server.url("/api/v1"),
            state,
            _server: server,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn respond(status: u16, body: impl Into<String>, json_type: bool) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap())
        .content_type(if json_type {
            "application/json"
        } else {
            "text/html; charset=UTF-8"
        })
        .body(body.into())
}

fn ok(value: Value) -> HttpResponse {
    respond(200, value.to_string(), true)
}

fn failure(s: &State, code: &str, message: &str) -> HttpResponse {
    let body = if s.nested_errors {
        json!({ "error": { "code": code, "message": message } })
    } else {
        json!({ "success": false, "code": code, "message": message })
    };
    respond(s.error_status, body.to_string(), true)
}

/// Raw JSON numbers (as Proxnum writes them, up to 7 decimals).
fn raw_number(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let method = req.method().as_str().to_owned();
    let path = req
        .path()
        .strip_prefix("/api/v1")
        .unwrap_or(req.path())
        .to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let delay = {
        let mut s = state.lock().unwrap();
        s.requests
            .push((method.clone(), path.clone(), auth.clone(), body.clone()));
        s.delay
    };
    if let Some(delay) = delay {
        actix_web::rt::time::sleep(delay).await;
    }
    let (response, hang) = {
        let mut s = state.lock().unwrap();
        let response = simulate(&mut s, &method, &path, auth.as_deref(), &body, &query);
        let buying = method == "POST" && path == "/resell/virtual/buy";
        (response, s.hang_buys.filter(|_| buying))
    };
    if let Some(hang) = hang {
        actix_web::rt::time::sleep(hang).await;
    }
    response
}

/// One answer of the simulation, under the state's lock.
fn simulate(
    s: &mut State,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &Value,
    query: &HashMap<String, String>,
) -> HttpResponse {
    if let Some((status, raw)) = s.answers.get(&format!("{method} {path}")) {
        return respond(
            *status,
            raw.clone(),
            raw.trim_start().starts_with(['{', '[']),
        );
    }
    if auth != Some(format!("Bearer {}", s.token).as_str()) {
        return match s.bad_token {
            BadToken::Html401 => respond(401, "<!DOCTYPE html><html><body>Unauthorized</body></html>", false),
            BadToken::Html200 => respond(200, "<!DOCTYPE html><html><body>Login</body></html>", false),
            BadToken::Json401 => {
                respond(401, json!({ "success": false, "code": "unauthenticated", "message": "Unauthenticated." }).to_string(), true)
            }
        };
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["prices"]) => {
            let mut prices = serde_json::Map::new();
            for (country, service, base, sell, available) in &s.prices {
                if query.get("country").is_some_and(|c| c != country)
                    || query.get("service").is_some_and(|v| v != service)
                {
                    continue;
                }
                let entry = prices.entry(country.clone()).or_insert_with(|| json!({}));
                entry[service.as_str()] = json!({ "base_price": raw_number(base), "sell_price": raw_number(sell), "available": available });
            }
            ok(json!({ "success": true, "prices": prices }))
        }
        ("GET", ["resell", "price"]) => {
            let (country, service) = (
                query.get("country").cloned().unwrap_or_default(),
                query.get("service").cloned().unwrap_or_default(),
            );
            match s
                .prices
                .iter()
                .find(|(c, v, ..)| *c == country && *v == service)
            {
                Some((_, _, base, sell, _)) => ok(
                    json!({ "country": country, "service": service, "base_price": raw_number(base), "sell_price": raw_number(sell) }),
                ),
                None => failure(s, "invalid_service", "unknown service/country"),
            }
        }
        ("GET", ["user", "balance"]) => ok(s.balance_body.clone()),
        ("POST", ["resell", "virtual", "buy"]) => {
            if let Some(code) = s.buy_error {
                return failure(s, code, "refused");
            }
            let service = body["service"].as_str().unwrap_or_default().to_owned();
            let country = body["country"].as_u64().unwrap_or(u64::MAX);
            if !s
                .prices
                .iter()
                .any(|(c, v, ..)| *c == country.to_string() && *v == service)
            {
                return failure(s, "invalid_service", "unknown service/country");
            }
            let (id, activation_id) = (s.next_id, s.next_activation.to_string());
            s.next_id += 1;
            s.next_activation += 1;
            let phone = format!("62812998877{:02}", id % 100);
            let (after, code) = (s.code_after_polls, s.code.clone());
            let msg = format!("Telegram code {code}");
            let status = s.waiting_status.to_owned();
            let amount_paid = raw_number(s.amount_paid);
            let created = s.now_written(0);
            s.activations.insert(
                activation_id.clone(),
                Activation {
                    id,
                    phone: phone.clone(),
                    service,
                    country,
                    status,
                    msg: "Waiting Sms".into(),
                    scheduled: vec![(after, code, msg)],
                    created: created.clone(),
                    ..Activation::default()
                },
            );
            ok(json!({ "success": true, "activation": {
                "id": id, "phone": phone, "activation_id": activation_id, "msg": "Waiting Sms",
                "date_created": created, "amount_paid": amount_paid, "status": 1 } }))
        }
        ("GET", ["resell", "activations"]) => {
            let page: usize = query
                .get("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1);
            let per_page: usize = query
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(15)
                .max(1);
            // Newest first, every status (a history, not only the open ones).
            let mut all: Vec<(&String, &Activation)> = s.activations.iter().collect();
            all.sort_by_key(|(activation_id, _)| {
                std::cmp::Reverse(activation_id.parse::<u64>().unwrap_or(0))
            });
            let total = all.len();
            let last_page = total.div_ceil(per_page).max(1);
            let data: Vec<Value> = all
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(activation_id, a)| {
                    json!({
                    "id": a.id, "activation_id": activation_id, "phone": a.phone,
                    "service": a.service, "country": a.country, "status": a.status,
                    "msg": a.msg, "amount_paid": raw_number(s.amount_paid),
                    "date_created": a.created })
                })
                .collect();
            ok(match s.list_shape {
                ListShape::Nested => json!({ "success": true, "activations": {
                    "current_page": page, "data": data, "last_page": last_page,
                    "per_page": per_page, "total": total } }),
                ListShape::Flat => json!({ "success": true, "data": data, "current_page": page,
                    "last_page": last_page, "per_page": per_page, "total": total }),
                ListShape::Resource => json!({ "data": data,
                    "meta": { "current_page": page, "last_page": last_page, "per_page": per_page, "total": total },
                    "links": { "next": null } }),
                ListShape::PlainList => json!({ "success": true, "activations": data }),
            })
        }
        ("GET", ["resell", "virtual", id, "status"]) => {
            let code_in_msg_only = s.code_in_msg_only;
            let Some(activation) = s.activations.get_mut(*id) else {
                return failure(s, "not_found", "activation not found");
            };
            activation.polls += 1;
            let polls = activation.polls;
            if activation.status != "cancelled" && activation.status != "expired" {
                let due: Vec<_> = activation
                    .scheduled
                    .iter()
                    .filter(|(at, ..)| *at <= polls)
                    .cloned()
                    .collect();
                activation.scheduled.retain(|(at, ..)| *at > polls);
                if let Some((_, code, msg)) = due.last() {
                    activation.status = "completed".into();
                    activation.code = Some(code.clone());
                    activation.msg = msg.clone();
                }
            }
            let mut answer = json!({ "success": true, "status": activation.status, "activation": {
                "id": activation.id, "phone": activation.phone, "activation_id": id, "msg": activation.msg } });
            if let (Some(code), false) = (&activation.code, code_in_msg_only) {
                answer["code"] = json!(code);
            }
            ok(answer)
        }
        ("POST", ["resell", "virtual", "resend"]) => {
            let id = body["activation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let (new_id, after) = (s.resend_new_id, s.resend_after_polls);
            let next_activation = s.next_activation;
            let Some(activation) = s.activations.get_mut(&id) else {
                return failure(s, "not_found", "activation not found");
            };
            let code = "551234".to_owned();
            let msg = format!("Telegram code {code}");
            if new_id {
                let mut moved = Activation {
                    id: activation.id,
                    phone: activation.phone.clone(),
                    service: activation.service.clone(),
                    country: activation.country,
                    status: "pending".into(),
                    msg: "Waiting Sms".into(),
                    ..Activation::default()
                };
                moved.scheduled.push((after, code, msg));
                activation.status = "expired".into();
                let new_activation_id = next_activation.to_string();
                let answer = json!({ "success": true, "activation": { "id": moved.id, "activation_id": new_activation_id, "phone": moved.phone } });
                s.next_activation += 1;
                s.activations.insert(new_activation_id, moved);
                ok(answer)
            } else {
                let at = activation.polls + after;
                activation.scheduled.push((at, code, msg));
                ok(
                    json!({ "success": true, "activation": { "id": activation.id, "activation_id": id, "phone": activation.phone } }),
                )
            }
        }
        ("POST", ["resell", "virtual", "cancel"]) => {
            let id = body["activation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let refuse = s.refuse_cancel;
            let Some(activation) = s.activations.get_mut(&id) else {
                return failure(s, "not_found", "activation not found");
            };
            if activation.code.is_some() {
                return failure(
                    s,
                    "cancel_rejected",
                    "cannot cancel: code already delivered",
                );
            }
            if refuse {
                return failure(s, "cancel_rejected", "cannot cancel yet");
            }
            activation.status = "cancelled".into();
            ok(json!({ "success": true, "code": "cancel_accepted" }))
        }
        _ => respond(404, "<html><body>Not Found</body></html>", false),
    }
}
