//! The browser [`Clock`]: `Date.now()`, `Math.random()`,
//! `crypto.randomUUID()`, gloo-timers for sleeping, and a resolved promise
//! for yielding one microtask.

use crate::engine::ports::Clock;
use crate::engine::time::Millis;
use crate::platform::global;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

#[derive(Default, Clone)]
pub struct BrowserClock;

impl Clock for BrowserClock {
    fn now(&self) -> Millis {
        js_sys::Date::now()
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }

    fn unique_id(&self) -> String {
        let crypto = global::get("crypto");
        if let Ok(id) = global::call(&crypto, "randomUUID", &[]) {
            if let Some(id) = id.as_string() {
                return id;
            }
        }
        // Insecure contexts lack randomUUID: build a v4 UUID from Math.random.
        let mut hex = String::with_capacity(36);
        for i in 0..32 {
            if matches!(i, 8 | 12 | 16 | 20) {
                hex.push('-');
            }
            let nibble = match i {
                12 => 4,
                16 => 8 + (js_sys::Math::random() * 4.0) as u32,
                _ => (js_sys::Math::random() * 16.0) as u32,
            };
            hex.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
        hex
    }

    async fn sleep(&self, ms: Millis) {
        gloo_timers::future::TimeoutFuture::new(ms.clamp(0.0, u32::MAX as f64) as u32).await;
    }

    async fn yield_now(&self) {
        let _ = JsFuture::from(js_sys::Promise::resolve(&JsValue::NULL)).await;
    }
}
