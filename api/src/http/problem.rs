//! Every problem the HTTP API answers with, in one table: its stable snake_case
//! `code`, its HTTP status and its title. [`super::error::ApiError`] carries one
//! of these, so a status or title is never chosen at a call site, and the
//! OpenAPI document lists exactly [`Problem::ALL`].

use actix_web::http::StatusCode;

/// Generates [`Problem`] and its table from one list, so a code cannot exist
/// without its status and title, nor be missing from [`Problem::ALL`].
macro_rules! problems {
    ($($variant:ident = ($code:literal, $status:ident, $title:literal),)+) => {
        /// One stable problem code of the API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Problem {
            $($variant,)+
        }

        impl Problem {
            /// Every problem, in the order of the table (by code).
            pub const ALL: &'static [Problem] = &[$(Problem::$variant,)+];

            /// The stable snake_case machine code, also the last segment of `type`.
            pub const fn code(self) -> &'static str {
                match self {
                    $(Problem::$variant => $code,)+
                }
            }

            pub const fn status(self) -> StatusCode {
                match self {
                    $(Problem::$variant => StatusCode::$status,)+
                }
            }

            pub const fn title(self) -> &'static str {
                match self {
                    $(Problem::$variant => $title,)+
                }
            }

            /// The variant's name as written in the source (`Problem::Name`).
            #[cfg(test)]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Problem::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

problems! {
    AccountDisabled = ("account_disabled", FORBIDDEN, "Forbidden"),
    AccountDeletionPending = ("account_deletion_pending", UNAUTHORIZED, "Unauthorized"),
    EmailNotVerified = ("email_not_verified", FORBIDDEN, "Forbidden"),
    ActiveOrders = ("active_orders", CONFLICT, "Conflict"),
    AlreadyHeld = ("already_held", CONFLICT, "Conflict"),
    AlreadyRegistered = ("already_registered", CONFLICT, "Conflict"),
    AlreadyVerified = ("already_verified", CONFLICT, "Conflict"),
    AnonymousOrderConflict = ("anonymous_order_conflict", CONFLICT, "Conflict"),
    BalanceNotForfeited = ("balance_not_forfeited", CONFLICT, "Conflict"),
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE, "Payload too large"),
    CancelTooEarly = ("cancel_too_early", CONFLICT, "Conflict"),
    CodeErased = ("code_erased", GONE, "Gone"),
    Contention = ("contention", CONFLICT, "Conflict"),
    DeletionAlreadyRequested = ("deletion_already_requested", CONFLICT, "Conflict"),
    DeletionWindowOver = ("deletion_window_over", CONFLICT, "Conflict"),
    EmailTaken = ("email_taken", CONFLICT, "Conflict"),
    EmailUndoAddressTaken = ("email_undo_address_taken", CONFLICT, "Conflict"),
    EmailUnchanged = ("email_unchanged", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    ErasureNotDue = ("erasure_not_due", CONFLICT, "Conflict"),
    ExportInProgress = ("export_in_progress", CONFLICT, "Conflict"),
    IdempotencyKeyReused = ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    InsufficientFunds = ("insufficient_funds", PAYMENT_REQUIRED, "Payment required"),
    InsufficientScope = ("insufficient_scope", FORBIDDEN, "Forbidden"),
    Internal = ("internal", INTERNAL_SERVER_ERROR, "Internal error"),
    InvalidAllowedIps = ("invalid_allowed_ips", BAD_REQUEST, "Bad request"),
    InvalidAmount = ("invalid_amount", BAD_REQUEST, "Bad request"),
    InvalidChannel = ("invalid_channel", BAD_REQUEST, "Bad request"),
    InvalidCredentials = ("invalid_credentials", UNAUTHORIZED, "Unauthorized"),
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "Bad request"),
    InvalidDeposit = ("invalid_deposit", BAD_REQUEST, "Bad request"),
    InvalidEmail = ("invalid_email", BAD_REQUEST, "Bad request"),
    InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST, "Bad request"),
    InvalidJson = ("invalid_json", BAD_REQUEST, "Bad request"),
    InvalidLabel = ("invalid_label", BAD_REQUEST, "Bad request"),
    InvalidQuery = ("invalid_query", BAD_REQUEST, "Bad request"),
    InvalidReason = ("invalid_reason", BAD_REQUEST, "Bad request"),
    InvalidReference = ("invalid_reference", BAD_REQUEST, "Bad request"),
    InvalidSubject = ("invalid_subject", BAD_REQUEST, "Bad request"),
    InvalidSummary = ("invalid_summary", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    InvalidTime = ("invalid_time", BAD_REQUEST, "Bad request"),
    InvalidTitle = ("invalid_title", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    InvalidUrl = ("invalid_url", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    InvalidWebhookUrl = ("invalid_webhook_url", BAD_REQUEST, "Bad request"),
    IpNotAllowed = ("ip_not_allowed", FORBIDDEN, "Forbidden"),
    IpnBadSignature = ("ipn_bad_signature", UNAUTHORIZED, "Payment notification refused"),
    IpnFailed = ("ipn_failed", SERVICE_UNAVAILABLE, "Payment notification refused"),
    IpnInvalidField = ("ipn_invalid_field", UNPROCESSABLE_ENTITY, "Payment notification refused"),
    IpnMalformedBody = ("ipn_malformed_body", BAD_REQUEST, "Payment notification refused"),
    IpnMalformedSignature = ("ipn_malformed_signature", UNAUTHORIZED, "Payment notification refused"),
    IpnMissingField = ("ipn_missing_field", UNPROCESSABLE_ENTITY, "Payment notification refused"),
    IpnNotConfigured = ("ipn_not_configured", SERVICE_UNAVAILABLE, "Payment notification refused"),
    IpnNothingPaid = ("ipn_nothing_paid", UNPROCESSABLE_ENTITY, "Payment notification refused"),
    IpnUnsigned = ("ipn_unsigned", UNAUTHORIZED, "Payment notification refused"),
    IpnUnsupportedCurrency = ("ipn_unsupported_currency", UNPROCESSABLE_ENTITY, "Payment notification refused"),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed"),
    NoCodeYet = ("no_code_yet", CONFLICT, "Conflict"),
    NoDeletionPending = ("no_deletion_pending", CONFLICT, "Conflict"),
    NoNumbers = ("no_numbers", CONFLICT, "Conflict"),
    NotFound = ("not_found", NOT_FOUND, "Not found"),
    NoticeTooLong = ("notice_too_long", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    NoticeTooShort = ("notice_too_short", UNPROCESSABLE_ENTITY, "Unprocessable request"),
    OrderExists = ("order_exists", CONFLICT, "Conflict"),
    OrderExpired = ("order_expired", CONFLICT, "Conflict"),
    OrderNotCancellable = ("order_not_cancellable", CONFLICT, "Conflict"),
    OrderWrongStatus = ("order_wrong_status", CONFLICT, "Conflict"),
    PasswordTooLong = ("password_too_long", BAD_REQUEST, "Bad request"),
    PasswordTooShort = ("password_too_short", BAD_REQUEST, "Bad request"),
    PriceAboveMax = ("price_above_max", CONFLICT, "Conflict"),
    PushBadSignature = ("push_bad_signature", UNAUTHORIZED, "Push refused"),
    PushBusy = ("push_busy", SERVICE_UNAVAILABLE, "Push refused"),
    PushMalformed = ("push_malformed", BAD_REQUEST, "Push refused"),
    PushNotConfigured = ("push_not_configured", NOT_FOUND, "Push refused"),
    PushNotSupported = ("push_not_supported", NOT_FOUND, "Push refused"),
    PushSourceNotAllowed = ("push_source_not_allowed", FORBIDDEN, "Push refused"),
    PushStale = ("push_stale", BAD_REQUEST, "Push refused"),
    PushUnsigned = ("push_unsigned", UNAUTHORIZED, "Push refused"),
    QueryTooLong = ("query_too_long", BAD_REQUEST, "Bad request"),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "Too many requests"),
    ReauthenticationRequired = ("reauthentication_required", FORBIDDEN, "Forbidden"),
    SessionRequired = ("session_required", FORBIDDEN, "Forbidden"),
    RecoveryTokenExpired = ("recovery_token_expired", GONE, "Gone"),
    RecoveryTokenInvalid = ("recovery_token_invalid", BAD_REQUEST, "Bad request"),
    RecoveryTokenUsed = ("recovery_token_used", CONFLICT, "Conflict"),
    TooManyAnnouncements = ("too_many_announcements", CONFLICT, "Conflict"),
    TooManyApiKeys = ("too_many_api_keys", CONFLICT, "Conflict"),
    TooManyEmailChanges = ("too_many_email_changes", CONFLICT, "Conflict"),
    TooManyHolds = ("too_many_holds", CONFLICT, "Conflict"),
    TwoFactorAlreadyEnabled = ("two_factor_already_enabled", CONFLICT, "Conflict"),
    TwoFactorCodeInvalid = ("two_factor_code_invalid", UNAUTHORIZED, "Unauthorized"),
    TwoFactorNotEnabled = ("two_factor_not_enabled", CONFLICT, "Conflict"),
    TwoFactorNotPending = ("two_factor_not_pending", CONFLICT, "Conflict"),
    TwoFactorRequired = ("two_factor_required", UNAUTHORIZED, "Unauthorized"),
    Unauthorized = ("unauthorized", UNAUTHORIZED, "Unauthorized"),
    Unavailable = ("unavailable", SERVICE_UNAVAILABLE, "Service unavailable"),
    UnknownCountry = ("unknown_country", BAD_REQUEST, "Bad request"),
    UnknownDeposit = ("unknown_deposit", NOT_FOUND, "Payment notification refused"),
    UnknownService = ("unknown_service", BAD_REQUEST, "Bad request"),
    UnreadableBody = ("unreadable_body", BAD_REQUEST, "Bad request"),
    UnsupportedCurrency = ("unsupported_currency", BAD_REQUEST, "Bad request"),
    VerificationTokenExpired = ("verification_token_expired", GONE, "Gone"),
    VerificationTokenInvalid = ("verification_token_invalid", BAD_REQUEST, "Bad request"),
    VerificationTokenUsed = ("verification_token_used", CONFLICT, "Conflict"),
    WalletConflict = ("wallet_conflict", CONFLICT, "Conflict"),
}
