//! The PostgreSQL backend's connections: the address (`postgres://…`), TLS,
//! and a small set of shared connections.
//!
//! TLS: a database on another host is reached only with `sslmode=verify-full`
//! (the server's certificate checked against `sslrootcert` and its host name);
//! plaintext only to loopback or a unix socket. `require`, `prefer` and
//! `verify-ca` are refused: none of them proves which server answered.
//!
//! A tokio-postgres client pipelines the queries of concurrent callers over one
//! connection, so a few shared connections serve many tasks without a checkout
//! pool; a connection that broke is replaced on its next use.

mod connection;
pub mod lease;
pub mod schema;
mod tls;

pub use connection::{Connections, PgAddress, PgNotification, MAX_POOL_CONNECTIONS};
pub use schema::{init_schema, SCHEMA};

/// What can go wrong reaching or setting up the database. Messages carry no
/// password: addresses are shown without theirs.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid database address: {0}")]
    Address(String),
    #[error(
        "TLS is required for a database on another host: use sslmode=verify-full with \
         sslrootcert=FILE (plaintext is for loopback and unix sockets only)"
    )]
    TlsRequired,
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("database: {0}")]
    Database(String),
    #[error(
        "the database has no Nexus schema (or an older one, version {found}): run `nexus db init`"
    )]
    SchemaMissing { found: i32 },
    #[error("the database is not empty: {0}")]
    NotEmpty(String),
}

/// An error from the server or the connection, without the values of a query:
/// the SQLSTATE, the message and the constraint, never a row's detail.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let constraint = db
                .constraint()
                .map(|c| format!(" (constraint {c})"))
                .unwrap_or_default();
            format!("{} {}{constraint}", db.code().code(), db.message())
        }
        None if e.is_closed() => "the connection is closed".into(),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Database(describe(&e))
    }
}

/// A u64 position or version as PostgreSQL's bigint.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A bigint read back; negative values are corruption, reported by the caller.
pub(crate) fn to_u64(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}
