//! Instant payment notifications (IPN): verifying the gateway's signature and
//! applying a verified notification to the domain.
//!
//! See the [module documentation](super) for what each status does.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::deposit::{DepositError, GatewayPaymentId, PaymentReport};
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;
use nexus_core::domain::wallet::{Payment, WalletError};
use nexus_core::log::EventStore;
use nexus_core::service::commerce_service::{CommandError, Commerce, PaymentOutcome};
use sha2::Sha512;
use tracing::{debug, info, warn};

use super::decimal::{Decimal, DecimalError};
use super::json::Json;

/// The header carrying the hex HMAC-SHA512 of the canonical body.
pub const SIGNATURE_HEADER: &str = "x-nowpayments-sig";
/// Largest IPN body read; NOWPayments' are well under 2 KiB.
pub const MAX_IPN_BYTES: usize = 64 * 1024;
/// Hex digits of an HMAC-SHA512.
const SIGNATURE_HEX_LEN: usize = 128;

/// The IPN secret shared with the gateway. Never printed.
#[derive(Clone)]
pub struct IpnSecret(Vec<u8>);

impl IpnSecret {
    /// Refuses an empty secret: an unconfigured handler must accept nothing.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<IpnSecret, IpnError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(IpnError::NoSecret);
        }
        Ok(IpnSecret(secret))
    }

    fn mac(&self) -> Hmac<Sha512> {
        <Hmac<Sha512> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl std::fmt::Debug for IpnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpnSecret(..)")
    }
}

/// Why an IPN was refused. None of them changes any state.
#[derive(Debug, thiserror::Error)]
pub enum IpnError {
    #[error("no IPN secret is configured")]
    NoSecret,
    #[error("the notification is not signed")]
    Unsigned,
    #[error("the signature is not {SIGNATURE_HEX_LEN} hex digits")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the body is not a JSON object: {0}")]
    MalformedBody(String),
    #[error("the notification lacks `{0}`")]
    MissingField(&'static str),
    #[error("the notification's `{0}` is not valid")]
    InvalidField(&'static str),
    #[error("the price currency {0:?} is not USD")]
    UnsupportedCurrency(String),
    #[error("the notification reports nothing paid")]
    NothingPaid,
    #[error("no such deposit")]
    UnknownDeposit,
    #[error("the domain refused the notification: {0}")]
    Domain(#[source] CommandError),
}

impl IpnError {
    fn from_command(error: CommandError) -> IpnError {
        match error {
            CommandError::Refused(CommerceError::Deposit(DepositError::NotFound)) => {
                IpnError::UnknownDeposit
            }
            CommandError::Refused(CommerceError::Deposit(DepositError::InvalidPayment)) => {
                IpnError::InvalidField("payin_hash")
            }
            CommandError::Refused(CommerceError::Deposit(DepositError::NothingPaid)) => {
                IpnError::NothingPaid
            }
            // An amount the ledger cannot count will never be accepted as it is.
            CommandError::Refused(CommerceError::Deposit(DepositError::PaidOverflow))
            | CommandError::Refused(CommerceError::Wallet(WalletError::Ledger(_))) => {
                IpnError::InvalidField("actually_paid")
            }
            other => IpnError::Domain(other),
        }
    }
}

/// The canonical text the signature covers: the body re-serialized with its
/// keys sorted recursively (see [`super::json`]).
pub fn canonical_body(body: &[u8]) -> Result<String, IpnError> {
    Ok(parse_body(body)?.canonical())
}

fn parse_body(body: &[u8]) -> Result<Json, IpnError> {
    if body.len() > MAX_IPN_BYTES {
        return Err(IpnError::MalformedBody(format!(
            "over {MAX_IPN_BYTES} bytes"
        )));
    }
    let value = Json::parse(body).map_err(|e| IpnError::MalformedBody(e.to_string()))?;
    if !matches!(value, Json::Object(_)) {
        return Err(IpnError::MalformedBody("not an object".into()));
    }
    Ok(value)
}

/// The hex signature the gateway puts in [`SIGNATURE_HEADER`] for `body`.
pub fn sign(secret: &IpnSecret, body: &[u8]) -> Result<String, IpnError> {
    let canonical = canonical_body(body)?;
    let mut mac = secret.mac();
    mac.update(canonical.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// Checks the signature in constant time and returns the parsed body.
///
/// Nothing of the body is trusted before its signature matches: the header is
/// checked first, then the size. The signature covers the body's canonical
/// form, which only a JSON body has, so the body is read (in time linear in
/// its size, see [`super::json`]) and a body that is not JSON answers
/// [`IpnError::BadSignature`] like any other body the gateway did not sign.
/// Only a signed body is refused for its shape ([`IpnError::MalformedBody`]).
pub fn verify(secret: &IpnSecret, signature: Option<&str>, body: &[u8]) -> Result<Json, IpnError> {
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(IpnError::Unsigned)?;
    if signature.len() != SIGNATURE_HEX_LEN {
        return Err(IpnError::MalformedSignature);
    }
    let expected = hex::decode(signature).map_err(|_| IpnError::MalformedSignature)?;
    if body.len() > MAX_IPN_BYTES {
        return Err(IpnError::MalformedBody(format!(
            "over {MAX_IPN_BYTES} bytes"
        )));
    }
    let value = Json::parse(body).map_err(|_| IpnError::BadSignature)?;
    let mut mac = secret.mac();
    mac.update(value.canonical().as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| IpnError::BadSignature)?;
    if !matches!(value, Json::Object(_)) {
        return Err(IpnError::MalformedBody("not an object".into()));
    }
    Ok(value)
}

/// A payment status as NOWPayments names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Waiting,
    Confirming,
    Confirmed,
    Sending,
    PartiallyPaid,
    Finished,
    Failed,
    Refunded,
    Expired,
    /// A status this version does not know (kept, lowercased, for the logs).
    Other(String),
}

impl PaymentStatus {
    pub fn parse(text: &str) -> PaymentStatus {
        match text.trim().to_ascii_lowercase().as_str() {
            "waiting" => PaymentStatus::Waiting,
            "confirming" => PaymentStatus::Confirming,
            "confirmed" => PaymentStatus::Confirmed,
            "sending" => PaymentStatus::Sending,
            "partially_paid" => PaymentStatus::PartiallyPaid,
            "finished" => PaymentStatus::Finished,
            "failed" => PaymentStatus::Failed,
            "refunded" => PaymentStatus::Refunded,
            "expired" => PaymentStatus::Expired,
            other => PaymentStatus::Other(
                other
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(32)
                    .collect(),
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PaymentStatus::Waiting => "waiting",
            PaymentStatus::Confirming => "confirming",
            PaymentStatus::Confirmed => "confirmed",
            PaymentStatus::Sending => "sending",
            PaymentStatus::PartiallyPaid => "partially_paid",
            PaymentStatus::Finished => "finished",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Other(s) => s,
        }
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of a verified notification that Nexus reads. Amounts are kept as
/// the text received and parsed exactly when needed, so a notification that
/// changes nothing is not refused over a field it does not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipn {
    pub payment_id: String,
    pub status: PaymentStatus,
    pub order_id: String,
    pub price_amount: Option<String>,
    pub price_currency: Option<String>,
    pub pay_amount: Option<String>,
    pub actually_paid: Option<String>,
    pub actually_paid_at_fiat: Option<String>,
    pub pay_currency: Option<String>,
    pub outcome_amount: Option<String>,
    /// The customer's transaction on the paying chain; NOWPayments does not
    /// always send it.
    pub payin_hash: Option<String>,
}

/// A present, non-null, non-empty scalar's text.
fn text(value: &Json, key: &'static str) -> Result<Option<String>, IpnError> {
    match value.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.scalar_text() {
            Some(t) if t.trim().is_empty() => Ok(None),
            Some(t) => Ok(Some(t.trim().to_owned())),
            None => Err(IpnError::InvalidField(key)),
        },
    }
}

fn required(value: &Json, key: &'static str) -> Result<String, IpnError> {
    text(value, key)?.ok_or(IpnError::MissingField(key))
}

fn amount(text: &Option<String>, key: &'static str) -> Result<Option<Decimal>, IpnError> {
    text.as_deref()
        .map(Decimal::parse)
        .transpose()
        .map_err(|_| IpnError::InvalidField(key))
}

fn money(result: Result<Micros, DecimalError>, key: &'static str) -> Result<Micros, IpnError> {
    result.map_err(|_| IpnError::InvalidField(key))
}

impl Ipn {
    /// Reads the fields of a verified body.
    pub fn from_json(value: &Json) -> Result<Ipn, IpnError> {
        let payment_id = required(value, "payment_id")?;
        if payment_id.len() > 64 || !payment_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IpnError::InvalidField("payment_id"));
        }
        Ok(Ipn {
            payment_id,
            status: PaymentStatus::parse(&required(value, "payment_status")?),
            order_id: required(value, "order_id")?,
            price_amount: text(value, "price_amount")?,
            price_currency: text(value, "price_currency")?,
            pay_amount: text(value, "pay_amount")?,
            actually_paid: text(value, "actually_paid")?,
            actually_paid_at_fiat: text(value, "actually_paid_at_fiat")?,
            pay_currency: text(value, "pay_currency")?,
            outcome_amount: text(value, "outcome_amount")?,
            payin_hash: text(value, "payin_hash")?,
        })
    }

    /// Our deposit, named by `order_id`.
    pub fn deposit(&self) -> Result<DepositId, IpnError> {
        DepositId::parse(&self.order_id).ok_or(IpnError::InvalidField("order_id"))
    }

    /// What the customer paid, in USD micro-dollars, rounded down:
    /// `actually_paid_at_fiat` when it is there and positive; else
    /// `price_amount × actually_paid / pay_amount`; else, for `finished` only
    /// (the gateway's word that the invoice is paid in full), `price_amount`.
    pub fn paid_usd(&self) -> Result<Micros, IpnError> {
        if let Some(currency) = &self.price_currency {
            if !currency.eq_ignore_ascii_case("usd") {
                return Err(IpnError::UnsupportedCurrency(
                    currency
                        .chars()
                        .filter(char::is_ascii_graphic)
                        .take(16)
                        .collect(),
                ));
            }
        }
        let fiat = amount(&self.actually_paid_at_fiat, "actually_paid_at_fiat")?;
        let paid = match fiat {
            Some(fiat) if !fiat.is_zero() => {
                money(fiat.to_micros_floor(), "actually_paid_at_fiat")?
            }
            _ => {
                let price = amount(&self.price_amount, "price_amount")?
                    .ok_or(IpnError::MissingField("price_amount"))?;
                let crypto = amount(&self.actually_paid, "actually_paid")?;
                let quoted = amount(&self.pay_amount, "pay_amount")?;
                match (crypto, quoted) {
                    (Some(crypto), Some(quoted)) if !crypto.is_zero() && !quoted.is_zero() => {
                        money(
                            Decimal::proportion_micros_floor(&price, &crypto, &quoted),
                            "actually_paid",
                        )?
                    }
                    _ if self.status == PaymentStatus::Finished => {
                        money(price.to_micros_floor(), "price_amount")?
                    }
                    _ => Micros::ZERO,
                }
            }
        };
        if !paid.is_positive() {
            return Err(IpnError::NothingPaid);
        }
        Ok(paid)
    }

    /// Whether the notification reports crypto received (for failure statuses).
    fn reports_funds(&self) -> bool {
        [&self.actually_paid, &self.actually_paid_at_fiat]
            .into_iter()
            .any(|t| matches!(amount(t, "actually_paid"), Ok(Some(d)) if !d.is_zero()))
    }

    /// The network, from `pay_currency`.
    pub fn network(&self) -> Result<String, IpnError> {
        let currency = self
            .pay_currency
            .as_deref()
            .ok_or(IpnError::MissingField("pay_currency"))?;
        network_name(currency).ok_or(IpnError::InvalidField("pay_currency"))
    }

    /// The transaction the notification names: `(network, payin_hash)`, or
    /// `(network, payment_id)` when the gateway sent no hash.
    pub fn payment(&self) -> Result<Payment, IpnError> {
        let tx = self.payin_hash.as_deref().unwrap_or(&self.payment_id);
        Payment::new(&self.network()?, tx).map_err(|_| IpnError::InvalidField("payin_hash"))
    }

    /// What the notification reports: the gateway's payment (`payment_id`),
    /// its transaction, and the total paid so far ([`Ipn::paid_usd`]: the
    /// gateway's amounts are cumulative per payment).
    pub fn report(&self) -> Result<PaymentReport, IpnError> {
        let gateway_payment = GatewayPaymentId::new(&self.payment_id)
            .map_err(|_| IpnError::InvalidField("payment_id"))?;
        Ok(PaymentReport {
            gateway_payment,
            transaction: self.payment()?,
            paid_total: self.paid_usd()?,
        })
    }
}

/// `pay_currency` as a network name: lowercase ASCII letters and digits only,
/// at most 16 (`USDTTRC20` → `usdttrc20`, `usdt-erc20` → `usdterc20`).
pub fn network_name(pay_currency: &str) -> Option<String> {
    let name: String = pay_currency
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(nexus_core::domain::deposit::MAX_NETWORK_BYTES)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// What a notification did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpnOutcome {
    /// The payment was credited to the deposit's owner (`amount`: what this
    /// notification added).
    Credited {
        deposit: DepositId,
        amount: Micros,
        position: u64,
    },
    /// The notification adds nothing to what its payment credited before (a
    /// retried, re-sent or reordered notification).
    AlreadyCredited { deposit: DepositId },
    /// A final failure (`failed`, `expired`, `refunded`) was recorded; a
    /// deposit that was paid already keeps its payment.
    Failed {
        deposit: DepositId,
        status: PaymentStatus,
    },
    /// An intermediate status (`waiting` … `sending`): nothing changed.
    Pending {
        deposit: DepositId,
        status: PaymentStatus,
    },
    /// A status this version does not know: nothing changed (logged at warn).
    Ignored { status: PaymentStatus },
}

impl IpnOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            IpnOutcome::Credited { .. } => "credited",
            IpnOutcome::AlreadyCredited { .. } => "already_credited",
            IpnOutcome::Failed { .. } => "failed",
            IpnOutcome::Pending { .. } => "pending",
            IpnOutcome::Ignored { .. } => "ignored",
        }
    }
}

/// Verifies notifications and applies them to the domain.
pub struct IpnHandler<S: EventStore> {
    commerce: Arc<Commerce<S>>,
    secret: IpnSecret,
}

impl<S: EventStore> IpnHandler<S> {
    pub fn new(commerce: Arc<Commerce<S>>, secret: IpnSecret) -> Self {
        Self { commerce, secret }
    }

    /// Verifies `body` against `signature` (the [`SIGNATURE_HEADER`] value) and
    /// applies it. Any error leaves every stream as it was.
    pub async fn handle(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<IpnOutcome, IpnError> {
        let value = match verify(&self.secret, signature, body) {
            Ok(value) => value,
            Err(e) => {
                warn!(error = %e, "IPN refused");
                return Err(e);
            }
        };
        let ipn = Ipn::from_json(&value).inspect_err(|e| {
            warn!(error = %e, "signed IPN refused");
        })?;
        self.apply(&ipn).await.inspect_err(|e| {
            warn!(
                error = %e,
                status = %ipn.status,
                order_id = %ipn.order_id,
                payment_id = %ipn.payment_id,
                "signed IPN not applied"
            );
        })
    }

    async fn apply(&self, ipn: &Ipn) -> Result<IpnOutcome, IpnError> {
        match &ipn.status {
            PaymentStatus::Finished | PaymentStatus::PartiallyPaid => self.credit(ipn).await,
            PaymentStatus::Failed | PaymentStatus::Expired | PaymentStatus::Refunded => {
                let deposit = ipn.deposit()?;
                if ipn.reports_funds() {
                    warn!(
                        %deposit,
                        status = %ipn.status,
                        payment_id = %ipn.payment_id,
                        "the gateway reports funds with a failure status: not credited, reconcile by hand"
                    );
                }
                self.commerce
                    .fail_deposit(deposit, ipn.status.as_str())
                    .await
                    .map_err(IpnError::from_command)?;
                info!(%deposit, status = %ipn.status, "deposit failed at the gateway");
                Ok(IpnOutcome::Failed {
                    deposit,
                    status: ipn.status.clone(),
                })
            }
            PaymentStatus::Waiting
            | PaymentStatus::Confirming
            | PaymentStatus::Confirmed
            | PaymentStatus::Sending => {
                let deposit = ipn.deposit()?;
                debug!(%deposit, status = %ipn.status, "deposit in progress at the gateway");
                Ok(IpnOutcome::Pending {
                    deposit,
                    status: ipn.status.clone(),
                })
            }
            PaymentStatus::Other(_) => {
                warn!(
                    status = %ipn.status,
                    order_id = %ipn.order_id,
                    "IPN with an unknown payment status ignored"
                );
                Ok(IpnOutcome::Ignored {
                    status: ipn.status.clone(),
                })
            }
        }
    }

    async fn credit(&self, ipn: &Ipn) -> Result<IpnOutcome, IpnError> {
        let deposit = ipn.deposit()?;
        let report = ipn.report()?;
        match self
            .commerce
            .record_payment(deposit, report.clone())
            .await
            .map_err(IpnError::from_command)?
        {
            PaymentOutcome::Credited { amount, position } => {
                info!(
                    %deposit,
                    status = %ipn.status,
                    network = %report.transaction.network,
                    amount = %amount,
                    "deposit credited"
                );
                Ok(IpnOutcome::Credited {
                    deposit,
                    amount,
                    position,
                })
            }
            PaymentOutcome::AlreadyCredited => {
                debug!(%deposit, "IPN that adds nothing to what was credited");
                Ok(IpnOutcome::AlreadyCredited { deposit })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipn(fields: &str) -> Ipn {
        Ipn::from_json(&Json::parse(fields.as_bytes()).unwrap()).unwrap()
    }

    /// The signature of a canonical text, whatever its shape ([`sign`] signs
    /// objects only).
    fn sign_canonical(secret: &IpnSecret, canonical: &str) -> String {
        let mut mac = secret.mac();
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_body_that_is_not_signed_is_refused_for_its_signature_not_its_json() {
        let secret = IpnSecret::new(b"s3cret".to_vec()).unwrap();
        let forged = "ab".repeat(64);
        for body in [
            &b"{\"a\":1,\"a\":2}"[..],
            b"{\"payment_id\":",
            b"payment_status=finished",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(
                    verify(&secret, Some(&forged), body),
                    Err(IpnError::BadSignature)
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert!(matches!(
                verify(&secret, None, body),
                Err(IpnError::Unsigned)
            ));
        }
        // A body the gateway cannot have signed is refused by its size alone.
        let huge = vec![b' '; MAX_IPN_BYTES + 1];
        assert!(matches!(
            verify(&secret, Some(&forged), &huge),
            Err(IpnError::MalformedBody(_))
        ));
    }

    #[test]
    fn signature_is_checked_before_anything_else() {
        let secret = IpnSecret::new(b"s3cret".to_vec()).unwrap();
        let body = br#"{"b":1,"a":{"d":2,"c":3}}"#;
        let signature = sign(&secret, body).unwrap();
        assert_eq!(signature.len(), 128);
        // Key order does not matter, whitespace does not matter.
        let reordered = br#"{ "a": {"c":3, "d":2}, "b": 1 }"#;
        assert!(verify(&secret, Some(&signature), reordered).is_ok());
        assert!(verify(&secret, Some(&signature.to_uppercase()), body).is_ok());
        assert!(matches!(
            verify(&secret, None, body),
            Err(IpnError::Unsigned)
        ));
        assert!(matches!(
            verify(&secret, Some(" "), body),
            Err(IpnError::Unsigned)
        ));
        assert!(matches!(
            verify(&secret, Some("abc"), body),
            Err(IpnError::MalformedSignature)
        ));
        assert!(matches!(
            verify(&secret, Some(&"zz".repeat(64)), body),
            Err(IpnError::MalformedSignature)
        ));
        assert!(matches!(
            verify(&secret, Some(&signature), br#"{"b":2,"a":{"d":2,"c":3}}"#),
            Err(IpnError::BadSignature)
        ));
        let other = IpnSecret::new(b"other".to_vec()).unwrap();
        assert!(matches!(
            verify(&other, Some(&signature), body),
            Err(IpnError::BadSignature)
        ));
        // Signed, but not an object: refused for its shape, after the signature.
        let array_signature = sign_canonical(&secret, "[1]");
        assert!(matches!(
            verify(&secret, Some(&array_signature), b"[1]"),
            Err(IpnError::MalformedBody(_))
        ));
        assert!(matches!(
            verify(&secret, Some(&signature), b"[1]"),
            Err(IpnError::BadSignature)
        ));
        assert!(matches!(
            IpnSecret::new(Vec::new()),
            Err(IpnError::NoSecret)
        ));
        assert_eq!(format!("{secret:?}"), "IpnSecret(..)");
    }

    #[test]
    fn paid_amount_prefers_the_fiat_value_then_the_proportion() {
        let base = r#""payment_id":1,"order_id":"x","price_amount":170,"price_currency":"usd","pay_amount":155.38559757,"pay_currency":"mana""#;
        let with = |extra: &str| ipn(&format!("{{{base},{extra}}}"));
        assert_eq!(
            with(r#""payment_status":"finished","actually_paid":1,"actually_paid_at_fiat":"12.3456789""#)
                .paid_usd()
                .unwrap(),
            Micros(12_345_678)
        );
        assert_eq!(
            with(r#""payment_status":"partially_paid","actually_paid":77.692798785,"actually_paid_at_fiat":0"#)
                .paid_usd()
                .unwrap(),
            Micros(85_000_000)
        );
        assert_eq!(
            with(r#""payment_status":"finished""#).paid_usd().unwrap(),
            Micros(170_000_000),
            "finished without amounts: the price"
        );
        assert!(matches!(
            with(r#""payment_status":"partially_paid","actually_paid":0"#).paid_usd(),
            Err(IpnError::NothingPaid)
        ));
        assert!(matches!(
            with(r#""payment_status":"finished","actually_paid":"1e","actually_paid_at_fiat":0"#)
                .paid_usd(),
            Err(IpnError::InvalidField("actually_paid"))
        ));
        let eur = ipn(
            r#"{"payment_id":1,"payment_status":"finished","order_id":"x","price_amount":1,"price_currency":"eur"}"#,
        );
        assert!(matches!(
            eur.paid_usd(),
            Err(IpnError::UnsupportedCurrency(_))
        ));
    }

    #[test]
    fn network_and_transaction() {
        assert_eq!(network_name("USDTTRC20").as_deref(), Some("usdttrc20"));
        assert_eq!(network_name("usdt-erc20").as_deref(), Some("usdterc20"));
        assert_eq!(network_name("BTC").as_deref(), Some("btc"));
        assert_eq!(
            network_name("abcdefghijklmnopqrstu").as_deref(),
            Some("abcdefghijklmnop")
        );
        assert_eq!(network_name("--"), None);
        let with_hash = ipn(
            r#"{"payment_id":5077125051,"payment_status":"finished","order_id":"x","pay_currency":"BTC","payin_hash":"ab12","price_amount":1}"#,
        );
        assert_eq!(
            with_hash.payment().unwrap(),
            Payment::new("btc", "ab12").unwrap()
        );
        // Whether it names its hash or not, the report is of the gateway's payment.
        let reported = with_hash.report().unwrap();
        assert_eq!(reported.gateway_payment.as_str(), "5077125051");
        assert_eq!(reported.transaction, Payment::new("btc", "ab12").unwrap());
        assert_eq!(reported.paid_total, Micros(1_000_000));
        let without = ipn(
            r#"{"payment_id":"5077125051","payment_status":"finished","order_id":"x","pay_currency":"btc","payin_hash":null,"price_amount":1}"#,
        );
        assert_eq!(
            without.payment().unwrap(),
            Payment::new("btc", "5077125051").unwrap()
        );
        assert_eq!(
            without.report().unwrap().gateway_payment,
            reported.gateway_payment
        );
        assert_eq!(
            PaymentStatus::parse("PARTIALLY_PAID"),
            PaymentStatus::PartiallyPaid
        );
        assert_eq!(
            PaymentStatus::parse("on hold"),
            PaymentStatus::Other("onhold".into())
        );
    }
}
