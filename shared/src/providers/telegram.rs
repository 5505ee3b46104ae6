//! Telegram Bot API: `X-Telegram-Bot-Api-Secret-Token` carries the `secret_token` given to
//! `setWebhook`, compared by constant-time equality. Nothing is signed: the body is not
//! authenticated, so restricting source IPs to Telegram's ranges is worth adding upstream.
//! Source: <https://core.telegram.org/bots/api#setwebhook>

use serde::Deserialize;

use super::crypto::{self, KeyError, Keyring};
use super::{
    canonical, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const HEADER: &str = "x-telegram-bot-api-secret-token";

/// Telegram takes no options; the empty table still refuses misspelt ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramOptions {}

#[derive(Debug)]
pub struct Telegram {
    keys: Keyring,
}

/// `setWebhook` accepts only 1–256 characters of `A-Z a-z 0-9 _ -`; anything else can never
/// arrive, so it is a configuration mistake.
fn check_token(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    if raw.is_empty() || raw.len() > 256 || !raw.iter().all(allowed) {
        return Err(KeyError::Format(
            "must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's secret_token rule)",
        ));
    }
    Ok(raw.to_vec())
}

impl Telegram {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let TelegramOptions {} = crypto::parse_options("telegram", options)?;
        Ok(Self {
            keys: Keyring::decoded("telegram", secrets, check_token)?,
        })
    }
}

#[async_trait::async_trait]
impl Provider for Telegram {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let presented = crypto::required_header(req.headers, HEADER)?;
        let key_id = self.keys.first_match(now_ms, |token| {
            crypto::token_eq(presented.as_bytes(), token)
        })?;
        Ok(Verified {
            scheme: "telegram_secret_token",
            key_id: Some(key_id),
        })
    }

    /// `update_id` is the dedupe key. The update kind is its one other field: the Bot API
    /// says at most one optional field is present per update (`message`, `callback_query`, …).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let update = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("telegram update is not a JSON object".into()))?;
        let update_id = update
            .get("update_id")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| ExtractError("telegram update has no integer \"update_id\"".into()))?;
        let kind = update.iter().find(|(key, _)| key.as_str() != "update_id");
        let payload = kind.map(|(_, payload)| payload);
        let occurred_at_ms = time::unix_seconds_ms(payload.and_then(|p| p.get("date")));
        let canonical_type = kind.and_then(|(key, _)| match key.as_str() {
            "message" | "edited_message" | "channel_post" | "edited_channel_post" => {
                Some(canonical::CHAT_MESSAGE)
            }
            "callback_query" => Some(canonical::CHAT_INTERACTION),
            _ => None,
        });
        // The chat (a message's, or the message a callback button sat on), else the user.
        let id_at = |pointer: &str| {
            payload
                .and_then(|p| p.pointer(pointer))
                .and_then(serde_json::Value::as_i64)
        };
        let entity = id_at("/chat/id")
            .or_else(|| id_at("/message/chat/id"))
            .or_else(|| id_at("/from/id"));
        Ok(vec![Extracted {
            event_id: Some(update_id.to_string()),
            event_type: kind.map(|(key, _)| key.clone()),
            canonical_type,
            occurred_at_ms,
            entity: entity.map(|id| id.to_string()),
            ..Default::default()
        }])
    }

    /// Telegram keeps undelivered updates for 24 hours.
    fn default_dedupe_window_seconds(&self) -> u64 {
        2 * 86_400
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({
            "update_id": now_s,
            "message": {"message_id": 1, "date": now_s, "chat": {"id": 1111111, "type": "private"}, "text": format!("/start {id}")}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let token = self.keys.signing_key(input.now_ms)?;
        // Checked to be ASCII at config time.
        let token = String::from_utf8_lossy(token).into_owned();
        Ok(Headers::from_iter([(HEADER, token)]))
    }
}

/// How the provider suite (`suite.rs`) signs for Telegram: the `secret_token` given to
/// `setWebhook`, sent back as is in `X-Telegram-Bot-Api-Secret-Token`. The body is not
/// signed.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"update_id":10000,"message":{"message_id":1,"date":1767225600,"chat":{"id":42,"type":"private"},"text":"hi"}}"#;
        let token = String::from_utf8_lossy(&key.expect("telegram is keyed").signing).into_owned();
        Signed::post(Headers::from_iter([(HEADER, token)]), *body)
    }
    Case {
        tampered: None,
        ..Case::new(
            "telegram",
            "telegram_secret_token",
            || TestKey::pair("S3cr3t_T0ken-abc_Qv7", "Tg-0ther_T0ken-Zx4w9"),
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
    const TOKEN: &str = "S3cr3t_T0ken-abc";

    fn telegram(secrets: Vec<Secret>) -> Telegram {
        Telegram::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn headers(token: &str) -> Headers {
        Headers::from_iter([("X-Telegram-Bot-Api-Secret-Token", token)])
    }

    #[test]
    fn every_telegram_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["telegram"]) {
            let h = v.headers();
            let got =
                telegram(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
        }
    }

    #[test]
    fn telegram_vector_extracts_update_id_kind_and_date() {
        let v = testkit::vector("telegram-secret-token");
        let h = v.headers();
        let got = telegram(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap()
            .remove(0);
        assert_eq!(
            got,
            Extracted {
                event_id: Some("10000".into()),
                event_type: Some("message".into()),
                canonical_type: Some(canonical::CHAT_MESSAGE),
                occurred_at_ms: Some(1_767_225_600_000),
                entity: Some("1111111".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn callback_query_without_date_has_no_occurred_at() {
        let h = Headers::new();
        let body = br#"{"update_id":7,"callback_query":{"id":"1","data":"x"}}"#;
        let got = telegram(vec![secret("k", TOKEN)])
            .extract(&request(&h, body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_type.as_deref(), Some("callback_query"));
        assert_eq!(got.occurred_at_ms, None);
        assert_eq!(got.canonical_type, Some(canonical::CHAT_INTERACTION));
    }

    #[test]
    fn telegram_entity_is_the_chat_else_the_user() {
        let p = telegram(vec![secret("k", TOKEN)]);
        let h = Headers::new();
        let callback = br#"{"update_id":8,"callback_query":{"id":"1","from":{"id":42},"message":{"message_id":5,"chat":{"id":-100123}},"data":"x"}}"#;
        let got = p.extract(&request(&h, callback)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("-100123"));
        let inline = br#"{"update_id":9,"inline_query":{"id":"1","from":{"id":42},"query":"q"}}"#;
        let got = p.extract(&request(&h, inline)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("42"));
        assert_eq!(got.canonical_type, None);
        let post = br#"{"update_id":10,"channel_post":{"message_id":1,"date":1767225600,"chat":{"id":-1001}}}"#;
        let got = p.extract(&request(&h, post)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("-1001"));
        assert_eq!(got.canonical_type, Some(canonical::CHAT_MESSAGE));
    }

    #[test]
    fn telegram_update_without_integer_update_id_is_an_extract_error() {
        let p = telegram(vec![secret("k", TOKEN)]);
        let h = Headers::new();
        for body in [
            &b"nope"[..],
            b"[1]",
            br#"{"message":{}}"#,
            br#"{"update_id":"1"}"#,
        ] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn wrong_telegram_token_is_refused() {
        let p = telegram(vec![secret("k", TOKEN)]);
        for presented in [
            "S3cr3t_T0ken-abd",
            "S3cr3t_T0ken-ab",
            "S3cr3t_T0ken-abcd",
            "s3cr3t_t0ken-abc",
        ] {
            let h = headers(presented);
            assert_eq!(
                p.verify(&request(&h, b"{}"), NOW_MS),
                Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
                "{presented}"
            );
        }
    }

    #[test]
    fn telegram_tokens_outside_the_setwebhook_alphabet_are_config_errors() {
        let long = "a".repeat(257);
        for bad in ["", "has space", "dot.ted", "ünïcode", long.as_str()] {
            let err = Telegram::from_config(&serde_json::Value::Null, vec![secret("tok", bad)])
                .unwrap_err();
            assert!(
                err.0.contains("\"tok\"") && err.0.contains("1-256"),
                "{err}"
            );
        }
        assert!(Telegram::from_config(
            &serde_json::Value::Null,
            vec![secret("tok", &"a".repeat(256))]
        )
        .is_ok());
        assert!(Telegram::from_config(&serde_json::Value::Null, vec![]).is_err());
        let err = Telegram::from_config(
            &serde_json::json!({"ip_allowlist": []}),
            vec![secret("k", TOKEN)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `ip_allowlist`"), "{err}");
    }
}
