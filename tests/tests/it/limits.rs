//! Rate limits keyed on verified identity, against the real binary: a made-up
//! credential pays from the client IP's budget, failed API keys and admin
//! tokens from a per-IP failure budget, the routes that run bcrypt from the
//! sign-in budget per account and per IP, and `X-Forwarded-For` counts only
//! when a trusted proxy sends it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nexus_tests::journey::{call, customer, signed_in_customer, PASSWORD};
use nexus_tests::{Response, Server};

const ADMIN_TOKEN: &str = "limits-admin-token-0123456789";

/// A server with these budgets (requests per second per principal and per IP,
/// sign-in attempts per minute) and any further settings.
fn start(key_per_s: &str, ip_per_s: &str, auth_per_min: &str, more: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_KEY_PER_S", key_per_s),
        ("NEXUS_RATE_IP_PER_S", ip_per_s),
        ("NEXUS_RATE_AUTH_PER_MIN", auth_per_min),
    ];
    env.extend_from_slice(more);
    Server::start_with(&env)
}

/// A credential no one was ever given, different on each call.
fn made_up(i: usize) -> String {
    format!("nx_{:032x}{i:08}", 0x5eed_u128 * (i as u128 + 1))
}

/// The statuses of `n` requests built by `send(i)`.
fn statuses(n: usize, send: impl Fn(usize) -> Response) -> Vec<u16> {
    (0..n).map(|i| send(i).status).collect()
}

/// Lets every budget of a 3/s rate refill (burst 6 takes 2 s).
fn refill() {
    std::thread::sleep(Duration::from_millis(2_100));
}

#[test]
fn made_up_bearers_and_session_cookies_pay_from_the_ip_budget() {
    let server = start("3", "3", "1000", &[]);
    let catalog = statuses(12, |i| {
        let bearer = format!("Bearer {}", made_up(i));
        server.send(
            "GET",
            "/v1/catalog/services",
            &[("Authorization", &bearer)],
            None,
        )
    });
    assert!(catalog.contains(&429), "{catalog:?}");
    refill();
    let order = r#"{"service":"wa","country":"ID","channel":"sms"}"#;
    // At once: an order may take a while, and the budget refills meanwhile.
    let orders: Vec<u16> = std::thread::scope(|scope| {
        let sent: Vec<_> = (0..12)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    let bearer = format!("Bearer {}", made_up(i));
                    let headers = [("Authorization", bearer.as_str())];
                    server
                        .send("POST", "/v1/anonymous/orders", &headers, Some(order))
                        .status
                })
            })
            .collect();
        sent.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let created = orders.iter().filter(|s| **s == 201).count();
    assert!((1..=7).contains(&created), "{orders:?}");
    assert!(orders.contains(&429), "{orders:?}");
    refill();
    let cookies = statuses(12, |i| {
        let cookie = format!("nexus_session={}", made_up(i));
        server.send("GET", "/v1/catalog/services", &[("Cookie", &cookie)], None)
    });
    assert!(cookies.contains(&429), "{cookies:?}");
}

#[test]
fn failed_api_keys_and_admin_tokens_are_throttled_per_ip() {
    let server = start("1000", "1000", "4", &[("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let guesses = statuses(8, |i| {
        let bearer = format!("Bearer {ADMIN_TOKEN}{i}");
        let headers = [("Authorization", bearer.as_str())];
        server.send("GET", "/v1/admin/projections", &headers, None)
    });
    assert_eq!(&guesses[..4], &[401; 4], "{guesses:?}");
    assert_eq!(&guesses[4..], &[429; 4], "{guesses:?}");
    // The right token from the same address is refused too while the budget
    // is spent: a 200 would tell a guesser it was right.
    let right = format!("Bearer {ADMIN_TOKEN}");
    let refused = server.send(
        "GET",
        "/v1/admin/projections",
        &[("Authorization", &right)],
        None,
    );
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());

    let server = start("1000", "1000", "4", &[]);
    let keys = statuses(8, |i| {
        call(&server, "GET", "/v1/wallet", &made_up(i), &[], None)
    });
    assert_eq!(&keys[..4], &[401; 4], "{keys:?}");
    assert_eq!(&keys[4..], &[429; 4], "{keys:?}");
}

/// `key` with its `i`-th character percent-encoded: the same key, spelled
/// differently.
fn spelled(key: &str, i: usize) -> String {
    key.char_indices()
        .map(|(at, c)| {
            if at == i {
                format!("%{:02X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A POST of the compatible endpoint with this query and form body; the raw
/// answer.
fn compat_form(server: &Server, query: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "POST /stubs/handler_api.php?{query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

#[test]
fn the_compatible_endpoint_charges_the_key_however_it_is_spelled_and_reads_it_once() {
    let server = start("3", "1000", "1000", &[]);
    let key = customer(&server, "compat-limits@example.com");
    // Each request spells the key differently; all are the same account.
    let answers: Vec<Response> = (0..12)
        .map(|i| {
            let path = format!(
                "/stubs/handler_api.php?api_key={}&action=getBalance",
                spelled(&key, i + 3)
            );
            server.send("GET", &path, &[], None)
        })
        .collect();
    assert!(
        answers[0].body.starts_with("ACCESS_BALANCE:"),
        "{}",
        answers[0].body
    );
    let limited = answers
        .iter()
        .find(|a| a.status == 429)
        .expect("a 429 within 12 calls at 3/s");
    assert_eq!(limited.body, "CHANNELS_LIMIT");
    assert!(limited.header("retry-after").is_some());
    refill();
    // A made-up key in the query and the real one in the body: refused, not
    // served from a budget of the made-up key.
    let mixed = compat_form(
        &server,
        &format!("api_key={}", made_up(1)),
        &format!("api_key={key}&action=getBalance"),
    );
    assert!(mixed.ends_with("BAD_KEY"), "{mixed}");
    // The same key in both places, one of them percent-encoded, is one key.
    let same = compat_form(
        &server,
        &format!("api_key={}", spelled(&key, 5)),
        &format!("api_key={key}&action=getBalance"),
    );
    assert!(same.contains("ACCESS_BALANCE:"), "{same}");
}

#[test]
fn changing_the_password_is_on_the_sign_in_budget_per_account_and_per_ip() {
    let server = start(
        "1000",
        "1000",
        "5",
        &[("NEXUS_TRUSTED_PROXIES", "127.0.0.0/8")],
    );
    // Register, verify and log in: three of the IP's five; from other client
    // addresses from now on, so that only the account's budget counts.
    let session = signed_in_customer(&server, "password-limits@example.com").session;
    let change = format!(r#"{{"old_password":"not-{PASSWORD}","new_password":"{PASSWORD}-2"}}"#);
    let answers = statuses(8, |i| {
        let client = format!("198.51.100.{}", i + 1);
        server.send(
            "POST",
            "/v1/me/password",
            &[("Cookie", &session), ("X-Forwarded-For", &client)],
            Some(&change),
        )
    });
    let refused = answers.iter().filter(|s| **s == 429).count();
    assert!(refused >= 3, "{answers:?}");
    assert!(answers[0] != 429, "{answers:?}");
}

#[test]
fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let catalog = |server: &Server, forwarded: &str| {
        server.send(
            "GET",
            "/v1/catalog/services",
            &[("X-Forwarded-For", forwarded)],
            None,
        )
    };
    let proxied = start(
        "1000",
        "3",
        "1000",
        &[("NEXUS_TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8")],
    );
    // Twelve clients behind the proxy: each has its own budget.
    let clients = statuses(12, |i| catalog(&proxied, &format!("198.51.100.{}", i + 1)));
    assert_eq!(clients, vec![200; 12]);
    // One client who makes up the left part of the header: still one client
    // (the rightmost address that is not a trusted proxy).
    let spoofed = statuses(12, |i| {
        catalog(
            &proxied,
            &format!("203.0.113.{}, 192.0.2.9, 10.1.2.3", i + 1),
        )
    });
    assert!(spoofed.contains(&429), "{spoofed:?}");

    // Without trusted proxies the header is ignored: one peer, one budget.
    let direct = start("1000", "3", "1000", &[]);
    let ignored = statuses(12, |i| catalog(&direct, &format!("198.51.100.{}", i + 1)));
    assert!(ignored.contains(&429), "{ignored:?}");
}

#[test]
fn health_is_bare_and_ready_shows_details_to_the_admin_only() {
    let server = start("0", "0", "0", &[("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let health = server.send("GET", "/health", &[], None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({ "status": "ok" }));

    let wait_ready = |headers: &[(&str, &str)]| {
        for _ in 0..100 {
            let ready = server.send("GET", "/ready", headers, None);
            if ready.status == 200 {
                return ready.json();
            }
            assert_eq!(ready.status, 503, "{}", ready.body);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("never ready");
    };
    assert_eq!(wait_ready(&[]), serde_json::json!({ "status": "ready" }));
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    assert_eq!(
        wait_ready(&[("Authorization", &wrong)]),
        serde_json::json!({ "status": "ready" })
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let detailed = wait_ready(&[("Authorization", &admin)]);
    assert_eq!(detailed["status"], "ready");
    assert!(detailed["log_head"].as_u64().is_some(), "{detailed}");
    let projections = detailed["projections"].as_array().expect("projections");
    assert!(!projections.is_empty());
    assert!(projections[0]["name"].is_string());
}
