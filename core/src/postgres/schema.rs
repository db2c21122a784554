//! The schema, created by the owner role (`nexus db init`), and what the runtime
//! role (`nexus serve`) may do with it: read and insert log rows, move the log's
//! head, nothing else. No UPDATE or DELETE of a log row, no DDL: enforced by
//! the server's grants.

use tokio_postgres::Client;

use super::PgError;

/// The schema every Nexus table lives in.
pub const SCHEMA: &str = "nexus";
/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Everything the owner creates, idempotently.
const CREATE: &str = r"
CREATE SCHEMA IF NOT EXISTS nexus;
CREATE TABLE IF NOT EXISTS nexus.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL
);
-- One row per record: the record's bytes exactly as the hash chain covers them
-- (the same bytes the embedded log keeps), and the columns the indexes need.
CREATE TABLE IF NOT EXISTS nexus.events (
    position bigint PRIMARY KEY CHECK (position > 0),
    stream text NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    event_id uuid NOT NULL,
    record bytea NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
-- The log's head: the last position and its hash. Every commit group moves it
-- from the value it read, under the writers' advisory lock.
CREATE TABLE IF NOT EXISTS nexus.log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position bigint NOT NULL CHECK (position >= 0),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    recorded_at_micros bigint NOT NULL
);
INSERT INTO nexus.log_head (position, hash, recorded_at_micros)
    VALUES (0, decode(repeat('00', 32), 'hex'), 0)
    ON CONFLICT DO NOTHING;
REVOKE ALL ON SCHEMA nexus FROM PUBLIC;
";

/// Creates (or completes) the schema as the connected owner and grants the
/// runtime role exactly what serving needs. Refuses a runtime role that is the
/// owner or a superuser: least privilege means another role.
pub async fn init_schema(owner: &Client, runtime_role: &str) -> Result<(), PgError> {
    let me: String = owner
        .query_one("SELECT current_user::text", &[])
        .await?
        .get(0);
    if me == runtime_role {
        return Err(PgError::Address(format!(
            "the runtime role must not be the owner ({me}): create a role for serving"
        )));
    }
    let role = owner
        .query_opt(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&runtime_role],
        )
        .await?
        .ok_or_else(|| {
            PgError::Address(format!(
                "no role {runtime_role:?}: create it first (CREATE ROLE … LOGIN PASSWORD …)"
            ))
        })?;
    if role.get::<_, bool>(0) {
        return Err(PgError::Address(format!(
            "the runtime role {runtime_role:?} is a superuser: it must not be"
        )));
    }
    let found = schema_version(owner).await?;
    if found > SCHEMA_VERSION {
        return Err(PgError::Database(format!(
            "the database has schema version {found}, newer than this build's {SCHEMA_VERSION}"
        )));
    }
    let role = quote_ident(runtime_role);
    let grants = format!(
        "GRANT USAGE ON SCHEMA nexus TO {role};
         GRANT SELECT, INSERT ON nexus.events TO {role};
         GRANT SELECT ON nexus.log_head, nexus.schema_version TO {role};
         GRANT UPDATE (position, hash, recorded_at_micros) ON nexus.log_head TO {role};"
    );
    let version = format!(
        "INSERT INTO nexus.schema_version (version) VALUES ({SCHEMA_VERSION})
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version;"
    );
    owner
        .batch_execute(&format!("BEGIN; {CREATE} {grants} {version} COMMIT;"))
        .await?;
    Ok(())
}

/// The schema version in the database; 0 when there is none.
pub async fn schema_version(client: &Client) -> Result<i32, PgError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('nexus.schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM nexus.schema_version", &[])
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Refuses a database whose schema is not this build's.
pub async fn check_schema(client: &Client) -> Result<(), PgError> {
    match schema_version(client).await? {
        SCHEMA_VERSION => Ok(()),
        found => Err(PgError::SchemaMissing { found }),
    }
}

/// A role name as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
