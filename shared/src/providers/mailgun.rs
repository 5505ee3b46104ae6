//! Mailgun: the signature lives in the **body**. JSON webhooks carry
//! `{"signature":{"timestamp","token","signature"},"event-data":{…}}`; form-encoded (legacy
//! webhooks, routes) carry top-level `timestamp`, `token`, `signature` fields. HMAC-SHA256
//! hex over `timestamp + token` with the HTTP webhook signing key (not the API key). The
//! event data is **not** covered by the signature: what authenticates it is that only Mailgun
//! knows a fresh `(timestamp, token)` pair's MAC, and the dedupe stops its replay.
//! Source: mailgun-python `mailgun/security.py` (`verify_webhook`, 900 s), docs "Securing
//! webhooks".

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MailgunOptions {
    /// The Python SDK's `max_age_seconds=900`, applied to the absolute skew.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for MailgunOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 900,
            future_tolerance_seconds: 900,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Mailgun {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Mailgun {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: MailgunOptions = crypto::parse_options("mailgun", options)?;
        Ok(Self {
            keys: Keyring::new("mailgun", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// The body, in whichever of Mailgun's two shapes it came.
enum Body {
    Json(serde_json::Map<String, serde_json::Value>),
    Form(Vec<(String, String)>),
}

impl Body {
    fn parse(body: &[u8]) -> Option<Self> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            crypto::json_object(body).map(Body::Json)
        } else {
            Some(Body::Form(
                form_urlencoded::parse(body).into_owned().collect(),
            ))
        }
    }

    /// A signature field (`timestamp`, `token`, `signature`): in `signature{}` for JSON, at
    /// the top level for forms.
    fn signature_field(&self, name: &str) -> Option<&str> {
        match self {
            Body::Json(map) => map.get("signature")?.get(name)?.as_str(),
            Body::Form(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
        .map(str::trim)
        .filter(|v| !v.is_empty())
    }

    fn where_(&self) -> &'static str {
        match self {
            Body::Json(_) => "in the JSON body's signature object",
            Body::Form(_) => "form field",
        }
    }
}

fn canonical_for(event: &str, severity: Option<&str>) -> Option<&'static str> {
    match event {
        "accepted" => Some(canonical::MESSAGE_SENT),
        "delivered" => Some(canonical::MESSAGE_DELIVERED),
        "opened" => Some(canonical::MESSAGE_OPENED),
        "clicked" => Some(canonical::MESSAGE_CLICKED),
        // A permanent failure is a bounce (the address is dead); a temporary one is a failed
        // attempt Mailgun retries.
        "failed" if severity == Some("permanent") => Some(canonical::MESSAGE_BOUNCED),
        "failed" => Some(canonical::MESSAGE_FAILED),
        "complained" => Some(canonical::MESSAGE_COMPLAINED),
        "unsubscribed" => Some(canonical::MESSAGE_UNSUBSCRIBED),
        _ => None,
    }
}

/// `event-data.timestamp` is float seconds (`1767225598.5`); legacy forms send a string.
fn seconds_to_ms(value: &serde_json::Value) -> Option<i64> {
    time::fractional_seconds_ms(match value {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        other => other.as_f64()?,
    })
}

#[async_trait::async_trait]
impl Provider for Mailgun {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let body = Body::parse(req.body).ok_or_else(|| {
            VerifyError::MissingSignature("signature (body is not a JSON object)".into())
        })?;
        let signature = body
            .signature_field("signature")
            .ok_or_else(|| VerifyError::MissingSignature(format!("signature {}", body.where_())))?;
        let timestamp = body
            .signature_field("timestamp")
            .ok_or_else(|| VerifyError::MissingHeader(format!("timestamp {}", body.where_())))?;
        let token = body
            .signature_field("token")
            .ok_or_else(|| VerifyError::MissingHeader(format!("token {}", body.where_())))?;
        let ts = crypto::parse_unix(timestamp)?;
        let sig = SignatureEncoding::Hex
            .decode(signature)
            .ok_or_else(|| VerifyError::MalformedSignature("signature is not hex".into()))?;
        let parts: [&[u8]; 2] = [timestamp.as_bytes(), token.as_bytes()];
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &parts, &sig)
        })?;
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "mailgun_hmac_sha256",
            key_id: Some(key_id),
        })
    }

    /// Dedupe key: `event-data.id` (Mailgun's id for the event) when present, else the
    /// signature `token` (unique per delivery, what the docs say to cache; legacy forms have
    /// nothing else). A retried delivery of one event keeps its `event-data.id`.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let body = Body::parse(req.body).ok_or_else(|| {
            ExtractError("mailgun body is neither a JSON object nor a form".into())
        })?;
        let token = body.signature_field("token").map(str::to_string);
        let event = match &body {
            Body::Json(map) => {
                let data = map
                    .get("event-data")
                    .and_then(|d| d.as_object())
                    .ok_or_else(|| {
                        ExtractError("mailgun body has no \"event-data\" object".into())
                    })?;
                let text = |name: &str| fields::text(data.get(name));
                let kind = text("event");
                Extracted {
                    event_id: text("id").map(str::to_string).or(token),
                    event_type: kind.map(str::to_string),
                    canonical_type: kind.and_then(|k| canonical_for(k, text("severity"))),
                    occurred_at_ms: data.get("timestamp").and_then(seconds_to_ms),
                    entity: text("recipient").map(str::to_string),
                    ..Default::default()
                }
            }
            Body::Form(pairs) => {
                let text = |name: &str| fields::pair(pairs, name);
                let kind = text("event");
                Extracted {
                    event_id: token,
                    event_type: kind.map(str::to_string),
                    canonical_type: kind.and_then(|k| canonical_for(k, text("severity"))),
                    occurred_at_ms: text("timestamp")
                        .and_then(|t| seconds_to_ms(&serde_json::Value::String(t.to_string()))),
                    entity: text("recipient").map(str::to_string),
                    ..Default::default()
                }
            }
        };
        Ok(vec![event])
    }

    /// A delivered event, signed with the first live key (the signature is part of the body,
    /// so the sample carries it; `sign` then adds no header).
    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let timestamp = TimeUnit::Seconds.of_ms(now_ms).to_string();
        let token: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
        let token = format!("{token:0<50}");
        let signature = self
            .keys
            .signing_key(now_ms)
            .and_then(|key| {
                HmacAlgorithm::Sha256.compute(key, &[timestamp.as_bytes(), token.as_bytes()])
            })
            .map(hex::encode)
            .unwrap_or_default();
        serde_json::json!({
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {"event": "delivered", "id": id, "timestamp": now_ms as f64 / 1000.0,
                           "recipient": "alice@example.com", "message": {"headers": {"message-id": format!("{id}@example.com")}}}
        })
        .to_string()
        .into_bytes()
    }

    /// Mailgun's signature is inside the body, so no header can make a body verify: a body
    /// that already carries a valid signature (the sample) needs none; any other is refused.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let headers = Headers::new();
        match self.verify(
            &InboundRequest {
                method: "POST",
                headers: &headers,
                query: &[],
                body: input.body,
            },
            input.now_ms,
        ) {
            Ok(_) => Ok(headers),
            Err(why) => Err(ProviderConfigError(format!(
                "mailgun signs inside the body (signature.timestamp/token/signature) and this \
                 body does not verify ({why}); use the sample body"
            ))),
        }
    }
}

/// How the provider suite (`suite.rs`) signs for Mailgun: inside the JSON body,
/// `signature = {timestamp, token, signature}` with `signature` the hex HMAC-SHA256 of
/// `"{timestamp}{token}"` (the event data is not signed).
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    fn body(timestamp: &str, token: &str, signature: &str) -> Vec<u8> {
        serde_json::json!({
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {"event": "delivered", "id": "CPgfbmQMTCKtHW6uIWtuVe", "timestamp": 1_767_225_600.5, "recipient": "alice@example.com"}
        })
        .to_string()
        .into_bytes()
    }
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key
            .expect("mailgun is keyed")
            .hmac(HmacAlgorithm::Sha256, &[ts.as_bytes(), TOKEN.as_bytes()]);
        Signed::post(Headers::new(), body(&ts, TOKEN, &hex::encode(tag)))
    }
    /// The signed request's signature object with `field` set to `value` (`None`: removed).
    fn with_field(s: &Signed, field: &str, value: Option<&str>) -> Signed {
        let mut doc: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
        let object = doc["signature"]
            .as_object_mut()
            .expect("a signature object");
        match value {
            Some(v) => object.insert(field.into(), v.into()),
            None => object.remove(field),
        };
        s.with_body(doc.to_string())
    }
    Case {
        tamper: |s| *s = with_field(s, "token", Some(&TOKEN.replace("a8ce", "a8cf"))),
        freshness: Some(Freshness {
            past_s: 900,
            future_s: 900,
        }),
        garbled: |s| {
            vec![
                with_field(s, "signature", Some("zz")),
                with_field(s, "timestamp", Some("soon")),
            ]
        },
        ..Case::new(
            "mailgun",
            "mailgun_hmac_sha256",
            || {
                TestKey::pair(
                    "key-7kQz2xWv9pLr4tNb6cHj3s0123",
                    "key-4mXc8vBq1zNw5rTy9pLk2h4567",
                )
            },
            sign,
            Carrier::Custom(|s| {
                let in_json = |field: &str| format!("{field} in the JSON body's signature object");
                vec![
                    (
                        with_field(s, "signature", None),
                        VerifyError::MissingSignature(in_json("signature")),
                    ),
                    (
                        with_field(s, "timestamp", None),
                        VerifyError::MissingHeader(in_json("timestamp")),
                    ),
                    (
                        with_field(s, "token", None),
                        VerifyError::MissingHeader(in_json("token")),
                    ),
                ]
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const KEY: &str = "key-mailgun-webhook-signing-key-0123";
    const T: i64 = 1_767_225_600;

    fn mailgun(secrets: Vec<Secret>) -> Mailgun {
        Mailgun::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn sig(key: &str, ts: &str, token: &str) -> String {
        hex::encode(
            HmacAlgorithm::Sha256
                .compute(key.as_bytes(), &[ts.as_bytes(), token.as_bytes()])
                .unwrap(),
        )
    }

    fn json_body(key: &str, ts: i64, event: &str) -> Vec<u8> {
        let ts = ts.to_string();
        let s = sig(key, &ts, "tok123");
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"tok123","signature":"{s}"}},"event-data":{event}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn every_mailgun_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["mailgun"]) {
            let h = v.headers();
            let got = mailgun(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn mailgun_vector_extracts_event_id_type_and_time() {
        let v = testkit::vector("mailgun-json");
        let h = v.headers();
        let got = mailgun(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("CPgfbmQMTCKtHW6uIWtuVe".into()),
                event_type: Some("delivered".into()),
                canonical_type: Some(canonical::MESSAGE_DELIVERED),
                occurred_at_ms: Some(1_767_225_598_500),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn form_encoded_mailgun_posts_verify_and_dedupe_on_the_token() {
        let ts = T.to_string();
        let s = sig(KEY, &ts, "formtoken");
        let body = format!(
            "event=failed&severity=permanent&recipient=bob%40example.com&timestamp={ts}&token=formtoken&signature={s}"
        );
        let p = mailgun(vec![secret("k", KEY)]);
        let h = Headers::new();
        assert!(p.verify(&request(&h, body.as_bytes()), T * 1000).is_ok());
        let got = p.extract(&request(&h, body.as_bytes())).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("formtoken"));
        assert_eq!(got.canonical_type, Some(canonical::MESSAGE_BOUNCED));
        assert_eq!(got.entity.as_deref(), Some("bob@example.com"));
        assert_eq!(got.occurred_at_ms, Some(T * 1000));
    }

    #[test]
    fn mailgun_events_map_to_the_catalogue_with_failure_severity() {
        let p = mailgun(vec![secret("k", KEY)]);
        for (event, expected) in [
            (
                r#"{"event":"failed","severity":"permanent"}"#,
                Some(canonical::MESSAGE_BOUNCED),
            ),
            (
                r#"{"event":"failed","severity":"temporary"}"#,
                Some(canonical::MESSAGE_FAILED),
            ),
            (r#"{"event":"opened"}"#, Some(canonical::MESSAGE_OPENED)),
            (r#"{"event":"clicked"}"#, Some(canonical::MESSAGE_CLICKED)),
            (
                r#"{"event":"complained"}"#,
                Some(canonical::MESSAGE_COMPLAINED),
            ),
            (
                r#"{"event":"unsubscribed"}"#,
                Some(canonical::MESSAGE_UNSUBSCRIBED),
            ),
            (r#"{"event":"stored"}"#, None),
        ] {
            let body = json_body(KEY, T, event);
            let got = p
                .extract(&request(&Headers::new(), &body))
                .unwrap()
                .remove(0);
            assert_eq!(got.canonical_type, expected, "{event}");
            // No event-data.id: the delivery's token dedupes.
            assert_eq!(got.event_id.as_deref(), Some("tok123"));
        }
        let body = json_body(
            KEY,
            T,
            r#"{"event":"delivered","recipient":"c@example.com"}"#,
        );
        let got = p
            .extract(&request(&Headers::new(), &body))
            .unwrap()
            .remove(0);
        assert_eq!(got.entity.as_deref(), Some("c@example.com"));
    }

    #[test]
    fn mailgun_body_without_event_data_is_an_extract_error() {
        let p = mailgun(vec![secret("k", KEY)]);
        let h = Headers::new();
        assert!(p.extract(&request(&h, br#"{"signature":{}}"#)).is_err());
        assert!(p.extract(&request(&h, b"{not json")).is_err());
    }

    #[test]
    fn event_data_is_not_covered_by_the_mailgun_signature() {
        // Documented Mailgun behaviour: the MAC is over timestamp+token only.
        let v = testkit::vector("mailgun-json");
        let h = v.headers();
        let body = v.body.replace("delivered", "opened");
        assert!(mailgun(vec![v.secret()])
            .verify(&request(&h, body.as_bytes()), v.now_ms())
            .is_ok());
    }

    #[test]
    fn mailgun_tolerances_are_configurable() {
        let body = json_body(KEY, T, "{}");
        let h = Headers::new();
        let tight = Mailgun::from_config(
            &serde_json::json!({"tolerance_seconds": 60, "future_tolerance_seconds": 5}),
            vec![secret("k", KEY)],
        )
        .unwrap();
        assert!(tight.verify(&request(&h, &body), (T + 61) * 1000).is_err());
        assert!(tight.verify(&request(&h, &body), (T - 6) * 1000).is_err());
    }

    #[test]
    fn form_posts_and_bodies_that_are_no_json_object_name_the_missing_signature() {
        let p = mailgun(vec![secret("k", KEY)]);
        let h = Headers::new();
        let cases: [(&[u8], VerifyError); 2] = [
            (
                b"timestamp=1767225600&token=t",
                VerifyError::MissingSignature("signature form field".into()),
            ),
            (
                b"{broken",
                VerifyError::MissingSignature("signature (body is not a JSON object)".into()),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(p.verify(&request(&h, body), T * 1000), Err(expected));
        }
        // A timestamp that is a JSON number, not the string Mailgun sends, is refused.
        let body = br#"{"signature":{"timestamp":1767225600,"token":"t","signature":"00"}}"#;
        let got = p.verify(&request(&h, body), T * 1000);
        assert!(
            matches!(
                got,
                Err(VerifyError::MalformedSignature(_)) | Err(VerifyError::MissingHeader(_))
            ),
            "{got:?}"
        );
    }

    #[test]
    fn mailgun_sample_body_is_signed_and_sign_accepts_only_signed_bodies() {
        let p = mailgun(vec![secret("k", KEY)]);
        let body = p.sample_body("0f9e-77", T * 1000);
        let input = SignInput {
            body: &body,
            now_ms: T * 1000,
            delivery_id: "d",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, T * 1000).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("0f9e-77"));
        assert_eq!(got.occurred_at_ms, Some(T * 1000));
        assert!(p
            .sign(&SignInput {
                body: br#"{"event-data":{}}"#,
                now_ms: T * 1000,
                delivery_id: "d"
            })
            .is_err());
    }
}
