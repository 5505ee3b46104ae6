//! Items in a response: JSON pointers over the raw body (so items stay byte-exact), ids and
//! times.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{fatal, HttpJson};
use crate::poll::FetchError;

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

/// The response body as raw JSON, which items are sliced from byte-exact.
pub(super) fn json_root<'a>(body: &'a [u8], url: &str) -> Result<&'a RawValue, FetchError> {
    let body = std::str::from_utf8(body)
        .map_err(|_| fatal(format!("the response from {url} is not UTF-8 JSON")))?;
    serde_json::from_str(body)
        .map_err(|e| fatal(format!("the response from {url} is not JSON: {e}")))
}

impl HttpJson {
    /// The page's items, oldest first, an id repeated within the page once; and how many
    /// elements the page held.
    pub(super) fn items<'a>(
        &self,
        root: &'a RawValue,
        url: &str,
    ) -> Result<(Vec<Item<'a>>, usize), FetchError> {
        let raws = self.item_list(root, url)?;
        let page_len = raws.len();
        let mut items = raws
            .into_iter()
            .enumerate()
            .map(|(i, raw)| self.item(i, raw, url))
            .collect::<Result<Vec<_>, _>>()?;
        if self.newest_first {
            items.reverse();
        }
        if self.id_pointer.is_some() {
            let mut seen = HashSet::new();
            items.retain(|it| it.id.as_ref().is_none_or(|id| seen.insert(id.clone())));
        }
        Ok((items, page_len))
    }

    /// The elements of the array at `items_pointer` (`null` is an empty page).
    fn item_list<'a>(
        &self,
        root: &'a RawValue,
        url: &str,
    ) -> Result<Vec<&'a RawValue>, FetchError> {
        let list = raw_pointer(root, &self.items_pointer).ok_or_else(|| {
            fatal(format!(
                "no {:?} in the response from {url}",
                self.items_pointer
            ))
        })?;
        if list.get() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(list.get()).map_err(|_| {
            fatal(format!(
                "{:?} in the response from {url} is not an array",
                self.items_pointer
            ))
        })
    }

    /// Element `i` with its id and time read.
    fn item<'a>(&self, i: usize, raw: &'a RawValue, url: &str) -> Result<Item<'a>, FetchError> {
        let id = match &self.id_pointer {
            Some(p) => Some(
                scalar_text(raw, p)
                    .map_err(|e| fatal(format!("item {i} from {url}: id_pointer {p:?}: {e}")))?,
            ),
            None => None,
        };
        let time_ms = match &self.time {
            Some((p, unit)) => Some(
                item_time(raw, p, *unit)
                    .map_err(|e| fatal(format!("item {i} from {url}: time_pointer {p:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Item { raw, id, time_ms })
    }
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

/// Why the value at an item's `id_pointer`, `time_pointer` or `cursor.pointer` is unusable.
#[derive(Debug, thiserror::Error)]
pub(super) enum LeafError {
    #[error("missing")]
    Missing,
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("not a string or number: {0}")]
    NotScalar(Value),
    #[error("not a number: {0}")]
    NotNumber(Value),
    #[error("out of range: {0}")]
    OutOfRange(Value),
    #[error("not RFC 3339: {0:?}")]
    NotRfc3339(String),
    #[error("not an RFC 3339 string: {0}")]
    NotRfc3339String(Value),
}

fn leaf(item: &RawValue, pointer: &str) -> Result<Value, LeafError> {
    let raw = raw_pointer(item, pointer).ok_or(LeafError::Missing)?;
    serde_json::from_str(raw.get()).map_err(LeafError::Json)
}

/// A string or number at `pointer`, as text.
pub(super) fn scalar_text(item: &RawValue, pointer: &str) -> Result<String, LeafError> {
    match leaf(item, pointer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(LeafError::NotScalar(other)),
    }
}

fn item_time(item: &RawValue, pointer: &str, unit: TimeUnit) -> Result<i64, LeafError> {
    let v = leaf(item, pointer)?;
    let number = |scale: f64| -> Result<i64, LeafError> {
        let f = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite())
        .ok_or_else(|| LeafError::NotNumber(v.clone()))?;
        let ms = (f * scale).floor();
        if !(0.0..=1e16).contains(&ms) {
            return Err(LeafError::OutOfRange(v.clone()));
        }
        Ok(ms as i64)
    };
    match unit {
        TimeUnit::Seconds => number(1000.0),
        TimeUnit::Milliseconds => number(1.0),
        TimeUnit::Rfc3339 => match &v {
            Value::String(s) => parse_rfc3339_ms(s).ok_or_else(|| LeafError::NotRfc3339(s.clone())),
            _ => Err(LeafError::NotRfc3339String(v)),
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
            crate::time::rfc3339_ms(&joined)
        }
        _ => crate::time::rfc3339_ms(text),
    }
}
