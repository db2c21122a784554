//! The SMS-Activate-compatible endpoint against the real binary: the same orders
//! and wallet as `/v1`, exact tokens and statuses, integer activation ids, one
//! purchase per intent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nexus_tests::journey::{customer, fund, to_micros};
use nexus_tests::{Response, Server};

const PATH: &str = "/stubs/handler_api.php";

fn start(code_delay_ms: &str, cancel_guard_secs: &str) -> Server {
    Server::start_with(&[
        ("NEXUS_SIM_FAULTS", "off"),
        ("NEXUS_SIM_CODE_DELAY_MS", code_delay_ms),
        ("NEXUS_CANCEL_GUARD_SECS", cancel_guard_secs),
        ("NEXUS_COOKIE_SECURE", "false"),
        ("NEXUS_BCRYPT_COST", "12"),
        ("NEXUS_RATE_KEY_PER_S", "1000"),
        ("NEXUS_RATE_IP_PER_S", "1000"),
        ("NEXUS_RATE_AUTH_PER_MIN", "1000"),
    ])
}

fn bearer(server: &Server, method: &str, path: &str, key: &str, body: Option<&str>) -> Response {
    let auth = format!("Bearer {key}");
    server.send(method, path, &[("Authorization", &auth)], body)
}

/// One GET of the compatible endpoint with `api_key` and these parameters.
fn compat(server: &Server, key: &str, params: &str) -> Response {
    server.send("GET", &format!("{PATH}?api_key={key}&{params}"), &[], None)
}

/// The balance as `getBalance` tells it, in micro-dollars.
fn balance_micros(server: &Server, key: &str) -> i64 {
    let answer = compat(server, key, "action=getBalance");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let amount = answer
        .body
        .strip_prefix("ACCESS_BALANCE:")
        .unwrap_or_else(|| panic!("{}", answer.body));
    to_micros(amount)
}

fn assert_token(answer: &Response, status: u16, token: &str) {
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (status, token),
        "the whole body is the token"
    );
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        answer.header("content-type")
    );
}

fn assert_json(answer: &Response, status: u16) -> serde_json::Value {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

#[test]
fn a_whole_activation_through_the_compatible_endpoint() {
    let server = start("300", "120");
    let key = customer(&server, "bot@example.com");
    fund(&server, &key, "10.00");
    assert_eq!(balance_micros(&server, &key), 10_000_000);

    // Germany is SMS-Activate country 43.
    let bought = compat(&server, &key, "action=getNumberV2&service=tg&country=43");
    let number = assert_json(&bought, 200);
    let activation = number["activationId"].as_str().unwrap().to_owned();
    assert!(activation.parse::<u64>().is_ok(), "an integer id: {number}");
    let phone = number["phoneNumber"].as_str().unwrap();
    assert!(!phone.is_empty() && phone.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(number["currency"], 840);
    assert_eq!(number["countryCode"], "43");
    assert_eq!(number["countryPhoneCode"], 49);
    assert_eq!(number["serviceCode"], "tg");
    assert_eq!(number["canGetAnotherSms"], true);
    assert_eq!(number["activationOperator"], "any");
    let time = number["activationTime"].as_str().unwrap();
    assert_eq!(time.len(), "2026-05-11 09:00:00".len(), "{time}");
    // The cost is an exact JSON number, and it is what the wallet holds.
    let cost_text = bought
        .body
        .split("\"activationCost\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let price = to_micros(&cost_text);
    assert!(price > 0, "{cost_text}");
    let wallet = bearer(&server, "GET", "/v1/wallet", &key, None).json();
    assert_eq!(to_micros(wallet["held"].as_str().unwrap()), price);
    assert_eq!(balance_micros(&server, &key), 10_000_000 - price);

    // The same order on /v1: one system, not two.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orders = bearer(&server, "GET", "/v1/orders?limit=10", &key, None).json();
        if orders["items"][0]["phone"] == phone {
            assert_eq!(orders["items"].as_array().unwrap().len(), 1);
            break;
        }
        assert!(Instant::now() < deadline, "not on /v1/orders: {orders}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // It is listed as active, waiting, without a code.
    let active = assert_json(&compat(&server, &key, "action=getActiveActivations"), 200);
    let items = active.as_array().expect("a bare list");
    assert_eq!(items.len(), 1, "{active}");
    assert_eq!(items[0]["activationId"], activation.as_str());
    assert_eq!(items[0]["phoneNumber"], phone);
    assert!(items[0]["activationStatus"].is_string());

    // The code comes (getStatusV2 is always JSON); reading it is the delivery.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sms = loop {
        let status = assert_json(
            &compat(
                &server,
                &key,
                &format!("action=getStatusV2&id={activation}"),
            ),
            200,
        );
        assert_eq!(status["verificationType"], 0);
        if !status["sms"].is_null() {
            break status["sms"].clone();
        }
        assert!(status["call"].is_null());
        assert!(Instant::now() < deadline, "no code came: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let code = sms["code"]
        .as_str()
        .expect("the code is a string")
        .to_owned();
    assert!(code.len() >= 4 && code.chars().all(|c| c.is_ascii_digit()));
    assert!(sms["text"].as_str().unwrap().contains(&code));
    assert!(sms["dateTime"].as_str().unwrap().len() == 19);
    assert_token(
        &compat(&server, &key, &format!("action=getStatus&id={activation}")),
        200,
        &format!("STATUS_OK:{code}"),
    );
    // Delivered: captured, with cashback (2% of the price).
    let wallet = bearer(&server, "GET", "/v1/wallet", &key, None).json();
    assert_eq!(wallet["held"], "0.000000");
    let after = 10_000_000 - price + price * 2 / 100;
    assert_eq!(balance_micros(&server, &key), after);

    // Another SMS, then complete; completing again answers the same.
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=setStatus&id={activation}&status=3"),
        ),
        200,
        "ACCESS_RETRY_GET",
    );
    let waiting = compat(&server, &key, &format!("action=getStatus&id={activation}"));
    assert!(
        waiting.body.starts_with("STATUS_WAIT_RETRY:") || waiting.body.starts_with("STATUS_OK:"),
        "{}",
        waiting.body
    );
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=setStatus&id={activation}&status=6"),
        ),
        200,
        "ACCESS_ACTIVATION",
    );
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=finishActivation&id={activation}"),
        ),
        200,
        "ACCESS_ACTIVATION",
    );
    let order = bearer(&server, "GET", "/v1/orders?limit=10", &key, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut order = order.json();
    while order["items"][0]["status"] != "completed" {
        assert!(Instant::now() < deadline, "not completed: {order}");
        std::thread::sleep(Duration::from_millis(100));
        order = bearer(&server, "GET", "/v1/orders?limit=10", &key, None).json();
    }
    let active = assert_json(&compat(&server, &key, "action=getActiveActivations"), 200);
    assert_eq!(active, serde_json::json!([]));
    assert_eq!(balance_micros(&server, &key), after, "charged once");

    // The V1 form of a purchase: ACCESS_NUMBER:<int id>:<digits>.
    let v1 = compat(&server, &key, "action=getNumber&service=wa&country=43");
    assert_eq!(v1.status, 200, "{}", v1.body);
    let parts: Vec<&str> = v1.body.split(':').collect();
    assert_eq!(parts.len(), 3, "{}", v1.body);
    assert_eq!(parts[0], "ACCESS_NUMBER");
    assert!(parts[1].parse::<u64>().is_ok() && parts[1] != activation);
    assert!(parts[2].chars().all(|c| c.is_ascii_digit()));
    assert_token(
        &compat(&server, &key, &format!("action=getStatus&id={}", parts[1])),
        200,
        "STATUS_WAIT_CODE",
    );
    // Cancelling within the guard after the number came is refused.
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=setStatus&id={}&status=8", parts[1]),
        ),
        409,
        "EARLY_CANCEL_DENIED",
    );
}

#[test]
fn cancel_refunds_and_one_intent_buys_one_number() {
    // Codes never come here; cancelling is allowed 3 s after the number.
    let server = start("600000", "3");
    let key = customer(&server, "retry@example.com");
    let other = customer(&server, "other@example.com");
    fund(&server, &key, "5.00");

    // herosms: getNumberV2, retried, then getNumber with the same parameters.
    let query = "service=tg&country=43&maxPrice=5";
    let first = assert_json(
        &compat(&server, &key, &format!("action=getNumberV2&{query}")),
        200,
    );
    let activation = first["activationId"].as_str().unwrap().to_owned();
    let retried = assert_json(
        &compat(&server, &key, &format!("action=getNumberV2&{query}")),
        200,
    );
    assert_eq!(retried["activationId"], activation.as_str());
    assert_eq!(retried["phoneNumber"], first["phoneNumber"]);
    let fallback = compat(&server, &key, &format!("action=getNumber&{query}"));
    assert_token(
        &fallback,
        200,
        &format!(
            "ACCESS_NUMBER:{activation}:{}",
            first["phoneNumber"].as_str().unwrap()
        ),
    );
    // aiosmsactivate posts, parameters in the query string.
    let posted = server.send(
        "POST",
        &format!("{PATH}?api_key={key}&action=getNumberV2&{query}"),
        &[],
        None,
    );
    assert_eq!(posted.json()["activationId"], activation.as_str());
    let wallet = bearer(&server, "GET", "/v1/wallet", &key, None).json();
    let price = to_micros(wallet["held"].as_str().unwrap());
    assert!(price > 0);
    assert_eq!(
        to_micros(wallet["available"].as_str().unwrap()),
        5_000_000 - price,
        "one number held for, not four"
    );
    let active = assert_json(&compat(&server, &key, "action=getActiveActivations"), 200);
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");

    // Another customer cannot see or touch it, and cannot tell it exists.
    for action in ["getStatus", "setStatus&status=8", "cancelActivation"] {
        let answer = compat(&server, &other, &format!("action={action}&id={activation}"));
        assert_token(&answer, 404, "WRONG_ACTIVATION_ID");
    }
    let foreign = compat(
        &server,
        &other,
        &format!("action=getStatusV2&id={activation}"),
    );
    assert_eq!(assert_json(&foreign, 404)["title"], "WRONG_ACTIVATION_ID");
    for id in ["1", "999999999", "abc", "-5", ""] {
        let answer = compat(&server, &key, &format!("action=getStatus&id={id}"));
        assert_token(&answer, 404, "WRONG_ACTIVATION_ID");
    }

    // Too early, then cancelled with a full refund.
    let early = compat(
        &server,
        &key,
        &format!("action=getStatusV2&id={activation}"),
    );
    assert_eq!(
        assert_json(&early, 200),
        serde_json::json!({"verificationType": 0, "sms": null, "call": null})
    );
    let refused = compat(
        &server,
        &key,
        &format!("action=setStatus&id={activation}&status=8"),
    );
    assert_token(&refused, 409, "EARLY_CANCEL_DENIED");
    std::thread::sleep(Duration::from_millis(3_100));
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=setStatus&id={activation}&status=8"),
        ),
        200,
        "ACCESS_CANCEL",
    );
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=cancelActivation&id={activation}"),
        ),
        200,
        "ACCESS_CANCEL",
    );
    assert_eq!(balance_micros(&server, &key), 5_000_000, "refunded in full");
    assert_eq!(
        bearer(&server, "GET", "/v1/wallet", &key, None).json()["held"],
        "0.000000"
    );
    assert_token(
        &compat(&server, &key, &format!("action=getStatus&id={activation}")),
        200,
        "STATUS_CANCEL",
    );
    let cancelled = compat(
        &server,
        &key,
        &format!("action=getStatusV2&id={activation}"),
    );
    assert_eq!(assert_json(&cancelled, 409)["title"], "STATUS_CANCEL");
    assert_token(
        &compat(
            &server,
            &key,
            &format!("action=setStatus&id={activation}&status=6"),
        ),
        409,
        "STATUS_CANCEL",
    );

    // The intent's activation is over: the same parameters buy a new number.
    let again = assert_json(
        &compat(&server, &key, &format!("action=getNumberV2&{query}")),
        200,
    );
    assert_ne!(again["activationId"], activation.as_str());
}

#[test]
fn every_refusal_is_its_token_with_its_status() {
    let server = start("300", "120");
    let key = customer(&server, "errors@example.com");

    assert_token(
        &server.send("GET", &format!("{PATH}?action=getBalance"), &[], None),
        401,
        "NO_KEY",
    );
    assert_token(
        &server.send(
            "GET",
            &format!("{PATH}?api_key=nx_wrong&action=getBalance"),
            &[],
            None,
        ),
        401,
        "BAD_KEY",
    );
    let v2_bad_key = server.send(
        "GET",
        &format!("{PATH}?api_key=nx_wrong&action=getStatusV2&id=1"),
        &[],
        None,
    );
    assert_eq!(assert_json(&v2_bad_key, 401)["title"], "BAD_KEY");
    assert_token(
        &compat(&server, &key, "action=getBalance"),
        200,
        "ACCESS_BALANCE:0.000000",
    );
    assert_token(&compat(&server, &key, "action=fly"), 400, "BAD_ACTION");
    assert_token(&compat(&server, &key, ""), 400, "BAD_ACTION");
    assert_token(
        &compat(&server, &key, "action=getNumber&service=nope&country=43"),
        400,
        "BAD_SERVICE",
    );
    assert_token(
        &compat(&server, &key, "action=getNumberV2&service=tg&country=99999"),
        400,
        "WRONG_COUNTRY",
    );
    assert_token(
        &compat(&server, &key, "action=getNumberV2&service=tg&country=43"),
        402,
        "NO_BALANCE",
    );
    assert_token(
        &compat(&server, &key, "action=getNumber&service=tg&country=43"),
        402,
        "NO_BALANCE",
    );
    assert_eq!(
        bearer(&server, "GET", "/v1/wallet", &key, None).json()["held"],
        "0.000000",
        "nothing bought"
    );
    let too_cheap = compat(
        &server,
        &key,
        "action=getNumberV2&service=tg&country=43&maxPrice=0.001",
    );
    assert_eq!(too_cheap.status, 400, "{}", too_cheap.body);
    let minimum = too_cheap
        .body
        .strip_prefix("WRONG_MAX_PRICE:")
        .unwrap_or_else(|| panic!("{}", too_cheap.body));
    assert!(to_micros(minimum) > 1_000, "{minimum}");
    assert_token(
        &compat(&server, &key, "action=setStatus&id=1&status=8"),
        404,
        "WRONG_ACTIVATION_ID",
    );
    // Unknown parameters (as Python clients send them) change nothing.
    assert_token(
        &compat(
            &server,
            &key,
            "action=getBalance&json=1&freePrice=False&ref_id=x",
        ),
        200,
        "ACCESS_BALANCE:0.000000",
    );
    // A form body counts as parameters.
    let form = post_form(&server, &format!("api_key={key}&action=getBalance"));
    assert!(form.ends_with("\r\n\r\nACCESS_BALANCE:0.000000"), "{form}");
    // Over 2 KiB of form body or of query: the protocol's BAD_ACTION.
    let padding = "a".repeat(3 * 1024);
    let form = post_form(
        &server,
        &format!("api_key={key}&action=getBalance&pad={padding}"),
    );
    assert!(form.starts_with("HTTP/1.1 400 "), "{form}");
    assert!(form.ends_with("\r\n\r\nBAD_ACTION"), "{form}");
    assert_token(
        &compat(&server, &key, &format!("action=getBalance&pad={padding}")),
        400,
        "BAD_ACTION",
    );
}

#[test]
fn the_catalog_speaks_sms_activate_ids() {
    let server = start("300", "120");
    let key = customer(&server, "catalog@example.com");
    let countries = assert_json(&compat(&server, &key, "action=getCountries"), 200);
    assert_eq!(countries["43"]["eng"], "Germany");
    assert_eq!(countries["43"]["id"], 43);
    assert_eq!(countries["0"]["eng"], "Russian Federation");
    assert_eq!(countries["187"]["visible"], 1, "USA by its preferred id");
    assert!(countries.get("12").is_none(), "not the virtual alternate");
    let services = assert_json(&compat(&server, &key, "action=getServicesList"), 200);
    assert!(services
        .as_array()
        .expect("a bare list")
        .iter()
        .any(|s| s["code"] == "tg" && s["name"] == "Telegram"));
    let prices = compat(&server, &key, "action=getPrices&service=tg&country=43");
    let table = assert_json(&prices, 200);
    assert!(table["43"]["tg"]["count"].as_u64().unwrap() > 0, "{table}");
    assert!(table["43"]["tg"]["physicalCount"].is_u64());
    let cost = prices
        .body
        .split("\"cost\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .unwrap();
    assert!(to_micros(cost) > 0, "{cost}");
    let in_germany = assert_json(&compat(&server, &key, "action=getPrices&country=43"), 200);
    assert!(in_germany["43"].as_object().unwrap().len() > 1);
    assert_token(
        &compat(&server, &key, "action=getPrices&service=nope"),
        400,
        "BAD_SERVICE",
    );
    assert_token(
        &compat(&server, &key, "action=getPrices&country=99999"),
        400,
        "WRONG_COUNTRY",
    );
    let operators = assert_json(
        &compat(&server, &key, "action=getOperators&country=43"),
        200,
    );
    assert_eq!(operators["countryOperators"]["43"][0], "any");
}

/// A POST with an `application/x-www-form-urlencoded` body; the raw answer.
fn post_form(server: &Server, body: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

/// Given a customer whose deletion is pending, when their key calls the
/// compatible endpoint, then the answer says so (`ACCOUNT_DELETION_PENDING`,
/// 401) instead of a misleading `BAD_KEY`; withdrawn, the key works again.
#[test]
fn a_key_of_an_account_being_deleted_is_told_so() {
    let server = start("300", "120");
    let who = nexus_tests::journey::signed_in_customer(&server, "leaving@example.com");
    let cookie = [("Cookie", who.session.as_str())];
    let requested = server.send("POST", "/v1/me/deletion", &cookie, None);
    assert_eq!(requested.status, 202, "{}", requested.body);
    assert_token(
        &compat(&server, &who.key, "action=getBalance"),
        401,
        "ACCOUNT_DELETION_PENDING",
    );
    let withdrawn = server.send("DELETE", "/v1/me/deletion", &cookie, None);
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.body);
    let balance = compat(&server, &who.key, "action=getBalance");
    assert_eq!(balance.status, 200, "{}", balance.body);
}
