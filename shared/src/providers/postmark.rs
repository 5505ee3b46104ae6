//! Postmark: no signature. The webhook URL embeds HTTP Basic credentials
//! (`https://user:pass@host/path`), which arrive as `Authorization: Basic <base64>`; each
//! secret is the whole `user:pass` and the decoded credentials are compared in constant
//! time. The body is **not** authenticated: restrict source IPs to Postmark's webhook
//! addresses with the source's generic `allow_cidrs`.
//! Source: <https://postmarkapp.com/developer/webhooks/webhooks-overview> (basic auth).

use base64::Engine;
use serde::Deserialize;

use super::crypto::{self, KeyError, Keyring};
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;
use fields::BasicError;

const AUTHORIZATION: &str = "authorization";

/// Postmark takes no options; the empty table still refuses misspelt ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostmarkOptions {}

#[derive(Debug)]
pub(crate) struct Postmark {
    keys: Keyring,
}

/// `user:pass`: a user id cannot contain `:` in Basic auth (RFC 7617), so one is required.
fn check_credentials(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    if fields::is_user_pass(raw, true) {
        Ok(raw.to_vec())
    } else {
        Err(KeyError::Format(
            "must be user:password (the credentials in the webhook URL)",
        ))
    }
}

impl Postmark {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let PostmarkOptions {} = crypto::parse_options("postmark", options)?;
        Ok(Self {
            keys: Keyring::decoded("postmark", secrets, check_credentials)?,
        })
    }
}

/// The decoded `user:pass` of an `Authorization: Basic …` value; empty is not base64.
fn basic_credentials(value: &str) -> Result<Vec<u8>, VerifyError> {
    match fields::basic_credentials(value) {
        Err(BasicError::NotBasic) => Err(VerifyError::MalformedSignature(
            "authorization is not Basic".into(),
        )),
        Ok(c) if !c.is_empty() => Ok(c),
        Err(BasicError::NotBase64) | Ok(_) => Err(VerifyError::MalformedSignature(
            "authorization Basic credentials are not base64".into(),
        )),
    }
}

fn canonical_for(
    record_type: &str,
    event: &serde_json::Map<String, serde_json::Value>,
) -> Option<&'static str> {
    match record_type {
        "Delivery" => Some(canonical::MESSAGE_DELIVERED),
        "Bounce" => Some(canonical::MESSAGE_BOUNCED),
        "Open" => Some(canonical::MESSAGE_OPENED),
        "Click" => Some(canonical::MESSAGE_CLICKED),
        "SpamComplaint" => Some(canonical::MESSAGE_COMPLAINED),
        // A subscription change that lifts a suppression is a resubscribe: no catalogue entry.
        "SubscriptionChange" => event
            .get("SuppressSending")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
            .then_some(canonical::MESSAGE_UNSUBSCRIBED),
        _ => None,
    }
}

/// When the record happened, by record type (Postmark names the field after the event).
const TIME_FIELDS: &[&str] = &["DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt"];

#[async_trait::async_trait]
impl Provider for Postmark {
    fn name(&self) -> &'static str {
        "postmark"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let presented = basic_credentials(crypto::required_header(req.headers, AUTHORIZATION)?)?;
        let key_id = self
            .keys
            .first_match(now_ms, |expected| crypto::token_eq(&presented, expected))?;
        Ok(Verified {
            scheme: "postmark_basic_auth",
            key_id: Some(key_id),
        })
    }

    /// Dedupe key `MessageID#RecordType`: one Delivery, Bounce, SpamComplaint or
    /// SubscriptionChange record per message. Opens and Clicks repeat for one message (every
    /// open when "first open only" is off, every click), so their key adds the record's own
    /// `ReceivedAt`, which a retry of the same record keeps. Postmark gives no per-record id.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("postmark webhook body is not a JSON object".into()))?;
        let text = |name: &str| {
            event
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let record_type = text("RecordType")
            .ok_or_else(|| ExtractError("postmark webhook has no \"RecordType\"".into()))?;
        let repeats = matches!(record_type, "Open" | "Click");
        let event_id = text("MessageID").map(|id| match text("ReceivedAt") {
            Some(at) if repeats => format!("{id}#{record_type}#{at}"),
            _ => format!("{id}#{record_type}"),
        });
        Ok(vec![Extracted {
            event_id,
            event_type: Some(record_type.to_string()),
            canonical_type: canonical_for(record_type, &event),
            occurred_at_ms: TIME_FIELDS
                .iter()
                .find_map(|f| text(f))
                .and_then(time::rfc3339_ms_utc_if_unzoned),
            entity: text("Recipient")
                .or_else(|| text("Email"))
                .map(str::to_string),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        serde_json::json!({
            "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
            "MessageID": id, "Recipient": "john@example.com", "Tag": "welcome-email",
            "DeliveredAt": crate::time::format_rfc3339_ms(now_ms),
            "Details": "Test delivery webhook details", "Metadata": {}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let credentials = self.keys.signing_key(input.now_ms)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        Ok(Headers::from_iter([(
            AUTHORIZATION,
            format!("Basic {encoded}"),
        )]))
    }
}

/// How the provider suite (`suite.rs`) signs for Postmark: the `user:password` of the
/// webhook URL, sent as `Authorization: Basic <base64>`. The body is not signed.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"RecordType":"Delivery","MessageID":"m-42","Recipient":"john@example.com","DeliveredAt":"2026-01-01T00:00:00Z"}"#;
        let credentials = &key.expect("postmark is keyed").signing;
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        Signed::post(Headers::from_iter([(AUTHORIZATION, value)]), *body)
    }
    Case {
        tampered: None,
        garbled: |s| {
            ["Bearer dTpw", "Basic", "Basic ***", "Basic ", "dTpw"]
                .map(|v| s.with_header(AUTHORIZATION, v))
                .to_vec()
        },
        ..Case::new(
            "postmark",
            "postmark_basic_auth",
            || TestKey::pair("hookuser:hookpass-Vn3q", "rotated:hookpass-Jc8w"),
            sign,
            Carrier::header(AUTHORIZATION),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;

    fn postmark(secrets: Vec<Secret>) -> Postmark {
        Postmark::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn basic(credentials: &str) -> Headers {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        Headers::from_iter([("Authorization", format!("Basic {encoded}"))])
    }

    #[test]
    fn every_postmark_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["postmark"]) {
            let h = v.headers();
            let got =
                postmark(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn postmark_vector_extracts_message_id_and_record_type() {
        let v = testkit::vector("postmark-basic-auth");
        let h = v.headers();
        let got = postmark(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("00000000-0000-0000-0000-000000000000#Delivery".into()),
                event_type: Some("Delivery".into()),
                canonical_type: Some(canonical::MESSAGE_DELIVERED),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn postmark_record_types_map_to_the_catalogue_with_entity_and_time() {
        let p = postmark(vec![secret("k", "u:p")]);
        let h = Headers::new();
        for (body, id, canonical_type, entity, at) in [
            (
                r#"{"RecordType":"Bounce","MessageID":"m1","Email":"b@x.com","BouncedAt":"2026-01-01T00:00:00Z"}"#,
                "m1#Bounce",
                Some(canonical::MESSAGE_BOUNCED),
                "b@x.com",
                Some(1_767_225_600_000),
            ),
            (
                r#"{"RecordType":"SpamComplaint","MessageID":"m1","Email":"b@x.com"}"#,
                "m1#SpamComplaint",
                Some(canonical::MESSAGE_COMPLAINED),
                "b@x.com",
                None,
            ),
            (
                r#"{"RecordType":"Open","MessageID":"m1","Recipient":"r@x.com","ReceivedAt":"2026-01-01T00:00:01.5Z"}"#,
                "m1#Open#2026-01-01T00:00:01.5Z",
                Some(canonical::MESSAGE_OPENED),
                "r@x.com",
                Some(1_767_225_601_500),
            ),
            (
                r#"{"RecordType":"Click","MessageID":"m1","Recipient":"r@x.com"}"#,
                "m1#Click",
                Some(canonical::MESSAGE_CLICKED),
                "r@x.com",
                None,
            ),
            (
                r#"{"RecordType":"SubscriptionChange","MessageID":"m1","Recipient":"r@x.com","SuppressSending":true}"#,
                "m1#SubscriptionChange",
                Some(canonical::MESSAGE_UNSUBSCRIBED),
                "r@x.com",
                None,
            ),
            (
                r#"{"RecordType":"SubscriptionChange","MessageID":"m1","Recipient":"r@x.com","SuppressSending":false}"#,
                "m1#SubscriptionChange",
                None,
                "r@x.com",
                None,
            ),
        ] {
            let got = p.extract(&request(&h, body.as_bytes())).unwrap().remove(0);
            assert_eq!(got.event_id.as_deref(), Some(id), "{body}");
            assert_eq!(got.canonical_type, canonical_type, "{body}");
            assert_eq!(got.entity.as_deref(), Some(entity), "{body}");
            assert_eq!(got.occurred_at_ms, at, "{body}");
        }
    }

    #[test]
    fn postmark_body_without_record_type_is_an_extract_error() {
        let p = postmark(vec![secret("k", "u:p")]);
        let h = Headers::new();
        for body in [&b"[]"[..], b"x", br#"{"MessageID":"m"}"#] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn wrong_postmark_credentials_are_refused() {
        let p = postmark(vec![secret("k", "hookuser:hookpass")]);
        for presented in [
            "hookuser:hookpasS",
            "hookuser:hookpass2",
            "hookuser",
            "Hookuser:hookpass",
        ] {
            let h = basic(presented);
            assert_eq!(
                p.verify(&request(&h, b"{}"), NOW_MS),
                Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
                "{presented}"
            );
        }
    }

    #[test]
    fn the_basic_scheme_name_is_case_insensitive() {
        // RFC 7617.
        let p = postmark(vec![secret("k", "u:p")]);
        let h = Headers::from_iter([("Authorization", "basic dTpw")]);
        assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    }

    #[test]
    fn postmark_sign_then_verify_round_trips() {
        let p = postmark(vec![secret("k", "hookuser:hookpass")]);
        let body = p.sample_body("m-42", NOW_MS);
        let h = p
            .sign(&SignInput {
                body: &body,
                now_ms: NOW_MS,
                delivery_id: "d",
            })
            .unwrap();
        assert_eq!(
            h.get("authorization"),
            Some("Basic aG9va3VzZXI6aG9va3Bhc3M=")
        );
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("m-42#Delivery"));
        assert_eq!(got.occurred_at_ms, Some(NOW_MS));
    }

    #[test]
    fn postmark_secrets_must_be_user_colon_password() {
        for bad in ["nocolonhere", ":s3cretpw"] {
            let err = Postmark::from_config(&serde_json::Value::Null, vec![secret("creds", bad)])
                .unwrap_err();
            assert!(err.0.contains("\"creds\"") && !err.0.contains(bad), "{err}");
        }
        let err = Postmark::from_config(
            &serde_json::json!({"ip_allowlist": []}),
            vec![secret("k", "u:p")],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `ip_allowlist`"), "{err}");
    }
}
