//! PVAPins: GET scripts under `…/user/api/`, the API key in the query string
//! (`customer=`), answers in plain sentences or a `{"code":100,"data":…}` JSON
//! envelope (both seen in the wild: both accepted).
//!
//! PVAPins has no order id: a purchase is addressed by (number, country name,
//! app name[, operator]). The [`Handle`] carries that tuple as compact JSON plus
//! the purchase time (the lifetime is kept locally) and the revision the order
//! had reached when the last resend was asked:
//! `{"number":"13865902416","country":"USA","app":"Whatsapp24","bought_at":1778490000,"rev":0}`.
//! The handle therefore holds the phone number: it is personal data.
//!
//! Lifecycle, as the adapter reports it:
//! - no SMS yet → `Waiting`; once `lifetime` (default 20 min) has passed since the
//!   purchase with still no SMS → `Expired` (PVAPins releases the number itself);
//! - an SMS text → `CodeReceived` (the code extracted from the text by the
//!   configured extractor); the revision goes up whenever the text changes;
//! - `Number Not Found.` → `Cancelled` if this adapter rejected it, `Completed` if
//!   a code had been seen, `Expired` otherwise;
//! - finish is local (no call); cancel is `get_reject_number.php`; resend is
//!   `get_number.php` with `number=`.
//!
//! Revisions: PVAPins has none. The adapter keeps, per number, a digest of the
//! last SMS text (in memory only, never the text) and the revision it gave it;
//! a resend stores the revision reached in the new handle, so a restarted
//! adapter counts the next SMS from there (it may report the previous SMS once
//! more as new after a restart, never hide a new one).
//!
//! Money: the cost is the app's `deduct` price from `load_apps` (cached 10 min),
//! checked against the buy's cap before buying. Whether PVAPins debits at
//! purchase or only when a code arrives is unconfirmed. Stock is not published
//! ([`UNKNOWN_STOCK`]). Plain sentences without a digit are never taken for an
//! SMS (an unknown error sentence would otherwise read as a code-less SMS).
//!
//! The key is in every URL: URLs are never logged, and transport errors are
//! reported without them.
//!
//! **No reconciliation.** PVAPins takes no idempotency key and offers no way
//! to find the purchase of a buy whose answer was lost: it has no order ids,
//! and its only listing, `get_history.php`, is documented with nothing but
//! `number` and `message` per entry (no app, country or purchase time, and
//! whether it shows numbers still waiting is unknown), so a lost buy cannot be
//! told apart from another order's number. [`Upstream::find_purchase`] and
//! [`Upstream::open_purchases_like`] therefore keep their defaults, and a buy
//! whose outcome stays unknown is counted `unreconciled` by the router. What
//! limits them: `get_number.php` gets its own, longer timeout
//! ([`PvaPinsConfig::buy_timeout`], 30 s by default), and the router keeps
//! awaiting a buy it stopped waiting for (its late-answer wait, 60 s by
//! default, must stay above it), so a slow purchase still brings its number,
//! which the router then rejects. A buy is never retried blindly. Per one
//! report, PVAPins charges only when a code arrives, and an unused number is
//! released after about 20 minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, Offer, Purchase, Snapshot, Upstream, UpstreamError,
    UpstreamFuture, UpstreamState,
};
use crate::wire::{json_usd, redact, retry_after, transport_error};

/// PVAPins publishes no stock figure: an offer it lists reports this many.
pub const UNKNOWN_STOCK: u64 = 1;
/// Handles are at most this long (the trait's promise).
const MAX_HANDLE_LEN: usize = 512;
/// Answers longer than this are not PVAPins answers.
const MAX_BODY: usize = 1 << 20;
/// Prices and country ids are re-read after this long.
const CACHE_TTL: Duration = Duration::from_secs(600);

/// How to reach PVAPins and how Nexus's codes map to its names.
#[derive(Clone)]
pub struct PvaPinsConfig {
    /// The configured upstream name.
    pub name: String,
    /// The API base, up to and including `/user/api` (scripts are appended).
    pub base_url: Url,
    /// The `customer` key.
    pub api_key: String,
    /// Nexus country → PVAPins country `full_name` (`USA`, `UK`, `India`).
    pub countries: HashMap<CountryCode, String>,
    /// Nexus service → PVAPins app name (`Whatsapp24`, `Gmail40`).
    pub apps: HashMap<ServiceCode, String>,
    /// Finds the code in an SMS text.
    pub extract_code: fn(&str) -> Option<String>,
    pub connect_timeout: Duration,
    /// Whole-call timeout.
    pub timeout: Duration,
    /// Whole-call timeout of a buy (`get_number.php`): longer than the
    /// others, so that a slow purchase is rarely abandoned (a lost buy cannot
    /// be reconciled at PVAPins). Keep it below the router's late-answer wait.
    pub buy_timeout: Duration,
    /// A number with no SMS this long after its purchase is reported `Expired`.
    pub lifetime: Duration,
    /// PVAPins refuses a reject before this (about 2–3 minutes).
    pub min_reject_after: Duration,
}

impl PvaPinsConfig {
    /// A configuration with the default timeouts (connect 2 s, call 8 s, buy
    /// 30 s), a 20-minute lifetime, a 3-minute reject window and
    /// [`code_extract::extract_code`](crate::code_extract::extract_code).
    pub fn new(
        name: &str,
        base_url: Url,
        api_key: &str,
        countries: HashMap<CountryCode, String>,
        apps: HashMap<ServiceCode, String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base_url,
            api_key: api_key.to_owned(),
            countries,
            apps,
            extract_code: crate::code_extract::extract_code,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(8),
            buy_timeout: Duration::from_secs(30),
            lifetime: Duration::from_secs(20 * 60),
            min_reject_after: Duration::from_secs(3 * 60),
        }
    }
}

impl std::fmt::Debug for PvaPinsConfig {
    /// The key is a secret; the base URL is only a host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvaPinsConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("countries", &self.countries.len())
            .field("apps", &self.apps.len())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("buy_timeout", &self.buy_timeout)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// What a handle encodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PvaHandle {
    number: String,
    country: String,
    app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operator: Option<String>,
    /// Unix seconds.
    bought_at: i64,
    /// The revision reached when the last resend was asked (0 before any).
    #[serde(default)]
    rev: u64,
}

impl PvaHandle {
    fn encode(&self) -> Result<Handle, UpstreamError> {
        let text =
            serde_json::to_string(self).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if text.len() > MAX_HANDLE_LEN {
            return Err(UpstreamError::Malformed(
                "PVAPins handle over 512 bytes".into(),
            ));
        }
        Ok(Handle(text))
    }

    fn decode(handle: &Handle) -> Result<Self, UpstreamError> {
        if handle.0.len() > MAX_HANDLE_LEN {
            return Err(UpstreamError::Malformed(
                "PVAPins handle over 512 bytes".into(),
            ));
        }
        serde_json::from_str(&handle.0)
            .map_err(|_| UpstreamError::Malformed("not a PVAPins handle".into()))
    }

    /// Identifies the number at PVAPins (for the adapter's own memory).
    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.number,
            self.country,
            self.app,
            self.operator.as_deref().unwrap_or("")
        )
    }

    fn bought_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.bought_at, 0).unwrap_or_default()
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("number", self.number.clone()),
            ("country", self.country.clone()),
            ("app", self.app.clone()),
        ];
        if let Some(operator) = &self.operator {
            params.push(("operator", operator.clone()));
        }
        params
    }
}

/// The sentences PVAPins answers with (HTTP 200).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sentence {
    BadKey,
    NoBalance,
    NoNumbers,
    BadService,
    BadCountry,
    RateLimited,
    NumberNotFound,
    RejectRefused,
    RejectTooEarly,
    Rejected,
    Waiting,
}

/// Which script a sentence answers: loose matches only where they make sense
/// (an SMS text mentioning a "low balance" is an SMS, not an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    Number,
    Sms,
    Reject,
    Balance,
    Catalog,
}

fn normalize(text: &str) -> String {
    let lower = text.trim().to_lowercase();
    let collapsed: Vec<&str> = lower.split_whitespace().collect();
    collapsed
        .join(" ")
        .trim_end_matches(['.', '!'])
        .trim_end()
        .to_owned()
}

fn classify(text: &str, script: Script) -> Option<Sentence> {
    let t = normalize(text);
    let exact = match t.as_str() {
        "customer not found" => Some(Sentence::BadKey),
        "your balance is expired" => Some(Sentence::NoBalance),
        "no number found"
        | "no numbers found"
        | "no free channels available check after sometime"
        | "no free channels available, check after sometime"
        | "new numbers registration in progress"
        | "error 102, check back later"
        | "error 102 check back later" => Some(Sentence::NoNumbers),
        "app not found" | "app or country not found" => Some(Sentence::BadService),
        "country not found" => Some(Sentence::BadCountry),
        "number not found" => Some(Sentence::NumberNotFound),
        "not able to reject" | "cant rejected" | "can't rejected" | "cant reject"
        | "can't reject" | "cannot reject" | "unable to reject" => Some(Sentence::RejectRefused),
        "number rejected" => Some(Sentence::Rejected),
        "you have not received any code yet" => Some(Sentence::Waiting),
        _ => None,
    };
    if exact.is_some() {
        return exact;
    }
    // Loose matches: short sentences only, and only from scripts that say them.
    if t.len() > 160 || script == Script::Sms {
        return None;
    }
    let has = |needle: &str| t.contains(needle);
    if has("too many request") || has("rate limit") {
        return Some(Sentence::RateLimited);
    }
    match script {
        Script::Number | Script::Balance => {
            if has("insufficient")
                || has("low balance")
                || has("balance is expired")
                || has("recharge")
            {
                Some(Sentence::NoBalance)
            } else if has("no free channel") || t.starts_with("error 102") || has("no number") {
                Some(Sentence::NoNumbers)
            } else {
                None
            }
        }
        Script::Reject => {
            // The exact "too early" wording is unconfirmed: it mentions minutes.
            if has("minute") || has("too early") || has("try after") {
                Some(Sentence::RejectTooEarly)
            } else if has("reject") && (has("not") || has("cant") || has("can't") || has("unable"))
            {
                Some(Sentence::RejectRefused)
            } else {
                None
            }
        }
        Script::Sms | Script::Catalog => None,
    }
}

/// One answer, after the envelope (if any) is taken off.
#[derive(Debug)]
enum Reply {
    Sentence(Sentence),
    /// JSON data: `data` of a `code:100` envelope (`enveloped`), or a bare
    /// array/object.
    Data(Value, bool),
    /// Plain text that is no known sentence.
    Text(String),
}

/// Reads an answer in either format. A JSON envelope with a failure code whose
/// reason is no known sentence is malformed.
fn interpret(body: &str, script: Script) -> Result<Reply, UpstreamError> {
    let text = body.trim();
    if text.is_empty() {
        return Err(UpstreamError::Malformed("empty answer".into()));
    }
    if text.starts_with('{') || text.starts_with('[') {
        let value: Value = serde_json::from_str(text)
            .map_err(|_| UpstreamError::Malformed("unreadable JSON answer".into()))?;
        let Some(code) = value.get("code").filter(|_| value.is_object()) else {
            return Ok(Reply::Data(value, false));
        };
        let success = code.as_i64() == Some(100) || code.as_str() == Some("100");
        let data = value
            .get("data")
            .or_else(|| value.get("message"))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(sentence) = data.as_str().and_then(|s| classify(s, script)) {
            return Ok(Reply::Sentence(sentence));
        }
        if success {
            return Ok(Reply::Data(data, true));
        }
        return Err(UpstreamError::Malformed(format!(
            "PVAPins failure code {code}"
        )));
    }
    if text.starts_with('<') {
        return Err(UpstreamError::Malformed(
            "an HTML page instead of an answer".into(),
        ));
    }
    Ok(match classify(text, script) {
        Some(sentence) => Reply::Sentence(sentence),
        None => Reply::Text(text.to_owned()),
    })
}

/// The errors every script shares; other sentences are the caller's business.
fn common_error(sentence: Sentence) -> Option<UpstreamError> {
    match sentence {
        Sentence::BadKey => Some(UpstreamError::BadKey),
        Sentence::NoBalance => Some(UpstreamError::NoBalance),
        Sentence::NoNumbers => Some(UpstreamError::NoNumbers),
        Sentence::BadService => Some(UpstreamError::BadService),
        Sentence::BadCountry => Some(UpstreamError::BadCountry),
        Sentence::RateLimited => Some(UpstreamError::RateLimited { retry_after: None }),
        _ => None,
    }
}

/// A phone number as PVAPins writes it, to digits only.
fn phone_digits(text: &str) -> Option<String> {
    let digits: String = text
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    ((6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The latest SMS of a `get_sms` answer: plain text, a JSON string, or an array
/// of `{message, timestamp}` (latest by timestamp, else the last one).
fn latest_message(data: &Value) -> Option<String> {
    match data {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => {
            let text_of = |item: &Value| -> Option<String> {
                match item {
                    Value::String(text) => Some(text.clone()),
                    Value::Object(_) => ["message", "sms", "text", "code"]
                        .iter()
                        .find_map(|key| item.get(*key).and_then(Value::as_str))
                        .map(str::to_owned),
                    _ => None,
                }
            };
            let stamped: Vec<(Option<NaiveDateTime>, String)> = items
                .iter()
                .filter_map(|item| {
                    let text = text_of(item)?;
                    let at = item
                        .get("timestamp")
                        .and_then(Value::as_str)
                        .and_then(parse_timestamp);
                    Some((at, text))
                })
                .collect();
            if !stamped.is_empty() && stamped.iter().all(|(at, _)| at.is_some()) {
                // Later timestamp wins; on a tie, the later entry.
                let mut best = 0;
                for (i, (at, _)) in stamped.iter().enumerate() {
                    if *at >= stamped[best].0 {
                        best = i;
                    }
                }
                return Some(stamped[best].1.clone());
            }
            stamped.last().map(|(_, text)| text.clone())
        }
        _ => None,
    }
}

/// `22/05/2026 08:15 pm`.
fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let upper = text.trim().to_uppercase();
    NaiveDateTime::parse_from_str(&upper, "%d/%m/%Y %I:%M %p")
        .or_else(|_| NaiveDateTime::parse_from_str(&upper, "%d/%m/%Y %H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(&upper, "%d/%m/%Y %H:%M"))
        .ok()
}

/// What the adapter remembers about a number: a digest of its last SMS text
/// (never the text) and the revision given to it.
struct Seen {
    digest: [u8; 32],
    revision: u64,
    at: Instant,
}

#[derive(Default)]
struct Memory {
    seen: HashMap<String, Seen>,
    rejected: HashMap<String, Instant>,
    /// Lower-cased country name → PVAPins country id (for `load_apps`).
    country_ids: Option<(Instant, HashMap<String, u64>)>,
    prices: HashMap<(CountryCode, ServiceCode), (Instant, Micros)>,
}

impl Memory {
    fn prune(&mut self, keep: Duration) {
        let now = Instant::now();
        self.seen
            .retain(|_, seen| now.duration_since(seen.at) < keep);
        self.rejected.retain(|_, at| now.duration_since(*at) < keep);
        self.prices
            .retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
    }
}

/// The PVAPins adapter.
pub struct PvaPins {
    config: PvaPinsConfig,
    client: reqwest::Client,
    memory: Mutex<Memory>,
}

impl PvaPins {
    pub fn new(config: PvaPinsConfig) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()?;
        Ok(Self {
            config,
            client,
            memory: Mutex::new(Memory::default()),
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn script_url(&self, script: &str) -> Result<Url, UpstreamError> {
        let base = self.config.base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{script}"))
            .map_err(|_| UpstreamError::Malformed("bad PVAPins base URL".into()))
    }

    /// GETs a script and returns the body of a 2xx answer. With `keyed`, the
    /// `customer` key goes first in the query.
    async fn get(
        &self,
        script: &str,
        params: &[(&str, String)],
        keyed: bool,
    ) -> Result<String, UpstreamError> {
        self.get_within(script, params, keyed, self.config.timeout)
            .await
    }

    /// [`PvaPins::get`] with its own whole-call timeout.
    async fn get_within(
        &self,
        script: &str,
        params: &[(&str, String)],
        keyed: bool,
        timeout: Duration,
    ) -> Result<String, UpstreamError> {
        let mut query: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 1);
        if keyed {
            query.push(("customer", self.config.api_key.as_str()));
        }
        query.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let mut response = self
            .client
            .get(self.script_url(script)?)
            .query(&query)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error("PVAPins", &e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error("PVAPins", &e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(UpstreamError::Malformed("PVAPins answer over 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            return Ok(body);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(response.headers(), Utc::now());
            return Err(UpstreamError::RateLimited { retry_after });
        }
        if status.is_server_error() {
            return Err(UpstreamError::Unavailable(format!(
                "PVAPins answered HTTP {}",
                status.as_u16()
            )));
        }
        // A 4xx with a known sentence is that sentence; anything else is odd.
        if let Some(error) = classify(&body, Script::Catalog).and_then(common_error) {
            return Err(error);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(UpstreamError::BadKey);
        }
        Err(self.unexpected(script, &format!("HTTP {}", status.as_u16()), &body))
    }

    /// Logs an answer that fits nothing (redacted, bounded) and says so.
    fn unexpected(&self, script: &str, what: &str, body: &str) -> UpstreamError {
        warn!(upstream = %self.config.name, script, what, body = %redact(body), "unexpected PVAPins answer");
        UpstreamError::Malformed(format!("PVAPins {script}: {what}"))
    }

    fn sentence_error(&self, script: &str, sentence: Sentence) -> UpstreamError {
        common_error(sentence).unwrap_or_else(|| {
            self.unexpected(script, "out-of-place sentence", &format!("{sentence:?}"))
        })
    }

    /// Lower-cased PVAPins country names → their ids, cached.
    async fn country_ids(&self) -> Result<HashMap<String, u64>, UpstreamError> {
        if let Some((at, ids)) = &self.memory().country_ids {
            if at.elapsed() < CACHE_TTL {
                return Ok(ids.clone());
            }
        }
        let body = self.get("load_countries.php", &[], false).await?;
        let items = match interpret(&body, Script::Catalog)? {
            Reply::Data(Value::Array(items), _) => items,
            Reply::Sentence(sentence) => {
                return Err(self.sentence_error("load_countries.php", sentence))
            }
            _ => return Err(self.unexpected("load_countries.php", "not a list", &body)),
        };
        let mut ids = HashMap::new();
        for item in &items {
            let id = item
                .get("id")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
            let name = item
                .get("full_name")
                .or_else(|| item.get("name"))
                .and_then(Value::as_str);
            if let (Some(id), Some(name)) = (id, name) {
                ids.insert(name.trim().to_lowercase(), id);
            }
        }
        self.memory().country_ids = Some((Instant::now(), ids.clone()));
        Ok(ids)
    }

    /// The apps of one PVAPins country: lower-cased app name → price.
    async fn app_prices(&self, country_id: u64) -> Result<HashMap<String, Micros>, UpstreamError> {
        let body = self
            .get(
                "load_apps.php",
                &[("country_id", country_id.to_string())],
                false,
            )
            .await?;
        let items = match interpret(&body, Script::Catalog)? {
            Reply::Data(Value::Array(items), _) => items,
            Reply::Sentence(sentence) => return Err(self.sentence_error("load_apps.php", sentence)),
            _ => return Err(self.unexpected("load_apps.php", "not a list", &body)),
        };
        let mut prices = HashMap::new();
        for item in &items {
            let name = ["full_name", "app_name", "name"]
                .iter()
                .find_map(|key| item.get(*key).and_then(Value::as_str));
            let price = item
                .get("deduct")
                .or_else(|| item.get("rate"))
                .or_else(|| item.get("price"))
                .and_then(json_usd);
            if let (Some(name), Some(price)) = (name, price) {
                prices.insert(name.trim().to_lowercase(), price);
            }
        }
        Ok(prices)
    }

    /// Prices for one country (every configured app found there).
    async fn country_offers(
        &self,
        country: CountryCode,
        service: Option<&ServiceCode>,
    ) -> Result<Vec<Offer>, UpstreamError> {
        let Some(country_name) = self.config.countries.get(&country) else {
            return Err(UpstreamError::BadCountry);
        };
        let ids = self.country_ids().await?;
        let Some(&country_id) = ids.get(&country_name.trim().to_lowercase()) else {
            return Err(UpstreamError::BadCountry);
        };
        let prices = self.app_prices(country_id).await?;
        let mut offers = Vec::new();
        let now = Instant::now();
        let mut memory = self.memory();
        for (code, app) in &self.config.apps {
            if service.is_some_and(|wanted| wanted != code) {
                continue;
            }
            if let Some(&cost) = prices.get(&app.trim().to_lowercase()) {
                memory.prices.insert((country, code.clone()), (now, cost));
                offers.push(Offer {
                    service: code.clone(),
                    country,
                    cost,
                    stock: UNKNOWN_STOCK,
                });
            }
        }
        Ok(offers)
    }

    /// The price of one (service, country), from the cache or the catalog.
    async fn price(
        &self,
        service: &ServiceCode,
        country: CountryCode,
    ) -> Result<Micros, UpstreamError> {
        if let Some((at, price)) = self.memory().prices.get(&(country, service.clone())) {
            if at.elapsed() < CACHE_TTL {
                return Ok(*price);
            }
        }
        self.country_offers(country, Some(service))
            .await?
            .first()
            .map(|offer| offer.cost)
            .ok_or(UpstreamError::BadService)
    }

    /// Reads the latest SMS: `None` while waiting, `Err(NotFound)` once released.
    async fn read_sms(&self, handle: &PvaHandle) -> Result<Option<String>, UpstreamError> {
        let body = self.get("get_sms.php", &handle.params(), true).await?;
        match interpret(&body, Script::Sms)? {
            Reply::Sentence(Sentence::Waiting) => Ok(None),
            Reply::Sentence(Sentence::NumberNotFound) => Err(UpstreamError::NotFound),
            Reply::Sentence(sentence) => Err(self.sentence_error("get_sms.php", sentence)),
            // A plain sentence without a single digit is no verification SMS but
            // an answer this adapter does not know: never taken for a code.
            Reply::Text(text) if !text.bytes().any(|b| b.is_ascii_digit()) => {
                Err(self.unexpected("get_sms.php", "a sentence without digits", &body))
            }
            Reply::Text(text) => Ok(Some(text)),
            Reply::Data(Value::Array(items), _) if items.is_empty() => Ok(None),
            Reply::Data(data, _) => match latest_message(&data) {
                Some(text) if classify(&text, Script::Sms) == Some(Sentence::Waiting) => Ok(None),
                Some(text) if !text.trim().is_empty() => Ok(Some(text)),
                _ => Err(self.unexpected("get_sms.php", "no message in the answer", &body)),
            },
        }
    }

    async fn poll_handle(&self, handle: &PvaHandle) -> Result<Snapshot, UpstreamError> {
        let key = handle.key();
        let text = match self.read_sms(handle).await {
            Ok(text) => text,
            Err(UpstreamError::NotFound) => {
                let memory = self.memory();
                let had_code =
                    handle.rev > 0 || memory.seen.get(&key).is_some_and(|s| s.revision > 0);
                let state = if memory.rejected.contains_key(&key) {
                    UpstreamState::Cancelled
                } else if had_code {
                    UpstreamState::Completed
                } else {
                    UpstreamState::Expired
                };
                let revision = memory
                    .seen
                    .get(&key)
                    .map_or(handle.rev, |s| s.revision.max(handle.rev));
                return Ok(snapshot(state, None, None, revision));
            }
            Err(error) => return Err(error),
        };
        let past_deadline = Utc::now() >= handle.bought_at() + self.config.lifetime;
        let Some(text) = text else {
            let known = self
                .memory()
                .seen
                .get(&key)
                .map_or(0, |s| s.revision)
                .max(handle.rev);
            return Ok(match (known, past_deadline) {
                (0, false) => snapshot(UpstreamState::Waiting, None, None, 0),
                (0, true) => snapshot(UpstreamState::Expired, None, None, 0),
                // A code came before the resend; the next one is not there yet.
                (rev, false) => snapshot(UpstreamState::CodeReceived, None, None, rev),
                (rev, true) => snapshot(UpstreamState::Completed, None, None, rev),
            });
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let revision = {
            let mut memory = self.memory();
            memory.prune(self.config.lifetime * 2);
            let revision = match memory.seen.get(&key) {
                Some(seen) if seen.digest == digest => seen.revision.max(handle.rev),
                Some(seen) => seen.revision.max(handle.rev) + 1,
                // Nothing remembered (first SMS, or after a restart): counted
                // from the handle, so a restart may repeat the last code once
                // after a resend but never hides a new one.
                None => handle.rev + 1,
            };
            memory.seen.insert(
                key,
                Seen {
                    digest,
                    revision,
                    at: Instant::now(),
                },
            );
            revision
        };
        let code = (self.config.extract_code)(&text);
        Ok(snapshot(
            UpstreamState::CodeReceived,
            code,
            Some(text),
            revision,
        ))
    }
}

fn snapshot(
    state: UpstreamState,
    code: Option<String>,
    text: Option<String>,
    revision: u64,
) -> Snapshot {
    Snapshot {
        state,
        code,
        text,
        revision,
        by_call: false,
    }
}

impl Upstream for PvaPins {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// From `load_countries` and `load_apps` (no key needed): the `deduct` price
    /// of every configured app; stock is [`UNKNOWN_STOCK`] (PVAPins publishes none).
    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>> {
        Box::pin(async move {
            match country {
                Some(country) => self.country_offers(country, service).await,
                None => {
                    let mut countries: Vec<CountryCode> =
                        self.config.countries.keys().copied().collect();
                    countries.sort();
                    let mut offers = Vec::new();
                    for country in countries {
                        match self.country_offers(country, service).await {
                            Ok(found) => offers.extend(found),
                            // A configured name PVAPins does not list: skipped.
                            Err(UpstreamError::BadCountry) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    Ok(offers)
                }
            }
        })
    }

    fn balance(&self) -> UpstreamFuture<'_, Micros> {
        Box::pin(async move {
            let body = self.get("get_balance.php", &[], true).await?;
            let amount = match interpret(&body, Script::Balance)? {
                Reply::Sentence(sentence) => {
                    return Err(self.sentence_error("get_balance.php", sentence))
                }
                Reply::Data(data, _) => data.get("balance").map_or(data.clone(), Clone::clone),
                Reply::Text(text) => Value::String(text),
            };
            json_usd(&amount).ok_or_else(|| {
                self.unexpected("get_balance.php", "no balance in the answer", &body)
            })
        })
    }

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase> {
        Box::pin(async move {
            if request.channel == Channel::Voice {
                return Err(UpstreamError::BadService);
            }
            let country = self
                .config
                .countries
                .get(&request.country)
                .ok_or(UpstreamError::BadCountry)?;
            let app = self
                .config
                .apps
                .get(&request.service)
                .ok_or(UpstreamError::BadService)?;
            let bought_at = Utc::now();
            let mut handle = PvaHandle {
                number: "0".repeat(20),
                country: country.clone(),
                app: app.clone(),
                operator: None,
                bought_at: bought_at.timestamp(),
                rev: 0,
            };
            // Refuse before buying if the handle could not hold the tuple.
            handle.encode().map_err(|_| UpstreamError::BadService)?;
            let cost = self.price(&request.service, request.country).await?;
            if let Some(max) = request.max_cost {
                if cost > max {
                    return Err(UpstreamError::PriceTooHigh { min: Some(cost) });
                }
            }
            let params = [("app", app.clone()), ("country", country.clone())];
            let body = self
                .get_within("get_number.php", &params, true, self.config.buy_timeout)
                .await?;
            let number = match interpret(&body, Script::Number)? {
                Reply::Sentence(sentence) => {
                    return Err(self.sentence_error("get_number.php", sentence))
                }
                Reply::Text(text) => phone_digits(&text),
                Reply::Data(Value::String(text), _) => phone_digits(&text),
                Reply::Data(Value::Number(number), _) => phone_digits(&number.to_string()),
                Reply::Data(..) => None,
            };
            let number = number.ok_or_else(|| {
                self.unexpected("get_number.php", "no phone number in the answer", &body)
            })?;
            handle.number = number.clone();
            Ok(Purchase {
                handle: handle.encode()?,
                phone: number,
                cost,
                expires_at: Some(bought_at + self.config.lifetime),
            })
        })
    }

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot> {
        Box::pin(async move { self.poll_handle(&PvaHandle::decode(handle)?).await })
    }

    /// `get_number.php` with `number=`: the same number, another code. The new
    /// handle remembers the revision reached, so the next SMS counts as new.
    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle> {
        Box::pin(async move {
            let mut pva = PvaHandle::decode(handle)?;
            let current = self.poll_handle(&pva).await?;
            if matches!(
                current.state,
                UpstreamState::Cancelled | UpstreamState::Expired
            ) {
                return Err(UpstreamError::NotFound);
            }
            let mut params = vec![
                ("app", pva.app.clone()),
                ("country", pva.country.clone()),
                ("number", pva.number.clone()),
            ];
            if let Some(operator) = &pva.operator {
                params.push(("operator", operator.clone()));
            }
            let body = self.get("get_number.php", &params, true).await?;
            let number = match interpret(&body, Script::Number)? {
                Reply::Sentence(Sentence::NumberNotFound) => return Err(UpstreamError::NotFound),
                Reply::Sentence(sentence) => {
                    return Err(self.sentence_error("get_number.php", sentence))
                }
                Reply::Text(text) => phone_digits(&text),
                Reply::Data(Value::String(text), _) => phone_digits(&text),
                Reply::Data(Value::Number(number), _) => phone_digits(&number.to_string()),
                Reply::Data(..) => None,
            };
            match number {
                Some(number) if number == pva.number => {}
                // Another number would be another purchase, which the trait
                // cannot hand back: refused loudly.
                Some(_) => {
                    return Err(self.unexpected(
                        "get_number.php",
                        "resend gave another number",
                        &body,
                    ))
                }
                None => {
                    return Err(self.unexpected(
                        "get_number.php",
                        "no phone number in the answer",
                        &body,
                    ))
                }
            }
            pva.rev = current.revision.max(pva.rev);
            pva.encode()
        })
    }

    /// PVAPins has no finish: completion is local.
    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()> {
        Box::pin(async move {
            PvaHandle::decode(handle)?;
            Ok(())
        })
    }

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome> {
        Box::pin(async move {
            let pva = PvaHandle::decode(handle)?;
            let body = self
                .get("get_reject_number.php", &pva.params(), true)
                .await?;
            let elapsed = (Utc::now() - pva.bought_at()).to_std().unwrap_or_default();
            let remaining = self
                .config
                .min_reject_after
                .checked_sub(elapsed)
                .filter(|d| !d.is_zero());
            match interpret(&body, Script::Reject)? {
                Reply::Sentence(Sentence::Rejected) | Reply::Data(_, true) => {
                    self.memory().rejected.insert(pva.key(), Instant::now());
                    Ok(CancelOutcome::Cancelled)
                }
                Reply::Sentence(Sentence::NumberNotFound) => Ok(CancelOutcome::AlreadyClosed),
                Reply::Sentence(Sentence::RejectTooEarly) => Ok(CancelOutcome::TooEarly {
                    retry_after: remaining,
                }),
                Reply::Sentence(Sentence::RejectRefused) => {
                    if remaining.is_some() {
                        return Ok(CancelOutcome::TooEarly {
                            retry_after: remaining,
                        });
                    }
                    // Too early, or a code is there: the SMS tells which.
                    match self.read_sms(&pva).await {
                        Ok(Some(_)) => Ok(CancelOutcome::AlreadyHasCode),
                        Ok(None) => Ok(CancelOutcome::TooEarly { retry_after: None }),
                        Err(UpstreamError::NotFound) => Ok(CancelOutcome::AlreadyClosed),
                        Err(error) => Err(error),
                    }
                }
                Reply::Sentence(sentence) => {
                    Err(self.sentence_error("get_reject_number.php", sentence))
                }
                Reply::Text(_) | Reply::Data(_, false) => {
                    Err(self.unexpected("get_reject_number.php", "unknown answer", &body))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_match_loosely_but_not_inside_sms_texts() {
        assert_eq!(
            classify("Customer Not Found.", Script::Balance),
            Some(Sentence::BadKey)
        );
        assert_eq!(
            classify("  customer not found ", Script::Number),
            Some(Sentence::BadKey)
        );
        assert_eq!(
            classify(
                "No free channels available check after sometime.",
                Script::Number
            ),
            Some(Sentence::NoNumbers)
        );
        assert_eq!(
            classify("Insufficient balance", Script::Number),
            Some(Sentence::NoBalance)
        );
        assert_eq!(
            classify("Your bank balance is low: insufficient funds", Script::Sms),
            None
        );
        assert_eq!(
            classify("You can reject after 3 minutes", Script::Reject),
            Some(Sentence::RejectTooEarly)
        );
        assert_eq!(
            classify("Cant Rejected", Script::Reject),
            Some(Sentence::RejectRefused)
        );
    }

    #[test]
    fn handles_round_trip_and_refuse_garbage() {
        let handle = PvaHandle {
            number: "13865902416".into(),
            country: "USA".into(),
            app: "Whatsapp24".into(),
            operator: None,
            bought_at: 1_778_490_000,
            rev: 0,
        };
        let encoded = handle.encode().unwrap();
        assert_eq!(PvaHandle::decode(&encoded).unwrap(), handle);
        assert!(matches!(
            PvaHandle::decode(&Handle("nope".into())),
            Err(UpstreamError::Malformed(_))
        ));
        let long = Handle(format!("{{\"number\":\"{}\"}}", "1".repeat(600)));
        assert!(matches!(
            PvaHandle::decode(&long),
            Err(UpstreamError::Malformed(_))
        ));
    }

    #[test]
    fn latest_message_prefers_the_latest_timestamp() {
        let data: Value = serde_json::from_str(
            r#"[{"message":"new 222","timestamp":"11/05/2026 09:10 am"},{"message":"old 111","timestamp":"11/05/2026 09:03 am"}]"#,
        )
        .unwrap();
        assert_eq!(latest_message(&data).as_deref(), Some("new 222"));
    }
}
