//! The global scope (`window`, `self` in a worker), read through
//! `js_sys::global()` and reflection so no `window`-only API is reached.

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};

pub fn global() -> JsValue {
    js_sys::global().into()
}

/// `globalThis[name]`, or `undefined`.
pub fn get(name: &str) -> JsValue {
    Reflect::get(&global(), &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// `object[name]`, or `undefined`.
pub fn prop(object: &JsValue, name: &str) -> JsValue {
    if object.is_undefined() || object.is_null() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// `navigator.onLine`; `true` where the scope cannot tell.
pub fn navigator_online() -> bool {
    prop(&get("navigator"), "onLine").as_bool().unwrap_or(true)
}

/// Calls `object.method(...args)`.
pub fn call(object: &JsValue, method: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let function: Function = prop(object, method)
        .dyn_into()
        .map_err(|_| JsValue::from_str(&format!("{method} is not a function")))?;
    let array = js_sys::Array::new();
    for arg in args {
        array.push(arg);
    }
    function.apply(object, &array)
}

/// `new globalThis[class](...args)`.
pub fn construct(class: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let class: Function = get(class)
        .dyn_into()
        .map_err(|_| JsValue::from_str(&format!("this scope has no {class}")))?;
    Reflect::construct(&class, &args.iter().collect())
}

/// Whether the code runs in a window (as opposed to a worker).
pub fn is_window() -> bool {
    !get("document").is_undefined()
}
