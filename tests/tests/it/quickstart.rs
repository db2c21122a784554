//! The README's quickstart, run as written: its shell blocks, in order, in one
//! `bash`, against the real binary on the embedded default with the default rate
//! limits. Only `NEXUS` and `DATA` come from the test (the blocks read them with
//! a default), so the server can have a free port and a temporary data dir.

use std::process::{Command, Stdio};

use nexus_tests::journey::to_micros;
use nexus_tests::Server;

/// The shell blocks of the README's "Quickstart" section, in order.
fn quickstart_blocks() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let (_, section) = readme
        .split_once("\n## Quickstart\n")
        .expect("the README has a Quickstart section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some((_, after)) = rest.split_once("```sh\n") {
        let (block, after) = after.split_once("```").expect("a closed block");
        blocks.push(block.to_owned());
        rest = after;
    }
    blocks
}

#[test]
fn the_readme_quickstart_works_as_written() {
    let blocks = quickstart_blocks();
    assert!(blocks.len() >= 6, "{} blocks", blocks.len());
    let script = blocks.join("\n");
    for step in [
        "/v1/accounts",
        "/v1/sessions",
        "/v1/api-keys",
        "/v1/deposits",
        "/v1/dev/payments/",
        "/v1/catalog/prices",
        "/code?wait=",
        "/complete",
        "/cancel",
    ] {
        assert!(script.contains(step), "the quickstart has no {step}");
    }
    // As a person gets it: the default rate limits, faults and timings.
    let server = Server::start_with(&[
        ("NEXUS_RATE_KEY_PER_S", "20"),
        ("NEXUS_RATE_IP_PER_S", "20"),
        ("NEXUS_RATE_AUTH_PER_MIN", "10"),
    ]);
    let workdir = tempfile::tempdir().expect("a working directory");
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(workdir.path())
        .env("NEXUS", format!("http://{}", server.addr))
        .env("DATA", server.data_dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}\n{stdout}\n{stderr}", run.status);

    // What the journey did, seen by its customer: one order completed and
    // charged, one cancelled and refunded, the cashback, no problem answered.
    assert!(
        !stdout.contains("\"code\":\"") || stdout.contains("\"received_at\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("application/problem") && !stdout.contains("\"status\":4"),
        "{stdout}"
    );
    let signed_in = server.send(
        "POST",
        "/v1/sessions",
        &[("Content-Type", "application/json")],
        Some(r#"{"email":"you@example.com","password":"a long password"}"#),
    );
    assert_eq!(signed_in.status, 201, "{}", signed_in.body);
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let get = |path: &str| {
        let answer = server.send("GET", path, &[("Cookie", &cookie)], None);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer.json()
    };
    let orders = get("/v1/orders");
    let orders = orders["items"].as_array().expect("items");
    let statuses: Vec<(&str, &str)> = orders
        .iter()
        .map(|o| {
            (
                o["service"].as_str().unwrap_or(""),
                o["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [("wa", "cancelled"), ("tg", "completed")],
        "{orders:?}"
    );
    let price = to_micros(orders[1]["price"].as_str().expect("price"));
    let wallet = get("/v1/wallet");
    let available = to_micros(wallet["available"].as_str().expect("available"));
    assert_eq!(available, 10_000_000 - price + price * 2 / 100, "{wallet}");
    assert_eq!(wallet["held"], "0.000000", "{wallet}");
}
