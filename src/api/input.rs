//! Reading what JavaScript hands the SDK, whatever it is. Every public
//! method converts its arguments here, so one module holds the rules:
//!
//! - every JS operation on an app's value goes through a `catch` import: a
//!   getter or a Proxy trap that throws becomes an error naming the field.
//!   An exception that crossed wasm frames uncaught would skip Rust's
//!   cleanup (a `RefCell` left borrowed, the futures queue left "running"),
//!   which is as bad as a trap;
//! - JSON (`data`, records, `where`, what `onConflict` returns) is read by
//!   [`json`], which refuses what JSON cannot hold instead of changing it:
//!   `NaN`, `Infinity`, `BigInt`, symbols, functions, cycles, holes in
//!   arrays, `Date`s and other class instances, text with lone surrogates,
//!   a `__proto__` key (it would become the prototype when the value is
//!   handed back), and nesting deeper than [`MAX_DEPTH`];
//! - each error says which field (`data.items[3].price`) and what to do.
//!
//! Errors are built by the caller's `fn(String) -> ApiError`, so each
//! method keeps its own stable `code` (`invalid-options`, `invalid-task`,
//! `invalid-record`, `invalid-query`, `invalid-event`).

use crate::api::error::ApiError;
use js_sys::{Array, JsString};
use serde_json::{Map, Number, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// How deep `data` or a record may nest. serde_json reads at most 128
/// levels back from IndexedDB and the server; 64 leaves room for the
/// envelope around a record.
pub const MAX_DEPTH: usize = 64;

/// Builds the caller's error (and so its `code`) from a message.
pub type Invalid = fn(String) -> ApiError;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Object, js_name = keys, catch)]
    fn object_keys(value: &JsValue) -> Result<Array, JsValue>;
    #[wasm_bindgen(js_namespace = Array, js_name = isArray, catch)]
    fn array_is_array(value: &JsValue) -> Result<bool, JsValue>;
    #[wasm_bindgen(js_namespace = Object, js_name = getPrototypeOf, catch)]
    fn prototype_of(value: &JsValue) -> Result<JsValue, JsValue>;
    type Blob;
    type FormData;
    #[wasm_bindgen(js_name = URLSearchParams)]
    type UrlSearchParams;
    /// `String.prototype.isWellFormed` (Chromium 111, Firefox 119, Safari 16.4).
    #[wasm_bindgen(js_name = String)]
    type Text;
    #[wasm_bindgen(method, js_name = isWellFormed, catch)]
    fn is_well_formed(this: &Text) -> Result<bool, JsValue>;
}

/// What a thrown value says: its `message`, or the value as text.
pub fn thrown(value: &JsValue) -> String {
    let message = js_sys::Reflect::get(value, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string());
    let text = message
        .or_else(|| value.as_string())
        .unwrap_or_else(|| "a non-Error value".into());
    // A 10 MB message would be copied into every error that quotes it.
    shorten(&text, 200)
}

/// At most `max` characters of `text`, marked when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `object[key]`; a throwing getter or Proxy trap is an error naming `field`.
pub fn get(
    object: &JsValue,
    key: &str,
    field: &str,
    invalid: Invalid,
) -> Result<JsValue, ApiError> {
    js_sys::Reflect::get(object, &JsValue::from_str(key))
        .map_err(|e| invalid(format!("reading `{field}` threw: {}", thrown(&e))))
}

/// The object's own enumerable string keys (`Object.keys`).
pub fn keys(object: &JsValue, field: &str, invalid: Invalid) -> Result<Vec<String>, ApiError> {
    let keys = object_keys(object).map_err(|e| {
        invalid(format!(
            "listing the fields of `{field}` threw: {}",
            thrown(&e)
        ))
    })?;
    Ok(keys.iter().filter_map(|k| k.as_string()).collect())
}

/// `Array.isArray`, which throws on a revoked Proxy.
pub fn is_array(value: &JsValue, field: &str, invalid: Invalid) -> Result<bool, ApiError> {
    array_is_array(value)
        .map_err(|e| invalid(format!("inspecting `{field}` threw: {}", thrown(&e))))
}

/// An object that is not an array or a function (a plain options bag).
pub fn object(
    value: &JsValue,
    field: &str,
    example: &str,
    invalid: Invalid,
) -> Result<(), ApiError> {
    if value.is_object() && !value.is_function() && !is_array(value, field, invalid)? {
        return Ok(());
    }
    Err(invalid(format!(
        "`{field}` must be an object, like {example}; got {}",
        kind(value)
    )))
}

/// A string, refused when it holds a lone surrogate (it would be stored
/// with U+FFFD in its place) or is longer than `max` bytes of UTF-8.
pub fn string(
    value: &JsValue,
    field: &str,
    max: usize,
    invalid: Invalid,
) -> Result<String, ApiError> {
    let Some(js) = value.dyn_ref::<JsString>() else {
        return Err(invalid(format!(
            "`{field}` must be a string; got {}",
            kind(value)
        )));
    };
    // UTF-8 takes at least a byte per UTF-16 unit: a string longer in units
    // is refused before its bytes are copied into wasm memory.
    if js.length() as usize > max {
        return Err(invalid(format!(
            "`{field}` is {} characters long; at most {max} bytes are accepted",
            js.length()
        )));
    }
    well_formed(js, field, invalid)?;
    let text = value.as_string().unwrap_or_default();
    if text.len() > max {
        return Err(invalid(format!(
            "`{field}` is {} bytes long; at most {max} are accepted",
            text.len()
        )));
    }
    Ok(text)
}

fn well_formed(js: &JsString, field: &str, invalid: Invalid) -> Result<(), ApiError> {
    // Where the method is missing (older browsers) the text passes as it is.
    if js.unchecked_ref::<Text>().is_well_formed() == Ok(false) {
        return Err(invalid(format!(
            "`{field}` is not well-formed text (it holds a lone UTF-16 surrogate, which would be stored changed); fix the string, e.g. with str.toWellFormed()"
        )));
    }
    Ok(())
}

/// A finite number in `min..=max`.
pub fn number(
    value: &JsValue,
    field: &str,
    min: f64,
    max: f64,
    invalid: Invalid,
) -> Result<f64, ApiError> {
    match value.as_f64() {
        Some(n) if n.is_finite() && n >= min && n <= max => Ok(n),
        _ => Err(invalid(format!(
            "`{field}` must be a number between {min} and {max}; got {}",
            kind(value)
        ))),
    }
}

/// A function (checked with `typeof`, which no Proxy trap can intercept).
pub fn function(
    value: &JsValue,
    field: &str,
    shape: &str,
    invalid: Invalid,
) -> Result<js_sys::Function, ApiError> {
    if value.is_function() {
        return Ok(value.clone().unchecked_into());
    }
    Err(invalid(format!(
        "`{field}` must be a function {shape}; got {}",
        kind(value)
    )))
}

/// `None` for `undefined` and `null`.
pub fn present(value: JsValue) -> Option<JsValue> {
    (!value.is_undefined() && !value.is_null()).then_some(value)
}

/// A short description of a value for an error: its type, and the value
/// itself when it is short and printable.
pub fn kind(value: &JsValue) -> String {
    if value.is_undefined() {
        return "undefined".into();
    }
    if value.is_null() {
        return "null".into();
    }
    if let Some(b) = value.as_bool() {
        return format!("{b}");
    }
    if let Some(n) = value.as_f64() {
        return match n {
            n if n.is_nan() => "NaN".into(),
            n if n.is_infinite() && n > 0.0 => "Infinity".into(),
            n if n.is_infinite() => "-Infinity".into(),
            n => format!("the number {n}"),
        };
    }
    if let Some(s) = value.as_string() {
        return format!("the string {:?}", shorten(&s, 40));
    }
    if value.is_symbol() {
        return "a symbol".into();
    }
    if value.is_bigint() {
        return "a BigInt".into();
    }
    if value.is_function() {
        return "a function".into();
    }
    if array_is_array(value) == Ok(true) {
        return "an array".into();
    }
    match class_name(value) {
        Some(name) if name != "Object" => format!("a {name}"),
        _ => "an object".into(),
    }
}

/// The name of an object's constructor, read without running app code
/// that could throw (a Proxy trap or getter that throws gives `None`).
fn class_name(value: &JsValue) -> Option<String> {
    let prototype = prototype_of(value).ok()?;
    if prototype.is_null() {
        return None;
    }
    let constructor = js_sys::Reflect::get(&prototype, &JsValue::from_str("constructor")).ok()?;
    js_sys::Reflect::get(&constructor, &JsValue::from_str("name"))
        .ok()?
        .as_string()
}

/// Reads a JSON value: see the module comment for what is refused.
/// `field` names the value in errors (`data`, `record`).
pub fn json(value: &JsValue, field: &str, invalid: Invalid) -> Result<Value, ApiError> {
    let mut walk = Walk {
        path: vec![Step::Key(field.to_owned())],
        ancestors: Vec::new(),
        object_prototype: prototype_of(&js_sys::Object::new()).unwrap_or(JsValue::NULL),
        invalid,
    };
    walk.value(value)
}

/// Reads a JSON object (a record, `where`): a plain object at the top.
pub fn json_object(
    value: &JsValue,
    field: &str,
    invalid: Invalid,
) -> Result<Map<String, Value>, ApiError> {
    match json(value, field, invalid)? {
        Value::Object(map) => Ok(map),
        _ => Err(invalid(format!(
            "`{field}` must be a plain object, like {{ name: \"Ada\" }}; got {}",
            kind(value)
        ))),
    }
}

enum Step {
    Key(String),
    Index(u32),
}

struct Walk {
    path: Vec<Step>,
    /// The objects and arrays being read, to find a cycle.
    ancestors: Vec<JsValue>,
    object_prototype: JsValue,
    invalid: Invalid,
}

/// `data.items[3]["content-type"]`.
fn path_text(steps: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Key(key) if i == 0 => out.push_str(key),
            Step::Key(key)
                if !key.is_empty()
                    && !key.starts_with(|c: char| c.is_ascii_digit())
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') =>
            {
                out.push('.');
                out.push_str(key);
            }
            Step::Key(key) => out.push_str(&format!("[{:?}]", shorten(key, 40))),
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

impl Walk {
    fn path(&self) -> String {
        path_text(&self.path)
    }

    fn fail(&self, why: &str) -> ApiError {
        (self.invalid)(format!("`{}` {why}", self.path()))
    }

    fn value(&mut self, value: &JsValue) -> Result<Value, ApiError> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        if let Some(b) = value.as_bool() {
            return Ok(Value::Bool(b));
        }
        if let Some(n) = value.as_f64() {
            return self.number(n);
        }
        if let Some(js) = value.dyn_ref::<JsString>() {
            if js.unchecked_ref::<Text>().is_well_formed() == Ok(false) {
                return Err(self.fail("is not well-formed text (a lone UTF-16 surrogate would be stored as U+FFFD); fix it, e.g. with str.toWellFormed()"));
            }
            return Ok(Value::String(value.as_string().unwrap_or_default()));
        }
        if value.is_undefined() {
            return Err(
                self.fail("is undefined, which JSON cannot hold; use null or leave the field out")
            );
        }
        if value.is_bigint() {
            return Err(self
                .fail("is a BigInt, which JSON cannot hold; convert it to a string or a number"));
        }
        if value.is_symbol() {
            return Err(self.fail("is a symbol, which JSON cannot hold"));
        }
        if value.is_function() {
            return Err(self.fail("is a function, which JSON cannot hold"));
        }
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(self.fail(&format!(
                "is nested more than {MAX_DEPTH} levels deep; flatten the value"
            )));
        }
        if let Some(at) = self.ancestors.iter().position(|a| a == value) {
            // `ancestors[i]` is the value at the first `i + 1` steps of the path.
            let outer = path_text(&self.path[..(at + 1).min(self.path.len())]);
            return Err(self.fail(&format!(
                "refers back to `{outer}` (a cyclic value); JSON cannot hold cycles"
            )));
        }
        let array = array_is_array(value)
            .map_err(|e| self.fail(&format!("could not be inspected: {}", thrown(&e))))?;
        if array {
            self.ancestors.push(value.clone());
            let result = self.array(value);
            self.ancestors.pop();
            return result;
        }
        let prototype = prototype_of(value)
            .map_err(|e| self.fail(&format!("could not be inspected: {}", thrown(&e))))?;
        if !prototype.is_null() && prototype != self.object_prototype {
            let what = kind(value);
            let hint = if what == "a Date" {
                "; pass date.toISOString() or date.getTime()"
            } else {
                "; pass a plain object (or convert it, e.g. Object.fromEntries(map))"
            };
            return Err(self.fail(&format!("is {what}, not plain JSON data{hint}")));
        }
        self.ancestors.push(value.clone());
        let result = self.object(value);
        self.ancestors.pop();
        result
    }

    fn number(&self, n: f64) -> Result<Value, ApiError> {
        if !n.is_finite() {
            // As JavaScript spells them (Rust prints `inf`).
            let spelled = match n {
                n if n.is_nan() => "NaN",
                n if n > 0.0 => "Infinity",
                _ => "-Infinity",
            };
            return Err(self.fail(&format!(
                "is {spelled}, which JSON cannot hold; use null or a finite number"
            )));
        }
        // Integers stay integers (as serde_json reads them back).
        const SAFE: f64 = 9_007_199_254_740_991.0;
        if n.fract() == 0.0 && n.abs() <= SAFE {
            return Ok(Value::Number(Number::from(n as i64)));
        }
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    /// The object's own keys; paths are formatted only for an error.
    fn keys(&self, value: &JsValue) -> Result<Vec<String>, ApiError> {
        let keys = object_keys(value).map_err(|e| {
            self.fail(&format!(
                "threw when its fields were listed: {}",
                thrown(&e)
            ))
        })?;
        Ok(keys.iter().filter_map(|k| k.as_string()).collect())
    }

    fn array(&mut self, value: &JsValue) -> Result<Value, ApiError> {
        let length = js_sys::Reflect::get(value, &JsValue::from_str("length"))
            .map_err(|e| self.fail(&format!("threw when read: {}", thrown(&e))))?
            .as_f64()
            .unwrap_or(0.0);
        let present = self.keys(value)?;
        // Only indexes are keys of a plain array; fewer keys than `length`
        // means holes, which JSON.stringify would turn into null.
        if (present.len() as f64) < length {
            return Err(self.fail("is a sparse array (it has holes); fill them, e.g. with null"));
        }
        let length = length as u32;
        let mut out = Vec::with_capacity(length.min(1 << 16) as usize);
        for index in 0..length {
            self.path.push(Step::Index(index));
            let item = js_sys::Reflect::get_u32(value, index)
                .map_err(|e| self.fail(&format!("threw when read: {}", thrown(&e))));
            let item = item.and_then(|item| self.value(&item));
            self.path.pop();
            out.push(item?);
        }
        Ok(Value::Array(out))
    }

    fn object(&mut self, value: &JsValue) -> Result<Value, ApiError> {
        let mut out = Map::new();
        for key in self.keys(value)? {
            self.path.push(Step::Key(key.clone()));
            let result = self.field(value, &key);
            self.path.pop();
            if let Some(item) = result? {
                out.insert(key, item);
            }
        }
        Ok(Value::Object(out))
    }

    /// The current key of `object`; `None` for an `undefined` field,
    /// which JSON leaves out.
    fn field(&mut self, object: &JsValue, key: &str) -> Result<Option<Value>, ApiError> {
        if key == "__proto__" {
            return Err(self.fail("is not accepted as a field name: handed back to JavaScript it would replace the object's prototype; rename the field"));
        }
        let item = js_sys::Reflect::get(object, &JsValue::from_str(key))
            .map_err(|e| self.fail(&format!("threw when read: {}", thrown(&e))))?;
        if item.is_undefined() {
            return Ok(None);
        }
        self.value(&item).map(Some)
    }
}

/// Whether `body` is one fetch encodes itself (`Blob`, `File`, `FormData`,
/// `URLSearchParams`), tested with `instanceof`, not a spoofable
/// `constructor.name`.
pub fn is_form_body(body: &JsValue) -> bool {
    body.is_instance_of::<Blob>()
        || body.is_instance_of::<FormData>()
        || body.is_instance_of::<UrlSearchParams>()
}

/// The bytes of an `ArrayBuffer` or an `ArrayBufferView` (typed array,
/// `DataView`), copied; `None` for anything else, or for a view whose
/// buffer is detached or whose `byteOffset`/`byteLength` were redefined out
/// of range (`new Uint8Array` is built through `Reflect.construct`, which
/// catches the `RangeError`).
pub fn bytes(value: &JsValue) -> Option<Vec<u8>> {
    let view = if value.is_instance_of::<js_sys::ArrayBuffer>() {
        crate::platform::global::construct("Uint8Array", std::slice::from_ref(value)).ok()?
    } else if js_sys::ArrayBuffer::is_view(value) {
        let read = |key: &str| js_sys::Reflect::get(value, &JsValue::from_str(key)).ok();
        let args = [read("buffer")?, read("byteOffset")?, read("byteLength")?];
        crate::platform::global::construct("Uint8Array", &args).ok()?
    } else {
        return None;
    };
    Some(view.dyn_into::<js_sys::Uint8Array>().ok()?.to_vec())
}

/// A copy of an object's own fields onto an object without a prototype,
/// so a `__proto__` key stays a field (and is refused by the reader)
/// instead of replacing the copy's prototype.
pub fn copy_fields(object: &JsValue, field: &str, invalid: Invalid) -> Result<JsValue, ApiError> {
    let copy = js_sys::Object::create(JsValue::NULL.unchecked_ref::<js_sys::Object>());
    for key in keys(object, field, invalid)? {
        let value = get(object, &key, &format!("{field}.{key}"), invalid)?;
        let _ = js_sys::Reflect::set(&copy, &JsValue::from_str(&key), &value);
    }
    Ok(copy.into())
}

/// JSON handed back to JavaScript (records, task bodies): like the store's
/// conversion, except that `null` stays `null` (serde-wasm-bindgen writes
/// unit as `undefined`, which turned `{ a: null }` into `{ a: undefined }`
/// on the way out).
pub fn to_js_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(
            &serde_wasm_bindgen::Serializer::new()
                .serialize_maps_as_objects(true)
                .serialize_missing_as_null(true),
        )
        .map_err(|e| {
            ApiError::InvalidRecord(format!("a value could not be handed back: {e}")).into()
        })
}
