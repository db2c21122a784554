//! What the compatible endpoint answers: a plain token that is exactly the body
//! (no trailing newline or spaces), or JSON; each with an HTTP status that says
//! the same (clients read one or the other, see PROTOCOLS section 6.7).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use nexus_core::domain::money::Micros;
use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A refusal: the protocol's token and the status it goes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `api_key` parameter.
    NoKey,
    /// The key is unknown, revoked, used from outside its address allow-list,
    /// below the scope the action needs, or its account never verified an
    /// address.
    BadKey,
    /// No such action (or parameters that could not be read).
    BadAction,
    /// An unknown service code.
    BadService,
    /// An unknown SMS-Activate country id.
    WrongCountry,
    /// The price is above `maxPrice`: the current price, so the client can retry.
    WrongMaxPrice(Micros),
    NoNumbers,
    NoBalance,
    /// The id is not an activation of this caller (malformed, unknown, or another
    /// customer's: the three are indistinguishable on purpose).
    WrongActivationId,
    /// The caller's activation is over and its code is gone.
    NoActivation,
    /// The activation's state does not allow this (or an unknown `status`).
    BadStatus,
    /// Cancelling is possible `min_activation_secs` after the number came.
    EarlyCancelDenied {
        min_activation_secs: i64,
    },
    /// The activation was cancelled (or expired without a code: refunded).
    StatusCancel,
    /// An internal failure or contention: retryable, nothing was bought.
    Unavailable,
    /// A right key of an account whose deletion is pending (not in the
    /// original protocol: an explicit token instead of a misleading `BAD_KEY`).
    DeletionPending,
}

impl Refusal {
    /// One of each refusal (for the OpenAPI document).
    pub const ALL: [Refusal; 15] = [
        Refusal::NoKey,
        Refusal::BadKey,
        Refusal::BadAction,
        Refusal::BadService,
        Refusal::WrongCountry,
        Refusal::WrongMaxPrice(Micros(0)),
        Refusal::NoNumbers,
        Refusal::NoBalance,
        Refusal::WrongActivationId,
        Refusal::NoActivation,
        Refusal::BadStatus,
        Refusal::EarlyCancelDenied {
            min_activation_secs: 0,
        },
        Refusal::StatusCancel,
        Refusal::Unavailable,
        Refusal::DeletionPending,
    ];

    /// The token as the body carries it.
    pub fn token(&self) -> String {
        match self {
            Refusal::WrongMaxPrice(price) => format!("WRONG_MAX_PRICE:{price}"),
            other => other.title().to_owned(),
        }
    }

    /// The token's name (the JSON `title`).
    pub fn title(&self) -> &'static str {
        match self {
            Refusal::NoKey => "NO_KEY",
            Refusal::BadKey => "BAD_KEY",
            Refusal::BadAction => "BAD_ACTION",
            Refusal::BadService => "BAD_SERVICE",
            Refusal::WrongCountry => "WRONG_COUNTRY",
            Refusal::WrongMaxPrice(_) => "WRONG_MAX_PRICE",
            Refusal::NoNumbers => "NO_NUMBERS",
            Refusal::NoBalance => "NO_BALANCE",
            Refusal::WrongActivationId => "WRONG_ACTIVATION_ID",
            Refusal::NoActivation => "NO_ACTIVATION",
            Refusal::BadStatus => "BAD_STATUS",
            Refusal::EarlyCancelDenied { .. } => "EARLY_CANCEL_DENIED",
            Refusal::StatusCancel => "STATUS_CANCEL",
            Refusal::Unavailable => "ERROR_SQL",
            Refusal::DeletionPending => "ACCOUNT_DELETION_PENDING",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoKey | Refusal::BadKey | Refusal::DeletionPending => StatusCode::UNAUTHORIZED,
            Refusal::NoBalance => StatusCode::PAYMENT_REQUIRED,
            Refusal::NoNumbers | Refusal::WrongActivationId | Refusal::NoActivation => {
                StatusCode::NOT_FOUND
            }
            Refusal::BadStatus | Refusal::EarlyCancelDenied { .. } | Refusal::StatusCancel => {
                StatusCode::CONFLICT
            }
            Refusal::BadAction
            | Refusal::BadService
            | Refusal::WrongCountry
            | Refusal::WrongMaxPrice(_) => StatusCode::BAD_REQUEST,
            // Not 500: herosms retries a 500 and then falls back to another buy.
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn details(&self) -> &'static str {
        match self {
            Refusal::NoKey => "the api_key parameter is missing",
            Refusal::BadKey => "invalid API key",
            Refusal::BadAction => "unknown action or unreadable parameters",
            Refusal::BadService => "unknown service code",
            Refusal::WrongCountry => "unknown country id",
            Refusal::WrongMaxPrice(_) => "the price is above maxPrice",
            Refusal::NoNumbers => "no numbers for this service and country; nothing was charged",
            Refusal::NoBalance => "the available balance is too low",
            Refusal::WrongActivationId => "no such activation",
            Refusal::NoActivation => "the activation is over",
            Refusal::BadStatus => "not possible in the activation's state",
            Refusal::EarlyCancelDenied { .. } => "too early to cancel",
            Refusal::StatusCancel => "the activation was cancelled",
            Refusal::Unavailable => "temporarily unavailable; try again",
            Refusal::DeletionPending => {
                "the account's deletion is pending; its keys work again once it is withdrawn"
            }
        }
    }

    /// The plain-token answer.
    pub fn plain(&self) -> HttpResponse {
        text_with(self.status(), self.token())
    }

    /// The JSON answer `{title, details, info?}` (for actions that always answer
    /// JSON).
    pub fn json(&self) -> HttpResponse {
        #[derive(Serialize)]
        struct Info {
            #[serde(rename = "minActivationTime")]
            min_activation_secs: i64,
        }
        #[derive(Serialize)]
        struct Body {
            title: &'static str,
            details: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            info: Option<Info>,
        }
        let info = match *self {
            Refusal::EarlyCancelDenied {
                min_activation_secs,
            } => Some(Info {
                min_activation_secs,
            }),
            _ => None,
        };
        let body = Body {
            title: self.title(),
            details: self.details(),
            info,
        };
        json_with(self.status(), &body)
    }
}

/// A 200 plain-token answer.
pub fn text(body: impl Into<String>) -> HttpResponse {
    text_with(StatusCode::OK, body.into())
}

fn text_with(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// A 200 JSON answer (`application/json`: some clients parse JSON only then).
pub fn json<T: Serialize>(value: &T) -> HttpResponse {
    json_with(StatusCode::OK, value)
}

fn json_with<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_string(value) {
        Ok(body) => HttpResponse::build(status)
            .content_type("application/json")
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "sms-activate answer did not serialize");
            Refusal::Unavailable.plain()
        }
    }
}

/// An amount as a JSON number, written exactly from integer micro-dollars
/// (`0.13`, `12.3456`): never through a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal(pub Micros);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The protocol's time format, `YYYY-MM-DD HH:MM:SS` (UTC here).
pub fn protocol_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use chrono::TimeZone;

    fn body_of(response: HttpResponse) -> (u16, String, String) {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().try_into_bytes().unwrap();
        (
            status,
            content_type,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[test]
    fn all_lists_every_refusal_once() {
        // A new variant does not compile here until it is given an index, and
        // the assertion fails until it is listed in ALL.
        fn index(r: &Refusal) -> usize {
            match r {
                Refusal::NoKey => 0,
                Refusal::BadKey => 1,
                Refusal::BadAction => 2,
                Refusal::BadService => 3,
                Refusal::WrongCountry => 4,
                Refusal::WrongMaxPrice(_) => 5,
                Refusal::NoNumbers => 6,
                Refusal::NoBalance => 7,
                Refusal::WrongActivationId => 8,
                Refusal::NoActivation => 9,
                Refusal::BadStatus => 10,
                Refusal::EarlyCancelDenied { .. } => 11,
                Refusal::StatusCancel => 12,
                Refusal::Unavailable => 13,
                Refusal::DeletionPending => 14,
            }
        }
        let mut seen = [false; Refusal::ALL.len()];
        for refusal in Refusal::ALL {
            assert!(!std::mem::replace(&mut seen[index(&refusal)], true));
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn tokens_are_the_whole_body_with_the_status_of_rule_2() {
        let cases = [
            (Refusal::NoKey, 401, "NO_KEY"),
            (Refusal::BadKey, 401, "BAD_KEY"),
            (Refusal::NoBalance, 402, "NO_BALANCE"),
            (Refusal::NoNumbers, 404, "NO_NUMBERS"),
            (Refusal::WrongActivationId, 404, "WRONG_ACTIVATION_ID"),
            (Refusal::NoActivation, 404, "NO_ACTIVATION"),
            (Refusal::BadStatus, 409, "BAD_STATUS"),
            (Refusal::StatusCancel, 409, "STATUS_CANCEL"),
            (
                Refusal::EarlyCancelDenied {
                    min_activation_secs: 120,
                },
                409,
                "EARLY_CANCEL_DENIED",
            ),
            (Refusal::BadAction, 400, "BAD_ACTION"),
            (Refusal::BadService, 400, "BAD_SERVICE"),
            (Refusal::WrongCountry, 400, "WRONG_COUNTRY"),
            (
                Refusal::WrongMaxPrice(Micros(130_000)),
                400,
                "WRONG_MAX_PRICE:0.130000",
            ),
            (Refusal::Unavailable, 503, "ERROR_SQL"),
            (Refusal::DeletionPending, 401, "ACCOUNT_DELETION_PENDING"),
        ];
        for (refusal, status, token) in cases {
            let (got_status, content_type, body) = body_of(refusal.plain());
            assert_eq!((got_status, body.as_str()), (status, token));
            assert!(content_type.starts_with("text/plain"), "{content_type}");
        }
    }

    #[test]
    fn json_refusals_carry_title_details_and_the_cancel_hint() {
        let (status, content_type, body) = body_of(
            Refusal::EarlyCancelDenied {
                min_activation_secs: 120,
            }
            .json(),
        );
        assert_eq!((status, content_type.as_str()), (409, "application/json"));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["title"], "EARLY_CANCEL_DENIED");
        assert_eq!(value["info"]["minActivationTime"], 120);
        let (status, _, body) = body_of(Refusal::WrongActivationId.json());
        assert_eq!(status, 404);
        assert!(!body.contains("info"), "{body}");
    }

    #[test]
    fn money_is_an_exact_json_number() {
        #[derive(Serialize)]
        struct Price {
            cost: Decimal,
        }
        for (micros, text) in [
            (130_000, r#"{"cost":0.130000}"#),
            (12_345_600, r#"{"cost":12.345600}"#),
            (2_600, r#"{"cost":0.002600}"#),
            (0, r#"{"cost":0.000000}"#),
            (1_000_000_000_000, r#"{"cost":1000000.000000}"#),
        ] {
            let written = serde_json::to_string(&Price {
                cost: Decimal(Micros(micros)),
            })
            .unwrap();
            assert_eq!(written, text);
        }
    }

    #[test]
    fn times_are_written_as_the_protocol_writes_them() {
        let at = Utc.with_ymd_and_hms(2026, 5, 11, 9, 3, 10).unwrap();
        assert_eq!(protocol_time(at), "2026-05-11 09:03:10");
    }
}
