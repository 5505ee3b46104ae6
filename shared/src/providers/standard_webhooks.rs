//! Standard Webhooks and Svix (Clerk, Resend, other Svix senders; GitLab signing tokens):
//! `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> [v1a,<base64> …]`, or the
//! same three as `svix-*`, over `"{id}.{timestamp}.{body}"`:
//! - `v1`: HMAC-SHA256 keyed with the base64-decoded part of a `whsec_<base64>` secret;
//! - `v1a`: Ed25519, checked against a `whpk_<base64 32-byte public key>` secret.
//!
//! A source may hold both kinds (a sender moving from symmetric to asymmetric signing).
//! Source: spec `standard-webhooks/standard-webhooks` `spec/standard-webhooks.md`, and the
//! `standardwebhooks`/`svix` libraries.

use serde::Deserialize;

use super::crypto::{self, Ed25519Key, HmacAlgorithm, KeyError, Keyring, TimeUnit, Tolerance};
use super::{
    fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const STANDARD_WEBHOOKS: &str = "standard_webhooks";
const SVIX: &str = "svix";
const SECRET_PREFIX: &[u8] = b"whsec_";
const PUBLIC_KEY_PREFIX: &[u8] = b"whpk_";
const PRIVATE_KEY_PREFIX: &[u8] = b"whsk_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StandardWebhooksOptions {
    /// The libraries refuse timestamps more than 5 minutes off in either direction.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for StandardWebhooksOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 300,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct StandardWebhooks {
    /// `standard_webhooks` or `svix`: the name it was configured under, which also picks the
    /// header family `sign` emits.
    name: &'static str,
    /// `whsec_` secrets, for `v1` entries.
    hmac_keys: Option<Keyring>,
    /// `whpk_` public keys, for `v1a` entries.
    public_keys: Option<Keyring>,
    tolerance: Tolerance,
}

/// Which header family a request uses. Like the svix library, `svix-*` wins when present.
struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK_NAMES: Names = Names {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

const SVIX_NAMES: Names = Names {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

fn names_in(headers: &Headers) -> &'static Names {
    fields::header_family(headers, &[(SVIX_NAMES.id, &SVIX_NAMES)], &WEBHOOK_NAMES)
}

impl StandardWebhooks {
    /// Built as `standard_webhooks`; see [`StandardWebhooks::from_config_as`] for `svix`.
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        Self::from_config_as(STANDARD_WEBHOOKS, options, secrets)
    }

    /// `name` is the configured provider name, `standard_webhooks` or `svix`.
    pub(crate) fn from_config_as(
        name: &str,
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let name = match name {
            STANDARD_WEBHOOKS => STANDARD_WEBHOOKS,
            SVIX => SVIX,
            other => {
                return Err(ProviderConfigError(format!(
                    "{other:?} is not a Standard Webhooks provider name"
                )))
            }
        };
        let opts: StandardWebhooksOptions = crypto::parse_options(name, options)?;
        if secrets.is_empty() {
            return Err(ProviderConfigError(format!(
                "{name}: at least one secret is required"
            )));
        }
        if let Some(private) = secrets
            .iter()
            .find(|s| s.expose().starts_with(PRIVATE_KEY_PREFIX))
        {
            return Err(ProviderConfigError(format!(
                "{name}: secret {:?} is a whsk_ private key, which only the sender holds; configure its whpk_ public key",
                private.id
            )));
        }
        let (public, symmetric): (Vec<Secret>, Vec<Secret>) = secrets
            .into_iter()
            .partition(|s| s.expose().starts_with(PUBLIC_KEY_PREFIX));
        let ring = |secrets: Vec<Secret>, decode: fn(&[u8]) -> Result<Vec<u8>, KeyError>| {
            (!secrets.is_empty())
                .then(|| Keyring::decoded(name, secrets, decode))
                .transpose()
        };
        Ok(Self {
            name,
            hmac_keys: ring(symmetric, decode_secret)?,
            public_keys: ring(public, decode_public_key)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }

    fn sign_names(&self) -> &'static Names {
        if self.name == SVIX {
            &SVIX_NAMES
        } else {
            &WEBHOOK_NAMES
        }
    }
}

/// `whsec_<base64>` → key bytes. A secret without the prefix is taken as bare base64 (some
/// dashboards show it that way). Using the `whsec_…` string itself as the key is the classic
/// mistake this avoids.
fn decode_secret(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let b64 = raw.strip_prefix(SECRET_PREFIX).unwrap_or(raw);
    std::str::from_utf8(b64)
        .ok()
        .and_then(crypto::decode_base64)
        .ok_or(KeyError::Format("is not whsec_<base64> (or bare base64)"))
}

/// `whpk_<base64>` → the 32-byte Ed25519 public key, checked once here.
fn decode_public_key(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = raw
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|b64| std::str::from_utf8(b64).ok())
        .and_then(crypto::decode_base64)
        .ok_or(KeyError::Format("is not whpk_<base64>"))?;
    Ed25519Key::from_bytes(&key)?;
    Ok(key)
}

/// Which ring found the key, for the scheme recorded in [`Verified`].
enum Matched {
    Hmac(String),
    Ed25519(String),
}

/// The spec forbids `.` in the id and timestamp: they are `.`-joined into the signed bytes.
fn no_dot<'a>(value: &'a str, header: &str) -> Result<&'a str, VerifyError> {
    if value.contains('.') {
        return Err(VerifyError::MalformedSignature(format!(
            "{header} contains '.'"
        )));
    }
    Ok(value)
}

#[async_trait::async_trait]
impl Provider for StandardWebhooks {
    fn name(&self) -> &'static str {
        self.name
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let names = names_in(req.headers);
        let signature = crypto::required_header(req.headers, names.signature)?;
        let id = no_dot(crypto::needed_header(req.headers, names.id)?, names.id)?;
        let ts_text = no_dot(
            crypto::needed_header(req.headers, names.timestamp)?,
            names.timestamp,
        )?;
        let ts = crypto::parse_unix(ts_text)?;
        // Space-separated `version,signature` entries: `v1` (HMAC) and `v1a` (Ed25519) are
        // checked against the keys of their kind; unknown versions are skipped, as the spec
        // requires.
        let mut v1 = Vec::new();
        let mut v1a = Vec::new();
        for (version, sig) in signature
            .split_ascii_whitespace()
            .filter_map(|entry| entry.split_once(','))
        {
            let decoded = crypto::SignatureEncoding::Base64.decode(sig);
            match (version, decoded) {
                ("v1", Some(sig)) if self.hmac_keys.is_some() => v1.push(sig),
                ("v1a", Some(sig)) if self.public_keys.is_some() => v1a.push(sig),
                _ => {}
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            let wanted = match (&self.hmac_keys, &self.public_keys) {
                (Some(_), Some(_)) => "v1,<base64> or v1a,<base64>",
                (None, Some(_)) => "v1a,<base64>",
                _ => "v1,<base64>",
            };
            return Err(VerifyError::MalformedSignature(format!(
                "{} has no {wanted} entry",
                names.signature
            )));
        }
        crypto::bounded_candidates(v1.iter().chain(&v1a).collect(), names.signature)?;
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", req.body];
        let mut keys_tried = 0;
        let mut outcome = None;
        if let (false, Some(ring)) = (v1.is_empty(), &self.hmac_keys) {
            match ring.first_match(now_ms, |key| {
                HmacAlgorithm::Sha256.matches_any(key, &parts, &v1)
            }) {
                Ok(key_id) => outcome = Some(Matched::Hmac(key_id)),
                Err(VerifyError::SignatureMismatch { keys_tried: n }) => keys_tried += n,
                Err(_) => {}
            }
        }
        if let (None, false, Some(ring)) = (&outcome, v1a.is_empty(), &self.public_keys) {
            match ring.first_match(now_ms, |key| {
                Ed25519Key::from_bytes(key)
                    .is_ok_and(|pk| v1a.iter().any(|sig| pk.verify(&parts, sig)))
            }) {
                Ok(key_id) => outcome = Some(Matched::Ed25519(key_id)),
                Err(VerifyError::SignatureMismatch { keys_tried: n }) => keys_tried += n,
                Err(_) => {}
            }
        }
        let (scheme, key_id) = match outcome {
            Some(Matched::Hmac(key_id)) => ("standard_webhooks_v1", key_id),
            Some(Matched::Ed25519(key_id)) => ("standard_webhooks_v1a", key_id),
            None if keys_tried > 0 => return Err(VerifyError::SignatureMismatch { keys_tried }),
            None => return Err(VerifyError::NoLiveKey),
        };
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme,
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let names = names_in(req.headers);
        let id = crypto::required_header(req.headers, names.id)
            .map_err(|_| ExtractError(format!("missing {} header", names.id)))?;
        let event_type = crypto::json_object(req.body).and_then(|body| {
            body.get("type")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
        let occurred_at_ms = req
            .headers
            .get(names.timestamp)
            .and_then(|ts| time::unix_seconds_text_ms(ts.trim()));
        Ok(vec![Extracted {
            event_id: Some(id.to_string()),
            event_type,
            occurred_at_ms,
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({"type": "invoice.paid", "data": {"id": id}, "created": now_s})
            .to_string()
            .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        if input.delivery_id.contains('.') {
            return Err(ProviderConfigError(
                "message id must not contain '.'".into(),
            ));
        }
        // `v1a` needs the sender's private key; only `whsec_` secrets can sign here.
        let key = self
            .hmac_keys
            .as_ref()
            .ok_or_else(|| {
                ProviderConfigError(format!(
                    "{}: v1a signs with a private key the receiver does not hold (this source has only whpk_ public keys)",
                    self.name
                ))
            })?
            .signing_key(input.now_ms)?;
        let ts = TimeUnit::Seconds.of_ms(input.now_ms).to_string();
        let id = input.delivery_id.as_bytes();
        let sig =
            HmacAlgorithm::Sha256.compute(key, &[id, b".", ts.as_bytes(), b".", input.body])?;
        let names = self.sign_names();
        Ok(Headers::from_iter([
            (names.id, input.delivery_id.to_string()),
            (names.timestamp, ts),
            (
                names.signature,
                format!("v1,{}", crypto::SignatureEncoding::Base64.encode(&sig)),
            ),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Standard Webhooks: `webhook-signature:
/// v1,<base64>`, HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with the base64-decoded
/// `whsec_` secret, beside `webhook-id` and `webhook-timestamp`.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn key(raw: &[u8]) -> TestKey {
        TestKey {
            configured: format!("whsec_{}", crypto::SignatureEncoding::Base64.encode(raw)),
            signing: raw.to_vec(),
        }
    }
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"type":"invoice.paid","data":{"id":"in_1"},"created":1767225600}"#;
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key.expect("standard webhooks is keyed").hmac(
            HmacAlgorithm::Sha256,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
        );
        let sig = format!("v1,{}", crypto::SignatureEncoding::Base64.encode(&tag));
        let headers = Headers::from_iter([
            (WEBHOOK_NAMES.id, id.to_string()),
            (WEBHOOK_NAMES.timestamp, ts),
            (WEBHOOK_NAMES.signature, sig),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            let sig = s.header(WEBHOOK_NAMES.signature);
            let b64 = sig.trim_start_matches("v1,").to_string();
            vec![
                s.with_header(WEBHOOK_NAMES.signature, b64.clone()),
                s.with_header(WEBHOOK_NAMES.signature, "v1,***"),
                s.with_header(WEBHOOK_NAMES.signature, format!("v2,{b64}")),
                s.with_header(WEBHOOK_NAMES.timestamp, "1767225600.5"),
                s.with_header(WEBHOOK_NAMES.timestamp, "soon"),
                s.with_header(WEBHOOK_NAMES.id, "msg.1"),
            ]
        },
        candidates: Some(|s, n| {
            let wrong = format!("v1,{} ", "A".repeat(43) + "=").repeat(n - 1);
            let right = s.header(WEBHOOK_NAMES.signature);
            s.with_header(WEBHOOK_NAMES.signature, format!("{wrong}{right}"))
        }),
        ..Case::new(
            "standard_webhooks",
            "standard_webhooks_v1",
            || {
                [
                    key(b"Qm7vXw2pLk9zRt4nBc8yHd3fJs6gVa1e"),
                    key(b"Zt5kWq8mNx2rPv7cLb4yGh9dFs3jKe6a"),
                ]
            },
            sign,
            Carrier::Headers {
                signature: WEBHOOK_NAMES.signature,
                needed: &[WEBHOOK_NAMES.id, WEBHOOK_NAMES.timestamp],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, expiring_secret, request, secret};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn provider(name: &str, secrets: Vec<Secret>) -> StandardWebhooks {
        StandardWebhooks::from_config_as(name, &serde_json::Value::Null, secrets).unwrap()
    }

    fn sw(secrets: Vec<Secret>) -> StandardWebhooks {
        provider(STANDARD_WEBHOOKS, secrets)
    }

    fn headers(id: &str, ts: &str, sig: &str) -> Headers {
        Headers::from_iter([
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ])
    }

    fn spec_headers() -> Headers {
        headers(ID, &TS.to_string(), SIG)
    }

    fn sign_with(secret_b64: &str, id: &str, ts: i64, body: &[u8]) -> String {
        let key = crypto::decode_base64(secret_b64).unwrap();
        let ts = ts.to_string();
        let sig = HmacAlgorithm::Sha256
            .compute(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])
            .unwrap();
        format!("v1,{}", crypto::SignatureEncoding::Base64.encode(&sig))
    }

    #[test]
    fn every_standard_webhooks_and_svix_vector_gets_its_expected_verdict() {
        let vectors = testkit::vectors_for(&["standard-webhooks", "svix"]);
        for v in &vectors {
            let name = if v.provider == "svix" {
                SVIX
            } else {
                STANDARD_WEBHOOKS
            };
            // `v1a` vectors carry the `whpk_` public key instead of a secret.
            let key = match (&v.secret, &v.public_key) {
                (Some(_), _) => v.secret(),
                (None, Some(pk)) => secret(&format!("{}-key", v.id), pk),
                (None, None) => panic!("{} has no key", v.id),
            };
            let h = v.headers();
            let got = provider(name, vec![key]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
        assert_eq!(vectors.len(), 7);
    }

    const PUBLIC_KEY: &str = "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
    const V1A_SIG: &str = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";

    /// The Go reference test's `whsk_` seed.
    fn signing_key(seed_b64: &str) -> ed25519_dalek::SigningKey {
        let seed: [u8; 32] = crypto::decode_base64(seed_b64).unwrap().try_into().unwrap();
        ed25519_dalek::SigningKey::from_bytes(&seed)
    }

    fn reference_key() -> ed25519_dalek::SigningKey {
        signing_key("VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=")
    }

    fn public_key_of(key: &ed25519_dalek::SigningKey) -> String {
        format!(
            "whpk_{}",
            crypto::SignatureEncoding::Base64.encode(key.verifying_key().as_bytes())
        )
    }

    fn sign_v1a(key: &ed25519_dalek::SigningKey, id: &str, ts: i64, body: &[u8]) -> String {
        use ed25519_dalek::Signer;
        let ts = ts.to_string();
        let sig = key.sign(&crypto::concat(&[
            id.as_bytes(),
            b".",
            ts.as_bytes(),
            b".",
            body,
        ]));
        format!(
            "v1a,{}",
            crypto::SignatureEncoding::Base64.encode(&sig.to_bytes())
        )
    }

    #[test]
    fn reference_seed_reproduces_the_quoted_v1a_signature() {
        assert_eq!(public_key_of(&reference_key()), PUBLIC_KEY);
        assert_eq!(sign_v1a(&reference_key(), ID, TS, BODY), V1A_SIG);
    }

    #[test]
    fn v1a_signature_verifies_against_a_whpk_key_and_names_its_scheme() {
        let h = headers(ID, &TS.to_string(), V1A_SIG);
        let got = sw(vec![secret("pk", PUBLIC_KEY)])
            .verify(&request(&h, BODY), TS * 1000)
            .unwrap();
        assert_eq!(got.scheme, "standard_webhooks_v1a");
        assert_eq!(got.key_id.as_deref(), Some("pk"));
    }

    #[test]
    fn tampered_or_foreign_v1a_signature_is_refused() {
        let p = sw(vec![secret("pk", PUBLIC_KEY)]);
        let h = headers(ID, &TS.to_string(), V1A_SIG);
        assert_eq!(
            p.verify(&request(&h, br#"{"test": 2432232315}"#), TS * 1000),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let other = signing_key("b3RoZXItc2lnbmluZy1rZXktMzItYnl0ZXMtbG9uZyE=");
        let h = headers(ID, &TS.to_string(), &sign_v1a(&other, ID, TS, BODY));
        assert_eq!(
            p.verify(&request(&h, BODY), TS * 1000),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        // A v1a entry is not checked against whsec_ secrets, nor v1 against whpk_ keys.
        let h = headers(ID, &TS.to_string(), SIG);
        assert!(matches!(
            p.verify(&request(&h, BODY), TS * 1000),
            Err(VerifyError::MalformedSignature(m)) if m.contains("v1a,<base64>")
        ));
    }

    #[test]
    fn a_source_may_hold_both_key_kinds() {
        let p = sw(vec![secret("sym", SECRET), secret("pk", PUBLIC_KEY)]);
        let ts = TS.to_string();
        for (sig, scheme, key) in [
            (SIG, "standard_webhooks_v1", "sym"),
            (V1A_SIG, "standard_webhooks_v1a", "pk"),
        ] {
            let h = headers(ID, &ts, sig);
            let got = p.verify(&request(&h, BODY), TS * 1000).unwrap();
            assert_eq!((got.scheme, got.key_id.as_deref()), (scheme, Some(key)));
        }
        // A sender listing both: either may match; both wrong counts every key tried.
        let both = format!("{V1A_SIG} {SIG}");
        let h = headers(ID, &ts, &both);
        assert!(p.verify(&request(&h, BODY), TS * 1000).is_ok());
        assert_eq!(
            p.verify(&request(&h, b"{}"), TS * 1000),
            Err(VerifyError::SignatureMismatch { keys_tried: 2 })
        );
    }

    #[test]
    fn rotated_v1a_key_reports_the_key_that_matched_and_expired_ones_are_skipped() {
        let old = signing_key("b3RoZXItc2lnbmluZy1rZXktMzItYnl0ZXMtbG9uZyE=");
        let p = sw(vec![
            secret("old", &public_key_of(&old)),
            secret("new", PUBLIC_KEY),
        ]);
        let h = headers(ID, &TS.to_string(), V1A_SIG);
        let got = p.verify(&request(&h, BODY), TS * 1000).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("new"));
        let expired = sw(vec![
            expiring_secret("gone", PUBLIC_KEY, TS * 1000 - 1),
            secret("sym", SECRET),
        ]);
        assert_eq!(
            expired.verify(&request(&h, BODY), TS * 1000),
            Err(VerifyError::NoLiveKey)
        );
    }

    #[test]
    fn private_or_malformed_asymmetric_keys_are_config_errors() {
        let seed = "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
        let err = StandardWebhooks::from_config(&serde_json::Value::Null, vec![secret("sk", seed)])
            .unwrap_err();
        assert!(err.0.contains("\"sk\"") && err.0.contains("whpk_"), "{err}");
        assert!(!err.0.contains("VEVTVFNJ"), "{err}");
        for bad in ["whpk_!!!", "whpk_AAAA"] {
            let err =
                StandardWebhooks::from_config(&serde_json::Value::Null, vec![secret("pk", bad)])
                    .unwrap_err();
            assert!(err.0.contains("\"pk\""), "{err}");
        }
    }

    #[test]
    fn sources_with_only_public_keys_cannot_sign() {
        let p = sw(vec![secret("pk", PUBLIC_KEY)]);
        let input = SignInput {
            body: BODY,
            now_ms: TS * 1000,
            delivery_id: "msg_1",
        };
        let err = p.sign(&input).unwrap_err();
        assert!(err.0.contains("private key"), "{err}");
        let mixed = sw(vec![secret("pk", PUBLIC_KEY), secret("sym", SECRET)]);
        let h = mixed.sign(&input).unwrap();
        assert!(mixed.verify(&request(&h, BODY), TS * 1000).is_ok());
    }

    #[test]
    fn stale_and_future_standard_webhooks_vectors_fail_for_the_right_reason() {
        let v = testkit::vector("standardwebhooks-neg-stale");
        let h = v.headers();
        let got = sw(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert!(
            matches!(got, Err(VerifyError::TimestampTooOld { .. })),
            "{got:?}"
        );
        let v = testkit::vector("standardwebhooks-neg-future");
        let h = v.headers();
        let got = sw(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert!(
            matches!(got, Err(VerifyError::TimestampInFuture { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn svix_headers_verify_under_either_name_and_win_over_webhook_headers() {
        let v = testkit::vector("svix-headers");
        let mut h = v.headers();
        // A decoy webhook-* set must be ignored when svix-* is present.
        h.insert("webhook-id", "other");
        h.insert("webhook-timestamp", "1");
        h.insert("webhook-signature", "v1,AAAA");
        for name in [SVIX, STANDARD_WEBHOOKS] {
            let got = provider(name, vec![v.secret()])
                .verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert!(got.is_ok(), "{name}: {got:?}");
        }
    }

    #[test]
    fn v1a_entries_are_skipped_and_do_not_fail_a_matching_v1() {
        let v = testkit::vector("standardwebhooks-asymmetric-v1a");
        let v1a = v.header("webhook-signature");
        let h = headers(ID, &TS.to_string(), &format!("{v1a} v2,xyz {SIG}"));
        assert!(sw(vec![secret("k", SECRET)])
            .verify(&request(&h, BODY), TS * 1000)
            .is_ok());
        let only_v1a = headers(ID, &TS.to_string(), v1a);
        assert!(matches!(
            sw(vec![secret("k", SECRET)]).verify(&request(&only_v1a, BODY), TS * 1000),
            Err(VerifyError::MalformedSignature(_))
        ));
    }

    #[test]
    fn undecoded_whsec_string_as_key_does_not_verify() {
        // What a verifier that forgot to base64-decode would have signed with.
        let key = SECRET.as_bytes();
        let ts = TS.to_string();
        let sig = HmacAlgorithm::Sha256
            .compute(key, &[ID.as_bytes(), b".", ts.as_bytes(), b".", BODY])
            .unwrap();
        let h = headers(
            ID,
            &ts,
            &format!("v1,{}", crypto::SignatureEncoding::Base64.encode(&sig)),
        );
        let got = sw(vec![secret("k", SECRET)]).verify(&request(&h, BODY), TS * 1000);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn secrets_are_accepted_without_prefix_and_without_padding() {
        let h = spec_headers();
        for s in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SECRET] {
            assert!(
                sw(vec![secret("k", s)])
                    .verify(&request(&h, BODY), TS * 1000)
                    .is_ok(),
                "{s}"
            );
        }
        // 32-byte secret: its padded form ends in `=`; the unpadded form must decode too.
        let padded = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmJ5dGU=";
        let sig = sign_with("d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmJ5dGU", ID, TS, BODY);
        let h = headers(ID, &TS.to_string(), &sig);
        for s in [padded, padded.trim_end_matches('=')] {
            assert!(
                sw(vec![secret("k", s)])
                    .verify(&request(&h, BODY), TS * 1000)
                    .is_ok(),
                "{s}"
            );
        }
    }

    #[test]
    fn undecodable_secret_is_a_config_error_naming_the_secret_not_its_value() {
        let err = StandardWebhooks::from_config(
            &serde_json::Value::Null,
            vec![secret("primary", "whsec_!!not-base64!!")],
        )
        .unwrap_err();
        assert!(err.0.contains("\"primary\""), "{err}");
        assert!(!err.0.contains("not-base64"), "{err}");
    }

    #[test]
    fn rotation_accepts_any_listed_signature_and_reports_the_matching_key() {
        let other = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmJ5dGU=";
        let other_sig = sign_with("d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmJ5dGU=", ID, TS, BODY);
        let h = headers(ID, &TS.to_string(), &format!("{other_sig} {SIG}"));
        let p = sw(vec![secret("old", other), secret("new", SECRET)]);
        let got = p.verify(&request(&h, BODY), TS * 1000).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("old"));
        let h = spec_headers();
        let got = p.verify(&request(&h, BODY), TS * 1000).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("new"));
    }

    #[test]
    fn standard_webhooks_extract_takes_id_timestamp_and_body_type() {
        let h = spec_headers();
        let p = sw(vec![secret("k", SECRET)]);
        let got = p
            .extract(&request(&h, br#"{"type":"user.created","data":{}}"#))
            .unwrap()
            .remove(0);
        assert_eq!(
            got,
            Extracted {
                event_id: Some(ID.into()),
                event_type: Some("user.created".into()),
                occurred_at_ms: Some(TS * 1000),
                ..Default::default()
            }
        );
        assert_eq!(
            p.extract(&request(&h, b"not json"))
                .unwrap()
                .remove(0)
                .event_type,
            None
        );
        assert!(p.extract(&request(&Headers::new(), BODY)).is_err());
    }

    #[test]
    fn sign_then_verify_round_trips_under_both_names() {
        for (name, id_header) in [(STANDARD_WEBHOOKS, "webhook-id"), (SVIX, "svix-id")] {
            let p = provider(name, vec![secret("k", SECRET)]);
            assert_eq!(p.name(), name);
            let input = SignInput {
                body: BODY,
                now_ms: TS * 1000 + 500,
                delivery_id: "msg_1",
            };
            let h = p.sign(&input).unwrap();
            assert_eq!(h.get(id_header), Some("msg_1"), "{name}");
            let req = request(&h, BODY);
            assert!(p.verify(&req, TS * 1000).is_ok(), "{name}");
            assert_eq!(
                p.extract(&req).unwrap().remove(0).event_id.as_deref(),
                Some("msg_1")
            );
        }
    }

    #[test]
    fn standard_webhooks_config_errors_are_clear() {
        let err = StandardWebhooks::from_config(
            &serde_json::json!({"tolerance": 1}),
            vec![secret("k", SECRET)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `tolerance`"), "{err}");
        assert!(StandardWebhooks::from_config(&serde_json::Value::Null, vec![]).is_err());
        assert!(StandardWebhooks::from_config_as(
            "stripe",
            &serde_json::Value::Null,
            vec![secret("k", SECRET)]
        )
        .is_err());
    }
}
