//! Slack: `X-Slack-Signature: v0=<hex>` and `X-Slack-Request-Timestamp: <unix>`, HMAC-SHA256
//! over `"v0:{timestamp}:{raw body}"` keyed with the app's Signing Secret (UTF-8). Bodies are
//! JSON (Events API) or `application/x-www-form-urlencoded` (slash commands, interactivity's
//! `payload=`): the raw bytes are hashed either way, never the decoded form.
//! Retries repeat the request with `X-Slack-Retry-Num`/`X-Slack-Retry-Reason` and the same
//! `event_id`, so the dedupe absorbs them.
//! Source: docs.slack.dev "Verifying requests from Slack"; `slack_sdk` `signature/__init__.py`,
//! Bolt-JS `src/receivers/verify-request.ts`.

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SlackOptions {
    /// Slack's docs and both SDKs: 5 minutes.
    tolerance_seconds: u32,
    /// `slack_sdk` refuses both directions (`abs(now - ts) > 300`); Bolt-JS only stale ones.
    future_tolerance_seconds: u32,
}

impl Default for SlackOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 300,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct Slack {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Slack {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: SlackOptions = crypto::parse_options("slack", options)?;
        Ok(Self {
            keys: Keyring::new("slack", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// A JSON body (Events API) starts with `{`; everything Slack form-encodes does not.
fn is_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The signed request timestamp: the best "when" for commands and interactions, which carry
/// none of their own.
fn request_time_ms(headers: &Headers) -> Option<i64> {
    headers
        .get(TIMESTAMP)
        .and_then(|t| time::unix_seconds_text_ms(t.trim()))
}

/// Events API messages (and mentions of the app, which are messages too) are chat messages.
fn event_canonical(event_type: &str) -> Option<&'static str> {
    match event_type {
        "message" | "app_mention" => Some(canonical::CHAT_MESSAGE),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, SIGNATURE)?;
        let ts_text = crypto::needed_header(req.headers, TIMESTAMP)?;
        let ts = crypto::parse_unix(ts_text)?;
        let sig = value
            .strip_prefix("v0=")
            .and_then(|hex| SignatureEncoding::Hex.decode(hex))
            .ok_or_else(|| {
                VerifyError::MalformedSignature(format!("{SIGNATURE}: expected v0=<hex>"))
            })?;
        let parts: [&[u8]; 4] = [b"v0:", ts_text.as_bytes(), b":", req.body];
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &parts, &sig)
        })?;
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "slack_v0",
            key_id: Some(key_id),
        })
    }

    /// Events API `url_verification`: verified like any request, then answered with
    /// `{"challenge": …}` as JSON (what Bolt answers; Slack also takes the bare text).
    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        if !is_json(req.body) || !fields::contains(req.body, b"url_verification") {
            return None;
        }
        let body = crypto::json_object(req.body)?;
        if body.get("type").and_then(|t| t.as_str()) != Some("url_verification") {
            return None;
        }
        // Without a string challenge there is nothing to answer: `extract` refuses it.
        let challenge = body.get("challenge").and_then(|c| c.as_str())?;
        Some(
            self.verify(req, now_ms)
                .map(|_| HandshakeReply::json(serde_json::json!({ "challenge": challenge }))),
        )
    }

    /// Dedupe key: the Events API `event_id`; for interactions and slash commands, which
    /// have none, the `trigger_id` when present, else nothing (the body hash).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        if is_json(req.body) {
            extract_events_api(req.body)
        } else {
            extract_form(req)
        }
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({
            "token": "verification-token-unused", "team_id": "T0001", "api_app_id": "A0001",
            "type": "event_callback", "event_id": format!("Ev{id}"), "event_time": now_s,
            "event": {
                "type": "message", "channel": "C2147483705", "user": "U2147483697",
                "text": format!("Hello world {id}"), "ts": format!("{now_s}.000200"), "channel_type": "channel"
            }
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let ts = TimeUnit::Seconds.of_ms(input.now_ms).to_string();
        let sig = HmacAlgorithm::Sha256.compute(key, &[b"v0:", ts.as_bytes(), b":", input.body])?;
        Ok(Headers::from_iter([
            (TIMESTAMP, ts),
            (SIGNATURE, format!("v0={}", hex::encode(sig))),
        ]))
    }
}

fn extract_events_api(body: &[u8]) -> Result<Vec<Extracted>, ExtractError> {
    let body: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| ExtractError("slack JSON body does not parse".into()))?;
    let kind = fields::str_at(&body, "/type")
        .ok_or_else(|| ExtractError("slack JSON body has no string \"type\"".into()))?;
    match kind {
        "event_callback" => {
            let event_id = fields::str_at(&body, "/event_id")
                .ok_or_else(|| ExtractError("slack event_callback has no \"event_id\"".into()))?;
            let event_type = fields::str_at(&body, "/event/type");
            Ok(vec![Extracted {
                event_id: Some(event_id.to_string()),
                event_type: event_type.map(str::to_string),
                canonical_type: event_type.and_then(event_canonical),
                occurred_at_ms: time::unix_seconds_ms(body.get("event_time")),
                entity: fields::str_at(&body, "/event/user")
                    .or_else(|| fields::str_at(&body, "/event/channel"))
                    .map(str::to_string),
                ..Default::default()
            }])
        }
        "url_verification" => Err(ExtractError(
            "slack url_verification without a string \"challenge\"".into(),
        )),
        // `app_rate_limited` and any future envelope: no id, deduped by body hash.
        other => Ok(vec![Extracted {
            event_type: Some(other.to_string()),
            ..Default::default()
        }]),
    }
}

fn extract_form(req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
    let mut payload = None;
    let mut command = false;
    let mut trigger_id = None;
    let mut user_id = None;
    let mut channel_id = None;
    for (key, value) in form_urlencoded::parse(req.body) {
        match key.as_ref() {
            "payload" => payload = Some(value.into_owned()),
            "command" => command = true,
            "trigger_id" => trigger_id = Some(value.into_owned()),
            "user_id" => user_id = Some(value.into_owned()),
            "channel_id" => channel_id = Some(value.into_owned()),
            _ => {}
        }
    }
    let occurred_at_ms = request_time_ms(req.headers);
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    if let Some(payload) = payload {
        let payload: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|_| ExtractError("slack interaction payload is not JSON".into()))?;
        let kind = fields::str_at(&payload, "/type")
            .ok_or_else(|| ExtractError("slack interaction payload has no \"type\"".into()))?;
        return Ok(vec![Extracted {
            event_id: fields::str_at(&payload, "/trigger_id").map(str::to_string),
            event_type: Some(kind.to_string()),
            canonical_type: Some(canonical::CHAT_INTERACTION),
            occurred_at_ms,
            entity: fields::str_at(&payload, "/user/id")
                .or_else(|| fields::str_at(&payload, "/channel/id"))
                .map(str::to_string),
            ..Default::default()
        }]);
    }
    if command {
        return Ok(vec![Extracted {
            event_id: non_empty(trigger_id),
            event_type: Some("slash_command".into()),
            canonical_type: Some(canonical::CHAT_INTERACTION),
            occurred_at_ms,
            entity: non_empty(user_id).or(non_empty(channel_id)),
            ..Default::default()
        }]);
    }
    Err(ExtractError(
        "slack form body is neither a slash command (command=) nor an interaction (payload=)"
            .into(),
    ))
}

/// How the provider suite (`suite.rs`) signs for Slack: `X-Slack-Signature: v0=<hex>`,
/// HMAC-SHA256 of `"v0:{timestamp}:{body}"`, and `X-Slack-Request-Timestamp` in unix seconds.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"type":"event_callback","event_id":"Ev01","event_time":1767225600,"event":{"type":"message","user":"U1","channel":"C1"}}"#;
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key
            .expect("slack is keyed")
            .hmac(HmacAlgorithm::Sha256, &[b"v0:", ts.as_bytes(), b":", body]);
        let headers = Headers::from_iter([
            (TIMESTAMP, ts),
            (SIGNATURE, format!("v0={}", hex::encode(tag))),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            let mut out: Vec<Signed> = ["a2114d57b48eac39", "v1=a2114d57", "v0=zz", "v0="]
                .map(|v| s.with_header(SIGNATURE, v))
                .to_vec();
            out.extend(["1767225600.5", "soon"].map(|ts| s.with_header(TIMESTAMP, ts)));
            out
        },
        ..Case::new(
            "slack",
            "slack_v0",
            || TestKey::pair("8f742231b10e8888abcd99yyyzzz85a5", "slack-signing-Qz3Wv7Np"),
            sign,
            Carrier::Headers {
                signature: SIGNATURE,
                needed: &[TIMESTAMP],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const T: i64 = 1_531_420_618;

    fn slack(secrets: Vec<Secret>) -> Slack {
        Slack::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(secret: &str, t: i64, body: &[u8]) -> Headers {
        let ts = t.to_string();
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body])
            .unwrap();
        Headers::from_iter([
            ("X-Slack-Request-Timestamp", ts),
            ("X-Slack-Signature", format!("v0={}", hex::encode(sig))),
        ])
    }

    #[test]
    fn every_slack_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["slack"]) {
            let h = v.headers();
            let got = slack(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn slash_command_from_the_docs_is_an_interaction_keyed_by_trigger_id() {
        let v = testkit::vector("slack-docs");
        let h = v.headers();
        let got = slack(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".into()),
                event_type: Some("slash_command".into()),
                canonical_type: Some(canonical::CHAT_INTERACTION),
                occurred_at_ms: Some(T * 1000),
                entity: Some("U2CERLKJA".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn events_api_message_is_a_chat_message_keyed_by_event_id() {
        let p = slack(vec![secret("k", SECRET)]);
        let body = p.sample_body("123ABC", T * 1000);
        let got = p
            .extract(&request(&Headers::new(), &body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id.as_deref(), Some("Ev123ABC"));
        assert_eq!(got.event_type.as_deref(), Some("message"));
        assert_eq!(got.canonical_type, Some(canonical::CHAT_MESSAGE));
        assert_eq!(got.entity.as_deref(), Some("U2147483697"));
        assert_eq!(got.occurred_at_ms, Some(T * 1000));
    }

    #[test]
    fn other_events_keep_their_type_and_fall_back_to_the_channel() {
        let body = br#"{"type":"event_callback","event_id":"Ev9","event_time":1,"event":{"type":"channel_archive","channel":"C024BE91L"}}"#;
        let got = slack(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_type.as_deref(), Some("channel_archive"));
        assert_eq!(got.canonical_type, None);
        assert_eq!(got.entity.as_deref(), Some("C024BE91L"));
        let limited = br#"{"token":"x","type":"app_rate_limited","team_id":"T1","minute_rate_limited":1518467820}"#;
        let got = slack(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), limited))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_type.as_deref(), Some("app_rate_limited"));
        assert_eq!(got.event_id, None);
    }

    #[test]
    fn interactivity_payload_is_decoded_from_the_form() {
        let payload = r#"{"type":"block_actions","trigger_id":"13345224609.738474920.8088930838d88f008e0","user":{"id":"U0CA5"},"channel":{"id":"C0CA5"}}"#;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", payload)
            .finish();
        let h = signed(SECRET, T, body.as_bytes());
        let p = slack(vec![secret("k", SECRET)]);
        let req = request(&h, body.as_bytes());
        assert!(p.verify(&req, T * 1000).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(
            got.event_id.as_deref(),
            Some("13345224609.738474920.8088930838d88f008e0")
        );
        assert_eq!(got.event_type.as_deref(), Some("block_actions"));
        assert_eq!(got.canonical_type, Some(canonical::CHAT_INTERACTION));
        assert_eq!(got.entity.as_deref(), Some("U0CA5"));
        // view_closed carries no trigger_id: the body hash dedupes it.
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", r#"{"type":"view_closed","user":{"id":"U1"}}"#)
            .finish();
        let got = p.extract(&request(&h, body.as_bytes())).unwrap().remove(0);
        assert_eq!(got.event_id, None);
    }

    #[test]
    fn slack_bodies_that_are_no_event_are_extract_errors() {
        let p = slack(vec![secret("k", SECRET)]);
        let h = Headers::new();
        for body in [
            &b"text=hello&user_id=U1"[..],
            b"payload=not-json",
            b"payload=%7B%7D",
            br#"{"event_id":"Ev1"}"#,
            br#"{"type":"event_callback"}"#,
            br#"{"type":"url_verification"}"#,
            b"{broken",
        ] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn signed_url_verification_is_answered_with_the_challenge() {
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let h = signed(SECRET, T, body);
        let got = slack(vec![secret("k", SECRET)])
            .handshake(&request(&h, body), T * 1000)
            .unwrap()
            .unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.content_type, "application/json");
        let answer: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        );
    }

    #[test]
    fn forged_or_stale_url_verification_is_refused() {
        let body = br#"{"challenge":"abc","type":"url_verification"}"#;
        let p = slack(vec![secret("k", SECRET)]);
        let forged = signed("not-the-secret", T, body);
        assert_eq!(
            p.handshake(&request(&forged, body), T * 1000),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
        let unsigned = Headers::new();
        assert_eq!(
            p.handshake(&request(&unsigned, body), T * 1000),
            Some(Err(VerifyError::MissingSignature(SIGNATURE.into())))
        );
        let h = signed(SECRET, T, body);
        assert!(matches!(
            p.handshake(&request(&h, body), (T + 301) * 1000),
            Some(Err(VerifyError::TimestampTooOld { .. }))
        ));
    }

    #[test]
    fn ordinary_slack_requests_are_not_handshakes() {
        let p = slack(vec![secret("k", SECRET)]);
        let h = Headers::new();
        let event = p.sample_body("x", T * 1000);
        assert_eq!(p.handshake(&request(&h, &event), T * 1000), None);
        assert_eq!(
            p.handshake(&request(&h, b"command=%2Furl_verification"), T * 1000),
            None
        );
        // A message that merely mentions url_verification is an event.
        let body = br#"{"type":"event_callback","event":{"text":"url_verification"}}"#;
        assert_eq!(p.handshake(&request(&h, body), T * 1000), None);
    }

    #[test]
    fn slack_tolerances_are_configurable() {
        let p = Slack::from_config(
            &serde_json::json!({"tolerance_seconds": 10, "future_tolerance_seconds": 0}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        let h = signed(SECRET, T, b"{}");
        assert!(p.verify(&request(&h, b"{}"), (T + 10) * 1000).is_ok());
        assert!(p.verify(&request(&h, b"{}"), (T + 11) * 1000).is_err());
        assert!(p.verify(&request(&h, b"{}"), (T - 1) * 1000).is_err());
    }

    #[test]
    fn slack_sign_then_verify_round_trips() {
        let p = slack(vec![secret("k", SECRET)]);
        let body = p.sample_body("1", T * 1000);
        let input = SignInput {
            body: &body,
            now_ms: T * 1000 + 999,
            delivery_id: "unused",
        };
        let h = p.sign(&input).unwrap();
        assert_eq!(h.get(TIMESTAMP), Some("1531420618"));
        assert!(p.verify(&request(&h, &body), T * 1000).is_ok());
    }
}
