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
