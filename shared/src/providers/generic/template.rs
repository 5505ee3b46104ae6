//! The signed message: an ordered list of parts, each a piece of the request (raw body, a
//! header, the timestamp as received, the configured URL…), a literal, or something derived
//! from the body (its SHA-256, its CRC-32, JSON fields, canonicalised form or JSON values).
//! Parsed once at config time from either syntax:
//!
//! - a template string: `"v0:{timestamp}:{body}"` (literal text outside braces, `{{`/`}}` for
//!   a literal brace; the syntax of the former `hmac` provider);
//! - a list: `["literal:v0:", "timestamp", "literal::", "body"]`.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::providers::VerifyError;
use crate::request::Headers;

use super::options::{Location, OptionsError};

/// One piece of the signed message, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Literal(String),
    /// The raw body bytes (in per-item mode: the item's raw bytes).
    Body,
    /// The timestamp exactly as received (header value, list entry or body field text).
    Timestamp,
    Header(String),
    /// The configured public `url` (`InboundRequest` carries no URL: behind API Gateway the
    /// Lambda's view of it differs from what the sender signed).
    Url,
    /// The request method as received.
    Method,
    /// Path of the configured `url`.
    Path,
    /// Query of the configured `url`, without `?`.
    Query,
    /// A query parameter of the request, `""` when absent.
    QueryParam(String),
    /// A field of a form-encoded body, `""` when absent.
    FormField(String),
    /// A scalar at an RFC 6901 pointer into the JSON body, `""` when absent (Mailgun, Adyen).
    JsonField(String),
    /// Lowercase hex SHA-256 of the body (Twilio `bodySHA256`).
    BodySha256Hex,
    /// CRC-32 of the body as an unsigned decimal (PayPal).
    BodyCrc32Dec,
    /// Twilio's form canonicalisation: fields sorted by name, each name followed by its
    /// value; a repeated name's values sorted (`Digits1234Digits5678`).
    TwilioForm,
    /// The values of a flat JSON object sorted by key, joined with the separator (iGaming).
    SortedFlatJsonValues(String),
}

impl Part {
    /// Parts that change when the body changes: a message needs at least one.
    pub(super) fn is_body_derived(&self) -> bool {
        matches!(
            self,
            Part::Body
                | Part::FormField(_)
                | Part::JsonField(_)
                | Part::BodySha256Hex
                | Part::BodyCrc32Dec
                | Part::TwilioForm
                | Part::SortedFlatJsonValues(_)
        )
    }

    pub(super) fn needs_url(&self) -> bool {
        matches!(self, Part::Url | Part::Path | Part::Query)
    }
}

pub(super) const VOCABULARY: &str = "known parts: body, timestamp, header:NAME, url, method, \
path, query, query_param:NAME, form_field:NAME, json_field:/POINTER, sha256_hex(body), \
crc32_dec(body), twilio_form, sorted_flat_json_values:SEP, literal:TEXT";

/// One part from its name (`body`, `header:X-Id`, `literal:v0:`…).
pub(super) fn parse_part(spec: &str) -> Result<Part, OptionsError> {
    let (name, arg) = match spec.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg)),
        None => (spec.trim(), None),
    };
    let named = arg.map(str::trim).filter(|a| !a.is_empty());
    let part = match (name, arg) {
        ("literal", Some(text)) if !text.is_empty() => Part::Literal(text.to_string()),
        ("body", None) => Part::Body,
        ("timestamp", None) => Part::Timestamp,
        ("url", None) => Part::Url,
        ("method", None) => Part::Method,
        ("path", None) => Part::Path,
        ("query", None) => Part::Query,
        ("sha256_hex(body)", None) => Part::BodySha256Hex,
        ("crc32_dec(body)", None) => Part::BodyCrc32Dec,
        ("twilio_form", None) => Part::TwilioForm,
        ("sorted_flat_json_values", None) => Part::SortedFlatJsonValues(",".into()),
        ("sorted_flat_json_values", Some(sep)) => Part::SortedFlatJsonValues(sep.to_string()),
        ("header", Some(_)) if named.is_some() => Part::Header(named.unwrap_or_default().into()),
        ("query_param", Some(_)) if named.is_some() => {
            Part::QueryParam(named.unwrap_or_default().into())
        }
        ("form_field", Some(_)) if named.is_some() => {
            Part::FormField(named.unwrap_or_default().into())
        }
        ("json_field", Some(pointer)) => {
            let pointer = pointer.trim();
            if !pointer.starts_with('/') {
                return Err(OptionsError(format!(
                    "message part {spec:?}: json_field needs a JSON pointer starting with '/'"
                )));
            }
            Part::JsonField(pointer.into())
        }
        _ => {
            return Err(OptionsError(format!(
                "unknown message part {spec:?}; {VOCABULARY}"
            )))
        }
    };
    Ok(part)
}

/// A template string: literal text with `{part}` placeholders.
pub(super) fn parse_template(template: &str) -> Result<Vec<Part>, OptionsError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(at);
        literal.push_str(text);
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            literal.push('}');
            rest = after;
        } else if let Some(open) = tail.strip_prefix('{') {
            let (name, after) = open
                .split_once('}')
                .ok_or_else(|| format!("unclosed '{{' in message {template:?}"))?;
            let part = parse_part(name).map_err(|_| {
                format!("unknown placeholder {{{name}}} in message; {VOCABULARY} (write {{{{ or }}}} for a literal brace)")
            })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = after;
        } else {
            return Err(OptionsError(format!(
                "unmatched '}}' in message {template:?}; write }}}} for a literal brace"
            )));
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// A configured URL, split once for the `path` and `query` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConfiguredUrl {
    pub full: String,
    pub path: String,
    pub query: String,
}

impl ConfiguredUrl {
    pub(super) fn parse(url: &str) -> Result<Self, OptionsError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("url {url:?} must start with https:// or http://"))?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = before_query
            .find('/')
            .and_then(|at| before_query.get(at..))
            .unwrap_or("/");
        Ok(Self {
            full: url.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        })
    }
}

/// What a message is built from: the request, and the bytes the body-derived parts read
/// (the whole body, or one item of a batch). Parsed views of those bytes are made at most
/// once, and only when a part asks.
pub(super) struct Ctx<'r> {
    pub method: &'r str,
    pub headers: &'r Headers,
    pub query: &'r [(String, String)],
    pub raw: &'r [u8],
    json: OnceCell<Option<serde_json::Value>>,
    form: OnceCell<Vec<(String, String)>>,
}

impl<'r> Ctx<'r> {
    pub(super) fn new(
        method: &'r str,
        headers: &'r Headers,
        query: &'r [(String, String)],
        raw: &'r [u8],
    ) -> Self {
        Self {
            method,
            headers,
            query,
            raw,
            json: OnceCell::new(),
            form: OnceCell::new(),
        }
    }

    pub(super) fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.raw).ok())
            .as_ref()
    }

    fn form(&self) -> &[(String, String)] {
        self.form.get_or_init(|| {
            form_urlencoded::parse(self.raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
    }

    pub(super) fn header(&self, name: &str) -> Option<&'r str> {
        crate::providers::fields::header(self.headers, name)
    }

    pub(super) fn query_param(&self, name: &str) -> Option<&'r str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn form_field(&self, name: &str) -> Option<&str> {
        self.form()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn json_at(&self, pointer: &str) -> Option<&serde_json::Value> {
        self.json()?.pointer(pointer)
    }

    /// The text at a location, if present and non-empty.
    pub(super) fn lookup(&self, location: &Location) -> Option<String> {
        match location {
            Location::Header(name) => self.header(name).map(str::to_string),
            Location::Query(name) => self.query_param(name).map(str::to_string),
            Location::FormField(name) => self.form_field(name).map(str::to_string),
            Location::JsonPointer(pointer) => self.json_at(pointer).and_then(json_text),
        }
        .filter(|v| !v.is_empty())
    }
}

/// A JSON scalar as text: strings as they are, numbers and booleans as JSON writes them.
pub(super) fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The message bytes, part by part (never joined into one copy for HMAC).
pub(super) fn render<'a>(
    parts: &'a [Part],
    separator: &'a str,
    ctx: &'a Ctx<'_>,
    timestamp: Option<&'a str>,
    url: Option<&'a ConfiguredUrl>,
) -> Result<Vec<Cow<'a, [u8]>>, VerifyError> {
    let mut out: Vec<Cow<'a, [u8]>> = Vec::with_capacity(parts.len() * 2);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !separator.is_empty() {
            out.push(Cow::Borrowed(separator.as_bytes()));
        }
        let owned = |s: String| Cow::Owned(s.into_bytes());
        let url_part = |pick: fn(&ConfiguredUrl) -> &str| -> Cow<'a, [u8]> {
            // Config refuses URL parts without a `url`; an empty part keeps that invariant
            // from ever becoming a panic.
            url.map_or(Cow::Borrowed(&[][..]), |u| {
                Cow::Borrowed(pick(u).as_bytes())
            })
        };
        out.push(match part {
            Part::Literal(text) => Cow::Borrowed(text.as_bytes()),
            Part::Body => Cow::Borrowed(ctx.raw),
            Part::Timestamp => Cow::Borrowed(timestamp.unwrap_or_default().as_bytes()),
            Part::Header(name) => Cow::Borrowed(
                ctx.header(name)
                    .ok_or_else(|| VerifyError::MissingHeader(name.to_ascii_lowercase()))?
                    .as_bytes(),
            ),
            Part::Url => url_part(|u| &u.full),
            Part::Path => url_part(|u| &u.path),
            Part::Query => url_part(|u| &u.query),
            Part::Method => Cow::Borrowed(ctx.method.as_bytes()),
            Part::QueryParam(name) => {
                Cow::Borrowed(ctx.query_param(name).unwrap_or_default().as_bytes())
            }
            Part::FormField(name) => owned(ctx.form_field(name).unwrap_or_default().to_string()),
            Part::JsonField(pointer) => {
                owned(ctx.json_at(pointer).and_then(json_text).unwrap_or_default())
            }
            Part::BodySha256Hex => {
                use sha2::Digest;
                owned(hex::encode(sha2::Sha256::digest(ctx.raw)))
            }
            Part::BodyCrc32Dec => owned(crate::providers::crypto::crc32(ctx.raw).to_string()),
            Part::TwilioForm => owned(twilio_form(ctx.form())),
            Part::SortedFlatJsonValues(sep) => owned(sorted_flat_json_values(ctx, sep)?),
        });
    }
    Ok(out)
}

/// Twilio's canonical form: names sorted (byte order), each name followed by its value; a
/// repeated name contributes each distinct value, sorted (both official SDKs sort and
/// dedupe them). Source: twilio-python `request_validator.py`, twilio-node `webhooks.ts`.
fn twilio_form(fields: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (k, v) in fields {
        sorted.entry(k).or_default().insert(v);
    }
    let mut out = String::new();
    for (k, values) in sorted {
        for v in values {
            out.push_str(k);
            out.push_str(v);
        }
    }
    out
}

/// The values of a flat JSON object, sorted by key, joined. A body that is not a flat
/// object cannot have been signed this way.
fn sorted_flat_json_values(ctx: &Ctx<'_>, sep: &str) -> Result<String, VerifyError> {
    let malformed = |why: &str| VerifyError::MalformedSignature(format!("signed body {why}"));
    let Some(serde_json::Value::Object(map)) = ctx.json() else {
        return Err(malformed("is not a JSON object"));
    };
    // serde_json's map is ordered by key (no `preserve_order` feature); sort anyway so that
    // turning the feature on elsewhere cannot change what we sign.
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut values = Vec::with_capacity(entries.len());
    for (_, value) in entries {
        values.push(match value {
            serde_json::Value::Null => String::new(),
            other => json_text(other).ok_or_else(|| malformed("is not a flat JSON object"))?,
        });
    }
    Ok(values.join(sep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_literal_braces_are_escaped_by_doubling() {
        assert_eq!(
            parse_template("{{{body}}}"),
            Ok(vec![
                Part::Literal("{".into()),
                Part::Body,
                Part::Literal("}".into())
            ])
        );
    }

    #[test]
    fn template_string_and_list_syntax_parse_to_the_same_parts() {
        let from_string = parse_template("v0:{timestamp}:{body}").unwrap();
        let from_list: Vec<Part> = ["literal:v0:", "timestamp", "literal::", "body"]
            .iter()
            .map(|p| parse_part(p).unwrap())
            .collect();
        assert_eq!(from_string, from_list);
    }

    #[test]
    fn every_part_name_in_the_vocabulary_parses() {
        for spec in [
            "body",
            "timestamp",
            "header:X-Id",
            "url",
            "method",
            "path",
            "query",
            "query_param:bodySHA256",
            "form_field:token",
            "json_field:/signature/token",
            "sha256_hex(body)",
            "crc32_dec(body)",
            "twilio_form",
            "sorted_flat_json_values:,",
            "literal:|",
        ] {
            assert!(parse_part(spec).is_ok(), "{spec}");
        }
        for bad in [
            "payload",
            "header:",
            "json_field:signature",
            "literal:",
            "body:x",
        ] {
            assert!(parse_part(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configured_url_splits_into_path_and_query() {
        let u = ConfiguredUrl::parse("https://example.com:443/hooks/in?x=1&y=2").unwrap();
        assert_eq!(u.path, "/hooks/in");
        assert_eq!(u.query, "x=1&y=2");
        let bare = ConfiguredUrl::parse("https://example.com").unwrap();
        assert_eq!((bare.path.as_str(), bare.query.as_str()), ("/", ""));
        assert!(ConfiguredUrl::parse("example.com/x").is_err());
    }

    #[test]
    fn twilio_form_sorts_names_and_the_values_of_repeated_names() {
        let fields = [
            ("Sid".to_string(), "CA123".to_string()),
            ("SidAccount".into(), "AC123".into()),
            ("Digits".into(), "5678".into()),
            ("Digits".into(), "1234".into()),
        ];
        assert_eq!(
            twilio_form(&fields),
            "Digits1234Digits5678SidCA123SidAccountAC123"
        );
    }

    #[test]
    fn sorted_flat_json_values_join_values_in_key_order_and_refuse_nesting() {
        let h = Headers::new();
        let ctx = Ctx::new("POST", &h, &[], br#"{"b":2,"a":"x","c":true,"d":null}"#);
        assert_eq!(sorted_flat_json_values(&ctx, ",").unwrap(), "x,2,true,");
        let nested = Ctx::new("POST", &h, &[], br#"{"a":{"b":1}}"#);
        assert!(sorted_flat_json_values(&nested, ",").is_err());
        let not_json = Ctx::new("POST", &h, &[], b"a=1");
        assert!(sorted_flat_json_values(&not_json, ",").is_err());
    }
}
