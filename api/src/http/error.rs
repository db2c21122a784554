//! The one error type of the HTTP API: RFC 9457 `application/problem+json` with a
//! stable snake_case `code`. Domain errors map to it here and nowhere else; no
//! message carries personal data, and internal failures say nothing of their cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use nexus_core::domain::account::AccountError;
use nexus_core::domain::anonymous::AnonymousError;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::deposit::DepositError;
use nexus_core::domain::legal_hold::LegalHoldError;
use nexus_core::domain::money::{Micros, MoneyError};
use nexus_core::domain::order::OrderError;
use nexus_core::domain::policy::PolicyError;
use nexus_core::domain::wallet::WalletError;
use nexus_core::service::runner::ServiceError;
use nexus_providers::gateway::ipn::IpnError;
use nexus_providers::upstream::InboundError;
use serde::Serialize;
use tracing::error;

pub use super::problem::Problem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code, and with it the status and title.
    pub problem: Problem,
    pub detail: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after_s: Option<u64>,
    /// Extension members of the problem (RFC 9457 §3.2), each documented in
    /// the OpenAPI document's `Problem` schema.
    pub members: serde_json::Map<String, serde_json::Value>,
}

/// The wire shape of a problem.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten)]
    members: &'a serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.problem.code(),
            self.problem.status().as_u16(),
            self.detail
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.problem.status();
        let body = ProblemBody {
            kind: super::pages::problem_path(self.problem),
            title: self.problem.title(),
            status: status.as_u16(),
            detail: &self.detail,
            code: self.problem.code(),
            members: &self.members,
        };
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 15.5.2: a 401 names the scheme that would be accepted.
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"nexus\"",
            ));
        }
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        response.content_type("application/problem+json").json(body)
    }
}

impl ApiError {
    pub fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
            retry_after_s: None,
            members: serde_json::Map::new(),
        }
    }

    /// Adds the extension member `name` (documented in the `Problem` schema).
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.members.insert(name.to_owned(), value);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            Problem::Unauthorized,
            "a valid API key or session is required",
        )
    }

    /// 401 `account_deletion_pending`: a right API key of an account whose
    /// deletion was requested.
    pub fn deletion_pending() -> Self {
        Self::new(
            Problem::AccountDeletionPending,
            "this account's deletion is pending: its API keys work again once the request \
             is withdrawn (DELETE /v1/me/deletion, with a session or with the e-mail and \
             password in the body) within 30 days of it",
        )
    }

    /// 409 `balance_not_forfeited`: a deletion asked without confirming that
    /// the `available` balance moves to unclaimed balances at the erasure.
    pub fn balance_not_forfeited(available: Micros) -> Self {
        Self::new(
            Problem::BalanceNotForfeited,
            format!(
                "the wallet has {available} USD available; when the account is erased it \
                 moves to unclaimed balances and can no longer be spent. Spend it first, or \
                 ask again with {{\"confirm_forfeit_balance\": true}}"
            ),
        )
        .with_member("forfeit_balance", serde_json::json!(available.to_string()))
    }

    pub fn not_found() -> Self {
        Self::new(Problem::NotFound, "no such resource")
    }

    /// 413 `body_too_large`: a body over `limit_bytes`.
    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            Problem::BodyTooLarge,
            format!("the body is over {limit_bytes} bytes"),
        )
    }

    /// 400 `query_too_long`: a query string over `limit_bytes`.
    pub fn query_too_long(limit_bytes: usize) -> Self {
        Self::new(
            Problem::QueryTooLong,
            format!("the query string is over {limit_bytes} bytes"),
        )
    }

    /// 409 `contention`: a write lost its race too often.
    pub fn contention() -> Self {
        Self::new(
            Problem::Contention,
            "the resource changed concurrently; try again",
        )
    }

    /// An internal failure: logged here with its cause, answered without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(cause = %cause, "internal error");
        Self::new(Problem::Internal, "something went wrong on our side")
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Problem::Unavailable, detail)
    }
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        use MoneyError as E;
        match e {
            E::Malformed | E::NotPositive | E::TooLarge | E::Overflow => {
                ApiError::new(Problem::InvalidAmount, e.to_string())
            }
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        use AccountError as E;
        let problem = match e {
            E::InvalidEmail { .. } => Problem::InvalidEmail,
            E::PasswordTooShort => Problem::PasswordTooShort,
            E::PasswordTooLong => Problem::PasswordTooLong,
            E::EmailTaken => Problem::EmailTaken,
            E::EmailUnchanged => Problem::EmailUnchanged,
            E::AccountNotFound | E::AccountErased | E::ApiKeyNotFound => {
                return ApiError::not_found()
            }
            E::AlreadyRegistered => Problem::AlreadyRegistered,
            E::InvalidCredentials => Problem::InvalidCredentials,
            E::AccountDisabled => Problem::AccountDisabled,
            E::EmailNotVerified => Problem::EmailNotVerified,
            E::AlreadyVerified => Problem::AlreadyVerified,
            E::VerificationTokenInvalid => Problem::VerificationTokenInvalid,
            E::VerificationTokenExpired => Problem::VerificationTokenExpired,
            E::VerificationTokenUsed => Problem::VerificationTokenUsed,
            // Never answered: the route that resends answers 202 whatever happens.
            E::VerificationRecentlySent => Problem::RateLimited,
            E::ActiveOrders => Problem::ActiveOrders,
            E::DeletionAlreadyRequested => Problem::DeletionAlreadyRequested,
            E::BalanceNotForfeited { available } => {
                return ApiError::balance_not_forfeited(available)
            }
            E::NoDeletionPending => Problem::NoDeletionPending,
            E::DeletionWindowOver => Problem::DeletionWindowOver,
            E::TooManyApiKeys => Problem::TooManyApiKeys,
            E::ErasureNotDue => Problem::ErasureNotDue,
            // The reason names the rule broken, never the URL.
            E::InvalidWebhookUrl { .. } => Problem::InvalidWebhookUrl,
            E::ApiKeyIpNotAllowed => Problem::IpNotAllowed,
            E::InvalidApiKeyLabel { .. } => Problem::InvalidLabel,
            E::InvalidAllowedIps { .. } => Problem::InvalidAllowedIps,
            E::RecoveryTokenInvalid => Problem::RecoveryTokenInvalid,
            E::RecoveryTokenExpired => Problem::RecoveryTokenExpired,
            E::RecoveryTokenUsed => Problem::RecoveryTokenUsed,
            E::EmailUndoAddressTaken => Problem::EmailUndoAddressTaken,
            E::TooManyEmailChanges => Problem::TooManyEmailChanges,
            E::TwoFactorRequired => Problem::TwoFactorRequired,
            E::TwoFactorCodeInvalid => Problem::TwoFactorCodeInvalid,
            E::TwoFactorAlreadyEnabled => Problem::TwoFactorAlreadyEnabled,
            E::TwoFactorNotPending => Problem::TwoFactorNotPending,
            E::TwoFactorNotEnabled => Problem::TwoFactorNotEnabled,
        };
        ApiError::new(problem, e.to_string())
    }
}

impl<E> From<ServiceError<E>> for ApiError
where
    ApiError: From<E>,
{
    fn from(e: ServiceError<E>) -> Self {
        match e {
            ServiceError::Refused(e) => e.into(),
            ServiceError::Contention { .. } => ApiError::contention(),
            ServiceError::Store(fault) => ApiError::internal(&fault),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        use OrderError as E;
        let problem = match e {
            E::InvalidService => Problem::UnknownService,
            E::InvalidCountry => Problem::UnknownCountry,
            E::NotFound => return ApiError::not_found(),
            E::AlreadyPlaced => Problem::OrderExists,
            E::WrongStatus(_) => Problem::OrderWrongStatus,
            E::CodeAlreadyReceived => Problem::OrderNotCancellable,
            E::CancelTooEarly(_) => Problem::CancelTooEarly,
            E::NoCodeYet => Problem::NoCodeYet,
            E::CodeErased => Problem::CodeErased,
            E::PastDeadline => Problem::OrderExpired,
        };
        ApiError::new(problem, e.to_string())
    }
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        use WalletError as E;
        match e {
            E::InsufficientFunds { available, needed } => ApiError::new(
                Problem::InsufficientFunds,
                format!(
                    "this costs {needed} USD and the wallet has {available} USD available \
                     (held amounts excluded); top up with POST /v1/deposits"
                ),
            ),
            E::HoldExists | E::HoldNotOpen | E::Ledger(_) => {
                ApiError::new(Problem::WalletConflict, e.to_string())
            }
        }
    }
}

impl From<DepositError> for ApiError {
    fn from(e: DepositError) -> Self {
        use DepositError as E;
        match e {
            E::NotFound => ApiError::not_found(),
            E::AlreadyRequested | E::InvalidPayment | E::NothingPaid | E::PaidOverflow => {
                ApiError::new(Problem::InvalidDeposit, e.to_string())
            }
        }
    }
}

impl From<AnonymousError> for ApiError {
    fn from(e: AnonymousError) -> Self {
        use AnonymousError as E;
        match e {
            E::NotFound => ApiError::not_found(),
            E::OrderActive | E::Erased | E::ErasureNotDue => {
                ApiError::new(Problem::AnonymousOrderConflict, e.to_string())
            }
        }
    }
}

impl From<CommerceError> for ApiError {
    fn from(e: CommerceError) -> Self {
        use CommerceError as E;
        match e {
            E::Order(e) => e.into(),
            E::Account(e) => e.into(),
            E::Wallet(e) => e.into(),
            E::Deposit(e) => e.into(),
            E::Anonymous(e) => e.into(),
            E::IdempotencyKeyReused => ApiError::new(
                Problem::IdempotencyKeyReused,
                "this Idempotency-Key was used for another request",
            ),
        }
    }
}

impl From<LegalHoldError> for ApiError {
    fn from(e: LegalHoldError) -> Self {
        use LegalHoldError as E;
        let problem = match e {
            E::InvalidSubject => Problem::InvalidSubject,
            E::InvalidReason => Problem::InvalidReason,
            E::InvalidReference => Problem::InvalidReference,
            E::AlreadyHeld => Problem::AlreadyHeld,
            E::NotHeld => return ApiError::not_found(),
            E::TooManyHolds => Problem::TooManyHolds,
        };
        ApiError::new(problem, e.to_string())
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        use PolicyError as E;
        let problem = match e {
            E::InvalidTitle => Problem::InvalidTitle,
            E::InvalidSummary => Problem::InvalidSummary,
            E::InvalidUrl => Problem::InvalidUrl,
            E::NoticeTooShort => Problem::NoticeTooShort,
            E::NoticeTooLong => Problem::NoticeTooLong,
            E::KeyReused => Problem::IdempotencyKeyReused,
            E::TooManyAnnouncements => Problem::TooManyAnnouncements,
        };
        ApiError::new(problem, e.to_string())
    }
}

/// A refused payment notification: 4xx for one that will never be accepted as
/// it is, 5xx for a failure on our side (the gateway retries).
impl From<IpnError> for ApiError {
    fn from(e: IpnError) -> Self {
        use IpnError as E;
        let problem = match e {
            E::NoSecret => Problem::IpnNotConfigured,
            E::Unsigned => Problem::IpnUnsigned,
            E::MalformedSignature => Problem::IpnMalformedSignature,
            E::BadSignature => Problem::IpnBadSignature,
            E::MalformedBody(_) => Problem::IpnMalformedBody,
            E::MissingField(_) => Problem::IpnMissingField,
            E::InvalidField(_) => Problem::IpnInvalidField,
            E::UnsupportedCurrency(_) => Problem::IpnUnsupportedCurrency,
            E::NothingPaid => Problem::IpnNothingPaid,
            E::UnknownDeposit => Problem::UnknownDeposit,
            E::Domain(_) => Problem::IpnFailed,
        };
        ApiError::new(problem, e.to_string())
    }
}

/// A refused upstream push; a full queue asks the upstream to retry shortly.
impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        use InboundError as E;
        let problem = match e {
            E::NotSupported => Problem::PushNotSupported,
            E::NotConfigured => Problem::PushNotConfigured,
            E::Unsigned => Problem::PushUnsigned,
            E::BadSignature => Problem::PushBadSignature,
            E::SourceNotAllowed => Problem::PushSourceNotAllowed,
            E::Stale => Problem::PushStale,
            E::Malformed => Problem::PushMalformed,
            E::Busy => return ApiError::new(Problem::PushBusy, e.to_string()).with_retry_after(5),
        };
        ApiError::new(problem, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use nexus_core::domain::money::Micros;

    #[test]
    fn problems_are_rfc_9457_json_with_a_stable_code() {
        let response = ApiError::from(OrderError::CodeAlreadyReceived).error_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let bytes = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["code"], "order_not_cancellable");
        assert_eq!(json["status"], 409);
        assert_eq!(json["type"], "/problems/order_not_cancellable");
        assert!(json["title"].is_string() && json["detail"].is_string());
    }

    #[test]
    fn refused_payment_notifications_keep_their_status_and_code() {
        let cases = [
            (IpnError::NoSecret, 503, "ipn_not_configured"),
            (IpnError::Unsigned, 401, "ipn_unsigned"),
            (IpnError::MalformedSignature, 401, "ipn_malformed_signature"),
            (IpnError::BadSignature, 401, "ipn_bad_signature"),
            (
                IpnError::MalformedBody("x".into()),
                400,
                "ipn_malformed_body",
            ),
            (IpnError::MissingField("order_id"), 422, "ipn_missing_field"),
            (IpnError::InvalidField("order_id"), 422, "ipn_invalid_field"),
            (
                IpnError::UnsupportedCurrency("eur".into()),
                422,
                "ipn_unsupported_currency",
            ),
            (IpnError::NothingPaid, 422, "ipn_nothing_paid"),
            (IpnError::UnknownDeposit, 404, "unknown_deposit"),
            (
                IpnError::Domain(ServiceError::Contention { attempts: 16 }),
                503,
                "ipn_failed",
            ),
        ];
        for (error, status, code) in cases {
            let e = ApiError::from(error);
            assert_eq!(
                (e.problem.status().as_u16(), e.problem.code()),
                (status, code)
            );
            assert_eq!(e.problem.title(), "Payment notification refused");
        }
    }

    #[test]
    fn refused_pushes_keep_their_status_and_code() {
        use InboundError as E;
        let cases = [
            (E::NotSupported, 404, "push_not_supported"),
            (E::NotConfigured, 404, "push_not_configured"),
            (E::Unsigned, 401, "push_unsigned"),
            (E::BadSignature, 401, "push_bad_signature"),
            (E::SourceNotAllowed, 403, "push_source_not_allowed"),
            (E::Stale, 400, "push_stale"),
            (E::Malformed, 400, "push_malformed"),
            (E::Busy, 503, "push_busy"),
        ];
        for (error, status, code) in cases {
            let busy = error == E::Busy;
            let e = ApiError::from(error);
            assert_eq!(
                (e.problem.status().as_u16(), e.problem.code()),
                (status, code)
            );
            assert_eq!(e.problem.title(), "Push refused");
            assert_eq!(e.retry_after_s, busy.then_some(5), "{code}");
        }
    }

    #[test]
    fn a_401_names_the_scheme() {
        let response = ApiError::from(IpnError::Unsigned).error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer realm=\"nexus\""
        );
    }

    #[test]
    fn internal_failures_of_services_answer_internal_and_races_contention() {
        use nexus_core::service::runner::StoreFault;
        let fault: ServiceError<CommerceError> = ServiceError::Store(StoreFault::Random);
        assert_eq!(ApiError::from(fault).problem, Problem::Internal);
        let race: ServiceError<AccountError> = ServiceError::Contention { attempts: 16 };
        assert_eq!(ApiError::from(race).problem, Problem::Contention);
        let race: ServiceError<PolicyError> = ServiceError::Contention { attempts: 16 };
        assert_eq!(ApiError::from(race).problem, Problem::Contention);
        assert_eq!(
            ApiError::from(ServiceError::Refused(LegalHoldError::NotHeld)).problem,
            Problem::NotFound
        );
        let poor = ServiceError::Refused(CommerceError::Wallet(WalletError::InsufficientFunds {
            available: Micros(100_000),
            needed: Micros(250_000),
        }));
        let poor = ApiError::from(poor);
        assert_eq!(poor.problem, Problem::InsufficientFunds);
        assert!(
            poor.detail.contains("costs 0.250000 USD")
                && poor.detail.contains("0.100000 USD available"),
            "{}",
            poor.detail
        );
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let e = ApiError::internal(&"disk on fire at /secret/path");
        assert!(!e.detail.contains("disk") && !e.detail.contains("/secret"));
    }
}
