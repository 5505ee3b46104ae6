//! One suite over every provider in [`REGISTRY`]: the refusals every signature scheme owes
//! (changed body, another key, rotated and expired keys, stale and future timestamps, missing
//! and garbled signatures, over-long signature lists, secrets kept out of `Debug`, config that
//! names an unknown option or no secret), asserted the same way for each provider from the
//! small [`Case`] its file describes (`suite_case()`). A registered provider without a case
//! fails the suite, so a new provider cannot skip it.
//!
//! A case signs the way the provider's sender does, independently of the provider's own
//! `sign`; the provider's official vectors (tested in its file) pin its `verify`, so a case
//! whose requests verify signs with the real scheme. What only one provider does stays tested
//! in its own file.

use std::sync::Arc;

use serde_json::Value;

use super::crypto::{HmacAlgorithm, MAX_SIGNATURE_CANDIDATES};
use super::{build, ExtractFailure, Provider, SignInput, VerifyError, REGISTRY};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

/// When cases sign: 2026-01-01T00:00:00Z, a whole second (the vectors' default clock).
pub(crate) const T: i64 = 1_767_225_600_000;

/// A key of the provider's kind: what a source is configured with, and what its sender signs
/// with (the same bytes for a shared secret; the private key of a public-key scheme).
#[derive(Debug, Clone)]
pub(crate) struct TestKey {
    pub configured: String,
    pub signing: Vec<u8>,
}

impl TestKey {
    /// A shared secret: configured and signed with as is.
    pub fn shared(secret: &str) -> Self {
        Self {
            configured: secret.to_string(),
            signing: secret.as_bytes().to_vec(),
        }
    }

    /// Two shared secrets.
    pub fn pair(a: &str, b: &str) -> [Self; 2] {
        [Self::shared(a), Self::shared(b)]
    }

    /// The HMAC of the concatenated `parts`, keyed with the signing key.
    pub fn hmac(&self, algorithm: HmacAlgorithm, parts: &[&[u8]]) -> Vec<u8> {
        algorithm
            .compute(&self.signing, parts)
            .expect("HMAC takes any key")
    }
}

/// A request as `verify` sees it.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub method: &'static str,
    pub headers: Headers,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Signed {
    pub fn post(headers: Headers, body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST",
            headers,
            query: Vec::new(),
            body: body.into(),
        }
    }

    pub fn request(&self) -> InboundRequest<'_> {
        InboundRequest {
            method: self.method,
            headers: &self.headers,
            query: &self.query,
            body: &self.body,
        }
    }

    /// This request without header `name` (any case).
    pub(crate) fn without_header(&self, name: &str) -> Self {
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .collect();
        Self {
            headers,
            ..self.clone()
        }
    }

    /// This request with header `name` set to `value` instead.
    pub(crate) fn with_header(&self, name: &str, value: impl Into<String>) -> Self {
        let mut out = self.without_header(name);
        out.headers.insert(name, value);
        out
    }

    /// The value of header `name`, which the case put there.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("the signed request has no {name} header"))
    }

    /// This request with `body`.
    pub(crate) fn with_body(&self, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            ..self.clone()
        }
    }
}

/// How far a signed timestamp may be from the clock, in seconds, by default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    pub past_s: i64,
    pub future_s: i64,
}

/// Where the signature travels, for the "missing" scenario.
pub(crate) enum Carrier {
    /// In headers: absent `signature` is `MissingSignature(signature)`, absent `needed` are
    /// `MissingHeader(name)`.
    Headers {
        signature: &'static str,
        needed: &'static [&'static str],
    },
    /// Elsewhere (body fields): each request with one part stripped, and the answer.
    Custom(fn(&Signed) -> Vec<(Signed, VerifyError)>),
}

impl Carrier {
    /// The signature alone, in header `signature`.
    pub fn header(signature: &'static str) -> Self {
        Carrier::Headers {
            signature,
            needed: &[],
        }
    }
}

/// One provider as the suite drives it.
pub(crate) struct Case {
    /// Its first name in the registry.
    pub name: &'static str,
    /// The scheme `verify` reports for the case's requests.
    pub scheme: &'static str,
    /// The options a working source needs besides its secrets (`Null`: none).
    pub options: fn() -> Value,
    /// Two unrelated keys; `None` for a provider configured with no secret (PayPal, whose
    /// key is the sender's certificate).
    pub keys: Option<fn() -> [TestKey; 2]>,
    /// A request signed the way the sender signs, with `key` (`None` when `keys` is), at
    /// unix ms `now` (a keyless case may only sign at [`T`]).
    pub sign: fn(Option<&TestKey>, i64) -> Signed,
    /// Changes the signed request's body (default [`change_a_digit`]).
    pub tamper: fn(&mut Signed),
    /// What a changed body answers; `None` when the scheme does not cover the body (tokens,
    /// Basic auth): the changed request still verifies.
    pub tampered: Option<VerifyError>,
    /// The signed timestamp's default tolerances; `None` when the scheme signs no time.
    pub freshness: Option<Freshness>,
    pub carrier: Carrier,
    /// Variants of a valid request whose signature (or signed timestamp) is garbled: each is
    /// `MalformedSignature`.
    pub garbled: fn(&Signed) -> Vec<Signed>,
    /// For schemes that accept a list of signatures: the valid request with `n` entries, the
    /// valid one last.
    pub candidates: Option<fn(&Signed, usize) -> Signed>,
    /// Whether the provider's own `sign` (`inlet sign`) can sign; public-key schemes cannot.
    pub signs: bool,
}

impl Case {
    /// A case with the common answers: a changed body is `SignatureMismatch`, no time is
    /// signed, nothing is garbled, one signature per request, the provider signs.
    pub fn new(
        name: &'static str,
        scheme: &'static str,
        keys: fn() -> [TestKey; 2],
        sign: fn(Option<&TestKey>, i64) -> Signed,
        carrier: Carrier,
    ) -> Self {
        Self {
            name,
            scheme,
            options: || Value::Null,
            keys: Some(keys),
            sign,
            tamper: change_a_digit,
            tampered: Some(VerifyError::SignatureMismatch { keys_tried: 1 }),
            freshness: None,
            carrier,
            garbled: |_| Vec::new(),
            candidates: None,
            signs: true,
        }
    }

    fn keys(&self) -> Option<[TestKey; 2]> {
        self.keys.map(|keys| keys())
    }

    /// The provider built through the registry with `secrets`.
    fn build(&self, secrets: Vec<Secret>) -> Arc<dyn Provider> {
        build(self.name, &(self.options)(), secrets)
            .unwrap_or_else(|e| panic!("{}: the case's config does not build: {e}", self.name))
    }

    /// The provider holding `key` as `id` (or no secret, for a keyless case).
    fn with_key(&self, id: &str, key: Option<&TestKey>) -> Arc<dyn Provider> {
        self.build(key.map(|k| vec![secret(id, k, None)]).unwrap_or_default())
    }

    /// A request signed with the first key (or the keyless case's own) at [`T`], and the
    /// provider holding that key as `k0`.
    pub(crate) fn signed(&self) -> (Arc<dyn Provider>, Signed) {
        let keys = self.keys();
        let key = keys.as_ref().map(|k| &k[0]);
        (self.with_key("k0", key), (self.sign)(key, T))
    }
}

fn secret(id: &str, key: &TestKey, not_after_ms: Option<i64>) -> Secret {
    Secret::new(id, key.configured.as_bytes(), not_after_ms)
}

/// The default tamper: the body's first ASCII digit, one up (9 becomes 0). Digits sit in
/// values (ids, amounts, times), so the body stays the same shape.
pub(crate) fn change_a_digit(signed: &mut Signed) {
    let digit = signed
        .body
        .iter_mut()
        .find(|b| b.is_ascii_digit())
        .expect("the case's body has a digit to change; give the case its own tamper");
    *digit = if *digit == b'9' { b'0' } else { *digit + 1 };
}

/// Every provider's case. The suite fails if the registry and this list disagree.
pub(crate) fn cases() -> Vec<Case> {
    use super::*;
    vec![
        stripe::suite_case(),
        github::suite_case(),
        standard_webhooks::suite_case(),
        telegram::suite_case(),
        generic::suite_case(),
        adyen::suite_case(),
        checkout::suite_case(),
        razorpay::suite_case(),
        paypal::suite_case(),
        twilio::suite_case(),
        sendgrid::suite_case(),
        mailgun::suite_case(),
        postmark::suite_case(),
        paddle::suite_case(),
        square::suite_case(),
        intercom::suite_case(),
        linear::suite_case(),
        gitlab::suite_case(),
        shopify::suite_case(),
        slack::suite_case(),
        meta::suite_case(),
        zoom::suite_case(),
        twitch::suite_case(),
        discord::suite_case(),
    ]
}

#[test]
fn every_registered_provider_has_a_case_and_every_case_a_provider() {
    let cases = cases();
    let registered: Vec<&str> = REGISTRY.iter().map(|(names, _)| names[0]).collect();
    let missing: Vec<&&str> = registered
        .iter()
        .filter(|name| !cases.iter().any(|c| c.name == **name))
        .collect();
    assert!(
        missing.is_empty(),
        "registered providers without a suite case (add `suite_case()` to their file and \
         list it in suite.rs): {missing:?}"
    );
    for (i, case) in cases.iter().enumerate() {
        assert!(
            registered.contains(&case.name),
            "case {:?} is not a first name in the registry",
            case.name
        );
        assert!(
            !cases[..i].iter().any(|c| c.name == case.name),
            "two cases for {:?}",
            case.name
        );
    }
}

#[test]
fn a_signed_request_verifies_with_its_key_and_extracts_alike_with_or_without_a_limit() {
    for case in cases() {
        let (p, signed) = case.signed();
        let req = signed.request();
        let verified = p
            .verify(&req, T)
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        assert_eq!(verified.scheme, case.scheme, "{}", case.name);
        match case.keys {
            Some(_) => assert_eq!(verified.key_id.as_deref(), Some("k0"), "{}", case.name),
            None => assert!(verified.key_id.is_some(), "{}", case.name),
        }
        let events = p
            .extract(&req)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(
            !events.is_empty(),
            "{}: the case's request has no event",
            case.name
        );
        assert_eq!(
            p.extract_at_most(&req, usize::MAX),
            Ok(events.clone()),
            "{}",
            case.name
        );
        assert_eq!(
            p.extract_at_most(&req, events.len()),
            Ok(events.clone()),
            "{}",
            case.name
        );
        // Configs allow one event per request at least, so a limit is only met by a batch.
        if events.len() > 1 {
            assert_eq!(
                p.extract_at_most(&req, events.len() - 1),
                Err(ExtractFailure::TooManyEvents {
                    count: events.len(),
                    limit: events.len() - 1
                }),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn a_changed_body_is_refused_where_the_scheme_signs_it() {
    for case in cases() {
        let (p, mut signed) = case.signed();
        let before = signed.body.clone();
        (case.tamper)(&mut signed);
        assert_ne!(
            signed.body, before,
            "{}: the tamper changed nothing",
            case.name
        );
        let got = p.verify(&signed.request(), T);
        match &case.tampered {
            Some(refusal) => assert_eq!(got, Err(refusal.clone()), "{}", case.name),
            None => assert!(got.is_ok(), "{}: {got:?}", case.name),
        }
    }
}

#[test]
fn a_request_signed_with_another_key_is_refused() {
    for case in cases() {
        let Some([k0, k1]) = case.keys() else {
            continue;
        };
        let got = case
            .with_key("k", Some(&k1))
            .verify(&(case.sign)(Some(&k0), T).request(), T);
        assert_eq!(
            got,
            Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
            "{}",
            case.name
        );
    }
}

#[test]
fn during_a_rotation_each_configured_key_verifies_and_is_named() {
    for case in cases() {
        let Some([old, new]) = case.keys() else {
            continue;
        };
        let p = case.build(vec![secret("old", &old, None), secret("new", &new, None)]);
        for (key, id) in [(&old, "old"), (&new, "new")] {
            let got = p.verify(&(case.sign)(Some(key), T).request(), T);
            assert_eq!(
                got.map(|v| v.key_id),
                Ok(Some(id.to_string())),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn a_key_past_its_not_after_no_longer_verifies() {
    for case in cases() {
        let Some([old, new]) = case.keys() else {
            continue;
        };
        let rolled = case.build(vec![
            secret("old", &old, Some(T - 1)),
            secret("new", &new, None),
        ]);
        let before = rolled.verify(&(case.sign)(Some(&old), T - 1).request(), T - 1);
        assert_eq!(
            before.map(|v| v.key_id),
            Ok(Some("old".into())),
            "{}: live until its not_after",
            case.name
        );
        let by_old = (case.sign)(Some(&old), T);
        assert_eq!(
            rolled.verify(&by_old.request(), T),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
            "{}",
            case.name
        );
        let by_new = (case.sign)(Some(&new), T);
        assert!(rolled.verify(&by_new.request(), T).is_ok(), "{}", case.name);
        let expired = case.build(vec![secret("old", &old, Some(T - 1))]);
        assert_eq!(
            expired.verify(&by_old.request(), T),
            Err(VerifyError::NoLiveKey),
            "{}",
            case.name
        );
    }
}

#[test]
fn signed_timestamps_are_refused_past_either_tolerance_and_only_once_authentic() {
    for case in cases() {
        let Some(Freshness { past_s, future_s }) = case.freshness else {
            continue;
        };
        let (p, signed) = case.signed();
        let req = signed.request();
        let at = |s: i64| T + s * 1000;
        assert!(p.verify(&req, at(past_s)).is_ok(), "{}", case.name);
        assert_eq!(
            p.verify(&req, at(past_s + 1)),
            Err(VerifyError::TimestampTooOld {
                age_s: past_s + 1,
                tolerance_s: past_s
            }),
            "{}",
            case.name
        );
        assert!(p.verify(&req, at(-future_s)).is_ok(), "{}", case.name);
        assert_eq!(
            p.verify(&req, at(-future_s - 1)),
            Err(VerifyError::TimestampInFuture {
                ahead_s: future_s + 1,
                tolerance_s: future_s
            }),
            "{}",
            case.name
        );
        // A stale forgery is told it is a forgery, not that it is late: a changed body…
        if let Some(refusal) = &case.tampered {
            let mut forged = signed.clone();
            (case.tamper)(&mut forged);
            assert_eq!(
                p.verify(&forged.request(), at(past_s + 1)),
                Err(refusal.clone()),
                "{}",
                case.name
            );
        }
        // …or another key.
        if let Some([_, other]) = case.keys() {
            let got = case
                .with_key("k", Some(&other))
                .verify(&req, at(past_s + 1));
            assert_eq!(
                got,
                Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn a_missing_signature_or_signed_part_is_named() {
    for case in cases() {
        let (p, signed) = case.signed();
        let stripped = match &case.carrier {
            Carrier::Headers { signature, needed } => {
                let mut out = vec![(
                    signed.without_header(signature),
                    VerifyError::MissingSignature(signature.to_string()),
                )];
                for name in *needed {
                    out.push((
                        signed.without_header(name),
                        VerifyError::MissingHeader(name.to_string()),
                    ));
                }
                out
            }
            Carrier::Custom(strip) => strip(&signed),
        };
        for (req, expected) in stripped {
            assert_eq!(
                p.verify(&req.request(), T),
                Err(expected),
                "{}: {req:?}",
                case.name
            );
        }
    }
}

#[test]
fn a_garbled_signature_is_malformed() {
    for case in cases() {
        let (p, signed) = case.signed();
        for req in (case.garbled)(&signed) {
            let got = p.verify(&req.request(), T);
            assert!(
                matches!(got, Err(VerifyError::MalformedSignature(_))),
                "{}: {req:?}: {got:?}",
                case.name
            );
        }
    }
}

#[test]
fn a_signature_list_longer_than_the_bound_is_refused_even_with_the_right_entry() {
    for case in cases() {
        let Some(list) = case.candidates else {
            continue;
        };
        let (p, signed) = case.signed();
        let full = list(&signed, MAX_SIGNATURE_CANDIDATES);
        assert!(p.verify(&full.request(), T).is_ok(), "{}", case.name);
        let over = list(&signed, MAX_SIGNATURE_CANDIDATES + 1);
        let got = p.verify(&over.request(), T);
        assert!(
            matches!(&got, Err(VerifyError::MalformedSignature(why)) if why.contains("more than the")),
            "{}: {got:?}",
            case.name
        );
    }
}

/// No six bytes in a row of any key (configured or signing text) appear in `Debug`: not the
/// key, nor its prefix (`whsec_`), nor a slice of it.
#[test]
fn debug_output_never_shows_a_key() {
    for case in cases() {
        let Some([k0, k1]) = case.keys() else {
            continue;
        };
        let p = case.build(vec![secret("old", &k0, None), secret("new", &k1, None)]);
        let shown = format!("{p:?}");
        for key in [&k0, &k1] {
            for text in [key.configured.as_bytes(), &key.signing] {
                let leak = text
                    .windows(6)
                    .find(|w| shown.as_bytes().windows(6).any(|s| s == *w));
                assert!(
                    leak.is_none(),
                    "{}: {:?} of a key in {shown}",
                    case.name,
                    leak.map(String::from_utf8_lossy)
                );
            }
        }
    }
}

#[test]
fn config_with_an_unknown_option_or_without_its_secrets_is_refused() {
    for case in cases() {
        let mut options = (case.options)();
        if options.is_null() {
            options = serde_json::json!({});
        }
        options["no_such_option"] = 1.into();
        let keys = case.keys();
        let secrets = || match &keys {
            Some([k0, _]) => vec![secret("k0", k0, None)],
            None => Vec::new(),
        };
        let err = build(case.name, &options, secrets())
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.0.contains("unknown field `no_such_option`"),
            "{}: {err}",
            case.name
        );
        let wrong_secrets = match &keys {
            Some(_) => Vec::new(),
            None => vec![Secret::new("k", b"s".to_vec(), None)],
        };
        assert!(
            build(case.name, &(case.options)(), wrong_secrets).is_err(),
            "{}",
            case.name
        );
    }
}

#[test]
fn the_providers_own_signature_of_its_sample_verifies_or_it_says_it_cannot_sign() {
    for case in cases() {
        let (p, _) = case.signed();
        let body = p.sample_body("0d5c2f8e-1b7a-4a8c-9e31-6f0b2a4c7d9e", T);
        let input = SignInput {
            body: &body,
            now_ms: T,
            delivery_id: "d-1",
        };
        let signed = p.sign(&input);
        if !case.signs {
            assert!(signed.is_err(), "{}: {signed:?}", case.name);
            continue;
        }
        let headers = signed.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let req = InboundRequest {
            method: "POST",
            headers: &headers,
            query: &[],
            body: &body,
        };
        let verified = p.verify(&req, T);
        assert_eq!(
            verified.map(|v| v.key_id),
            Ok(Some("k0".into())),
            "{}",
            case.name
        );
        let events = p
            .extract(&req)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(!events.is_empty(), "{}", case.name);
    }
}
