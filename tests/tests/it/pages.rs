//! The pages for a person, served by the real binary: the index, the API
//! reference rendered from the OpenAPI document, and a page for every problem
//! code that problem documents' `type` URIs resolve to.

use nexus_tests::{Response, Server};

fn page(server: &Server, path: &str) -> Response {
    let response = server.send("GET", path, &[], None);
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "{path}: {content_type}"
    );
    let policy = response
        .header("content-security-policy")
        .unwrap_or_default();
    assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
    response
}

#[test]
fn the_reference_renders_every_route_of_the_document() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    let index = page(&server, "/");
    for link in [
        "href=\"/reference\"",
        "href=\"/openapi.json\"",
        "href=\"/problems\"",
    ] {
        assert!(index.body.contains(link), "{link}: {}", index.body);
    }
    let document = server.send("GET", "/openapi.json", &[], None).json();
    assert_eq!(document["servers"][0]["url"], "/");
    assert!(document["info"]["version"].is_string());
    let reference = page(&server, "/reference").body;
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId");
            let heading = format!(
                "<h3 id=\"{id}\"><code>{} {path}</code></h3>",
                method.to_uppercase()
            );
            assert!(reference.contains(&heading), "{heading} is not on the page");
            operations += 1;
        }
    }
    assert!(operations > 50, "{operations}");
    for schema in document["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        assert!(
            reference.contains(&format!("id=\"schema-{schema}\"")),
            "{schema}"
        );
    }
    // What a newcomer needs on the page: the auth of a route, optional
    // headers marked, and the problem codes linked to their pages.
    assert!(reference.contains("an API key with scope <code>orders</code> or more"));
    assert!(reference.contains("<code>Idempotency-Key</code></td><td>header</td><td>no (optional)"));
    assert!(reference.contains("<a href=\"/problems/insufficient_funds\">"));
}

#[test]
fn every_problem_type_resolves_to_the_page_that_explains_it() {
    let server = Server::start_with(&[("NEXUS_SIM_FAULTS", "off")]);
    // A real refusal's `type`, followed as a client would.
    let refused = server.send("POST", "/v1/orders", &[], Some("{}"));
    assert_eq!(refused.status, 401, "{}", refused.body);
    let problem = refused.json();
    let kind = problem["type"].as_str().expect("type");
    assert_eq!(kind, "/problems/unauthorized");
    let explained = page(&server, kind).body;
    assert!(
        explained.contains("<h1><code>unauthorized</code></h1>"),
        "{explained}"
    );
    assert!(explained.contains("Authorization: Bearer"), "{explained}");
    assert!(
        explained.contains("href=\"/reference#post_v1_orders\""),
        "{explained}"
    );
    // Every code the document lists has its page, and the list links each.
    let document = server.send("GET", "/openapi.json", &[], None).json();
    let list = page(&server, "/problems").body;
    for code in document["x-error-codes"].as_array().expect("codes") {
        let code = code.as_str().expect("a code");
        assert!(
            list.contains(&format!("href=\"/problems/{code}\"")),
            "{code}"
        );
        let one = page(&server, &format!("/problems/{code}")).body;
        assert!(
            one.contains(&format!("<h1><code>{code}</code></h1>")),
            "{code}"
        );
    }
    // An unknown code is a 404 problem, whose own type resolves.
    let unknown = server.send("GET", "/problems/no_such_code", &[], None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["type"], "/problems/not_found");
    let escaped = server.send("GET", "/problems/%3Cscript%3E", &[], None);
    assert_eq!(escaped.status, 404, "{}", escaped.body);
    assert!(!escaped.body.contains("<script>"), "{}", escaped.body);
}
