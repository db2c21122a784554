//! The OpenAPI document, served by the real binary: public, JSON, OpenAPI 3.1, and it
//! names the routes a client needs.

use nexus_tests::Server;

#[test]
fn openapi_document_is_served_publicly_as_json() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    let response = server.send("GET", "/openapi.json", &[], None);
    assert_eq!(response.status, 200, "{}", response.body);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/health", "get"),
        ("/openapi.json", "get"),
        ("/v1/orders", "post"),
        ("/v1/orders/{id}/code", "get"),
        ("/v1/deposits", "post"),
        ("/stubs/handler_api.php", "post"),
        ("/v1/admin/legal-holds", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let codes = document["x-error-codes"].as_array().expect("x-error-codes");
    assert!(codes.iter().any(|c| c == "rate_limited"));
    assert!(document["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
}

// ---------------------------------------------------------------------------
// Real answers against the document's schemas.
// ---------------------------------------------------------------------------

use nexus_tests::journey::{self, call, PASSWORD};
use nexus_tests::Response;
use serde_json::Value;
use std::collections::BTreeSet;

/// The one `pattern` the document uses: money as a decimal string.
const MONEY_PATTERN: &str = "^-?[0-9]+\\.[0-9]{6}$";

/// Whether `text` is `-?digits.6 digits`, the money pattern, by hand.
fn is_money(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits.split_once('.').is_some_and(|(whole, fraction)| {
        all_digits(whole) && all_digits(fraction) && fraction.len() == 6
    })
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("the checker does not know type {other}"),
    }
}

/// Checks `value` against `schema`, for the subset of JSON Schema the document
/// uses; every violation is pushed to `errors` with its JSON pointer.
fn check(document: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{at}: schema is not an object"));
        return;
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .unwrap_or_else(|| panic!("unresolved {reference}"));
        check(document, target, value, at, errors);
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            check(document, part, value, at, errors);
        }
    }
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = choices
            .iter()
            .filter(|choice| {
                let mut inner = Vec::new();
                check(document, choice, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: {value} matches {matching} of the oneOf choices"
            ));
        }
    }
    if let Some(kind) = schema.get("type") {
        let names: Vec<&str> = match kind {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            other => panic!("bad type {other}"),
        };
        if !names.iter().any(|name| type_matches(name, value)) {
            errors.push(format!("{at}: {value} is not of type {kind}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            errors.push(format!("{at}: {value} is not {constant}"));
        }
    }
    if let (Some(pattern), Some(text)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) {
        assert_eq!(
            pattern, MONEY_PATTERN,
            "the checker knows the money pattern only"
        );
        if !is_money(text) {
            errors.push(format!("{at}: {text:?} is not money"));
        }
    }
    if let (Some("date-time"), Some(text)) =
        (schema.get("format").and_then(Value::as_str), value.as_str())
    {
        if chrono::DateTime::parse_from_rfc3339(text).is_err() {
            errors.push(format!("{at}: {text:?} is not an RFC 3339 time"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: required `{name}` is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let pointer = format!("{at}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => check(document, field_schema, field, &pointer, errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{pointer}: not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(document, items, item, &format!("{at}/{index}"), errors);
        }
    }
}

/// Checks a real answer to `method path` (the path as documented, with its
/// `{templates}`) against the document: its status is documented, and its body
/// matches the schema of that status and content type.
pub(crate) fn check_answer(document: &Value, method: &str, path: &str, response: &Response) {
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let documented = &operation["responses"][response.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {} (undocumented): {}",
        response.status,
        response.body
    );
    let content_type = response
        .header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Some(content) = documented["content"].as_object() else {
        assert!(
            response.body.is_empty(),
            "{method} {path} {}: documented without a body, answered {}",
            response.status,
            response.body
        );
        return;
    };
    let schema = &content
        .get(&content_type)
        .unwrap_or_else(|| panic!("{method} {path}: {content_type} not documented"))["schema"];
    // A plain-text answer (the compatible endpoint's tokens) is checked as the
    // string it is.
    let value = if content_type == "text/plain" {
        Value::String(response.body.clone())
    } else {
        response.json()
    };
    let mut errors = Vec::new();
    check(document, schema, &value, "", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {}: {errors:#?}\n{}",
        response.status,
        response.body
    );
}

#[test]
fn the_checker_refuses_what_the_schema_does_not_allow() {
    let document = serde_json::json!({ "components": { "schemas": {
        "Money": { "type": "string", "pattern": MONEY_PATTERN } } } });
    let schema = serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["amount", "at"],
        "properties": {
            "amount": { "$ref": "#/components/schemas/Money" },
            "at": { "type": "string", "format": "date-time" },
            "note": { "type": ["string", "null"] },
            "tags": { "type": "array", "items": { "enum": ["a", "b"] } }
        }
    });
    let errors_for = |value: Value| {
        let mut errors = Vec::new();
        check(&document, &schema, &value, "", &mut errors);
        errors
    };
    assert!(errors_for(serde_json::json!({
        "amount": "-3.500000", "at": "2026-01-02T03:04:05Z", "note": null, "tags": ["a"] }))
    .is_empty());
    for (bad, why) in [
        (
            serde_json::json!({ "at": "2026-01-02T03:04:05Z" }),
            "required",
        ),
        (
            serde_json::json!({ "amount": 1.5, "at": "2026-01-02T03:04:05Z" }),
            "type",
        ),
        (
            serde_json::json!({ "amount": "1.5000001", "at": "2026-01-02T03:04:05Z" }),
            "money",
        ),
        (
            serde_json::json!({ "amount": "1.50", "at": "2026-01-02T03:04:05Z" }),
            "money",
        ),
        (
            serde_json::json!({ "amount": "1", "at": "yesterday" }),
            "RFC 3339",
        ),
        (
            serde_json::json!({ "amount": "1", "at": "2026-01-02T03:04:05Z", "x": 1 }),
            "documented",
        ),
        (
            serde_json::json!({ "amount": "1", "at": "2026-01-02T03:04:05Z", "tags": ["c"] }),
            "one of",
        ),
    ] {
        let errors = errors_for(bad.clone());
        assert!(
            errors.iter().any(|e| e.contains(why)),
            "{bad} should fail with {why}: {errors:?}"
        );
    }
}

#[test]
fn real_answers_match_the_documented_schemas() {
    let server = journey::start();
    let document = server.send("GET", "/openapi.json", &[], None).json();

    // Register: exactly the documented fields.
    let register = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&format!(
            r#"{{"email":"schema-one@example.com","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(register.status, 202, "{}", register.body);
    check_answer(&document, "post", "/v1/accounts", &register);
    let required: BTreeSet<String> = document["paths"]["/v1/accounts"]["post"]["responses"]["202"]
        ["content"]["application/json"]["schema"]["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    let fields: BTreeSet<String> = register
        .json()
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(fields, required);

    // The same address again: the same documented answer.
    let again = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&format!(
            r#"{{"email":"schema-one@example.com","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(again.status, 202, "{}", again.body);
    check_answer(&document, "post", "/v1/accounts", &again);
    // A problem: a malformed address.
    let malformed = server.send(
        "POST",
        "/v1/accounts",
        &[],
        Some(&format!(
            r#"{{"email":"schema-one","password":"{PASSWORD}"}}"#
        )),
    );
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    check_answer(&document, "post", "/v1/accounts", &malformed);

    let key = journey::customer(&server, "schema-two@example.com");
    let get = |path: &str| call(&server, "GET", path, &key, &[], None);

    let wallet = get("/v1/wallet");
    assert_eq!(wallet.status, 200, "{}", wallet.body);
    check_answer(&document, "get", "/v1/wallet", &wallet);

    journey::fund(&server, &key, "10.00");
    check_answer(&document, "get", "/v1/wallet", &get("/v1/wallet"));
    let deposits = get("/v1/deposits");
    assert_eq!(deposits.json()["items"].as_array().map(Vec::len), Some(1));
    check_answer(&document, "get", "/v1/deposits", &deposits);
    let invoice = call(
        &server,
        "POST",
        "/v1/deposits",
        &key,
        &[],
        Some(r#"{"amount":"2.50"}"#),
    );
    assert_eq!(invoice.status, 201, "{}", invoice.body);
    check_answer(&document, "post", "/v1/deposits", &invoice);

    let placed = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[],
        Some(r#"{"service":"tg","country":"DE","channel":"sms"}"#),
    );
    assert_eq!(placed.status, 201, "{}", placed.body);
    check_answer(&document, "post", "/v1/orders", &placed);
    let id = placed.json()["id"].as_str().expect("order id").to_owned();
    check_answer(
        &document,
        "get",
        "/v1/orders/{id}",
        &get(&format!("/v1/orders/{id}")),
    );
    let code = get(&format!("/v1/orders/{id}/code?wait=10"));
    assert_eq!(code.status, 200, "{}", code.body);
    check_answer(&document, "get", "/v1/orders/{id}/code", &code);
    assert!(code.json()["code"].is_string(), "{}", code.body);
    let orders = get("/v1/orders");
    assert_eq!(orders.json()["items"].as_array().map(Vec::len), Some(1));
    check_answer(&document, "get", "/v1/orders", &orders);
    let entries = get("/v1/wallet/entries");
    assert!(entries.json()["items"]
        .as_array()
        .is_some_and(|i| i.len() >= 2));
    check_answer(&document, "get", "/v1/wallet/entries", &entries);

    for path in [
        "/v1/me",
        "/v1/api-keys",
        "/v1/catalog/countries",
        "/v1/catalog/services",
    ] {
        let answer = get(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        check_answer(&document, "get", path, &answer);
    }
    let prices = get("/v1/catalog/prices?service=tg&country=DE");
    check_answer(&document, "get", "/v1/catalog/prices", &prices);

    // The export, with a deposit, an order and a delivered code in it.
    let export = get("/v1/me/export");
    assert_eq!(export.status, 200, "{}", export.body);
    check_answer(&document, "get", "/v1/me/export", &export);
    assert_eq!(
        export.json()["orders"][0]["code"]["state"],
        "readable",
        "{}",
        export.body
    );

    // The compatible endpoint: text tokens and JSON, answers and refusals.
    let compat =
        |query: &str| server.send("GET", &format!("/stubs/handler_api.php?{query}"), &[], None);
    for (query, status) in [
        (format!("api_key={key}&action=getBalance"), 200),
        (format!("api_key={key}&action=getActiveActivations"), 200),
        (
            format!("api_key={key}&action=getStatusV2&id=999999999"),
            404,
        ),
        (format!("api_key={key}&action=getStatus&id=999999999"), 404),
        (format!("api_key={key}&action=noSuchAction"), 400),
        ("api_key=not-a-key&action=getBalance".to_owned(), 401),
        ("action=getServicesList&api_key=".to_owned() + &key, 200),
    ] {
        let answer = compat(&query);
        assert_eq!(answer.status, status, "{query}: {}", answer.body);
        check_answer(&document, "get", "/stubs/handler_api.php", &answer);
    }

    // Problems: an unknown service, an unknown order, no credentials.
    let unknown = call(
        &server,
        "POST",
        "/v1/orders",
        &key,
        &[],
        Some(r#"{"service":"no-such-service","country":"DE"}"#),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    check_answer(&document, "post", "/v1/orders", &unknown);
    let missing = get("/v1/orders/00000000-0000-0000-0000-000000000000");
    assert_eq!(missing.status, 404, "{}", missing.body);
    check_answer(&document, "get", "/v1/orders/{id}", &missing);
    let anonymous = server.send("GET", "/v1/wallet", &[], None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    check_answer(&document, "get", "/v1/wallet", &anonymous);
    // An anonymous order: the invoice, then the tracking view awaiting payment.
    let anonymous_order = server.send(
        "POST",
        "/v1/anonymous/orders",
        &[],
        Some(r#"{"service":"tg","country":"DE"}"#),
    );
    assert_eq!(anonymous_order.status, 201, "{}", anonymous_order.body);
    check_answer(&document, "post", "/v1/anonymous/orders", &anonymous_order);
    let tracking_id = anonymous_order.json()["tracking_id"]
        .as_str()
        .expect("tracking id")
        .to_owned();
    let tracked = server.send("GET", &format!("/v1/track/{tracking_id}"), &[], None);
    assert_eq!(tracked.status, 200, "{}", tracked.body);
    check_answer(&document, "get", "/v1/track/{tracking_id}", &tracked);
    let health = server.send("GET", "/health", &[], None);
    check_answer(&document, "get", "/health", &health);
}

// ---------------------------------------------------------------------------
// Where a third party's checks found the server and the document apart.
// ---------------------------------------------------------------------------

/// A page size outside the documented 1-100 is refused like any bad query
/// value; an empty cursor is outside the document too.
#[test]
fn page_sizes_outside_the_document_are_refused() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    let key = journey::customer(&server, "pages@example.com");
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    for path in ["/v1/orders", "/v1/wallet/entries", "/v1/deposits"] {
        for query in ["limit=0", "limit=101", "limit=-1"] {
            let r = server.send("GET", &format!("{path}?{query}"), &auth, None);
            assert_eq!(r.status, 400, "{path}?{query}: {}", r.body);
            assert_eq!(r.json()["code"], "invalid_query", "{path}?{query}");
        }
        for query in ["limit=1", "limit=100"] {
            let r = server.send("GET", &format!("{path}?{query}"), &auth, None);
            assert_eq!(r.status, 200, "{path}?{query}: {}", r.body);
        }
    }
    let r = server.send("GET", "/v1/catalog/availability?limit=0", &[], None);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let params = document["paths"]["/v1/orders"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let schema = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"].clone())
            .expect("parameter")
    };
    assert_eq!(schema("limit")["minimum"], 1);
    assert_eq!(schema("limit")["maximum"], 100);
    assert_eq!(schema("cursor")["minLength"], 1);
}

/// Empty or malformed service and country codes are refused, and the document
/// says so with the same patterns.
#[test]
fn service_and_country_codes_have_their_shape_in_the_document() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let place = &document["components"]["schemas"]["PlaceOrder"]["properties"];
    let service = place["service"]["pattern"]
        .as_str()
        .expect("service pattern");
    let country = place["country"]["pattern"]
        .as_str()
        .expect("country pattern");
    assert_eq!(service, "^[a-z0-9_]{1,16}$");
    assert_eq!(country, "^[A-Za-z]{2}$");
    for query in [
        "service=&country=DE",
        "service=tg&country=",
        "service=tg&country=DEU",
    ] {
        let r = server.send("GET", &format!("/v1/catalog/prices?{query}"), &[], None);
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }
    let r = server.send("GET", "/v1/catalog/prices?service=tg&country=de", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A method the document does not declare on a path it does: 405 with
/// `Allow` and a problem; an unknown path stays 404.
#[test]
fn undeclared_methods_answer_405_with_allow() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    for (method, path, allow) in [
        ("TRACE", "/health", "GET"),
        ("DELETE", "/v1/wallet", "GET"),
        ("PUT", "/v1/orders", "GET, POST"),
        ("PATCH", "/v1/orders/some-id", "GET"),
        ("GET", "/v1/upstreams/simulator/webhook", "POST"),
        ("PUT", "/stubs/handler_api.php", "GET, POST"),
        ("POST", "/v1/me", "GET, PATCH"),
    ] {
        let r = server.send(method, path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert_eq!(r.json()["code"], "method_not_allowed", "{method} {path}");
    }
    let r = server.send("GET", "/v1/no-such-thing", &[], None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["code"], "not_found");
}
