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
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
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
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
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
