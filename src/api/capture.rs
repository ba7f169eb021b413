//! `client.captureFailedRequests(event, options)`: Workbox's
//! `BackgroundSyncPlugin` for a service worker's `fetch` handler. A matching
//! request goes to the network as it is; when the network fails, the whole
//! request (method, URL, headers, body bytes) becomes a queued task and the
//! page is answered `202` with a `Tidesync-Task` header naming it. Decisions
//! live in [`crate::engine::capture`]; this module reads and builds the
//! `Request`s and `Response`s.

use crate::api::client::{schedule_flush, store_error, SyncClient};
use crate::api::error::ApiError;
use crate::api::guard;
use crate::api::input;
use crate::api::options::{invalid, parse_queueing, Queueing, Reader};
use crate::engine::capture;
use crate::engine::ports::{Clock, Store};
use crate::engine::task::{HttpRequest, NewTask};
use crate::platform::global;
use js_sys::{Function, Object, Promise, Reflect, RegExp, Uint8Array};
use std::collections::BTreeMap;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

const CAPTURE_FIELDS: &[&str] = &[
    "match",
    "methods",
    "priority",
    "orderingKey",
    "retryOnFailure",
    "maxRetentionTime",
];

/// Which requests to take over, and how to queue them.
struct CaptureOptions {
    /// `None`: every request whose method is captured.
    matcher: Option<Matcher>,
    methods: Vec<String>,
    queueing: Queueing,
}

enum Matcher {
    /// An absolute URL prefix (a path is resolved against the worker's origin).
    Prefix(String),
    Pattern(RegExp),
    Predicate(Function),
}

fn parse_capture_options(value: &JsValue) -> Result<CaptureOptions, ApiError> {
    let none = Object::new();
    let value = if value.is_undefined() || value.is_null() {
        none.as_ref()
    } else {
        value
    };
    let r = Reader::new(value, "options", invalid)?;
    r.reject_unknown(CAPTURE_FIELDS)?;
    let mut options = CaptureOptions {
        matcher: None,
        methods: capture::DEFAULT_METHODS
            .iter()
            .map(|m| m.to_string())
            .collect(),
        queueing: parse_queueing(&r)?,
    };
    if let Some(pattern) = r.get("match")? {
        options.matcher = Some(if let Some(prefix) = pattern.as_string() {
            Matcher::Prefix(absolute_url(&prefix).ok_or_else(|| {
                invalid(format!(
                    "`options.match` must be a URL or a path like \"/api/\", got {prefix:?}"
                ))
            })?)
        } else if let Some(regexp) = pattern.dyn_ref::<RegExp>() {
            Matcher::Pattern(regexp.clone())
        } else if let Some(function) = pattern.dyn_ref::<Function>() {
            Matcher::Predicate(function.clone())
        } else {
            return Err(invalid(
                "`options.match` must be a URL prefix (string), a RegExp, or a function (request) => boolean".into(),
            ));
        });
    }
    if let Some(methods) = r.get("methods")? {
        let list = input::json(&methods, "options.methods", invalid)?;
        let list = list.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
            invalid("`options.methods` must be a non-empty array like [\"POST\", \"PUT\"]".into())
        })?;
        options.methods.clear();
        for method in list {
            let text = method.as_str().unwrap_or_default();
            if let Some(why) = capture::method_error(text) {
                return Err(invalid(format!("`options.methods`: {why}")));
            }
            options.methods.push(text.to_ascii_uppercase());
        }
    }
    Ok(options)
}

/// `url` resolved against the scope's location (`self.location`).
fn absolute_url(url: &str) -> Option<String> {
    let base = global::prop(&global::get("location"), "href");
    let parsed = global::construct("URL", &[JsValue::from_str(url), base]).ok()?;
    global::prop(&parsed, "href").as_string()
}

impl CaptureOptions {
    fn takes(&self, request: &JsValue, url: &str) -> Result<bool, JsValue> {
        let method = global::prop(request, "method")
            .as_string()
            .unwrap_or_default();
        let mode = global::prop(request, "mode")
            .as_string()
            .unwrap_or_default();
        if !capture::captures(&self.methods, &method, &mode, url) {
            return Ok(false);
        }
        Ok(match &self.matcher {
            None => true,
            Some(Matcher::Prefix(prefix)) => capture::matches_prefix(url, prefix),
            Some(Matcher::Pattern(regexp)) => {
                // A global or sticky RegExp keeps state between tests: start
                // over. Through Reflect and `call`: a frozen RegExp refuses
                // the write, and a subclass's `exec` may throw.
                let _ = Reflect::set(regexp, &"lastIndex".into(), &JsValue::from(0));
                global::call(regexp, "test", &[JsValue::from_str(url)])?.is_truthy()
            }
            Some(Matcher::Predicate(function)) => function
                .call1(&JsValue::NULL, request)
                .map_err(|e| invalid(format!("`options.match` threw: {}", input::thrown(&e))))?
                .is_truthy(),
        })
    }
}

#[wasm_bindgen]
impl SyncClient {
    /// For a service worker's `fetch` handler (or any `Request`): sends the
    /// request; when the network fails (no HTTP answer), queues all of it and
    /// resolves with a `202` whose `Tidesync-Task` header names the task. A
    /// request that does not match (`match`, `methods`; never navigations)
    /// is simply fetched. Rejects with `invalid-options` naming the field.
    #[wasm_bindgen(js_name = captureFailedRequests, unchecked_return_type = "Promise<Response>")]
    pub fn capture_failed_requests(
        &self,
        #[wasm_bindgen(unchecked_param_type = "{ readonly request: Request } | Request")]
        event: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "CaptureOptions")] options: Option<JsValue>,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let request = request_of(&event)?;
            let options = parse_capture_options(&options.unwrap_or(JsValue::UNDEFINED))?;
            let url = global::prop(&request, "url")
                .as_string()
                .unwrap_or_default();
            if !options.takes(&request, &url)? {
                return fetch(&request).await;
            }
            // The body is read from a copy, and only if the network fails.
            let copy = global::call(&request, "clone", &[])?;
            let own_key = headers_get(&global::prop(&request, "headers"), "idempotency-key");
            let (sent, key) = match own_key {
                Some(_) => (request.clone(), None),
                None => with_idempotency_key(&request, &url, &inner.outbox().clock().unique_id())?,
            };
            let error = match fetch(&sent).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            // The page (or the browser) cancelled it: not a failure to replay.
            if global::prop(&error, "name").as_string().as_deref() == Some("AbortError") {
                return Err(error);
            }
            if let Some(key) = own_key {
                let queued = inner
                    .outbox()
                    .store()
                    .load_tasks()
                    .await
                    .map_err(store_error)?;
                if capture::replays_task(&queued, &key) {
                    return Err(error);
                }
            }
            let task = captured_task(
                &copy,
                url,
                key,
                &options,
                &inner.outbox().clock().unique_id(),
            )
            .await?;
            let stored = match inner.outbox().register(task).await {
                Ok(stored) => stored,
                Err(error) => {
                    inner.events.logger().error(
                        "a failed request could not be queued; the page gets a network error",
                        Some(&JsValue::from_str(&error.to_string())),
                    );
                    return Err(store_error(error));
                }
            };
            crate::api::devtools::changed(inner.name());
            if inner.auto_flush() && global::navigator_online() {
                schedule_flush(&inner);
            }
            request_background_sync().await;
            queued_response(&stored.id)
        })
    }
}

/// The `Request` of a `FetchEvent`, or the `Request` itself.
fn request_of(event: &JsValue) -> Result<JsValue, ApiError> {
    if event.is_instance_of::<web_sys::Request>() {
        return Ok(event.clone());
    }
    let request = global::prop(event, "request");
    if request.is_instance_of::<web_sys::Request>() {
        return Ok(request);
    }
    Err(invalid(
        "`event` must be a FetchEvent (the `fetch` handler's argument) or a Request".into(),
    ))
}

async fn fetch(request: &JsValue) -> Result<JsValue, JsValue> {
    let pending = global::call(&global::global(), "fetch", std::slice::from_ref(request))?;
    JsFuture::from(Promise::from(pending)).await
}

fn headers_get(headers: &JsValue, name: &str) -> Option<String> {
    global::call(headers, "get", &[JsValue::from_str(name)])
        .ok()
        .and_then(|v| v.as_string())
}

/// The request to send first, which carried no `Idempotency-Key`: with
/// one (the key its replays will carry) when the URL is on the worker's own
/// origin; a cross-origin server might refuse the extra header's preflight,
/// and an answered request must not turn into a queued one.
fn with_idempotency_key(
    request: &JsValue,
    url: &str,
    fresh: &str,
) -> Result<(JsValue, Option<String>), JsValue> {
    let headers = global::prop(request, "headers");
    let own = global::prop(&global::get("location"), "origin").as_string();
    if !own.is_some_and(|origin| capture::matches_prefix(url, &origin)) {
        return Ok((request.clone(), None));
    }
    let copy = global::construct("Headers", &[headers])?;
    global::call(
        &copy,
        "set",
        &[
            JsValue::from_str("Idempotency-Key"),
            JsValue::from_str(fresh),
        ],
    )?;
    let init = Object::new();
    Reflect::set(&init, &"headers".into(), &copy)?;
    let sent = global::construct("Request", &[request.clone(), init.into()])?;
    Ok((sent, Some(fresh.to_owned())))
}

/// The task for a request the network failed: every header the worker can
/// see (the key sent with the first attempt included), the body's bytes.
async fn captured_task(
    copy: &JsValue,
    url: String,
    key: Option<String>,
    options: &CaptureOptions,
    uuid: &str,
) -> Result<NewTask, JsValue> {
    let entries = Object::from_entries(&global::prop(copy, "headers"))?;
    let mut headers: BTreeMap<String, String> =
        serde_wasm_bindgen::from_value(entries.into()).map_err(JsValue::from)?;
    if let Some(key) = key {
        headers.insert("Idempotency-Key".into(), key);
    }
    let buffer = JsFuture::from(Promise::from(global::call(copy, "arrayBuffer", &[])?)).await?;
    let bytes = Uint8Array::new(&buffer).to_vec();
    let content_type = headers.get("content-type").map(String::as_str);
    let body = capture::stored_body(content_type, bytes);
    Ok(NewTask {
        id: format!("{}{uuid}", capture::ID_PREFIX),
        priority: options.queueing.priority,
        ordering_key: options.queueing.ordering_key.clone(),
        request: HttpRequest {
            url,
            method: global::prop(copy, "method").as_string().unwrap_or_default(),
            headers,
            body,
        },
        retry_on_failure: options.queueing.retry_on_failure,
        max_retention_time: options.queueing.max_retention_time,
        depends_on: None,
    })
}

/// In a service worker, asks the browser for a `sync` event (tag
/// `"tidesync"`) when connectivity returns, as Workbox does. Where there is
/// no Background Sync the worker's own `online` handling and the page's
/// client deliver the queue instead.
async fn request_background_sync() {
    let sync = global::prop(&global::get("registration"), "sync");
    if let Ok(pending) = global::call(&sync, "register", &[JsValue::from_str("tidesync")]) {
        let _ = JsFuture::from(Promise::from(pending)).await;
    }
}

/// `202 Accepted`, `Tidesync-Task: <id>`, `{"queued": true, "taskId": id}`.
fn queued_response(task_id: &str) -> Result<JsValue, JsValue> {
    let headers = Object::new();
    Reflect::set(&headers, &"Content-Type".into(), &"application/json".into())?;
    Reflect::set(
        &headers,
        &JsValue::from_str(capture::TASK_HEADER),
        &JsValue::from_str(task_id),
    )?;
    let init = Object::new();
    Reflect::set(&init, &"status".into(), &JsValue::from(202))?;
    Reflect::set(&init, &"headers".into(), &headers)?;
    global::construct(
        "Response",
        &[
            JsValue::from_str(&capture::queued_answer(task_id)),
            init.into(),
        ],
    )
}
