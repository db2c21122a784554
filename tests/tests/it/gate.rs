//! What every request passes through, against the real binary: rate limits (429
//! with `Retry-After`), the usage log, the HTTPS listener, graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_tests::journey::{call, customer, PASSWORD};
use nexus_tests::{Response, Server};

fn assert_rate_limited(response: &Response) {
    assert_eq!(response.status, 429, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(response.json()["code"], "rate_limited");
    let retry_after: u64 = response
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

#[test]
fn each_budget_answers_429_with_retry_after_when_spent() {
    let server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_IP_PER_S", "3"),
        ("NEXUS_RATE_KEY_PER_S", "3"),
        ("NEXUS_RATE_AUTH_PER_MIN", "4"),
    ]);
    // Sign-in budget: register, verify and log in share 4 a minute per IP.
    let key = customer(&server, "limits@example.com");
    let login = format!(r#"{{"email":"limits@example.com","password":"{PASSWORD}"}}"#);
    // customer() spent three (register, verify, log in): one more is allowed.
    let fourth = server.send("POST", "/v1/sessions", &[], Some(&login));
    assert_eq!(fourth.status, 201, "{}", fourth.body);
    let refused = server.send("POST", "/v1/sessions", &[], Some(&login));
    assert_rate_limited(&refused);
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 10
    );

    // A key's budget: burst 6 at 3/s.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(call(&server, "GET", "/v1/wallet", &key, &[], None));
    }
    let limited: Vec<&Response> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "no 429 in 12 calls at a 3/s budget");
    assert!(statuses.iter().all(|r| r.status == 200 || r.status == 429));
    assert_rate_limited(limited[0]);

    // Unauthenticated routes: the IP's budget, separate from the key's.
    let mut public = Vec::new();
    for _ in 0..12 {
        public.push(server.send("GET", "/v1/catalog/services", &[], None));
    }
    let limited = public.iter().find(|r| r.status == 429).expect("a 429");
    assert_rate_limited(limited);

    // Budgets refill: after the wait, the key is served again.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(
        call(&server, "GET", "/v1/wallet", &key, &[], None).status,
        200
    );
}

#[test]
fn the_usage_log_holds_routes_statuses_and_callers_and_no_secrets() {
    let mut server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ]);
    let email = "usage-log@example.com";
    let key = customer(&server, email);
    assert_eq!(
        call(&server, "GET", "/v1/wallet", &key, &[], None).status,
        200
    );
    let missing = call(
        &server,
        "GET",
        "/v1/orders/ord_secretlookingid?wait=1",
        &key,
        &[],
        None,
    );
    assert_eq!(missing.status, 404);
    assert_eq!(
        server
            .send("GET", "/v1/track/trk_notarealtrackingid", &[], None)
            .status,
        404
    );
    // The writer flushes at least once a second.
    let dir = server.data_dir.path().join("usage");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text: String = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        if text.contains("/v1/track/{tracking_id}") {
            break text;
        }
        assert!(Instant::now() < deadline, "usage lines missing:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let wallet = lines
        .iter()
        .find(|l| l["route"] == "/v1/wallet")
        .expect("the wallet call");
    assert_eq!(wallet["method"], "GET");
    assert_eq!(wallet["status"], 200);
    assert!(wallet["latency_us"].as_u64().is_some());
    let me = call(&server, "GET", "/v1/me", &key, &[], None).json();
    assert_eq!(wallet["account"], me["id"], "{wallet}");
    assert!(!wallet["key_id"].as_str().unwrap().is_empty(), "{wallet}");
    assert!(lines
        .iter()
        .any(|l| l["route"] == "/v1/orders/{id}" && l["status"] == 404));
    let register = lines
        .iter()
        .find(|l| l["route"] == "/v1/accounts" && l["method"] == "POST")
        .expect("the registration");
    assert!(register.get("account").is_none());
    for secret in [
        email,
        PASSWORD,
        key.as_str(),
        "secretlookingid",
        "notarealtrackingid",
        "127.0.0.1",
        "wait=1",
    ] {
        assert!(!text.contains(secret), "the usage log holds {secret:?}");
    }
    server.kill();
}

fn tls_client_config() -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixtures.join("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[test]
fn the_https_listener_serves_over_rustls_and_refuses_plain_http() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let cert = fixtures.join("cert.pem");
    let key = fixtures.join("key.pem");
    let server = Server::start_with(&[
        ("NEXUS_TLS_CERT", cert.to_str().unwrap()),
        ("NEXUS_TLS_KEY", key.to_str().unwrap()),
    ]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(tls_client_config(), name).unwrap();
    let socket = TcpStream::connect(server.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    // A peer that closes without close_notify is an error in rustls; the
    // answer is what matters.
    let _ = tls.read_to_end(&mut raw);
    let answer = String::from_utf8_lossy(&raw);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
}

#[test]
fn a_missing_tls_key_or_half_a_tls_setting_fails_start_up_clearly() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let cert = fixtures.join("cert.pem");
    let data = tempfile::tempdir().unwrap();
    for (env, expected) in [
        (
            vec![("NEXUS_TLS_CERT", cert.to_str().unwrap())],
            "NEXUS_TLS_CERT and NEXUS_TLS_KEY go together",
        ),
        (
            vec![
                ("NEXUS_TLS_CERT", cert.to_str().unwrap()),
                ("NEXUS_TLS_KEY", "/nonexistent/key.pem"),
            ],
            "reading the private key",
        ),
    ] {
        let output = std::process::Command::new(nexus_tests::nexus_binary())
            .arg("serve")
            .env("NEXUS_DATA_DIR", data.path())
            .env("NEXUS_LISTEN", "127.0.0.1:0")
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn a_stop_signal_lets_in_flight_requests_finish() {
    let mut server = Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", "60000"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
    ]);
    let key = customer(&server, "shutdown@example.com");
    nexus_tests::journey::fund(&server, &key, "5.00");
    let placed = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[("Idempotency-Key", "shutdown-1")],
        Some(r#"{"service":"tg","country":"GB","channel":"sms"}"#),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    let id = placed.json()["id"].as_str().unwrap().to_owned();
    // A long poll in flight when the stop signal comes still gets its answer.
    let addr = server.addr;
    let poll = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET /v1/orders/{id}/code?wait=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    });
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = Instant::now();
    server.signal_terminate();
    let answer = poll.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"code\":null"), "{answer}");
    let status = server.wait_for_exit(Duration::from_secs(40));
    assert!(status.success(), "exit status {status:?}");
    assert!(stopped_at.elapsed() >= Duration::from_secs(2));
    // New connections are refused once it stopped.
    assert!(TcpStream::connect(addr).is_err());
}
