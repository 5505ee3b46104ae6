//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 (or HMAC-SHA256 when
//! `X-Twilio-Webhooks-Signature-Settings` says `algorithm=HMAC_SHA256`) keyed with the Auth
//! Token (or SharedKey secret) as UTF-8, over the URL Twilio requested:
//! - form posts: `url` + every POST parameter sorted by name, `name + value`, no separators;
//!   a repeated name contributes each of its (sorted, de-duplicated) values;
//! - JSON/raw bodies: the URL alone, whose query carries `bodySHA256=<hex sha256(body)>`,
//!   and separately that digest must equal the body's;
//! - GET: the URL alone (the parameters are in its query).
//!
//! The URL is the configured public one (option `url`), never the Lambda's
//! view of the request, tried with and without the explicit default port as the SDKs do.
//! No timestamp is signed: replay protection is the dedupe key.
//! Source: twilio-python 9.13 `twilio/request_validator.py`, twilio-node 6.3 `webhooks.ts`.

use serde::Deserialize;
use sha2::Digest;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding};
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

const SIGNATURE: &str = "x-twilio-signature";
const SETTINGS: &str = "x-twilio-webhooks-signature-settings";
const IDEMPOTENCY: &str = "i-twilio-idempotency-token";
const BODY_DIGEST_PARAM: &str = "bodySHA256";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioOptions {
    /// The public URL exactly as configured in Twilio (scheme, host, port, path and query).
    url: String,
}

#[derive(Debug)]
pub struct Twilio {
    keys: Keyring,
    url: String,
}

impl Twilio {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: TwilioOptions = crypto::parse_options("twilio", options)?;
        if split_authority(&opts.url).is_none() {
            return Err(ProviderConfigError(
                "twilio options: `url` must be the absolute http(s):// URL configured in Twilio"
                    .into(),
            ));
        }
        Ok(Self {
            keys: Keyring::new("twilio", secrets)?,
            url: opts.url,
        })
    }

    /// Every URL the signature may have been computed over: the configured URL (plus the
    /// `bodySHA256` Twilio appends for raw bodies), and the configured path with the query the
    /// request actually carried (per-request callback parameters), each with and without the
    /// explicit default port. Trying several candidates only widens which *signed* strings
    /// match; each still needs a valid MAC.
    fn candidate_urls(&self, req: &InboundRequest<'_>, signed: &Signed) -> Vec<String> {
        let mut bases = Vec::with_capacity(2);
        match signed {
            Signed::Body { digest } => bases.push(format!(
                "{}{}{BODY_DIGEST_PARAM}={digest}",
                self.url,
                if self.url.contains('?') { '&' } else { '?' }
            )),
            _ => bases.push(self.url.clone()),
        }
        if !req.query.is_empty() {
            let path = self
                .url
                .split_once('?')
                .map_or(self.url.as_str(), |(p, _)| p);
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(req.query.iter())
                .finish();
            bases.push(format!("{path}?{query}"));
        }
        let mut out: Vec<String> = Vec::with_capacity(4);
        for base in bases {
            for url in port_variants(&base) {
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out
    }
}

/// What the signature covers besides the URL.
enum Signed<'a> {
    /// Sorted `name + value` of the form body.
    Form(Vec<(String, String)>),
    /// GET: the URL (with its query) is everything.
    UrlOnly,
    /// Raw (JSON) body: the URL carries the body's digest.
    Body { digest: &'a str },
}

impl<'a> Signed<'a> {
    fn of(req: &InboundRequest<'a>) -> Self {
        if let Some((_, digest)) = req.query.iter().find(|(k, _)| k == BODY_DIGEST_PARAM) {
            return Signed::Body { digest };
        }
        if req.method == "GET" || req.method == "HEAD" {
            return Signed::UrlOnly;
        }
        Signed::Form(sorted_form(req.body))
    }
}

/// Form parameters sorted by name then value, repeated identical pairs once (both SDKs sort
/// and de-duplicate the values of a repeated key; vector `twilio-form-duplicate-keys`).
fn sorted_form(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// `url` followed by each `name`, `value`: the signed bytes, never copied into one buffer.
fn message<'m>(url: &'m str, params: &'m [(String, String)]) -> Vec<&'m [u8]> {
    let mut parts = Vec::with_capacity(1 + 2 * params.len());
    parts.push(url.as_bytes());
    for (name, value) in params {
        parts.push(name.as_bytes());
        parts.push(value.as_bytes());
    }
    parts
}

/// `(scheme://, authority, rest)` of an absolute http(s) URL.
fn split_authority(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let scheme = url.get(..scheme_end)?;
    if !scheme.eq_ignore_ascii_case("https://") && !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = url.get(scheme_end..)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, rest.get(end..)?))
}

/// The URL as given, plus the same URL with the scheme's default port added (when it has
/// none) or removed (when it names exactly the default port). Vector `twilio-form-port-443`
/// was signed over `https://mycompany.com:443/…`.
fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, authority, rest)) = split_authority(url) else {
        return out;
    };
    let default = if scheme.eq_ignore_ascii_case("https://") {
        "443"
    } else {
        "80"
    };
    // The port follows the last ':' after any userinfo and any IPv6 literal's ']'.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let hostport = authority.get(host_start..).unwrap_or_default();
    let after_bracket = hostport.rfind(']').map_or(0, |b| b + 1);
    let port_colon = hostport
        .get(after_bracket..)
        .and_then(|tail| tail.rfind(':'))
        .map(|c| host_start + after_bracket + c);
    match port_colon {
        Some(colon) => {
            if authority.get(colon + 1..) == Some(default) {
                let bare = authority.get(..colon).unwrap_or_default();
                out.push(format!("{scheme}{bare}{rest}"));
            }
        }
        None => out.push(format!("{scheme}{authority}:{default}{rest}")),
    }
    out
}

/// `X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256`; absent header or
/// absent `algorithm` means HMAC-SHA1, as in both SDKs.
fn algorithm(headers: &Headers) -> Result<HmacAlgorithm, VerifyError> {
    let Some(settings) = headers.get(SETTINGS) else {
        return Ok(HmacAlgorithm::Sha1);
    };
    let named = settings
        .split(',')
        .filter_map(|item| item.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("algorithm"))
        .map(|(_, v)| v.trim());
    match named {
        None => Ok(HmacAlgorithm::Sha1),
        Some(a) if a.eq_ignore_ascii_case("HMAC_SHA1") => Ok(HmacAlgorithm::Sha1),
        Some(a) if a.eq_ignore_ascii_case("HMAC_SHA256") => Ok(HmacAlgorithm::Sha256),
        Some(_) => Err(VerifyError::MalformedSignature(format!(
            "{SETTINGS}: unsupported algorithm"
        ))),
    }
}

/// Message status (`MessageStatus`, or the legacy `SmsStatus` twin) → canonical type.
fn message_canonical(status: &str) -> Option<&'static str> {
    match status {
        "delivered" => Some(canonical::MESSAGE_DELIVERED),
        "sent" => Some(canonical::MESSAGE_SENT),
        "failed" | "undelivered" => Some(canonical::MESSAGE_FAILED),
        "read" => Some(canonical::MESSAGE_OPENED),
        "received" | "receiving" => Some(canonical::MESSAGE_RECEIVED),
        _ => None,
    }
}

/// The event in Twilio's form parameters: dedupe key, type, canonical type and counterparty.
fn form_event(params: &[(String, String)], idempotency: Option<&str>) -> Extracted {
    let get = |name| fields::pair(params, name);
    let message_status = get("MessageStatus").or_else(|| get("SmsStatus"));
    let call_status = get("CallStatus");
    let event_id = [
        ("MessageSid", "MessageStatus"),
        ("CallSid", "CallStatus"),
        ("SmsSid", "SmsStatus"),
    ]
    .iter()
    .find_map(|(sid, status)| Some(format!("{}#{}", get(sid)?, get(status)?)))
    .or_else(|| {
        get("MessageSid")
            .or_else(|| get("CallSid"))
            .map(str::to_string)
    });
    // An incoming message carries its Body and at most `SmsStatus=received`.
    let incoming_message = get("Body").is_some()
        && get("MessageStatus").is_none()
        && message_status.is_none_or(|s| s == "received");
    let (event_type, canonical_type) = if let Some(kind) = get("EventType") {
        (Some(kind.to_string()), None)
    } else if incoming_message {
        (
            Some("Message.received".to_string()),
            Some(canonical::MESSAGE_RECEIVED),
        )
    } else if let Some(status) = call_status {
        (
            Some(format!("CallStatus.{status}")),
            Some(canonical::CALL_STATUS),
        )
    } else if let Some(status) = message_status {
        (
            Some(format!("MessageStatus.{status}")),
            message_canonical(status),
        )
    } else {
        (None, None)
    };
    // The counterparty: the sender of what came in, the recipient of what went out.
    let inbound = canonical_type == Some(canonical::MESSAGE_RECEIVED)
        || get("Direction").is_some_and(|d| d.starts_with("inbound"));
    let entity = if inbound { get("From") } else { get("To") };
    Extracted {
        event_id,
        unsigned_id: idempotency.map(str::to_string),
        event_type,
        canonical_type,
        entity: entity.map(str::to_string),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let presented = crypto::required_header(req.headers, SIGNATURE)?;
        let sig = SignatureEncoding::Base64
            .decode(presented)
            .ok_or_else(|| VerifyError::MalformedSignature(format!("{SIGNATURE} is not base64")))?;
        let algorithm = algorithm(req.headers)?;
        let signed = Signed::of(req);
        let params: &[(String, String)] = match &signed {
            Signed::Form(pairs) => pairs,
            _ => &[],
        };
        let urls = self.candidate_urls(req, &signed);
        let key_id = self.keys.first_match(now_ms, |key| {
            urls.iter()
                .any(|url| algorithm.verify(key, &message(url, params), &sig))
        })?;
        // The URL (with the digest) is authentic; now the body must be the one it describes.
        if let Signed::Body { digest } = signed {
            let claimed = SignatureEncoding::Hex.decode(digest).ok_or_else(|| {
                VerifyError::BodyDigestMismatch(format!("{BODY_DIGEST_PARAM} is not hex"))
            })?;
            if !crypto::token_eq(&claimed, &sha2::Sha256::digest(req.body)) {
                return Err(VerifyError::BodyDigestMismatch(format!(
                    "sha256(body) differs from {BODY_DIGEST_PARAM}"
                )));
            }
        }
        Ok(Verified {
            scheme: match algorithm {
                HmacAlgorithm::Sha256 => "twilio_hmac_sha256",
                _ => "twilio_hmac_sha1",
            },
            key_id: Some(key_id),
        })
    }

    /// Dedupe key: `MessageSid#MessageStatus`, `CallSid#CallStatus`, `SmsSid#SmsStatus` from
    /// the signed parameters (a status callback per status change), else the bare Sid, else
    /// the body hash (raw JSON bodies). `I-Twilio-Idempotency-Token` is not signed: it is
    /// recorded as the provider's id but never keys the event.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let idempotency = req
            .headers
            .get(IDEMPOTENCY)
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let event = match Signed::of(req) {
            Signed::Form(params) => form_event(&params, idempotency),
            Signed::UrlOnly => form_event(req.query, idempotency),
            Signed::Body { .. } => Extracted {
                unsigned_id: idempotency.map(str::to_string),
                ..Default::default()
            },
        };
        Ok(vec![event])
    }

    /// A message status callback, as a form body (the format `sign` signs).
    fn sample_body(&self, id: &str, _now_ms: i64) -> Vec<u8> {
        let sid: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
        form_urlencoded::Serializer::new(String::new())
            .append_pair("AccountSid", "AC00000000000000000000000000000000")
            .append_pair("ApiVersion", "2010-04-01")
            .append_pair("From", "+15005550006")
            .append_pair("MessageSid", &format!("SM{sid}"))
            .append_pair("MessageStatus", "delivered")
            .append_pair("SmsSid", &format!("SM{sid}"))
            .append_pair("SmsStatus", "delivered")
            .append_pair("To", "+14155552671")
            .finish()
            .into_bytes()
    }

    /// Form bodies only: a raw body is signed over a URL carrying its `bodySHA256`, which
    /// headers cannot express.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        if matches!(
            input.body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        ) {
            return Err(ProviderConfigError(
                "twilio signs JSON bodies over a URL carrying bodySHA256=<digest>, which headers \
                 cannot carry; `inlet sign` signs form bodies"
                    .into(),
            ));
        }
        let key = self.keys.signing_key(input.now_ms)?;
        let params = sorted_form(input.body);
        let sig = HmacAlgorithm::Sha1.compute(key, &message(&self.url, &params))?;
        Ok(Headers::from_iter([
            (SIGNATURE, SignatureEncoding::Base64.encode(&sig)),
            ("content-type", FORM_CONTENT_TYPE.to_string()),
            (IDEMPOTENCY, input.delivery_id.to_string()),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Twilio: `X-Twilio-Signature: <base64>`,
/// HMAC-SHA1 (auth token) of the configured URL followed by every form parameter, sorted,
/// name then value.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = b"CallSid=CA1234567890ABCDE&CallStatus=completed&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        params.sort();
        let mut signed = URL.to_string();
        for (name, value) in &params {
            signed.push_str(name);
            signed.push_str(value);
        }
        let tag = key
            .expect("twilio is keyed")
            .hmac(HmacAlgorithm::Sha1, &[signed.as_bytes()]);
        let headers = Headers::from_iter([(SIGNATURE, SignatureEncoding::Base64.encode(&tag))]);
        Signed::post(headers, *body)
    }
    Case {
        options: || serde_json::json!({ "url": URL }),
        garbled: |s| {
            vec![
                s.with_header(SIGNATURE, "***"),
                s.with_header(SETTINGS, "key=K1,algorithm=HMAC_MD5"),
            ]
        },
        ..Case::new(
            "twilio",
            "twilio_hmac_sha1",
            || {
                TestKey::pair(
                    "9a3f0c2e7b5d41e8a6c4f2d0b8e6a4c2",
                    "1f7e3d9c5b1a4f8e2d6c0b4a8f2e6d0c",
                )
            },
            sign,
            Carrier::header(SIGNATURE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, secret, Vector};

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const FORM: &[u8] = b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";

    fn twilio(url: &str, secrets: Vec<Secret>) -> Twilio {
        Twilio::from_config(&serde_json::json!({ "url": url }), secrets).unwrap()
    }

    fn query_of(url: &str) -> Vec<(String, String)> {
        url.split_once('?')
            .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    fn req<'a>(
        method: &'a str,
        headers: &'a Headers,
        query: &'a [(String, String)],
        body: &'a [u8],
    ) -> InboundRequest<'a> {
        InboundRequest {
            method,
            headers,
            query,
            body,
        }
    }

    /// A vector's configured URL is its URL without the `bodySHA256` Twilio appends; the
    /// request arrives with the full query.
    fn configured_url(v: &Vector) -> String {
        let url = v.url.clone().expect("twilio vector has a url");
        match url.split_once("&bodySHA256=") {
            Some((configured, _)) => configured.to_string(),
            None => url,
        }
    }

    #[test]
    fn every_twilio_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["twilio"]) {
            let h = v.headers();
            let query = query_of(v.url.as_deref().unwrap());
            let method = v.method.as_deref().unwrap_or("POST");
            let p = twilio(&configured_url(&v), vec![v.secret()]);
            let got = p.verify(&req(method, &h, &query, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
                assert_eq!(verified.scheme, "twilio_hmac_sha1");
            }
        }
    }

    #[test]
    fn twilio_vectors_also_verify_with_no_query_on_the_request() {
        for id in [
            "twilio-form",
            "twilio-form-port-443",
            "twilio-form-duplicate-keys",
        ] {
            let v = testkit::vector(id);
            let h = v.headers();
            let got = twilio(URL, vec![v.secret()])
                .verify(&req("POST", &h, &[], v.body.as_bytes()), NOW_MS);
            assert!(got.is_ok(), "{id}: {got:?}");
        }
    }

    #[test]
    fn tampered_twilio_json_body_is_a_body_digest_mismatch() {
        let v = testkit::vector("twilio-neg-json-tampered");
        let h = v.headers();
        let query = query_of(v.url.as_deref().unwrap());
        let got = twilio(&configured_url(&v), vec![v.secret()])
            .verify(&req("POST", &h, &query, v.body.as_bytes()), NOW_MS);
        assert!(
            matches!(got, Err(VerifyError::BodyDigestMismatch(_))),
            "{got:?}"
        );
    }

    #[test]
    fn twilio_json_digest_that_is_not_hex_is_a_body_digest_mismatch() {
        let query = vec![("bodySHA256".to_string(), "zz".to_string())];
        let url = format!("{URL}&bodySHA256=zz");
        let sig = HmacAlgorithm::Sha1
            .compute(b"12345", &[url.as_bytes()])
            .unwrap();
        let h = Headers::from_iter([(SIGNATURE, SignatureEncoding::Base64.encode(&sig))]);
        let got =
            twilio(URL, vec![secret("k", "12345")]).verify(&req("POST", &h, &query, b"{}"), NOW_MS);
        assert!(
            matches!(got, Err(VerifyError::BodyDigestMismatch(_))),
            "{got:?}"
        );
    }

    #[test]
    fn twilio_signature_over_another_url_is_refused() {
        let v = testkit::vector("twilio-form");
        let h = v.headers();
        let got = twilio(
            "https://mycompany.com/other.php?foo=1&bar=2",
            vec![v.secret()],
        )
        .verify(&req("POST", &h, &[], v.body.as_bytes()), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn configured_port_443_also_matches_a_signature_without_it() {
        let v = testkit::vector("twilio-form");
        let h = v.headers();
        let got = twilio(
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            vec![v.secret()],
        )
        .verify(&req("POST", &h, &[], v.body.as_bytes()), NOW_MS);
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn port_variants_toggle_only_the_default_port() {
        assert_eq!(
            port_variants("https://a.com/x"),
            ["https://a.com/x", "https://a.com:443/x"]
        );
        assert_eq!(
            port_variants("http://u:p@a.com:80?q=1"),
            ["http://u:p@a.com:80?q=1", "http://u:p@a.com?q=1"]
        );
        assert_eq!(
            port_variants("https://a.com:8443/x"),
            ["https://a.com:8443/x"]
        );
        assert_eq!(
            port_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
    }

    #[test]
    fn shared_key_settings_select_hmac_sha256() {
        let params = sorted_form(FORM);
        let sig = HmacAlgorithm::Sha256
            .compute(b"shared-key-secret", &message(URL, &params))
            .unwrap();
        let h = Headers::from_iter([
            (SIGNATURE, SignatureEncoding::Base64.encode(&sig)),
            (SETTINGS, "key=KS123,algorithm=HMAC_SHA256".to_string()),
        ]);
        let p = twilio(
            URL,
            vec![
                secret("token", "12345"),
                secret("shared", "shared-key-secret"),
            ],
        );
        let got = p.verify(&req("POST", &h, &[], FORM), NOW_MS).unwrap();
        assert_eq!(got.scheme, "twilio_hmac_sha256");
        assert_eq!(got.key_id.as_deref(), Some("shared"));
        // The same signature presented as SHA-1 (no settings header) does not verify.
        let h = Headers::from_iter([(SIGNATURE, SignatureEncoding::Base64.encode(&sig))]);
        assert_eq!(
            p.verify(&req("POST", &h, &[], FORM), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 2 })
        );
    }

    #[test]
    fn get_requests_are_signed_over_the_url_with_its_query() {
        let query = vec![
            ("CallSid".to_string(), "CA1".to_string()),
            ("CallStatus".to_string(), "ringing".to_string()),
            ("From".to_string(), "+1 415".to_string()),
        ];
        let url = "https://example.com/voice?CallSid=CA1&CallStatus=ringing&From=%2B1+415";
        let sig = HmacAlgorithm::Sha1
            .compute(b"12345", &[url.as_bytes()])
            .unwrap();
        let h = Headers::from_iter([(SIGNATURE, SignatureEncoding::Base64.encode(&sig))]);
        let p = twilio("https://example.com/voice", vec![secret("k", "12345")]);
        assert!(p.verify(&req("GET", &h, &query, b""), NOW_MS).is_ok());
        let got = p.extract(&req("GET", &h, &query, b"")).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("CA1#ringing"));
        assert_eq!(got.canonical_type, Some(canonical::CALL_STATUS));
    }

    #[test]
    fn status_callbacks_map_to_canonical_message_types() {
        let p = twilio(URL, vec![secret("k", "12345")]);
        let h = Headers::new();
        for (status, canonical_type) in [
            ("delivered", Some(canonical::MESSAGE_DELIVERED)),
            ("sent", Some(canonical::MESSAGE_SENT)),
            ("failed", Some(canonical::MESSAGE_FAILED)),
            ("undelivered", Some(canonical::MESSAGE_FAILED)),
            ("read", Some(canonical::MESSAGE_OPENED)),
            ("queued", None),
        ] {
            let body = format!(
                "MessageSid=SM1&MessageStatus={status}&SmsSid=SM1&SmsStatus={status}&From=%2B1500&To=%2B1415"
            );
            let got = p
                .extract(&req("POST", &h, &[], body.as_bytes()))
                .unwrap()
                .remove(0);
            assert_eq!(got.event_id, Some(format!("SM1#{status}")));
            assert_eq!(got.event_type, Some(format!("MessageStatus.{status}")));
            assert_eq!(got.canonical_type, canonical_type, "{status}");
            assert_eq!(got.entity.as_deref(), Some("+1415"), "recipient");
        }
    }

    #[test]
    fn incoming_message_is_received_and_its_sender_is_the_entity() {
        let body = b"MessageSid=SM9&SmsSid=SM9&SmsStatus=received&Body=hi&From=%2B1500&To=%2B1415";
        let got = twilio(URL, vec![secret("k", "12345")])
            .extract(&req("POST", &Headers::new(), &[], body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id.as_deref(), Some("SM9#received"));
        assert_eq!(got.canonical_type, Some(canonical::MESSAGE_RECEIVED));
        assert_eq!(got.event_type.as_deref(), Some("Message.received"));
        assert_eq!(got.entity.as_deref(), Some("+1500"));
    }

    #[test]
    fn the_signed_sid_and_status_key_the_event_not_the_idempotency_token() {
        let v = testkit::vector("twilio-form");
        let h = Headers::from_iter([(IDEMPOTENCY, "idem-1")]);
        let got = twilio(URL, vec![v.secret()])
            .extract(&req(
                "POST",
                &h,
                &[],
                b"CallSid=CA1&CallStatus=completed&Direction=inbound&From=%2B1500&To=%2B1415",
            ))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id.as_deref(), Some("CA1#completed"));
        assert_eq!(got.unsigned_id.as_deref(), Some("idem-1"));
        assert_eq!(got.event_type.as_deref(), Some("CallStatus.completed"));
        assert_eq!(got.canonical_type, Some(canonical::CALL_STATUS));
        assert_eq!(got.entity.as_deref(), Some("+1500"));
    }

    #[test]
    fn twilio_vector_form_extracts_the_call_sid() {
        let v = testkit::vector("twilio-form");
        let got = twilio(URL, vec![v.secret()])
            .extract(&req("POST", &Headers::new(), &[], v.body.as_bytes()))
            .unwrap()
            .remove(0);
        // No CallStatus in the quoted vector: the bare Sid.
        assert_eq!(got.event_id.as_deref(), Some("CA1234567890ABCDE"));
        assert_eq!(got.entity.as_deref(), Some("+18005551212"));
    }

    #[test]
    fn twilio_json_body_is_keyed_by_its_digest_and_named_by_the_idempotency_header() {
        let v = testkit::vector("twilio-json-bodySHA256");
        let query = query_of(v.url.as_deref().unwrap());
        let p = twilio(&configured_url(&v), vec![v.secret()]);
        let h = Headers::from_iter([(IDEMPOTENCY, "idem-2")]);
        let got = p
            .extract(&req("POST", &h, &query, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                unsigned_id: Some("idem-2".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn twilio_sign_then_verify_round_trips_with_the_sample_body() {
        let p = twilio(URL, vec![secret("k", "12345")]);
        let body = p.sample_body("0b6a-4f1e", NOW_MS);
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "d-1",
        };
        let h = p.sign(&input).unwrap();
        assert_eq!(h.get("content-type"), Some(FORM_CONTENT_TYPE));
        let request = req("POST", &h, &[], &body);
        assert!(p.verify(&request, NOW_MS).is_ok());
        let got = p.extract(&request).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("SM0b6a4f1e#delivered"));
        assert_eq!(got.canonical_type, Some(canonical::MESSAGE_DELIVERED));
        assert!(p
            .sign(&SignInput {
                body: b"{\"a\":1}",
                now_ms: NOW_MS,
                delivery_id: "d"
            })
            .is_err());
    }

    #[test]
    fn twilio_config_requires_an_absolute_url() {
        let err =
            Twilio::from_config(&serde_json::Value::Null, vec![secret("k", "1")]).unwrap_err();
        assert!(err.0.contains("missing field `url`"), "{err}");
        for bad in ["/myapp.php", "ftp://x/y", "https://"] {
            assert!(
                Twilio::from_config(&serde_json::json!({ "url": bad }), vec![secret("k", "1")])
                    .is_err(),
                "{bad}"
            );
        }
        let err = Twilio::from_config(
            &serde_json::json!({"url": URL, "algo": "sha1"}),
            vec![secret("k", "1")],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `algo`"), "{err}");
        assert!(Twilio::from_config(&serde_json::json!({ "url": URL }), vec![]).is_err());
    }
}
