//! What a route is: a method, a path template, the handler that answers it and
//! the description the OpenAPI document gives of it.
//!
//! Each handler module declares its routes in one `ROUTES` table; the server
//! registers exactly those ([`register`]) and `openapi` documents exactly those,
//! so a route cannot be served without being documented, or the reverse.

use actix_web::web;
use nexus_core::domain::account::ApiKeyScope;
use serde_json::Value;

use super::error::Problem;

/// The HTTP methods the API answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method's name as the OpenAPI document writes it (lower case).
    pub fn openapi_name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }

    fn http(self) -> actix_web::http::Method {
        use actix_web::http::Method as M;
        match self {
            Method::Get => M::GET,
            Method::Post => M::POST,
            Method::Put => M::PUT,
            Method::Patch => M::PATCH,
            Method::Delete => M::DELETE,
        }
    }

    /// An actix route guarded by this method, with no handler yet.
    fn route(self) -> actix_web::Route {
        match self {
            Method::Get => web::get(),
            Method::Post => web::post(),
            Method::Put => web::put(),
            Method::Patch => web::patch(),
            Method::Delete => web::delete(),
        }
    }
}

/// Who may call a route. The server enforces it: [`register`] gives each
/// route its `Auth` as resource data, and the extractors that name the caller
/// ([`super::auth::Customer`], [`super::auth::Holder`]) check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// An API key whose scope covers this one (else 403
    /// `insufficient_scope`), or the session cookie.
    Customer(ApiKeyScope),
    /// The session cookie only.
    Session,
    /// The session cookie whose password was entered (at sign-in or by
    /// `POST /v1/sessions/confirm`) within [`FRESH_SESSION_MINUTES`]: the
    /// changes that could take an account over. An API key: 403
    /// `session_required`; an older session: 403 `reauthentication_required`.
    FreshSession,
    Admin,
}

/// How long after the password was entered a session may make sensitive
/// changes ([`Auth::FreshSession`]).
pub const FRESH_SESSION_MINUTES: i64 = super::sessions::FRESH_PASSWORD_MINUTES;

/// One route of the table.
pub struct Route {
    pub method: Method,
    /// The path template, `{name}` for a segment the handler reads.
    pub path: &'static str,
    /// Attaches the handler to the method-guarded route.
    pub handler: fn(actix_web::Route) -> actix_web::Route,
    /// The route's description, built when the document is.
    pub doc: fn() -> Op,
}

/// What the document says of one route besides its method and path.
pub struct Op {
    pub summary: &'static str,
    pub tag: &'static str,
    pub auth: Auth,
    pub params: Vec<Value>,
    pub body: Option<Value>,
    /// Status, description and (when there is a body) the schema of the answer.
    pub success: (u16, &'static str, Option<Value>),
    /// The problems the route answers besides those every route shares.
    pub errors: Vec<Problem>,
}

/// Registers every route of `table`, in order (actix tries resources in the
/// order they were registered; the method is a guard of the resource, so a path
/// served with several methods is several resources).
pub fn register<'a>(cfg: &mut web::ServiceConfig, table: impl IntoIterator<Item = &'a Route>) {
    for route in table {
        let auth = (route.doc)().auth;
        cfg.service(
            web::resource(route.path)
                .guard(actix_web::guard::Method(route.method.http()))
                .app_data(auth)
                .route((route.handler)(route.method.route())),
        );
    }
}
