//! `openapi.yaml`, the HTTP contract as a document: loaded once, and a checker every answer the
//! end-to-end tests receive goes through (`testing::Api`), so the document cannot drift from
//! what the handlers really answer.

use std::collections::HashMap;
use std::sync::LazyLock;

use jsonschema::Validator;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The document, at the root of the workspace.
pub const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml");

/// Parsed and compiled on first use; a broken document fails the first test that touches it.
pub static SPEC: LazyLock<Spec> =
    LazyLock::new(|| Spec::load().unwrap_or_else(|err| panic!("{SPEC_PATH}: {err}")));

pub struct Spec {
    operations: Vec<Operation>,
    /// What a path no route has answers, whatever the method.
    route_not_found: Answer,
    /// What a route's path answers to a method the route does not have.
    method_not_allowed: Answer,
}

struct Operation {
    /// Upper case, as on the wire.
    method: String,
    template: String,
    /// By status code as the document writes it: `"200"`, `"4XX"` or `"default"`.
    answers: HashMap<String, Answer>,
}

/// One documented response of one operation.
struct Answer {
    /// The media type and the schema of its body, when it has one.
    body: Option<(String, Validator)>,
    headers: Vec<Header>,
}

struct Header {
    name: String,
    required: bool,
    schema: Validator,
}

impl Spec {
    pub fn load() -> Result<Self, String> {
        let text = std::fs::read_to_string(SPEC_PATH).map_err(|err| err.to_string())?;
        Self::parse(&text)
    }

    pub fn parse(yaml: &str) -> Result<Self, String> {
        let document: Value = serde_yaml_ng::from_str(yaml).map_err(|err| err.to_string())?;
        if !document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1."))
        {
            return Err("not an OpenAPI 3.1 document".into());
        }
        let paths = document["paths"]
            .as_object()
            .ok_or("the document has no paths")?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let item = resolve(&document, item)?;
            let Some(item) = item.as_object() else {
                return Err(format!("{template} is not a path item"));
            };
            for (method, operation) in item {
                if !HTTP_METHODS.contains(&method.as_str()) {
                    continue;
                }
                let responses = operation["responses"]
                    .as_object()
                    .ok_or_else(|| format!("{method} {template} has no responses"))?;
                let answers = responses
                    .iter()
                    .map(|(status, response)| {
                        let answer = Answer::compile(&document, response)
                            .map_err(|err| format!("{method} {template} {status}: {err}"))?;
                        Ok((status.clone(), answer))
                    })
                    .collect::<Result<_, String>>()?;
                operations.push(Operation {
                    method: method.to_uppercase(),
                    template: template.clone(),
                    answers,
                });
            }
        }
        let shared = |name: &str| {
            Answer::compile(
                &document,
                &json!({"$ref": format!("#/components/responses/{name}")}),
            )
            .map_err(|err| format!("components/responses/{name}: {err}"))
        };
        Ok(Self {
            operations,
            route_not_found: shared("RouteNotFound")?,
            method_not_allowed: shared("MethodNotAllowed")?,
        })
    }

    /// Every `(METHOD, path template)` the document describes.
    pub fn operations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.operations
            .iter()
            .map(|op| (op.method.as_str(), op.template.as_str()))
    }

    /// The status codes documented for one operation, as the document writes them.
    pub fn statuses(&self, method: &str, template: &str) -> Option<Vec<&str>> {
        let operation = self
            .operations
            .iter()
            .find(|op| op.method.eq_ignore_ascii_case(method) && op.template == template)?;
        let mut statuses: Vec<&str> = operation.answers.keys().map(String::as_str).collect();
        statuses.sort_unstable();
        Some(statuses)
    }

    /// Whether an answer to `method path` is one the document allows: its status documented for
    /// the operation the path and method name, its headers and JSON body valid against that
    /// response. A request no operation describes must get the document's answer for it (see
    /// `Spec::unrouted`). `Err` says everything that is wrong.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<(), String> {
        let (described, answer) = self.answer_for(method, path, status)?;
        let mut problems = Vec::new();
        if let Some((media_type, schema)) = &answer.body {
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with(media_type.as_str()) {
                problems.push(format!(
                    "Content-Type is {content_type:?}, documented is {media_type}"
                ));
            }
            problems.extend(
                schema
                    .iter_errors(body)
                    .map(|err| format!("body at {:?}: {err}", err.instance_path().as_str())),
            );
        }
        for header in &answer.headers {
            match headers.get(&header.name).map(|value| value.to_str()) {
                None if header.required => {
                    problems.push(format!("header {} is missing", header.name));
                }
                None => {}
                Some(Err(_)) => problems.push(format!("header {} is not text", header.name)),
                Some(Ok(value)) => problems.extend(
                    header
                        .schema
                        .iter_errors(&json!(value))
                        .map(|err| format!("header {}: {err}", header.name)),
                ),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("as {described}: {}", problems.join("; ")))
        }
    }

    /// The documented response `status` of `method path` is checked against, and a name for it.
    fn answer_for(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<(String, &Answer), String> {
        let on_path: Vec<&Operation> = self
            .operations
            .iter()
            .filter(|op| matches_template(&op.template, path))
            .collect();
        let Some(operation) = on_path
            .iter()
            .find(|op| op.method.eq_ignore_ascii_case(method))
        else {
            return self.unrouted(!on_path.is_empty(), status);
        };
        let code = status.to_string();
        let range = format!("{}XX", status / 100);
        let described = format!("{} {}", operation.method, operation.template);
        [code.as_str(), range.as_str(), "default"]
            .iter()
            .find_map(|key| operation.answers.get(*key))
            .map(|answer| (format!("{described} {status}"), answer))
            .ok_or_else(|| {
                let mut documented: Vec<&str> =
                    operation.answers.keys().map(String::as_str).collect();
                documented.sort_unstable();
                format!(
                    "status {status} is not documented for {described} (documented: {})",
                    documented.join(", ")
                )
            })
    }

    /// OpenAPI describes the operations that exist, not the answers to requests for the ones
    /// that do not; tests send those on purpose (an unknown path, a wrong method). Rather than
    /// skip them, they are held to what the document says in its description and keeps in
    /// `components/responses`: a route's path with another method is 405 `MethodNotAllowed`,
    /// any other path 404 `RouteNotFound`, each with its error body.
    fn unrouted(&self, path_known: bool, status: u16) -> Result<(String, &Answer), String> {
        let (expected, name, answer) = if path_known {
            (405, "MethodNotAllowed", &self.method_not_allowed)
        } else {
            (404, "RouteNotFound", &self.route_not_found)
        };
        if status == expected {
            Ok((format!("components/responses/{name}"), answer))
        } else {
            Err(format!(
                "no operation has this method and path, so the answer must be {expected} ({name}), not {status}"
            ))
        }
    }
}

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Path templates match as the server's router matches them.
fn matches_template(template: &str, path: &str) -> bool {
    shared::routes::match_path(template, path).is_some()
}

impl Answer {
    fn compile(document: &Value, response: &Value) -> Result<Self, String> {
        let response = resolve(document, response)?;
        let body = match response["content"].as_object() {
            None => None,
            Some(content) => {
                let (media_type, media) =
                    content.iter().next().ok_or("content names no media type")?;
                Some((media_type.clone(), schema(document, &media["schema"])?))
            }
        };
        let mut headers = Vec::new();
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let header = resolve(document, header)?;
            headers.push(Header {
                name: name.clone(),
                required: header["required"].as_bool().unwrap_or(false),
                schema: schema(document, &header["schema"])?,
            });
        }
        Ok(Self { body, headers })
    }
}

/// Follows an OpenAPI `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(document: &'a Value, mut node: &'a Value) -> Result<&'a Value, String> {
    // A chain longer than this is a cycle.
    for _ in 0..16 {
        let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
            return Ok(node);
        };
        let pointer = reference.strip_prefix('#').ok_or_else(|| {
            format!("{reference}: only references into this document are followed")
        })?;
        node = document
            .pointer(pointer)
            .ok_or_else(|| format!("{reference} names nothing"))?;
    }
    Err("a $ref cycle".into())
}

/// A JSON Schema 2020-12 validator for one schema of the document. Its `$ref`s point into
/// `#/components/schemas`, so the schema is compiled inside a root that carries the document's
/// components (an unknown keyword to JSON Schema, but a place its JSON pointers can reach).
/// Formats (`date-time`, `uuid`) are asserted, not just annotations.
fn schema(document: &Value, schema: &Value) -> Result<Validator, String> {
    if schema.is_null() {
        return Err("a schema is missing".into());
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|err| format!("schema does not compile: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_non_empty_segment_per_parameter() {
        assert!(matches_template("/api/holds/{hold_id}", "/api/holds/abc"));
        assert!(matches_template("/api/holds", "/api/holds"));
        assert!(!matches_template("/api/holds/{hold_id}", "/api/holds/"));
        assert!(!matches_template("/api/holds/{hold_id}", "/api/holds/a/b"));
        assert!(!matches_template("/api/holds", "/api/holds/x"));
    }
}
