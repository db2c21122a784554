//! Every problem the HTTP API answers with, in one table: its stable snake_case
//! `code`, its HTTP status, its title and its explanation. [`super::error::ApiError`] carries one
//! of these, so a status or title is never chosen at a call site, and the
//! OpenAPI document lists exactly [`Problem::ALL`].

use actix_web::http::StatusCode;

/// Generates [`Problem`] and its table from one list, so a code cannot exist
/// without its status and title, nor be missing from [`Problem::ALL`].
macro_rules! problems {
    ($($variant:ident = ($code:literal, $status:ident, $title:literal, $explanation:literal),)+) => {
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

            /// What the code means and what to do about it, for a person: the
            /// page its `type` URI names (`/problems/{code}`).
            pub const fn explanation(self) -> &'static str {
                match self {
                    $(Problem::$variant => $explanation,)+
                }
            }

            /// The code of `name`, if there is one.
            pub fn from_code(name: &str) -> Option<Problem> {
                Problem::ALL.iter().copied().find(|p| p.code() == name)
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
    AccountDisabled = ("account_disabled", FORBIDDEN, "Forbidden",
        "The account is disabled because its deletion was requested. Withdraw the request within 30 days of it (`DELETE /v1/me/deletion` with the password) to use the account again."),
    AccountDeletionPending = ("account_deletion_pending", UNAUTHORIZED, "Unauthorized",
        "The account's deletion is pending, so its API keys no longer work. Sign in with the password and withdraw the request (`DELETE /v1/me/deletion`) within 30 days to use the account again."),
    EmailNotVerified = ("email_not_verified", FORBIDDEN, "Forbidden",
        "The e-mail address is not verified yet: deposits, orders and webhooks wait until it is. Open the link in the verification mail (`POST /v1/accounts/verify`). An unverified account lapses 24 hours after registering."),
    ActiveOrders = ("active_orders", CONFLICT, "Conflict",
        "The account still has active orders, so it cannot be deleted now. The `active_orders` member lists them: complete or cancel them, or wait for them to expire, then ask again."),
    AlreadyHeld = ("already_held", CONFLICT, "Conflict",
        "A legal hold on this subject is already in place; nothing changed."),
    AlreadyRegistered = ("already_registered", CONFLICT, "Conflict",
        "This account is already registered."),
    AlreadyVerified = ("already_verified", CONFLICT, "Conflict",
        "The address is already verified; nothing changed. Sign in."),
    AnonymousOrderConflict = ("anonymous_order_conflict", CONFLICT, "Conflict",
        "The anonymous order is not in a state that allows this (for example it is already paid or closed). Read it with `GET /v1/track/{tracking_id}`."),
    BalanceNotForfeited = ("balance_not_forfeited", CONFLICT, "Conflict",
        "The wallet still has money available, which a deletion would move to unclaimed balances for good. Spend it first, or ask again with `{\"confirm_forfeit_balance\": true}`; the detail and the `forfeit_balance` member say how much."),
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE, "Payload too large",
        "The request body is larger than this route accepts. Send a smaller body; the limits are in the API reference."),
    CancelTooEarly = ("cancel_too_early", CONFLICT, "Conflict",
        "A cancel is allowed only from the order's `cancel_available_at` (two minutes after the number is assigned, the upstreams' rule). Wait until then, or for the code."),
    CodeErased = ("code_erased", GONE, "Gone",
        "The code was erased: a delivered code stays readable only for the delivery window, then it is deleted for good, as the privacy policy promises. Nothing can bring it back."),
    Contention = ("contention", CONFLICT, "Conflict",
        "Another request changed the same thing at the same moment. Nothing was done by this one: send it again."),
    DeletionAlreadyRequested = ("deletion_already_requested", CONFLICT, "Conflict",
        "A deletion of this account is already pending. Withdraw it with `DELETE /v1/me/deletion` within 30 days if you changed your mind."),
    DeletionWindowOver = ("deletion_window_over", CONFLICT, "Conflict",
        "The 30 days to withdraw the deletion are over; the account is being erased."),
    EmailTaken = ("email_taken", CONFLICT, "Conflict",
        "Another account uses this address. Choose another one."),
    EmailUndoAddressTaken = ("email_undo_address_taken", CONFLICT, "Conflict",
        "The e-mail change cannot be undone: the old address now belongs to another account."),
    EmailUnchanged = ("email_unchanged", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The new address is the one the account already has; nothing changed."),
    ErasureNotDue = ("erasure_not_due", CONFLICT, "Conflict",
        "The subject's erasure is not due yet; nothing was erased."),
    ExportInProgress = ("export_in_progress", CONFLICT, "Conflict",
        "An export of this account's data is already being written. Wait for it to finish, then ask again."),
    IdempotencyKeyReused = ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "This `Idempotency-Key` was already used with a different request. Use a new key for a new request; the same key replays only the same request."),
    InsufficientFunds = ("insufficient_funds", PAYMENT_REQUIRED, "Payment required",
        "The wallet's available balance does not cover the price. The detail says what the order costs and what is available: top up with `POST /v1/deposits`, or wait for held money to be released."),
    InsufficientScope = ("insufficient_scope", FORBIDDEN, "Forbidden",
        "The API key's scope does not allow this route (`read` < `orders` < `full`). Create a key with the scope the API reference names for the route."),
    Internal = ("internal", INTERNAL_SERVER_ERROR, "Internal error",
        "Something failed inside the server; nothing was changed that you need to repair. Try again; if it persists, tell the operator the time of the request."),
    InvalidAllowedIps = ("invalid_allowed_ips", BAD_REQUEST, "Bad request",
        "An allowed IP entry is not an address or a CIDR range, or there are too many. Send addresses such as `203.0.113.7` or ranges such as `198.51.100.0/24`."),
    InvalidAmount = ("invalid_amount", BAD_REQUEST, "Bad request",
        "The amount is not a positive decimal string in US dollars with at most six decimals, within the limit (`\"10\"`, `\"10.50\"`)."),
    InvalidChannel = ("invalid_channel", BAD_REQUEST, "Bad request",
        "The channel is neither `sms` nor `voice`."),
    InvalidCredentials = ("invalid_credentials", UNAUTHORIZED, "Unauthorized",
        "The e-mail address and password do not match an account (or the token or key is wrong). Nothing says which part was wrong, on purpose."),
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "Bad request",
        "The `cursor` is not one this API gave. Start from the first page (no cursor) and follow `next_cursor`."),
    InvalidDeposit = ("invalid_deposit", BAD_REQUEST, "Bad request",
        "The deposit id is not one of this account's deposits."),
    InvalidEmail = ("invalid_email", BAD_REQUEST, "Bad request",
        "The e-mail address is not a valid address (or is too long)."),
    InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST, "Bad request",
        "The `Idempotency-Key` header is empty, too long or has characters outside printable ASCII. Send 1 to 255 printable characters, such as a UUID."),
    InvalidJson = ("invalid_json", BAD_REQUEST, "Bad request",
        "The body is not the JSON this route takes: the detail names the field and what was expected. The API reference shows every body."),
    InvalidLabel = ("invalid_label", BAD_REQUEST, "Bad request",
        "The API key's label is too long or has control characters."),
    InvalidQuery = ("invalid_query", BAD_REQUEST, "Bad request",
        "A query parameter is unknown or has the wrong form: the detail names it."),
    InvalidReason = ("invalid_reason", BAD_REQUEST, "Bad request",
        "The reason is missing, too long or has control characters."),
    InvalidReference = ("invalid_reference", BAD_REQUEST, "Bad request",
        "The reference is missing, too long or has control characters."),
    InvalidSubject = ("invalid_subject", BAD_REQUEST, "Bad request",
        "The subject is not an account or anonymous order id this server knows the form of."),
    InvalidSummary = ("invalid_summary", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The summary is missing or too long."),
    InvalidTime = ("invalid_time", BAD_REQUEST, "Bad request",
        "A time is not RFC 3339 (`2026-12-07T10:00:00Z`) or lies outside what the route allows."),
    InvalidTitle = ("invalid_title", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The title is missing or too long."),
    InvalidUrl = ("invalid_url", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The URL is not an absolute `https` URL."),
    InvalidWebhookUrl = ("invalid_webhook_url", BAD_REQUEST, "Bad request",
        "The webhook URL is not an absolute `https` URL on a public host (loopback, private and link-local addresses are refused)."),
    IpNotAllowed = ("ip_not_allowed", FORBIDDEN, "Forbidden",
        "The API key is limited to other client addresses (its allowed IPs). Call from an allowed address, or change the key's list."),
    IpnBadSignature = ("ipn_bad_signature", UNAUTHORIZED, "Payment notification refused",
        "The payment notification's signature does not match its body under the configured secret; it was ignored."),
    IpnFailed = ("ipn_failed", SERVICE_UNAVAILABLE, "Payment notification refused",
        "The payment notification could not be recorded now; the gateway retries it."),
    IpnInvalidField = ("ipn_invalid_field", UNPROCESSABLE_ENTITY, "Payment notification refused",
        "A field of the payment notification has a value that cannot be right; it was ignored."),
    IpnMalformedBody = ("ipn_malformed_body", BAD_REQUEST, "Payment notification refused",
        "The payment notification's body is not the JSON the gateway sends; it was ignored."),
    IpnMalformedSignature = ("ipn_malformed_signature", UNAUTHORIZED, "Payment notification refused",
        "The payment notification's signature header is not a hex HMAC; it was ignored."),
    IpnMissingField = ("ipn_missing_field", UNPROCESSABLE_ENTITY, "Payment notification refused",
        "A field the payment notification must carry is missing; it was ignored."),
    IpnNotConfigured = ("ipn_not_configured", SERVICE_UNAVAILABLE, "Payment notification refused",
        "This server has no payment gateway secret configured, so it takes no payment notifications."),
    IpnNothingPaid = ("ipn_nothing_paid", UNPROCESSABLE_ENTITY, "Payment notification refused",
        "The payment notification reports nothing paid; nothing was credited."),
    IpnUnsigned = ("ipn_unsigned", UNAUTHORIZED, "Payment notification refused",
        "The payment notification carries no signature; it was ignored."),
    IpnUnsupportedCurrency = ("ipn_unsupported_currency", UNPROCESSABLE_ENTITY, "Payment notification refused",
        "The payment notification is in a currency this server does not take; nothing was credited."),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed",
        "The route exists but not with this HTTP method; the `Allow` header lists the methods it takes."),
    NoCodeYet = ("no_code_yet", CONFLICT, "Conflict",
        "No code has arrived for the order yet. Wait for it (`GET /v1/orders/{id}/code?wait=30`) or cancel once allowed."),
    NoDeletionPending = ("no_deletion_pending", CONFLICT, "Conflict",
        "There is no pending deletion to withdraw."),
    NoNumbers = ("no_numbers", CONFLICT, "Conflict",
        "No upstream has a number for this service and country right now; nothing was charged. Try another country, the other channel, or later."),
    NotFound = ("not_found", NOT_FOUND, "Not found",
        "Nothing here by that name, or it belongs to someone else (another customer's resource is never shown, not even as forbidden)."),
    NoticeTooLong = ("notice_too_long", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The notice period is longer than allowed."),
    NoticeTooShort = ("notice_too_short", UNPROCESSABLE_ENTITY, "Unprocessable request",
        "The notice period is shorter than the 30 days the policy promises."),
    OrderExists = ("order_exists", CONFLICT, "Conflict",
        "An order with this id already exists."),
    OrderExpired = ("order_expired", CONFLICT, "Conflict",
        "The order expired: no code came in time. Its price was refunded to the wallet."),
    OrderNotCancellable = ("order_not_cancellable", CONFLICT, "Conflict",
        "The order cannot be cancelled in its status (a code already arrived, or it is closed)."),
    OrderWrongStatus = ("order_wrong_status", CONFLICT, "Conflict",
        "The order's status does not allow this action (for example completing an order without a code). Read the order to see where it stands."),
    PasswordTooLong = ("password_too_long", BAD_REQUEST, "Bad request",
        "The password is longer than 128 bytes. Choose a shorter one."),
    PasswordTooShort = ("password_too_short", BAD_REQUEST, "Bad request",
        "The password is shorter than 10 bytes. Choose a longer one; a passphrase of a few words is good."),
    PriceAboveMax = ("price_above_max", CONFLICT, "Conflict",
        "The price is above the `max_price` you set; nothing was bought or charged. Raise the limit or try another country."),
    PushBadSignature = ("push_bad_signature", UNAUTHORIZED, "Push refused",
        "The upstream's push does not carry a valid signature; it was ignored."),
    PushBusy = ("push_busy", SERVICE_UNAVAILABLE, "Push refused",
        "Too many upstream pushes are being handled; the upstream retries."),
    PushMalformed = ("push_malformed", BAD_REQUEST, "Push refused",
        "The upstream's push is not in its documented format; it was ignored."),
    PushNotConfigured = ("push_not_configured", NOT_FOUND, "Push refused",
        "Pushes from this upstream are not configured on this server."),
    PushNotSupported = ("push_not_supported", NOT_FOUND, "Push refused",
        "This upstream does not send pushes."),
    PushSourceNotAllowed = ("push_source_not_allowed", FORBIDDEN, "Push refused",
        "The push came from an address the upstream's configuration does not allow."),
    PushStale = ("push_stale", BAD_REQUEST, "Push refused",
        "The push is older than the accepted window (a replay); it was ignored."),
    PushUnsigned = ("push_unsigned", UNAUTHORIZED, "Push refused",
        "The upstream's push carries no signature; it was ignored."),
    QueryTooLong = ("query_too_long", BAD_REQUEST, "Bad request",
        "The query string is longer than the server accepts (2 KiB)."),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "Too many requests",
        "Too many requests: wait for the seconds in `Retry-After`, then go on. The limits are per API key or session, per client address, and a sign-in budget per address and account."),
    ReauthenticationRequired = ("reauthentication_required", FORBIDDEN, "Forbidden",
        "This change needs a fresh session: confirm your password with `POST /v1/sessions/confirm` (then you have 10 minutes), and send the request again."),
    SessionRequired = ("session_required", FORBIDDEN, "Forbidden",
        "This route takes a signed-in session (the cookie from `POST /v1/sessions`), never an API key."),
    RecoveryTokenExpired = ("recovery_token_expired", GONE, "Gone",
        "The link's token has expired. Ask for a new one."),
    RecoveryTokenInvalid = ("recovery_token_invalid", BAD_REQUEST, "Bad request",
        "The token is not one this server gave."),
    RecoveryTokenUsed = ("recovery_token_used", CONFLICT, "Conflict",
        "The token was already used; each works once."),
    TooManyAnnouncements = ("too_many_announcements", CONFLICT, "Conflict",
        "Too many policy changes are already announced."),
    TooManyApiKeys = ("too_many_api_keys", CONFLICT, "Conflict",
        "The account has the most API keys allowed. Revoke one you no longer use."),
    TooManyEmailChanges = ("too_many_email_changes", CONFLICT, "Conflict",
        "The address was changed too often recently. Wait and try again later."),
    TooManyHolds = ("too_many_holds", CONFLICT, "Conflict",
        "The subject has the most legal holds allowed."),
    TwoFactorAlreadyEnabled = ("two_factor_already_enabled", CONFLICT, "Conflict",
        "Two-factor sign-in is already on."),
    TwoFactorCodeInvalid = ("two_factor_code_invalid", UNAUTHORIZED, "Unauthorized",
        "The authenticator code or recovery code is wrong or already used."),
    TwoFactorNotEnabled = ("two_factor_not_enabled", CONFLICT, "Conflict",
        "Two-factor sign-in is not on."),
    TwoFactorNotPending = ("two_factor_not_pending", CONFLICT, "Conflict",
        "There is no two-factor set-up to confirm: start one first."),
    TwoFactorRequired = ("two_factor_required", UNAUTHORIZED, "Unauthorized",
        "The account has two-factor sign-in: send the `totp` code from the authenticator (or a `recovery_code`) with the password."),
    Unauthorized = ("unauthorized", UNAUTHORIZED, "Unauthorized",
        "No valid credentials: send `Authorization: Bearer <API key>` or the session cookie (sign in with `POST /v1/sessions`)."),
    Unavailable = ("unavailable", SERVICE_UNAVAILABLE, "Service unavailable",
        "A part the request needs is unavailable right now (an upstream, the payment gateway, or the store). Nothing was charged; try again shortly."),
    UnknownCountry = ("unknown_country", BAD_REQUEST, "Bad request",
        "The country is not an ISO 3166-1 alpha-2 code this service knows (`GET /v1/catalog/countries` lists them)."),
    UnknownDeposit = ("unknown_deposit", NOT_FOUND, "Payment notification refused",
        "The payment notification names a deposit this server does not know."),
    UnknownService = ("unknown_service", BAD_REQUEST, "Bad request",
        "The service is not one this service sells (`GET /v1/catalog/services` lists them)."),
    UnreadableBody = ("unreadable_body", BAD_REQUEST, "Bad request",
        "The body could not be read (wrong content type, or the connection broke). Send `Content-Type: application/json`."),
    UnsupportedCurrency = ("unsupported_currency", BAD_REQUEST, "Bad request",
        "The payment currency is not one the gateway takes here."),
    VerificationTokenExpired = ("verification_token_expired", GONE, "Gone",
        "The verification link has expired. Register again once the unverified account has lapsed, or ask the operator."),
    VerificationTokenInvalid = ("verification_token_invalid", BAD_REQUEST, "Bad request",
        "The verification token is not one this server gave."),
    VerificationTokenUsed = ("verification_token_used", CONFLICT, "Conflict",
        "The verification link was already used: the address is verified. Sign in."),
    WalletConflict = ("wallet_conflict", CONFLICT, "Conflict",
        "The wallet changed while this request was deciding; nothing was done by it. Send it again."),
}
