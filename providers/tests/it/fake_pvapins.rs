//! A fake PVAPins: the real scripts, query parameters and answers (plain
//! sentences or the JSON variant), over real HTTP on 127.0.0.1, with switchable
//! behaviours. It runs on its own thread with its own actix system.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_tests::loopback::LoopbackServer;

/// Which answer format the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// One number sold.
#[derive(Clone, Debug, Default)]
pub struct Sold {
    pub country: String,
    pub app: String,
    /// `get_sms` calls so far.
    pub polls: u32,
    /// (deliver on or after this poll, text).
    pub scheduled: Vec<(u32, String)>,
    pub delivered: Vec<String>,
    pub rejected: bool,
}

pub struct State {
    pub key: String,
    pub format: Format,
    /// (id, full_name).
    pub countries: Vec<(u64, String)>,
    /// country id → (app name, deduct).
    pub apps: HashMap<u64, Vec<(String, String)>>,
    pub balance: String,
    pub next_number: u64,
    pub numbers: HashMap<String, Sold>,
    /// The first SMS arrives on this `get_sms` poll (1 = the first poll).
    pub code_after_polls: u32,
    pub code_text: String,
    /// After a resend, the next SMS arrives this many polls later.
    pub resend_after_polls: u32,
    pub resend_text: String,
    /// Per-script canned body (replaces the normal behaviour).
    pub answers: HashMap<String, String>,
    /// Per-script HTTP status (with the canned body or an empty one).
    pub statuses: HashMap<String, u16>,
    /// Answer every request this late.
    pub delay: Option<Duration>,
    /// A new number is sold at once but answered this late (a buy that times
    /// out at the client has still bought).
    pub hang_buys: Option<Duration>,
    /// Every request: (script, query pairs).
    pub requests: Vec<(String, Vec<(String, String)>)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            key: "K".into(),
            format: Format::Plain,
            countries: vec![(58, "USA".into()), (7, "UK".into())],
            apps: HashMap::from([
                (
                    58,
                    vec![
                        ("Whatsapp24".into(), "0.84".into()),
                        ("Gmail40".into(), "0.66".into()),
                    ],
                ),
                (7, vec![("Whatsapp24".into(), "1.05".into())]),
            ]),
            balance: "12.34".into(),
            next_number: 13865902416,
            numbers: HashMap::new(),
            code_after_polls: 2,
            code_text: "Your WhatsApp code is 482-913".into(),
            resend_after_polls: 1,
            resend_text: "Your WhatsApp code is 777-111".into(),
            answers: HashMap::new(),
            statuses: HashMap::new(),
            delay: None,
            hang_buys: None,
            requests: Vec::new(),
        }
    }
}

impl State {
    pub fn calls(&self, script: &str) -> usize {
        self.requests.iter().filter(|(s, _)| s == script).count()
    }

    pub fn last_query(&self, script: &str) -> HashMap<String, String> {
        self.requests
            .iter()
            .rev()
            .find(|(s, _)| s == script)
            .map(|(_, q)| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

pub struct FakePvaPins {
    /// `http://127.0.0.1:<port>/user/api`
    pub base: String,
    pub state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl FakePvaPins {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = web::Data::from(state.clone());
        let server = LoopbackServer::start(1, move |cfg| {
            cfg.app_data(shared.clone())
                .default_service(web::to(handle));
        });
        Self {
            base: server.url("/user/api"),
            state,
            _server: server,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn text(body: impl Into<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=UTF-8")
        .body(body.into())
}

fn json(value: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(value.to_string())
}

/// A success or failure in the current format.
fn answer(format: Format, ok: bool, data: &str) -> HttpResponse {
    match format {
        Format::Plain => text(data),
        Format::Json => {
            json(serde_json::json!({ "code": if ok { 100 } else { 200 }, "data": data }))
        }
    }
}

async fn handle(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let script = req.path().rsplit('/').next().unwrap_or_default().to_owned();
    let query: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let delay = {
        let mut s = state.lock().unwrap();
        s.requests.push((script.clone(), query.clone()));
        s.delay
    };
    if let Some(delay) = delay {
        actix_web::rt::time::sleep(delay).await;
    }
    let q: HashMap<String, String> = query.into_iter().collect();
    let (response, hang) = {
        let mut s = state.lock().unwrap();
        let sold_before = s.next_number;
        let response = simulate(&mut s, &script, &q);
        // Only a buy that sold a new number hangs.
        let sold = s.next_number != sold_before;
        (response, s.hang_buys.filter(|_| sold))
    };
    if let Some(hang) = hang {
        actix_web::rt::time::sleep(hang).await;
    }
    response
}

/// One answer of the simulation, under the state's lock.
fn simulate(s: &mut State, script: &str, q: &HashMap<String, String>) -> HttpResponse {
    if let Some(&status) = s.statuses.get(script) {
        let body = s.answers.get(script).cloned().unwrap_or_default();
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .body(body);
    }
    if let Some(body) = s.answers.get(script) {
        return text(body.clone());
    }
    let format = s.format;
    let keyed = !matches!(script, "load_countries.php" | "load_apps.php");
    if keyed && q.get("customer") != Some(&s.key) {
        return answer(format, false, "Customer Not Found.");
    }
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    match script {
        "load_countries.php" => {
            let list: Vec<_> = s
                .countries
                .iter()
                .map(|(id, name)| serde_json::json!({ "id": id, "full_name": name }))
                .collect();
            json(serde_json::Value::Array(list))
        }
        "load_apps.php" => {
            let id: u64 = get("country_id").parse().unwrap_or(0);
            let name_key = if format == Format::Plain {
                "full_name"
            } else {
                "app_name"
            };
            let list: Vec<_> = s
                .apps
                .get(&id)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, (name, deduct))| serde_json::json!({ "id": 2551 + i, name_key: name, "deduct": deduct, "trending": 0 }))
                .collect();
            json(serde_json::Value::Array(list))
        }
        "get_balance.php" => json(serde_json::json!({ "balance": s.balance })),
        "get_number.php" => {
            let (country, app) = (get("country"), get("app"));
            let Some(country_id) = s
                .countries
                .iter()
                .find(|(_, n)| *n == country)
                .map(|(id, _)| *id)
            else {
                return answer(format, false, "Country Not Found.");
            };
            if !s
                .apps
                .get(&country_id)
                .into_iter()
                .flatten()
                .any(|(n, _)| *n == app)
            {
                return answer(format, false, "App Not Found.");
            }
            if let Some(number) = q.get("number") {
                // Resend: the same number, another SMS scheduled.
                let (after, resend_text) = (s.resend_after_polls, s.resend_text.clone());
                return match s.numbers.get_mut(number) {
                    Some(sold) if !sold.rejected && sold.country == country && sold.app == app => {
                        let at = sold.polls + after;
                        sold.scheduled.push((at, resend_text));
                        answer(format, true, number)
                    }
                    _ => answer(format, false, "Number Not Found."),
                };
            }
            let number = s.next_number.to_string();
            s.next_number += 1;
            let (at, code_text) = (s.code_after_polls, s.code_text.clone());
            s.numbers.insert(
                number.clone(),
                Sold {
                    country,
                    app,
                    scheduled: vec![(at, code_text)],
                    ..Sold::default()
                },
            );
            answer(format, true, &number)
        }
        "get_sms.php" => {
            let Some(sold) = find(s, q) else {
                return answer(format, false, "Number Not Found.");
            };
            sold.polls += 1;
            let polls = sold.polls;
            let due: Vec<String> = sold
                .scheduled
                .iter()
                .filter(|(at, _)| *at <= polls)
                .map(|(_, t)| t.clone())
                .collect();
            sold.scheduled.retain(|(at, _)| *at > polls);
            sold.delivered.extend(due);
            match (format, sold.delivered.last()) {
                (Format::Plain, None) => text("You have not received any code yet."),
                (Format::Plain, Some(latest)) => text(latest.clone()),
                (Format::Json, _) => {
                    // Newest first, as a history list would be.
                    let list: Vec<_> = sold
                        .delivered
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, m)| serde_json::json!({ "message": m, "timestamp": format!("11/05/2026 09:{:02} am", 3 + i) }))
                        .collect();
                    json(serde_json::Value::Array(list))
                }
            }
        }
        "get_reject_number.php" => {
            let Some(sold) = find(s, q) else {
                return answer(format, false, "Number Not Found.");
            };
            if !sold.delivered.is_empty() {
                return match format {
                    Format::Plain => text("Not able to reject."),
                    Format::Json => {
                        json(serde_json::json!({ "code": 200, "data": "Cant Rejected" }))
                    }
                };
            }
            sold.rejected = true;
            answer(format, true, "Number Rejected.")
        }
        _ => HttpResponse::NotFound().body("<html><body>404 Not Found</body></html>"),
    }
}

/// The live (not rejected) number a query names, with its country and app.
fn find<'a>(s: &'a mut State, q: &HashMap<String, String>) -> Option<&'a mut Sold> {
    let number = q.get("number")?;
    let sold = s.numbers.get_mut(number)?;
    (!sold.rejected && Some(&sold.country) == q.get("country") && Some(&sold.app) == q.get("app"))
        .then_some(sold)
}
