//! HTTP through gloo-net's global `fetch` binding, so it works in a window,
//! a dedicated worker and a service worker alike. Each request gets an
//! `AbortController` that a timer aborts after the per-request timeout.

use crate::engine::ports::{Transport, TransportError};
use crate::engine::task::{Body, HttpRequest, HttpResponse, ResponseBody};
use gloo_net::http::{Method, RequestBuilder};
use gloo_timers::callback::Timeout;
use std::cell::Cell;
use std::rc::Rc;

/// Response bodies larger than this are kept as truncated text, so a huge
/// answer cannot bloat events or memory.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Headers of a response the engine and the application care about.
const KEPT_HEADERS: [&str; 4] = ["content-type", "location", "etag", "retry-after"];

#[derive(Default)]
pub struct HttpTransport;

impl Transport for HttpTransport {
    async fn send(
        &self,
        request: &HttpRequest,
        timeout_ms: u32,
    ) -> Result<HttpResponse, TransportError> {
        let method = Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            TransportError::Network(format!("invalid HTTP method {}", request.method))
        })?;
        let controller = web_sys::AbortController::new()
            .map_err(|e| TransportError::Network(format!("{e:?}")))?;
        let mut builder = RequestBuilder::new(&request.url)
            .method(method)
            .abort_signal(Some(&controller.signal()));
        let has_content_type = request
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"));
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let prepared = match &request.body {
            Some(Body::Json(value)) => {
                if !has_content_type {
                    builder = builder.header("Content-Type", "application/json");
                }
                let text = serde_json::to_string(value)
                    .map_err(|e| TransportError::Network(e.to_string()))?;
                builder.body(text)
            }
            Some(Body::Text(text)) => builder.body(text.as_str()),
            Some(Body::Bytes(bytes)) => builder.body(js_sys::Uint8Array::from(bytes.as_slice())),
            None => builder.build(),
        }
        .map_err(|e| TransportError::Network(format!("cannot build the request: {e}")))?;

        let timed_out = Rc::new(Cell::new(false));
        let timer = {
            let timed_out = timed_out.clone();
            let controller = controller.clone();
            Timeout::new(timeout_ms, move || {
                timed_out.set(true);
                controller.abort();
            })
        };
        let result = prepared.send().await;
        let response = match result {
            Ok(response) => response,
            Err(_) if timed_out.get() => return Err(TransportError::Timeout(timeout_ms)),
            Err(error) => return Err(TransportError::Network(error.to_string())),
        };
        let mut out = HttpResponse::new(response.status());
        let headers = response.headers();
        for name in KEPT_HEADERS {
            if let Some(value) = headers.get(name) {
                out.headers.insert(name.to_owned(), value);
            }
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(_) if timed_out.get() => return Err(TransportError::Timeout(timeout_ms)),
            Err(error) => return Err(TransportError::Network(error.to_string())),
        };
        drop(timer);
        out.body = read_body(out.header("content-type").unwrap_or(""), text);
        Ok(out)
    }
}

fn read_body(content_type: &str, text: String) -> ResponseBody {
    if text.is_empty() {
        return ResponseBody::Empty;
    }
    if text.len() > MAX_RESPONSE_BODY {
        let mut cut = MAX_RESPONSE_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        return ResponseBody::Text(text[..cut].to_owned());
    }
    if content_type.contains("json") {
        if let Ok(value) = serde_json::from_str(&text) {
            return ResponseBody::Json(value);
        }
    }
    ResponseBody::Text(text)
}
