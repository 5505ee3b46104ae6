//! Items in a response: JSON pointers over the raw body (so items stay byte-exact), ids and
//! times.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TimeUnit {
    Seconds,
    Milliseconds,
    Rfc3339,
}

pub(super) struct Item<'a> {
    pub(super) raw: &'a RawValue,
    pub(super) id: Option<String>,
    pub(super) time_ms: Option<i64>,
}

/// A JSON pointer applied to raw JSON, without re-serialising: `None` when the path does not
/// exist or the body is malformed at it.
pub(super) fn raw_pointer<'a>(root: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut cur = root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = cur.get();
        cur = if text.starts_with('{') {
            let map: HashMap<String, &'a RawValue> = serde_json::from_str(text).ok()?;
            *map.get(&token)?
        } else if text.starts_with('[') {
            if token.len() > 1 && token.starts_with('0') {
                return None;
            }
            let index: usize = token.parse().ok()?;
            let list: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
            *list.get(index)?
        } else {
            return None;
        };
    }
    Some(cur)
}

fn leaf(item: &RawValue, pointer: &str) -> Result<Value, String> {
    let raw = raw_pointer(item, pointer).ok_or("missing")?;
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// A string or number at `pointer`, as text.
pub(super) fn scalar_text(item: &RawValue, pointer: &str) -> Result<String, String> {
    match leaf(item, pointer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("not a string or number: {other}")),
    }
}

pub(super) fn item_time(item: &RawValue, pointer: &str, unit: TimeUnit) -> Result<i64, String> {
    let v = leaf(item, pointer)?;
    let number = |scale: f64| -> Result<i64, String> {
        let f = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("not a number: {v}"))?;
        let ms = (f * scale).floor();
        if !(0.0..=1e16).contains(&ms) {
            return Err(format!("out of range: {v}"));
        }
        Ok(ms as i64)
    };
    match unit {
        TimeUnit::Seconds => number(1000.0),
        TimeUnit::Milliseconds => number(1.0),
        TimeUnit::Rfc3339 => match &v {
            Value::String(s) => parse_rfc3339_ms(s).ok_or_else(|| format!("not RFC 3339: {s:?}")),
            _ => Err(format!("not an RFC 3339 string: {v}")),
        },
    }
}

/// RFC 3339 (`T`/`t` or, as RFC 3339 §5.6 allows, a space between date and time; optional
/// fraction; `Z` or `±hh:mm`) to unix ms, with the providers' offset-aware parser.
pub(super) fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    match text.as_bytes().get(10) {
        Some(b' ') => {
            let joined = format!("{}T{}", text.get(..10)?, text.get(11..)?);
            crate::providers::fields::rfc3339_ms(&joined)
        }
        _ => crate::providers::fields::rfc3339_ms(text),
    }
}
