//! Where a test's log lives: a sled directory, or a database of its own on a
//! throw-away PostgreSQL cluster. Every behaviour test of the log runs on both
//! (`on_both_backends!`), so the backends answer to one suite.

use std::sync::Arc;

use nexus_core::log::{AnyLog, EventStore, LogError, PgLog, PgLogConfig, SledLog, SledLogConfig};
use nexus_core::postgres::{init_schema, PgAddress};
use nexus_testkit::postgres::{PgCluster, RUNTIME_ROLE};
use tempfile::TempDir;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sled,
    Postgres,
}

/// A log's home; opening it again finds what was appended before.
#[derive(Clone)]
pub enum Backend {
    Sled(Arc<TempDir>),
    Postgres {
        cluster: Arc<PgCluster>,
        database: String,
    },
}

impl Backend {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sled => Backend::Sled(Arc::new(tempfile::tempdir().unwrap())),
            Kind::Postgres => {
                let cluster = PgCluster::shared().expect("a PostgreSQL test cluster");
                let database = cluster.fresh_database().unwrap();
                let owner = PgAddress::parse(&cluster.owner_url(&database)).unwrap();
                let client = owner.connect().await.unwrap();
                init_schema(&client, RUNTIME_ROLE).await.unwrap();
                Backend::Postgres { cluster, database }
            }
        }
    }

    /// What a child process needs to open the same log: `sled:DIR` or
    /// `postgres:URL` (the runtime role's).
    pub fn spec(&self) -> String {
        match self {
            Backend::Sled(dir) => format!("sled:{}", dir.path().display()),
            Backend::Postgres { cluster, database } => {
                format!("postgres:{}", cluster.runtime_url(database))
            }
        }
    }

    pub async fn open(&self) -> Arc<AnyLog> {
        Arc::new(self.try_open().await.expect("open the log"))
    }

    pub async fn try_open(&self) -> Result<AnyLog, LogError> {
        try_open_spec(&self.spec()).await
    }

    /// Flips the first byte of `needle` where the record holding it is stored:
    /// on sled inside the commit group's value, on PostgreSQL in the record's
    /// row (as the owner: the runtime role cannot update a row). The log must
    /// be closed on sled (one process holds its database).
    pub async fn flip_stored_byte(&self, needle: &[u8]) {
        self.rewrite_stored(needle, |bytes, at| bytes[at] ^= 0xff)
            .await;
    }

    /// Cuts the record holding `needle` short by 3 bytes.
    pub async fn truncate_stored(&self, needle: &[u8]) {
        self.rewrite_stored(needle, |bytes, _| bytes.truncate(bytes.len() - 3))
            .await;
    }

    async fn rewrite_stored(&self, needle: &[u8], edit: impl Fn(&mut Vec<u8>, usize)) {
        let find = |bytes: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
        match self {
            Backend::Sled(dir) => {
                let db = sled::Config::new()
                    .path(dir.path().join("log"))
                    // The log's own segment size: sled refuses another.
                    .segment_size(8 * 1024 * 1024)
                    .open()
                    .unwrap();
                let tree = db.open_tree("log").unwrap();
                for item in tree.iter() {
                    let (key, value) = item.unwrap();
                    if let Some(at) = find(&value) {
                        let mut bytes = value.to_vec();
                        edit(&mut bytes, at);
                        tree.insert(key, bytes).unwrap();
                        db.flush().unwrap();
                        return;
                    }
                }
                panic!("no stored group holds the bytes");
            }
            Backend::Postgres { cluster, database } => {
                let owner = PgAddress::parse(&cluster.owner_url(database)).unwrap();
                let client = owner.connect().await.unwrap();
                let rows = client
                    .query("SELECT position, record FROM nexus.events", &[])
                    .await
                    .unwrap();
                for row in rows {
                    let record: Vec<u8> = row.get(1);
                    if let Some(at) = find(&record) {
                        let mut bytes = record;
                        edit(&mut bytes, at);
                        let position: i64 = row.get(0);
                        client
                            .execute(
                                "UPDATE nexus.events SET record = $1 WHERE position = $2",
                                &[&bytes, &position],
                            )
                            .await
                            .unwrap();
                        return;
                    }
                }
                panic!("no stored row holds the bytes");
            }
        }
    }
}

/// Opens the log a [`Backend::spec`] names.
pub async fn open_spec(spec: &str) -> AnyLog {
    try_open_spec(spec).await.expect("open the log")
}

async fn try_open_spec(spec: &str) -> Result<AnyLog, LogError> {
    Ok(match spec.split_once(':') {
        Some(("sled", dir)) => SledLog::open(&SledLogConfig::new(dir))?.into(),
        Some(("postgres", url)) => {
            let mut config = PgLogConfig::new(PgAddress::parse(url).unwrap());
            config.read_connections = 2;
            PgLog::open(&config).await?.into()
        }
        _ => panic!("unknown backend spec {spec}"),
    })
}

/// Runs each named `async fn(Backend)` as a test on sled and on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[test]
                fn $name() {
                    super::runtime().block_on(async {
                        let backend = super::Backend::new(super::Kind::Sled).await;
                        super::$name(backend).await
                    })
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    super::runtime().block_on(async {
                        let backend = super::Backend::new(super::Kind::Postgres).await;
                        super::$name(backend).await
                    })
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

// ---- PostgreSQL only: what the runtime role may do -----------------------------

/// Given a log on PostgreSQL with events in it, the role `nexus serve` connects
/// as appends and reads, and the server refuses it every rewrite of the log:
/// UPDATE, DELETE and TRUNCATE of a row, and any change to the schema.
#[test]
fn the_runtime_role_appends_and_reads_but_cannot_rewrite_the_log() {
    crate::log::runtime().block_on(async {
        let backend = Backend::new(Kind::Postgres).await;
        let Backend::Postgres { cluster, database } = &backend else {
            unreachable!("asked for PostgreSQL")
        };
        let log = backend.open().await;
        crate::log::append_three(&log).await;
        let runtime = PgAddress::parse(&cluster.runtime_url(database)).unwrap();
        let client = runtime.connect().await.unwrap();
        let refused = [
            "UPDATE nexus.events SET record = '\\x00' WHERE position = 1",
            "DELETE FROM nexus.events WHERE position = 3",
            "TRUNCATE nexus.events",
            "UPDATE nexus.log_head SET singleton = true",
            "DELETE FROM nexus.log_head",
            "ALTER TABLE nexus.events DROP CONSTRAINT events_event_id_key",
            "DROP TABLE nexus.events",
            "CREATE TABLE nexus.shadow (x int)",
            "CREATE TABLE public.shadow (x int)",
            "UPDATE nexus.schema_version SET version = 9",
        ];
        for sql in refused {
            let err = client.batch_execute(sql).await.expect_err(sql);
            let code = err.as_db_error().map(|e| e.code().code().to_owned());
            // 42501 insufficient_privilege; 42809/42P01 never reached.
            assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
        }
        let report = log.verify().await.unwrap();
        assert_eq!((report.head, report.first_broken), (3, None));
    });
}

/// `db init` will not grant to the owner itself or to a superuser.
#[test]
fn schema_init_refuses_a_runtime_role_with_more_than_it_needs() {
    crate::log::runtime().block_on(async {
        let cluster = PgCluster::shared().unwrap();
        let database = cluster.fresh_database().unwrap();
        let owner = PgAddress::parse(&cluster.owner_url(&database)).unwrap();
        let client = owner.connect().await.unwrap();
        let me = nexus_testkit::postgres::OWNER_ROLE;
        assert!(init_schema(&client, me).await.is_err());
        cluster
            .psql(&database, "CREATE ROLE nexus_too_strong SUPERUSER")
            .unwrap();
        assert!(init_schema(&client, "nexus_too_strong").await.is_err());
        assert!(init_schema(&client, "nexus_no_such_role").await.is_err());
        // Nothing was created by the refusals.
        let version = nexus_core::postgres::schema::schema_version(&client)
            .await
            .unwrap();
        assert_eq!(version, 0);
        init_schema(&client, RUNTIME_ROLE).await.unwrap();
        init_schema(&client, RUNTIME_ROLE).await.unwrap();
    });
}

/// Given a sled log with multi-stream appends, correlation ids and sealed
/// personal sections, when it is imported into an empty PostgreSQL log, then
/// every event reads back equal (position, id, time, hash), both chains end in
/// the same head hash, the runtime role's log verifies, and a second import
/// into the now non-empty database is refused without writing anything.
#[test]
fn a_sled_log_imports_into_postgres_unchanged_and_only_once() {
    crate::log::runtime().block_on(async {
        let sled = Backend::new(Kind::Sled).await;
        let source = sled.open().await;
        crate::log::append_varied(&source).await;
        let pg = Backend::new(Kind::Postgres).await;
        let Backend::Postgres { cluster, database } = &pg else {
            unreachable!("asked for PostgreSQL")
        };
        let owner = PgAddress::parse(&cluster.owner_url(database)).unwrap();
        let mut client = owner.connect().await.unwrap();
        let mut seen = Vec::new();
        let imported = nexus_core::log::import(&mut client, source.as_ref(), |p| seen.push(p))
            .await
            .unwrap();
        let expected = source.verify().await.unwrap();
        assert_eq!(imported.events, expected.head);
        assert_eq!(imported.head_hash, expected.head_hash);
        assert_eq!(seen.last(), Some(&expected.head));

        let target = pg.open().await;
        let report = target.verify().await.unwrap();
        assert_eq!(report.first_broken, None);
        assert_eq!(
            (report.head, report.head_hash),
            (expected.head, expected.head_hash)
        );
        let (a, b) = (
            source.read_all(1, 10_000).await.unwrap(),
            target.read_all(1, 10_000).await.unwrap(),
        );
        assert_eq!(a, b, "every event reads back the same");

        let again = nexus_core::log::import(&mut client, source.as_ref(), |_| {}).await;
        assert!(matches!(again, Err(LogError::Database(m)) if m.contains("not empty")));
        assert_eq!(target.verify().await.unwrap().head, expected.head);
    });
}

/// TLS as `sslmode=verify-full`: given a server whose certificate a test CA
/// signed for 127.0.0.1, the session with that CA is encrypted; with another
/// CA, or under another host name, the connection is refused before any
/// password is sent.
#[test]
fn tls_to_postgres_checks_the_servers_certificate_and_name() {
    crate::log::runtime().block_on(async {
        let cluster = PgCluster::start_with_tls().expect("a cluster with TLS");
        let files = cluster.tls_files();
        let database = cluster.fresh_database().unwrap();
        let url = cluster.owner_url(&database);
        let with_ca = |ca: &std::path::Path, extra: &str| {
            format!(
                "{url}?sslmode=verify-full&sslrootcert={}{extra}",
                ca.display()
            )
        };
        let client = PgAddress::parse(&with_ca(&files.ca, ""))
            .unwrap()
            .connect()
            .await
            .expect("verified TLS");
        let encrypted: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted);

        let other_ca = PgAddress::parse(&with_ca(&files.other_ca, "")).unwrap();
        assert!(
            other_ca.connect().await.is_err(),
            "a CA that signed nothing"
        );

        let port = cluster.port();
        let renamed = with_ca(&files.ca, "&hostaddr=127.0.0.1").replace(
            &format!("@127.0.0.1:{port}"),
            &format!("@db.example.com:{port}"),
        );
        let wrong_name = PgAddress::parse(&renamed).unwrap();
        assert!(
            wrong_name.connect().await.is_err(),
            "a name not on the certificate"
        );
    });
}
