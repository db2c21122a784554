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
    assert!(stderr.contains("in use by another process"), "{stderr}");
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
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(flagged.path().join("store").exists());
    assert!(!ignored.path().join("store").exists());
}
