//! A mark that this browser has opened a client's database, kept where the
//! origin's storage is not: a cookie. The browser evicts an origin's
//! storage as a whole (IndexedDB, Cache Storage, localStorage), but not its
//! cookies, so a database that is missing while its mark is there was
//! lost, not never created. Windows only (`document.cookie`); the cookie is
//! tiny (`tidesync.<name>=1`) and `SameSite=Strict`.

use crate::platform::global;
use wasm_bindgen::JsValue;

fn cookie_name(client: &str) -> String {
    let encoded = js_sys::encode_uri_component(client)
        .as_string()
        .unwrap_or_default();
    format!("tidesync.{encoded}")
}

/// Whether this browser marked the client's database as opened; `None`
/// where there are no cookies to read (workers).
pub fn remembered(client: &str) -> Option<bool> {
    let cookies = global::prop(&global::get("document"), "cookie").as_string()?;
    let name = cookie_name(client);
    Some(
        cookies
            .split(';')
            .any(|pair| pair.trim().split('=').next() == Some(name.as_str())),
    )
}

/// Marks the client's database as opened (for about a year; renewed on
/// every open).
pub fn remember(client: &str) {
    let document = global::get("document");
    if document.is_undefined() {
        return;
    }
    let cookie = format!(
        "{}=1; path=/; max-age=31536000; SameSite=Strict",
        cookie_name(client)
    );
    let _ = js_sys::Reflect::set(&document, &"cookie".into(), &JsValue::from_str(&cookie));
}
