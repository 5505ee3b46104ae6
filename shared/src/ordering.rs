//! Per-entity ordering: a source's `order_by` names the entity an event updates (a player, a
//! wallet, a customer), and its events travel in one FIFO message group per entity; its
//! `version` orders the updates of one entity, so an update older than the last one applied
//! is dropped instead of overwriting a newer state.

use serde_json::Value;

use crate::envelope::{sha256_hex, Envelope};
use crate::providers::fields;
use crate::time;

/// SQS: `MessageGroupId` and `MessageDeduplicationId` are 1–128 characters of alphanumerics
/// and punctuation (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html>).
const MAX_FIFO_ID: usize = 128;

/// A source's `order_by` and `version`, validated JSON pointers into the event's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordering {
    pub order_by: String,
    pub version: Option<String>,
}

/// Why a configured pointer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PointerError {
    #[error("{0:?} is not a JSON pointer (RFC 6901): it must start with '/', e.g. \"/data/object/customer\"")]
    NoLeadingSlash(String),
    #[error("{0:?}: '~' must be followed by 0 or 1 (RFC 6901 escapes)")]
    BadEscape(String),
}

/// A configured JSON pointer, checked before any event needs it.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), PointerError> {
    if !pointer.starts_with('/') {
        return Err(PointerError::NoLeadingSlash(pointer.to_owned()));
    }
    // `~` escapes only `~0` (~) and `~1` (/).
    let mut rest = pointer;
    while let Some(at) = rest.find('~') {
        rest = &rest[at + 1..];
        if !(rest.starts_with('0') || rest.starts_with('1')) {
            return Err(PointerError::BadEscape(pointer.to_owned()));
        }
    }
    Ok(())
}

/// An event whose `version` field holds something that is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: not an integer or an RFC 3339 time")]
pub struct UnreadableVersion {
    pub pointer: String,
}

/// The body as JSON, when it is JSON (a form-encoded or binary body has no entity).
fn body_json(env: &Envelope) -> Option<Value> {
    let bytes = env.body_bytes().ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Ordering {
    /// The entity the event updates: the string or number at `order_by`.
    pub fn entity(&self, body: &Value) -> Option<String> {
        fields::id_at(body, &self.order_by)
    }

    /// The event's version: `Ok(None)` when the source has no `version` or the event has no
    /// value there; `Err` when the value is neither an integer nor an RFC 3339 time.
    pub fn version(&self, body: &Value) -> Result<Option<i64>, UnreadableVersion> {
        let Some(pointer) = &self.version else {
            return Ok(None);
        };
        match body.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_version(v).map(Some).ok_or_else(|| UnreadableVersion {
                pointer: pointer.clone(),
            }),
        }
    }
}

/// An integer (a JSON integer or a string of digits) as it is; an RFC 3339 time as unix
/// microseconds, so two updates a fraction of a millisecond apart still order.
pub(crate) fn parse_version(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse().ok();
            }
            rfc3339_micros(s)
        }
        _ => None,
    }
}

/// [`time::rfc3339_ms`] plus the fraction's 4th–6th digits.
fn rfc3339_micros(text: &str) -> Option<i64> {
    let ms = time::rfc3339_ms(text)?;
    let sub_ms: i64 = match text.get(19..).and_then(|r| r.strip_prefix('.')) {
        Some(frac) => {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            let micro: String = digits.chars().skip(3).take(3).collect();
            format!("{micro:0<3}").parse().unwrap_or(0)
        }
        None => 0,
    };
    ms.checked_mul(1000)?.checked_add(sub_ms)
}

/// What the worker needs to guard an event: its entity and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub entity: String,
    pub version: i64,
}

/// The entity and version of an event of a source with `version`; `Ok(None)` when the event
/// carries no entity or no version (it is dispatched unguarded).
pub fn versioned(
    ordering: &Ordering,
    env: &Envelope,
) -> Result<Option<Versioned>, UnreadableVersion> {
    if ordering.version.is_none() {
        return Ok(None);
    }
    let Some(body) = body_json(env) else {
        return Ok(None);
    };
    let Some(entity) = ordering.entity(&body) else {
        return Ok(None);
    };
    Ok(ordering
        .version(&body)?
        .map(|version| Versioned { entity, version }))
}

/// The FIFO message group of an event. With `order_by`: `source#<entity>`, or the source alone
/// for an event without the field (they keep their order among themselves). Without: the
/// event's own dedupe key, a group of one, so a source that asked for no order is never held
/// back by another event's failure on a FIFO queue. Standard queues ignore it.
pub(crate) fn message_group(ordering: Option<&Ordering>, env: &Envelope) -> String {
    let group = match ordering {
        Some(o) => match body_json(env).and_then(|b| o.entity(&b)) {
            Some(entity) => format!("{}#{entity}", env.source),
            None => env.source.clone(),
        },
        None => env.dedupe_key.clone(),
    };
    fifo_id(group)
}

/// The FIFO deduplication id of an event: its dedupe key, hashed (a key may be longer than
/// SQS takes, or hold characters it refuses).
pub fn deduplication_id(dedupe_key: &str) -> String {
    sha256_hex(dedupe_key.as_bytes())
}

/// `text` when SQS takes it as a FIFO id, else its hash: ids keep their meaning in the
/// console where they can.
pub(crate) fn fifo_id(text: String) -> String {
    let ok =
        !text.is_empty() && text.len() <= MAX_FIFO_ID && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        text
    } else {
        sha256_hex(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ordering(version: bool) -> Ordering {
        Ordering {
            order_by: "/data/wallet".into(),
            version: version.then(|| "/data/version".into()),
        }
    }

    #[test]
    fn pointers_must_be_rfc6901() {
        assert!(check_pointer("/data/object/customer").is_ok());
        assert!(check_pointer("/a~1b/c~0d").is_ok());
        assert!(check_pointer("data/customer").is_err());
        assert!(check_pointer("").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }

    #[test]
    fn entity_is_a_string_or_a_number() {
        let o = ordering(false);
        assert_eq!(
            o.entity(&json!({"data": {"wallet": "w1"}})),
            Some("w1".into())
        );
        assert_eq!(
            o.entity(&json!({"data": {"wallet": 42}})),
            Some("42".into())
        );
        assert_eq!(o.entity(&json!({"data": {"wallet": ""}})), None);
        assert_eq!(o.entity(&json!({"data": {}})), None);
    }

    #[test]
    fn versions_are_integers_or_rfc3339_times_in_microseconds() {
        let o = ordering(true);
        let v = |value: Value| o.version(&json!({"data": {"version": value}}));
        assert_eq!(v(json!(7)), Ok(Some(7)));
        assert_eq!(v(json!("12")), Ok(Some(12)));
        assert_eq!(
            v(json!("2026-01-01T00:00:00.123456Z")),
            Ok(Some(1_767_225_600_123_456))
        );
        // The same instant written with an offset.
        assert_eq!(
            v(json!("2026-01-01T02:00:00.123456+02:00")),
            Ok(Some(1_767_225_600_123_456))
        );
        assert_eq!(
            v(json!("2026-01-01T00:00:00Z")),
            Ok(Some(1_767_225_600_000_000))
        );
        // Microseconds apart still order.
        assert!(
            v(json!("2026-01-01T00:00:00.000002Z")).unwrap()
                > v(json!("2026-01-01T00:00:00.000001Z")).unwrap()
        );
        assert_eq!(v(Value::Null), Ok(None));
        assert!(v(json!(1.5)).is_err());
        assert!(v(json!("yesterday")).is_err());
        assert!(v(json!({"n": 1})).is_err());
        assert_eq!(
            ordering(false).version(&json!({"data": {"version": 1}})),
            Ok(None)
        );
    }

    #[test]
    fn fifo_ids_are_kept_when_sqs_takes_them_and_hashed_otherwise() {
        assert_eq!(fifo_id("shop#cus_1".into()), "shop#cus_1");
        assert_eq!(fifo_id("shop#joão".into()).len(), 64);
        assert_eq!(fifo_id("shop#a b".into()).len(), 64);
        assert_eq!(fifo_id(format!("shop#{}", "x".repeat(200))).len(), 64);
        assert_eq!(deduplication_id("s#evt_1").len(), 64);
    }
}
