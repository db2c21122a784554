//! Request bodies and query strings against the real binary: anything but a
//! JSON object sent as `application/json` is a 400 `invalid_json` problem, a
//! body over 16 KiB a 413 `body_too_large` one, a query string over 2 KiB a 400
//! `query_too_long` one; none echoes the request or writes anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nexus_tests::journey::{customer, signed_in_customer, start};
use nexus_tests::Server;

/// The server's body limit (`MAX_JSON_BYTES`).
const MAX_JSON_BYTES: usize = 16 * 1024;
/// The server's query-string limit (`MAX_QUERY_BYTES`).
const MAX_QUERY_BYTES: usize = 2 * 1024;

/// One request with raw body bytes and a chosen content type; returns the
/// status, the content type and the body of the answer.
fn send_raw(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        server.addr,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading an oversized body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// A refused body: what it is (for failure messages), its content type, its
/// bytes, and the status and problem code it must get.
type Refused = (&'static str, &'static str, Vec<u8>, u16, &'static str);

/// The bodies every JSON route must refuse.
fn refused_bodies() -> Vec<Refused> {
    let json = "application/json";
    let mut oversized = br#"{"email":""#.to_vec();
    oversized.extend(std::iter::repeat_n(b'a', MAX_JSON_BYTES));
    oversized.extend_from_slice(br#"@example.com","password":"long enough password"}"#);
    let invalid =
        |what, content_type, body: &[u8]| (what, content_type, body.to_vec(), 400, "invalid_json");
    vec![
        invalid(
            "an array",
            json,
            br#"["victim@example.com","long enough password"]"#,
        ),
        invalid("a number", json, b"42"),
        invalid("null", json, b"null"),
        invalid("a string", json, br#""victim@example.com""#),
        invalid("bad UTF-8", json, b"{\"email\":\"\xff\xfe@example.com\"}"),
        ("an oversized body", json, oversized, 413, "body_too_large"),
        invalid(
            "a wrong content type",
            "text/plain",
            br#"{"email":"victim@example.com","password":"long enough password"}"#,
        ),
    ]
}

/// A method, a path and the extra headers it needs.
type Route<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn assert_problem(
    route: &str,
    what: &str,
    (status, code): (u16, &str),
    answer: &(u16, String, String),
) {
    let (answered, content_type, body) = answer;
    assert_eq!(*answered, status, "{route} with {what}: {body}");
    assert_eq!(
        content_type, "application/problem+json",
        "{route} with {what}"
    );
    let problem: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(problem["code"], code, "{route} with {what}: {body}");
    assert_eq!(problem["status"], status);
    assert!(
        !body.contains("victim") && !body.contains("long enough password"),
        "{route} with {what} echoed the body: {body}"
    );
}

#[test]
fn only_json_objects_are_read_and_nothing_is_written_otherwise() {
    let server = start();

    // Unauthenticated routes: registration and login.
    for route in ["/v1/accounts", "/v1/sessions"] {
        for (what, content_type, body, status, code) in refused_bodies() {
            let answer = send_raw(&server, "POST", route, &[], content_type, &body);
            assert_problem(route, what, (status, code), &answer);
        }
    }
    // Nothing was registered: the address is still free.
    let registered = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(r#"{"email":"victim@example.com","password":"long enough password"}"#),
    );
    assert_eq!(registered.status, 202, "{}", registered.body);

    // Authenticated routes: orders, deposits, the webhook, API keys, the
    // objection, the withdrawal of a deletion.
    let owner = signed_in_customer(&server, "owner@example.com");
    let key = owner.key;
    let bearer = format!("Bearer {key}");
    let routes: [Route<'_>; 6] = [
        ("POST", "/v1/orders", &[("Idempotency-Key", "bodies-1")]),
        ("POST", "/v1/deposits", &[]),
        // A sensitive change: the (fresh) session's, never a key's.
        ("PUT", "/v1/me/webhook", &[]),
        ("POST", "/v1/api-keys", &[]),
        ("PUT", "/v1/me/objection", &[]),
        // Credentials in the body, read only as JSON like every other body.
        ("DELETE", "/v1/me/deletion", &[]),
    ];
    for (method, route, extra) in routes {
        let credential = match route {
            "/v1/me/webhook" | "/v1/api-keys" => ("Cookie", owner.session.as_str()),
            _ => ("Authorization", bearer.as_str()),
        };
        let mut headers = vec![credential];
        headers.extend_from_slice(extra);
        for (what, content_type, body, status, code) in refused_bodies() {
            let answer = send_raw(&server, method, route, &headers, content_type, &body);
            assert_problem(route, what, (status, code), &answer);
        }
    }
    // Nothing was written: no order, no deposit, no webhook.
    let auth = [("Authorization", bearer.as_str())];
    let orders = server.send("GET", "/v1/orders", &auth, None);
    assert_eq!(orders.status, 200, "{}", orders.body);
    let items = orders.json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(items.is_empty(), "{}", orders.body);
    let webhook = server.send("GET", "/v1/me/webhook", &auth, None);
    assert_eq!(webhook.status, 404, "{}", webhook.body);
    let keys = server.send("GET", "/v1/api-keys", &auth, None);
    assert_eq!(
        keys.json()["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        keys.body
    );
    let me = server.send("GET", "/v1/me", &auth, None);
    assert_eq!(me.status, 200, "{}", me.body);
}

#[test]
fn a_query_string_over_the_limit_is_refused_on_every_route() {
    let server = start();
    let key = customer(&server, "reader@example.com");
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    let long = "a".repeat(MAX_QUERY_BYTES);
    let routes: [(&str, &[(&str, &str)]); 4] = [
        ("/v1/catalog/prices?country=DE&service=", &[]),
        ("/v1/orders?limit=10&cursor=", &auth),
        ("/v1/wallet?victim=", &auth),
        ("/v1/no/such/route?q=", &[]),
    ];
    for (route, headers) in routes {
        let path = format!("{route}{long}");
        let answer = send_raw(&server, "GET", &path, headers, "application/json", b"");
        let (status, _, body) = &answer;
        assert_eq!(*status, 400, "{route}: {body}");
        assert!(!body.contains(&long), "{route} echoed the query");
        assert_problem(route, "a long query", (400, "query_too_long"), &answer);
    }
    // At the limit the query is read: here it names an unknown service.
    let at_limit = format!(
        "/v1/catalog/prices?country=DE&service={}",
        "a".repeat(MAX_QUERY_BYTES - "country=DE&service=".len())
    );
    let answer = send_raw(&server, "GET", &at_limit, &[], "application/json", b"");
    assert_problem(
        &at_limit,
        "a query at the limit",
        (400, "unknown_service"),
        &answer,
    );
}

#[test]
fn routes_that_read_raw_bytes_refuse_large_bodies_with_a_problem() {
    let server = start();
    // The IPN (64 KiB), far past any buffer of the server's own, and the
    // withdrawal of a deletion with credentials (16 KiB).
    let routes: [(&str, &str, usize); 2] = [
        ("POST", "/v1/payments/ipn", 300 * 1024),
        ("DELETE", "/v1/me/deletion", MAX_JSON_BYTES + 1),
    ];
    for (method, route, size) in routes {
        let mut body = br#"{"email":"victim@example.com","password":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', size));
        body.extend_from_slice(b"\"}");
        let answer = send_raw(&server, method, route, &[], "application/json", &body);
        assert_problem(route, "a large body", (413, "body_too_large"), &answer);
    }
}

/// Given a body whose field has the wrong type, or a query parameter of the
/// wrong kind, when it is sent, then the problem names the field and the type
/// expected in the API's own words, never the framework's ("Query deserialize
/// error") and never the value sent.
#[test]
fn wrong_types_name_the_field_and_the_type_expected() {
    let server = start();
    let key = customer(&server, "types@example.com");
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    let body = br#"{"service":5,"country":"GB","channel":"sms"}"#;
    let answer = send_raw(
        &server,
        "POST",
        "/v1/orders",
        &auth,
        "application/json",
        body,
    );
    assert_problem(
        "POST /v1/orders",
        "a number for service",
        (400, "invalid_json"),
        &answer,
    );
    let detail = serde_json::from_str::<serde_json::Value>(&answer.2).unwrap()["detail"].clone();
    assert!(
        detail
            .as_str()
            .unwrap()
            .starts_with("field `service`: expected a string, found an integer"),
        "{detail}"
    );

    let answer = send_raw(
        &server,
        "GET",
        "/v1/orders?limit=victim",
        &auth,
        "application/json",
        b"",
    );
    assert_problem(
        "GET /v1/orders",
        "a word for limit",
        (400, "invalid_query"),
        &answer,
    );
    let detail = serde_json::from_str::<serde_json::Value>(&answer.2).unwrap()["detail"].clone();
    let detail = detail.as_str().unwrap();
    assert!(detail.starts_with("the query string"), "{detail}");
    assert!(!detail.contains("deserialize"), "{detail}");
}
