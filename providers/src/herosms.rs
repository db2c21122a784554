//! HeroSMS over its legacy SMS-Activate surface (`…/stubs/handler_api.php`, the
//! operation in the `action` query parameter, the key in `api_key`).
//!
//! Answers are plain tokens (`ACCESS_BALANCE:1.5`) or JSON, whatever the
//! `Content-Type` says, and errors come in three styles: a token in a 200 body, a
//! non-2xx status with JSON `{title, details, info}`, or a 4xx with a plain
//! token. Every answer is parsed by its body; every error token maps to an
//! [`UpstreamError`]. Answers the fact sheet marks unconfirmed are parsed
//! tolerantly and logged when they take an unexpected shape.
//!
//! **No idempotency.** HeroSMS takes no idempotency key: a buy that times out or
//! gets a 5xx or an unreadable answer may still have bought a number. Those come
//! back as `Unavailable`/`Malformed` (not definite), and the router reconciles
//! them: first by the call's late answer, then through
//! [`Upstream::open_purchases_like`], which reads `getActiveActivations` and
//! returns the open activations of the same service and country with the time
//! HeroSMS says each was bought. The router claims one that no order holds and
//! that no unsettled buy may still name, and cancels it (see `router.rs` for
//! why that is safe). [`Upstream::find_purchase`] is not implemented: without
//! the router's knowledge of the activations this process holds, a search by
//! service, country and time could adopt another order's number.
//!
//! **Times.** `activationTime` is provider-local with no zone. The adapter
//! learns HeroSMS's offset from UTC from the `activationTime` of its own buys
//! (see [`ZonelessClock`]); until one buy has answered, listed activations
//! have no usable purchase time and are never claimed.
//!
//! **Secrets.** The key travels in the query string, so request URLs are never
//! logged (transport errors are stripped of theirs); logged bodies are cut to
//! 200 characters with the key masked. Codes, texts and phone numbers are not
//! logged.
//!
//! **Money.** Amounts are JSON numbers (`0.1200`) or decimal text; they are read
//! as decimal text and converted exactly, see [`decimal_to_micros`].

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::catalog::{Catalog, MappingReport};
use crate::code_extract::extract_code;
use crate::inbound::source_allowed;
use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, ListedPurchase, Offer, Purchase, Snapshot, Upstream,
    UpstreamError, UpstreamFuture, UpstreamState, ZonelessClock,
};
use crate::upstream::{InboundError, InboundHint, InboundRequest};
use crate::wire::redact;

/// Logged bodies are cut to this many characters.
const LOG_BODY_CHARS: usize = 200;
/// The largest answer read (an unfiltered `getPrices` runs to a few megabytes).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// `getActiveActivations` page size and the most pages read.
const ACTIVE_PAGE_SIZE: usize = 100;
const ACTIVE_MAX_PAGES: usize = 50;
/// Handles are opaque strings of at most 512 bytes (see [`Handle`]).
const MAX_HANDLE_BYTES: usize = 512;

/// Every token of the fact sheet's error list (1.7), JSON-only titles included.
const ERROR_TOKENS: &[&str] = &[
    "NO_KEY",
    "BAD_KEY",
    "BAD_ACTION",
    "BAD_SERVICE",
    "WRONG_SERVICE",
    "WRONG_COUNTRY",
    "NO_NUMBERS",
    "NO_BALANCE",
    "WRONG_MAX_PRICE",
    "ERROR_SQL",
    "SERVER_ERROR",
    "NO_ACTIVATION",
    "NO_ACTIVATIONS",
    "BAD_STATUS",
    "EARLY_CANCEL_DENIED",
    "BANNED",
    "CHANNELS_LIMIT",
    "OPERATORS_NOT_FOUND",
    "FREE_CANCELLATION_EXPIRED",
    "OTP_RECEIVED",
    "ACTIVATION_NOT_ACTIVE",
    "STATUS_CANCEL",
];

/// The HeroSMS adapter.
pub struct HeroSms {
    name: String,
    url: Url,
    api_key: String,
    client: reqwest::Client,
    catalog: Catalog,
    last_mapping: Mutex<MappingReport>,
    /// Addresses `smsIncoming` pushes are heard from (HeroSMS signs nothing).
    webhook_sources: Vec<IpAddr>,
    /// Pushes whose `receivedAt` is further than this from now are refused.
    webhook_tolerance: Duration,
    /// HeroSMS's zone, learnt from the `activationTime` of buys.
    clock: ZonelessClock,
}

/// HeroSMS retries a push at least 7 times 20–30 s apart: a push is heard for
/// this long after its `receivedAt`.
pub const DEFAULT_WEBHOOK_TOLERANCE: Duration = Duration::from_secs(10 * 60);

impl std::fmt::Debug for HeroSms {
    /// The key is a secret and the URL's host is configuration: only the name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeroSms")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A HeroSMS adapter that cannot be configured as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeroSmsConfigError {
    #[error("the HeroSMS handler URL must be an http or https URL")]
    BadUrl,
    #[error("the HeroSMS API key is empty")]
    EmptyKey,
    #[error("the timeout must be more than zero")]
    ZeroTimeout,
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// An HTTP exchange: status, `Retry-After` and the body text.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    text: String,
}

/// A body, classified by its text (never by `Content-Type`).
#[derive(Debug)]
enum Body {
    Json(Value),
    /// `NAME` or `NAME:payload` (the payload is everything after the first colon).
    Token {
        name: String,
        payload: Option<String>,
    },
    Text,
}

/// An answer that names a token: a plain token, or a JSON error object.
struct Signal<'a> {
    name: String,
    payload: Option<String>,
    info: Option<&'a Value>,
}

impl Body {
    fn parse(text: &str) -> Body {
        let trimmed = text.trim_start_matches('\u{feff}').trim();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(value) = serde_json::from_str(trimmed) {
                return Body::Json(value);
            }
        }
        match split_token(trimmed) {
            Some((name, payload)) => Body::Token {
                name: name.to_owned(),
                payload: payload.map(str::to_owned),
            },
            None => Body::Text,
        }
    }

    /// The token this body names, if any: a plain token, a JSON `title`, or a
    /// `{"status":"error","error"|"message":…}` object.
    fn signal(&self) -> Option<Signal<'_>> {
        match self {
            Body::Token { name, payload } => Some(Signal {
                name: name.clone(),
                payload: payload.clone(),
                info: None,
            }),
            Body::Json(Value::Object(object)) => {
                let errorish = object.get("status").and_then(Value::as_str) == Some("error");
                let title = object.get("title").and_then(Value::as_str).or_else(|| {
                    errorish
                        .then(|| object.get("error").or_else(|| object.get("message")))
                        .flatten()
                        .and_then(Value::as_str)
                })?;
                let (name, payload) = split_token(title.trim())?;
                Some(Signal {
                    name: name.to_owned(),
                    payload: payload.map(str::to_owned),
                    info: object.get("info"),
                })
            }
            _ => None,
        }
    }
}

/// `NAME[:payload]` where `NAME` is upper-case letters, digits and `_`, starting
/// with a letter, and the whole text is one line.
fn split_token(text: &str) -> Option<(&str, Option<&str>)> {
    let (name, payload) = match text.split_once(':') {
        Some((name, payload)) => (name, Some(payload)),
        None => (text, None),
    };
    let is_name = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (is_name && !text.contains('\n')).then_some((name, payload))
}

impl HeroSms {
    /// `base_url` is the whole handler URL, ending in `/stubs/handler_api.php`;
    /// `timeout` bounds every call (connecting, and the whole exchange).
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: impl Into<String>,
        timeout: Duration,
        catalog: &Catalog,
    ) -> Result<HeroSms, HeroSmsConfigError> {
        let url = Url::parse(base_url).map_err(|_| HeroSmsConfigError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(HeroSmsConfigError::BadUrl);
        }
        let api_key = api_key.into();
        if api_key.trim().is_empty() {
            return Err(HeroSmsConfigError::EmptyKey);
        }
        if timeout.is_zero() {
            return Err(HeroSmsConfigError::ZeroTimeout);
        }
        // reqwest brings no TLS crypto provider of its own; ring is the one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HeroSmsConfigError::Client(e.without_url().to_string()))?;
        Ok(HeroSms {
            name: name.into(),
            url,
            api_key,
            client,
            catalog: catalog.clone(),
            last_mapping: Mutex::new(MappingReport::default()),
            webhook_sources: Vec::new(),
            webhook_tolerance: DEFAULT_WEBHOOK_TOLERANCE,
            clock: ZonelessClock::default(),
        })
    }

    /// Hears `smsIncoming` pushes from these addresses only (none: pushes are
    /// refused), within `tolerance` of their `receivedAt`.
    pub fn with_webhook_sources(mut self, sources: Vec<IpAddr>, tolerance: Duration) -> HeroSms {
        self.webhook_sources = sources;
        self.webhook_tolerance = tolerance;
        self
    }

    /// What the latest price query skipped (unknown countries and services).
    pub fn last_mapping_report(&self) -> MappingReport {
        self.last_mapping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Offers with the report of what was skipped while mapping them.
    pub async fn offers_with_report(
        &self,
        service: Option<&ServiceCode>,
        country: Option<CountryCode>,
    ) -> Result<(Vec<Offer>, MappingReport), UpstreamError> {
        let mut params = Vec::new();
        if let Some(service) = service {
            if !self.catalog.is_known_service(service.as_str()) {
                return Ok((Vec::new(), MappingReport::default()));
            }
            params.push(("service", service.as_str().to_owned()));
        }
        if let Some(country) = country {
            match self.catalog.sms_activate_country(country) {
                Some(id) => params.push(("country", id.to_string())),
                None => return Ok((Vec::new(), MappingReport::default())),
            }
        }
        let body = self.exchange("getPrices", &params, &[]).await?;
        let mut report = MappingReport::default();
        let offers = match &body {
            Body::Json(Value::Object(countries)) => {
                self.parse_prices(countries, service, country, &mut report)
            }
            // An empty list where nothing is offered.
            Body::Json(Value::Array(items)) if items.is_empty() => Vec::new(),
            _ => return Err(self.unexpected("getPrices", &body)),
        };
        if !report.is_clean() {
            tracing::debug!(
                upstream = %self.name,
                skipped_countries = report.skipped_countries,
                skipped_services = report.skipped_services,
                samples = ?report.unknown_samples,
                "HeroSMS price list: unknown codes skipped"
            );
        }
        *self
            .last_mapping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = report.clone();
        Ok((offers, report))
    }

    fn parse_prices(
        &self,
        countries: &Map<String, Value>,
        service: Option<&ServiceCode>,
        country: Option<CountryCode>,
        report: &mut MappingReport,
    ) -> Vec<Offer> {
        let mut offers = Vec::new();
        let mut bad_entries = 0u64;
        for (country_id, services) in countries {
            let Some(iso) = self.catalog.map_sms_activate_country(country_id, report) else {
                continue;
            };
            if country.is_some_and(|wanted| wanted != iso) {
                continue;
            }
            let Some(services) = services.as_object() else {
                bad_entries += 1;
                continue;
            };
            for (code, entry) in services {
                let Some(code) = self.catalog.map_service(code, report) else {
                    continue;
                };
                if service.is_some_and(|wanted| *wanted != code) {
                    continue;
                }
                let cost = entry.get("cost").and_then(json_micros);
                // Really buyable stock is `physicalCount`; `count` may be large
                // while it is 0. Older answers have only `count`.
                let stock = entry
                    .get("physicalCount")
                    .and_then(json_count)
                    .or_else(|| entry.get("count").and_then(json_count));
                match (cost, stock) {
                    (Some(cost), Some(stock)) => offers.push(Offer {
                        service: code,
                        country: iso,
                        cost,
                        stock,
                    }),
                    _ => bad_entries += 1,
                }
            }
        }
        if bad_entries > 0 {
            tracing::warn!(
                upstream = %self.name,
                bad_entries,
                "HeroSMS price list: entries without a readable cost or count skipped"
            );
        }
        offers
    }

    /// The activations HeroSMS holds as active, with their phone numbers (digits
    /// only), for reconciling buys whose outcome was unknown. Reads `data` (the
    /// HeroSMS shape) and tolerates a bare list and the SMS-Activate
    /// `activeActivations` key (a list, or `{row, rows}`).
    pub async fn active_activations(&self) -> Result<Vec<(Handle, String)>, UpstreamError> {
        self.active_activations_upto(ACTIVE_PAGE_SIZE * ACTIVE_MAX_PAGES)
            .await
    }

    /// [`HeroSms::active_activations`], stopping after `limit` activations.
    async fn active_activations_upto(
        &self,
        limit: usize,
    ) -> Result<Vec<(Handle, String)>, UpstreamError> {
        Ok(self
            .active_items_upto(limit)
            .await?
            .into_iter()
            .map(|(handle, phone, _)| (handle, phone))
            .collect())
    }

    /// The items of `getActiveActivations`, paged, each with its activation
    /// id and phone; items without either are skipped (and counted in a log
    /// line). At most `limit`.
    async fn active_items_upto(
        &self,
        limit: usize,
    ) -> Result<Vec<(Handle, String, Value)>, UpstreamError> {
        let mut found: Vec<(Handle, String, Value)> = Vec::new();
        for page in 0..ACTIVE_MAX_PAGES {
            if found.len() >= limit {
                break;
            }
            let params = [
                ("start", (page * ACTIVE_PAGE_SIZE).to_string()),
                ("limit", ACTIVE_PAGE_SIZE.to_string()),
            ];
            let body = self
                .exchange("getActiveActivations", &params, &["NO_ACTIVATIONS"])
                .await?;
            if body.signal().is_some_and(|s| s.name == "NO_ACTIVATIONS") {
                break;
            }
            let Some(items) = active_items(&body) else {
                return Err(self.unexpected("getActiveActivations", &body));
            };
            let mut fresh = 0;
            let mut unreadable = 0;
            for item in &items {
                match active_item(item) {
                    Some((handle, phone)) if !found.iter().any(|(h, ..)| *h == handle) => {
                        found.push((handle, phone, (*item).clone()));
                        fresh += 1;
                    }
                    Some(_) => {}
                    None => unreadable += 1,
                }
            }
            if unreadable > 0 {
                tracing::warn!(
                    upstream = %self.name,
                    unreadable,
                    "HeroSMS active activations: items without an id or a phone skipped"
                );
            }
            // A short page is the last; a page with nothing new means the
            // upstream ignores paging.
            if items.len() < ACTIVE_PAGE_SIZE || fresh == 0 {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The open activations of `request`'s service and country (HeroSMS sells
    /// no voice: none for a voice request), with their purchase times in UTC
    /// where the zone is known. Activations HeroSMS reports as completed (6),
    /// cancelled (8) or refunded (10) are left out. An item that names no
    /// service or country may be anyone's: it is listed without a purchase
    /// time, so that it is never claimed but keeps a search from concluding
    /// that nothing was bought (and counted in a log line).
    async fn open_activations_like(
        &self,
        request: &BuyRequest,
    ) -> Result<Vec<ListedPurchase>, UpstreamError> {
        if request.channel == Channel::Voice
            || !self.catalog.is_known_service(request.service.as_str())
        {
            return Ok(Vec::new());
        }
        let Some(country) = self.catalog.sms_activate_country(request.country) else {
            return Ok(Vec::new());
        };
        let items = self
            .active_items_upto(ACTIVE_PAGE_SIZE * ACTIVE_MAX_PAGES)
            .await?;
        let mut listed = Vec::new();
        let mut unmatchable = 0usize;
        for (handle, phone, item) in items {
            let status = item.get("activationStatus").and_then(json_count);
            if matches!(status, Some(6 | 8 | 10)) {
                continue;
            }
            let service = item.get("serviceCode").and_then(Value::as_str);
            let item_country = item.get("countryCode").and_then(json_count);
            let matchable = match (service, item_country) {
                (Some(service), Some(item_country)) => {
                    if service.trim() != request.service.as_str()
                        || item_country != u64::from(country)
                    {
                        continue;
                    }
                    true
                }
                _ => {
                    unmatchable += 1;
                    false
                }
            };
            let time = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .and_then(|text| self.upstream_time(text))
            };
            listed.push(ListedPurchase {
                bought_at: time("activationTime").filter(|_| matchable),
                purchase: Purchase {
                    handle,
                    phone,
                    // Unread, the cost is not needed to close the activation.
                    cost: item
                        .get("activationCost")
                        .and_then(json_micros)
                        .unwrap_or_default(),
                    expires_at: time("activationEndTime"),
                },
            });
        }
        if unmatchable > 0 {
            tracing::warn!(
                upstream = %self.name,
                unmatchable,
                "HeroSMS active activations: items without a service or country cannot be matched"
            );
        }
        Ok(listed)
    }

    /// An upstream time in UTC: exact when it carries a zone, else placed by
    /// the learnt offset (`None` before one is learnt).
    fn upstream_time(&self, text: &str) -> Option<DateTime<Utc>> {
        if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
            return Some(at.with_timezone(&Utc));
        }
        self.clock.to_utc(parse_time(text)?)
    }

    async fn get_balance(&self) -> Result<Micros, UpstreamError> {
        let body = self.exchange("getBalance", &[], &[]).await?;
        if let Body::Token { name, payload } = &body {
            if name == "ACCESS_BALANCE" {
                if let Some(balance) = payload.as_deref().and_then(decimal_to_micros) {
                    return Ok(balance);
                }
            }
        }
        Err(self.unexpected("getBalance", &body))
    }

    async fn buy_number(&self, request: &BuyRequest) -> Result<Purchase, UpstreamError> {
        // getNumberV2 has no documented way to ask for a voice call: a voice
        // order goes to an upstream that has one.
        if request.channel == Channel::Voice {
            return Err(UpstreamError::BadService);
        }
        if !self.catalog.is_known_service(request.service.as_str()) {
            return Err(UpstreamError::BadService);
        }
        let country = self
            .catalog
            .sms_activate_country(request.country)
            .ok_or(UpstreamError::BadCountry)?;
        let mut params = vec![
            ("service", request.service.as_str().to_owned()),
            ("country", country.to_string()),
        ];
        // A cap, never `fixedPrice` (which would buy at exactly this price).
        if let Some(max_cost) = request.max_cost {
            params.push(("maxPrice", max_cost.to_string()));
        }
        let body = self.exchange("getNumberV2", &params, &[]).await?;
        let received_at = Utc::now();
        // A 2xx answer we cannot read may still have bought a number: Malformed
        // (not definite), so the router reconciles.
        let Body::Json(Value::Object(object)) = &body else {
            return Err(self.unexpected("getNumberV2", &body));
        };
        // The activation time is HeroSMS's "now", in its own zone.
        if let Some(written) = object
            .get("activationTime")
            .and_then(Value::as_str)
            .filter(|text| DateTime::parse_from_rfc3339(text.trim()).is_err())
            .and_then(parse_time)
        {
            self.clock.learn(written, received_at);
        }
        let handle = object.get("activationId").and_then(json_id);
        let phone = object.get("phoneNumber").and_then(json_phone);
        let cost = object.get("activationCost").and_then(json_micros);
        match (handle, phone, cost) {
            (Some(handle), Some(phone), Some(cost)) => Ok(Purchase {
                handle,
                phone,
                cost,
                expires_at: object
                    .get("activationEndTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time),
            }),
            _ => Err(self.unexpected("getNumberV2", &body)),
        }
    }

    async fn status(&self, handle: &Handle) -> Result<Snapshot, UpstreamError> {
        let id = check_handle(handle)?;
        let params = [("id", id.to_owned())];
        const STATUS_TOKENS: &[&str] = &[
            "STATUS_WAIT_CODE",
            "STATUS_WAIT_RESEND",
            "STATUS_WAIT_RETRY",
            "STATUS_OK",
            "STATUS_CANCEL",
        ];
        let mut accepted = STATUS_TOKENS.to_vec();
        accepted.push("BAD_ACTION");
        let body = self.exchange("getStatusV2", &params, &accepted).await?;
        let body = match body.signal() {
            // A dialect without V2 answers: read the V1 status instead.
            Some(signal) if signal.name == "BAD_ACTION" => {
                tracing::warn!(upstream = %self.name, "HeroSMS getStatusV2 refused; using getStatus");
                self.exchange("getStatus", &params, STATUS_TOKENS).await?
            }
            _ => body,
        };
        if let Some(signal) = body.signal() {
            if let Some(snapshot) = self.v1_snapshot(&signal) {
                // A V1 token (or a JSON title) where V2 JSON was expected: the
                // fact sheet leaves this open, so it is noted.
                tracing::debug!(upstream = %self.name, token = %signal.name, "HeroSMS status as a token");
                return Ok(snapshot);
            }
        }
        match &body {
            Body::Json(Value::Object(object)) => self
                .v2_snapshot(object)
                .ok_or_else(|| self.unexpected("getStatusV2", &body)),
            _ => Err(self.unexpected("getStatusV2", &body)),
        }
    }

    /// A V1 status token (`STATUS_OK:123456`, `STATUS_CANCEL`, …).
    fn v1_snapshot(&self, signal: &Signal<'_>) -> Option<Snapshot> {
        let waiting = Snapshot {
            state: UpstreamState::Waiting,
            code: None,
            text: None,
            revision: 0,
            by_call: false,
        };
        match signal.name.as_str() {
            "STATUS_WAIT_CODE" | "STATUS_WAIT_RESEND" => Some(waiting),
            "STATUS_CANCEL" => Some(Snapshot {
                state: UpstreamState::Cancelled,
                ..waiting
            }),
            "STATUS_OK" | "STATUS_WAIT_RETRY" => {
                let code = signal.payload.as_deref().map(str::trim).unwrap_or("");
                if code.is_empty() {
                    return None;
                }
                Some(Snapshot {
                    state: UpstreamState::CodeReceived,
                    code: Some(code.to_owned()),
                    text: None,
                    revision: self.revision(false, None, code, ""),
                    by_call: false,
                })
            }
            _ => None,
        }
    }

    /// A `getStatusV2` object: SMS or call by which sub-object is non-null.
    fn v2_snapshot(&self, object: &Map<String, Value>) -> Option<Snapshot> {
        let sms = message(object.get("sms"))?;
        let call = message(object.get("call"))?;
        let chosen = match (sms, call) {
            (Some(sms), Some(call)) if call.at > sms.at => Some((call, true)),
            (Some(sms), _) => Some((sms, false)),
            (None, Some(call)) => Some((call, true)),
            (None, None) => None,
        };
        let Some((message, by_call)) = chosen else {
            return Some(Snapshot {
                state: UpstreamState::Waiting,
                code: None,
                text: None,
                revision: 0,
                by_call: false,
            });
        };
        let code = match message.code.as_str() {
            "" => extract_code(&message.text),
            code => Some(code.to_owned()),
        };
        Some(Snapshot {
            state: UpstreamState::CodeReceived,
            revision: self.revision(by_call, message.at, &message.code, &message.text),
            code,
            text: (!message.text.is_empty()).then(|| message.text.clone()),
            by_call,
        })
    }

    /// A revision that changes with every new message: the message's `dateTime`
    /// in Unix seconds, shifted left by 10 bits, plus 10 bits of a keyed hash of
    /// the message (so two messages within one second differ). Without a
    /// `dateTime` (V1 tokens, unreadable dates) it is 1 + 30 bits of the keyed
    /// hash: stable across polls and restarts, but not ordered, so compare
    /// revisions for inequality. The hash is keyed with the API key so a
    /// revision in a log reveals nothing about a short code.
    fn revision(&self, by_call: bool, at: Option<DateTime<Utc>>, code: &str, text: &str) -> u64 {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.api_key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(if by_call { b"call\0" } else { b"sms\0\0" });
        mac.update(code.as_bytes());
        mac.update(b"\0");
        mac.update(text.as_bytes());
        let tag = mac.finalize().into_bytes();
        let hash = u64::from_be_bytes(tag[..8].try_into().expect("32-byte tag"));
        match at.map(|at| at.timestamp()) {
            Some(seconds) if seconds > 0 => ((seconds as u64) << 10) | (hash & 0x3ff),
            _ => 1 + (hash & 0x3fff_ffff),
        }
    }

    /// `setStatus`: `accepted` lists the tokens that are answers, not errors.
    async fn set_status(
        &self,
        handle: &Handle,
        status: u8,
        accepted: &[&str],
    ) -> Result<Body, UpstreamError> {
        let id = check_handle(handle)?;
        let params = [("id", id.to_owned()), ("status", status.to_string())];
        self.exchange("setStatus", &params, accepted).await
    }

    async fn request_resend(&self, handle: &Handle) -> Result<Handle, UpstreamError> {
        let body = self.set_status(handle, 3, &["ACCESS_RETRY_GET"]).await?;
        match body.signal() {
            Some(signal) if signal.name == "ACCESS_RETRY_GET" => Ok(handle.clone()),
            _ => Err(self.unexpected("setStatus 3", &body)),
        }
    }

    async fn finish_activation(&self, handle: &Handle) -> Result<(), UpstreamError> {
        let body = self.set_status(handle, 6, &["ACCESS_ACTIVATION"]).await?;
        match body.signal() {
            Some(signal) if signal.name == "ACCESS_ACTIVATION" => Ok(()),
            _ => Err(self.unexpected("setStatus 6", &body)),
        }
    }

    async fn cancel_activation(&self, handle: &Handle) -> Result<CancelOutcome, UpstreamError> {
        const ANSWERS: &[&str] = &[
            "ACCESS_CANCEL",
            "EARLY_CANCEL_DENIED",
            "OTP_RECEIVED",
            "ACTIVATION_NOT_ACTIVE",
            "STATUS_CANCEL",
            "NO_ACTIVATION",
            "FREE_CANCELLATION_EXPIRED",
        ];
        let body = self.set_status(handle, 8, ANSWERS).await?;
        let Some(signal) = body.signal() else {
            return Err(self.unexpected("setStatus 8", &body));
        };
        Ok(match signal.name.as_str() {
            "ACCESS_CANCEL" => CancelOutcome::Cancelled,
            "EARLY_CANCEL_DENIED" => CancelOutcome::TooEarly {
                retry_after: signal
                    .info
                    .and_then(|info| info.get("minActivationTime"))
                    .and_then(json_count)
                    .map(Duration::from_secs),
            },
            "OTP_RECEIVED" => CancelOutcome::AlreadyHasCode,
            "ACTIVATION_NOT_ACTIVE" | "STATUS_CANCEL" | "NO_ACTIVATION" => {
                CancelOutcome::AlreadyClosed
            }
            // Past the free-cancellation window (about 20 minutes): the
            // activation can no longer be cancelled and is at its end.
            "FREE_CANCELLATION_EXPIRED" => {
                tracing::warn!(upstream = %self.name, "HeroSMS cancel refused: free cancellation expired");
                CancelOutcome::AlreadyClosed
            }
            _ => return Err(self.unexpected("setStatus 8", &body)),
        })
    }

    /// One call: sends it, reads the answer, and turns errors into
    /// [`UpstreamError`]s. A token in `accepted` is returned as an answer
    /// whatever the HTTP status (except 5xx), for the caller to interpret.
    async fn exchange(
        &self,
        action: &'static str,
        params: &[(&'static str, String)],
        accepted: &[&str],
    ) -> Result<Body, UpstreamError> {
        let reply = self.send(action, params).await?;
        let body = Body::parse(&reply.text);
        if reply.status.is_server_error() {
            self.log_answer(action, &reply, "HeroSMS server error");
            return Err(UpstreamError::Unavailable(format!(
                "{action}: HTTP {}",
                reply.status.as_u16()
            )));
        }
        let signal = body.signal();
        if let Some(signal) = &signal {
            if accepted.contains(&signal.name.as_str()) {
                return Ok(body);
            }
        }
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            self.log_answer(action, &reply, "HeroSMS rate limit");
            return Err(UpstreamError::RateLimited {
                retry_after: reply.retry_after,
            });
        }
        if let Some(signal) = &signal {
            let json = matches!(body, Body::Json(_));
            // A JSON `title` on an error status is an error even if the token is
            // new to us; on a 2xx only the known tokens are.
            if ERROR_TOKENS.contains(&signal.name.as_str()) || (json && !reply.status.is_success())
            {
                let error = self.map_error(signal, reply.retry_after);
                if matches!(
                    error,
                    UpstreamError::Malformed(_) | UpstreamError::Unavailable(_)
                ) {
                    self.log_answer(action, &reply, "HeroSMS error answer");
                }
                return Err(error);
            }
        }
        if !reply.status.is_success() {
            self.log_answer(action, &reply, "unexpected HeroSMS HTTP status");
            return Err(UpstreamError::Malformed(format!(
                "{action}: HTTP {}",
                reply.status.as_u16()
            )));
        }
        Ok(body)
    }

    /// The error an error token means (fact sheet 1.7).
    fn map_error(&self, signal: &Signal<'_>, retry_after: Option<Duration>) -> UpstreamError {
        let info = |key: &str| signal.info.and_then(|info| info.get(key));
        match signal.name.as_str() {
            "NO_KEY" | "BAD_KEY" => UpstreamError::BadKey,
            "BAD_SERVICE" | "WRONG_SERVICE" => UpstreamError::BadService,
            "WRONG_COUNTRY" => UpstreamError::BadCountry,
            "NO_NUMBERS" => UpstreamError::NoNumbers,
            "NO_BALANCE" => UpstreamError::NoBalance,
            "WRONG_MAX_PRICE" => UpstreamError::PriceTooHigh {
                min: info("min").and_then(json_micros).or_else(|| {
                    signal
                        .payload
                        .as_deref()
                        .and_then(|p| decimal_to_micros(p.trim()))
                }),
            },
            "BANNED" => UpstreamError::Banned {
                retry_after: info("retry_after_seconds")
                    .and_then(json_count)
                    .map(Duration::from_secs)
                    .or_else(|| {
                        let until = info("banned_until")
                            .and_then(Value::as_str)
                            .or(signal.payload.as_deref())?;
                        let until =
                            parse_time(until.trim().trim_matches(|c| c == '\'' || c == '"'))?;
                        (until - Utc::now()).to_std().ok()
                    }),
            },
            "CHANNELS_LIMIT" => UpstreamError::RateLimited { retry_after },
            "NO_ACTIVATION" | "NO_ACTIVATIONS" => UpstreamError::NotFound,
            // The activation is over (cancelled, finished or expired) for an
            // action that needs it live.
            "STATUS_CANCEL" | "ACTIVATION_NOT_ACTIVE" => UpstreamError::NotFound,
            "ERROR_SQL" | "SERVER_ERROR" => UpstreamError::Unavailable(signal.name.clone()),
            other => UpstreamError::Malformed(other.to_owned()),
        }
    }

    /// Sends one GET and reads the whole answer (bounded).
    async fn send(
        &self,
        action: &'static str,
        params: &[(&'static str, String)],
    ) -> Result<Reply, UpstreamError> {
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("api_key", &self.api_key);
            query.append_pair("action", action);
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(action, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(action, e))?
        {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                tracing::warn!(upstream = %self.name, action, "HeroSMS answer too large");
                return Err(UpstreamError::Malformed(format!(
                    "{action}: answer too large"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            retry_after,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// A transport failure: the outcome is unknown. The error loses its URL
    /// (which carries the key) before it is shown anywhere.
    fn transport_error(&self, action: &'static str, error: reqwest::Error) -> UpstreamError {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let detail = self.scrub(&error.without_url().to_string());
        tracing::warn!(upstream = %self.name, action, kind, detail = %detail, "HeroSMS call failed");
        UpstreamError::Unavailable(format!("{action}: {kind}"))
    }

    /// An answer of no known shape for this action: logged, then `Malformed`.
    fn unexpected(&self, action: &str, body: &Body) -> UpstreamError {
        let shape = match body {
            Body::Json(Value::Object(_)) => "a JSON object",
            Body::Json(_) => "JSON",
            Body::Token { .. } => "a token",
            Body::Text => "text",
        };
        let token = body.signal().map(|s| s.name);
        tracing::warn!(upstream = %self.name, action, shape, token = ?token, "unexpected HeroSMS answer");
        UpstreamError::Malformed(format!("{action}: unexpected answer ({shape})"))
    }

    /// An answer in a log: the key masked, then letters and digits blanked
    /// like every upstream's (it could carry a code).
    fn log_answer(&self, action: &str, reply: &Reply, what: &'static str) {
        tracing::warn!(
            upstream = %self.name,
            action,
            status = reply.status.as_u16(),
            body = %redact(&reply.text.replace(&self.api_key, "***")),
            "{what}"
        );
    }

    /// A transport error fit for a log: the key masked, control characters
    /// replaced, cut to 200 characters. (An upstream's answer is redacted
    /// further by `log_answer`.)
    fn scrub(&self, text: &str) -> String {
        let masked = text.replace(&self.api_key, "***");
        let mut out: String = masked
            .chars()
            .take(LOG_BODY_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if masked.chars().nth(LOG_BODY_CHARS).is_some() {
            out.push('…');
        }
        out
    }
}

/// The items of a `getActiveActivations` answer, in whichever shape it came.
fn active_items(body: &Body) -> Option<Vec<&Value>> {
    let Body::Json(value) = body else {
        return None;
    };
    match value {
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(object) => {
            if let Some(Value::Array(items)) = object.get("data") {
                return Some(items.iter().collect());
            }
            match object.get("activeActivations") {
                Some(Value::Array(items)) => Some(items.iter().collect()),
                Some(Value::Object(legacy)) => {
                    let mut items: Vec<&Value> = legacy
                        .get("rows")
                        .and_then(Value::as_array)
                        .map(|rows| rows.iter().collect())
                        .unwrap_or_default();
                    if let Some(row) = legacy.get("row").filter(|r| r.is_object()) {
                        items.push(row);
                    }
                    Some(items)
                }
                // `{"status":"success"}` with no list at all: nothing active.
                None if object.get("status").and_then(Value::as_str) == Some("success") => {
                    Some(Vec::new())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn active_item(item: &Value) -> Option<(Handle, String)> {
    let handle = item.get("activationId").and_then(json_id)?;
    let phone = item.get("phoneNumber").and_then(json_phone)?;
    Some((handle, phone))
}

/// A message of a `getStatusV2` answer. `None` for an answer of the wrong type;
/// `Some(None)` for an absent or null message, or one with neither code nor
/// text yet.
fn message(value: Option<&Value>) -> Option<Option<Message>> {
    let object = match value {
        None | Some(Value::Null) => return Some(None),
        Some(Value::Object(object)) => object,
        Some(_) => return None,
    };
    let text_of = |key: &str| match object.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let code = text_of("code");
    let text = match object.get("text") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    if code.is_empty() && text.trim().is_empty() {
        return Some(None);
    }
    let at = object
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    Some(Some(Message { code, text, at }))
}

struct Message {
    code: String,
    text: String,
    at: Option<DateTime<Utc>>,
}

fn check_handle(handle: &Handle) -> Result<&str, UpstreamError> {
    let id = handle.0.as_str();
    if id.is_empty() || id.len() > MAX_HANDLE_BYTES || id.chars().any(char::is_control) {
        return Err(UpstreamError::NotFound);
    }
    Ok(id)
}

/// An activation id: a string or an integer, kept as a string.
fn json_id(value: &Value) -> Option<Handle> {
    let id = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return None,
    };
    let ok = !id.is_empty()
        && id.len() <= MAX_HANDLE_BYTES
        && !id.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(Handle(id))
}

/// A phone number: digits with the dial code, a leading `+` dropped.
fn json_phone(value: &Value) -> Option<String> {
    let phone = match value {
        Value::String(s) => s.trim().trim_start_matches('+').to_owned(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return None,
    };
    let ok = (4..=20).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(phone)
}

/// A count: a non-negative integer, as a number or as text.
fn json_count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Money from a JSON number or a decimal string, exactly (see
/// [`decimal_to_micros`]).
fn json_micros(value: &Value) -> Option<Micros> {
    match value {
        // The number's text: without serde_json's `arbitrary_precision` this is
        // the shortest text that reads back as the same f64, which for any amount
        // of up to 15 significant digits is the amount as the upstream wrote it
        // minus trailing zeros (`0.1200` → `0.12`); tiny or huge values come out
        // in exponent form (`1e-7`), which `decimal_to_micros` reads too.
        Value::Number(n) => decimal_to_micros(&n.to_string()),
        Value::String(s) => decimal_to_micros(s.trim()),
        _ => None,
    }
}

/// Reads a decimal amount of dollars (`0.1200`, `12`, `-3.5`, `1.5e-3`) exactly
/// into micro-dollars, never through floating-point arithmetic. More than six
/// decimals are rounded **up** to the next whole micro-dollar (an upstream's
/// price is never under-estimated). `None` for anything else, or for amounts
/// beyond what [`Micros::parse`] takes.
pub fn decimal_to_micros(text: &str) -> Option<Micros> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => {
            let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
            (mantissa, exponent.parse::<i32>().ok()?)
        }
        None => (unsigned, 0),
    };
    if !(-40..=40).contains(&exponent) {
        return None;
    }
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    // All digits, and where the decimal point falls among them.
    let digits = format!("{whole}{fraction}");
    let point = whole.len() as i64 + i64::from(exponent);
    let (int_part, frac_part) = if point <= 0 {
        (String::new(), "0".repeat((-point) as usize) + &digits)
    } else if point as usize >= digits.len() {
        (
            digits.clone() + &"0".repeat(point as usize - digits.len()),
            String::new(),
        )
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_owned(), f.to_owned())
    };
    let int_part = int_part.trim_start_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let (kept, dropped) = frac_part.split_at(frac_part.len().min(6));
    let round_up = dropped.bytes().any(|b| b != b'0');
    let exact = if kept.is_empty() {
        int_part.to_owned()
    } else {
        format!("{int_part}.{kept}")
    };
    let micros = Micros::parse(&exact).ok()?;
    let micros = match (round_up, negative) {
        // Toward +∞: a positive amount goes up by one micro-dollar; a negative
        // one is already rounded up by cutting the digits.
        (true, false) => micros.checked_add(Micros(1)).ok()?,
        _ => micros,
    };
    Some(if negative { Micros(-micros.0) } else { micros })
}

/// An upstream time: `YYYY-MM-DD HH:MM:SS` (provider-local, no zone, read as
/// UTC), ISO-8601 with an offset, or the SMS-Activate ban form
/// `YYYY-m-d H-i-s`. The placeholder `0000-00-00 00:00:00` and `""` are `None`.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() || text.starts_with("0000") {
        return None;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H-%M-%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .map(|naive| naive.and_utc())
}

impl Upstream for HeroSms {
    fn name(&self) -> &str {
        &self.name
    }

    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>> {
        Box::pin(async move {
            self.offers_with_report(service, country)
                .await
                .map(|(offers, _)| offers)
        })
    }

    fn balance(&self) -> UpstreamFuture<'_, Micros> {
        Box::pin(self.get_balance())
    }

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase> {
        Box::pin(self.buy_number(request))
    }

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot> {
        Box::pin(self.status(handle))
    }

    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle> {
        Box::pin(self.request_resend(handle))
    }

    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()> {
        Box::pin(self.finish_activation(handle))
    }

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome> {
        Box::pin(self.cancel_activation(handle))
    }

    /// `getActiveActivations`, filtered to the request's service and country.
    fn open_purchases_like<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Vec<ListedPurchase>>> {
        Box::pin(async move { self.open_activations_like(request).await.map(Some) })
    }

    /// `getActiveActivations`, paged, at most `limit`.
    fn active_purchases(&self, limit: usize) -> UpstreamFuture<'_, Option<Vec<Handle>>> {
        Box::pin(async move {
            let found = self.active_activations_upto(limit).await?;
            Ok(Some(found.into_iter().map(|(handle, _)| handle).collect()))
        })
    }

    /// `smsIncoming`: unsigned, so heard only from the configured addresses,
    /// and only a hint: the worker confirms with `getStatusV2` before anything
    /// is recorded.
    fn inbound(&self, request: &InboundRequest<'_>) -> Result<Option<InboundHint>, InboundError> {
        if self.webhook_sources.is_empty() {
            return Err(InboundError::NotConfigured);
        }
        if !source_allowed(&self.webhook_sources, request.peer) {
            return Err(InboundError::SourceNotAllowed);
        }
        let handle = parse_sms_incoming(request.body, request.now, self.webhook_tolerance)?;
        Ok(Some(InboundHint {
            handle,
            snapshot: None,
        }))
    }
}

/// Reads an `smsIncoming` push: `{activationId (string or integer), service,
/// text, code, country, receivedAt (ISO-8601)}`; the activation's handle, if
/// `receivedAt` lies within `tolerance` of `now`. The code and text are not
/// read: they are confirmed by a status read.
pub fn parse_sms_incoming(
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<Handle, InboundError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| InboundError::Malformed)?;
    let handle = value
        .get("activationId")
        .and_then(json_id)
        .ok_or(InboundError::Malformed)?;
    let received_at = value
        .get("receivedAt")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
        .ok_or(InboundError::Malformed)?
        .with_timezone(&Utc);
    let distance = (now - received_at)
        .abs()
        .to_std()
        .map_err(|_| InboundError::Stale)?;
    if distance > tolerance {
        return Err(InboundError::Stale);
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_micros_exactly() {
        let cases = [
            ("0.1200", Some(120_000)),
            ("0.12", Some(120_000)),
            ("0.0608", Some(60_800)),
            ("12", Some(12_000_000)),
            ("0.5632", Some(563_200)),
            ("1e-7", Some(1)),
            ("1.5e-3", Some(1_500)),
            ("2.5E2", Some(250_000_000)),
            ("1e+2", Some(100_000_000)),
            ("0.0000001", Some(1)),
            ("0.1234561", Some(123_457)),
            ("0.1234560000", Some(123_456)),
            ("-3.5", Some(-3_500_000)),
            ("-0.0000019", Some(-1)),
            ("0", Some(0)),
            ("", None),
            ("abc", None),
            ("1.2.3", None),
            ("1e999", None),
            ("99999999999999", None),
            ("0x10", None),
            (" 1", None),
        ];
        for (text, expect) in cases {
            assert_eq!(decimal_to_micros(text).map(|m| m.0), expect, "{text:?}");
        }
    }

    #[test]
    fn json_numbers_are_read_from_their_text() {
        let value: Value =
            serde_json::from_str(r#"[0.1200, 0.0608, 1e-7, 0.07, 3, "0.25"]"#).unwrap();
        let micros: Vec<_> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| json_micros(v).map(|m| m.0))
            .collect();
        assert_eq!(
            micros,
            [
                Some(120_000),
                Some(60_800),
                Some(1),
                Some(70_000),
                Some(3_000_000),
                Some(250_000)
            ]
        );
    }

    #[test]
    fn tokens_and_times() {
        assert_eq!(
            split_token("WRONG_MAX_PRICE:0.75"),
            Some(("WRONG_MAX_PRICE", Some("0.75")))
        );
        assert_eq!(split_token("BAD_KEY"), Some(("BAD_KEY", None)));
        assert_eq!(split_token("<html>"), None);
        assert_eq!(split_token("Bad key"), None);
        assert_eq!(
            parse_time("2026-05-11 09:20:00").unwrap().to_rfc3339(),
            "2026-05-11T09:20:00+00:00"
        );
        assert_eq!(
            parse_time("2026-05-11T09:20:00+03:00")
                .unwrap()
                .to_rfc3339(),
            "2026-05-11T06:20:00+00:00"
        );
        assert_eq!(
            parse_time("2026-5-1 9-20-00").unwrap().to_rfc3339(),
            "2026-05-01T09:20:00+00:00"
        );
        assert_eq!(parse_time("0000-00-00 00:00:00"), None);
        assert_eq!(parse_time(""), None);
    }
}
