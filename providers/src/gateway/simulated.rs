//! The simulated gateway: the embedded default and the tests' gateway. It makes
//! invoices at made-up rates and "pays" them by building the notification
//! NOWPayments would send, signed with the IPN secret, and posting it to our
//! IPN route (what `POST /v1/dev/payments/{id}/pay` uses).
//!
//! Invoices live in memory. `create_invoice` is idempotent per deposit (the
//! same invoice comes back), so a caller that lost the invoice (a restart) can
//! ask again before paying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use nexus_core::domain::clock::{Clock, SystemClock};
use nexus_core::domain::deposit::INVOICE_TTL_MINUTES;
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;

use super::ipn::{sign, IpnSecret, PaymentStatus, SIGNATURE_HEADER};
use super::json::Json;
use super::{GatewayError, GatewayFuture, Invoice, PaymentGateway};

/// Made-up rates: micro-dollars per whole coin.
const RATES: &[(&str, i64)] = &[
    ("btc", 100_000_000_000),
    ("eth", 4_000_000_000),
    ("ltc", 100_000_000),
    ("sol", 200_000_000),
    ("xmr", 200_000_000),
    ("trx", 250_000),
    ("usdttrc20", 1_000_000),
    ("usdterc20", 1_000_000),
    ("usdc", 1_000_000),
];
/// Crypto amounts carry 8 decimals.
const CRYPTO_UNITS: i128 = 100_000_000;

fn rate(currency: &str) -> Option<i64> {
    RATES
        .iter()
        .find(|(name, _)| *name == currency)
        .map(|(_, rate)| *rate)
}

/// `units` hundred-millionths as a plain decimal string.
fn crypto_text(units: i128) -> String {
    let whole = units / CRYPTO_UNITS;
    let mut fraction = format!("{:08}", units % CRYPTO_UNITS);
    while fraction.ends_with('0') {
        fraction.pop();
    }
    if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    for chunk in random_bytes::<64>().iter().cycle().take(len) {
        out.push(alphabet[usize::from(*chunk) % alphabet.len()] as char);
    }
    out
}

/// A plausible-looking address for the currency.
fn pay_address(currency: &str) -> String {
    const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    match currency {
        "btc" => format!("bc1q{}", random_from(BECH32, 38)),
        "ltc" => format!("ltc1q{}", random_from(BECH32, 38)),
        "eth" | "usdterc20" | "usdc" => format!("0x{}", hex::encode(random_bytes::<20>())),
        "trx" | "usdttrc20" => format!("T{}", random_from(BASE58, 33)),
        _ => format!("sim{}", hex::encode(random_bytes::<16>())),
    }
}

fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An invoice as the simulator keeps it.
#[derive(Clone, Debug)]
struct SimInvoice {
    invoice: Invoice,
    /// The quoted crypto amount in hundred-millionths.
    pay_units: i128,
    created_at: DateTime<Utc>,
}

/// How a simulated payment goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedPayment {
    pub status: PaymentStatus,
    /// USD value paid; `None` pays the invoice exactly. Ignored for statuses
    /// without funds (failed, expired, waiting).
    pub paid: Option<Micros>,
    /// The payin transaction hash; `None` makes a random one. Never sent for
    /// statuses without funds.
    pub tx_hash: Option<String>,
    /// Whether `actually_paid_at_fiat` carries the USD value (NOWPayments often
    /// sends 0 there; the credit is then computed from the crypto amounts).
    pub fiat_value: bool,
    /// Whether the notification carries `payin_hash` at all.
    pub with_hash: bool,
    /// The gateway's `payment_id`; `None` is the invoice's own payment. The
    /// amounts of one payment are cumulative: `paid` is its total so far.
    pub payment_id: Option<String>,
}

impl SimulatedPayment {
    /// The invoice paid exactly.
    pub fn finished() -> SimulatedPayment {
        SimulatedPayment {
            status: PaymentStatus::Finished,
            paid: None,
            tx_hash: None,
            fiat_value: true,
            with_hash: true,
            payment_id: None,
        }
    }

    /// `finished` with `paid` (more than the invoice: an over-payment).
    pub fn finished_with(paid: Micros) -> SimulatedPayment {
        SimulatedPayment {
            paid: Some(paid),
            ..SimulatedPayment::finished()
        }
    }

    /// `partially_paid` with `paid`, less than the invoice.
    pub fn partially_paid(paid: Micros) -> SimulatedPayment {
        SimulatedPayment {
            status: PaymentStatus::PartiallyPaid,
            paid: Some(paid),
            ..SimulatedPayment::finished()
        }
    }

    /// Any status (`failed`, `expired`, `waiting`, …) without funds.
    pub fn status(status: PaymentStatus) -> SimulatedPayment {
        SimulatedPayment {
            status,
            ..SimulatedPayment::finished()
        }
    }

    fn has_funds(&self) -> bool {
        matches!(
            self.status,
            PaymentStatus::Finished
                | PaymentStatus::PartiallyPaid
                | PaymentStatus::Confirming
                | PaymentStatus::Confirmed
                | PaymentStatus::Sending
        )
    }
}

/// A notification body and its signature, as the gateway sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIpn {
    pub body: String,
    /// For the [`SIGNATURE_HEADER`] header.
    pub signature: String,
}

/// Our IPN route's answer to a simulated notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpnDelivery {
    pub status: u16,
    pub body: String,
    pub ipn: SignedIpn,
}

/// The simulated gateway.
pub struct SimulatedGateway {
    secret: IpnSecret,
    ipn_url: Option<String>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    invoices: Mutex<HashMap<DepositId, SimInvoice>>,
}

impl SimulatedGateway {
    /// `ipn_url` is where [`SimulatedGateway::pay`] posts notifications (our
    /// IPN route); without one, only [`SimulatedGateway::ipn`] works.
    pub fn new(secret: IpnSecret, ipn_url: Option<String>) -> Result<Self, GatewayError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| GatewayError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            secret,
            ipn_url,
            client,
            clock: Arc::new(SystemClock),
            invoices: Mutex::new(HashMap::new()),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets (or changes) where notifications are posted, e.g. once the API's
    /// port is known.
    pub fn set_ipn_url(&mut self, url: String) {
        self.ipn_url = Some(url);
    }

    /// The invoice made for `deposit`, if any.
    pub fn invoice(&self, deposit: DepositId) -> Option<Invoice> {
        self.invoices
            .lock()
            .expect("invoices lock")
            .get(&deposit)
            .map(|i| i.invoice.clone())
    }

    fn make_invoice(
        &self,
        deposit: DepositId,
        amount: Micros,
        pay_currency: &str,
    ) -> Result<Invoice, GatewayError> {
        if !amount.is_positive() {
            return Err(GatewayError::InvalidAmount);
        }
        let currency = pay_currency.trim().to_ascii_lowercase();
        let rate = rate(&currency).ok_or_else(|| {
            GatewayError::UnsupportedCurrency(
                currency
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(16)
                    .collect(),
            )
        })?;
        let mut invoices = self.invoices.lock().expect("invoices lock");
        if let Some(existing) = invoices.get(&deposit) {
            return Ok(existing.invoice.clone());
        }
        // The quote rounds up: paying it pays at least the price.
        let numerator = i128::from(amount.0) * CRYPTO_UNITS;
        let rate = i128::from(rate);
        let pay_units = (numerator + rate - 1) / rate;
        let now = self.clock.now();
        let invoice = Invoice {
            id: deposit.to_string(),
            gateway_id: (u64::from_be_bytes(random_bytes::<8>()) % 9_000_000_000 + 1_000_000_000)
                .to_string(),
            amount,
            pay_address: pay_address(&currency),
            pay_amount: crypto_text(pay_units),
            pay_currency: currency,
            expires_at: now + chrono::Duration::minutes(INVOICE_TTL_MINUTES),
        };
        invoices.insert(
            deposit,
            SimInvoice {
                invoice: invoice.clone(),
                pay_units,
                created_at: now,
            },
        );
        Ok(invoice)
    }

    /// The notification the gateway would send for `payment` of `deposit`'s
    /// invoice, signed. Members come in NOWPayments' order (not sorted), with
    /// a nested `fee` object, so the receiver's canonical form is exercised.
    pub fn ipn(
        &self,
        deposit: DepositId,
        payment: &SimulatedPayment,
    ) -> Result<SignedIpn, GatewayError> {
        let sim = self
            .invoices
            .lock()
            .expect("invoices lock")
            .get(&deposit)
            .cloned()
            .ok_or(GatewayError::UnknownInvoice)?;
        let invoice = &sim.invoice;
        let rate = i128::from(rate(&invoice.pay_currency).expect("a known currency"));
        let (paid_units, paid_usd) = if payment.has_funds() {
            match payment.paid {
                None => (sim.pay_units, invoice.amount),
                Some(usd) => (i128::from(usd.0) * CRYPTO_UNITS / rate, usd),
            }
        } else {
            (0, Micros::ZERO)
        };
        let hash = (payment.has_funds() && payment.with_hash).then(|| {
            payment
                .tx_hash
                .clone()
                .unwrap_or_else(|| hex::encode(random_bytes::<32>()))
        });
        let fiat = if payment.fiat_value {
            paid_usd.to_string()
        } else {
            "0".into()
        };
        let number = |text: String| Json::Number(text);
        let string = |text: &str| Json::String(text.to_owned());
        let currency = invoice.pay_currency.as_str();
        let payment_id = payment.payment_id.as_ref().unwrap_or(&invoice.gateway_id);
        let body = Json::Object(vec![
            ("payment_id".into(), number(payment_id.clone())),
            ("parent_payment_id".into(), Json::Null),
            ("invoice_id".into(), Json::Null),
            ("payment_status".into(), string(payment.status.as_str())),
            ("pay_address".into(), string(&invoice.pay_address)),
            ("payin_extra_id".into(), Json::Null),
            ("price_amount".into(), number(invoice.amount.to_string())),
            ("price_currency".into(), string("usd")),
            ("pay_amount".into(), number(crypto_text(sim.pay_units))),
            ("actually_paid".into(), number(crypto_text(paid_units))),
            ("actually_paid_at_fiat".into(), number(fiat)),
            ("pay_currency".into(), string(currency)),
            ("order_id".into(), string(&invoice.id)),
            ("order_description".into(), string("Nexus deposit")),
            ("purchase_id".into(), string(&invoice.gateway_id)),
            ("outcome_amount".into(), number(crypto_text(paid_units))),
            ("outcome_currency".into(), string(currency)),
            (
                "payin_hash".into(),
                hash.as_deref().map_or(Json::Null, string),
            ),
            ("payout_hash".into(), Json::Null),
            ("created_at".into(), string(&time_text(sim.created_at))),
            ("updated_at".into(), string(&time_text(self.clock.now()))),
            (
                "fee".into(),
                Json::Object(vec![
                    ("currency".into(), string(currency)),
                    ("depositFee".into(), number("0".into())),
                    ("withdrawalFee".into(), number("0".into())),
                    ("serviceFee".into(), number("0".into())),
                ]),
            ),
        ]);
        let body = body.compact();
        let signature = sign(&self.secret, body.as_bytes())
            .map_err(|e| GatewayError::Malformed(e.to_string()))?;
        Ok(SignedIpn { body, signature })
    }

    /// Builds the notification and posts it to the IPN URL; returns our route's
    /// answer.
    pub async fn pay(
        &self,
        deposit: DepositId,
        payment: &SimulatedPayment,
    ) -> Result<IpnDelivery, GatewayError> {
        let ipn = self.ipn(deposit, payment)?;
        self.deliver(ipn).await
    }

    /// Posts a notification (again) to the IPN URL, as the gateway's retries do.
    pub async fn deliver(&self, ipn: SignedIpn) -> Result<IpnDelivery, GatewayError> {
        let url = self
            .ipn_url
            .as_deref()
            .ok_or(GatewayError::NotConfigured("the IPN URL"))?;
        let response = self
            .client
            .post(url)
            .header(SIGNATURE_HEADER, &ipn.signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(ipn.body.clone())
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(format!("posting the IPN: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| GatewayError::Unavailable(format!("reading the IPN answer: {e}")))?;
        Ok(IpnDelivery { status, body, ipn })
    }
}

impl PaymentGateway for SimulatedGateway {
    fn name(&self) -> &str {
        "simulated"
    }

    fn accepts_currency(&self, pay_currency: &str) -> bool {
        rate(&pay_currency.trim().to_ascii_lowercase()).is_some()
    }

    fn create_invoice<'a>(
        &'a self,
        deposit: DepositId,
        amount: Micros,
        pay_currency: &'a str,
    ) -> GatewayFuture<'a, Invoice> {
        Box::pin(async move { self.make_invoice(deposit, amount, pay_currency) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ipn::{verify, Ipn};

    #[test]
    fn quotes_round_up_and_notifications_verify() {
        let secret = IpnSecret::new(b"sim".to_vec()).unwrap();
        let sim = SimulatedGateway::new(secret.clone(), None).unwrap();
        let deposit = DepositId::new();
        let invoice = sim
            .make_invoice(deposit, Micros(10_000_000), "BTC")
            .unwrap();
        assert_eq!(invoice.pay_amount, "0.0001");
        assert_eq!(invoice.pay_currency, "btc");
        assert!(invoice.pay_address.starts_with("bc1q"));
        assert_eq!(invoice.id, deposit.to_string());
        assert_eq!(
            sim.make_invoice(deposit, Micros(10_000_000), "btc")
                .unwrap(),
            invoice,
            "idempotent per deposit"
        );
        let odd = sim
            .make_invoice(DepositId::new(), Micros(1), "btc")
            .unwrap();
        assert_eq!(odd.pay_amount, "0.00000001", "rounded up");
        assert!(matches!(
            sim.make_invoice(DepositId::new(), Micros(1), "doge"),
            Err(GatewayError::UnsupportedCurrency(_))
        ));
        assert!(matches!(
            sim.make_invoice(DepositId::new(), Micros(0), "btc"),
            Err(GatewayError::InvalidAmount)
        ));

        let signed = sim.ipn(deposit, &SimulatedPayment::finished()).unwrap();
        let value = verify(&secret, Some(&signed.signature), signed.body.as_bytes()).unwrap();
        let ipn = Ipn::from_json(&value).unwrap();
        assert_eq!(ipn.status, PaymentStatus::Finished);
        assert_eq!(ipn.paid_usd().unwrap(), Micros(10_000_000));
        assert_eq!(ipn.deposit().unwrap(), deposit);
        assert!(ipn.payin_hash.is_some());

        let no_fiat = SimulatedPayment {
            fiat_value: false,
            ..SimulatedPayment::partially_paid(Micros(4_000_000))
        };
        let signed = sim.ipn(deposit, &no_fiat).unwrap();
        let ipn = Ipn::from_json(&Json::parse(signed.body.as_bytes()).unwrap()).unwrap();
        assert_eq!(ipn.actually_paid_at_fiat.as_deref(), Some("0"));
        assert_eq!(ipn.paid_usd().unwrap(), Micros(4_000_000), "proportional");

        let expired = sim
            .ipn(deposit, &SimulatedPayment::status(PaymentStatus::Expired))
            .unwrap();
        let ipn = Ipn::from_json(&Json::parse(expired.body.as_bytes()).unwrap()).unwrap();
        assert_eq!(ipn.payin_hash, None);
        assert_eq!(ipn.actually_paid.as_deref(), Some("0"));
    }
}
