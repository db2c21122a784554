//! NOWPayments' API: `POST {base}/v1/payment` with the `x-api-key` header
//! creates the payment (our invoice). The answer's `pay_amount` is read from the
//! JSON number's text, never through `f64`.
//!
//! Not idempotent upstream: asking twice for one deposit makes two payments
//! (each is credited on its own if paid, once per transaction).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_core::domain::clock::{Clock, SystemClock};
use nexus_core::domain::deposit::INVOICE_TTL_MINUTES;
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;
use tracing::warn;

use super::decimal::Decimal;
use super::json::{write_string, Json};
use super::{GatewayError, GatewayFuture, Invoice, PaymentGateway};

/// Where and how to reach NOWPayments.
#[derive(Clone)]
pub struct NowPaymentsConfig {
    /// The API root, e.g. `https://api.nowpayments.io` (or the sandbox's).
    pub base_url: String,
    pub api_key: String,
    /// Our IPN route as the gateway reaches it; `None` uses the one set in
    /// the NOWPayments dashboard.
    pub ipn_callback_url: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for NowPaymentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NowPaymentsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"..")
            .field("ipn_callback_url", &self.ipn_callback_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The NOWPayments client.
pub struct NowPayments {
    config: NowPaymentsConfig,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

/// Printable ASCII, at most 200 characters: safe for an error message.
fn clip(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

impl NowPayments {
    pub fn new(config: NowPaymentsConfig) -> Result<Self, GatewayError> {
        if config.api_key.trim().is_empty() {
            return Err(GatewayError::NotConfigured("the NOWPayments API key"));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|e| GatewayError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            config,
            client,
            clock: Arc::new(SystemClock),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The request body. Built by hand: `price_amount` is a JSON number written
    /// from the exact decimal.
    fn payment_body(&self, deposit: DepositId, amount: Micros, currency: &str) -> String {
        let mut body = String::from("{\"price_amount\":");
        body.push_str(&amount.to_string());
        body.push_str(",\"price_currency\":\"usd\",\"pay_currency\":");
        write_string(&mut body, currency);
        body.push_str(",\"order_id\":");
        write_string(&mut body, &deposit.to_string());
        body.push_str(",\"order_description\":\"Nexus deposit\"");
        if let Some(url) = &self.config.ipn_callback_url {
            body.push_str(",\"ipn_callback_url\":");
            write_string(&mut body, url);
        }
        body.push('}');
        body
    }

    async fn create(
        &self,
        deposit: DepositId,
        amount: Micros,
        pay_currency: &str,
    ) -> Result<Invoice, GatewayError> {
        if !amount.is_positive() {
            return Err(GatewayError::InvalidAmount);
        }
        let currency = pay_currency.trim().to_ascii_lowercase();
        if !currency_ticker(&currency) {
            return Err(GatewayError::UnsupportedCurrency(clip(&currency)));
        }
        let url = format!("{}/v1/payment", self.config.base_url.trim_end_matches('/'));
        let response = self
            .client
            .post(&url)
            .header("x-api-key", &self.config.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.payment_body(deposit, amount, &currency))
            .send()
            .await
            .map_err(|e| {
                GatewayError::Unavailable(if e.is_timeout() {
                    "NOWPayments timed out".into()
                } else {
                    "NOWPayments unreachable".into()
                })
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|_| GatewayError::Unavailable("NOWPayments answer cut off".into()))?;
        let value = Json::parse(text.as_bytes());
        if !status.is_success() {
            let message = value
                .as_ref()
                .ok()
                .and_then(|v| v.get("message").and_then(Json::as_str).map(clip))
                .unwrap_or_default();
            return Err(match status.as_u16() {
                401 | 403 => GatewayError::Rejected("NOWPayments refused the API key".into()),
                429 => GatewayError::Unavailable("NOWPayments rate limit".into()),
                400..=499 if message.to_ascii_lowercase().contains("currency") => {
                    GatewayError::UnsupportedCurrency(clip(&currency))
                }
                400..=499 => GatewayError::Rejected(format!("HTTP {}: {message}", status.as_u16())),
                _ => GatewayError::Unavailable(format!("NOWPayments HTTP {}", status.as_u16())),
            });
        }
        let value = value.map_err(|e| self.malformed(&format!("not JSON ({e})")))?;
        let field = |key: &'static str| -> Result<String, GatewayError> {
            value
                .get(key)
                .and_then(Json::scalar_text)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| self.malformed(&format!("no {key}")))
        };
        let gateway_id = field("payment_id")?;
        let pay_address = field("pay_address")?;
        let pay_amount = Decimal::parse(&field("pay_amount")?)
            .map_err(|_| self.malformed("pay_amount is not a decimal"))?;
        if pay_amount.is_zero() {
            return Err(self.malformed("pay_amount is zero"));
        }
        let expires_at = value
            .get("expiration_estimate_date")
            .and_then(Json::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| self.clock.now() + chrono::Duration::minutes(INVOICE_TTL_MINUTES));
        Ok(Invoice {
            id: deposit.to_string(),
            gateway_id: clip(&gateway_id),
            amount,
            pay_currency: value
                .get("pay_currency")
                .and_then(Json::as_str)
                .map(|c| c.to_ascii_lowercase())
                .unwrap_or(currency),
            pay_amount: pay_amount.to_plain_string(),
            pay_address,
            expires_at,
        })
    }

    fn malformed(&self, what: &str) -> GatewayError {
        warn!(what, "unexpected NOWPayments answer");
        GatewayError::Malformed(format!("NOWPayments: {what}"))
    }
}

/// A ticker as NOWPayments names currencies (`btc`, `usdttrc20`): 1–32 ASCII
/// letters and digits, lower case. Which ones it takes is its own list.
fn currency_ticker(currency: &str) -> bool {
    (1..=32).contains(&currency.len()) && currency.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl PaymentGateway for NowPayments {
    fn name(&self) -> &str {
        "nowpayments"
    }

    fn accepts_currency(&self, pay_currency: &str) -> bool {
        currency_ticker(&pay_currency.trim().to_ascii_lowercase())
    }

    fn create_invoice<'a>(
        &'a self,
        deposit: DepositId,
        amount: Micros,
        pay_currency: &'a str,
    ) -> GatewayFuture<'a, Invoice> {
        Box::pin(self.create(deposit, amount, pay_currency))
    }
}
