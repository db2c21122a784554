//! SMSCode: a REST API under `/v1` or `/v2` (Bearer token), with idempotency
//! keys on purchases and HMAC-signed webhooks.
//!
//! - Envelope: `{"success":true,"data":…}` / `{"success":false,"error":{"code",
//!   "message","details"?}}`; a non-2xx status or `success:false` is a failure,
//!   and failures carry stable codes with fixed statuses (mapped one by one).
//! - Purchases send [`BuyRequest::idempotency_key`] in the `idempotency-key`
//!   header, so a retried buy (and [`Upstream::find_purchase`]) replays the same
//!   order instead of buying twice. A key outside `^[A-Za-z0-9_-]{1,128}$` is
//!   replaced by a deterministic digest of itself.
//! - The handle is the order id in decimal (`"90210"`); status reads use
//!   `GET /v1/orders/{id}` whatever the configured version (FX-free, as the
//!   official SDK does), and `sms_revision` is the snapshot's revision.
//! - Money: `/v1` speaks whole rupiah (IDR integers), converted with the
//!   configured integer rate [`SmsCodeConfig::idr_per_usd`] (the unit of the
//!   API's own `meta.fx.rate`): micro-dollars = IDR × 10⁶ ÷ rate, costs rounded
//!   up, balances down; a price cap goes out as IDR rounded down. `/v2` Money
//!   objects are read from their USD `amount` string exactly (their own FX), or
//!   from `canonical_amount` (IDR) with the configured rate when the amount is
//!   not in USD.
//! - Webhooks: [`verify_webhook`] checks `X-Webhook-Signature: sha256=<hex>` in
//!   constant time and the event's age, and yields a hint (order id, revision)
//!   that tells the worker to read the order: the webhook never carries the code
//!   into Nexus by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::money::{Micros, MICROS_PER_USD};
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::herosms::decimal_to_micros;
use crate::upstream::{
    BuyRequest, CancelOutcome, Handle, Offer, Purchase, Snapshot, Upstream, UpstreamError,
    UpstreamFuture, UpstreamState,
};
use crate::upstream::{InboundError, InboundHint, InboundRequest};
use crate::wire::{redact, retry_after, transport_error};

const MAX_BODY: usize = 1 << 20;
/// Pages of the product catalog read for one offers call, at most.
const MAX_PRODUCT_PAGES: u64 = 20;
const PRODUCT_PAGE_LIMIT: u64 = 1000;

/// Which surface to use for everything but status reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsCodeApi {
    /// Money in whole rupiah.
    V1,
    /// Money as `{amount (USD string), canonical_amount (IDR)}` objects.
    V2,
}

impl SmsCodeApi {
    fn path(self) -> &'static str {
        match self {
            SmsCodeApi::V1 => "v1",
            SmsCodeApi::V2 => "v2",
        }
    }
}

/// How to reach SMSCode and how Nexus's codes map to its ids.
#[derive(Clone)]
pub struct SmsCodeConfig {
    pub name: String,
    /// The API root, before `/v1` or `/v2`.
    pub base_url: Url,
    pub token: String,
    pub api: SmsCodeApi,
    /// Whole rupiah per US dollar (e.g. 16000), the unit of `meta.fx.rate`.
    pub idr_per_usd: u64,
    /// Nexus country → SMSCode `country_id`.
    pub countries: HashMap<CountryCode, u64>,
    /// Nexus service → SMSCode `platform_id`.
    pub platforms: HashMap<ServiceCode, u64>,
    /// Finds the code in an SMS text when SMSCode classified none.
    pub extract_code: fn(&str) -> Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// The secret SMSCode signs its webhooks with (set with `PATCH /vN/webhook`);
    /// `None`: webhooks are refused.
    pub webhook_secret: Option<String>,
    /// Webhook events further than this from now are refused as stale.
    pub webhook_tolerance: Duration,
}

impl SmsCodeConfig {
    /// Defaults: `/v1`, connect 2 s, call 8 s,
    /// [`code_extract::extract_code`](crate::code_extract::extract_code).
    pub fn new(
        name: &str,
        base_url: Url,
        token: &str,
        idr_per_usd: u64,
        countries: HashMap<CountryCode, u64>,
        platforms: HashMap<ServiceCode, u64>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base_url,
            token: token.to_owned(),
            api: SmsCodeApi::V1,
            idr_per_usd,
            countries,
            platforms,
            extract_code: crate::code_extract::extract_code,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(8),
            webhook_secret: None,
            webhook_tolerance: DEFAULT_WEBHOOK_TOLERANCE,
        }
    }
}

impl std::fmt::Debug for SmsCodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsCodeConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("api", &self.api)
            .field("idr_per_usd", &self.idr_per_usd)
            .field("countries", &self.countries.len())
            .field("platforms", &self.platforms.len())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("has_webhook_secret", &self.webhook_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// Whole rupiah to micro-dollars at `idr_per_usd`, rounded up (`round_up`) or
/// down. `None` for a zero rate or an amount out of range.
pub fn idr_to_micros(idr: i64, idr_per_usd: u64, round_up: bool) -> Option<Micros> {
    if idr_per_usd == 0 {
        return None;
    }
    let scaled = i128::from(idr) * i128::from(MICROS_PER_USD);
    let rate = i128::from(idr_per_usd);
    let (quotient, remainder) = (scaled.div_euclid(rate), scaled.rem_euclid(rate));
    let micros = if round_up && remainder != 0 {
        quotient + 1
    } else {
        quotient
    };
    i64::try_from(micros).ok().map(Micros)
}

/// Micro-dollars to whole rupiah at `idr_per_usd`, rounded down (a price cap
/// never grows in conversion).
pub fn micros_to_idr_floor(micros: Micros, idr_per_usd: u64) -> i64 {
    let scaled = i128::from(micros.0) * i128::from(idr_per_usd);
    i64::try_from(scaled.div_euclid(i128::from(MICROS_PER_USD))).unwrap_or(i64::MAX)
}

/// A price cap as a v2 USD string: 4 decimals, rounded down.
fn usd_cap_text(micros: Micros) -> String {
    let hundredths_of_cents = micros.0.max(0) / 100;
    format!(
        "{}.{:04}",
        hundredths_of_cents / 10_000,
        hundredths_of_cents % 10_000
    )
}

/// The key SMSCode accepts: the caller's own if it fits the pattern, else a
/// digest of it (the same key always gives the same header).
pub fn idempotency_header(key: &str) -> String {
    let fits = (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        key.to_owned()
    } else {
        format!("nx-{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

fn order_id(handle: &Handle) -> Result<u64, UpstreamError> {
    let text = handle.0.as_str();
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UpstreamError::Malformed("not an SMSCode order id".into()));
    }
    text.parse()
        .map_err(|_| UpstreamError::Malformed("not an SMSCode order id".into()))
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time_of(value: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value?.as_str()?.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An SMSCode failure.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: String,
    message: String,
    details: Value,
    retry_after: Option<Duration>,
}

/// The order fields Nexus reads.
#[derive(Debug)]
struct Order {
    id: u64,
    status: String,
    phone: Option<String>,
    amount: Option<Value>,
    otp_code: Option<String>,
    otp_message: Option<String>,
    sms_revision: u64,
    expires_at: Option<DateTime<Utc>>,
    cancel_available_at: Option<DateTime<Utc>>,
    failed_reason: Option<String>,
}

impl Order {
    fn from_json(value: &Value) -> Option<Order> {
        let id = value
            .get("id")
            .or_else(|| value.get("order_id"))?
            .as_u64()?;
        let status = value.get("status")?.as_str()?.trim().to_ascii_uppercase();
        Some(Order {
            id,
            status,
            phone: value.get("phone_number").and_then(text_of),
            amount: value.get("amount").filter(|v| !v.is_null()).cloned(),
            otp_code: value.get("otp_code").and_then(text_of),
            otp_message: value.get("otp_message").and_then(text_of),
            sms_revision: value
                .get("sms_revision")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            expires_at: time_of(value.get("expires_at")),
            cancel_available_at: time_of(value.get("cancel_available_at")),
            failed_reason: value.get("failed_reason").and_then(text_of),
        })
    }

    fn state(&self) -> Option<UpstreamState> {
        Some(match self.status.as_str() {
            "ACTIVE" => UpstreamState::Waiting,
            "OTP_RECEIVED" => UpstreamState::CodeReceived,
            "COMPLETED" => UpstreamState::Completed,
            "CANCELED" | "CANCELLED" => UpstreamState::Cancelled,
            "EXPIRED" => UpstreamState::Expired,
            _ => return None,
        })
    }

    fn has_sms(&self) -> bool {
        self.sms_revision > 0 || self.otp_code.is_some() || self.otp_message.is_some()
    }
}

/// The SMSCode adapter.
pub struct SmsCode {
    config: SmsCodeConfig,
    client: reqwest::Client,
    /// (service, country) → `catalog_product_id`, learnt from the catalog.
    catalog_products: Mutex<HashMap<(ServiceCode, CountryCode), u64>>,
}

impl SmsCode {
    pub fn new(config: SmsCodeConfig) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()?;
        Ok(Self {
            config,
            client,
            catalog_products: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, version: SmsCodeApi, path: &str) -> Result<Url, UpstreamError> {
        let base = self.config.base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{}{path}", version.path()))
            .map_err(|_| UpstreamError::Malformed("bad SMSCode base URL".into()))
    }

    fn unexpected(&self, path: &str, what: &str, body: &str) -> UpstreamError {
        warn!(upstream = %self.config.name, path, what, body = %redact(body), "unexpected SMSCode answer");
        UpstreamError::Malformed(format!("SMSCode {path}: {what}"))
    }

    /// One call: `Ok(data)`, `Err(Ok(failure))` for an SMSCode failure the caller
    /// maps, `Err(Err(error))` for anything else.
    async fn call(
        &self,
        method: Method,
        version: SmsCodeApi,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Result<Failure, UpstreamError>> {
        let mut request = self
            .client
            .request(method, self.url(version, path).map_err(Err)?)
            .bearer_auth(&self.config.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Err(transport_error("SMSCode", &e)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), Utc::now());
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(64).collect::<String>());
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Err(transport_error("SMSCode", &e)))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(Err(UpstreamError::Malformed(
                    "SMSCode answer over 1 MiB".into(),
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        let value: Option<Value> = serde_json::from_str(text.trim()).ok();
        let success = value
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(Value::as_bool);
        if status.is_success() && success == Some(true) {
            let value = value.unwrap_or_default();
            return Ok(value.get("data").cloned().unwrap_or(Value::Null));
        }
        let error = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .filter(|e| e.is_object());
        let Some(error) = error else {
            // No envelope: statuses decide (413 and proxies answer this way).
            return Err(Err(if status.is_server_error() {
                UpstreamError::Unavailable(format!("SMSCode answered HTTP {}", status.as_u16()))
            } else if status == StatusCode::TOO_MANY_REQUESTS {
                UpstreamError::RateLimited { retry_after }
            } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                UpstreamError::BadKey
            } else {
                self.unexpected(
                    path,
                    &format!("HTTP {} without an envelope", status.as_u16()),
                    &text,
                )
            }));
        };
        let failure = Failure {
            status,
            code: error
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_uppercase(),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
            details: error.get("details").cloned().unwrap_or(Value::Null),
            retry_after,
        };
        debug!(upstream = %self.config.name, path, code = %failure.code, status = status.as_u16(), request_id = ?request_id, "SMSCode failure");
        Err(Ok(failure))
    }

    /// The typed error of a failure, every code mapped.
    fn map_failure(&self, path: &str, failure: &Failure) -> UpstreamError {
        let retry_after = failure.retry_after;
        match failure.code.as_str() {
            "UNAUTHORIZED" | "FORBIDDEN" => UpstreamError::BadKey,
            "NOT_FOUND" => UpstreamError::NotFound,
            "NO_OFFER_AVAILABLE" => UpstreamError::NoNumbers,
            "INSUFFICIENT_BALANCE" => UpstreamError::NoBalance,
            "RATE_LIMIT_EXCEEDED" => UpstreamError::RateLimited { retry_after },
            "TEMP_BANNED_ABUSE_GUARD" => {
                let from_details = failure
                    .details
                    .get("retry_after_seconds")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs);
                let until = time_of(failure.details.get("until"))
                    .map(|t| (t - Utc::now()).to_std().unwrap_or_default());
                UpstreamError::Banned {
                    retry_after: from_details.or(retry_after).or(until),
                }
            }
            // The outcome is not known (or the request is still running): a buy
            // is replayed with the same key later.
            "SERVICE_UNAVAILABLE"
            | "FX_RATE_UNAVAILABLE"
            | "INTERNAL_ERROR"
            | "PROVIDER_ERROR"
            | "REQUEST_IN_PROGRESS" => {
                UpstreamError::Unavailable(format!("SMSCode {}", failure.code))
            }
            // Refusals the trait has no variant for: never definite, logged.
            "VALIDATION_ERROR"
            | "IDEMPOTENCY_KEY_REUSED"
            | "CONFLICT"
            | "CANCEL_TOO_EARLY"
            | "PAYLOAD_TOO_LARGE" => self.unexpected(path, &failure.code, &failure.message),
            _ => match failure.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::BadKey,
                StatusCode::NOT_FOUND => UpstreamError::NotFound,
                StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited { retry_after },
                s if s.is_server_error() => {
                    UpstreamError::Unavailable(format!("SMSCode answered HTTP {}", s.as_u16()))
                }
                s => self.unexpected(
                    path,
                    &format!("unknown code {:?} (HTTP {})", failure.code, s.as_u16()),
                    &failure.message,
                ),
            },
        }
    }

    async fn call_mapped(
        &self,
        method: Method,
        version: SmsCodeApi,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        match self.call(method, version, path, query, body, None).await {
            Ok(data) => Ok(data),
            Err(Err(error)) => Err(error),
            Err(Ok(failure)) => Err(self.map_failure(path, &failure)),
        }
    }

    /// An amount as SMSCode writes it (v1 IDR integer or v2 Money).
    fn money(&self, value: &Value, round_up: bool) -> Option<Micros> {
        match value {
            Value::Number(n) => idr_to_micros(n.as_i64()?, self.config.idr_per_usd, round_up),
            Value::Object(money) => {
                let usd = money.get("currency").and_then(Value::as_str) == Some("USD");
                match money.get("amount").and_then(Value::as_str) {
                    Some(amount) if usd => {
                        let micros = decimal_to_micros(amount.trim())?;
                        Some(micros)
                    }
                    _ => {
                        let idr = money.get("canonical_amount")?.as_i64()?;
                        idr_to_micros(idr, self.config.idr_per_usd, round_up)
                    }
                }
            }
            _ => None,
        }
    }

    async fn read_order(&self, id: u64) -> Result<Order, UpstreamError> {
        let path = format!("/orders/{id}");
        let data = self
            .call_mapped(Method::GET, SmsCodeApi::V1, &path, &[], None)
            .await?;
        Order::from_json(&data)
            .ok_or_else(|| self.unexpected(&path, "not an order", &data.to_string()))
    }

    fn ids(
        &self,
        service: &ServiceCode,
        country: CountryCode,
    ) -> Result<(u64, u64), UpstreamError> {
        let platform = *self
            .config
            .platforms
            .get(service)
            .ok_or(UpstreamError::BadService)?;
        let country = *self
            .config
            .countries
            .get(&country)
            .ok_or(UpstreamError::BadCountry)?;
        Ok((platform, country))
    }

    /// Products of the catalog (all pages, bounded).
    async fn products(&self, query: Vec<(&str, String)>) -> Result<Vec<Value>, UpstreamError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PRODUCT_PAGES {
            let mut query = query.clone();
            query.push(("limit", PRODUCT_PAGE_LIMIT.to_string()));
            query.push(("page", page.to_string()));
            query.push(("sort", "price_asc".to_owned()));
            let data = self
                .call_mapped(
                    Method::GET,
                    self.config.api,
                    "/catalog/products",
                    &query,
                    None,
                )
                .await?;
            let Value::Array(items) = data else {
                return Err(self.unexpected("/catalog/products", "not a list", &data.to_string()));
            };
            let count = items.len() as u64;
            all.extend(items);
            if count < PRODUCT_PAGE_LIMIT {
                break;
            }
        }
        Ok(all)
    }

    async fn catalog_product(
        &self,
        service: &ServiceCode,
        country: CountryCode,
    ) -> Result<u64, UpstreamError> {
        let key = (service.clone(), country);
        if let Some(id) = self
            .catalog_products
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(*id);
        }
        let (platform, country_id) = self.ids(service, country)?;
        let products = self
            .products(vec![
                ("country_id", country_id.to_string()),
                ("platform_id", platform.to_string()),
            ])
            .await?;
        let id = products
            .iter()
            .filter(|p| {
                p.get("country_id")
                    .and_then(Value::as_u64)
                    .is_none_or(|c| c == country_id)
            })
            .filter(|p| {
                p.get("platform_id")
                    .and_then(Value::as_u64)
                    .is_none_or(|s| s == platform)
            })
            .find_map(|p| p.get("catalog_product_id").and_then(Value::as_u64))
            .ok_or(UpstreamError::NoNumbers)?;
        self.catalog_products
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, id);
        Ok(id)
    }

    async fn offers_inner(
        &self,
        service: Option<&ServiceCode>,
        country: Option<CountryCode>,
    ) -> Result<Vec<Offer>, UpstreamError> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push((
                "platform_id",
                self.config
                    .platforms
                    .get(service)
                    .ok_or(UpstreamError::BadService)?
                    .to_string(),
            ));
        }
        if let Some(country) = country {
            query.push((
                "country_id",
                self.config
                    .countries
                    .get(&country)
                    .ok_or(UpstreamError::BadCountry)?
                    .to_string(),
            ));
        }
        let products = self.products(query).await?;
        let services: HashMap<u64, &ServiceCode> = self
            .config
            .platforms
            .iter()
            .map(|(s, id)| (*id, s))
            .collect();
        let countries: HashMap<u64, CountryCode> = self
            .config
            .countries
            .iter()
            .map(|(c, id)| (*id, *c))
            .collect();
        let mut best: HashMap<(ServiceCode, CountryCode), Offer> = HashMap::new();
        let mut skipped = 0u64;
        for product in &products {
            if product.get("active").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let found = product
                .get("platform_id")
                .and_then(Value::as_u64)
                .and_then(|id| services.get(&id))
                .zip(
                    product
                        .get("country_id")
                        .and_then(Value::as_u64)
                        .and_then(|id| countries.get(&id)),
                );
            let Some((found_service, found_country)) = found else {
                skipped += 1;
                continue;
            };
            if service.is_some_and(|s| s != *found_service)
                || country.is_some_and(|c| c != *found_country)
            {
                continue;
            }
            let stock = product
                .get("available")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let Some(cost) = product.get("price").and_then(|p| self.money(p, true)) else {
                skipped += 1;
                continue;
            };
            if let Some(id) = product.get("catalog_product_id").and_then(Value::as_u64) {
                self.catalog_products
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(((*found_service).clone(), *found_country), id);
            }
            let entry = best
                .entry(((*found_service).clone(), *found_country))
                .or_insert(Offer {
                    service: (*found_service).clone(),
                    country: *found_country,
                    cost,
                    stock: 0,
                });
            // The cheapest price with stock; stock summed over products.
            if stock > 0 && (entry.stock == 0 || cost < entry.cost) {
                entry.cost = cost;
            }
            entry.stock = entry.stock.saturating_add(stock);
        }
        if skipped > 0 {
            debug!(upstream = %self.config.name, skipped, "SMSCode products without a mapping skipped");
        }
        let mut offers: Vec<Offer> = best.into_values().collect();
        offers
            .sort_by(|a, b| (a.service.as_str(), a.country).cmp(&(b.service.as_str(), b.country)));
        Ok(offers)
    }

    async fn buy_inner(&self, request: &BuyRequest) -> Result<Purchase, UpstreamError> {
        if request.channel == Channel::Voice {
            return Err(UpstreamError::BadService);
        }
        self.ids(&request.service, request.country)?;
        let catalog_product = self
            .catalog_product(&request.service, request.country)
            .await?;
        let mut body = json!({ "catalog_product_id": catalog_product, "quantity": 1 });
        if let Some(max) = request.max_cost {
            body["max_price"] = match self.config.api {
                SmsCodeApi::V1 => json!(micros_to_idr_floor(max, self.config.idr_per_usd)),
                SmsCodeApi::V2 => json!(usd_cap_text(max)),
            };
        }
        let key = idempotency_header(&request.idempotency_key);
        let path = "/orders/create";
        let data = match self
            .call(
                Method::POST,
                self.config.api,
                path,
                &[],
                Some(body),
                Some(&key),
            )
            .await
        {
            Ok(data) => data,
            Err(Err(error)) => return Err(error),
            Err(Ok(failure)) => return Err(self.map_failure(path, &failure)),
        };
        let order = data
            .get("orders")
            .and_then(Value::as_array)
            .and_then(|orders| orders.first())
            .map(|o| {
                Order::from_json(o)
                    .ok_or_else(|| self.unexpected(path, "not an order", &o.to_string()))
            })
            .transpose()?;
        let Some(order) = order else {
            let failed = data
                .get("failed_count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            return Err(if failed > 0 {
                UpstreamError::NoNumbers
            } else {
                self.unexpected(path, "no order", &data.to_string())
            });
        };
        if let Some(reason) = &order.failed_reason {
            if order.state().is_none_or(|s| s != UpstreamState::Waiting) {
                return Err(if reason.eq_ignore_ascii_case("NoNumbers") {
                    UpstreamError::NoNumbers
                } else {
                    self.unexpected(path, "failed order", reason)
                });
            }
        }
        let phone = order
            .phone
            .as_deref()
            .map(|p| p.trim().trim_start_matches('+').to_owned())
            .filter(|p| (6..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        let cost = order.amount.as_ref().and_then(|a| self.money(a, true));
        let (Some(phone), Some(cost)) = (phone, cost) else {
            return Err(self.unexpected(
                path,
                "order without phone number or amount",
                &format!("order {}", order.id),
            ));
        };
        Ok(Purchase {
            handle: Handle(order.id.to_string()),
            phone,
            cost,
            expires_at: order.expires_at,
        })
    }

    async fn poll_inner(&self, handle: &Handle) -> Result<Snapshot, UpstreamError> {
        let order = self.read_order(order_id(handle)?).await?;
        let state = order
            .state()
            .ok_or_else(|| self.unexpected("/orders/{id}", "unknown status", &order.status))?;
        let with_sms = matches!(
            state,
            UpstreamState::CodeReceived | UpstreamState::Completed
        ) && order.has_sms();
        let (code, text) = if with_sms {
            let code = order.otp_code.clone().or_else(|| {
                order
                    .otp_message
                    .as_deref()
                    .and_then(self.config.extract_code)
            });
            (code, order.otp_message.clone())
        } else {
            (None, None)
        };
        let revision = if state == UpstreamState::CodeReceived {
            order.sms_revision.max(1)
        } else {
            order.sms_revision
        };
        Ok(Snapshot {
            state,
            code,
            text,
            revision,
            by_call: false,
        })
    }

    async fn finish_inner(&self, handle: &Handle) -> Result<(), UpstreamError> {
        let id = order_id(handle)?;
        let path = "/orders/finish";
        match self
            .call(
                Method::POST,
                self.config.api,
                path,
                &[],
                Some(json!({ "id": id })),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Err(error)) => Err(error),
            Err(Ok(failure)) if failure.code == "CONFLICT" => {
                let order = self.read_order(id).await?;
                match order.state() {
                    Some(UpstreamState::Completed) => Ok(()),
                    _ => Err(self.unexpected(path, "finish refused", &order.status)),
                }
            }
            Err(Ok(failure)) => Err(self.map_failure(path, &failure)),
        }
    }

    async fn cancel_inner(&self, handle: &Handle) -> Result<CancelOutcome, UpstreamError> {
        let id = order_id(handle)?;
        let path = "/orders/cancel";
        match self
            .call(
                Method::POST,
                self.config.api,
                path,
                &[],
                Some(json!({ "id": id })),
                None,
            )
            .await
        {
            Ok(data) => match data
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("CANCELED" | "CANCELLED") | None => Ok(CancelOutcome::Cancelled),
                Some(_) => {
                    Err(self.unexpected(path, "cancel answered another status", &data.to_string()))
                }
            },
            Err(Err(error)) => Err(error),
            Err(Ok(failure)) if failure.code == "CANCEL_TOO_EARLY" => {
                let retry_after = match self.read_order(id).await {
                    Ok(order) => order
                        .cancel_available_at
                        .map(|at| (at - Utc::now()).to_std().unwrap_or_default()),
                    Err(_) => failure.retry_after,
                };
                Ok(CancelOutcome::TooEarly { retry_after })
            }
            Err(Ok(failure)) if failure.code == "CONFLICT" => {
                let order = self.read_order(id).await?;
                Ok(match order.state() {
                    Some(UpstreamState::CodeReceived) => CancelOutcome::AlreadyHasCode,
                    Some(UpstreamState::Waiting) if order.has_sms() => {
                        CancelOutcome::AlreadyHasCode
                    }
                    Some(UpstreamState::Waiting) => CancelOutcome::TooEarly {
                        retry_after: order
                            .cancel_available_at
                            .and_then(|at| (at - Utc::now()).to_std().ok())
                            .filter(|d| !d.is_zero()),
                    },
                    _ => CancelOutcome::AlreadyClosed,
                })
            }
            // The upstream behind SMSCode failed the cancel: the order stays
            // active and the cancel may be retried.
            Err(Ok(failure)) if failure.code == "PROVIDER_ERROR" => Ok(CancelOutcome::TooEarly {
                retry_after: failure.retry_after,
            }),
            Err(Ok(failure)) => Err(self.map_failure(path, &failure)),
        }
    }

    async fn resend_inner(&self, handle: &Handle) -> Result<Handle, UpstreamError> {
        let id = order_id(handle)?;
        let path = "/orders/resend";
        let data = self
            .call_mapped(
                Method::POST,
                self.config.api,
                path,
                &[],
                Some(json!({ "id": id })),
            )
            .await?;
        match data.get("resent").and_then(Value::as_bool) {
            Some(false) => Err(UpstreamError::RateLimited { retry_after: None }),
            _ => Ok(handle.clone()),
        }
    }

    async fn balance_inner(&self) -> Result<Micros, UpstreamError> {
        let data = self
            .call_mapped(Method::GET, self.config.api, "/balance", &[], None)
            .await?;
        let balance = data.get("balance").unwrap_or(&Value::Null);
        let idr = data
            .get("currency")
            .and_then(Value::as_str)
            .is_none_or(|c| c.eq_ignore_ascii_case("IDR"));
        match balance {
            Value::Number(_) if !idr => None,
            other => self.money(other, false),
        }
        .ok_or_else(|| self.unexpected("/balance", "no balance", &data.to_string()))
    }
}

impl Upstream for SmsCode {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// `GET /vN/catalog/products` (price ascending, paged): per (service,
    /// country) the cheapest price with stock and the total stock.
    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>> {
        Box::pin(self.offers_inner(service, country))
    }

    fn balance(&self) -> UpstreamFuture<'_, Micros> {
        Box::pin(self.balance_inner())
    }

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase> {
        Box::pin(self.buy_inner(request))
    }

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot> {
        Box::pin(self.poll_inner(handle))
    }

    /// `POST /vN/orders/resend`; the handle stays. `resent:false` (cool-down) is
    /// `RateLimited`.
    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle> {
        Box::pin(self.resend_inner(handle))
    }

    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()> {
        Box::pin(self.finish_inner(handle))
    }

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome> {
        Box::pin(self.cancel_inner(handle))
    }

    /// Replays the buy with the same idempotency key: SMSCode answers with the
    /// order the first call made, or (if it never arrived) makes it now; either
    /// way the purchase is found, to be used or cancelled. A definite refusal
    /// means no order exists under that key.
    fn find_purchase<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Purchase>> {
        Box::pin(async move {
            match self.buy_inner(request).await {
                Ok(purchase) => Ok(Some(purchase)),
                Err(error) if error.is_definite() => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    /// A webhook: the signature (constant time, raw body) and the event's age
    /// are checked first; an `order.otp_received` event then carries the
    /// message as a snapshot (same revision as a poll would see), other order
    /// events make the worker read the order.
    fn inbound(&self, request: &InboundRequest<'_>) -> Result<Option<InboundHint>, InboundError> {
        let secret = self
            .config
            .webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(InboundError::NotConfigured)?;
        let event = verify_webhook_at(
            secret.as_bytes(),
            request.signature,
            request.body,
            self.config.webhook_tolerance,
            request.now,
        )
        .map_err(|e| match e {
            WebhookError::NoSecret => InboundError::NotConfigured,
            WebhookError::MissingSignature => InboundError::Unsigned,
            WebhookError::MalformedSignature | WebhookError::BadSignature => {
                InboundError::BadSignature
            }
            WebhookError::MalformedBody => InboundError::Malformed,
            WebhookError::Stale => InboundError::Stale,
        })?;
        let Some(hint) = event.hint else {
            return Ok(None);
        };
        let snapshot = match event.kind {
            WebhookEventKind::OtpReceived => {
                webhook_snapshot(request.body, self.config.extract_code)
            }
            _ => None,
        };
        Ok(Some(InboundHint {
            handle: hint.handle(),
            snapshot,
        }))
    }
}

/// The message of a verified `order.otp_received` event, as a poll of the order
/// would report it; `None` when the event carries no revision or no message.
fn webhook_snapshot(body: &[u8], extract_code: fn(&str) -> Option<String>) -> Option<Snapshot> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?;
    let revision = data.get("sms_revision").and_then(Value::as_u64)?;
    let text_of = |key: &str| {
        data.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .filter(|s| !s.trim().is_empty())
    };
    let message = text_of("otp_message");
    let code = text_of("otp_code").or_else(|| message.as_deref().and_then(extract_code));
    if code.is_none() && message.is_none() {
        return None;
    }
    Some(Snapshot {
        state: UpstreamState::CodeReceived,
        code,
        text: message,
        revision: revision.max(1),
        by_call: false,
    })
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

/// The header SMSCode signs its webhooks in.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// Events older (or further in the future) than this are refused by default.
pub const DEFAULT_WEBHOOK_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a webhook call was refused. Nothing else happens for a refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook secret is configured")]
    NoSecret,
    #[error("the webhook carries no signature")]
    MissingSignature,
    #[error("the webhook signature is not `sha256=<64 hex digits>`")]
    MalformedSignature,
    #[error("the webhook signature does not match its body")]
    BadSignature,
    #[error("the webhook body is not an SMSCode event")]
    MalformedBody,
    #[error("the webhook event is outside the accepted time window")]
    Stale,
}

/// The kind of a webhook event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEventKind {
    OtpReceived,
    Completed,
    Expired,
    Canceled,
    Test,
    /// An event name this adapter does not know (kept, not guessed).
    Other(String),
}

/// What a verified webhook says: which order changed and its revision. Codes
/// and texts are left in the body on purpose: the worker reads the order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookHint {
    pub order_id: u64,
    /// `sms_revision` (null on terminal events).
    pub revision: Option<u64>,
}

impl WebhookHint {
    /// The handle of the order, as [`SmsCode`] issues them.
    pub fn handle(&self) -> Handle {
        Handle(self.order_id.to_string())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub kind: WebhookEventKind,
    pub timestamp: DateTime<Utc>,
    /// `None` for the test event.
    pub hint: Option<WebhookHint>,
}

/// Verifies a webhook with the default tolerance against the current time.
/// `signature` is the value of the `X-Webhook-Signature` header, if any; `body`
/// the raw request body.
pub fn verify_webhook(
    secret: &[u8],
    signature: Option<&str>,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    verify_webhook_at(
        secret,
        signature,
        body,
        DEFAULT_WEBHOOK_TOLERANCE,
        Utc::now(),
    )
}

/// [`verify_webhook`] with the tolerance and the time given. The signature is
/// checked first (in constant time, over the raw bytes), then the body parsed,
/// then the timestamp's distance from `now` checked.
pub fn verify_webhook_at(
    secret: &[u8],
    signature: Option<&str>,
    body: &[u8],
    tolerance: Duration,
    now: DateTime<Utc>,
) -> Result<WebhookEvent, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::MissingSignature)?;
    let digest_hex = signature
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    if digest_hex.len() != 64 {
        return Err(WebhookError::MalformedSignature);
    }
    let digest = hex::decode(digest_hex).map_err(|_| WebhookError::MalformedSignature)?;
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| WebhookError::BadSignature)?;

    let value: Value = serde_json::from_slice(body).map_err(|_| WebhookError::MalformedBody)?;
    let event = value
        .get("event")
        .and_then(Value::as_str)
        .ok_or(WebhookError::MalformedBody)?;
    let timestamp = time_of(value.get("timestamp")).ok_or(WebhookError::MalformedBody)?;
    let age = (now - timestamp)
        .abs()
        .to_std()
        .map_err(|_| WebhookError::Stale)?;
    if age > tolerance {
        return Err(WebhookError::Stale);
    }
    let kind = match event {
        "order.otp_received" => WebhookEventKind::OtpReceived,
        "order.completed" => WebhookEventKind::Completed,
        "order.expired" => WebhookEventKind::Expired,
        "order.canceled" | "order.cancelled" => WebhookEventKind::Canceled,
        "webhook.test" => WebhookEventKind::Test,
        other => WebhookEventKind::Other(other.chars().take(64).collect()),
    };
    let order_id = value.pointer("/data/order_id").and_then(Value::as_u64);
    let hint = match (&kind, order_id) {
        (WebhookEventKind::Test, _) => None,
        (_, Some(order_id)) => Some(WebhookHint {
            order_id,
            revision: value.pointer("/data/sms_revision").and_then(Value::as_u64),
        }),
        (WebhookEventKind::Other(_), None) => None,
        (_, None) => return Err(WebhookError::MalformedBody),
    };
    Ok(WebhookEvent {
        kind,
        timestamp,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rupiah_convert_without_floats() {
        assert_eq!(idr_to_micros(16_000, 16_000, true), Some(Micros(1_000_000)));
        assert_eq!(idr_to_micros(750, 16_000, true), Some(Micros(46_875)));
        assert_eq!(idr_to_micros(1, 15_999, true), Some(Micros(63)));
        assert_eq!(idr_to_micros(1, 15_999, false), Some(Micros(62)));
        assert_eq!(idr_to_micros(1, 0, true), None);
        assert_eq!(micros_to_idr_floor(Micros(500_000), 16_000), 8_000);
        assert_eq!(micros_to_idr_floor(Micros(62), 16_000), 0);
        assert_eq!(usd_cap_text(Micros(500_000)), "0.5000");
        assert_eq!(usd_cap_text(Micros(1_234_567)), "1.2345");
    }

    #[test]
    fn idempotency_keys_fit_the_pattern() {
        assert_eq!(
            idempotency_header("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
            "7c9e6679-7425-40de-944b-e07fc1f90ae7"
        );
        let odd = idempotency_header("order:42/é");
        assert!(odd.starts_with("nx-") && odd.len() == 67);
        assert_eq!(odd, idempotency_header("order:42/é"));
        assert!(idempotency_header(&"a".repeat(129)).starts_with("nx-"));
    }

    #[test]
    fn order_ids_are_digits() {
        assert_eq!(order_id(&Handle("90210".into())), Ok(90210));
        for bad in ["", "x1", "-1", "1.5", "99999999999999999999999"] {
            assert!(order_id(&Handle(bad.into())).is_err(), "{bad}");
        }
    }
}
