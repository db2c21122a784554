//! The PostgreSQL backend's commands on the real binary: `nexus db init` as
//! the owner, `nexus db migrate --to postgres` of a stopped server's log, and
//! `nexus db verify` as the runtime role, against a throw-away cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nexus_testkit::postgres::{PgCluster, RUNTIME_ROLE};
use nexus_tests::journey::{fund, signed_in_customer};
use nexus_tests::{nexus_binary, Server};

fn nexus(server: &Server, cluster: &PgCluster, database: &str, args: &[&str]) -> Output {
    Command::new(nexus_binary())
        .args(args)
        .env("NEXUS_DATA_DIR", server.data_dir.path())
        .env("NEXUS_DATABASE_URL", cluster.runtime_url(database))
        .env("NEXUS_DATABASE_OWNER_URL", cluster.owner_url(database))
        .env("NEXUS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run nexus")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Given a stopped server's log, when the database is initialised and the log
/// migrated, then `nexus verify` (sled) and `nexus db verify` (PostgreSQL, as
/// the runtime role) report the same events and head hash, a second migration
/// is refused, and no command takes a database address on its command line.
#[test]
fn a_stopped_servers_log_migrates_to_postgres_and_verifies_the_same() {
    let mut server = Server::start();
    let erin = signed_in_customer(&server, "erin@example.com");
    fund(&server, &erin.key, "12.50");
    server.signal_terminate();
    assert!(server.wait_for_exit(Duration::from_secs(60)).success());

    let cluster = PgCluster::shared().expect("a PostgreSQL test cluster");
    let db = cluster.fresh_database().unwrap();
    let run = |args: &[&str]| nexus(&server, &cluster, &db, args);

    let init = stdout(&run(&["db", "init"]));
    assert!(init.contains(RUNTIME_ROLE), "{init}");
    assert!(
        !init.contains(&cluster.runtime_url(&db)),
        "no password shown"
    );
    assert_eq!(
        stdout(&run(&["db", "verify"])),
        format!("ok: 0 events, head hash {}", "0".repeat(64))
    );

    let migrated = stdout(&run(&["db", "migrate", "--to", "postgres"]));
    let on_sled = stdout(&run(&["verify"]));
    let on_postgres = stdout(&run(&["db", "verify"]));
    assert_eq!(on_sled, on_postgres);
    let hash = on_sled.rsplit(' ').next().unwrap();
    assert!(
        migrated.ends_with(&format!("head hash {hash} on both")),
        "{migrated}"
    );
    assert!(!on_sled.starts_with("ok: 0 "), "{on_sled}");

    let again = run(&["db", "migrate", "--to", "postgres"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{again:?}"
    );

    let url = cluster.runtime_url(&db);
    let shown = run(&["db", "verify", "--database-url", &url]);
    assert!(!shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(stderr.contains("NEXUS_DATABASE_URL only"), "{stderr}");
    assert!(!stderr.contains(&url), "the address is not echoed");
}
