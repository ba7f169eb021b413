//! Dependent requests: a queued request that needs a value from the answer
//! of an earlier task — typically the id the server created — so "create,
//! then attach a file to it" can be queued offline as two requests.
//!
//! The dependent runs in its dependency's ordering chain (so it waits for
//! it), and at send time `{{name}}` placeholders are filled from the
//! dependency's stored answer:
//! - in the URL, percent-encoded (a value is one path segment or query value);
//! - in header values, as text;
//! - in a JSON body, a string that is exactly `"{{name}}"` becomes the value
//!   itself (a number stays a number), and a placeholder inside a longer
//!   string becomes its text.
//!
//! A value is named by a path into the answer: `status`,
//! `headers.location` (the kept headers: content-type, location, etag,
//! retry-after), `body` or `body.<key or index>…` (`body.data.0.id`).

use crate::engine::task::{
    Body, Dependency, ErrorClass, HttpRequest, HttpResponse, ResponseBody, TaskError,
};
use crate::engine::time::Millis;
use serde_json::Value;

/// Why a dependent cannot be filled in when its turn comes.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocked {
    /// The dependency is a dead letter (its reason).
    Failed(String),
    /// The dependency is still queued, yet this task's turn came first (it
    /// was put back with `retryFailed` after this one).
    Pending,
    /// Nothing is known of the dependency, and no answer of it was kept.
    Unknown,
    /// The answer has no value at this path.
    Missing(String),
}

/// The error and dead-letter reason of a dependent that cannot be sent.
pub fn blocked_error(dependency: &str, blocked: &Blocked, now: Millis) -> (TaskError, String) {
    let message = match blocked {
        Blocked::Failed(reason) => format!("the task it depends on, {dependency:?}, failed ({reason})"),
        Blocked::Pending => format!(
            "the task it depends on, {dependency:?}, is still queued behind it; retry {dependency:?} first, then this task"
        ),
        Blocked::Unknown => format!(
            "the task it depends on, {dependency:?}, is neither queued nor failed, and no answer of it was kept"
        ),
        Blocked::Missing(path) => {
            format!("the answer of {dependency:?} has no value at {path:?}")
        }
    };
    let reason = format!("dependency failed: {message}");
    let error = TaskError {
        class: ErrorClass::Dependency,
        message,
        status: None,
        at: now,
    };
    (error, reason)
}

/// Whether `path` names a part of an answer.
pub fn valid_path(path: &str) -> bool {
    path == "status"
        || path == "body"
        || path
            .strip_prefix("body.")
            .is_some_and(|rest| rest.split('.').all(|segment| !segment.is_empty()))
        || path
            .strip_prefix("headers.")
            .is_some_and(|name| !name.is_empty() && !name.contains('.'))
}

/// Whether `name` may be used as a placeholder (`{{name}}`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The placeholder names in `text`, in order.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(&after[..end]);
        rest = &after[end + 2..];
    }
    names
}

/// Checks a dependent before it is queued: every path is valid, and every
/// placeholder in the URL, the headers and a JSON body is declared in
/// `values`. The error names the field.
pub fn check(request: &HttpRequest, dependency: &Dependency) -> Result<(), String> {
    for (name, path) in &dependency.values {
        if !valid_name(name) {
            return Err(format!(
                "`values`: {name:?} is not a placeholder name (letters, digits, _ and -)"
            ));
        }
        if !valid_path(path) {
            return Err(format!(
                "`values.{name}` must be a path into the answer like \"body.id\", \"body.items.0.id\", \"headers.location\" or \"status\", got {path:?}"
            ));
        }
    }
    let undeclared = |field: &str, text: &str| -> Result<(), String> {
        match placeholders(text)
            .into_iter()
            .find(|name| !dependency.values.contains_key(*name))
        {
            Some(name) => Err(format!(
                "`{field}` uses {{{{{name}}}}}, which `values` does not declare"
            )),
            None => Ok(()),
        }
    };
    undeclared("url", &request.url)?;
    for (name, value) in &request.headers {
        undeclared(&format!("headers.{name}"), value)?;
    }
    if let Some(Body::Json(body)) = &request.body {
        let mut strings = Vec::new();
        json_strings(body, &mut strings);
        for text in strings {
            undeclared("data", text)?;
        }
    }
    Ok(())
}

fn json_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// An answer as kept for dependents (a plain JSON value, so storing it
/// needs no more than any JSON body does): `{status, headers, body}`, the
/// body parsed when JSON, text otherwise, `null` when empty.
pub fn kept_answer(response: &HttpResponse) -> Value {
    // Inserted one by one: collecting into a map sorts, and a sort costs
    // the wasm more than this loop.
    let mut headers = serde_json::Map::new();
    for (name, value) in &response.headers {
        headers.insert(name.clone(), Value::String(value.clone()));
    }
    let body = match &response.body {
        ResponseBody::Empty => Value::Null,
        ResponseBody::Json(value) => value.clone(),
        ResponseBody::Text(text) => Value::String(text.clone()),
    };
    let mut answer = serde_json::Map::new();
    answer.insert("status".into(), Value::from(response.status));
    answer.insert("headers".into(), Value::Object(headers));
    answer.insert("body".into(), body);
    Value::Object(answer)
}

/// The value at `path` in a kept answer (see [`kept_answer`]).
pub fn lookup(answer: &Value, path: &str) -> Option<Value> {
    let path = match path.strip_prefix("headers.") {
        Some(name) => format!("headers.{}", name.to_ascii_lowercase()),
        None => path.to_owned(),
    };
    let mut value = answer;
    for segment in path.split('.') {
        value = match value {
            Value::Object(fields) => fields.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!value.is_null()).then(|| value.clone())
}

/// The request to send: the dependent's, filled in from its dependency's
/// answer. `Err` names the first value the answer lacks.
pub fn fill(
    request: &HttpRequest,
    dependency: &Dependency,
    answer: &Value,
) -> Result<HttpRequest, Blocked> {
    let mut values = Vec::with_capacity(dependency.values.len());
    for (name, path) in &dependency.values {
        let value = lookup(answer, path).ok_or_else(|| Blocked::Missing(path.clone()))?;
        values.push((name.as_str(), value));
    }
    let mut filled = request.clone();
    filled.url = interpolate(&request.url, &values, true);
    for value in filled.headers.values_mut() {
        *value = interpolate(value, &values, false);
    }
    if let Some(Body::Json(body)) = &mut filled.body {
        fill_json(body, &values);
    }
    Ok(filled)
}

fn fill_json(value: &mut Value, values: &[(&str, Value)]) {
    match value {
        Value::String(text) => {
            let whole = text
                .strip_prefix("{{")
                .and_then(|t| t.strip_suffix("}}"))
                .and_then(|name| values.iter().find(|(n, _)| *n == name));
            *value = match whole {
                Some((_, found)) => found.clone(),
                None => Value::String(interpolate(text, values, false)),
            };
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_json(v, values)),
        Value::Object(fields) => fields.values_mut().for_each(|v| fill_json(v, values)),
        _ => {}
    }
}

fn interpolate(text: &str, values: &[(&str, Value)], in_url: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = &after[..end];
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                if in_url {
                    percent_encode(&text, &mut out);
                } else {
                    out.push_str(&text);
                }
            }
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters, as
/// `encodeURIComponent` does (minus `!'()*`, which it leaves).
fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn answer(body: Value) -> Value {
        let mut answer = HttpResponse::new(201);
        answer
            .headers
            .insert("location".into(), "/api/notes/n 1".into());
        answer.body = ResponseBody::Json(body);
        kept_answer(&answer)
    }

    fn dependency(values: &[(&str, &str)]) -> Dependency {
        Dependency {
            task: "create-note".into(),
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn request(url: &str, headers: &[(&str, &str)], body: Option<Value>) -> HttpRequest {
        HttpRequest {
            url: url.into(),
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body: body.map(Body::Json),
        }
    }

    #[test]
    fn paths_and_names() {
        for path in [
            "status",
            "body",
            "body.id",
            "body.items.0.id",
            "headers.location",
        ] {
            assert!(valid_path(path), "{path}");
        }
        for path in [
            "",
            "id",
            "body.",
            "body..id",
            "headers.",
            "headers.a.b",
            "bodyid",
        ] {
            assert!(!valid_path(path), "{path}");
        }
        assert!(valid_name("note_id-2"));
        assert!(!valid_name("note id"));
        assert!(!valid_name(""));
        assert_eq!(placeholders("/a/{{x}}/b/{{y}}?{{"), vec!["x", "y"]);
    }

    #[test]
    fn lookups() {
        let answer = answer(json!({"id": 42, "items": [{"id": "a"}], "none": null}));
        assert_eq!(lookup(&answer, "body.id"), Some(json!(42)));
        assert_eq!(lookup(&answer, "body.items.0.id"), Some(json!("a")));
        assert_eq!(lookup(&answer, "status"), Some(json!(201)));
        assert_eq!(
            lookup(&answer, "headers.Location"),
            Some(json!("/api/notes/n 1"))
        );
        assert_eq!(lookup(&answer, "body.items.1.id"), None);
        assert_eq!(lookup(&answer, "body.none"), None, "null is no value");
        assert_eq!(lookup(&answer, "body.id.deeper"), None);
        assert_eq!(lookup(&answer, "headers.etag"), None);
        let mut text = HttpResponse::new(200);
        text.body = ResponseBody::Text("n-7".into());
        let text = kept_answer(&text);
        assert_eq!(lookup(&text, "body"), Some(json!("n-7")));
        assert_eq!(lookup(&text, "body.id"), None);
        assert_eq!(lookup(&kept_answer(&HttpResponse::new(204)), "body"), None);
    }

    #[test]
    fn undeclared_placeholders_and_bad_paths_are_named() {
        let dep = dependency(&[("noteId", "body.id")]);
        assert_eq!(
            check(&request("/notes/{{noteId}}", &[], None), &dep),
            Ok(())
        );
        let error = check(&request("/notes/{{other}}", &[], None), &dep).unwrap_err();
        assert!(
            error.contains("`url`") && error.contains("{{other}}"),
            "{error}"
        );
        let error = check(&request("/n", &[("x-note", "{{nope}}")], None), &dep).unwrap_err();
        assert!(error.contains("`headers.x-note`"), "{error}");
        let error = check(&request("/n", &[], Some(json!({"a": ["{{zzz}}"]}))), &dep).unwrap_err();
        assert!(error.contains("`data`"), "{error}");
        let error = check(&request("/n", &[], None), &dependency(&[("x", "id")])).unwrap_err();
        assert!(error.contains("`values.x`"), "{error}");
        let error = check(&request("/n", &[], None), &dependency(&[("a b", "body")])).unwrap_err();
        assert!(error.contains("`values`"), "{error}");
    }

    #[test]
    fn fills_url_headers_and_json_body() {
        let dep = dependency(&[
            ("noteId", "body.id"),
            ("where", "headers.location"),
            ("slug", "body.slug"),
        ]);
        let req = request(
            "/api/notes/{{noteId}}/files?slug={{slug}}",
            &[("x-parent", "note {{noteId}}"), ("x-where", "{{where}}")],
            Some(
                json!({"noteId": "{{noteId}}", "label": "for {{slug}}", "n": 1, "keep": "{{unknown"}),
            ),
        );
        let filled = fill(&req, &dep, &answer(json!({"id": 42, "slug": "a/b c"}))).unwrap();
        assert_eq!(filled.url, "/api/notes/42/files?slug=a%2Fb%20c");
        assert_eq!(filled.headers["x-parent"], "note 42");
        assert_eq!(filled.headers["x-where"], "/api/notes/n 1");
        assert_eq!(
            filled.body,
            Some(Body::Json(
                json!({"noteId": 42, "label": "for a/b c", "n": 1, "keep": "{{unknown"})
            ))
        );
        assert_eq!(filled.method, "POST");
    }

    #[test]
    fn a_missing_value_blocks_the_dependent() {
        let dep = dependency(&[("noteId", "body.id")]);
        let blocked = fill(
            &request("/n/{{noteId}}", &[], None),
            &dep,
            &answer(json!({})),
        )
        .unwrap_err();
        assert_eq!(blocked, Blocked::Missing("body.id".into()));
        let (error, reason) = blocked_error("create-note", &blocked, 5.0);
        assert_eq!(error.class, ErrorClass::Dependency);
        assert!(reason.starts_with("dependency failed: "), "{reason}");
        assert!(error.message.contains("\"body.id\""), "{}", error.message);
        let (_, reason) = blocked_error(
            "create-note",
            &Blocked::Failed("rejected: HTTP 422".into()),
            5.0,
        );
        assert!(
            reason.contains("\"create-note\"") && reason.contains("rejected: HTTP 422"),
            "{reason}"
        );
    }
}
