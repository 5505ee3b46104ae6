//! What every provider shares: HMAC, signature decoding, constant-time comparison, timestamp
//! freshness, options parsing and the key ring that tries each live secret in turn.
//! Providers keep only their wire format; everything security-relevant lives here once.

use base64::engine::general_purpose::{
    STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD, URL_SAFE_PAD_INDIFFERENT,
};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::{fields, ProviderConfigError, VerifyError};
use crate::request::Headers;
use crate::secret::Secret;

/// HMAC hash function, as written in config (`"sha1"`, `"sha256"`, `"sha512"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HmacAlgorithm {
    /// Broken as a hash, still used by some legacy iGaming senders; a config must opt in
    /// explicitly (see the generic scheme's `allow_weak`).
    Md5,
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

impl HmacAlgorithm {
    /// HMAC of the concatenation of `parts` (so callers never build `"{t}.{body}"` copies).
    pub(crate) fn compute(
        self,
        key: &[u8],
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, ProviderConfigError> {
        let tag = match self {
            HmacAlgorithm::Md5 => mac::<Hmac<md5::Md5>>(key, parts).map(finish),
            HmacAlgorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(key, parts).map(finish),
            HmacAlgorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, parts).map(finish),
            HmacAlgorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(key, parts).map(finish),
        };
        tag.ok_or_else(|| ProviderConfigError("HMAC refused the key".into()))
    }

    /// Constant-time check of a presented (already decoded) tag; a wrong length never matches.
    pub fn verify(self, key: &[u8], parts: &[&[u8]], presented: &[u8]) -> bool {
        fn check<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]], presented: &[u8]) -> bool {
            mac::<M>(key, parts).is_some_and(|m| m.verify_slice(presented).is_ok())
        }
        match self {
            HmacAlgorithm::Md5 => check::<Hmac<md5::Md5>>(key, parts, presented),
            HmacAlgorithm::Sha1 => check::<Hmac<sha1::Sha1>>(key, parts, presented),
            HmacAlgorithm::Sha256 => check::<Hmac<sha2::Sha256>>(key, parts, presented),
            HmacAlgorithm::Sha512 => check::<Hmac<sha2::Sha512>>(key, parts, presented),
        }
    }

    /// Whether any of the presented tags is this key's HMAC of `parts`. The HMAC is computed
    /// once and compared to each candidate in constant time, so a request's cost is one pass
    /// over the body per configured key, however many candidates it offers.
    pub(crate) fn matches_any(self, key: &[u8], parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
        let _ = MAX_SIGNATURE_CANDIDATES;
        candidates.iter().any(|sig| self.verify(key, parts, sig))
    }

    /// Scheme name recorded in [`super::Verified`].
    pub fn scheme(self) -> &'static str {
        match self {
            HmacAlgorithm::Md5 => "hmac_md5",
            HmacAlgorithm::Sha1 => "hmac_sha1",
            HmacAlgorithm::Sha256 => "hmac_sha256",
            HmacAlgorithm::Sha512 => "hmac_sha512",
        }
    }
}

/// HMAC accepts keys of any length, so `new_from_slice` cannot fail; `None` keeps that
/// invariant from ever becoming a panic.
fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<M> {
    let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        m.update(part);
    }
    Some(m)
}

fn finish<M: Mac>(m: M) -> Vec<u8> {
    m.finalize().into_bytes().to_vec()
}

/// How a signature is written on the wire. Decoding is lenient where senders differ (hex case,
/// base64 padding) because we compare decoded bytes, never strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
    Base64url,
}

impl SignatureEncoding {
    /// Decoded signature bytes; empty or undecodable text is `None` (never a signature).
    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        if text.is_empty() {
            return None;
        }
        match self {
            SignatureEncoding::Hex => hex::decode(text).ok(),
            SignatureEncoding::Base64 => decode_base64(text),
            SignatureEncoding::Base64url => URL_SAFE_PAD_INDIFFERENT.decode(text).ok(),
        }
    }

    /// Canonical form for signing: lowercase hex, padded standard base64, unpadded base64url.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            SignatureEncoding::Hex => hex::encode(bytes),
            SignatureEncoding::Base64 => STANDARD.encode(bytes),
            SignatureEncoding::Base64url => URL_SAFE_NO_PAD.encode(bytes),
        }
    }
}

/// Standard-alphabet base64 with or without padding (the Standard Webhooks Python lib also
/// tolerates unpadded secrets and signatures).
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_PAD_INDIFFERENT.decode(text).ok()
}

/// The most signatures one request may offer. Providers send one per active secret while a
/// secret rotates (two, rarely three); a longer list only serves to make us verify once per
/// entry (2,000 `v1=` entries cost 650 times one).
pub(crate) const MAX_SIGNATURE_CANDIDATES: usize = 8;

/// `candidates`, or a refusal if the request offers more than [`MAX_SIGNATURE_CANDIDATES`].
pub(crate) fn bounded_candidates<T>(
    candidates: Vec<T>,
    carrier: &str,
) -> Result<Vec<T>, VerifyError> {
    if candidates.len() > MAX_SIGNATURE_CANDIDATES {
        return Err(VerifyError::MalformedSignature(format!(
            "{carrier}: {} signatures, more than the {MAX_SIGNATURE_CANDIDATES} a sender may offer",
            candidates.len()
        )));
    }
    Ok(candidates)
}

/// Constant-time equality of two byte strings of possibly different lengths (static tokens).
/// Both sides are hashed first so neither the content nor the length of the secret leaks.
pub(crate) fn token_eq(presented: &[u8], expected: &[u8]) -> bool {
    let a = sha2::Sha256::digest(presented);
    let b = sha2::Sha256::digest(expected);
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Resolution of a timestamp as the provider sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TimeUnit {
    #[default]
    Seconds,
    Milliseconds,
}

impl TimeUnit {
    fn per_second(self) -> i64 {
        match self {
            TimeUnit::Seconds => 1,
            TimeUnit::Milliseconds => 1000,
        }
    }

    /// `now_ms` in this unit, truncated like the SDKs do (`Math.floor(Date.now() / 1000)`).
    pub(crate) fn of_ms(self, now_ms: i64) -> i64 {
        now_ms.div_euclid(1000 / self.per_second())
    }

    pub(crate) fn to_ms(self, value: i64) -> Option<i64> {
        value.checked_mul(1000 / self.per_second())
    }
}

/// Accepted clock skew, separately for the past and the future; `None` means no limit.
/// Separate because some SDKs (Stripe, Slack Bolt) reject only stale timestamps while others
/// (Standard Webhooks) reject both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tolerance {
    pub past_s: Option<i64>,
    pub future_s: Option<i64>,
}

impl Tolerance {
    pub fn both(past_s: u32, future_s: u32) -> Self {
        Self {
            past_s: Some(i64::from(past_s)),
            future_s: Some(i64::from(future_s)),
        }
    }

    /// Refuse `ts` (in `unit`) if it is further from `now_ms` than allowed. The boundary itself
    /// is accepted, as in the SDKs (`now - ts > tolerance` fails).
    pub fn check(&self, ts: i64, unit: TimeUnit, now_ms: i64) -> Result<(), VerifyError> {
        let per_s = unit.per_second();
        let age = unit.of_ms(now_ms).saturating_sub(ts);
        if let Some(past_s) = self.past_s {
            if age > past_s.saturating_mul(per_s) {
                return Err(VerifyError::TimestampTooOld {
                    age_s: age / per_s,
                    tolerance_s: past_s,
                });
            }
        }
        if let Some(future_s) = self.future_s {
            let ahead = age.saturating_neg();
            if ahead > future_s.saturating_mul(per_s) {
                return Err(VerifyError::TimestampInFuture {
                    ahead_s: ahead / per_s,
                    tolerance_s: future_s,
                });
            }
        }
        Ok(())
    }
}

/// A unix timestamp as sent: ASCII digits only (no sign, no spaces, no fraction), so the
/// string that was signed and the number that is checked cannot disagree.
pub(crate) fn parse_unix(text: &str) -> Result<i64, VerifyError> {
    crate::time::unix_digits(text)
        .ok_or_else(|| VerifyError::MalformedSignature("timestamp is not a unix time".into()))
}

/// The header that carries the signature; absent (or blank) is `MissingSignature(name)`.
pub(crate) fn required_header<'h>(
    headers: &'h Headers,
    name: &str,
) -> Result<&'h str, VerifyError> {
    fields::header(headers, name)
        .ok_or_else(|| VerifyError::MissingSignature(name.to_ascii_lowercase()))
}

/// Another header the scheme needs (timestamp, message id); absent is `MissingHeader`, so
/// `inlet verify` can say which one.
pub(crate) fn needed_header<'h>(headers: &'h Headers, name: &str) -> Result<&'h str, VerifyError> {
    fields::header(headers, name)
        .ok_or_else(|| VerifyError::MissingHeader(name.to_ascii_lowercase()))
}

/// The SHA-256 `X-Hub-Signature-256: sha256=<hex>` header (GitHub, Meta).
pub(crate) const X_HUB_SIGNATURE_256: &str = "x-hub-signature-256";
/// The legacy SHA-1 `X-Hub-Signature: sha1=<hex>` header (GitHub, Meta fallback; Intercom).
pub(crate) const X_HUB_SIGNATURE: &str = "x-hub-signature";

/// The decoded tag of an `X-Hub-Signature` value: `sha256=<hex>` or `sha1=<hex>` for
/// `algorithm`; anything else is `MalformedSignature("expected sha…=<hex>")`.
pub(crate) fn hub_signature_tag(
    value: &str,
    algorithm: HmacAlgorithm,
) -> Result<Vec<u8>, VerifyError> {
    let prefix = hub_signature_prefix(algorithm);
    value
        .strip_prefix(prefix)
        .and_then(|hex| SignatureEncoding::Hex.decode(hex))
        .ok_or_else(|| VerifyError::MalformedSignature(format!("expected {prefix}<hex>")))
}

/// The header value that carries `tag`: `sha256=<hex>` or `sha1=<hex>` (for `sign`).
pub(crate) fn hub_signature_value(algorithm: HmacAlgorithm, tag: &[u8]) -> String {
    format!("{}{}", hub_signature_prefix(algorithm), hex::encode(tag))
}

/// `sha256=` for SHA-256, `sha1=` for SHA-1 (the only two X-Hub algorithms).
pub(crate) fn hub_signature_prefix(algorithm: HmacAlgorithm) -> &'static str {
    match algorithm {
        HmacAlgorithm::Sha1 => "sha1=",
        _ => "sha256=",
    }
}

/// Which X-Hub header and algorithm a request is checked with, and its decoded tag. When
/// `X-Hub-Signature-256` is present it decides alone (even if malformed): falling back to
/// SHA-1 after a SHA-256 failure would let a forger pick the weaker scheme. Only with
/// `allow_sha1_fallback` and no SHA-256 header is `X-Hub-Signature` read; with neither, the
/// SHA-256 header is the one reported missing.
pub(crate) fn x_hub_signature(
    headers: &Headers,
    allow_sha1_fallback: bool,
) -> Result<(HmacAlgorithm, Vec<u8>), VerifyError> {
    let (algorithm, value) = match required_header(headers, X_HUB_SIGNATURE_256) {
        Ok(value) => (HmacAlgorithm::Sha256, value),
        Err(missing) if allow_sha1_fallback => match required_header(headers, X_HUB_SIGNATURE) {
            Ok(value) => (HmacAlgorithm::Sha1, value),
            Err(_) => return Err(missing),
        },
        Err(missing) => return Err(missing),
    };
    Ok((algorithm, hub_signature_tag(value, algorithm)?))
}

/// One secret id, or several (so a credential can be rotated like the HMAC keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum SecretIds {
    One(String),
    Many(Vec<String>),
}

impl SecretIds {
    fn ids(&self) -> Vec<&str> {
        match self {
            SecretIds::One(id) => vec![id.as_str()],
            SecretIds::Many(ids) => ids.iter().map(String::as_str).collect(),
        }
    }
}

/// Take every secret whose id is in `ids` out of `secrets`: `(named, rest)`, in configured
/// order. A named secret (a Basic-auth credential, a verify token) is never a signing key.
/// Every id must exist: a typo would otherwise leave the credential among the signing keys
/// and its check disabled. `Err` is the first id the source does not have.
pub(crate) fn take_named_secrets<'i>(
    ids: &[&'i str],
    secrets: Vec<Secret>,
) -> Result<(Vec<Secret>, Vec<Secret>), &'i str> {
    if let Some(missing) = ids.iter().find(|id| !secrets.iter().any(|s| s.id == **id)) {
        return Err(missing);
    }
    Ok(secrets
        .into_iter()
        .partition(|s| ids.contains(&s.id.as_str())))
}

/// [`take_named_secrets`] for an options field `option` of `provider` (`None`: no secret is
/// named, all are signing keys), with config errors that name the field.
pub(crate) fn split_named_secrets(
    provider: &str,
    option: &str,
    ids: Option<&SecretIds>,
    secrets: Vec<Secret>,
) -> Result<(Vec<Secret>, Vec<Secret>), ProviderConfigError> {
    let Some(ids) = ids else {
        return Ok((Vec::new(), secrets));
    };
    let ids = ids.ids();
    if ids.is_empty() {
        return Err(ProviderConfigError(format!(
            "{provider} options: {option} names no secret"
        )));
    }
    take_named_secrets(&ids, secrets).map_err(|missing| {
        ProviderConfigError(format!(
            "{provider} options: {option} names secret {missing:?}, which the source does not have"
        ))
    })
}

/// The signed message as one buffer, for schemes that cannot stream it (Ed25519, ECDSA, RSA).
pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Why a configured secret is not a usable key. The text never quotes the secret: the keyring
/// prefixes it with the secret's id (`secret "id" <reason>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("is {0} bytes, an Ed25519 public key is 32")]
    Ed25519Length(usize),
    #[error("is not a valid Ed25519 public key")]
    Ed25519Invalid,
    #[error("is not a P-256 public key (base64 DER SubjectPublicKeyInfo, PEM or hex SEC1)")]
    NotP256,
    /// The secret breaks the provider's own rule for it, stated in the provider's words.
    #[error("{0}")]
    Format(&'static str),
}

/// An Ed25519 public key (Discord, Standard Webhooks `whpk_`), checked once at config time.
#[derive(Debug, Clone)]
pub(crate) struct Ed25519Key(ed25519_dalek::VerifyingKey);

impl Ed25519Key {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Ed25519Length(bytes.len()))?;
        ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map(Self)
            .map_err(|_| KeyError::Ed25519Invalid)
    }

    /// Strict verification (no malleable or small-order signatures) over the concatenated parts.
    pub fn verify(&self, parts: &[&[u8]], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(&concat(parts), &sig).is_ok()
    }
}

/// An ECDSA P-256 public key (SendGrid), from base64 DER SubjectPublicKeyInfo (what the
/// SendGrid dashboard shows), PEM, or hex SEC1 point.
#[derive(Debug, Clone)]
pub(crate) struct P256Key(p256::ecdsa::VerifyingKey);

impl P256Key {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePublicKey;
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            p256::ecdsa::VerifyingKey::from_public_key_pem(text).ok()
        } else if let Some(der) = decode_base64(text) {
            p256::ecdsa::VerifyingKey::from_public_key_der(&der).ok()
        } else {
            hex::decode(text)
                .ok()
                .and_then(|sec1| p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok())
        };
        key.map(Self).ok_or(KeyError::NotP256)
    }

    /// ECDSA-SHA256 over the concatenated parts; the signature may be ASN.1 DER (SendGrid)
    /// or raw `r‖s` (64 bytes).
    pub fn verify(&self, parts: &[&[u8]], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        let sig = p256::ecdsa::Signature::from_der(signature)
            .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
        match sig {
            Ok(sig) => self.0.verify(&concat(parts), &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// Why a PEM bundle does not yield an RSA signing certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertError {
    #[error("certificate is not PEM text")]
    NotText,
    #[error("no PEM certificate found")]
    NoPem,
    #[error("certificate does not parse: {0}")]
    Parse(x509_cert::der::Error),
    #[error("certificate key does not encode: {0}")]
    KeyEncoding(x509_cert::der::Error),
    #[error("certificate key is not RSA")]
    NotRsa,
}

/// An X.509 certificate's RSA key and validity window (PayPal's signing certificate).
#[derive(Debug, Clone)]
pub(crate) struct RsaCertificate {
    key: rsa::pkcs1v15::VerifyingKey<sha2::Sha256>,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub subject: String,
}

impl RsaCertificate {
    /// The first certificate in a PEM bundle (the leaf).
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        use rsa::pkcs8::DecodePublicKey;
        use x509_cert::der::{DecodePem, Encode};
        let text = std::str::from_utf8(pem).map_err(|_| CertError::NotText)?;
        let end = "-----END CERTIFICATE-----";
        let first = text
            .find(end)
            .map(|at| &text[..at + end.len()])
            .ok_or(CertError::NoPem)?;
        let cert = x509_cert::Certificate::from_pem(first).map_err(CertError::Parse)?;
        let tbs = cert.tbs_certificate();
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(CertError::KeyEncoding)?;
        let public = rsa::PublicKey::from_public_key_der(&spki).map_err(|_| CertError::NotRsa)?;
        let validity = tbs.validity();
        let ms = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
        };
        Ok(Self {
            key: rsa::pkcs1v15::VerifyingKey::new(public),
            not_before_ms: ms(validity.not_before),
            not_after_ms: ms(validity.not_after),
            subject: tbs.subject().to_string(),
        })
    }

    pub(crate) fn is_valid_at(&self, now_ms: i64) -> bool {
        self.not_before_ms <= now_ms && now_ms <= self.not_after_ms
    }

    /// RSA PKCS#1 v1.5 with SHA-256 over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        match rsa::pkcs1v15::Signature::try_from(signature) {
            Ok(sig) => self.key.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// CRC-32 (IEEE) of the body as PayPal signs it.
pub(crate) fn crc32(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// Deserialize a provider's options table; `Null` means "all defaults". Unknown and misspelt
/// fields are refused by the options type (`deny_unknown_fields`) and named in the error.
pub(crate) fn parse_options<T: DeserializeOwned>(
    provider: &str,
    options: &serde_json::Value,
) -> Result<T, ProviderConfigError> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let table = if options.is_null() { &empty } else { options };
    T::deserialize(table).map_err(|e| ProviderConfigError(format!("{provider} options: {e}")))
}

/// The body as a JSON object, if it is one.
pub(crate) fn json_object(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(body).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A provider's secrets, already decoded into key bytes, in configured order. The decoded keys
/// stay inside [`Secret`] so `Debug` keeps redacting them.
#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    keys: Vec<Secret>,
}

impl Keyring {
    /// Keys used exactly as configured (UTF-8 secrets such as Stripe's or GitHub's).
    pub fn new(provider: &str, secrets: Vec<Secret>) -> Result<Self, ProviderConfigError> {
        Self::decoded(provider, secrets, |raw| Ok(raw.to_vec()))
    }

    /// Keys decoded once at config time. `decode`'s error must describe the problem without
    /// quoting the secret; the secret's id is added here.
    pub fn decoded(
        provider: &str,
        secrets: Vec<Secret>,
        decode: impl Fn(&[u8]) -> Result<Vec<u8>, KeyError>,
    ) -> Result<Self, ProviderConfigError> {
        if secrets.is_empty() {
            return Err(ProviderConfigError(format!(
                "{provider}: at least one secret is required"
            )));
        }
        let keys = secrets
            .into_iter()
            .map(|s| match decode(s.expose()) {
                Ok(key) if !key.is_empty() => Ok(Secret::new(s.id, key, s.not_after_ms)),
                Ok(_) => Err(ProviderConfigError(format!(
                    "{provider}: secret {:?} is empty",
                    s.id
                ))),
                Err(why) => Err(ProviderConfigError(format!(
                    "{provider}: secret {:?} {why}",
                    s.id
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Id of the first live key (in configured order) for which `matches` holds.
    /// No live key at all is `NoLiveKey`; live keys that all fail is `SignatureMismatch`.
    pub(crate) fn first_match(
        &self,
        now_ms: i64,
        mut matches: impl FnMut(&[u8]) -> bool,
    ) -> Result<String, VerifyError> {
        let mut keys_tried = 0;
        for key in self.keys.iter().filter(|k| k.is_live(now_ms)) {
            keys_tried += 1;
            if matches(key.expose()) {
                return Ok(key.id.clone());
            }
        }
        Err(if keys_tried > 0 {
            VerifyError::SignatureMismatch { keys_tried }
        } else {
            VerifyError::NoLiveKey
        })
    }

    /// The key `sign` uses: the first one live at `now_ms`.
    pub fn signing_key(&self, now_ms: i64) -> Result<&[u8], ProviderConfigError> {
        self.keys
            .iter()
            .find(|k| k.is_live(now_ms))
            .map(Secret::expose)
            .ok_or_else(|| ProviderConfigError("no live key to sign with".into()))
    }
}

/// Test support: the provider vectors (`testdata/vectors.json`), and request builders.
#[cfg(test)]
pub(crate) mod testkit {
    use serde::Deserialize;

    use crate::request::{Headers, InboundRequest};
    use crate::secret::Secret;

    const VECTORS: &str = include_str!("../../testdata/vectors.json");

    /// Clock for vectors that carry no `now` (no freshness check applies): 2026-01-01.
    pub(crate) const DEFAULT_NOW_MS: i64 = 1_767_225_600_000;

    #[derive(Debug, Deserialize)]
    pub(crate) struct Vector {
        pub id: String,
        pub provider: String,
        pub secret: Option<String>,
        pub now: Option<i64>,
        /// The configured notification URL (Square, Twilio).
        pub url: Option<String>,
        /// PayPal: the webhook id the vector was signed for.
        #[serde(default)]
        pub webhook_id: Option<String>,
        /// PayPal: the (test-only) signing certificate, PEM.
        #[serde(default)]
        pub cert_pem: Option<String>,
        /// HTTP method when it matters (Twilio signs GET requests over the URL only).
        #[serde(default)]
        pub method: Option<String>,
        /// Public key of asymmetric schemes (SendGrid base64 DER SPKI, Discord hex,
        /// Standard Webhooks `whpk_…`).
        #[serde(default)]
        pub public_key: Option<String>,
        pub body: String,
        pub headers: serde_json::Map<String, serde_json::Value>,
        pub expected: Expected,
    }

    #[derive(Debug, Deserialize)]
    pub(crate) struct Expected {
        pub valid: bool,
    }

    impl Vector {
        pub fn headers(&self) -> Headers {
            self.headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        }

        pub fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("vector {} has no header {name}", self.id))
        }

        pub fn now_ms(&self) -> i64 {
            self.now.map_or(DEFAULT_NOW_MS, |s| s * 1000)
        }

        pub fn secret(&self) -> Secret {
            let value = self.secret.as_deref().expect("vector has a secret");
            Secret::new(format!("{}-key", self.id), value.as_bytes(), None)
        }
    }

    pub fn vectors() -> Vec<Vector> {
        serde_json::from_str(VECTORS).expect("testdata/vectors.json parses")
    }

    pub fn vector(id: &str) -> Vector {
        vectors()
            .into_iter()
            .find(|v| v.id == id)
            .unwrap_or_else(|| panic!("no vector {id}"))
    }

    pub(crate) fn vectors_for(providers: &[&str]) -> Vec<Vector> {
        let found: Vec<Vector> = vectors()
            .into_iter()
            .filter(|v| providers.contains(&v.provider.as_str()))
            .collect();
        assert!(!found.is_empty(), "no vectors for {providers:?}");
        found
    }

    pub fn request<'a>(headers: &'a Headers, body: &'a [u8]) -> InboundRequest<'a> {
        InboundRequest {
            method: "POST",
            headers,
            query: &[],
            body,
        }
    }

    pub fn secret(id: &str, value: &str) -> Secret {
        Secret::new(id, value.as_bytes(), None)
    }

    pub(crate) fn expiring_secret(id: &str, value: &str, not_after_ms: i64) -> Secret {
        Secret::new(id, value.as_bytes(), Some(not_after_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::secret;
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2_for_every_algorithm_family() {
        // RFC 4231 test case 2 (SHA-256/512) and RFC 2202 test case 2 (SHA-1).
        let parts: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        let cases = [
            (
                HmacAlgorithm::Sha1,
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                HmacAlgorithm::Sha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                HmacAlgorithm::Sha512,
                concat!(
                    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554",
                    "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
                ),
            ),
        ];
        for (alg, expected) in cases {
            let tag = alg.compute(b"Jefe", parts).unwrap();
            assert_eq!(hex::encode(&tag), expected, "{alg:?}");
            assert!(alg.verify(b"Jefe", parts, &tag));
            assert!(!alg.verify(b"Jefe", parts, &tag[..tag.len() - 1]));
            assert!(!alg.verify(b"Jefe", parts, &[]));
        }
    }

    #[test]
    fn signature_decoding_ignores_hex_case_and_base64_padding() {
        assert_eq!(
            SignatureEncoding::Hex.decode("aB0f"),
            Some(vec![0xab, 0x0f])
        );
        assert_eq!(SignatureEncoding::Hex.decode("xyz"), None);
        assert_eq!(SignatureEncoding::Base64.decode("/w=="), Some(vec![0xff]));
        assert_eq!(SignatureEncoding::Base64.decode("/w"), Some(vec![0xff]));
        assert_eq!(SignatureEncoding::Base64url.decode("_w"), Some(vec![0xff]));
        assert_eq!(
            SignatureEncoding::Base64url.decode("_w=="),
            Some(vec![0xff])
        );
        assert_eq!(SignatureEncoding::Base64.decode("_w"), None);
        assert_eq!(SignatureEncoding::Hex.decode(""), None);
    }

    #[test]
    fn one_hmac_is_compared_to_every_candidate_of_any_length() {
        let tag = HmacAlgorithm::Sha256.compute(b"k", &[b"a", b"b"]).unwrap();
        let wrong = vec![0u8; 32];
        let short = tag[..16].to_vec();
        let alg = HmacAlgorithm::Sha256;
        assert!(alg.matches_any(b"k", &[b"ab"], &[wrong.clone(), short.clone(), tag.clone()]));
        assert!(!alg.matches_any(b"k", &[b"ab"], &[wrong, short]));
        assert!(!alg.matches_any(b"k", &[b"ab"], &[]));
        assert!(!alg.matches_any(b"other", &[b"ab"], &[tag]));
    }

    #[test]
    fn more_candidates_than_the_bound_are_malformed() {
        let ok = bounded_candidates(vec![0; MAX_SIGNATURE_CANDIDATES], "x-sig");
        assert_eq!(ok.map(|c| c.len()), Ok(MAX_SIGNATURE_CANDIDATES));
        assert!(matches!(
            bounded_candidates(vec![0; MAX_SIGNATURE_CANDIDATES + 1], "x-sig"),
            Err(VerifyError::MalformedSignature(why)) if why.starts_with("x-sig: 9 signatures")
        ));
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
        assert!(!token_eq(b"", b"a"));
    }

    #[test]
    fn timestamp_tolerances_are_separate_for_past_and_future() {
        let tol = Tolerance {
            past_s: Some(300),
            future_s: Some(10),
        };
        let now_ms = 1_000_000_000;
        assert_eq!(
            tol.check(1_000_000 - 300, TimeUnit::Seconds, now_ms),
            Ok(())
        );
        assert_eq!(
            tol.check(1_000_000 - 301, TimeUnit::Seconds, now_ms),
            Err(VerifyError::TimestampTooOld {
                age_s: 301,
                tolerance_s: 300
            })
        );
        assert_eq!(tol.check(1_000_000 + 10, TimeUnit::Seconds, now_ms), Ok(()));
        assert_eq!(
            tol.check(1_000_000 + 11, TimeUnit::Seconds, now_ms),
            Err(VerifyError::TimestampInFuture {
                ahead_s: 11,
                tolerance_s: 10
            })
        );
        assert_eq!(
            tol.check(now_ms + 10_001, TimeUnit::Milliseconds, now_ms),
            Err(VerifyError::TimestampInFuture {
                ahead_s: 10,
                tolerance_s: 10
            })
        );
        let past_only = Tolerance {
            past_s: Some(300),
            future_s: None,
        };
        assert_eq!(past_only.check(i64::MAX, TimeUnit::Seconds, now_ms), Ok(()));
        assert!(past_only
            .check(i64::MIN, TimeUnit::Seconds, now_ms)
            .is_err());
    }

    #[test]
    fn unix_timestamps_are_plain_digits() {
        assert_eq!(parse_unix("1767225600"), Ok(1_767_225_600));
        for bad in ["", "+1", "-1", " 1", "1.5", "1e9", "99999999999999999999"] {
            assert!(parse_unix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyring_returns_the_first_live_matching_key() {
        let ring = Keyring::new(
            "test",
            vec![
                Secret::new("old", b"a".to_vec(), Some(1000)),
                secret("new", "b"),
            ],
        )
        .unwrap();
        assert_eq!(ring.first_match(0, |k| k == b"a"), Ok("old".into()));
        assert_eq!(
            ring.first_match(1001, |k| k == b"a"),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        assert_eq!(ring.first_match(1001, |k| k == b"b"), Ok("new".into()));
        assert_eq!(ring.signing_key(1001).unwrap(), b"b");
    }

    #[test]
    fn keyring_with_only_expired_keys_reports_no_live_key() {
        let ring =
            Keyring::new("test", vec![Secret::new("old", b"a".to_vec(), Some(1000))]).unwrap();
        assert_eq!(
            ring.first_match(1001, |_| true),
            Err(VerifyError::NoLiveKey)
        );
        assert!(ring.signing_key(1001).is_err());
    }

    #[test]
    fn keyring_refuses_no_secrets_and_names_undecodable_ones_without_their_value() {
        let err = Keyring::new("stripe", vec![]).unwrap_err();
        assert!(err.0.contains("at least one secret"), "{err}");
        let err = Keyring::decoded("x", vec![secret("k1", "hunter2")], |_| {
            Err(KeyError::Format("is not base64"))
        })
        .unwrap_err();
        assert!(err.0.contains("\"k1\" is not base64"), "{err}");
        assert!(!err.0.contains("hunter2"));
        assert!(
            !format!("{:?}", Keyring::new("x", vec![secret("k1", "hunter2")])).contains("hunter2")
        );
    }

    #[test]
    fn null_options_mean_defaults_and_unknown_fields_are_named() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Opts {
            tolerance_seconds: u32,
        }
        impl Default for Opts {
            fn default() -> Self {
                Self {
                    tolerance_seconds: 300,
                }
            }
        }
        let o: Opts = parse_options("p", &serde_json::Value::Null).unwrap();
        assert_eq!(o.tolerance_seconds, 300);
        let err =
            parse_options::<Opts>("p", &serde_json::json!({"tolerance_secs": 1})).unwrap_err();
        assert!(
            err.0
                .starts_with("p options: unknown field `tolerance_secs`"),
            "{err}"
        );
    }
}
