//! End-to-end: the real `nexus` binary over loopback HTTP.

use nexus_tests::Server;

#[test]
fn serve_answers_health_on_the_embedded_default() {
    let server = Server::start();
    let (status, body) = server.request("GET", "/health", None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    // Up, and nothing more: the log's head is business volume.
    assert_eq!(json, serde_json::json!({ "status": "ok" }));
    // A person who opens the server finds where the API is described.
    let (status, page) = server.request("GET", "/", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("href=\"/openapi.json\""), "{page}");
    assert!(page.contains("href=\"/reference\""), "{page}");
    // The embedded default made its store and master key inside the data dir.
    let dir = server.data_dir.path();
    assert!(dir.join("store").is_dir());
    let key = dir.join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_clearly() {
    let first = Server::start();
    let output = std::process::Command::new(nexus_tests::nexus_binary())
        .arg("serve")
        .env("NEXUS_DATA_DIR", first.data_dir.path())
        .env("NEXUS_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run nexus");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Said once, with what to check.
    assert_eq!(
        stderr.matches("in use by another process").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("another `nexus serve`"), "{stderr}");
}

#[test]
fn verify_reports_an_intact_chain() {
    let mut server = Server::start();
    server.kill();
    let output = std::process::Command::new(nexus_tests::nexus_binary())
        .arg("verify")
        .env("NEXUS_DATA_DIR", server.data_dir.path())
        .output()
        .expect("run nexus verify");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: 0 events"));
}

#[test]
fn the_data_dir_flag_overrides_the_environment() {
    let flagged = tempfile::tempdir().unwrap();
    let ignored = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(nexus_tests::nexus_binary())
        .arg("--data-dir")
        .arg(flagged.path())
        .arg("verify")
        .env("NEXUS_DATA_DIR", ignored.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Neither holds a store: the refusal names the flag's directory, the
    // one the command looked in.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&flagged.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&ignored.path().display().to_string()),
        "{stderr}"
    );
}

/// Every file and directory the server made under the data dir is its owner's
/// only (0600 / 0700), whatever the umask it inherited, and a data dir created
/// open before is closed at start.
#[test]
fn the_data_dir_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut server = Server::start_in(
        data_dir,
        &[
            ("NEXUS_SIM_FAULTS", "off"),
            ("NEXUS_COOKIE_SECURE", "false"),
        ],
    );
    // Mail in the outbox, a session, usage records, projections.
    nexus_tests::journey::customer(&server, "owner.only@example.com");
    server.signal_terminate();
    server.wait_for_exit(std::time::Duration::from_secs(30));
    let mut open = Vec::new();
    let mut seen = 0;
    let mut stack = vec![server.data_dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        seen += 1;
        if meta.permissions().mode() & 0o077 != 0 {
            open.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    assert!(seen > 10, "the server wrote its files ({seen} entries)");
    assert!(open.is_empty(), "readable by others: {open:#?}");
}
