//! `nexus retention status|run|verify` and `nexus audit verify|balance|export`
//! on the data dir of a real server: refused (with the admin routes named)
//! while the server holds the store, then run on the stopped server's data.
//! The sweeps' decisions over time are tested in the retention crate with a
//! manual clock; the audit's arithmetic in the projections crate.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nexus_tests::journey::{call, customer, fund, signed_in_customer, to_micros, with_session};
use nexus_tests::{nexus_binary, Server};

fn nexus(server: &Server, args: &[&str]) -> Output {
    Command::new(nexus_binary())
        .args(args)
        .env("NEXUS_DATA_DIR", server.data_dir.path())
        .env("NEXUS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run nexus retention")
}

fn json_of(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn retention_commands_on_a_stopped_servers_data() {
    let mut server = Server::start();
    let dana = signed_in_customer(&server, "dana@example.com");
    fund(&server, &dana.key, "5.00");
    let deletion = with_session(
        &server,
        "POST",
        "/v1/me/deletion",
        &dana.session,
        Some(r#"{"confirm_forfeit_balance":true}"#),
    );
    assert_eq!(deletion.status, 202, "{}", deletion.body);

    // The running server holds the store: the command says where to go instead.
    let refused = nexus(&server, &["retention", "status"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("/v1/admin/retention/sweep"), "{stderr}");

    server.signal_terminate();
    assert!(server.wait_for_exit(Duration::from_secs(60)).success());

    let status = nexus(&server, &["retention", "status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status = json_of(&status);
    assert_eq!(status["scheduled"], 1, "{status}");
    assert_eq!(status["due_now"], 0, "{status}");
    assert_eq!(status["held"], 0, "{status}");
    assert!(
        status["next_due"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("account-"),
        "{status}"
    );
    let months = status["financial_months"].as_array().unwrap();
    assert!(
        months.iter().any(|m| m["records"].as_u64().unwrap() > 0),
        "{status}"
    );

    let run = nexus(&server, &["retention", "run", "--json"]);
    assert!(run.status.success(), "{run:?}");
    let run = json_of(&run);
    assert_eq!(run["examined"], 0, "{run}");
    assert_eq!(run["failed"], 0, "{run}");

    let proof = nexus(&server, &["retention", "verify"]);
    assert!(proof.status.success(), "{proof:?}");
    let text = String::from_utf8_lossy(&proof.stdout);
    assert!(text.starts_with("ok: "), "{text}");
}

#[test]
fn audit_commands_on_a_stopped_servers_data() {
    let mut server = Server::start();
    let erin = customer(&server, "erin@example.com");
    fund(&server, &erin, "7.25");
    let placed = call(
        &server,
        "POST",
        "/v1/orders",
        &erin,
        &[("Idempotency-Key", "audit-order-1")],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    server.signal_terminate();
    assert!(server.wait_for_exit(Duration::from_secs(60)).success());

    let verify = nexus(&server, &["audit", "verify", "--json"]);
    assert!(verify.status.success(), "{verify:?}");
    let verify = json_of(&verify);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["ledger_total_micros"], "0", "{verify}");
    assert_eq!(verify["read_model_mismatches"], 0, "{verify}");
    assert!(verify["entries_posted"].as_u64().unwrap() >= 2, "{verify}");

    let balance = nexus(&server, &["audit", "balance", "--json"]);
    assert!(balance.status.success(), "{balance:?}");
    let balance = json_of(&balance);
    assert_eq!(balance["total"], "0.000000", "{balance}");
    assert_eq!(
        balance["accounts"]["crypto_clearing"], "-7.250000",
        "{balance}"
    );
    // The order's hold moved part of the deposit from available to held.
    let available = balance["accounts"]["customer_available"].as_str().unwrap();
    let held = balance["accounts"]["customer_held"]
        .as_str()
        .unwrap_or("0.00");
    assert_eq!(
        to_micros(available) + to_micros(held),
        7_250_000,
        "{balance}"
    );

    // Before anything happened, the balance is empty (and still sums to zero).
    let early = nexus(
        &server,
        &["audit", "balance", "--json", "--at", "2000-01-01T00:00:00Z"],
    );
    let early = json_of(&early);
    assert_eq!(early["entries_posted"], 0, "{early}");
    assert_eq!(early["total"], "0.000000", "{early}");

    let export = nexus(&server, &["audit", "export"]);
    assert!(export.status.success(), "{export:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["reason"] == "deposit"
        && l["amount"] == "7.250000"
        && l["debit"] == "crypto_clearing"
        && l["credit"]
            .as_str()
            .unwrap()
            .starts_with("available:account-")));
    assert!(lines.iter().any(|l| l["reason"] == "hold"), "{lines:?}");
    // Nothing personal in it: no e-mail address.
    assert!(!String::from_utf8_lossy(&export.stdout).contains("erin@"));

    let bad = nexus(&server, &["audit", "balance", "--at", "yesterday"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"),
        "{bad:?}"
    );
}

/// Given a data directory without a store (a mistyped `--data-dir`, or the
/// wrong working directory), when any command but `serve` runs on it, then it
/// exits with 2, names the directory and `--data-dir`, and creates nothing
/// there: no master key, no empty store whose audit would pass.
#[test]
fn commands_refuse_a_data_directory_without_a_store() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("dta");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let commands: [&[&str]; 8] = [
        &["verify"],
        &["audit", "verify"],
        &["audit", "balance"],
        &["audit", "export"],
        &["retention", "status"],
        &["retention", "run"],
        &["retention", "verify"],
        &["replay"],
    ];
    for dir in [&missing, &empty] {
        for args in commands {
            let output = Command::new(nexus_binary())
                .args(args)
                .env("NEXUS_DATA_DIR", dir)
                .env("NEXUS_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .expect("run nexus");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&dir.display().to_string()) && stderr.contains("--data-dir"),
                "{args:?}: {stderr}"
            );
            assert!(output.stdout.is_empty(), "{args:?}: nothing reported");
        }
    }
    assert!(!missing.exists(), "the mistyped directory is not created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing made"
    );
}
