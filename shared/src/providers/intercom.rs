//! Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-**SHA1** over the raw body, keyed with the
//! app's `client_secret` as UTF-8 (GitHub's legacy header format). No timestamp is signed:
//! replay protection is the dedupe on the notification `id`. The `ping` topic Intercom sends
//! on setup is an ordinary signed notification and is enqueued like any other.
//! Source: <https://developers.intercom.com/docs/webhooks/setting-up-webhooks> (no SDK helper).

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring};
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

/// `X-Hub-Signature: sha1=<hex>`, SHA-1 only.
const HEADER: &str = crypto::X_HUB_SIGNATURE;

/// Intercom takes no options; the empty table still refuses misspelt ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntercomOptions {}

#[derive(Debug)]
pub(crate) struct Intercom {
    keys: Keyring,
}

impl Intercom {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let IntercomOptions {} = crypto::parse_options("intercom", options)?;
        Ok(Self {
            keys: Keyring::new("intercom", secrets)?,
        })
    }
}

fn canonical_for(topic: &str) -> Option<&'static str> {
    match topic {
        "ping" => Some(canonical::WEBHOOK_PING),
        "conversation.user.created" | "conversation.user.replied" => Some(canonical::CHAT_MESSAGE),
        "contact.user.created" | "user.created" => Some(canonical::ACCOUNT_REGISTERED),
        _ => None,
    }
}

/// The contact the notification is about: the item itself for contact/user topics, the
/// conversation's first contact (or its author) for conversations.
fn entity(item: &serde_json::Value) -> Option<&str> {
    match fields::str_at(item, "/type") {
        Some("contact" | "user" | "lead") => fields::str_at(item, "/id"),
        Some("conversation") => item
            .get("contacts")
            .and_then(|c| c.get("contacts"))
            .and_then(|c| c.get(0))
            .and_then(|c| fields::str_at(c, "/id"))
            .or_else(|| fields::str_at(item, "/source/author/id")),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Intercom {
    fn name(&self) -> &'static str {
        "intercom"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, HEADER)?;
        let sig = crypto::hub_signature_tag(value, HmacAlgorithm::Sha1)?;
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha1.verify(key, &[req.body], &sig)
        })?;
        Ok(Verified {
            scheme: "intercom_hmac_sha1",
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let note: serde_json::Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("intercom notification is not a JSON object".into()))?;
        let id = fields::str_at(&note, "/id")
            .ok_or_else(|| ExtractError("intercom notification has no string \"id\"".into()))?;
        let topic = fields::str_at(&note, "/topic");
        let null = serde_json::Value::Null;
        let item = note
            .get("data")
            .and_then(|d| d.get("item"))
            .unwrap_or(&null);
        Ok(vec![Extracted {
            event_id: Some(id.to_string()),
            event_type: topic.map(str::to_string),
            canonical_type: topic.and_then(canonical_for),
            occurred_at_ms: time::unix_seconds_ms(note.get("created_at")),
            entity: entity(item).map(str::to_string),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({
            "type": "notification_event", "app_id": "abc123", "id": format!("notif_{id}"),
            "topic": "contact.user.created", "created_at": now_s, "delivery_attempts": 1,
            "data": {"type": "notification_event_data", "item": {
                "type": "contact", "id": "6762f0b21bb69f9f2193bb6e", "role": "user", "email": "alice@example.com"}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha1.compute(key, &[input.body])?;
        Ok(Headers::from_iter([(
            HEADER,
            crypto::hub_signature_value(HmacAlgorithm::Sha1, &sig),
        )]))
    }
}

/// How the provider suite (`suite.rs`) signs for Intercom: `X-Hub-Signature: sha1=<hex>`,
/// HMAC-SHA1 of the body keyed with the app's client secret.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"type":"notification_event","id":"notif_1","topic":"ping","created_at":1767225600,"data":{"item":{"type":"ping"}}}"#;
        let tag = key
            .expect("intercom is keyed")
            .hmac(HmacAlgorithm::Sha1, &[body]);
        let value = format!("sha1={}", hex::encode(tag));
        Signed::post(Headers::from_iter([(HEADER, value)]), *body)
    }
    Case {
        garbled: |s| {
            let hex = s.header(HEADER).trim_start_matches("sha1=");
            [
                hex.to_string(),
                format!("sha256={hex}"),
                "sha1=zz".into(),
                "sha1=".into(),
            ]
            .map(|v| s.with_header(HEADER, v))
            .to_vec()
        },
        ..Case::new(
            "intercom",
            "intercom_hmac_sha1",
            || TestKey::pair("ic-client-Hq7Lw3Zp", "ic-client-Tc5Vn8Rk"),
            sign,
            Carrier::header(HEADER),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;

    fn intercom(secrets: Vec<Secret>) -> Intercom {
        Intercom::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    #[test]
    fn every_intercom_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["intercom"]) {
            let h = v.headers();
            let got =
                intercom(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn intercom_ping_is_an_ordinary_event_with_the_ping_canonical_type() {
        let v = testkit::vector("intercom-ping");
        let h = v.headers();
        let p = intercom(vec![v.secret()]);
        let req = request(&h, v.body.as_bytes());
        assert_eq!(p.handshake(&req, NOW_MS), None);
        assert_eq!(
            p.extract(&req).unwrap(),
            vec![Extracted {
                event_id: Some("notif_1".into()),
                event_type: Some("ping".into()),
                canonical_type: Some(canonical::WEBHOOK_PING),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn intercom_conversation_and_contact_topics_name_the_contact() {
        let p = intercom(vec![secret("k", "s")]);
        let conversation = br#"{"id":"n2","topic":"conversation.user.created","created_at":1767225600,"data":{"item":{"type":"conversation","contacts":{"contacts":[{"type":"contact","id":"c9"}]}}}}"#;
        let got = p
            .extract(&request(&Headers::new(), conversation))
            .unwrap()
            .remove(0);
        assert_eq!(got.canonical_type, Some(canonical::CHAT_MESSAGE));
        assert_eq!(got.entity.as_deref(), Some("c9"));
        assert_eq!(got.occurred_at_ms, Some(1_767_225_600_000));
        let contact = br#"{"id":"n3","topic":"contact.user.created","data":{"item":{"type":"contact","id":"c7"}}}"#;
        let got = p
            .extract(&request(&Headers::new(), contact))
            .unwrap()
            .remove(0);
        assert_eq!(got.canonical_type, Some(canonical::ACCOUNT_REGISTERED));
        assert_eq!(got.entity.as_deref(), Some("c7"));
    }

    #[test]
    fn intercom_notification_without_id_is_an_extract_error() {
        let p = intercom(vec![secret("k", "s")]);
        for body in [&b"[]"[..], b"x", br#"{"topic":"ping"}"#] {
            assert!(
                p.extract(&request(&Headers::new(), body)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn intercom_sign_then_verify_round_trips_with_the_sample_body() {
        let p = intercom(vec![secret("k", "intercom_client_secret_abc")]);
        let body = p.sample_body("41", NOW_MS);
        let h = p
            .sign(&SignInput {
                body: &body,
                now_ms: NOW_MS,
                delivery_id: "d",
            })
            .unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        assert_eq!(
            p.extract(&req).unwrap().remove(0).event_id.as_deref(),
            Some("notif_41")
        );
    }
}
