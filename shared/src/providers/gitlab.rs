//! GitLab webhooks, two schemes chosen by the option `signing`:
//! - `"token"` (default): `X-Gitlab-Token` carries the hook's secret token, compared by
//!   constant-time equality. **The body is not authenticated**: anyone who learns the token
//!   (it travels in every request) can send any body with it. Prefer the signing token.
//! - `"standard_webhooks"`: GitLab's newer signing token (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64>`, HMAC-SHA256 over `{id}.{ts}.{body}`), verified by the
//!   [`StandardWebhooks`] provider built inside with the same secrets (`whsec_…`). In this
//!   mode the signature is required: a request carrying only `X-Gitlab-Token` is refused, so
//!   a sender cannot pick the weaker check.
//!
//! Source: docs.gitlab.com "Webhooks" (secret token, `Idempotency-Key`); signing tokens:
//! GitLab MR 230944.

use serde::Deserialize;

use super::crypto::{self, Keyring};
use super::standard_webhooks::StandardWebhooks;
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

const TOKEN: &str = "x-gitlab-token";
const EVENT: &str = "x-gitlab-event";
const EVENT_UUID: &str = "x-gitlab-event-uuid";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const WEBHOOK_ID: &str = "webhook-id";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Signing {
    #[default]
    Token,
    StandardWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GitLabOptions {
    signing: Signing,
}

#[derive(Debug)]
enum Scheme {
    Token(Keyring),
    Signed(StandardWebhooks),
}

#[derive(Debug)]
pub(crate) struct GitLab {
    scheme: Scheme,
}

impl GitLab {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: GitLabOptions = crypto::parse_options("gitlab", options)?;
        let scheme = match opts.signing {
            Signing::Token => Scheme::Token(Keyring::new("gitlab", secrets)?),
            Signing::StandardWebhooks => Scheme::Signed(
                StandardWebhooks::from_config(&serde_json::Value::Null, secrets).map_err(|e| {
                    ProviderConfigError(format!("gitlab (signing = standard_webhooks): {e}"))
                })?,
            ),
        };
        Ok(Self { scheme })
    }
}

fn canonical_for(event: &str) -> Option<&'static str> {
    match event {
        "Push Hook" | "push" => Some(canonical::CODE_PUSHED),
        "Issue Hook" | "Confidential Issue Hook" | "issue" => Some(canonical::ISSUE_CHANGED),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for GitLab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        match &self.scheme {
            Scheme::Token(keys) => {
                let presented = crypto::required_header(req.headers, TOKEN)?;
                let key_id = keys.first_match(now_ms, |token| {
                    crypto::token_eq(presented.as_bytes(), token)
                })?;
                Ok(Verified {
                    scheme: "gitlab_token",
                    key_id: Some(key_id),
                })
            }
            Scheme::Signed(inner) => inner.verify(req, now_ms).map(|v| Verified {
                scheme: "gitlab_standard_webhooks_v1",
                key_id: v.key_id,
            }),
        }
    }

    /// Provider id: `Idempotency-Key` (GitLab ≥ 17.4 keeps it across retries of one delivery),
    /// else `X-Gitlab-Event-UUID` (shared by the hooks one event triggers, for recursion
    /// detection), else `webhook-id`; in signing mode the signed `webhook-id` keys it. Type:
    /// `X-Gitlab-Event` (`Push Hook`), else the body's `object_kind`.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let body = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("gitlab webhook body is not a JSON object".into()))?;
        let text = |name: &str| {
            body.get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let event_type = fields::header(req.headers, EVENT).or_else(|| text("object_kind"));
        let entity = body
            .get("project")
            .and_then(|p| p.get("path_with_namespace"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty());
        let delivery = [IDEMPOTENCY_KEY, EVENT_UUID, WEBHOOK_ID]
            .iter()
            .find_map(|name| fields::header(req.headers, name))
            .map(str::to_string);
        // With the signing token only `webhook-id` is signed, so only it may key the event;
        // the other ids still name it. The plain token authenticates nothing but itself (a
        // captured request hands it over), so there the ids are taken as they are.
        let (event_id, unsigned_id) = match &self.scheme {
            Scheme::Token(_) => (delivery, None),
            Scheme::Signed(_) => (
                fields::header(req.headers, WEBHOOK_ID).map(str::to_string),
                delivery,
            ),
        };
        Ok(vec![Extracted {
            event_id,
            unsigned_id,
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(canonical_for),
            entity: entity.map(str::to_string),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let after = format!(
            "{:0>40}",
            id.chars()
                .filter(char::is_ascii_hexdigit)
                .collect::<String>()
        );
        serde_json::json!({
            "object_kind": "push", "event_name": "push", "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000", "after": after.get(..40).unwrap_or(&after),
            "user_username": "jsmith", "project_id": 15,
            "project": {"id": 15, "path_with_namespace": "example/app", "default_branch": "main"},
            "commits": [], "total_commits_count": 0, "created": now_ms / 1000
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let mut headers = match &self.scheme {
            Scheme::Token(keys) => {
                let token = String::from_utf8(keys.signing_key(input.now_ms)?.to_vec())
                    .map_err(|_| ProviderConfigError("gitlab token is not UTF-8".into()))?;
                Headers::from_iter([(TOKEN, token)])
            }
            Scheme::Signed(inner) => inner.sign(input)?,
        };
        headers.insert(EVENT, "Push Hook");
        headers.insert(EVENT_UUID, input.delivery_id);
        headers.insert(IDEMPOTENCY_KEY, input.delivery_id);
        Ok(headers)
    }
}

/// How the provider suite (`suite.rs`) signs for GitLab's default scheme: the webhook's
/// secret token, sent back as is in `X-Gitlab-Token`. The body is not signed.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"object_kind":"push","ref":"refs/heads/main","project":{"id":15,"path_with_namespace":"example/app"}}"#;
        let token = String::from_utf8_lossy(&key.expect("gitlab is keyed").signing).into_owned();
        let headers = Headers::from_iter([
            (TOKEN, token),
            (EVENT, "Push Hook".into()),
            (EVENT_UUID, "6c6f3b4e-0000-4000-8000-000000000000".into()),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        tampered: None,
        ..Case::new(
            "gitlab",
            "gitlab_token",
            || TestKey::pair("glwh-secret-token-Pq4Zs", "glwh-rotated-token-Mx8Ld"),
            sign,
            Carrier::header(TOKEN),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};
    use crate::providers::crypto::{HmacAlgorithm, SignatureEncoding};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const TOKEN_VALUE: &str = "glwh-secret-token";
    const SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn gitlab(secrets: Vec<Secret>) -> GitLab {
        GitLab::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed_gitlab(secrets: Vec<Secret>) -> GitLab {
        GitLab::from_config(
            &serde_json::json!({"signing": "standard_webhooks"}),
            secrets,
        )
        .unwrap()
    }

    /// Standard Webhooks headers for `body`, signed with `SIGNING`.
    fn sw_headers(id: &str, ts_s: i64, body: &[u8]) -> Headers {
        let key = SignatureEncoding::Base64
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let ts = ts_s.to_string();
        let sig = HmacAlgorithm::Sha256
            .compute(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])
            .unwrap();
        Headers::from_iter([
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts),
            (
                "webhook-signature",
                format!("v1,{}", SignatureEncoding::Base64.encode(&sig)),
            ),
            ("X-Gitlab-Event", "Issue Hook".to_string()),
        ])
    }

    #[test]
    fn every_gitlab_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["gitlab"]) {
            let h = v.headers();
            let got = gitlab(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
                assert_eq!(verified.scheme, "gitlab_token");
            }
        }
    }

    #[test]
    fn gitlab_vector_extracts_event_uuid_and_push() {
        let v = testkit::vector("gitlab-token");
        let h = v.headers();
        let got = gitlab(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("6c6f3b4e-0000-4000-8000-000000000000".into()),
                event_type: Some("Push Hook".into()),
                canonical_type: Some(canonical::CODE_PUSHED),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn idempotency_key_wins_and_object_kind_stands_in_for_the_event_header() {
        let h = Headers::from_iter([(IDEMPOTENCY_KEY, "idem-1"), (EVENT_UUID, "uuid-1")]);
        let body = br#"{"object_kind":"issue","project":{"path_with_namespace":"g/p"}}"#;
        let got = gitlab(vec![secret("k", TOKEN_VALUE)])
            .extract(&request(&h, body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id.as_deref(), Some("idem-1"));
        assert_eq!(got.event_type.as_deref(), Some("issue"));
        assert_eq!(got.canonical_type, Some(canonical::ISSUE_CHANGED));
        assert_eq!(got.entity.as_deref(), Some("g/p"));
        assert!(gitlab(vec![secret("k", TOKEN_VALUE)])
            .extract(&request(&h, b"[]"))
            .is_err());
    }

    #[test]
    fn wrong_gitlab_token_is_refused_and_the_body_is_not_authenticated() {
        let p = gitlab(vec![secret("k", TOKEN_VALUE)]);
        for presented in ["glwh-secret-tokem", "glwh-secret-toke", "GLWH-SECRET-TOKEN"] {
            let h = Headers::from_iter([("X-Gitlab-Token", presented)]);
            assert_eq!(
                p.verify(&request(&h, b"{}"), NOW_MS),
                Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
                "{presented}"
            );
        }
        let h = Headers::from_iter([("X-Gitlab-Token", TOKEN_VALUE)]);
        assert!(p.verify(&request(&h, b"any body at all"), NOW_MS).is_ok());
    }

    #[test]
    fn gitlab_signing_token_verifies_through_standard_webhooks() {
        let p = signed_gitlab(vec![secret("signing", SIGNING)]);
        let body = br#"{"object_kind":"issue"}"#;
        let h = sw_headers("msg_1", NOW_MS / 1000, body);
        let got = p.verify(&request(&h, body), NOW_MS).unwrap();
        assert_eq!(got.scheme, "gitlab_standard_webhooks_v1");
        assert_eq!(got.key_id.as_deref(), Some("signing"));
        let got = p.extract(&request(&h, body)).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("msg_1"));
        assert_eq!(got.canonical_type, Some(canonical::ISSUE_CHANGED));
    }

    #[test]
    fn gitlab_signing_mode_refuses_tampered_stale_and_token_only_requests() {
        let p = signed_gitlab(vec![secret("signing", SIGNING)]);
        let body = br#"{"object_kind":"issue"}"#;
        let h = sw_headers("msg_1", NOW_MS / 1000, body);
        assert_eq!(
            p.verify(&request(&h, br#"{"object_kind":"push"}"#), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        assert!(matches!(
            p.verify(&request(&h, body), NOW_MS + 301_000),
            Err(VerifyError::TimestampTooOld { .. })
        ));
        assert!(matches!(
            p.verify(&request(&h, body), NOW_MS - 301_000),
            Err(VerifyError::TimestampInFuture { .. })
        ));
        let token_only = Headers::from_iter([("X-Gitlab-Token", SIGNING)]);
        assert_eq!(
            p.verify(&request(&token_only, body), NOW_MS),
            Err(VerifyError::MissingSignature("webhook-signature".into()))
        );
    }

    #[test]
    fn gitlab_sign_then_verify_round_trips_in_both_modes() {
        for p in [
            gitlab(vec![secret("k", TOKEN_VALUE)]),
            signed_gitlab(vec![secret("k", SIGNING)]),
        ] {
            let body = p.sample_body("ab12", NOW_MS);
            let h = p
                .sign(&SignInput {
                    body: &body,
                    now_ms: NOW_MS,
                    delivery_id: "dlv_1",
                })
                .unwrap();
            let req = request(&h, &body);
            assert!(p.verify(&req, NOW_MS).is_ok(), "{p:?}");
            let got = p.extract(&req).unwrap().remove(0);
            assert_eq!(got.event_id.as_deref(), Some("dlv_1"));
            assert_eq!(got.canonical_type, Some(canonical::CODE_PUSHED));
            assert_eq!(got.entity.as_deref(), Some("example/app"));
        }
    }

    #[test]
    fn gitlab_config_errors_are_clear_and_never_echo_secrets() {
        let err = GitLab::from_config(
            &serde_json::json!({"signing": "hmac"}),
            vec![secret("k", "t")],
        )
        .unwrap_err();
        assert!(
            err.0.contains("gitlab options") && err.0.contains("hmac"),
            "{err}"
        );
        let err = GitLab::from_config(&serde_json::json!({"token": "x"}), vec![secret("k", "t")])
            .unwrap_err();
        assert!(err.0.contains("unknown field `token`"), "{err}");
        let err = GitLab::from_config(
            &serde_json::json!({"signing": "standard_webhooks"}),
            vec![secret("k", "whsec_!!not-base64!!")],
        )
        .unwrap_err();
        assert!(
            err.0.starts_with("gitlab (signing = standard_webhooks)"),
            "{err}"
        );
        assert!(!err.0.contains("not-base64"), "{err}");
        assert!(GitLab::from_config(&serde_json::Value::Null, vec![]).is_err());
        assert!(!format!("{:?}", gitlab(vec![secret("k", TOKEN_VALUE)])).contains(TOKEN_VALUE));
    }
}
