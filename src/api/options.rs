//! Validation of what JavaScript passes in: `SyncClient.open(options)` and
//! `register(id, options)`. Every error names the field and says what to
//! do; unknown fields are errors too, because a typo (`retires`) silently
//! ignored is worse than a loud one.

use crate::api::error::ApiError;
use crate::api::input;
use crate::api::log::LogLevel;
use crate::engine::live::LiveOptions;
use crate::engine::options::{BreakerOptions, OutboxOptions, RetryOptions};
use crate::engine::replication::{ReplicationOptions, Strategy};
use crate::engine::task::{Body, Dependency, HttpRequest, NewTask, Priority};
use js_sys::{Function, Object, Reflect};
use std::collections::BTreeMap;
use wasm_bindgen::JsValue;

/// Validated `SyncClient.open()` options.
pub struct ClientOptions {
    pub name: String,
    pub token: Option<String>,
    pub get_token: Option<Function>,
    pub log_level: LogLevel,
    pub outbox: OutboxOptions,
    /// Flush automatically on registration, `online`, and backoff timers.
    pub auto_flush: bool,
    /// Present when both `serverUrl` and `entityTypes` are given.
    pub replication: Option<ReplicationSetup>,
    /// Present when the client keeps a live connection (`live`, on by
    /// default with replication).
    pub live: Option<LiveOptions>,
}

/// The replication part of the options.
pub struct ReplicationSetup {
    pub options: ReplicationOptions,
    pub on_conflict: Option<Function>,
}

const CLIENT_FIELDS: &[&str] = &[
    "name",
    "serverUrl",
    "token",
    "getToken",
    "entityTypes",
    "retry",
    "circuitBreaker",
    "conflictStrategy",
    "onConflict",
    "batchSize",
    "pageSize",
    "logLevel",
    "concurrency",
    "requestTimeout",
    "closeTimeout",
    "autoFlush",
    "live",
    "pullInterval",
    "maxRetentionTime",
];

pub(crate) fn invalid(message: String) -> ApiError {
    ApiError::InvalidOptions(message)
}

/// Reads the fields of one options object; each error names the field
/// (`retry.maxDelay`) and carries the caller's `code`. Built on
/// [`crate::api::input`], so a throwing getter or Proxy trap is an error too.
pub(crate) struct Reader<'a> {
    object: &'a JsValue,
    path: &'a str,
    pub(crate) error: fn(String) -> ApiError,
}

/// The longest option string accepted (a URL, a token, a header value).
pub(crate) const MAX_TEXT: usize = 1 << 20;

impl<'a> Reader<'a> {
    pub(crate) fn new(
        object: &'a JsValue,
        path: &'a str,
        error: fn(String) -> ApiError,
    ) -> Result<Self, ApiError> {
        let what = if path.is_empty() { "options" } else { path };
        input::object(object, what, "{ name: \"app\" }", error)?;
        Ok(Self {
            object,
            path,
            error,
        })
    }

    pub(crate) fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The field's value; `None` for `undefined` and `null`.
    pub(crate) fn get(&self, name: &str) -> Result<Option<JsValue>, ApiError> {
        let value = input::get(self.object, name, &self.field(name), self.error)?;
        Ok(input::present(value))
    }

    /// The object's own keys, each read once.
    pub(crate) fn keys(&self) -> Result<Vec<String>, ApiError> {
        let what = if self.path.is_empty() {
            "options"
        } else {
            self.path
        };
        input::keys(self.object, what, self.error)
    }

    pub(crate) fn reject_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        for key in self.keys()? {
            if !known.contains(&key.as_str()) {
                return Err((self.error)(format!(
                    "unknown option `{}`; expected one of: {}",
                    self.field(&input::shorten(&key, 40)),
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.string_max(name, MAX_TEXT)
    }

    /// A string of at most `max` bytes.
    pub(crate) fn string_max(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => input::string(&v, &self.field(name), max, self.error).map(Some),
        }
    }

    pub(crate) fn number(&self, name: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => input::number(&v, &self.field(name), min, max, self.error).map(Some),
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                (self.error)(format!(
                    "`{}` must be true or false; got {}",
                    self.field(name),
                    input::kind(&v)
                ))
            }),
        }
    }

    pub(crate) fn function(&self, name: &str) -> Result<Option<Function>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => input::function(&v, &self.field(name), "", self.error).map(Some),
        }
    }
}

const DAY: f64 = 86_400_000.0;
/// The longest `maxRetentionTime` accepted: ten years.
const MAX_RETENTION: f64 = 3650.0 * DAY;

pub fn parse_client_options(value: &JsValue) -> Result<ClientOptions, ApiError> {
    let r = Reader::new(value, "", invalid)?;
    r.reject_unknown(CLIENT_FIELDS)?;
    let name = r.string("name")?.ok_or_else(|| {
        invalid("`name` is required: the client's name, e.g. { name: \"app\" }".into())
    })?;
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("`name` must be 1 to 200 characters".into()));
    }
    let mut outbox = OutboxOptions::default();
    if let Some(url) = r.string("serverUrl")? {
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/')) {
            return Err(invalid(format!(
                "`serverUrl` must be an http(s) URL or an absolute path, got {url:?}"
            )));
        }
        outbox.server_url = Some(url.trim_end_matches('/').to_owned());
    }
    if let Some(retry) = r.get("retry")? {
        let rr = Reader::new(&retry, "retry", invalid)?;
        rr.reject_unknown(&[
            "maxRetries",
            "baseDelay",
            "maxDelay",
            "backoffMultiplier",
            "jitter",
        ])?;
        let d = RetryOptions::default();
        outbox.retry = RetryOptions {
            max_retries: rr
                .number("maxRetries", 0.0, 1000.0)?
                .map_or(d.max_retries, |n| n as u32),
            base_delay: rr.number("baseDelay", 0.0, DAY)?.unwrap_or(d.base_delay),
            max_delay: rr
                .number("maxDelay", 0.0, 7.0 * DAY)?
                .unwrap_or(d.max_delay),
            backoff_multiplier: rr
                .number("backoffMultiplier", 1.0, 100.0)?
                .unwrap_or(d.backoff_multiplier),
            jitter: rr.boolean("jitter")?.unwrap_or(d.jitter),
        };
        if outbox.retry.max_delay < outbox.retry.base_delay {
            return Err(invalid(
                "`retry.maxDelay` must be at least `retry.baseDelay`".into(),
            ));
        }
    }
    if let Some(breaker) = r.get("circuitBreaker")? {
        let br = Reader::new(&breaker, "circuitBreaker", invalid)?;
        br.reject_unknown(&["failureThreshold", "cooldown", "maxCooldown"])?;
        let d = BreakerOptions::default();
        let cooldown = br.number("cooldown", 0.0, DAY)?.unwrap_or(d.cooldown);
        outbox.circuit_breaker = BreakerOptions {
            failure_threshold: br
                .number("failureThreshold", 1.0, 1_000_000.0)?
                .map_or(d.failure_threshold, |n| n as u32),
            cooldown,
            max_cooldown: br
                .number("maxCooldown", 0.0, 7.0 * DAY)?
                .unwrap_or((cooldown * 16.0).max(cooldown)),
        };
    }
    if let Some(n) = r.number("concurrency", 1.0, 64.0)? {
        outbox.concurrency = n as usize;
    }
    if let Some(n) = r.number("requestTimeout", 1.0, DAY)? {
        outbox.request_timeout = n as u32;
    }
    if let Some(n) = r.number("closeTimeout", 0.0, DAY)? {
        outbox.close_timeout = n;
    }
    if let Some(n) = r.number("maxRetentionTime", 1.0, MAX_RETENTION)? {
        outbox.max_retention_time = n;
    }
    // Accepted now, used by replication: validated so a typo fails early.
    let mut entity_types = Vec::new();
    if let Some(types) = r.get("entityTypes")? {
        let types = input::json(&types, "entityTypes", invalid)?;
        let list = types.as_array().map(|list| {
            list.iter()
                .filter_map(|t| t.as_str().filter(|t| !t.is_empty() && t.len() <= 200))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        match list {
            Some(list) if Some(list.len()) == types.as_array().map(Vec::len) => entity_types = list,
            _ => {
                return Err(invalid(
                    "`entityTypes` must be an array of non-empty strings (at most 200 bytes each)"
                        .into(),
                ))
            }
        }
    }
    let strategy = match r.string("conflictStrategy")? {
        None => Strategy::LastWriteWins,
        Some(text) => Strategy::parse(&text).ok_or_else(|| {
            invalid(format!(
                "`conflictStrategy` must be \"server-wins\", \"client-wins\", \"last-write-wins\" or \"merge\", got {text:?}"
            ))
        })?,
    };
    let on_conflict = r.function("onConflict")?;
    let batch_size = r
        .number("batchSize", 1.0, 1000.0)?
        .map_or(500, |n| n as usize);
    let page_size = r
        .number("pageSize", 1.0, 10_000.0)?
        .map_or(1000, |n| n as u32);
    let replication = match (&outbox.server_url, entity_types.is_empty()) {
        (Some(server_url), false) => Some(ReplicationSetup {
            options: ReplicationOptions {
                server_url: server_url.clone(),
                entity_types,
                strategy,
                batch_size,
                page_size,
                request_timeout: outbox.request_timeout,
            },
            on_conflict,
        }),
        (None, false) => {
            return Err(invalid(
                "`entityTypes` needs `serverUrl`: the push/pull server to replicate with".into(),
            ))
        }
        _ => None,
    };
    let live = match (r.boolean("live")?, &replication) {
        (Some(true), None) => {
            return Err(invalid(
                "`live` needs `serverUrl` and `entityTypes`: it pulls the records the server pokes it about".into(),
            ))
        }
        (Some(false), _) | (None, None) => None,
        (_, Some(_)) => {
            let mut live = LiveOptions::default();
            if let Some(ms) = r.number("pullInterval", 0.0, 7.0 * DAY)? {
                if ms > 0.0 && ms < 1000.0 {
                    return Err(invalid(
                        "`pullInterval` must be 0 (off) or at least 1000 ms".into(),
                    ));
                }
                live.pull_interval = ms;
            }
            Some(live)
        }
    };
    let log_level = match r.string("logLevel")? {
        None => LogLevel::Warn,
        Some(level) => LogLevel::parse(&level).ok_or_else(|| {
            invalid(format!("`logLevel` must be \"debug\", \"info\", \"warn\", \"error\" or \"silent\", got {level:?}"))
        })?,
    };
    Ok(ClientOptions {
        name,
        token: r.string("token")?,
        get_token: r.function("getToken")?,
        log_level,
        outbox,
        auto_flush: r.boolean("autoFlush")?.unwrap_or(true),
        replication,
        live,
    })
}

const TASK_FIELDS: &[&str] = &[
    "url",
    "method",
    "data",
    "body",
    "headers",
    "priority",
    "orderingKey",
    "retryOnFailure",
    "maxRetentionTime",
    "dependsOn",
    "values",
];

pub(crate) fn invalid_task(message: String) -> ApiError {
    ApiError::InvalidTask(message)
}

/// Validates `register(id, options)`.
pub fn parse_register(id: &JsValue, value: &JsValue) -> Result<NewTask, ApiError> {
    let id = input::string(id, "id", 500, invalid_task)?;
    if id.is_empty() {
        return Err(invalid_task(
            "`id` must be a non-empty string (at most 500 bytes)".into(),
        ));
    }
    let r = Reader::new(value, "", invalid_task)?;
    r.reject_unknown(TASK_FIELDS)?;
    let url = r
        .string("url")?
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            invalid_task("`url` is required: the URL to send, e.g. \"/api/items\"".into())
        })?;
    let data = r.get("data")?;
    let raw_body = r.get("body")?;
    if data.is_some() && raw_body.is_some() {
        return Err(invalid_task(
            "give either `data` (JSON) or `body` (text or bytes), not both".into(),
        ));
    }
    let body = match (data, raw_body) {
        (Some(data), _) => Some(Body::Json(input::json(&data, "data", invalid_task)?)),
        (None, Some(body)) => Some(match body.as_string() {
            Some(text) => Body::Text(text),
            None => Body::Bytes(input::bytes(&body).ok_or_else(|| {
                invalid_task(format!("`body` must be a string, an ArrayBuffer, a typed array, a Blob, FormData or URLSearchParams; got {}", input::kind(&body)))
            })?),
        }),
        (None, None) => None,
    };
    let method = r
        .string_max("method", 64)?
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    let method = method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid_task(format!(
            "`method` must be an HTTP method like \"POST\", got {method:?}"
        )));
    }
    let mut headers = BTreeMap::new();
    if let Some(h) = r.get("headers")? {
        let hr = Reader::new(&h, "headers", invalid_task)?;
        for key in hr.keys()? {
            let field = format!("headers[{:?}]", input::shorten(&key, 40));
            let Some(value) = hr.string(&key)? else {
                return Err(invalid_task(format!(
                    "`{field}` must be a string (leave the header out instead of null)"
                )));
            };
            if let Some(why) = crate::engine::task::header_error(&key, &value) {
                return Err(invalid_task(format!("`{field}` {why}")));
            }
            headers.insert(key, value);
        }
    }
    let queueing = parse_queueing(&r)?;
    let request = HttpRequest {
        url,
        method,
        headers,
        body,
    };
    let depends_on = parse_dependency(&r, &id, &request)?;
    if depends_on.is_some() && queueing.ordering_key.is_some() {
        return Err(invalid_task(
            "give either `dependsOn` or `orderingKey`, not both: a dependent runs in the ordering chain of the task it depends on".into(),
        ));
    }
    Ok(NewTask {
        id,
        priority: queueing.priority,
        ordering_key: queueing.ordering_key,
        request,
        retry_on_failure: queueing.retry_on_failure,
        max_retention_time: queueing.max_retention_time,
        depends_on,
    })
}

/// `dependsOn` and `values`: the task whose answer fills this one in, and
/// where in that answer each `{{placeholder}}` is found.
fn parse_dependency(
    r: &Reader,
    id: &str,
    request: &HttpRequest,
) -> Result<Option<Dependency>, ApiError> {
    let values = r.get("values")?;
    let Some(task) = r.string_max("dependsOn", 500)? else {
        return match values {
            Some(_) => Err(invalid_task(
                "`values` needs `dependsOn`: the id of the task whose answer they come from".into(),
            )),
            None => Ok(None),
        };
    };
    if task.is_empty() || task == id {
        return Err(invalid_task(format!(
            "`dependsOn` must be the id of another, earlier task, got {task:?}"
        )));
    }
    let mut dependency = Dependency {
        task,
        values: BTreeMap::new(),
    };
    if let Some(values) = values {
        let vr = Reader::new(&values, "values", invalid_task)?;
        for name in vr.keys()? {
            let path = vr.string(&name)?.unwrap_or_default();
            dependency.values.insert(name, path);
        }
    }
    crate::engine::dependency::check(request, &dependency).map_err(invalid_task)?;
    Ok(Some(dependency))
}

/// How a task is queued, as `register` and `captureFailedRequests` both
/// take it: `priority`, `orderingKey`, `retryOnFailure`, `maxRetentionTime`.
pub(crate) struct Queueing {
    pub priority: Priority,
    pub ordering_key: Option<String>,
    pub retry_on_failure: bool,
    pub max_retention_time: Option<f64>,
}

pub(crate) fn parse_queueing(r: &Reader) -> Result<Queueing, ApiError> {
    let priority = match r.string("priority")? {
        None => Priority::Normal,
        Some(p) => Priority::parse(&p).ok_or_else(|| {
            (r.error)(format!(
                "`{}` must be \"high\", \"normal\" or \"low\", got {p:?}",
                r.field("priority")
            ))
        })?,
    };
    Ok(Queueing {
        priority,
        ordering_key: r.string_max("orderingKey", 1000)?.filter(|k| !k.is_empty()),
        retry_on_failure: r.boolean("retryOnFailure")?.unwrap_or(true),
        max_retention_time: r.number("maxRetentionTime", 1.0, MAX_RETENTION)?,
    })
}

/// Encodes a `Blob`, `File`, `FormData` or `URLSearchParams` body into bytes
/// and the content type fetch would send (a multipart boundary included),
/// so it can be stored and replayed byte for byte. Other options pass
/// through unchanged (and are checked by [`parse_register`]).
pub async fn encode_body(options: &JsValue) -> Result<JsValue, ApiError> {
    if !options.is_object() || options.is_function() {
        return Ok(options.clone());
    }
    let body = input::get(options, "body", "body", invalid_task)?;
    if !input::is_form_body(&body) {
        return Ok(options.clone());
    }
    let what = input::kind(&body);
    let failed = |why: &str| invalid_task(format!("`body` ({what}) could not be read: {why}"));
    let response = crate::platform::global::construct("Response", &[body])
        .map_err(|e| failed(&input::thrown(&e)))?;
    let headers = Reflect::get(&response, &"headers".into()).unwrap_or(JsValue::UNDEFINED);
    let content_type =
        crate::platform::global::call(&headers, "get", &[JsValue::from_str("content-type")])
            .ok()
            .and_then(|v| v.as_string());
    let buffer = crate::platform::global::call(&response, "arrayBuffer", &[])
        .map_err(|_| failed("arrayBuffer()"))?;
    let buffer = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(buffer))
        .await
        .map_err(|e| failed(&input::thrown(&e)))?;
    let copy = input::copy_fields(options, "options", invalid_task)?;
    let _ = Reflect::set(&copy, &"body".into(), &js_sys::Uint8Array::new(&buffer));
    if let Some(content_type) = content_type {
        let original = input::present(input::get(options, "headers", "headers", invalid_task)?);
        let headers = match original {
            Some(original) => {
                input::object(&original, "headers", "{ \"X-Trace\": \"1\" }", invalid_task)?;
                input::copy_fields(&original, "headers", invalid_task)?
            }
            None => input::copy_fields(&Object::new(), "headers", invalid_task)?,
        };
        let has_type = input::keys(&headers, "headers", invalid_task)?
            .iter()
            .any(|k| k.eq_ignore_ascii_case("content-type"));
        if !has_type {
            let _ = Reflect::set(
                &headers,
                &"Content-Type".into(),
                &JsValue::from_str(&content_type),
            );
        }
        let _ = Reflect::set(&copy, &"headers".into(), &headers);
    }
    Ok(copy)
}
