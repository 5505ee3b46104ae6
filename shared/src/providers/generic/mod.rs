//! `generic` (alias `hmac`): a declarative verification scheme for senders without a
//! dedicated provider. One options table says which scheme (HMAC, static token, Basic auth,
//! Ed25519, ECDSA P-256), where the signature is (header, query, form field, JSON body
//! field) and in what shape (prefix, `k=v` lists, versioned lists, encoding), which bytes are
//! signed (an ordered list of message parts), where the timestamp is and how fresh it must
//! be, how to pull ids, types, money and batches out of the body, and which endpoint checks
//! to answer. Most named providers are presets of it: `shared/testdata/presets.toml`, proved
//! against every vector in `presets.rs`. Reference: `docs/generic-scheme.md`.
//!
//! ```toml
//! [sources.options]
//! signature = { header = "X-Slack-Signature" }
//! prefix = "v0="
//! timestamp = { header = "X-Slack-Request-Timestamp" }
//! message = "v0:{timestamp}:{body}"
//! ```

mod options;
#[cfg(test)]
mod presets;
mod template;
#[cfg(test)]
mod tests;

/// How the provider suite (`suite.rs`) drives the generic scheme: the former `hmac`
/// provider's timestamped set-up, `X-Signature: <hex>` HMAC-SHA256 of `"{timestamp}.{body}"`
/// with `X-Timestamp` in unix seconds. Every other set-up is specified in `tests.rs`.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"id":"evt_1","type":"test.event","created":1767225600}"#;
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key
            .expect("generic hmac is keyed")
            .hmac(HmacAlgorithm::Sha256, &[ts.as_bytes(), b".", body]);
        let headers = Headers::from_iter([("X-Timestamp", ts), ("X-Signature", hex::encode(tag))]);
        Signed::post(headers, *body)
    }
    Case {
        options: || {
            serde_json::json!({
                "header": "X-Signature",
                "timestamp_header": "X-Timestamp",
                "message": "{timestamp}.{body}",
            })
        },
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            vec![
                s.with_header("X-Signature", "zz"),
                s.with_header("X-Signature", "é"),
                s.with_header("X-Timestamp", "yesterday"),
            ]
        },
        ..Case::new(
            "generic",
            "hmac_sha256",
            || TestKey::pair("Gk3pVz8qWm1xRt6nHd9s", "Lc2vBn7yQe4wJx5kTm8r"),
            sign,
            Carrier::Headers {
                signature: "x-signature",
                needed: &["x-timestamp"],
            },
        )
    }
}

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::crypto::{
    self, Ed25519Key, HmacAlgorithm, KeyError, Keyring, P256Key, SignatureEncoding, TimeUnit,
    Tolerance,
};
use super::{
    canonical, fields, money, ExtractError, ExtractFailure, Extracted, HandshakeReply, Provider,
    ProviderConfigError, SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

use options::{
    either, AmountUnit, FormatSpec, GenericOptions, HandshakeSpec, KeyEncoding, Location,
    MessageSpec, OptionsError, SchemeKind, TsUnit, When,
};
use template::{ConfiguredUrl, Ctx, Part};

const GENERIC: &str = "generic";
/// The former name; existing configs keep working unchanged.
const HMAC_ALIAS: &str = "hmac";

/// The scheme and its keys, decoded once at config time.
#[derive(Debug)]
enum Scheme {
    Hmac {
        algorithm: HmacAlgorithm,
        keys: Keyring,
    },
    TokenEquals {
        keys: Keyring,
    },
    BasicAuth {
        keys: Keyring,
    },
    /// Keys are 32 raw public-key bytes.
    Ed25519 {
        keys: Keyring,
    },
    /// Keys are the configured text (base64 DER SPKI, PEM or hex SEC1), validated at config.
    EcdsaP256 {
        keys: Keyring,
    },
}

impl Scheme {
    fn keys(&self) -> &Keyring {
        match self {
            Scheme::Hmac { keys, .. }
            | Scheme::TokenEquals { keys }
            | Scheme::BasicAuth { keys }
            | Scheme::Ed25519 { keys }
            | Scheme::EcdsaP256 { keys } => keys,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Scheme::Hmac { algorithm, .. } => algorithm.scheme(),
            Scheme::TokenEquals { .. } => "token_equals",
            Scheme::BasicAuth { .. } => "basic_auth",
            Scheme::Ed25519 { .. } => "ed25519",
            Scheme::EcdsaP256 { .. } => "ecdsa_p256_sha256",
        }
    }

    /// A checker for one key, built once per key rather than once per signature.
    fn checker<'k>(&self, key: &'k [u8]) -> Checker<'k> {
        match self {
            Scheme::Hmac { algorithm, .. } => Checker::Hmac(*algorithm, key),
            Scheme::Ed25519 { .. } => Checker::Ed25519(Ed25519Key::from_bytes(key).ok()),
            Scheme::EcdsaP256 { .. } => Checker::P256(
                std::str::from_utf8(key)
                    .ok()
                    .and_then(|text| P256Key::parse(text).ok()),
            ),
            Scheme::TokenEquals { .. } | Scheme::BasicAuth { .. } => Checker::None,
        }
    }
}

enum Checker<'k> {
    Hmac(HmacAlgorithm, &'k [u8]),
    Ed25519(Option<Ed25519Key>),
    P256(Option<P256Key>),
    None,
}

impl Checker<'_> {
    /// An HMAC is computed once for all candidates; a public-key check runs per candidate,
    /// which [`crypto::bounded_candidates`] keeps to a few.
    fn check_any(&self, parts: &[&[u8]], signatures: &[Vec<u8>]) -> bool {
        match self {
            Checker::Hmac(algorithm, key) => algorithm.matches_any(key, parts, signatures),
            Checker::Ed25519(key) => key
                .as_ref()
                .is_some_and(|k| signatures.iter().any(|sig| k.verify(parts, sig))),
            Checker::P256(key) => key
                .as_ref()
                .is_some_and(|k| signatures.iter().any(|sig| k.verify(parts, sig))),
            Checker::None => false,
        }
    }
}

/// The carrier value's shape (after the prefix).
#[derive(Debug)]
enum Format {
    Plain,
    KvList {
        item_separator: String,
        kv_separator: String,
        timestamp_key: Option<String>,
        signature_key: String,
    },
    VersionedList {
        versions: Vec<String>,
        version_separator: String,
    },
}

impl Format {
    /// The candidate signatures (any may match) and the listed timestamp, if the list has one.
    fn split<'v>(
        &self,
        value: &'v str,
        carrier: &str,
    ) -> Result<(Vec<&'v str>, Option<&'v str>), VerifyError> {
        let malformed = |why: String| VerifyError::MalformedSignature(format!("{carrier} {why}"));
        match self {
            Format::Plain => Ok((vec![value.trim()], None)),
            Format::KvList {
                item_separator,
                kv_separator,
                timestamp_key,
                signature_key,
            } => {
                let mut signatures = Vec::new();
                let mut timestamp = None;
                for item in value.split(item_separator.as_str()) {
                    let Some((key, val)) = item.split_once(kv_separator.as_str()) else {
                        continue;
                    };
                    let (key, val) = (key.trim(), val.trim());
                    if key == signature_key {
                        signatures.push(val);
                    } else if timestamp_key.as_deref() == Some(key) {
                        if timestamp.is_some() {
                            return Err(malformed(format!("has more than one {key}")));
                        }
                        timestamp = Some(val);
                    }
                }
                if signatures.is_empty() {
                    return Err(malformed(format!(
                        "has no {signature_key}{kv_separator}<signature> entry"
                    )));
                }
                Ok((signatures, timestamp))
            }
            Format::VersionedList {
                versions,
                version_separator,
            } => {
                let signatures: Vec<&str> = value
                    .split_ascii_whitespace()
                    .filter_map(|entry| entry.split_once(version_separator.as_str()))
                    .filter(|(version, _)| versions.iter().any(|v| v == version))
                    .map(|(_, sig)| sig)
                    .collect();
                if signatures.is_empty() {
                    return Err(malformed(format!(
                        "has no {}{version_separator}<signature> entry",
                        versions.join("|")
                    )));
                }
                Ok((signatures, None))
            }
        }
    }
}

#[derive(Debug)]
enum TimestampSource {
    At(Location),
    /// The `timestamp_key` entry of a `kv_list` signature value (Stripe `t`, Paddle `ts`).
    ListKey(String),
}

/// What `extract` reads. Each `Vec<Location>` alternative is a composite id joined with `#`
/// (`pspReference#eventCode`); the first alternative fully present wins.
#[derive(Debug, Default)]
struct Extraction {
    event_id: Vec<Vec<Location>>,
    event_type: Vec<Location>,
    occurred_at: Vec<Location>,
    occurred_at_unit: TsUnit,
    entity: Option<Location>,
    object_id: Option<Location>,
    amount: Option<Location>,
    amount_unit: AmountUnit,
    currency: Option<Location>,
    canonical: BTreeMap<String, &'static str>,
}

#[derive(Debug)]
enum CondAt {
    JsonPointer(String),
    Header(String),
}

#[derive(Debug)]
struct Condition {
    at: CondAt,
    equals: serde_json::Value,
}

impl Condition {
    fn compile(when: When) -> Result<Self, OptionsError> {
        let at = match (when.json_pointer, when.header) {
            (Some(p), None) if p.starts_with('/') => CondAt::JsonPointer(p),
            (Some(p), None) => {
                return Err(OptionsError(format!(
                    "handshake.when.json_pointer must start with '/', got {p:?}"
                )))
            }
            (None, Some(h)) if !h.trim().is_empty() => CondAt::Header(h.trim().to_string()),
            _ => {
                return Err(
                    "handshake.when needs exactly one of json_pointer or header, and equals".into(),
                )
            }
        };
        Ok(Self {
            at,
            equals: when.equals,
        })
    }

    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        match &self.at {
            CondAt::JsonPointer(p) => ctx.json_at(p) == Some(&self.equals),
            CondAt::Header(h) => ctx.header(h).is_some_and(|v| match &self.equals {
                serde_json::Value::String(s) => s == v,
                other => serde_json::from_str::<serde_json::Value>(v).ok().as_ref() == Some(other),
            }),
        }
    }
}

#[derive(Debug)]
enum Handshake {
    EchoQueryParam {
        mode_param: String,
        mode: String,
        token_param: String,
        challenge_param: String,
        token: Secret,
    },
    EchoJsonField {
        when: Condition,
        field: String,
        key: String,
    },
    EchoText {
        when: Condition,
        field: String,
    },
    HmacJsonResponse {
        when: Condition,
        field: String,
        plain_key: String,
        encrypted_key: String,
    },
    StaticJson {
        when: Condition,
        body: serde_json::Value,
    },
}

#[derive(Debug)]
pub(crate) struct Generic {
    /// `generic` or `hmac`: the name it was configured under.
    name: &'static str,
    scheme: Scheme,
    signature: Location,
    prefix: String,
    format: Format,
    encoding: SignatureEncoding,
    message: Vec<Part>,
    separator: String,
    urls: Vec<ConfiguredUrl>,
    timestamp: Option<TimestampSource>,
    timestamp_unit: TsUnit,
    tolerance: Tolerance,
    extraction: Extraction,
    items_pointer: Option<String>,
    /// The signature is inside each item of `items_pointer`: every item is verified alone.
    per_item: bool,
    handshake: Option<Handshake>,
}

fn check_pointer(field: &str, pointer: &str) -> Result<(), OptionsError> {
    if pointer.starts_with('/') {
        Ok(())
    } else {
        Err(OptionsError(format!(
            "{field} must be a JSON pointer starting with '/' (RFC 6901), got {pointer:?}"
        )))
    }
}

fn scheme_name(kind: SchemeKind) -> &'static str {
    match kind {
        SchemeKind::Hmac => "hmac",
        SchemeKind::TokenEquals => "token_equals",
        SchemeKind::BasicAuth => "basic_auth",
        SchemeKind::Ed25519 => "ed25519",
        SchemeKind::EcdsaP256 => "ecdsa_p256",
    }
}

/// The whole value is the credential: nothing is signed, so there is no format, encoding,
/// timestamp or message to configure.
fn symmetric_token(kind: SchemeKind) -> bool {
    matches!(kind, SchemeKind::TokenEquals | SchemeKind::BasicAuth)
}

/// Where the signature is (`signature`, or the `header` shorthand).
fn signature_location(
    kind: SchemeKind,
    signature: Option<Location>,
    header: Option<String>,
) -> Result<Location, OptionsError> {
    let located = either(
        ("signature", signature),
        ("header", shorthand_header("header", header)?),
    )?;
    match (located, kind) {
        (Some(location), _) => checked("signature", location),
        (None, SchemeKind::BasicAuth) => Ok(Location::Header("Authorization".into())),
        (None, _) => Err(
            "signature is required, e.g. signature = { header = \"X-Signature\" } (or header = \"X-Signature\")".into(),
        ),
    }
}

/// How the signature value is written.
fn signature_format(kind: SchemeKind, spec: Option<FormatSpec>) -> Result<Format, OptionsError> {
    match spec.unwrap_or(FormatSpec::Plain) {
        FormatSpec::Plain => Ok(Format::Plain),
        _ if symmetric_token(kind) => Err(OptionsError(format!(
            "format does not apply to scheme {} (the whole value is the credential)",
            scheme_name(kind)
        ))),
        FormatSpec::KvList {
            item_separator,
            kv_separator,
            timestamp_key,
            signature_key,
        } => {
            if item_separator.is_empty() || kv_separator.is_empty() {
                return Err(
                    "format.item_separator and format.kv_separator must not be empty".into(),
                );
            }
            if signature_key.trim().is_empty() {
                return Err("format.signature_key must not be empty".into());
            }
            Ok(Format::KvList {
                item_separator,
                kv_separator,
                timestamp_key: timestamp_key.map(|k| k.trim().to_string()),
                signature_key: signature_key.trim().to_string(),
            })
        }
        FormatSpec::VersionedList {
            versions,
            version_separator,
        } => {
            if versions.is_empty() || versions.iter().any(|v| v.trim().is_empty()) {
                return Err(
                    "format.versions must list the accepted versions, e.g. [\"v1\"]".into(),
                );
            }
            if version_separator.is_empty() {
                return Err("format.version_separator must not be empty".into());
            }
            Ok(Format::VersionedList {
                versions,
                version_separator,
            })
        }
    }
}

fn signature_encoding(
    kind: SchemeKind,
    encoding: Option<SignatureEncoding>,
) -> Result<SignatureEncoding, OptionsError> {
    match (encoding, kind) {
        (Some(_), _) if symmetric_token(kind) => Err(OptionsError(format!(
            "encoding does not apply to scheme {}",
            scheme_name(kind)
        ))),
        (Some(e), _) => Ok(e),
        (None, SchemeKind::EcdsaP256) => Ok(SignatureEncoding::Base64),
        (None, _) => Ok(SignatureEncoding::Hex),
    }
}

/// Where the timestamp is: its own location, or a key of a listed signature format.
fn timestamp_source(
    kind: SchemeKind,
    format: &Format,
    timestamp: Option<Location>,
    timestamp_header: Option<String>,
) -> Result<Option<TimestampSource>, OptionsError> {
    let listed_key = match format {
        Format::KvList { timestamp_key, .. } => timestamp_key.clone(),
        _ => None,
    };
    let located = either(
        ("timestamp", timestamp),
        (
            "timestamp_header",
            shorthand_header("timestamp_header", timestamp_header)?,
        ),
    )?;
    let source = match (located, listed_key) {
        (Some(_), Some(_)) => {
            return Err("the timestamp comes from format.timestamp_key; remove timestamp".into())
        }
        (Some(l), None) => Some(TimestampSource::At(checked("timestamp", l)?)),
        (None, Some(key)) => Some(TimestampSource::ListKey(key)),
        (None, None) => None,
    };
    if source.is_some() && symmetric_token(kind) {
        return Err(OptionsError(format!(
            "scheme {} signs nothing, so a timestamp would not be authenticated; remove it",
            scheme_name(kind)
        )));
    }
    Ok(source)
}

/// The parts of the signed message; it must cover the body, or a captured signature could
/// be replayed with any body.
fn signed_message(
    kind: SchemeKind,
    spec: Option<MessageSpec>,
    has_timestamp: bool,
) -> Result<Vec<Part>, OptionsError> {
    let symmetric = symmetric_token(kind);
    let message = match (spec, symmetric) {
        (Some(_), true) => {
            return Err(OptionsError(format!(
                "message does not apply to scheme {}: it compares the credential, it signs nothing",
                scheme_name(kind)
            )))
        }
        (None, true) => Vec::new(),
        (None, false) => vec![Part::Body],
        (Some(MessageSpec::Template(t)), false) => template::parse_template(&t)?,
        (Some(MessageSpec::Parts(list)), false) => list
            .iter()
            .map(|p| template::parse_part(p))
            .collect::<Result<_, _>>()?,
    };
    if !symmetric && !message.iter().any(Part::is_body_derived) {
        return Err(
            "message signs no request content: include body or a body-derived part \
             (json_field, form_field, sha256_hex(body), crc32_dec(body), twilio_form, \
             sorted_flat_json_values); without it anyone could replay a captured \
             signature with a body of their choosing"
                .into(),
        );
    }
    if message.contains(&Part::Timestamp) && !has_timestamp {
        return Err(
            "message part timestamp needs a timestamp source: timestamp = { header = … }, timestamp_header or format.timestamp_key".into(),
        );
    }
    Ok(message)
}

/// The public URLs the sender signs, exactly when the message has a url, path or query part.
fn signed_urls(
    url: Option<options::OneOrMany<String>>,
    message: &[Part],
) -> Result<Vec<ConfiguredUrl>, OptionsError> {
    let urls: Vec<ConfiguredUrl> = url
        .map(|u| u.into_vec())
        .unwrap_or_default()
        .iter()
        .map(|u| ConfiguredUrl::parse(u.trim()))
        .collect::<Result<_, _>>()?;
    let uses_url = message.iter().any(Part::needs_url);
    if uses_url && urls.is_empty() {
        return Err(
            "message parts url/path/query need url = \"https://…\" (the public URL the sender signs)".into(),
        );
    }
    if !uses_url && !urls.is_empty() {
        return Err("url is set but the message has no url, path or query part".into());
    }
    Ok(urls)
}

/// The scheme with its keys decoded as the scheme reads them.
fn scheme_keys(
    name: &'static str,
    kind: SchemeKind,
    algorithm: HmacAlgorithm,
    key_encoding: Option<KeyEncoding>,
    secrets: Vec<Secret>,
) -> Result<Scheme, ProviderConfigError> {
    let invalid = |why: OptionsError| ProviderConfigError(format!("{name} options: {why}"));
    let refuse_encoding = || match key_encoding {
        None | Some(KeyEncoding::Utf8) => Ok(()),
        Some(_) => Err(invalid(OptionsError(format!(
            "key_encoding does not apply to scheme {}: secrets are compared as written",
            scheme_name(kind)
        )))),
    };
    Ok(match kind {
        SchemeKind::Hmac => {
            let enc = key_encoding.unwrap_or(KeyEncoding::Utf8);
            Scheme::Hmac {
                algorithm,
                keys: Keyring::decoded(name, secrets, |raw| decode_key(enc, raw))?,
            }
        }
        SchemeKind::TokenEquals => {
            refuse_encoding()?;
            Scheme::TokenEquals {
                keys: Keyring::new(name, secrets)?,
            }
        }
        SchemeKind::BasicAuth => {
            refuse_encoding()?;
            Scheme::BasicAuth {
                keys: Keyring::decoded(name, secrets, check_user_pass)?,
            }
        }
        SchemeKind::Ed25519 => {
            let enc = match key_encoding.unwrap_or(KeyEncoding::Hex) {
                KeyEncoding::Utf8 => {
                    return Err(invalid(
                        "scheme ed25519 needs key_encoding hex, base64 or whsec (public keys are binary)".into(),
                    ))
                }
                other => other,
            };
            Scheme::Ed25519 {
                keys: Keyring::decoded(name, secrets, |raw| {
                    let key = decode_key(enc, raw)?;
                    Ed25519Key::from_bytes(&key)?;
                    Ok(key)
                })?,
            }
        }
        SchemeKind::EcdsaP256 => {
            if key_encoding.is_some() {
                return Err(invalid(
                    "key_encoding does not apply to scheme ecdsa_p256: keys are base64 DER SubjectPublicKeyInfo, PEM or hex SEC1".into(),
                ));
            }
            Scheme::EcdsaP256 {
                keys: Keyring::decoded(name, secrets, |raw| {
                    let text =
                        std::str::from_utf8(raw).map_err(|_| KeyError::Format("is not text"))?;
                    P256Key::parse(text)?;
                    Ok(raw.to_vec())
                })?,
            }
        }
    })
}

/// Meta-style subscription check: `GET ?mode=subscribe&verify_token=…&challenge=…`,
/// answered with the challenge when the mode and token match.
fn echo_query_param(
    ctx: &Ctx<'_>,
    handshake: &Handshake,
) -> Option<Result<HandshakeReply, VerifyError>> {
    let Handshake::EchoQueryParam {
        mode_param,
        mode,
        token_param,
        challenge_param,
        token,
    } = handshake
    else {
        return None;
    };
    let presented_mode = ctx.query_param(mode_param)?;
    let token_ok = ctx
        .query_param(token_param)
        .is_some_and(|t| crypto::token_eq(t.as_bytes(), token.expose()));
    if presented_mode != mode || !token_ok {
        return Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }
    Some(
        ctx.query_param(challenge_param)
            .map(HandshakeReply::text)
            .ok_or_else(|| {
                VerifyError::MissingHeader(format!("query parameter {challenge_param}"))
            }),
    )
}

/// The event id: one composite `event_id`, or the legacy shorthands as alternatives (the
/// header, else the pointer).
fn event_ids(
    event_id: Option<options::OneOrMany<Location>>,
    id_header: Option<String>,
    id_pointer: Option<String>,
) -> Result<Vec<Vec<Location>>, OptionsError> {
    let legacy: Vec<Location> = shorthand_header("id_header", id_header)?
        .into_iter()
        .chain(shorthand_pointer("id_pointer", id_pointer)?)
        .collect();
    match event_id {
        Some(_) if !legacy.is_empty() => {
            Err("give event_id or its shorthands id_header/id_pointer, not both".into())
        }
        Some(composite) => {
            let parts = composite.into_vec();
            if parts.is_empty() {
                return Err("event_id must name at least one location".into());
            }
            Ok(vec![parts
                .into_iter()
                .map(|l| checked("event_id", l))
                .collect::<Result<_, _>>()?])
        }
        None => Ok(legacy.into_iter().map(|l| vec![l]).collect()),
    }
}

/// The event type: `event_type`, or the legacy shorthands as alternatives.
fn event_types(
    event_type: Option<Location>,
    type_header: Option<String>,
    type_pointer: Option<String>,
) -> Result<Vec<Location>, OptionsError> {
    let legacy: Vec<Location> = shorthand_header("type_header", type_header)?
        .into_iter()
        .chain(shorthand_pointer("type_pointer", type_pointer)?)
        .collect();
    match event_type {
        Some(_) if !legacy.is_empty() => {
            Err("give event_type or its shorthands type_header/type_pointer, not both".into())
        }
        Some(l) => Ok(vec![checked("event_type", l)?]),
        None => Ok(legacy),
    }
}

/// `canonical = { "provider.type" = "canonical.type" }`, each name a known canonical type.
fn canonical_types(
    map: BTreeMap<String, String>,
) -> Result<BTreeMap<String, &'static str>, OptionsError> {
    let mut out = BTreeMap::new();
    for (provider_type, canonical_name) in map {
        let Some(known) = canonical::lookup(&canonical_name) else {
            return Err(OptionsError(format!(
                "canonical[{provider_type:?}] = {canonical_name:?} is not a canonical type; known: {}",
                canonical::ALL.join(", ")
            )));
        };
        out.insert(provider_type, known);
    }
    Ok(out)
}

/// How far a signed timestamp may be from now (default five minutes each way); only a
/// scheme with a timestamp has one.
fn tolerance(
    has_timestamp: bool,
    past: Option<options::Window>,
    future: Option<options::Window>,
) -> Result<Tolerance, OptionsError> {
    if !has_timestamp && (past.is_some() || future.is_some()) {
        return Err(
            "tolerance_seconds/future_tolerance_seconds need a timestamp (timestamp = { header = … }, timestamp_header or format.timestamp_key)".into(),
        );
    }
    Ok(Tolerance {
        past_s: past.map_or(Some(300), |w| w.0),
        future_s: future.map_or(Some(300), |w| w.0),
    })
}

/// The verify token of a Meta-style subscription check: taken out of the signing keys, so it
/// can never verify a signature.
fn take_verify_token(secrets: &mut Vec<Secret>, id: &str) -> Result<Secret, OptionsError> {
    let at = secrets.iter().position(|s| s.id == id).ok_or_else(|| {
        format!(
            "handshake echo_query_param needs a secret with id {id:?} \
             (the verify token), e.g. secrets = [{{ id = \"{id}\", value = \"env:VERIFY_TOKEN\" }}, …]"
        )
    })?;
    let token = secrets.remove(at);
    if token.expose().is_empty() {
        return Err(OptionsError(format!("secret {id:?} is empty")));
    }
    Ok(token)
}

fn checked(field: &str, location: Location) -> Result<Location, OptionsError> {
    location.check(field)?;
    Ok(location.trimmed())
}

fn shorthand_header(field: &str, name: Option<String>) -> Result<Option<Location>, OptionsError> {
    match name {
        Some(h) if h.trim().is_empty() => Err(OptionsError(format!("{field} must not be empty"))),
        Some(h) => Ok(Some(Location::Header(h.trim().to_string()))),
        None => Ok(None),
    }
}

fn shorthand_pointer(
    field: &str,
    pointer: Option<String>,
) -> Result<Option<Location>, OptionsError> {
    match pointer {
        Some(p) => {
            check_pointer(field, &p)?;
            Ok(Some(Location::JsonPointer(p)))
        }
        None => Ok(None),
    }
}

/// `user:pass` secrets for `basic_auth`; the error never quotes the secret.
fn check_user_pass(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    if fields::is_user_pass(raw, false) {
        Ok(raw.to_vec())
    } else {
        Err(KeyError::Format("is not user:pass (scheme basic_auth)"))
    }
}

fn decode_key(encoding: KeyEncoding, raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = || std::str::from_utf8(raw).ok().map(str::trim);
    match encoding {
        KeyEncoding::Utf8 => Ok(raw.to_vec()),
        KeyEncoding::Hex => text()
            .and_then(|t| hex::decode(t).ok())
            .ok_or(KeyError::Format("is not hex (key_encoding = \"hex\")")),
        KeyEncoding::Base64 => text()
            .and_then(crypto::decode_base64)
            .ok_or(KeyError::Format(
                "is not base64 (key_encoding = \"base64\")",
            )),
        KeyEncoding::Whsec => text()
            .map(|t| {
                t.strip_prefix("whsec_")
                    .or_else(|| t.strip_prefix("whpk_"))
                    .unwrap_or(t)
            })
            .and_then(crypto::decode_base64)
            .ok_or(KeyError::Format(
                "is not whsec_<base64> (key_encoding = \"whsec\")",
            )),
    }
}

impl Generic {
    /// Built as `generic` (the tests' shorthand).
    #[cfg(test)]
    pub(crate) fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        Self::from_config_as(GENERIC, options, secrets)
    }

    /// `name` is the configured provider name, `generic` or its alias `hmac`.
    pub(crate) fn from_config_as(
        name: &str,
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let name = match name {
            GENERIC => GENERIC,
            HMAC_ALIAS => HMAC_ALIAS,
            other => {
                return Err(ProviderConfigError(format!(
                    "{other:?} is not a name of the generic provider"
                )))
            }
        };
        let o: GenericOptions = crypto::parse_options(name, options)?;
        Self::compile(name, o, secrets)
    }

    fn compile(
        name: &'static str,
        mut o: GenericOptions,
        mut secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let invalid = |why: OptionsError| ProviderConfigError(format!("{name} options: {why}"));
        let kind = o.scheme;
        if kind == SchemeKind::Hmac && o.algorithm == HmacAlgorithm::Md5 && !o.allow_weak {
            return Err(invalid(
                "algorithm \"md5\" is weak; set allow_weak = true if the sender offers nothing else"
                    .into(),
            ));
        }
        let signature =
            signature_location(kind, o.signature.take(), o.header.take()).map_err(invalid)?;
        let prefix = o.prefix.take().unwrap_or_else(|| match kind {
            SchemeKind::BasicAuth => "Basic ".into(),
            _ => String::new(),
        });
        let format = signature_format(kind, o.format.take()).map_err(invalid)?;
        let encoding = signature_encoding(kind, o.encoding.take()).map_err(invalid)?;
        let timestamp =
            timestamp_source(kind, &format, o.timestamp.take(), o.timestamp_header.take())
                .map_err(invalid)?;
        let tolerance = tolerance(
            timestamp.is_some(),
            o.tolerance_seconds,
            o.future_tolerance_seconds,
        )
        .map_err(invalid)?;
        let message =
            signed_message(kind, o.message.take(), timestamp.is_some()).map_err(invalid)?;
        let urls = signed_urls(o.url.take(), &message).map_err(invalid)?;

        // Batches.
        if let Some(p) = o.items_pointer.as_deref().filter(|p| !p.is_empty()) {
            check_pointer("items_pointer", p).map_err(invalid)?;
        }
        let per_item = o.items_pointer.is_some() && matches!(signature, Location::JsonPointer(_));

        let extraction = Self::compile_extraction(&mut o).map_err(invalid)?;

        // Handshake (takes the verify-token secret out of the signing keys).
        let handshake = match o.handshake {
            None => None,
            Some(spec) => Some(Self::compile_handshake(spec, kind, &mut secrets).map_err(invalid)?),
        };
        let scheme = scheme_keys(name, kind, o.algorithm, o.key_encoding, secrets)?;
        if matches!(handshake, Some(Handshake::HmacJsonResponse { .. }))
            && !matches!(scheme, Scheme::Hmac { .. })
        {
            return Err(invalid(
                "handshake hmac_json_response needs scheme hmac (it answers with an HMAC of the token)".into(),
            ));
        }

        Ok(Self {
            name,
            scheme,
            signature,
            prefix,
            format,
            encoding,
            message,
            separator: o.message_separator,
            urls,
            timestamp,
            timestamp_unit: o.timestamp_unit,
            tolerance,
            extraction,
            items_pointer: o.items_pointer,
            per_item,
            handshake,
        })
    }

    /// What identifies and describes an event, taken out of the options.
    fn compile_extraction(o: &mut GenericOptions) -> Result<Extraction, OptionsError> {
        let event_id = event_ids(o.event_id.take(), o.id_header.take(), o.id_pointer.take())?;
        let event_type = event_types(
            o.event_type.take(),
            o.type_header.take(),
            o.type_pointer.take(),
        )?;
        let occurred_at = o.occurred_at.take();
        let occurred_at_pointer = o.occurred_at_pointer.take();
        let (occurred_at_unit, amount_unit) = (o.occurred_at_unit, o.amount_unit);
        let entity = o.entity.take();
        let object_id = o.object_id.take();
        let amount = o.amount.take();
        let currency = o.currency.take();
        let canonical_map = std::mem::take(&mut o.canonical);
        let occurred_at = either(
            ("occurred_at", occurred_at),
            (
                "occurred_at_pointer",
                shorthand_pointer("occurred_at_pointer", occurred_at_pointer)?,
            ),
        )?
        .map(|l| checked("occurred_at", l))
        .transpose()?
        .into_iter()
        .collect();
        let entity = entity.map(|l| checked("entity", l)).transpose()?;
        let object_id = object_id.map(|l| checked("object_id", l)).transpose()?;
        let amount = amount.map(|l| checked("amount", l)).transpose()?;
        let currency = currency.map(|l| checked("currency", l)).transpose()?;
        if amount.is_some() && amount_unit == AmountUnit::Major && currency.is_none() {
            return Err(
                "amount_unit = \"major\" needs currency (the number of minor digits depends on it)"
                    .into(),
            );
        }
        if !canonical_map.is_empty() && event_type.is_empty() {
            return Err("canonical maps event types: configure event_type too".into());
        }
        Ok(Extraction {
            event_id,
            event_type,
            occurred_at,
            occurred_at_unit,
            entity,
            object_id,
            amount,
            amount_unit,
            currency,
            canonical: canonical_types(canonical_map)?,
        })
    }

    fn compile_handshake(
        spec: HandshakeSpec,
        kind: SchemeKind,
        secrets: &mut Vec<Secret>,
    ) -> Result<Handshake, OptionsError> {
        let pointer = |field: &str, p: String| -> Result<String, OptionsError> {
            check_pointer(field, &p)?;
            Ok(p)
        };
        Ok(match spec {
            HandshakeSpec::EchoQueryParam {
                mode_param,
                mode,
                token_param,
                challenge_param,
                verify_token_secret,
            } => Handshake::EchoQueryParam {
                mode_param,
                mode,
                token_param,
                challenge_param,
                token: take_verify_token(secrets, &verify_token_secret)?,
            },
            HandshakeSpec::EchoJsonField { when, field } => {
                let field = pointer("handshake.field", field)?;
                let key = field
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .replace("~1", "/")
                    .replace("~0", "~");
                Handshake::EchoJsonField {
                    when: Condition::compile(when)?,
                    field,
                    key,
                }
            }
            HandshakeSpec::EchoText { when, field } => Handshake::EchoText {
                when: Condition::compile(when)?,
                field: pointer("handshake.field", field)?,
            },
            HandshakeSpec::HmacJsonResponse {
                when,
                field,
                plain_key,
                encrypted_key,
            } => {
                if kind != SchemeKind::Hmac {
                    return Err(
                        "handshake hmac_json_response needs scheme hmac (it answers with an HMAC of the token)".into(),
                    );
                }
                Handshake::HmacJsonResponse {
                    when: Condition::compile(when)?,
                    field: pointer("handshake.field", field)?,
                    plain_key,
                    encrypted_key,
                }
            }
            HandshakeSpec::StaticJson { when, body } => Handshake::StaticJson {
                when: Condition::compile(when)?,
                body,
            },
        })
    }

    /// Verify, and return the matching HMAC key (for the Zoom-style handshake answer).
    fn verify_keyed(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Result<(Verified, Option<Vec<u8>>), VerifyError> {
        let Some(pointer) = self.items_pointer.as_deref().filter(|_| self.per_item) else {
            let ctx = Ctx::new(req.method, req.headers, req.query, req.body);
            return self.verify_one(&ctx, now_ms);
        };
        let items = raw_items(req.body, pointer).map_err(|why| {
            VerifyError::MissingSignature(format!("items at {pointer:?} ({why})"))
        })?;
        let mut first = None;
        for item in items {
            let ctx = Ctx::new(req.method, req.headers, req.query, item);
            let verified = self.verify_one(&ctx, now_ms)?;
            first.get_or_insert(verified);
        }
        first.ok_or_else(|| {
            VerifyError::MissingSignature(format!("items at {pointer:?} (the list is empty)"))
        })
    }

    /// Verify the signature found in `ctx` (the request, or one item of a batch).
    fn verify_one(
        &self,
        ctx: &Ctx<'_>,
        now_ms: i64,
    ) -> Result<(Verified, Option<Vec<u8>>), VerifyError> {
        let carrier = self.signature.describe();
        let raw = ctx
            .lookup(&self.signature)
            .ok_or_else(|| VerifyError::MissingSignature(carrier.clone()))?;
        let value = strip_prefix(raw.trim(), &self.prefix).ok_or_else(|| {
            VerifyError::MalformedSignature(format!(
                "{carrier} does not start with {:?}",
                self.prefix
            ))
        })?;
        let keys = self.scheme.keys();
        let verified = |key_id: String| Verified {
            scheme: self.scheme.name(),
            key_id: Some(key_id),
        };
        match &self.scheme {
            Scheme::TokenEquals { .. } => {
                let id = keys.first_match(now_ms, |key| crypto::token_eq(value.as_bytes(), key))?;
                return Ok((verified(id), None));
            }
            Scheme::BasicAuth { .. } => {
                let presented = crypto::decode_base64(value.trim()).ok_or_else(|| {
                    VerifyError::MalformedSignature(format!("{carrier} is not Basic <base64>"))
                })?;
                let id = keys.first_match(now_ms, |key| crypto::token_eq(&presented, key))?;
                return Ok((verified(id), None));
            }
            _ => {}
        }
        let (candidates, listed_timestamp) = self.format.split(value, &carrier)?;
        let signatures = self.decoded(&candidates, &carrier)?;
        let timestamp_text = self.timestamp_text(ctx, listed_timestamp, &carrier)?;
        let timestamp = timestamp_text
            .as_deref()
            .map(|t| parse_timestamp(t, self.timestamp_unit))
            .transpose()?;
        let messages = self.messages(ctx, timestamp_text.as_deref())?;
        let views: Vec<Vec<&[u8]>> = messages
            .iter()
            .map(|m| m.iter().map(AsRef::as_ref).collect())
            .collect();
        let mut matched_key = None;
        let key_id = keys.first_match(now_ms, |key| {
            let checker = self.scheme.checker(key);
            let hit = views
                .iter()
                .any(|parts| checker.check_any(parts, &signatures));
            if hit {
                matched_key = Some(key.to_vec());
            }
            hit
        })?;
        // Freshness after the signature: a forger learns nothing about our clock.
        if let Some((value, unit)) = timestamp {
            self.tolerance.check(value, unit, now_ms)?;
        }
        let key = matches!(self.scheme, Scheme::Hmac { .. })
            .then_some(matched_key)
            .flatten();
        Ok((verified(key_id), key))
    }

    /// The candidate signatures, decoded; at least one, at most the bound.
    fn decoded(&self, candidates: &[&str], carrier: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
        let signatures: Vec<Vec<u8>> = candidates
            .iter()
            .filter_map(|c| self.encoding.decode(c.trim()))
            .collect();
        if signatures.is_empty() {
            return Err(VerifyError::MalformedSignature(format!(
                "{carrier} is not {:?}-encoded",
                self.encoding
            )));
        }
        crypto::bounded_candidates(signatures, carrier)
    }

    /// The timestamp as sent: from the signature's own list or its configured location.
    fn timestamp_text(
        &self,
        ctx: &Ctx<'_>,
        listed: Option<&str>,
        carrier: &str,
    ) -> Result<Option<String>, VerifyError> {
        Ok(match &self.timestamp {
            None => None,
            Some(TimestampSource::ListKey(key)) => Some(
                listed
                    .ok_or_else(|| VerifyError::MissingHeader(format!("{key}= in {carrier}")))?
                    .to_string(),
            ),
            Some(TimestampSource::At(location)) => Some(
                ctx.lookup(location)
                    .ok_or_else(|| VerifyError::MissingHeader(location.describe()))?,
            ),
        })
    }

    /// The signed message, once per configured URL variant (once when none is configured).
    fn messages<'a>(
        &'a self,
        ctx: &'a Ctx<'_>,
        timestamp: Option<&'a str>,
    ) -> Result<Vec<Vec<Cow<'a, [u8]>>>, VerifyError> {
        let url_variants: Vec<Option<&ConfiguredUrl>> = if self.urls.is_empty() {
            vec![None]
        } else {
            self.urls.iter().map(Some).collect()
        };
        url_variants
            .into_iter()
            .map(|url| template::render(&self.message, &self.separator, ctx, timestamp, url))
            .collect()
    }

    /// Whether the signature covers the value at `location`, so that it may key the event.
    /// A shared-token scheme signs nothing, but a captured request hands over the token itself,
    /// so its ids are taken as they are.
    fn signs(&self, location: &Location) -> bool {
        if matches!(
            self.scheme,
            Scheme::TokenEquals { .. } | Scheme::BasicAuth { .. }
        ) {
            return true;
        }
        let whole_body =
            |p: &Part| matches!(p, Part::Body | Part::BodySha256Hex | Part::TwilioForm);
        self.message.iter().any(|part| match (location, part) {
            (Location::Header(n), Part::Header(m)) => n.eq_ignore_ascii_case(m),
            (Location::Query(n), Part::QueryParam(m)) => n == m,
            (Location::FormField(n), Part::FormField(m)) => n == m,
            (Location::JsonPointer(p), Part::JsonField(q)) => p == q,
            (Location::FormField(_) | Location::JsonPointer(_), part) => whole_body(part),
            _ => false,
        })
    }

    fn extract_one(&self, ctx: &Ctx<'_>, part: Option<Vec<u8>>) -> Result<Extracted, ExtractError> {
        let x = &self.extraction;
        let event_id = if x.event_id.is_empty() {
            None
        } else {
            let found = x.event_id.iter().find_map(|composite| {
                composite
                    .iter()
                    .map(|l| id_at_location(ctx, l))
                    .collect::<Option<Vec<String>>>()
                    .map(|parts| (parts.join("#"), composite.iter().all(|l| self.signs(l))))
            });
            let described = || {
                x.event_id
                    .iter()
                    .map(|c| {
                        c.iter()
                            .map(Location::describe)
                            .collect::<Vec<_>>()
                            .join(" + ")
                    })
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            Some(found.ok_or_else(|| {
                ExtractError(format!(
                    "no event id: {} is absent or not a string or integer",
                    described()
                ))
            })?)
        };
        let event_type = x.event_type.iter().find_map(|l| id_at_location(ctx, l));
        let canonical_type = event_type
            .as_deref()
            .and_then(|t| x.canonical.get(t).copied());
        let occurred_at_ms = x
            .occurred_at
            .iter()
            .find_map(|l| ctx.lookup(l))
            .and_then(|t| time_to_ms(&t, x.occurred_at_unit));
        let currency = x
            .currency
            .as_ref()
            .and_then(|l| ctx.lookup(l))
            .and_then(|c| money::currency(&c));
        let amount = x
            .amount
            .as_ref()
            .and_then(|l| ctx.lookup(l))
            .and_then(|text| match x.amount_unit {
                AmountUnit::Minor => text.trim().parse::<i64>().ok(),
                AmountUnit::Major => money::to_minor(&text, currency.as_deref()?),
            });
        // An id the signature does not cover names the event but cannot key it.
        let (event_id, unsigned_id) = match event_id {
            Some((id, true)) => (Some(id), None),
            Some((id, false)) => (None, Some(id)),
            None => (None, None),
        };
        Ok(Extracted {
            event_id,
            unsigned_id,
            event_type,
            canonical_type,
            occurred_at_ms,
            entity: x.entity.as_ref().and_then(|l| ctx.lookup(l)),
            object_id: x.object_id.as_ref().and_then(|l| ctx.lookup(l)),
            amount,
            currency,
            part,
        })
    }

    /// Zoom-style URL validation: the plain token and its HMAC under the key that verified
    /// the request.
    fn hmac_json_reply(
        &self,
        key: Option<Vec<u8>>,
        plain: String,
        plain_key: &str,
        encrypted_key: &str,
    ) -> Result<HandshakeReply, VerifyError> {
        let Scheme::Hmac { algorithm, .. } = &self.scheme else {
            return Err(VerifyError::NoLiveKey);
        };
        let key = key.ok_or(VerifyError::NoLiveKey)?;
        let tag = algorithm
            .compute(&key, &[plain.as_bytes()])
            .map_err(|e| VerifyError::Unavailable(e.0))?;
        let mut reply = serde_json::Map::new();
        reply.insert(plain_key.to_owned(), serde_json::Value::String(plain));
        reply.insert(
            encrypted_key.to_owned(),
            serde_json::Value::String(hex::encode(tag)),
        );
        Ok(HandshakeReply::json(serde_json::Value::Object(reply)))
    }

    /// A shared-token scheme sends the credential itself.
    fn sign_with_credential(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let header = self.sign_header()?;
        let credential = self.scheme.keys().signing_key(input.now_ms)?;
        let value = match &self.scheme {
            Scheme::BasicAuth { .. } => SignatureEncoding::Base64.encode(credential),
            _ => std::str::from_utf8(credential)
                .map_err(|_| ProviderConfigError("the token is not text".into()))?
                .to_owned(),
        };
        let mut out = Headers::new();
        out.insert(header, format!("{}{value}", self.prefix));
        Ok(out)
    }

    /// The timestamp a signed request carries (set in its header when it has one).
    fn sign_timestamp(
        &self,
        input: &SignInput<'_>,
        out: &mut Headers,
    ) -> Result<Option<String>, ProviderConfigError> {
        let generated = match self.timestamp_unit {
            TsUnit::Seconds => TimeUnit::Seconds.of_ms(input.now_ms).to_string(),
            TsUnit::Milliseconds => input.now_ms.to_string(),
            TsUnit::Rfc3339 => {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(input.now_ms).unwrap_or(0));
                humantime::format_rfc3339_millis(at).to_string()
            }
        };
        Ok(match &self.timestamp {
            None => None,
            Some(TimestampSource::ListKey(_)) => Some(generated),
            Some(TimestampSource::At(Location::Header(name))) => {
                out.insert(name, generated.clone());
                Some(generated)
            }
            Some(TimestampSource::At(location)) => {
                let no_headers = Headers::new();
                let body_ctx = Ctx::new("POST", &no_headers, &[], input.body);
                Some(body_ctx.lookup(location).ok_or_else(|| {
                    ProviderConfigError(format!(
                        "cannot sign: the timestamp is read from the {}, which this body lacks",
                        location.describe()
                    ))
                })?)
            }
        })
    }

    /// A signature written the way the format reads it.
    fn formatted(&self, sig: String, timestamp: Option<&str>) -> String {
        match &self.format {
            Format::Plain => sig,
            Format::KvList {
                item_separator,
                kv_separator,
                timestamp_key,
                signature_key,
            } => {
                match (timestamp_key, timestamp) {
                    (Some(tk), Some(ts)) => {
                        format!("{tk}{kv_separator}{ts}{item_separator}{signature_key}{kv_separator}{sig}")
                    }
                    _ => format!("{signature_key}{kv_separator}{sig}"),
                }
            }
            Format::VersionedList {
                versions,
                version_separator,
            } => format!(
                "{}{version_separator}{sig}",
                versions.first().map(String::as_str).unwrap_or_default()
            ),
        }
    }

    fn sign_header(&self) -> Result<&str, ProviderConfigError> {
        match &self.signature {
            Location::Header(name) => Ok(name),
            other => Err(ProviderConfigError(format!(
                "cannot sign: the signature goes in the {}, and inlet sign only sets headers",
                other.describe()
            ))),
        }
    }
}

/// `value` without `prefix` (ASCII case-insensitive); `None` when it does not start with it.
fn strip_prefix<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    match value.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => value.get(prefix.len()..),
        _ => None,
    }
}

/// A received timestamp as the value and unit `Tolerance::check` takes.
fn parse_timestamp(text: &str, unit: TsUnit) -> Result<(i64, TimeUnit), VerifyError> {
    match unit {
        TsUnit::Seconds => Ok((crypto::parse_unix(text)?, TimeUnit::Seconds)),
        TsUnit::Milliseconds => Ok((crypto::parse_unix(text)?, TimeUnit::Milliseconds)),
        TsUnit::Rfc3339 => time::rfc3339_ms_any_year(text)
            .map(|ms| (ms, TimeUnit::Milliseconds))
            .ok_or_else(|| VerifyError::MalformedSignature("timestamp is not RFC 3339".into())),
    }
}

/// An occurrence time as sent → unix milliseconds; seconds may carry a fraction
/// (Mailgun `1767225598.5`).
fn time_to_ms(text: &str, unit: TsUnit) -> Option<i64> {
    match unit {
        TsUnit::Seconds => time::unix_seconds_text_ms(text).or_else(|| {
            text.parse::<f64>()
                .ok()
                .and_then(time::fractional_seconds_ms)
        }),
        TsUnit::Milliseconds => crypto::parse_unix(text).ok(),
        TsUnit::Rfc3339 => time::rfc3339_ms_any_year(text),
    }
}

/// An id or type: a header/field value, or a JSON string or integer (never a float, bool or
/// object: `1.5` as an id is a sender bug, not a key).
fn id_at_location(ctx: &Ctx<'_>, location: &Location) -> Option<String> {
    match location {
        Location::JsonPointer(p) => fields::integer_id_text(ctx.json_at(p)?),
        other => ctx.lookup(other),
    }
}

/// Why the body has no item list at `items_pointer`; callers name the pointer around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ItemsError {
    #[error("the body is not UTF-8 JSON")]
    NotUtf8,
    #[error("the body is not JSON")]
    NotJson,
    #[error("no {token:?} on the way to {pointer:?}")]
    NoKey { token: String, pointer: String },
    #[error("no item {token:?} on the way to {pointer:?}")]
    NoItem { token: String, pointer: String },
    #[error("{0:?} passes through a scalar")]
    Scalar(String),
    #[error("the value at {0:?} is not an array")]
    NotArray(String),
}

/// The exact bytes of each item of the array at `pointer` (`""`: the body is the array),
/// sliced from the body, never re-serialised.
fn raw_items<'b>(body: &'b [u8], pointer: &str) -> Result<Vec<&'b [u8]>, ItemsError> {
    let text = std::str::from_utf8(body).map_err(|_| ItemsError::NotUtf8)?;
    let mut current: &'b RawValue = serde_json::from_str(text).map_err(|_| ItemsError::NotJson)?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let inner: &'b str = current.get();
        current = match inner.as_bytes().first() {
            Some(b'{') => {
                let map: BTreeMap<String, &'b RawValue> =
                    serde_json::from_str(inner).map_err(|_| ItemsError::NotJson)?;
                map.get(&token).copied().ok_or_else(|| ItemsError::NoKey {
                    token: token.clone(),
                    pointer: pointer.to_string(),
                })?
            }
            Some(b'[') => {
                let list: Vec<&'b RawValue> =
                    serde_json::from_str(inner).map_err(|_| ItemsError::NotJson)?;
                token
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| list.get(i).copied())
                    .ok_or_else(|| ItemsError::NoItem {
                        token: token.clone(),
                        pointer: pointer.to_string(),
                    })?
            }
            _ => return Err(ItemsError::Scalar(pointer.to_string())),
        };
    }
    let list: Vec<&'b RawValue> = serde_json::from_str(current.get())
        .map_err(|_| ItemsError::NotArray(pointer.to_string()))?;
    Ok(list.into_iter().map(|r| r.get().as_bytes()).collect())
}

/// Put `value` at `pointer` in `root`, creating objects on the way (for sample bodies).
fn set_pointer(root: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let mut current = root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !current.is_object() {
            *current = serde_json::json!({});
        }
        let serde_json::Value::Object(map) = current else {
            return;
        };
        current = map.entry(token).or_insert(serde_json::Value::Null);
    }
    *current = value;
}

#[async_trait::async_trait]
impl Provider for Generic {
    fn name(&self) -> &'static str {
        self.name
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        self.verify_keyed(req, now_ms).map(|(verified, _)| verified)
    }

    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        let ctx = Ctx::new(req.method, req.headers, req.query, req.body);
        let text_at = |pointer: &str| ctx.json_at(pointer).and_then(template::json_text);
        let missing = |pointer: &str| VerifyError::MissingHeader(format!("body field {pointer}"));
        match self.handshake.as_ref()? {
            query @ Handshake::EchoQueryParam { .. } => {
                if req.method != "GET" {
                    return None;
                }
                echo_query_param(&ctx, query)
            }
            Handshake::EchoJsonField { when, field, key } => {
                if !when.matches(&ctx) {
                    return None;
                }
                Some(self.verify(req, now_ms).and_then(|_| {
                    let value = text_at(field).ok_or_else(|| missing(field))?;
                    let mut reply = serde_json::Map::new();
                    reply.insert(key.clone(), serde_json::Value::String(value));
                    Ok(HandshakeReply::json(serde_json::Value::Object(reply)))
                }))
            }
            Handshake::EchoText { when, field } => {
                if !when.matches(&ctx) {
                    return None;
                }
                Some(self.verify(req, now_ms).and_then(|_| {
                    text_at(field)
                        .map(HandshakeReply::text)
                        .ok_or_else(|| missing(field))
                }))
            }
            Handshake::HmacJsonResponse {
                when,
                field,
                plain_key,
                encrypted_key,
            } => {
                if !when.matches(&ctx) {
                    return None;
                }
                Some(self.verify_keyed(req, now_ms).and_then(|(_, key)| {
                    let plain = text_at(field).ok_or_else(|| missing(field))?;
                    self.hmac_json_reply(key, plain, plain_key, encrypted_key)
                }))
            }
            Handshake::StaticJson { when, body } => {
                if !when.matches(&ctx) {
                    return None;
                }
                Some(
                    self.verify(req, now_ms)
                        .map(|_| HandshakeReply::json(body.clone())),
                )
            }
        }
    }

    /// With `items_pointer`, one event per item whose `part` is the item's exact bytes (the
    /// parts together are no larger than the body), counted before any is extracted.
    fn extract_at_most(
        &self,
        req: &InboundRequest<'_>,
        limit: usize,
    ) -> Result<Vec<Extracted>, ExtractFailure> {
        let Some(pointer) = self.items_pointer.as_deref() else {
            let ctx = Ctx::new(req.method, req.headers, req.query, req.body);
            return Ok(vec![self.extract_one(&ctx, None)?]);
        };
        let items = raw_items(req.body, pointer)
            .map_err(|why| ExtractError(format!("items_pointer: {why}")))?;
        super::at_most(items.len(), limit)?;
        let events: Result<Vec<Extracted>, ExtractError> = items
            .into_iter()
            .map(|item| {
                let ctx = Ctx::new(req.method, req.headers, req.query, item);
                self.extract_one(&ctx, Some(item.to_vec()))
            })
            .collect();
        Ok(events?)
    }

    /// Signs with the first live key. Header parts can be signed when they are the event id
    /// header (given the delivery id) or the timestamp header; other header values are the
    /// sender's to know.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let keys = self.scheme.keys();
        let algorithm = match &self.scheme {
            Scheme::Ed25519 { .. } | Scheme::EcdsaP256 { .. } => {
                return Err(ProviderConfigError(format!(
                    "scheme {} signs with a private key the receiver does not hold",
                    self.scheme.name()
                )))
            }
            Scheme::TokenEquals { .. } | Scheme::BasicAuth { .. } => {
                return self.sign_with_credential(input)
            }
            Scheme::Hmac { algorithm, .. } => *algorithm,
        };
        let mut out = Headers::new();
        let header = self.sign_header()?;
        let key = keys.signing_key(input.now_ms)?;
        // The delivery id goes in the id header (when the id is one header).
        if let Some([Location::Header(id_header)]) =
            self.extraction.event_id.first().map(Vec::as_slice)
        {
            out.insert(id_header, input.delivery_id.to_string());
        }
        let timestamp = self.sign_timestamp(input, &mut out)?;
        let ctx = Ctx::new("POST", &out, &[], input.body);
        let message = template::render(
            &self.message,
            &self.separator,
            &ctx,
            timestamp.as_deref(),
            self.urls.first(),
        )
        .map_err(|e| match e {
            VerifyError::MissingHeader(name) => ProviderConfigError(format!(
                "cannot sign: message uses header {name}, whose value only the sender knows"
            )),
            other => ProviderConfigError(format!("cannot sign: {other}")),
        })?;
        let parts: Vec<&[u8]> = message.iter().map(AsRef::as_ref).collect();
        let sig = self.encoding.encode(&algorithm.compute(key, &parts)?);
        let value = self.formatted(sig, timestamp.as_deref());
        out.insert(header, format!("{}{value}", self.prefix));
        Ok(out)
    }

    /// A JSON event with the configured id, type and time pointers filled in, wrapped in the
    /// batch array when `items_pointer` is set.
    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        let mut item = serde_json::json!({"id": id, "type": "test.event", "created": now_s});
        let x = &self.extraction;
        if let Some([Location::JsonPointer(p)]) = x.event_id.first().map(Vec::as_slice) {
            set_pointer(&mut item, p, serde_json::json!(id));
        }
        if let Some(Location::JsonPointer(p)) = x.event_type.first() {
            set_pointer(&mut item, p, serde_json::json!("test.event"));
        }
        if let Some(Location::JsonPointer(p)) = x.occurred_at.first() {
            let at = match x.occurred_at_unit {
                TsUnit::Seconds => serde_json::json!(now_s),
                TsUnit::Milliseconds => serde_json::json!(now_ms),
                TsUnit::Rfc3339 => {
                    let at = std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
                    serde_json::json!(humantime::format_rfc3339_millis(at).to_string())
                }
            };
            set_pointer(&mut item, p, at);
        }
        let body = match self.items_pointer.as_deref() {
            None => item,
            Some("") => serde_json::json!([item]),
            Some(p) => {
                let mut root = serde_json::json!({});
                set_pointer(&mut root, p, serde_json::json!([item]));
                root
            }
        };
        body.to_string().into_bytes()
    }
}
