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
use nexus_core::domain::money::MoneyError;
use nexus_core::domain::order::OrderError;
use nexus_core::domain::policy::PolicyError;
use nexus_core::domain::wallet::WalletError;
use nexus_core::service::runner::ServiceError;
use serde::Serialize;
use tracing::error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine code, also the last segment of `type`.
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.detail
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let problem = Problem {
            kind: format!("https://nexus.example/problems/{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
        };
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 15.5.2: a 401 names the scheme that would be accepted.
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"nexus\"",
            ));
        }
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        response
            .content_type("application/problem+json")
            .json(problem)
    }
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "a valid API key or session is required",
        )
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "no such resource",
        )
    }

    /// 413 `body_too_large`: a body over `limit_bytes`.
    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Payload too large",
            format!("the body is over {limit_bytes} bytes"),
        )
    }

    /// 400 `query_too_long`: a query string over `limit_bytes`.
    pub fn query_too_long(limit_bytes: usize) -> Self {
        Self::bad_request(
            "query_too_long",
            format!("the query string is over {limit_bytes} bytes"),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Unprocessable request",
            detail,
        )
    }

    /// An internal failure: logged here with its cause, answered without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(cause = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "something went wrong on our side",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        ApiError::bad_request("invalid_amount", e.to_string())
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        use AccountError as E;
        let detail = e.to_string();
        match e {
            E::InvalidEmail { .. } => ApiError::bad_request("invalid_email", detail),
            E::PasswordTooShort => ApiError::bad_request("password_too_short", detail),
            E::PasswordTooLong => ApiError::bad_request("password_too_long", detail),
            E::EmailTaken => ApiError::conflict("email_taken", detail),
            E::EmailUnchanged => ApiError::unprocessable("email_unchanged", detail),
            E::AccountNotFound | E::AccountErased => ApiError::not_found(),
            E::AlreadyRegistered => ApiError::conflict("already_registered", detail),
            E::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Unauthorized",
                detail,
            ),
            E::AccountDisabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "account_disabled",
                "Forbidden",
                detail,
            ),
            E::AlreadyVerified => ApiError::conflict("already_verified", detail),
            E::VerificationTokenInvalid => {
                ApiError::bad_request("verification_token_invalid", detail)
            }
            E::VerificationTokenExpired => ApiError::new(
                StatusCode::GONE,
                "verification_token_expired",
                "Gone",
                detail,
            ),
            E::VerificationTokenUsed => ApiError::conflict("verification_token_used", detail),
            E::ActiveOrders => ApiError::conflict("active_orders", detail),
            E::DeletionAlreadyRequested => ApiError::conflict("deletion_already_requested", detail),
            E::NoDeletionPending => ApiError::conflict("no_deletion_pending", detail),
            E::DeletionWindowOver => ApiError::conflict("deletion_window_over", detail),
            E::TooManyApiKeys => ApiError::conflict("too_many_api_keys", detail),
            E::ApiKeyNotFound => ApiError::not_found(),
            E::ErasureNotDue => ApiError::conflict("erasure_not_due", detail),
            // The reason names the rule broken, never the URL.
            E::InvalidWebhookUrl { .. } => ApiError::bad_request("invalid_webhook_url", detail),
        }
    }
}

impl<E> From<ServiceError<E>> for ApiError
where
    ApiError: From<E>,
{
    fn from(e: ServiceError<E>) -> Self {
        match e {
            ServiceError::Refused(e) => e.into(),
            ServiceError::Contention { .. } => {
                ApiError::conflict("contention", "the resource changed concurrently; try again")
            }
            ServiceError::Store(fault) => ApiError::internal(&fault),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        use OrderError as E;
        let detail = e.to_string();
        match e {
            E::InvalidService => ApiError::bad_request("unknown_service", detail),
            E::InvalidCountry => ApiError::bad_request("unknown_country", detail),
            E::NotFound => ApiError::not_found(),
            E::AlreadyPlaced => ApiError::conflict("order_exists", detail),
            E::WrongStatus(_) => ApiError::conflict("order_wrong_status", detail),
            E::CodeAlreadyReceived => ApiError::conflict("order_not_cancellable", detail),
            E::CancelTooEarly(_) => ApiError::conflict("cancel_too_early", detail),
            E::NoCodeYet => ApiError::conflict("no_code_yet", detail),
            E::CodeErased => ApiError::new(StatusCode::GONE, "code_erased", "Gone", detail),
            E::PastDeadline => ApiError::conflict("order_expired", detail),
        }
    }
}

impl From<CommerceError> for ApiError {
    fn from(e: CommerceError) -> Self {
        match e {
            CommerceError::Order(e) => e.into(),
            CommerceError::Account(e) => e.into(),
            CommerceError::Wallet(WalletError::InsufficientFunds { .. }) => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                "Payment required",
                "the wallet's available balance is too low",
            ),
            CommerceError::Wallet(e) => ApiError::conflict("wallet_conflict", e.to_string()),
            CommerceError::Deposit(DepositError::NotFound) => ApiError::not_found(),
            CommerceError::Deposit(e) => ApiError::bad_request("invalid_deposit", e.to_string()),
            CommerceError::Anonymous(AnonymousError::NotFound) => ApiError::not_found(),
            CommerceError::Anonymous(e) => {
                ApiError::conflict("anonymous_order_conflict", e.to_string())
            }
            CommerceError::IdempotencyKeyReused => ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request",
            ),
        }
    }
}

impl From<LegalHoldError> for ApiError {
    fn from(e: LegalHoldError) -> Self {
        use LegalHoldError as E;
        let detail = e.to_string();
        match e {
            E::InvalidSubject => ApiError::bad_request("invalid_subject", detail),
            E::InvalidReason => ApiError::bad_request("invalid_reason", detail),
            E::InvalidReference => ApiError::bad_request("invalid_reference", detail),
            E::AlreadyHeld => ApiError::conflict("already_held", detail),
            E::NotHeld => ApiError::not_found(),
            E::TooManyHolds => ApiError::conflict("too_many_holds", detail),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        use PolicyError as E;
        let detail = e.to_string();
        match e {
            E::InvalidTitle => ApiError::unprocessable("invalid_title", detail),
            E::InvalidSummary => ApiError::unprocessable("invalid_summary", detail),
            E::InvalidUrl => ApiError::unprocessable("invalid_url", detail),
            E::NoticeTooShort => ApiError::unprocessable("notice_too_short", detail),
            E::NoticeTooLong => ApiError::unprocessable("notice_too_long", detail),
            E::KeyReused => ApiError::unprocessable("idempotency_key_reused", detail),
            E::TooManyAnnouncements => ApiError::conflict("too_many_announcements", detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

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
        assert_eq!(
            json["type"],
            "https://nexus.example/problems/order_not_cancellable"
        );
        assert!(json["title"].is_string() && json["detail"].is_string());
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let e = ApiError::internal(&"disk on fire at /secret/path");
        assert!(!e.detail.contains("disk") && !e.detail.contains("/secret"));
    }
}
