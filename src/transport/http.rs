//! HTTP through gloo-net's global `fetch` binding, so it works in a window,
//! a dedicated worker and a service worker alike. Each request gets an
//! `AbortController` that a timer aborts after the per-request timeout. A
//! capped answer is read from the body stream only up to its cap.

use crate::engine::ports::{Transport, TransportError};
use crate::engine::task::{Body, HttpRequest, HttpResponse, ResponseBody};
use gloo_net::http::{Method, RequestBuilder};
use gloo_timers::callback::Timeout;
use js_sys::{Reflect, Uint8Array};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Headers of a response the engine and the application care about.
const KEPT_HEADERS: [&str; 4] = ["content-type", "location", "etag", "retry-after"];

#[derive(Default)]
pub struct HttpTransport;

impl Transport for HttpTransport {
    async fn send(
        &self,
        request: &HttpRequest,
        timeout_ms: u32,
        max_body: Option<usize>,
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
        let content_type = out.header("content-type").unwrap_or("").to_owned();
        let body: Result<ResponseBody, String> = match max_body {
            None => response
                .text()
                .await
                .map(|text| read_body(&content_type, text, false))
                .map_err(|e| e.to_string()),
            Some(cap) => read_capped(response.body(), cap)
                .await
                .map(|(text, cut)| read_body(&content_type, text, cut))
                .map_err(|e| {
                    e.dyn_ref::<js_sys::Error>()
                        .map(|e| String::from(e.message()))
                        .unwrap_or_else(|| "the response body could not be read".into())
                }),
        };
        let body = match body {
            Ok(body) => body,
            Err(_) if timed_out.get() => return Err(TransportError::Timeout(timeout_ms)),
            Err(error) => return Err(TransportError::Network(error)),
        };
        drop(timer);
        out.body = body;
        Ok(out)
    }
}

/// Reads at most `cap` bytes of a body from its stream, then cancels the
/// rest: nothing past the cap is buffered. Returns the text and whether it
/// was cut.
async fn read_capped(
    body: Option<web_sys::ReadableStream>,
    cap: usize,
) -> Result<(String, bool), JsValue> {
    let Some(stream) = body else {
        return Ok((String::new(), false));
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut bytes: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let chunk = JsFuture::from(reader.read()).await?;
        if Reflect::get(&chunk, &JsValue::from_str("done"))?.as_bool() == Some(true) {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &JsValue::from_str("value"))?.unchecked_into();
        let room = cap - bytes.len();
        if (value.length() as usize) > room {
            bytes.extend(value.subarray(0, room as u32).to_vec());
            cut = true;
            let _ = reader.cancel();
            break;
        }
        bytes.extend(value.to_vec());
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if cut {
        // A multi-byte character split by the cap decodes as U+FFFD: drop it.
        while text.ends_with('\u{FFFD}') {
            text.pop();
        }
    }
    Ok((text, cut))
}

fn read_body(content_type: &str, text: String, cut: bool) -> ResponseBody {
    if text.is_empty() {
        return ResponseBody::Empty;
    }
    if !cut && content_type.contains("json") {
        if let Ok(value) = serde_json::from_str(&text) {
            return ResponseBody::Json(value);
        }
    }
    ResponseBody::Text(text)
}
