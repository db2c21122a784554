//! The JSON body extractor of every handler: [`ObjectBody<T>`] accepts only a
//! JSON object. serde's derived `Deserialize` for a struct also reads an array
//! (`["a@example.com", "password"]`, by position), which no client means.
//!
//! Everything else is `web::Json`'s: the [`MAX_JSON_BYTES`](super::MAX_JSON_BYTES)
//! limit, the `application/json` content type, and the 400 `invalid_json`
//! problem of [`configure`](super::configure), whose detail never echoes the body.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, Error as _, IntoDeserializer, MapAccess,
    Visitor,
};
use serde::Deserialize;

use super::error::{ApiError, Problem};

/// A request body that must be a JSON object, read into `T`.
#[derive(Debug)]
pub struct ObjectBody<T>(pub T);

impl<T> ObjectBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for ObjectBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// `T`, deserialized only from a map.
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                let mut fields = NamingFields {
                    inner: map,
                    last_key: None,
                };
                let read =
                    T::deserialize(serde::de::value::MapAccessDeserializer::new(&mut fields));
                read.map_err(|e| match &fields.last_key {
                    Some(key) => match field_problem(key, &e.to_string()) {
                        Some(problem) => A::Error::custom(problem),
                        None => e,
                    },
                    None => e,
                })
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

/// A body's map that remembers the key it read last: the field a type error
/// is about.
struct NamingFields<A> {
    inner: A,
    /// At most [`MAX_FIELD_NAME_CHARS`] characters of it.
    last_key: Option<String>,
}

/// Longest field name repeated in a problem (a longer one is no field of ours).
const MAX_FIELD_NAME_CHARS: usize = 64;

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut NamingFields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.inner.next_key::<String>()? else {
            return Ok(None);
        };
        self.last_key = Some(key.chars().take(MAX_FIELD_NAME_CHARS).collect());
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// What is wrong with the value of `field`, from serde's message about it,
/// without the value itself (it could be a password): `field `amount`:
/// expected a string, found an integer`. `None` for a message that is not
/// about a value's type or variant.
pub fn field_problem(field: &str, message: &str) -> Option<String> {
    let field = field.escape_debug();
    let expected = |text: &str| {
        let at = text.find(", expected ")?;
        let rest = &text[at + ", expected ".len()..];
        Some(rest.split(" at line ").next().unwrap_or(rest).to_owned())
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let found = rest.split([' ', ',']).next().unwrap_or("value");
        let found = match found {
            "floating" => "floating point",
            other => other,
        };
        let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Some(format!(
            "field `{field}`: expected {}, found {article} {found}",
            expected(rest)?
        ));
    }
    for prefix in ["invalid value: ", "unknown variant ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return Some(format!("field `{field}`: expected {}", expected(rest)?));
        }
    }
    None
}

impl<T: DeserializeOwned + 'static> FromRequest for ObjectBody<T> {
    type Error = actix_web::Error;
    type Future = ObjectBodyFuture<T>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ObjectBodyFuture {
            inner: web::Json::<JsonObject<T>>::from_request(req, payload),
        }
    }
}

pub struct ObjectBodyFuture<T: DeserializeOwned + 'static> {
    inner: <web::Json<JsonObject<T>> as FromRequest>::Future,
}

impl<T: DeserializeOwned + 'static> Future for ObjectBodyFuture<T> {
    type Output = Result<ObjectBody<T>, actix_web::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|result| result.map(|json| ObjectBody(json.into_inner().0)))
    }
}

/// A body that may be absent: `None` when it is empty (or only whitespace),
/// else a JSON object sent as `application/json`, read into `T` (400
/// `invalid_json` otherwise, as on every JSON route).
pub fn optional_object<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if req.content_type() != "application/json" {
        return Err(ApiError::new(
            Problem::InvalidJson,
            super::json_problem(&JsonPayloadError::ContentType),
        ));
    }
    let JsonObject(value) = serde_json::from_slice::<JsonObject<T>>(body).map_err(|e| {
        ApiError::new(
            Problem::InvalidJson,
            super::json_problem(&JsonPayloadError::Deserialize(e)),
        )
    })?;
    Ok(Some(value))
}

/// The raw body of a route that reads its bytes itself, at most `limit_bytes`:
/// 413 `body_too_large` beyond, 400 `unreadable_body` when the stream breaks.
/// Nothing past the limit is buffered.
pub async fn read_limited(
    payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(limit_bytes).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(ApiError::new(
            Problem::UnreadableBody,
            "the body could not be read",
        )),
        Err(_) => Err(ApiError::body_too_large(limit_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Credentials {
        email: String,
        password: String,
    }

    #[test]
    fn an_object_is_read() {
        let JsonObject(c) = serde_json::from_str::<JsonObject<Credentials>>(
            r#"{"email":"a@example.com","password":"pw"}"#,
        )
        .unwrap();
        assert_eq!(c.email, "a@example.com");
        assert_eq!(c.password, "pw");
    }

    /// A value of the wrong type names its field and the type expected, and
    /// never repeats the value.
    #[test]
    fn a_wrong_type_names_the_field_and_the_type() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Order {
            service: String,
            quantity: u32,
            channel: Channel,
        }
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Channel {
            Sms,
            Voice,
        }
        let cases = [
            (
                r#"{"service":5,"quantity":1,"channel":"sms"}"#,
                "field `service`: expected a string, found an integer",
            ),
            (
                r#"{"service":"tg","quantity":"secret-text","channel":"sms"}"#,
                "field `quantity`: expected u32, found a string",
            ),
            (
                r#"{"service":"tg","quantity":-1,"channel":"sms"}"#,
                "field `quantity`: expected u32",
            ),
            (
                r#"{"service":"tg","quantity":1,"channel":"secret-text"}"#,
                "field `channel`: expected `sms` or `voice`",
            ),
            (
                r#"{"service":"tg","quantity":1.5,"channel":"sms"}"#,
                "field `quantity`: expected u32, found a floating point",
            ),
        ];
        for (body, expected) in cases {
            let Err(e) = serde_json::from_str::<JsonObject<Order>>(body) else {
                panic!("{body} was accepted");
            };
            let message = e.to_string();
            assert!(message.starts_with(expected), "{body}: {message}");
            assert!(!message.contains("secret"), "{body}: {message}");
        }
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for body in [
            r#"["a@example.com","pw"]"#,
            "1",
            "null",
            r#""text""#,
            "true",
        ] {
            let result = serde_json::from_str::<JsonObject<Credentials>>(body);
            assert!(result.is_err(), "{body} was accepted");
        }
    }
}
