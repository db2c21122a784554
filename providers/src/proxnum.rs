//! Proxnum: the reseller API (`…/api/v1`), JSON everywhere, `Authorization:
//! Bearer <token>`.
//!
//! Countries are SMS-Activate numeric ids and services SMS-Activate-like codes:
//! both are mapped through the [`Catalog`] (unknown upstream codes are skipped and
//! counted, never guessed).
//!
//! A purchase has two ids: Proxnum's local row `id` and the upstream
//! `activation_id` (used for status, cancel and resend). The [`Handle`] carries
//! both, plus the revision reached when the last resend was asked:
//! `{"activation_id":"4390520873","id":737,"rev":0}`. A resend may answer with a
//! **new** `activation_id`: the handle it returns then addresses the new one.
//!
//! Status strings (full enum unconfirmed): `completed` = a code was delivered,
//! `cancelled`/`canceled`, `expired`; anything else is waiting, unless a `code` is
//! already there. Proxnum has no finish call: finishing is local. Errors come as
//! `{"success":false,"code":"<snake_case>","message":…}` or `{"error":{…}}`, with
//! HTTP statuses that are not documented: the `code` decides, the status only
//! when there is none. An HTML page instead of JSON usually means a refused token.
//!
//! Revisions: Proxnum has none. The adapter counts them as for PVAPins (a digest
//! of the last code and message per activation, in memory; the revision reached
//! at a resend stored in the new handle). After a resend onto a new activation
//! whose SMS has not come yet, a poll reports `CodeReceived` with no code at the
//! revision already reached (the order still holds its previous code).
//!
//! Money: `amount_paid` / `sell_price` are JSON numbers with up to 7 decimals,
//! read from their decimal text and rounded up to a whole micro-dollar. Proxnum
//! takes no price cap: with a cap, `GET /resell/price` is read before buying.
//!
//! **No idempotency.** A buy that times out, gets a 5xx or an unreadable answer
//! may have bought (and Proxnum charges at purchase). The router reconciles it:
//! first by the call's late answer, then through
//! [`Upstream::open_purchases_like`], which pages through `GET
//! /resell/activations` (documented only as "paginated": the Laravel shapes
//! `{data, current_page, last_page}` nested under `activations` or at the top,
//! `{data, meta}`, a plain `activations` list and a bare list are all read)
//! and returns the open activations of the same service and country with the
//! time Proxnum says each was created. Activations a resend of this adapter
//! moved an order to are left out (the router never sees those ids). The
//! router claims one that no order holds and cancels it (see `router.rs`).
//! [`Upstream::find_purchase`] is not implemented: without the router's
//! knowledge of the activations this process holds, a search could adopt
//! another order's number. `date_created` has no zone: Proxnum's offset from
//! UTC is learnt from the `date_created` of this adapter's buys (see
//! [`ZonelessClock`]); until one buy has answered, listed activations have no
//! usable time and are never claimed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::catalog::{Catalog, MappingReport};
use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, ListedPurchase, Offer, Purchase, Snapshot, Upstream,
    UpstreamError, UpstreamFuture, UpstreamState, ZonelessClock,
};
use crate::wire::{json_usd, redact, retry_after, transport_error};

const MAX_HANDLE_LEN: usize = 512;
const MAX_BODY: usize = 1 << 20;
/// `GET /resell/activations`: items asked per page, and the most pages read
/// for one reconciliation (the newest come first).
const LIST_PAGE_SIZE: usize = 100;
const LIST_MAX_PAGES: usize = 20;
/// Activation ids a resend moved an order to, remembered for the listing:
/// at most this many (the oldest are dropped first; they are also dropped
/// after twice the lifetime).
const MAX_RESENT_IDS: usize = 100_000;

/// How to reach Proxnum.
#[derive(Clone)]
pub struct ProxnumConfig {
    pub name: String,
    /// The API base, up to and including `/api/v1`.
    pub base_url: Url,
    pub token: String,
    /// Maps Nexus countries to SMS-Activate ids and back.
    pub catalog: &'static Catalog,
    /// Finds the code in an SMS text when Proxnum gives none.
    pub extract_code: fn(&str) -> Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Reported as the purchase's expiry (integrations assume ~20 min).
    pub lifetime: Duration,
}

impl ProxnumConfig {
    /// Defaults: the shipped catalog, connect 2 s, call 8 s, 20-minute lifetime,
    /// [`code_extract::extract_code`](crate::code_extract::extract_code).
    pub fn new(name: &str, base_url: Url, token: &str) -> Self {
        Self {
            name: name.to_owned(),
            base_url,
            token: token.to_owned(),
            catalog: Catalog::shipped(),
            extract_code: crate::code_extract::extract_code,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(8),
            lifetime: Duration::from_secs(20 * 60),
        }
    }
}

impl std::fmt::Debug for ProxnumConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxnumConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ProxHandle {
    activation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default)]
    rev: u64,
}

impl ProxHandle {
    fn encode(&self) -> Result<Handle, UpstreamError> {
        let text =
            serde_json::to_string(self).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if text.len() > MAX_HANDLE_LEN {
            return Err(UpstreamError::Malformed(
                "Proxnum handle over 512 bytes".into(),
            ));
        }
        Ok(Handle(text))
    }

    fn decode(handle: &Handle) -> Result<Self, UpstreamError> {
        let parsed: Self = (handle.0.len() <= MAX_HANDLE_LEN)
            .then(|| serde_json::from_str(&handle.0).ok())
            .flatten()
            .ok_or_else(|| UpstreamError::Malformed("not a Proxnum handle".into()))?;
        if parsed.activation_id.is_empty()
            || !parsed
                .activation_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(UpstreamError::Malformed(
                "not a Proxnum activation id".into(),
            ));
        }
        Ok(parsed)
    }
}

/// A string or a number, as text (ids come both ways).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn u64_of(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str()?.trim().parse().ok())
}

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

/// A Proxnum failure: its `code` (lower case) and HTTP status.
#[derive(Debug)]
struct Failure {
    code: String,
    status: StatusCode,
    retry_after: Option<Duration>,
}

impl Failure {
    /// The typed error for every code but the operation-specific ones.
    fn to_error(&self) -> Option<UpstreamError> {
        let code = self.code.as_str();
        Some(match code {
            "no_numbers" | "no_number" | "no_numbers_available" | "out_of_stock" | "no_stock" => {
                UpstreamError::NoNumbers
            }
            "insufficient_balance" | "insufficient_funds" | "no_balance" | "low_balance" => {
                UpstreamError::NoBalance
            }
            "unauthenticated" | "unauthorized" | "invalid_token" | "invalid_api_key"
            | "token_invalid" | "forbidden" => UpstreamError::BadKey,
            "invalid_service" | "service_not_found" | "unknown_service" => {
                UpstreamError::BadService
            }
            "invalid_country" | "country_not_found" | "unknown_country" => {
                UpstreamError::BadCountry
            }
            "not_found" | "activation_not_found" => UpstreamError::NotFound,
            "too_many_requests" | "rate_limited" | "rate_limit_exceeded" | "throttled" => {
                UpstreamError::RateLimited {
                    retry_after: self.retry_after,
                }
            }
            // Whether this names the API or one service is unconfirmed: treated
            // as an unknown outcome, the safe reading for a buy.
            "service_unavailable" | "server_error" | "internal_error" | "maintenance" => {
                UpstreamError::Unavailable(format!("Proxnum: {code}"))
            }
            _ => return self.by_status(),
        })
    }

    fn by_status(&self) -> Option<UpstreamError> {
        Some(match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::BadKey,
            StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
                retry_after: self.retry_after,
            },
            StatusCode::NOT_FOUND => UpstreamError::NotFound,
            s if s.is_server_error() => {
                UpstreamError::Unavailable(format!("Proxnum answered HTTP {}", s.as_u16()))
            }
            _ => return None,
        })
    }
}

/// What the adapter remembers about an activation: a digest of its last
/// code/message (never the text) and the revision given to it.
struct Seen {
    digest: [u8; 32],
    revision: u64,
    at: Instant,
}

/// One status read, before revisions are counted.
struct Status {
    state: UpstreamState,
    code: Option<String>,
    text: Option<String>,
    phone: Option<String>,
}

/// The Proxnum adapter.
pub struct Proxnum {
    config: ProxnumConfig,
    client: reqwest::Client,
    seen: Mutex<HashMap<String, Seen>>,
    /// Proxnum's zone, learnt from the `date_created` of buys.
    clock: ZonelessClock,
    /// Activation ids a resend moved an order to → when.
    resent: Mutex<HashMap<String, Instant>>,
}

/// The items of one `/resell/activations` page and, if said, the last page.
fn list_page(value: &Value) -> Option<(&Vec<Value>, Option<u64>)> {
    let last_page = |v: &Value| {
        v.get("last_page")
            .or_else(|| v.pointer("/meta/last_page"))
            .or_else(|| v.pointer("/pagination/last_page"))
            .and_then(u64_of)
    };
    if let Value::Array(items) = value {
        return Some((items, None));
    }
    for key in ["activations", "data"] {
        match value.get(key) {
            Some(Value::Array(items)) => return Some((items, last_page(value))),
            Some(inner @ Value::Object(_)) => {
                if let Some(Value::Array(items)) = inner.get("data") {
                    return Some((items, last_page(inner).or_else(|| last_page(value))));
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether a listed status says the activation is over.
fn closed_status(status: &Value) -> bool {
    match status {
        Value::String(text) => matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "cancelled"
                | "canceled"
                | "cancel"
                | "refunded"
                | "expired"
                | "timeout"
                | "timed_out"
                | "finished"
                | "closed"
        ),
        _ => false,
    }
}

impl Proxnum {
    pub fn new(config: ProxnumConfig) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()?;
        Ok(Self {
            config,
            client,
            seen: Mutex::new(HashMap::new()),
            clock: ZonelessClock::default(),
            resent: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        let base = self.config.base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}"))
            .map_err(|_| UpstreamError::Malformed("bad Proxnum base URL".into()))
    }

    fn unexpected(&self, path: &str, what: &str, body: &str) -> UpstreamError {
        warn!(upstream = %self.config.name, path, what, body = %redact(body), "unexpected Proxnum answer");
        UpstreamError::Malformed(format!("Proxnum {path}: {what}"))
    }

    /// One call. `Ok` is a successful JSON body; `Err(Ok(failure))` a Proxnum
    /// failure for the caller to map; `Err(Err(error))` anything else.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, Result<Failure, UpstreamError>> {
        let mut request = self
            .client
            .request(method, self.url(path).map_err(Err)?)
            .bearer_auth(&self.config.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Err(transport_error("Proxnum", &e)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), Utc::now());
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Err(transport_error("Proxnum", &e)))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(Err(UpstreamError::Malformed(
                    "Proxnum answer over 1 MiB".into(),
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
            // Not JSON: a server error, or (usually) an HTML page for a refused token.
            let html = text.trim_start().starts_with('<');
            return Err(Err(if status.is_server_error() {
                UpstreamError::Unavailable(format!("Proxnum answered HTTP {}", status.as_u16()))
            } else if status == StatusCode::TOO_MANY_REQUESTS {
                UpstreamError::RateLimited { retry_after }
            } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                || (html && status.is_success())
            {
                UpstreamError::BadKey
            } else {
                self.unexpected(
                    path,
                    &format!("HTTP {} without JSON", status.as_u16()),
                    &text,
                )
            }));
        };
        let error_object = value.get("error").filter(|e| e.is_object());
        let failed = value.get("success").and_then(Value::as_bool) == Some(false)
            || error_object.is_some()
            || !status.is_success();
        if !failed {
            return Ok(value);
        }
        let code = error_object
            .and_then(|e| e.get("code"))
            .or_else(|| value.get("code"))
            .and_then(text_of)
            .map(|c| c.to_ascii_lowercase())
            .unwrap_or_default();
        let failure = Failure {
            code,
            status,
            retry_after,
        };
        debug!(upstream = %self.config.name, path, code = %failure.code, status = status.as_u16(), "Proxnum failure");
        Err(Ok(failure))
    }

    /// A call whose failures all map the common way.
    async fn call_mapped(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        match self.call(method, path, query, body).await {
            Ok(value) => Ok(value),
            Err(Err(error)) => Err(error),
            Err(Ok(failure)) => Err(self.map_failure(path, &failure)),
        }
    }

    fn map_failure(&self, path: &str, failure: &Failure) -> UpstreamError {
        failure.to_error().unwrap_or_else(|| {
            self.unexpected(
                path,
                &format!(
                    "unknown failure code {:?} (HTTP {})",
                    failure.code,
                    failure.status.as_u16()
                ),
                "",
            )
        })
    }

    /// An upstream time in UTC: exact with a zone, else placed by the learnt
    /// offset (`None` before one is learnt).
    fn upstream_time(&self, text: &str) -> Option<chrono::DateTime<Utc>> {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
            return Some(at.with_timezone(&Utc));
        }
        let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S"))
            .ok()?;
        self.clock.to_utc(naive.and_utc())
    }

    /// The open activations of `request`'s service and country, newest pages
    /// first, at most [`LIST_PAGE_SIZE`] × [`LIST_MAX_PAGES`] read. An item
    /// that names no service or country may be anyone's: it is listed without
    /// a time (never claimed, but no proof that nothing was bought).
    async fn open_activations_like(
        &self,
        request: &BuyRequest,
    ) -> Result<Vec<ListedPurchase>, UpstreamError> {
        if request.channel == Channel::Voice {
            return Ok(Vec::new());
        }
        let (Ok(service), Ok(country)) = (
            self.service_code(&request.service),
            self.country_id(request.country),
        ) else {
            return Ok(Vec::new());
        };
        let resent: std::collections::HashSet<String> = {
            let mut resent = self.resent.lock().unwrap_or_else(|p| p.into_inner());
            let keep = self.config.lifetime * 2;
            resent.retain(|_, at| at.elapsed() < keep);
            resent.keys().cloned().collect()
        };
        let path = "/resell/activations";
        let mut listed: Vec<ListedPurchase> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        let (mut unreadable, mut unmatchable) = (0usize, 0usize);
        for page in 1..=LIST_MAX_PAGES {
            let query = [
                ("page", page.to_string()),
                ("per_page", LIST_PAGE_SIZE.to_string()),
            ];
            let value = self.call_mapped(Method::GET, path, &query, None).await?;
            let Some((items, last_page)) = list_page(&value) else {
                return Err(self.unexpected(path, "no list of activations", &value.to_string()));
            };
            let mut fresh = 0;
            for item in items {
                let activation_id = item.get("activation_id").and_then(text_of);
                let phone = ["phone", "phone_number", "number"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(text_of))
                    .as_deref()
                    .and_then(phone_digits);
                let (Some(activation_id), Some(phone)) = (activation_id, phone) else {
                    unreadable += 1;
                    continue;
                };
                if !ids.insert(activation_id.clone()) {
                    continue;
                }
                fresh += 1;
                if item.get("status").is_some_and(closed_status) || resent.contains(&activation_id)
                {
                    continue;
                }
                let item_service = ["service", "service_code"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(text_of));
                let item_country = ["country", "country_id", "country_code"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(u64_of));
                let matchable = match (item_service, item_country) {
                    (Some(s), Some(c)) if s == service && c == u64::from(country) => true,
                    (Some(_), Some(_)) => continue,
                    _ => {
                        unmatchable += 1;
                        false
                    }
                };
                let handle = ProxHandle {
                    activation_id,
                    id: item.get("id").and_then(u64_of),
                    rev: 0,
                }
                .encode()?;
                let bought_at = ["date_created", "created_at"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str))
                    .and_then(|text| self.upstream_time(text));
                listed.push(ListedPurchase {
                    bought_at: bought_at.filter(|_| matchable),
                    purchase: Purchase {
                        handle,
                        phone,
                        // Unread, the cost is not needed to close the activation.
                        cost: ["amount_paid", "price", "cost"]
                            .iter()
                            .find_map(|k| item.get(*k).and_then(json_usd))
                            .unwrap_or_default(),
                        expires_at: bought_at.map(|at| at + self.config.lifetime),
                    },
                });
            }
            let last = last_page.is_some_and(|last| page as u64 >= last);
            if last || items.len() < LIST_PAGE_SIZE || fresh == 0 {
                break;
            }
        }
        if unreadable + unmatchable > 0 {
            warn!(
                upstream = %self.config.name,
                unreadable,
                unmatchable,
                "Proxnum activations: items without an id or phone skipped, items without a service or country not matched"
            );
        }
        Ok(listed)
    }

    fn service_code(&self, service: &ServiceCode) -> Result<String, UpstreamError> {
        // Nexus's service codes are the SMS-Activate codes Proxnum uses.
        self.config
            .catalog
            .is_known_service(service.as_str())
            .then(|| service.as_str().to_owned())
            .ok_or(UpstreamError::BadService)
    }

    fn country_id(&self, country: CountryCode) -> Result<u32, UpstreamError> {
        self.config
            .catalog
            .sms_activate_country(country)
            .ok_or(UpstreamError::BadCountry)
    }

    async fn read_status(&self, handle: &ProxHandle) -> Result<Status, UpstreamError> {
        let path = format!("/resell/virtual/{}/status", handle.activation_id);
        let value = self.call_mapped(Method::GET, &path, &[], None).await?;
        let activation = value.get("activation").filter(|a| a.is_object());
        let status = value
            .get("status")
            .or_else(|| activation.and_then(|a| a.get("status")))
            .and_then(text_of)
            .map(|s| s.to_ascii_lowercase());
        let msg = activation
            .and_then(|a| {
                a.get("msg")
                    .or_else(|| a.get("sms"))
                    .or_else(|| a.get("message"))
            })
            .or_else(|| value.get("msg"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let code = value
            .get("code")
            .or_else(|| activation.and_then(|a| a.get("code")))
            .and_then(text_of)
            // An error-style code never sits in a successful answer; a code is digits
            // (and maybe dashes).
            .filter(|c| c.chars().any(|ch| ch.is_ascii_digit()));
        let phone = activation
            .and_then(|a| a.get("phone"))
            .and_then(text_of)
            .as_deref()
            .and_then(phone_digits);
        let Some(status) = status else {
            return Err(self.unexpected(&path, "no status", &value.to_string()));
        };
        let state = match status.as_str() {
            "cancelled" | "canceled" | "cancel" | "refunded" => UpstreamState::Cancelled,
            "expired" | "timeout" | "timed_out" => UpstreamState::Expired,
            "completed" | "received" | "success" | "code_received" => UpstreamState::CodeReceived,
            _ if code.is_some() => UpstreamState::CodeReceived,
            _ => UpstreamState::Waiting,
        };
        if state != UpstreamState::CodeReceived {
            return Ok(Status {
                state,
                code: None,
                text: None,
                phone,
            });
        }
        let is_placeholder = |m: &String| m.trim().eq_ignore_ascii_case("waiting sms");
        let text = msg.filter(|m| !is_placeholder(m) && !m.trim().is_empty());
        let code = code.or_else(|| text.as_deref().and_then(self.config.extract_code));
        Ok(Status {
            state,
            code,
            text,
            phone,
        })
    }

    /// A status read with its revision (counted by the adapter), and the phone
    /// number the status names (if any).
    async fn poll_handle(
        &self,
        handle: &ProxHandle,
    ) -> Result<(Snapshot, Option<String>), UpstreamError> {
        let status = self.read_status(handle).await?;
        let phone = status.phone.clone();
        self.count_revision(handle, status)
            .map(|snapshot| (snapshot, phone))
    }

    fn count_revision(
        &self,
        handle: &ProxHandle,
        status: Status,
    ) -> Result<Snapshot, UpstreamError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let known = seen
            .get(&handle.activation_id)
            .map_or(0, |s| s.revision)
            .max(handle.rev);
        let snapshot = |state, code, text, revision| Snapshot {
            state,
            code,
            text,
            revision,
            by_call: false,
        };
        match status.state {
            UpstreamState::CodeReceived => {}
            // After a resend onto a new activation, its first code is not there yet:
            // the order still holds the previous one.
            UpstreamState::Waiting if known > 0 => {
                return Ok(snapshot(UpstreamState::CodeReceived, None, None, known))
            }
            UpstreamState::Expired if known > 0 => {
                return Ok(snapshot(UpstreamState::Completed, None, None, known))
            }
            state => return Ok(snapshot(state, None, None, known)),
        }
        let mut hasher = Sha256::new();
        hasher.update(status.code.as_deref().unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(status.text.as_deref().unwrap_or("").as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let revision = match seen.get(&handle.activation_id) {
            Some(s) if s.digest == digest => s.revision.max(handle.rev),
            Some(s) => s.revision.max(handle.rev) + 1,
            None => handle.rev + 1,
        };
        let now = Instant::now();
        let keep = self.config.lifetime * 2;
        seen.retain(|_, s| now.duration_since(s.at) < keep);
        seen.insert(
            handle.activation_id.clone(),
            Seen {
                digest,
                revision,
                at: now,
            },
        );
        Ok(snapshot(
            UpstreamState::CodeReceived,
            status.code,
            status.text,
            revision,
        ))
    }

    async fn offers_inner(
        &self,
        service: Option<&ServiceCode>,
        country: Option<CountryCode>,
    ) -> Result<Vec<Offer>, UpstreamError> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(("service", self.service_code(service)?));
        }
        if let Some(country) = country {
            query.push(("country", self.country_id(country)?.to_string()));
        }
        let value = self
            .call_mapped(Method::GET, "/prices", &query, None)
            .await?;
        let Some(prices) = value.get("prices").and_then(Value::as_object) else {
            return Err(self.unexpected("/prices", "no prices", &value.to_string()));
        };
        let mut report = MappingReport::default();
        let mut offers = Vec::new();
        for (outer_key, inner) in prices {
            let Some(inner) = inner.as_object() else {
                continue;
            };
            // Documented as country → service; tolerated the other way round.
            let country_first = outer_key.trim().parse::<u32>().is_ok();
            for (inner_key, entry) in inner {
                let (raw_country, raw_service) = if country_first {
                    (outer_key, inner_key)
                } else {
                    (inner_key, outer_key)
                };
                let Some(found_country) = self
                    .config
                    .catalog
                    .map_sms_activate_country(raw_country, &mut report)
                else {
                    continue;
                };
                let Some(found_service) = self.config.catalog.map_service(raw_service, &mut report)
                else {
                    continue;
                };
                if service.is_some_and(|s| *s != found_service)
                    || country.is_some_and(|c| c != found_country)
                {
                    continue;
                }
                let Some(cost) = entry
                    .get("sell_price")
                    .or_else(|| entry.get("price"))
                    .and_then(json_usd)
                else {
                    continue;
                };
                let stock = entry
                    .get("available")
                    .or_else(|| entry.get("count"))
                    .and_then(u64_of)
                    .unwrap_or(0);
                offers.push(Offer {
                    service: found_service,
                    country: found_country,
                    cost,
                    stock,
                });
            }
        }
        if !report.is_clean() {
            debug!(upstream = %self.config.name, ?report, "Proxnum codes skipped");
        }
        Ok(offers)
    }

    async fn buy_inner(&self, request: &BuyRequest) -> Result<Purchase, UpstreamError> {
        if request.channel == Channel::Voice {
            return Err(UpstreamError::BadService);
        }
        let service = self.service_code(&request.service)?;
        let country = self.country_id(request.country)?;
        if let Some(max) = request.max_cost {
            // Proxnum takes no price cap: the price is checked before buying.
            let query = [
                ("service", service.clone()),
                ("country", country.to_string()),
            ];
            let value = self
                .call_mapped(Method::GET, "/resell/price", &query, None)
                .await?;
            let price = value.get("sell_price").and_then(json_usd).ok_or_else(|| {
                self.unexpected("/resell/price", "no sell_price", &value.to_string())
            })?;
            if price > max {
                return Err(UpstreamError::PriceTooHigh { min: Some(price) });
            }
        }
        let path = "/resell/virtual/buy";
        let value = self
            .call_mapped(
                Method::POST,
                path,
                &[],
                Some(json!({ "service": service, "country": country })),
            )
            .await?;
        let received_at = Utc::now();
        let Some(activation) = value.get("activation").filter(|a| a.is_object()) else {
            return Err(self.unexpected(path, "no activation", &value.to_string()));
        };
        // `date_created` is Proxnum's "now", in its own zone.
        if let Some(written) = activation
            .get("date_created")
            .and_then(Value::as_str)
            .and_then(|text| {
                chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()
            })
        {
            self.clock.learn(written.and_utc(), received_at);
        }
        let activation_id = activation.get("activation_id").and_then(text_of);
        let id = activation.get("id").and_then(u64_of);
        let phone = activation
            .get("phone")
            .and_then(text_of)
            .as_deref()
            .and_then(phone_digits);
        let cost = activation.get("amount_paid").and_then(json_usd);
        let (Some(activation_id), Some(phone), Some(cost)) = (activation_id, phone, cost) else {
            return Err(self.unexpected(
                path,
                "activation without id, phone or amount",
                &value.to_string(),
            ));
        };
        let handle = ProxHandle {
            activation_id,
            id,
            rev: 0,
        }
        .encode()?;
        Ok(Purchase {
            handle,
            phone,
            cost,
            expires_at: Some(Utc::now() + self.config.lifetime),
        })
    }

    async fn resend_inner(&self, handle: &ProxHandle) -> Result<Handle, UpstreamError> {
        let (current, old_phone) = self.poll_handle(handle).await?;
        if matches!(
            current.state,
            UpstreamState::Cancelled | UpstreamState::Expired
        ) {
            return Err(UpstreamError::NotFound);
        }
        let path = "/resell/virtual/resend";
        let value = self
            .call_mapped(
                Method::POST,
                path,
                &[],
                Some(json!({ "activation_id": handle.activation_id })),
            )
            .await?;
        let activation = value.get("activation").filter(|a| a.is_object());
        let new_id = activation
            .and_then(|a| a.get("activation_id"))
            .and_then(text_of);
        let local_id = activation.and_then(|a| a.get("id")).and_then(u64_of);
        let mut next = handle.clone();
        next.rev = current.revision.max(handle.rev);
        if let Some(new_id) = new_id.filter(|id| *id != handle.activation_id) {
            {
                let mut resent = self.resent.lock().unwrap_or_else(|p| p.into_inner());
                if resent.len() >= MAX_RESENT_IDS {
                    if let Some(oldest) = resent
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(id, _)| id.clone())
                    {
                        resent.remove(&oldest);
                    }
                }
                resent.insert(new_id.clone(), Instant::now());
            }
            next.activation_id = new_id;
            next.id = local_id.or(handle.id);
            debug!(upstream = %self.config.name, "Proxnum resend moved the order to a new activation");
        }
        if let (Some(new_phone), Some(old)) = (
            activation.and_then(|a| a.get("phone")).and_then(text_of),
            old_phone,
        ) {
            if phone_digits(&new_phone).as_deref() != Some(old.as_str()) {
                // The trait cannot hand back a new number: said loudly (no digits).
                warn!(upstream = %self.config.name, "Proxnum resend changed the phone number");
            }
        }
        next.encode()
    }

    async fn cancel_inner(&self, handle: &ProxHandle) -> Result<CancelOutcome, UpstreamError> {
        let path = "/resell/virtual/cancel";
        match self
            .call(
                Method::POST,
                path,
                &[],
                Some(json!({ "activation_id": handle.activation_id })),
            )
            .await
        {
            Ok(value) => match value
                .get("code")
                .and_then(text_of)
                .map(|c| c.to_ascii_lowercase())
            {
                None => Ok(CancelOutcome::Cancelled),
                Some(code)
                    if code == "cancel_accepted" || code == "cancelled" || code == "canceled" =>
                {
                    Ok(CancelOutcome::Cancelled)
                }
                Some(_) => Err(self.unexpected(path, "unknown success code", &value.to_string())),
            },
            Err(Err(error)) => Err(error),
            Err(Ok(failure))
                if failure.code == "cancel_rejected" || failure.code == "cannot_cancel" =>
            {
                // Too early, or a code is there: the status tells which.
                let status = self.read_status(handle).await?;
                Ok(match status.state {
                    UpstreamState::CodeReceived => CancelOutcome::AlreadyHasCode,
                    UpstreamState::Waiting => CancelOutcome::TooEarly { retry_after: None },
                    _ => CancelOutcome::AlreadyClosed,
                })
            }
            Err(Ok(failure))
                if matches!(
                    failure.code.as_str(),
                    "already_cancelled" | "already_canceled" | "expired"
                ) =>
            {
                Ok(CancelOutcome::AlreadyClosed)
            }
            Err(Ok(failure)) => Err(self.map_failure(path, &failure)),
        }
    }
}

impl Upstream for Proxnum {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// `GET /prices`: `sell_price` (what Proxnum charges a reseller) and
    /// `available`.
    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>> {
        Box::pin(self.offers_inner(service, country))
    }

    /// `GET /user/balance` (shape unconfirmed: `balance` at the top, under
    /// `data` or under `user`, a number or a decimal string).
    fn balance(&self) -> UpstreamFuture<'_, Micros> {
        Box::pin(async move {
            let value = self
                .call_mapped(Method::GET, "/user/balance", &[], None)
                .await?;
            let amount = [
                value.get("balance"),
                value.pointer("/data/balance"),
                value.pointer("/user/balance"),
                value.get("data"),
            ]
            .into_iter()
            .flatten()
            .find_map(json_usd);
            amount.ok_or_else(|| self.unexpected("/user/balance", "no balance", &value.to_string()))
        })
    }

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase> {
        Box::pin(self.buy_inner(request))
    }

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot> {
        Box::pin(async move { Ok(self.poll_handle(&ProxHandle::decode(handle)?).await?.0) })
    }

    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle> {
        Box::pin(async move { self.resend_inner(&ProxHandle::decode(handle)?).await })
    }

    /// Proxnum has no finish call: completion is local.
    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()> {
        Box::pin(async move {
            ProxHandle::decode(handle)?;
            Ok(())
        })
    }

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome> {
        Box::pin(async move { self.cancel_inner(&ProxHandle::decode(handle)?).await })
    }

    /// `GET /resell/activations`, filtered to the request's service and country.
    fn open_purchases_like<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Vec<ListedPurchase>>> {
        Box::pin(async move { self.open_activations_like(request).await.map(Some) })
    }

    /// The `activation_id`: a handle also carries the local id and revision.
    fn activation_key(&self, handle: &Handle) -> String {
        ProxHandle::decode(handle).map_or_else(|_| handle.0.clone(), |h| h.activation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_refuse_garbage() {
        let handle = ProxHandle {
            activation_id: "4390520873".into(),
            id: Some(737),
            rev: 2,
        };
        assert_eq!(
            ProxHandle::decode(&handle.encode().unwrap()).unwrap(),
            handle
        );
        for bad in [
            "",
            "4390520873",
            "{}",
            r#"{"activation_id":"../x"}"#,
            r#"{"activation_id":""}"#,
        ] {
            assert!(
                matches!(
                    ProxHandle::decode(&Handle(bad.into())),
                    Err(UpstreamError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
