//! The pages for a person: the index (`GET /`), the API reference rendered from
//! the OpenAPI document (`GET /reference`), and what each problem code means
//! (`GET /problems`, `GET /problems/{code}`, the pages problem `type` URIs name).
//!
//! Plain HTML built once from the document and [`Problem::ALL`]: no script, no
//! style sheet, nothing fetched from elsewhere (the content security policy
//! forbids it).

use std::fmt::Write as _;
use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};

use super::error::{ApiError, Problem};
use super::openapi;
use super::route::{Auth, Method, Op, Route};
use super::schema::path_param;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/",
        handler: |route| route.to(index),
        doc: || {
            page_op("The index: what the server is, where the API is described, where to start")
        },
    },
    Route {
        method: Method::Get,
        path: "/reference",
        handler: |route| route.to(reference),
        doc: || page_op("The API reference, rendered from the OpenAPI document"),
    },
    Route {
        method: Method::Get,
        path: "/problems",
        handler: |route| route.to(problems),
        doc: || page_op("Every problem code: its status, what it means and what to do"),
    },
    Route {
        method: Method::Get,
        path: "/problems/{code}",
        handler: |route| route.to(problem),
        doc: || Op {
            errors: vec![Problem::NotFound],
            params: vec![path_param("code", "A problem code (`insufficient_funds`).")],
            ..page_op("One problem code: the page its problem `type` URI names")
        },
    },
];

fn page_op(summary: &'static str) -> Op {
    Op {
        summary,
        tag: "pages",
        auth: Auth::None,
        params: vec![],
        body: None,
        success: (200, "An HTML page (`text/html`)", None),
        errors: vec![],
    }
}

/// The path of the page explaining `problem`: its problem `type` URI.
pub fn problem_path(problem: Problem) -> String {
    format!("/problems/{}", problem.code())
}

const CSP: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page answer; the built-once pages go out as they are, without a copy.
fn html(page: impl MessageBody + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(page)
}

/// A whole page around `body` (already HTML).
fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Nexus</title></head><body>\
         <header><nav><a href=\"/\">Nexus</a> · <a href=\"/reference\">API reference</a> · \
         <a href=\"/problems\">Problem codes</a> · <a href=\"/openapi.json\">OpenAPI</a></nav></header>\
         <main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// Text made safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with its `backticked` parts as `<code>`.
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

async fn index() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    html(PAGE.get_or_init(|| {
        document(
            "Nexus",
            "<h1>Nexus</h1>\
             <p>Temporary phone numbers for one-time codes, by SMS or voice call, over an HTTP API.</p>\
             <ul><li><a href=\"/reference\">The API reference</a>: every route, its authentication, \
             its body and its answers</li>\
             <li><a href=\"/openapi.json\">The OpenAPI document</a> (OpenAPI 3.1, for code generators)</li>\
             <li><a href=\"/problems\">Problem codes</a>: what each error means and what to do</li>\
             <li><a href=\"/health\">Health</a></li></ul>\
             <h2>Where to start</h2>\
             <ol><li>Register: <code>POST /v1/accounts</code> with an e-mail address and a password.</li>\
             <li>Verify the address with the mailed link.</li>\
             <li>Sign in (<code>POST /v1/sessions</code>) and create an API key \
             (<code>POST /v1/api-keys</code>).</li>\
             <li>Top up (<code>POST /v1/deposits</code>), look up prices \
             (<code>GET /v1/catalog/prices</code>), buy a number (<code>POST /v1/orders</code>) \
             and read its code (<code>GET /v1/orders/{id}/code?wait=30</code>).</li></ol>\
             <p>The README's quickstart has the whole journey in curl.</p>",
        )
    }).as_str())
}

async fn reference() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    html(
        PAGE.get_or_init(|| reference_page(openapi::document()))
            .as_str(),
    )
}

async fn problems() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    html(PAGE.get_or_init(problems_page).as_str())
}

async fn problem(code: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let problem = Problem::from_code(&code).ok_or_else(|| {
        ApiError::new(
            Problem::NotFound,
            "no problem has this code; GET /problems lists them all",
        )
    })?;
    Ok(html(problem_page(problem, openapi::document())))
}

fn problems_page() -> String {
    let mut body = String::from(
        "<h1>Problem codes</h1><p>Every refusal of the API is an RFC 9457 problem document \
         (<code>application/problem+json</code>) with a stable <code>code</code>; its \
         <code>type</code> is the address of the code's page here.</p>\
         <table><thead><tr><th scope=\"col\">Code</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">What it means, what to do</th></tr></thead><tbody>",
    );
    for &p in Problem::ALL {
        let _ = write!(
            body,
            "<tr><td><a href=\"{}\"><code>{}</code></a></td><td>{} {}</td><td>{}</td></tr>",
            problem_path(p),
            p.code(),
            p.status().as_u16(),
            escape(p.title()),
            prose(p.explanation())
        );
    }
    body.push_str("</tbody></table>");
    document("Problem codes", &body)
}

fn problem_page(problem: Problem, doc: &Value) -> String {
    let mut body = format!(
        "<h1><code>{}</code></h1><p>HTTP {} {}</p><p>{}</p><h2>Answered by</h2><ul>",
        problem.code(),
        problem.status().as_u16(),
        escape(problem.title()),
        prose(problem.explanation())
    );
    for (method, path, op) in operations(doc) {
        if answers_with(op, problem.code()) {
            let _ = write!(
                body,
                "<li><a href=\"/reference#{}\"><code>{} {}</code></a></li>",
                escape(op["operationId"].as_str().unwrap_or_default()),
                method.to_uppercase(),
                escape(path)
            );
        }
    }
    body.push_str("</ul><p><a href=\"/problems\">Every problem code</a></p>");
    document(problem.code(), &body)
}

/// Most operations a page lists (the document has far fewer).
const MAX_OPERATIONS: usize = 1_000;

/// Every operation of the document: (method, path, operation), in path order.
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let mut found = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return found;
    };
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            if found.len() < MAX_OPERATIONS {
                found.push((method.as_str(), path.as_str(), op));
            }
        }
    }
    found
}

/// The problem codes an operation documents, by status.
fn problem_codes(op: &Value) -> Vec<(&str, Vec<&str>)> {
    let mut codes = Vec::new();
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let schema = &response["content"]["application/problem+json"]["schema"];
        let listed: Vec<&str> = schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|part| {
                part["properties"]["code"]["enum"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .filter_map(Value::as_str)
            .collect();
        if !listed.is_empty() {
            codes.push((status.as_str(), listed));
        }
    }
    codes
}

fn answers_with(op: &Value, code: &str) -> bool {
    problem_codes(op)
        .iter()
        .any(|(_, codes)| codes.contains(&code))
}

fn reference_page(doc: &Value) -> String {
    let mut tags: Vec<&str> = operations(doc)
        .iter()
        .filter_map(|(_, _, op)| op["tags"][0].as_str())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let mut body = format!(
        "<h1>Nexus API reference</h1><p>Version {}. This page is rendered from \
         <a href=\"/openapi.json\">the OpenAPI document</a>, which has the same content for \
         code generators. Every error is a problem document with a stable <code>code</code>: \
         <a href=\"/problems\">the problem codes</a>.</p><p>{}</p><nav aria-label=\"Contents\"><h2>Contents</h2><ul>\
         <li><a href=\"#authentication\">Authentication</a></li>",
        escape(doc["info"]["version"].as_str().unwrap_or_default()),
        prose(doc["info"]["description"].as_str().unwrap_or_default()),
    );
    for tag in &tags {
        let _ = write!(body, "<li><a href=\"#tag-{0}\">{0}</a></li>", escape(tag));
    }
    body.push_str("<li><a href=\"#schemas\">Schemas</a></li></ul></nav>");
    body.push_str(&authentication(doc));
    for tag in &tags {
        let _ = write!(body, "<section><h2 id=\"tag-{0}\">{0}</h2>", escape(tag));
        for (method, path, op) in operations(doc) {
            if op["tags"][0].as_str() == Some(tag) {
                body.push_str(&operation(method, path, op));
            }
        }
        body.push_str("</section>");
    }
    body.push_str(&schemas(doc));
    document("API reference", &body)
}

fn authentication(doc: &Value) -> String {
    let mut out = String::from(
        "<section><h2 id=\"authentication\">Authentication</h2><p>Each route says what it \
         takes. An API key goes in <code>Authorization: Bearer &lt;key&gt;</code>; a session \
         is the cookie <code>POST /v1/sessions</code> sets. A fresh session is one whose \
         password was confirmed in the last minutes (<code>POST /v1/sessions/confirm</code>).</p><dl>",
    );
    for (name, scheme) in doc["components"]["securitySchemes"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            out,
            "<dt><code>{}</code></dt><dd>{}</dd>",
            escape(name),
            prose(&scheme_text(scheme))
        );
    }
    out.push_str("</dl></section>");
    out
}

fn scheme_text(scheme: &Value) -> String {
    let how = match (scheme["type"].as_str(), scheme["in"].as_str()) {
        (Some("http"), _) => format!(
            "HTTP `{}` authentication",
            scheme["scheme"].as_str().unwrap_or("bearer")
        ),
        (Some("apiKey"), Some("cookie")) => format!(
            "the cookie `{}`",
            scheme["name"].as_str().unwrap_or_default()
        ),
        _ => "see the OpenAPI document".to_owned(),
    };
    match scheme["description"].as_str() {
        Some(d) => format!("{how}: {d}"),
        None => how,
    }
}

/// Who may call an operation, in words.
fn who(op: &Value) -> String {
    if let Some(minutes) = op["x-fresh-session-minutes"].as_u64() {
        return format!(
            "a fresh session (password confirmed within {minutes} minutes), never an API key"
        );
    }
    let schemes: Vec<&str> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            r.as_object()
                .and_then(|o| o.keys().next())
                .map(String::as_str)
        })
        .collect();
    match schemes.as_slice() {
        [] => "none (public)".to_owned(),
        ["session"] => "a session".to_owned(),
        ["adminToken"] => "the admin token".to_owned(),
        _ => match op["x-api-key-scope"].as_str() {
            Some(scope) => format!("an API key with scope `{scope}` or more, or a session"),
            None => schemes.join(" or "),
        },
    }
}

fn operation(method: &str, path: &str, op: &Value) -> String {
    let mut out = format!(
        "<article><h3 id=\"{}\"><code>{} {}</code></h3><p>{}</p><p>Authentication: {}</p>",
        escape(op["operationId"].as_str().unwrap_or_default()),
        method.to_uppercase(),
        escape(path),
        prose(op["summary"].as_str().unwrap_or_default()),
        prose(&who(op))
    );
    if let Some(d) = op["description"].as_str() {
        let _ = write!(out, "<p>{}</p>", prose(d));
    }
    let params = op["parameters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !params.is_empty() {
        out.push_str(
            "<table><caption>Parameters</caption><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">In</th><th scope=\"col\">Required</th><th scope=\"col\">Shape</th>\
             <th scope=\"col\">Meaning</th></tr></thead><tbody>",
        );
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or_default()),
                escape(p["in"].as_str().unwrap_or_default()),
                if p["required"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no (optional)"
                },
                shape(&p["schema"], 0),
                prose(p["description"].as_str().unwrap_or_default())
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                out,
                "<p>Body{} (<code>{}</code>): {}</p>",
                if op["requestBody"]["required"].as_bool() == Some(false) {
                    ", optional"
                } else {
                    ""
                },
                escape(media),
                shape(&body["schema"], 0)
            );
        }
    }
    out.push_str(&responses(op));
    out.push_str("</article>");
    out
}

fn responses(op: &Value) -> String {
    let mut out = String::from(
        "<table><caption>Answers</caption><thead><tr><th scope=\"col\">Status</th>\
         <th scope=\"col\">What</th></tr></thead><tbody>",
    );
    let problems = problem_codes(op);
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let what = match problems.iter().find(|(s, _)| s == status) {
            Some((_, codes)) => codes
                .iter()
                .map(|c| format!("<a href=\"/problems/{0}\"><code>{0}</code></a>", escape(c)))
                .collect::<Vec<_>>()
                .join(", "),
            None => {
                let mut what = prose(response["description"].as_str().unwrap_or_default());
                for (media, body) in response["content"].as_object().into_iter().flatten() {
                    let _ = write!(
                        what,
                        ": <code>{}</code> {}",
                        escape(media),
                        shape(&body["schema"], 0)
                    );
                }
                what
            }
        };
        let _ = write!(out, "<tr><td>{}</td><td>{what}</td></tr>", escape(status));
    }
    out.push_str("</tbody></table>");
    out
}

fn schemas(doc: &Value) -> String {
    let mut out = String::from("<section><h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(out, "<h3 id=\"schema-{0}\">{0}</h3>", escape(name));
        if let Some(d) = schema["description"].as_str() {
            let _ = write!(out, "<p>{}</p>", prose(d));
        }
        match schema["properties"].as_object() {
            Some(properties) => out.push_str(&properties_table(schema, properties)),
            None => {
                let _ = write!(out, "<p>{}</p>", shape(schema, 0));
            }
        }
    }
    out.push_str("</section>");
    out
}

fn properties_table(schema: &Value, properties: &Map<String, Value>) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = String::from(
        "<table><thead><tr><th scope=\"col\">Field</th><th scope=\"col\">Always there</th>\
         <th scope=\"col\">Shape</th></tr></thead><tbody>",
    );
    for (field, value) in properties {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(field),
            if required.contains(&field.as_str()) {
                "yes"
            } else {
                "no"
            },
            shape(value, 1)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// How deep nested object shapes are spelled out inline.
const MAX_SHAPE_DEPTH: usize = 4;

/// A schema in words (HTML): references link to the schema's section.
fn shape(schema: &Value, depth: usize) -> String {
    if depth > MAX_SHAPE_DEPTH {
        return "…".to_owned();
    }
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap_or(target);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", ", and ")] {
        if let Some(parts) = schema[key].as_array() {
            let mut text = parts
                .iter()
                .map(|p| shape(p, depth + 1))
                .collect::<Vec<_>>()
                .join(joiner);
            text.push_str(&facts(schema));
            return text;
        }
    }
    let mut text = match &schema["type"] {
        Value::String(t) => base_type(t, schema, depth),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .map(|t| base_type(t, schema, depth))
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema.get("const").is_some() => String::new(),
        _ if schema.get("enum").is_some() => String::new(),
        _ if schema.get("properties").is_some() => base_type("object", schema, depth),
        _ => "any".to_owned(),
    };
    text.push_str(&facts(schema));
    text
}

fn base_type(name: &str, schema: &Value, depth: usize) -> String {
    match name {
        "array" => format!("array of {}", shape(&schema["items"], depth + 1)),
        "object" => match schema["properties"].as_object() {
            Some(properties) if !properties.is_empty() => {
                let fields: Vec<String> = properties
                    .iter()
                    .map(|(f, v)| format!("<code>{}</code>: {}", escape(f), shape(v, depth + 1)))
                    .collect();
                format!("object {{ {} }}", fields.join("; "))
            }
            _ => "object".to_owned(),
        },
        other => escape(other),
    }
}

/// The constraints of a schema, in words.
fn facts(schema: &Value) -> String {
    let mut out = String::new();
    if let Some(values) = schema["enum"].as_array() {
        let listed: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", escape(&v.to_string())))
            .collect();
        let _ = write!(out, " (one of {})", listed.join(", "));
    }
    if let Some(value) = schema.get("const") {
        let _ = write!(out, " (always <code>{}</code>)", escape(&value.to_string()));
    }
    for (key, words) in [
        ("format", "format"),
        ("pattern", "pattern"),
        ("minLength", "at least characters"),
        ("maxLength", "at most characters"),
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("maxItems", "at most items"),
        ("default", "default"),
    ] {
        if let Some(value) = schema.get(key) {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let _ = write!(out, " ({words} <code>{}</code>)", escape(&shown));
        }
    }
    if let Some(d) = schema["description"].as_str() {
        let _ = write!(out, ": {}", prose(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_backticks_become_code() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(prose("send `a<b` now"), "send <code>a&lt;b</code> now");
    }

    #[test]
    fn every_problem_has_an_explanation_that_is_a_sentence() {
        for &p in Problem::ALL {
            let e = p.explanation();
            assert!(e.len() >= 20 && e.ends_with('.'), "{}: {e}", p.code());
            assert_eq!(Problem::from_code(p.code()), Some(p));
        }
        assert_eq!(Problem::from_code("no_such_code"), None);
    }

    #[test]
    fn shapes_name_references_enums_and_limits() {
        let s = serde_json::json!({ "type": ["string", "null"], "enum": ["sms", "voice", null], "maxLength": 8 });
        let text = shape(&s, 0);
        assert!(text.contains("string or null"), "{text}");
        assert!(text.contains("<code>&quot;sms&quot;</code>"), "{text}");
        assert!(text.contains("at most characters <code>8</code>"), "{text}");
        let r = shape(
            &serde_json::json!({ "$ref": "#/components/schemas/Money" }),
            0,
        );
        assert_eq!(r, "<a href=\"#schema-Money\">Money</a>");
    }
}
