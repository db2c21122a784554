//! Who is calling: an extractor for the customer behind a bearer API key or a
//! session cookie. A disabled account (deletion pending) is refused either way,
//! except by [`Holder`] on the routes that withdraw or export (a session only).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest};
use nexus_core::domain::ids::AccountId;

use nexus_core::domain::account::ApiKeyScope;

use super::error::{ApiError, Problem};
use super::gate::note_caller;
use super::principal::{resolved, Principal, Resolution};
use super::route::{Auth, FRESH_SESSION_MINUTES};
use super::usage::Caller;

/// The authenticated customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Customer {
    pub account: AccountId,
}

/// The principal of a request, or the refusal of an extractor that needs one.
fn verified(resolution: Resolution) -> Result<Principal, ApiError> {
    match resolution {
        Resolution::Verified(principal) => Ok(principal),
        Resolution::Anonymous | Resolution::Failed { .. } => Err(ApiError::unauthorized()),
        Resolution::IpRefused => Err(ApiError::new(
            Problem::IpNotAllowed,
            "this API key is not accepted from this address",
        )),
        Resolution::DeletionPending => Err(ApiError::deletion_pending()),
        Resolution::Unavailable => Err(ApiError::internal(&"the credential could not be checked")),
    }
}

/// Whether `principal` may call the route: what the route table says of it
/// ([`super::route::register`] puts it in the route's data). A route outside
/// the table (none is served) asks for a key of full scope.
fn permitted(req: &HttpRequest, principal: Principal) -> Result<(), ApiError> {
    let auth = req
        .app_data::<Auth>()
        .copied()
        .unwrap_or(Auth::Customer(ApiKeyScope::Full));
    permits(auth, principal)
}

/// The rule of [`permitted`]: a session passes a customer route whatever the
/// scope; a sensitive route takes a fresh session and never an API key.
fn permits(auth: Auth, principal: Principal) -> Result<(), ApiError> {
    match (auth, principal) {
        (Auth::Customer(needed), Principal::ApiKey(login)) if !login.scope.covers(needed) => {
            Err(ApiError::new(
                Problem::InsufficientScope,
                format!(
                    "this route needs an API key of scope {} or above (this one: {})",
                    needed.name(),
                    login.scope.name()
                ),
            ))
        }
        (Auth::Session | Auth::FreshSession, Principal::ApiKey(_)) => Err(ApiError::new(
            Problem::SessionRequired,
            "this change needs a signed-in session; an API key cannot make it",
        )),
        (Auth::FreshSession, Principal::Session { fresh: false, .. }) => Err(ApiError::new(
            Problem::ReauthenticationRequired,
            format!(
                "enter the password again (POST /v1/sessions/confirm): this change needs it \
                 within the last {FRESH_SESSION_MINUTES} minutes"
            ),
        )),
        _ => Ok(()),
    }
}

/// Notes the caller for the usage log.
fn note(req: &HttpRequest, principal: Principal) {
    let (account, key_id) = match principal {
        Principal::ApiKey(login) => (login.account, Some(login.key_id)),
        Principal::Session { account, .. } => (account, None),
        Principal::Admin => return,
    };
    note_caller(req, Caller { account, key_id });
}

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = verified(resolved(&req).await)?;
            permitted(&req, principal)?;
            match principal {
                Principal::ApiKey(_)
                | Principal::Session {
                    deletion_pending: false,
                    ..
                } => {}
                Principal::Session { .. } => return Err(ApiError::deletion_pending()),
                Principal::Admin => return Err(ApiError::unauthorized()),
            }
            note(&req, principal);
            let account = principal.account().ok_or_else(ApiError::unauthorized)?;
            Ok(Customer { account })
        })
    }
}

/// The account holder, also while a deletion is pending: for the few routes a
/// disabled account still reaches (see its status, export its data, withdraw the
/// deletion). A session cookie admits an active account or one whose deletion is
/// pending; an API key admits an active account only (keys stop working with the
/// deletion request). Every other route takes [`Customer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub account: AccountId,
    /// Whether the account's deletion is pending (the account is disabled).
    pub deletion_pending: bool,
}

impl FromRequest for Holder {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = verified(resolved(&req).await)?;
            permitted(&req, principal)?;
            let (account, deletion_pending) = match principal {
                Principal::ApiKey(login) => (login.account, false),
                Principal::Session {
                    account,
                    deletion_pending,
                    ..
                } => (account, deletion_pending),
                Principal::Admin => return Err(ApiError::unauthorized()),
            };
            note(&req, principal);
            Ok(Holder {
                account,
                deletion_pending,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::Method;
    use nexus_core::domain::ids::ApiKeyId;
    use nexus_core::service::account_service::ApiKeyLogin;

    fn key(scope: ApiKeyScope) -> Principal {
        Principal::ApiKey(ApiKeyLogin {
            account: AccountId::new(),
            key_id: ApiKeyId::new(),
            scope,
        })
    }

    fn session(fresh: bool) -> Principal {
        Principal::Session {
            account: AccountId::new(),
            deletion_pending: false,
            fresh,
        }
    }

    fn refusal(auth: Auth, principal: Principal) -> Option<&'static str> {
        permits(auth, principal).err().map(|e| e.problem.code())
    }

    #[test]
    fn a_key_needs_the_scope_of_the_route_and_a_session_any_customer_route() {
        use ApiKeyScope::*;
        for (route, key_scope, expected) in [
            (Read, Read, None),
            (Orders, Read, Some("insufficient_scope")),
            (Full, Read, Some("insufficient_scope")),
            (Read, Orders, None),
            (Orders, Orders, None),
            (Full, Orders, Some("insufficient_scope")),
            (Full, Full, None),
        ] {
            assert_eq!(
                refusal(Auth::Customer(route), key(key_scope)),
                expected,
                "route {route:?}, key {key_scope:?}"
            );
        }
        assert_eq!(refusal(Auth::Customer(Full), session(false)), None);
    }

    #[test]
    fn a_sensitive_route_takes_a_fresh_session_and_never_a_key() {
        assert_eq!(
            refusal(Auth::FreshSession, key(ApiKeyScope::Full)),
            Some("session_required")
        );
        assert_eq!(
            refusal(Auth::FreshSession, session(false)),
            Some("reauthentication_required")
        );
        assert_eq!(refusal(Auth::FreshSession, session(true)), None);
        assert_eq!(
            refusal(Auth::Session, key(ApiKeyScope::Full)),
            Some("session_required")
        );
        assert_eq!(refusal(Auth::Session, session(false)), None);
    }

    /// Through the real registration, a route's `Auth` reaches its extractor:
    /// a session signed in at t0 makes a sensitive change, is refused once the
    /// manual clock is 11 minutes on, and makes it again after confirming its
    /// password; a key of any scope is refused throughout.
    #[actix_web::test]
    async fn a_registered_sensitive_route_follows_the_clock_and_the_confirmation() {
        use crate::http::route::{register, Op, Route};
        use crate::http::sessions::SessionStore;
        use actix_web::dev::Service;
        use actix_web::{test, App, HttpMessage, HttpResponse};
        use chrono::{DateTime, Duration};
        use nexus_core::domain::clock::{Clock, ManualClock};
        use std::sync::Arc;

        const ROUTES: &[Route] = &[Route {
            method: Method::Post,
            path: "/sensitive",
            handler: |route| route.to(|_: Customer| async { HttpResponse::NoContent().finish() }),
            doc: || Op {
                summary: "A sensitive change",
                tag: "tests",
                auth: Auth::FreshSession,
                params: vec![],
                body: None,
                success: (204, "Done", None),
                errors: vec![],
            },
        }];
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SessionStore::open(dir.path()).unwrap());
        let clock = Arc::new(ManualClock::new(
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        ));
        let account = AccountId::new();
        let id = store.create(account, clock.now()).unwrap();
        // What the principal resolver does with a session cookie, by the
        // manual clock; `x-key` stands for an API key of that scope.
        let (in_store, in_clock) = (store.clone(), clock.clone());
        let app = test::init_service(
            App::new()
                .wrap_fn(move |req, service| {
                    let principal = match req.headers().get("x-key") {
                        Some(_) => key(ApiKeyScope::Full),
                        None => {
                            let now = in_clock.now();
                            let live = in_store.lookup(&id_of(&req), now).unwrap().unwrap();
                            Principal::Session {
                                account: live.account,
                                deletion_pending: false,
                                fresh: live.fresh_at(now),
                            }
                        }
                    };
                    req.extensions_mut().insert(Resolution::Verified(principal));
                    service.call(req)
                })
                .configure(|cfg| register(cfg, ROUTES)),
        )
        .await;
        fn id_of(req: &actix_web::dev::ServiceRequest) -> String {
            req.headers()
                .get("x-session")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }
        let call = |header: (&'static str, String)| {
            test::TestRequest::post()
                .uri("/sensitive")
                .insert_header(header)
                .to_request()
        };
        let by_session = || call(("x-session", id.clone()));
        let by_key = || call(("x-key", "full".to_owned()));

        assert_eq!(
            test::call_service(&app, by_session())
                .await
                .status()
                .as_u16(),
            204
        );
        assert_eq!(
            test::call_service(&app, by_key()).await.status().as_u16(),
            403
        );
        clock.advance(Duration::minutes(11));
        let stale = test::call_service(&app, by_session()).await;
        assert_eq!(stale.status().as_u16(), 403);
        let body = test::read_body(stale).await;
        assert!(
            String::from_utf8_lossy(&body).contains("reauthentication_required"),
            "{body:?}"
        );
        assert!(store.confirm(&id, clock.now()).unwrap());
        assert_eq!(
            test::call_service(&app, by_session())
                .await
                .status()
                .as_u16(),
            204
        );
        let by_key = test::call_service(&app, by_key()).await;
        let body = test::read_body(by_key).await;
        assert!(String::from_utf8_lossy(&body).contains("session_required"));
    }

    /// The changes that could take an account over: each needs a fresh
    /// session in the table the server registers from.
    #[test]
    fn every_sensitive_route_demands_a_fresh_session() {
        let sensitive = [
            (Method::Patch, "/v1/me"),
            (Method::Post, "/v1/me/password"),
            (Method::Post, "/v1/me/deletion"),
            (Method::Put, "/v1/me/webhook"),
            (Method::Delete, "/v1/me/webhook"),
            (Method::Post, "/v1/api-keys"),
            (Method::Delete, "/v1/api-keys/{id}"),
            (Method::Post, "/v1/me/two-factor"),
            (Method::Post, "/v1/me/two-factor/confirm"),
        ];
        let table: Vec<_> = crate::http::table()
            .map(|route| (route.method, route.path, (route.doc)().auth))
            .collect();
        for (method, path) in sensitive {
            let auth = table
                .iter()
                .find(|(m, p, _)| *m == method && *p == path)
                .map(|(_, _, auth)| *auth);
            assert_eq!(auth, Some(Auth::FreshSession), "{method:?} {path}");
        }
        // And nothing else: reading, and withdrawing a deletion, are not.
        let fresh = table
            .iter()
            .filter(|(_, _, auth)| *auth == Auth::FreshSession)
            .count();
        assert_eq!(fresh, sensitive.len());
    }

    /// What a key of each scope reaches, route class by route class.
    #[test]
    fn routes_state_the_scope_a_key_needs() {
        let scope_of = |method: Method, path: &str| {
            crate::http::table()
                .find(|r| r.method == method && r.path == path)
                .map(|r| (r.doc)().auth)
        };
        use ApiKeyScope::*;
        for (method, path, scope) in [
            (Method::Get, "/v1/orders", Read),
            (Method::Get, "/v1/orders/{id}", Read),
            (Method::Get, "/v1/orders/{id}/code", Read),
            (Method::Get, "/v1/wallet", Read),
            (Method::Get, "/v1/wallet/entries", Read),
            (Method::Get, "/v1/deposits", Read),
            (Method::Post, "/v1/orders", Orders),
            (Method::Post, "/v1/orders/{id}/cancel", Orders),
            (Method::Post, "/v1/orders/{id}/complete", Orders),
            (Method::Post, "/v1/orders/{id}/resend", Orders),
            (Method::Post, "/v1/deposits", Orders),
            (Method::Get, "/v1/me", Full),
            (Method::Get, "/v1/me/export", Full),
            (Method::Get, "/v1/api-keys", Full),
            (Method::Get, "/v1/me/webhook", Full),
        ] {
            assert_eq!(
                scope_of(method, path),
                Some(Auth::Customer(scope)),
                "{method:?} {path}"
            );
        }
    }
}
