//! Reading the fields of a request, once for every provider: text and ids at JSON pointers,
//! trimmed headers, name/value pairs, `Authorization: Basic` credentials (times are read by
//! [`crate::time`]). Every helper answers `None` for "absent or not usable" and never panics
//! on what a sender writes; empty text counts as absent.

use serde_json::Value;

use super::crypto;
use crate::request::Headers;

// ---------------------------------------------------------------------------------------------
// JSON

/// A non-empty JSON string; anything else (absent, `""`, a number, an object) is `None`.
pub fn text(value: Option<&Value>) -> Option<&str> {
    value?.as_str().filter(|s| !s.is_empty())
}

/// The non-empty string at an RFC 6901 `pointer` (`"/data/id"`).
pub(crate) fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    text(value.pointer(pointer))
}

/// An id as text: a non-empty string as it is, or **any** JSON number as JSON writes it
/// (`123`, `1.5`). Meta, Shopify and Zoom ids.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        other => text(Some(other)).map(str::to_string),
    }
}

/// [`id_text`] of the value at `pointer`.
pub(crate) fn id_at(value: &Value, pointer: &str) -> Option<String> {
    id_text(value.pointer(pointer)?)
}

/// An id as text, stricter than [`id_text`]: a non-empty string, or an **integer** (never a
/// float: `1.5` as an id is a sender bug, not a key). The generic scheme's ids.
pub(crate) fn integer_id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => None,
        other => id_text(other),
    }
}

// ---------------------------------------------------------------------------------------------
// Headers, pairs, bytes

/// A header's value, trimmed; absent or blank is `None`.
pub fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.get(name).map(str::trim).filter(|v| !v.is_empty())
}

/// The first family whose marker header is present (even blank), else `default`: which set of
/// header names a request uses (Shopify webhooks vs events, Standard Webhooks vs Svix).
pub(crate) fn header_family<T: ?Sized>(
    headers: &Headers,
    families: &[(&str, &'static T)],
    default: &'static T,
) -> &'static T {
    families
        .iter()
        .find(|(marker, _)| headers.get(marker).is_some())
        .map_or(default, |(_, family)| family)
}

/// The first value of `name` in decoded name/value pairs (query, form); empty is `None`.
pub fn pair<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Whether `needle` occurs in `haystack` (a cheap pre-check before parsing a body). An empty
/// needle is found everywhere.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// JSON bodies

/// The body as a JSON object, held as a `Value` so JSON pointers reach into it; `None` for
/// anything else (not JSON, or JSON that is not an object).
pub(crate) fn json_object_value(body: &[u8]) -> Option<Value> {
    crypto::json_object(body).map(Value::Object)
}

// ---------------------------------------------------------------------------------------------
// Basic auth

/// Why an `Authorization` value gave no Basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BasicError {
    /// Not `Basic <…>` (another scheme, or no space after it).
    NotBasic,
    /// `Basic` followed by something that is not standard base64.
    NotBase64,
}

/// `Basic <base64(user:pass)>` (scheme name in any case) → the decoded `user:pass` bytes,
/// which may be empty only if the caller passed untrimmed text.
pub(crate) fn basic_credentials(value: &str) -> Result<Vec<u8>, BasicError> {
    let (scheme, encoded) = value.split_once(' ').ok_or(BasicError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::NotBasic);
    }
    crypto::decode_base64(encoded.trim()).ok_or(BasicError::NotBase64)
}

/// Whether a configured Basic-auth secret has the `user:pass` shape: a `:`, and with
/// `user_required` a non-empty user before it (RFC 7617: a user id cannot contain `:`).
pub(crate) fn is_user_pass(raw: &[u8], user_required: bool) -> bool {
    raw.iter()
        .position(|b| *b == b':')
        .is_some_and(|colon| colon > 0 || !user_required)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_a_non_empty_string_only() {
        let v = json!({"s": "é ✓", "e": "", "n": 1, "o": {"a/b": "x", "m~n": "y"}, "l": ["z"]});
        assert_eq!(str_at(&v, "/s"), Some("é ✓"));
        assert_eq!(str_at(&v, "/e"), None);
        assert_eq!(str_at(&v, "/n"), None);
        assert_eq!(str_at(&v, "/o"), None);
        assert_eq!(str_at(&v, "/missing"), None);
        assert_eq!(str_at(&v, "/o/a~1b"), Some("x"));
        assert_eq!(str_at(&v, "/o/m~0n"), Some("y"));
        assert_eq!(str_at(&v, "/l/0"), Some("z"));
        assert_eq!(str_at(&v, "s"), None, "a pointer starts with '/'");
        assert_eq!(text(v.get("s")), Some("é ✓"));
        assert_eq!(text(v.get("e")), None);
        assert_eq!(text(None), None);
    }

    #[test]
    fn ids_are_strings_or_numbers_and_integer_ids_refuse_floats() {
        let v = json!({
            "s": "abc", "e": "", "i": 42, "neg": -7, "big": 18_446_744_073_709_551_615u64,
            "f": 1.5, "b": true, "n": null, "o": {}
        });
        let id = |p: &str| id_at(&v, p);
        assert_eq!(id("/s").as_deref(), Some("abc"));
        assert_eq!(id("/i").as_deref(), Some("42"));
        assert_eq!(id("/neg").as_deref(), Some("-7"));
        assert_eq!(id("/big").as_deref(), Some("18446744073709551615"));
        assert_eq!(id("/f").as_deref(), Some("1.5"));
        for absent in ["/e", "/b", "/n", "/o", "/missing"] {
            assert_eq!(id(absent), None, "{absent}");
        }
        let int = |p: &str| integer_id_text(v.pointer(p).unwrap());
        assert_eq!(int("/s").as_deref(), Some("abc"));
        assert_eq!(int("/i").as_deref(), Some("42"));
        assert_eq!(int("/neg").as_deref(), Some("-7"));
        assert_eq!(int("/big").as_deref(), Some("18446744073709551615"));
        for refused in ["/f", "/e", "/b", "/n", "/o"] {
            assert_eq!(int(refused), None, "{refused}");
        }
    }

    #[test]
    fn headers_are_trimmed_and_blank_is_absent() {
        let h = Headers::from_iter([("X-A", "  v  "), ("X-Blank", " \t"), ("X-U", "ü")]);
        assert_eq!(header(&h, "x-a"), Some("v"));
        assert_eq!(header(&h, "X-BLANK"), None);
        assert_eq!(header(&h, "x-u"), Some("ü"));
        assert_eq!(header(&h, "x-missing"), None);
    }

    #[test]
    fn header_family_is_the_first_whose_marker_is_present_even_blank() {
        static A: u8 = b'a';
        static B: u8 = b'b';
        static D: u8 = b'd';
        let families: &[(&str, &'static u8)] = &[("x-a", &A), ("x-b", &B)];
        let pick = |h: &[(&str, &str)]| -> u8 {
            *header_family(&Headers::from_iter(h.to_vec()), families, &D)
        };
        assert_eq!(pick(&[]), b'd');
        assert_eq!(pick(&[("X-B", "1")]), b'b');
        assert_eq!(pick(&[("X-B", "1"), ("X-A", "1")]), b'a');
        assert_eq!(pick(&[("X-A", "")]), b'a');
    }

    #[test]
    fn pairs_and_byte_search() {
        let pairs = vec![
            ("a".to_string(), String::new()),
            ("a".to_string(), "second".to_string()),
            ("b".to_string(), "ß".to_string()),
        ];
        assert_eq!(
            pair(&pairs, "a"),
            None,
            "the first value counts, and it is empty"
        );
        assert_eq!(pair(&pairs, "b"), Some("ß"));
        assert_eq!(pair(&pairs, "c"), None);
        assert!(contains(
            b"{\"type\":\"url_verification\"}",
            b"url_verification"
        ));
        assert!(!contains(b"url_verificatio", b"url_verification"));
        assert!(contains(b"", b""));
        assert!(!contains(b"", b"x"));
    }

    #[test]
    fn basic_credentials_decode_only_the_basic_scheme() {
        assert_eq!(basic_credentials("Basic dTpw"), Ok(b"u:p".to_vec()));
        assert_eq!(basic_credentials("bAsIc   dTpw  "), Ok(b"u:p".to_vec()));
        assert_eq!(
            basic_credentials("Basic dTpw=="),
            Err(BasicError::NotBase64)
        );
        assert_eq!(basic_credentials("Basic dTo"), Ok(b"u:".to_vec()));
        assert_eq!(
            basic_credentials("Basic w6k6cA=="),
            Ok("é:p".as_bytes().to_vec())
        );
        assert_eq!(basic_credentials("Basic "), Ok(Vec::new()));
        assert_eq!(basic_credentials("Basic !!"), Err(BasicError::NotBase64));
        assert_eq!(basic_credentials("Bearer dTpw"), Err(BasicError::NotBasic));
        assert_eq!(basic_credentials("Basic"), Err(BasicError::NotBasic));
        assert_eq!(basic_credentials(""), Err(BasicError::NotBasic));
        assert!(is_user_pass(b"u:p", true));
        assert!(is_user_pass(b":p", false));
        assert!(!is_user_pass(b":p", true));
        assert!(!is_user_pass(b"up", false));
        assert!(!is_user_pass(b"", false));
    }
}
