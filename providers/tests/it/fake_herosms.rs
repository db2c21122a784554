//! A fake HeroSMS: a real HTTP server on loopback speaking the legacy
//! SMS-Activate surface (`/stubs/handler_api.php`, `action` and `api_key` in the
//! query string, plain-token and JSON answers, the HTTP statuses of the fact
//! sheet's sections 1.7 and 1.11), with switchable behaviours per test.
//!
//! It simulates activations (buy, polls until a code arrives, resends that bring
//! a new SMS with a new `dateTime` but the same code, a call instead of an SMS,
//! finish, cancel with its refusals) and can answer any action with a canned
//! reply instead. Every request is recorded without its key.
//!
//! Use from another test binary with `#[path = "fake/herosms.rs"] mod fake_herosms;`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use nexus_tests::loopback::LoopbackServer;
use serde_json::{json, Value};

/// The key the fake accepts.
pub const KEY: &str = "hs-test-key-7f3c2a";
/// The handler path.
pub const PATH: &str = "/stubs/handler_api.php";

/// How the fake signals errors (fact sheet 1.1: all three styles coexist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// Non-2xx status with `{title, details, info?}`.
    Json,
    /// HTTP 200 with the plain token (legacy catalog actions).
    Token200,
    /// The JSON style's status with a plain token body (seen for 400 +
    /// `EARLY_CANCEL_DENIED`).
    TokenStatus,
}

/// How `getStatusV2` answers for a cancelled activation (open question 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelledStatus {
    /// 200 `STATUS_CANCEL`.
    PlainToken,
    /// 409 `{"title":"STATUS_CANCEL",…}`.
    Json409,
}

/// Shapes of `getActiveActivations` (1.6 and 6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveShape {
    /// HeroSMS: `{"status":"success","data":[…],"activeActivations":{row,rows}}`.
    Data,
    /// SMS-Activate: `{"status":"success","activeActivations":[…]}`.
    Legacy,
    /// A bare list.
    BareList,
}

/// A canned reply for one action.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
}

impl Canned {
    pub fn new(status: u16, body: &str) -> Canned {
        Canned {
            status,
            body: body.to_owned(),
            retry_after: None,
        }
    }
}

/// What the fake does. `Behaviour::default()` is a healthy upstream.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub error_style: ErrorStyle,
    pub balance: String,
    /// The `getPrices` body (filtered by `country`/`service` like the real one).
    pub prices: Value,
    /// The price of a number, as the JSON text sent in `activationCost`.
    pub cost: String,
    pub no_numbers: bool,
    pub no_balance: bool,
    /// Polls that still wait before the first message arrives.
    pub code_after_polls: u32,
    pub code: String,
    pub text: String,
    /// Send `"code":""` and let the client find the code in the text.
    pub empty_code: bool,
    /// The code comes by a voice call (`call` object) instead of an SMS.
    pub by_call: bool,
    /// Cancel is refused as too early.
    pub early_cancel_denied: bool,
    /// `activationId` as a JSON integer instead of a string.
    pub int_activation_id: bool,
    pub cancelled_status: CancelledStatus,
    pub active_shape: ActiveShape,
    /// Answer every request after this long.
    pub delay: Option<Duration>,
    /// Do the work at once, then answer this late (a buy that times out at the
    /// client has still bought its number).
    pub late_answer: Option<Duration>,
    /// `getNumberV2` only: do the work at once (a number is bought, or
    /// refused), then answer this late — a buy that times out at the client.
    pub hang_buys: Option<Duration>,
    /// Write activation times from the real clock in a zone this many minutes
    /// east of UTC, without the zone (as HeroSMS does); `None`: the fixture's
    /// fixed times.
    pub zone_offset_minutes: Option<i64>,
    /// Content types swapped (JSON as `text/html`, tokens as JSON).
    pub wrong_content_type: bool,
    /// Action → canned reply, instead of the simulation.
    pub canned: HashMap<String, Canned>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            error_style: ErrorStyle::Json,
            balance: "0.5632".into(),
            prices: default_prices(),
            cost: "0.1200".into(),
            no_numbers: false,
            no_balance: false,
            code_after_polls: 0,
            code: "482913".into(),
            text: "Telegram code: 482913".into(),
            empty_code: false,
            by_call: false,
            early_cancel_denied: false,
            int_activation_id: false,
            cancelled_status: CancelledStatus::PlainToken,
            active_shape: ActiveShape::Data,
            delay: None,
            late_answer: None,
            hang_buys: None,
            zone_offset_minutes: None,
            wrong_content_type: false,
            canned: HashMap::new(),
        }
    }
}

/// `getPrices`: real US (187) and virtual US (12), Indonesia (6) with an
/// unknown service, an unknown id (999) and Kosovo (203, outside ISO).
pub fn default_prices() -> Value {
    serde_json::from_str(
        r#"{
        "187": {"tg": {"cost": 0.25, "count": 120, "physicalCount": 80},
                "wa": {"cost": 0.5, "count": 10}},
        "12":  {"tg": {"cost": 0.05, "count": 999, "physicalCount": 999}},
        "6":   {"tg": {"cost": 0.1200, "count": 5000, "physicalCount": 0},
                "zz_new_service": {"cost": 0.3, "count": 1, "physicalCount": 1}},
        "999": {"tg": {"cost": 0.2, "count": 1, "physicalCount": 1}},
        "203": {"tg": {"cost": 0.2, "count": 1, "physicalCount": 1}}
    }"#,
    )
    .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationState {
    Active,
    Finished,
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub date_time: String,
    pub code: String,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Activation {
    pub id: String,
    pub phone: String,
    pub service: String,
    /// The SMS-Activate country id.
    pub country: String,
    /// `activationTime` as written (zone-less).
    pub activation_time: String,
    pub state: ActivationState,
    pub polls: u32,
    pub messages: Vec<Message>,
    /// The poll count when a resend was asked for.
    pub resend_at_poll: Option<u32>,
}

/// One request as the fake saw it: the parameters without `api_key`, and the key.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub params: HashMap<String, String>,
    pub key: Option<String>,
}

impl Seen {
    pub fn action(&self) -> &str {
        self.params.get("action").map(String::as_str).unwrap_or("")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub behaviour: Behaviour,
    pub activations: Vec<Activation>,
    pub seen: Vec<Seen>,
    next_id: u64,
}

impl FakeState {
    /// Adds an active activation without a buy (for the active-list tests).
    pub fn seed(&mut self, service: &str) -> String {
        self.seed_in(service, "6")
    }

    /// Adds an active activation of `service` in `country` (SMS-Activate id),
    /// bought now.
    pub fn seed_in(&mut self, service: &str, country: &str) -> String {
        let at = self.now_written(0);
        self.seed_at(service, country, &at)
    }

    /// Adds an active activation whose `activationTime` is `activation_time`.
    pub fn seed_at(&mut self, service: &str, country: &str, activation_time: &str) -> String {
        self.next_id += 1;
        let id = (401_000_110 + self.next_id).to_string();
        self.activations.push(Activation {
            id: id.clone(),
            phone: format!("62812{:08}", self.next_id),
            service: service.to_owned(),
            country: country.to_owned(),
            activation_time: activation_time.to_owned(),
            state: ActivationState::Active,
            polls: 0,
            messages: Vec::new(),
            resend_at_poll: None,
        });
        id
    }

    /// "Now" plus `shift_seconds` as HeroSMS writes it (zone-less, in its
    /// zone), or the fixture's fixed time.
    pub fn now_written(&self, shift_seconds: i64) -> String {
        match self.behaviour.zone_offset_minutes {
            Some(minutes) => (chrono::Utc::now()
                + chrono::Duration::minutes(minutes)
                + chrono::Duration::seconds(shift_seconds))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
            None => "2026-05-11 09:00:00".to_owned(),
        }
    }

    fn activation(&mut self, id: Option<&String>) -> Option<&mut Activation> {
        let id = id?;
        self.activations.iter_mut().find(|a| &a.id == id)
    }
}

/// A running fake; stops when dropped.
pub struct FakeHeroSms {
    /// The whole handler URL.
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
    _server: LoopbackServer,
}

impl FakeHeroSms {
    pub fn start(behaviour: Behaviour) -> FakeHeroSms {
        let state = Arc::new(Mutex::new(FakeState {
            behaviour,
            ..FakeState::default()
        }));
        let data = web::Data::from(state.clone());
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(data.clone()).route(PATH, web::to(handle));
        });
        FakeHeroSms {
            url: server.url(PATH),
            state,
            _server: server,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Replaces the behaviour between calls.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state().behaviour);
    }

    /// Answers `action` with a canned reply from now on.
    pub fn can(&self, action: &str, canned: Canned) {
        self.state()
            .behaviour
            .canned
            .insert(action.to_owned(), canned);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    pub fn last_seen(&self) -> Seen {
        self.state()
            .seen
            .last()
            .cloned()
            .expect("a request was made")
    }
}

fn reply(status: u16, body: String, json: bool, wrong_content_type: bool) -> HttpResponse {
    let content_type = match (json, wrong_content_type) {
        (true, false) => "application/json",
        (true, true) => "text/html; charset=utf-8",
        (false, false) => "text/plain; charset=utf-8",
        (false, true) => "application/json",
    };
    HttpResponse::build(StatusCode::from_u16(status).unwrap())
        .content_type(content_type)
        .body(body)
}

/// An answer of the simulation, rendered when the lock is released.
enum Answer {
    Token(String),
    Json(Value),
    /// An error token: status for the JSON style, details, info.
    Error {
        status: u16,
        token: &'static str,
        payload: Option<String>,
        info: Option<Value>,
    },
    Raw(Canned),
}

fn error(status: u16, token: &'static str) -> Answer {
    Answer::Error {
        status,
        token,
        payload: None,
        info: None,
    }
}

async fn handle(
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<Mutex<FakeState>>,
) -> HttpResponse {
    let mut params = query.into_inner();
    let key = params.remove("api_key");
    let (delay, late_answer, style, wrong_type) = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            method: request.method().to_string(),
            params: params.clone(),
            key: key.clone(),
        });
        let b = &state.behaviour;
        (b.delay, b.late_answer, b.error_style, b.wrong_content_type)
    };
    if let Some(delay) = delay {
        actix_web::rt::time::sleep(delay).await;
    }
    let answer = {
        let mut state = state.lock().unwrap();
        simulate(&mut state, &params, key.as_deref())
    };
    if let Some(late) = late_answer {
        actix_web::rt::time::sleep(late).await;
    }
    if params.get("action").map(String::as_str) == Some("getNumberV2") {
        let hang = state.lock().unwrap().behaviour.hang_buys;
        if let Some(hang) = hang {
            actix_web::rt::time::sleep(hang).await;
        }
    }
    match answer {
        Answer::Raw(canned) => {
            let mut response = HttpResponse::build(StatusCode::from_u16(canned.status).unwrap());
            if let Some(seconds) = canned.retry_after {
                response.insert_header(("Retry-After", seconds.to_string()));
            }
            response.content_type("text/html").body(canned.body)
        }
        Answer::Token(token) => reply(200, token, false, wrong_type),
        Answer::Json(value) => reply(200, value.to_string(), true, wrong_type),
        Answer::Error {
            status,
            token,
            payload,
            info,
        } => {
            let plain = match &payload {
                Some(payload) => format!("{token}:{payload}"),
                None => token.to_owned(),
            };
            match style {
                ErrorStyle::Token200 => reply(200, plain, false, wrong_type),
                ErrorStyle::TokenStatus => reply(status, plain, false, wrong_type),
                ErrorStyle::Json => {
                    let mut body = json!({"title": token, "details": format!("{token} (fake)")});
                    if let Some(info) = info {
                        body["info"] = info;
                    }
                    reply(status, body.to_string(), true, wrong_type)
                }
            }
        }
    }
}

fn simulate(state: &mut FakeState, params: &HashMap<String, String>, key: Option<&str>) -> Answer {
    let action = params.get("action").cloned().unwrap_or_default();
    if let Some(canned) = state.behaviour.canned.get(&action) {
        return Answer::Raw(canned.clone());
    }
    match key {
        None | Some("") => return error(401, "NO_KEY"),
        Some(KEY) => {}
        Some(_) => return error(401, "BAD_KEY"),
    }
    let id = params.get("id");
    match action.as_str() {
        "getBalance" => Answer::Token(format!("ACCESS_BALANCE:{}", state.behaviour.balance)),
        "getPrices" => Answer::Json(prices(&state.behaviour.prices, params)),
        "getNumberV2" => buy(state, params),
        "getStatusV2" => match state.activation(id) {
            None => error(404, "NO_ACTIVATION"),
            Some(_) => status_v2(state, id.unwrap()),
        },
        "getStatus" => match state.activation(id) {
            None => error(404, "NO_ACTIVATION"),
            Some(_) => status_v1(state, id.unwrap()),
        },
        "setStatus" => set_status(state, id, params.get("status").map(String::as_str)),
        "getActiveActivations" => active(state, params),
        _ => error(400, "BAD_ACTION"),
    }
}

fn prices(all: &Value, params: &HashMap<String, String>) -> Value {
    let mut out = serde_json::Map::new();
    for (country, services) in all.as_object().unwrap() {
        if params.get("country").is_some_and(|c| c != country) {
            continue;
        }
        let mut kept = serde_json::Map::new();
        for (service, entry) in services.as_object().unwrap() {
            if params.get("service").is_none_or(|s| s == service) {
                kept.insert(service.clone(), entry.clone());
            }
        }
        if !kept.is_empty() {
            out.insert(country.clone(), Value::Object(kept));
        }
    }
    Value::Object(out)
}

fn buy(state: &mut FakeState, params: &HashMap<String, String>) -> Answer {
    let b = state.behaviour.clone();
    if params.contains_key("fixedPrice") {
        return error(400, "BAD_ACTION");
    }
    if b.no_numbers {
        return error(404, "NO_NUMBERS");
    }
    if b.no_balance {
        return error(402, "NO_BALANCE");
    }
    let cost: f64 = b.cost.parse().unwrap();
    if let Some(max) = params.get("maxPrice") {
        if max.parse::<f64>().unwrap() < cost {
            return Answer::Error {
                status: 400,
                token: "WRONG_MAX_PRICE",
                payload: Some(b.cost.clone()),
                info: Some(json!({"min": cost})),
            };
        }
    }
    let service = params.get("service").cloned().unwrap_or_default();
    let country = params.get("country").cloned().unwrap_or_default();
    let id = state.seed_in(&service, &country);
    let bought = state.activations.last().unwrap().clone();
    let (phone, start) = (bought.phone, bought.activation_time);
    let end = match b.zone_offset_minutes {
        Some(_) => state.now_written(20 * 60),
        None => "2026-05-11 09:20:00".to_owned(),
    };
    let id_json = if b.int_activation_id {
        id.clone()
    } else {
        format!("\"{id}\"")
    };
    // Written by hand so `activationCost` keeps its trailing zeros (`0.1200`).
    let body = format!(
        r#"{{"activationId":{id_json},"phoneNumber":"{phone}","activationCost":{cost},"currency":840,"countryCode":6,"countryPhoneCode":62,"canGetAnotherSms":true,"activationTime":"{start}","activationEndTime":"{end}","activationOperator":"telkomsel","serviceCode":"{service}","subtype":1}}"#,
        cost = b.cost
    );
    Answer::Json(serde_json::from_str(&body).unwrap())
}

/// One poll: counts it, and lets a message arrive when it is due.
fn advance(state: &mut FakeState, id: &String) -> Activation {
    let b = state.behaviour.clone();
    let activation = state.activation(Some(id)).unwrap();
    activation.polls += 1;
    if activation.state == ActivationState::Active {
        let first_due = activation.messages.is_empty() && activation.polls > b.code_after_polls;
        // After a resend, the old message is still shown once; the new one
        // (same code, new dateTime) comes on the second poll.
        let resend_due = activation
            .resend_at_poll
            .is_some_and(|at| activation.polls >= at + 2);
        if first_due || resend_due {
            let n = activation.messages.len() as u32;
            activation.messages.push(Message {
                date_time: format!("2026-05-11 09:{:02}:10", 3 + n),
                code: b.code.clone(),
                text: b.text.clone(),
            });
            activation.resend_at_poll = None;
        }
    }
    activation.clone()
}

fn status_v2(state: &mut FakeState, id: &String) -> Answer {
    let b = state.behaviour.clone();
    let activation = advance(state, id);
    if activation.state == ActivationState::Cancelled {
        return match b.cancelled_status {
            CancelledStatus::PlainToken => Answer::Token("STATUS_CANCEL".into()),
            CancelledStatus::Json409 => Answer::Raw(Canned::new(
                409,
                r#"{"title":"STATUS_CANCEL","details":"activation cancelled"}"#,
            )),
        };
    }
    let Some(message) = activation.messages.last() else {
        return Answer::Json(json!({"verificationType": 0, "sms": null, "call": null}));
    };
    let code = if b.empty_code {
        ""
    } else {
        message.code.as_str()
    };
    if b.by_call {
        Answer::Json(json!({"verificationType": 2, "sms": null, "call": {
            "from": "+441234567890", "text": message.text, "code": code,
            "dateTime": message.date_time, "url": "https://example.invalid/rec.mp3", "parsingCount": 1}}))
    } else {
        Answer::Json(json!({"verificationType": 0, "call": null, "sms": {
            "dateTime": message.date_time, "code": code, "text": message.text}}))
    }
}

fn status_v1(state: &mut FakeState, id: &String) -> Answer {
    let activation = advance(state, id);
    match (activation.state, activation.messages.last()) {
        (ActivationState::Cancelled, _) => Answer::Token("STATUS_CANCEL".into()),
        (_, Some(message)) => Answer::Token(format!("STATUS_OK:{}", message.code)),
        (_, None) => Answer::Token("STATUS_WAIT_CODE".into()),
    }
}

fn set_status(state: &mut FakeState, id: Option<&String>, status: Option<&str>) -> Answer {
    let b = state.behaviour.clone();
    let token_style = b.error_style != ErrorStyle::Json;
    let Some(activation) = state.activation(id) else {
        return error(404, "NO_ACTIVATION");
    };
    let active = activation.state == ActivationState::Active;
    match status {
        Some("3") if active => {
            activation.resend_at_poll = Some(activation.polls);
            Answer::Token("ACCESS_RETRY_GET".into())
        }
        Some("6") if active => {
            activation.state = ActivationState::Finished;
            Answer::Token("ACCESS_ACTIVATION".into())
        }
        Some("8") if active && b.early_cancel_denied => Answer::Error {
            status: 409,
            token: "EARLY_CANCEL_DENIED",
            payload: None,
            info: Some(json!({"minActivationTime": 120})),
        },
        Some("8") if active && !activation.messages.is_empty() => error(409, "OTP_RECEIVED"),
        Some("8") if active => {
            activation.state = ActivationState::Cancelled;
            Answer::Token("ACCESS_CANCEL".into())
        }
        Some("3" | "6" | "8") if token_style => error(409, "STATUS_CANCEL"),
        Some("3" | "6" | "8") => error(409, "ACTIVATION_NOT_ACTIVE"),
        _ => error(400, "BAD_STATUS"),
    }
}

fn active(state: &mut FakeState, params: &HashMap<String, String>) -> Answer {
    let start: usize = params
        .get("start")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit: usize = params
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let shape = state.behaviour.active_shape;
    let items: Vec<Value> = state
        .activations
        .iter()
        .filter(|a| a.state == ActivationState::Active)
        .skip(start)
        .take(limit)
        .map(|a| {
            let sms = a.messages.last();
            let status = if sms.is_some() { "2" } else { "4" };
            if shape == ActiveShape::Legacy {
                // The SMS-Activate original: numbers as numbers, `smsCode` a list.
                let number = |text: &str| text.parse::<u64>().map_or(json!(text), |n| json!(n));
                return json!({"activationId": number(&a.id), "serviceCode": a.service,
                    "phoneNumber": a.phone, "activationStatus": number(status),
                    "activationTime": a.activation_time, "countryCode": number(&a.country),
                    "activationCost": "0.12", "smsCode": sms.map(|m| vec![m.code.clone()]),
                    "smsText": sms.map(|m| m.text.clone())});
            }
            json!({"activationId": a.id, "serviceCode": a.service, "phoneNumber": a.phone,
                   "activationStatus": status,
                   "activationTime": a.activation_time, "countryCode": a.country,
                   "activationCost": 0.12, "smsCode": sms.map(|m| m.code.clone()),
                   "smsText": sms.map(|m| m.text.clone()), "currency": 840})
        })
        .collect();
    if items.is_empty() && start == 0 && shape == ActiveShape::Legacy {
        return Answer::Json(json!({"status": "error", "error": "NO_ACTIVATIONS"}));
    }
    Answer::Json(match shape {
        ActiveShape::Data => json!({"status": "success", "data": items.clone(),
            "activeActivations": {"num_rows": items.len(), "row": items.first(), "rows": []}}),
        ActiveShape::Legacy => json!({"status": "success", "activeActivations": items}),
        ActiveShape::BareList => Value::Array(items),
    })
}
