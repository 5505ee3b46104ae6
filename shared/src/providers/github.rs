//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the raw body with the hook
//! secret as UTF-8. No timestamp is signed: replay protection is the dedupe on
//! `X-GitHub-Delivery`. Source: docs.github.com "Validating webhook deliveries".

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring};
use super::{
    canonical, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

/// `X-Hub-Signature` (SHA-1) is sent by GitHub "only for legacy purposes" next to the SHA-256
/// one: see [`crypto::x_hub_signature`].
const SIGNATURE_256: &str = crypto::X_HUB_SIGNATURE_256;
const DELIVERY: &str = "x-github-delivery";
const EVENT: &str = "x-github-event";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GitHubOptions {
    /// Accept `X-Hub-Signature: sha1=` when no SHA-256 header is present (GitHub Enterprise
    /// Server versions and proxies that only forward the legacy header).
    allow_sha1_fallback: bool,
}

#[derive(Debug)]
pub struct GitHub {
    keys: Keyring,
    allow_sha1_fallback: bool,
}

impl GitHub {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: GitHubOptions = crypto::parse_options("github", options)?;
        Ok(Self {
            keys: Keyring::new("github", secrets)?,
            allow_sha1_fallback: opts.allow_sha1_fallback,
        })
    }
}

#[async_trait::async_trait]
impl Provider for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let (algorithm, sig) = crypto::x_hub_signature(req.headers, self.allow_sha1_fallback)?;
        let key_id = self
            .keys
            .first_match(now_ms, |key| algorithm.verify(key, &[req.body], &sig))?;
        Ok(Verified {
            scheme: match algorithm {
                HmacAlgorithm::Sha1 => "github_sha1",
                _ => "github_sha256",
            },
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let delivery = crypto::required_header(req.headers, DELIVERY)
            .map_err(|_| ExtractError("missing X-GitHub-Delivery header".into()))?;
        let event = req
            .headers
            .get(EVENT)
            .map(str::trim)
            .filter(|e| !e.is_empty());
        // Form-encoded deliveries (`payload=…`) are not parsed: type from the header only.
        let body = crypto::json_object(req.body);
        let text = |pointer: &str| {
            body.as_ref()
                .and_then(|b| b.get(pointer))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        // `pull_request` + body `"action": "opened"` → `pull_request.opened`, so routes can
        // match on the action without parsing the body again.
        let event_type = event.map(|event| match text("action") {
            Some(action) => format!("{event}.{action}"),
            None => event.to_string(),
        });
        let canonical_type = event.and_then(|event| match event {
            "push" => Some(canonical::CODE_PUSHED),
            "issues" => Some(canonical::ISSUE_CHANGED),
            "ping" => Some(canonical::WEBHOOK_PING),
            _ => None,
        });
        // The repository the event is about; org-level events (`organization`, `member`…)
        // carry none.
        let entity = body
            .as_ref()
            .and_then(|b| b.get("repository"))
            .and_then(|r| r.get("full_name"))
            .and_then(|n| n.as_str())
            .map(str::to_string);
        // GitHub signs the body only: the delivery id names the event but cannot key it.
        Ok(vec![Extracted {
            unsigned_id: Some(delivery.to_string()),
            event_type,
            canonical_type,
            entity,
            ..Default::default()
        }])
    }

    /// Always `X-GitHub-Event: push`: the event header is not signed and only feeds routing,
    /// and `push` is the most common real event (a `ping` would be dropped by most routes).
    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({"zen": "Keep it logically awesome.", "hook_id": 1, "id": id, "created": now_s})
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        Ok(Headers::from_iter([
            (
                SIGNATURE_256,
                crypto::hub_signature_value(HmacAlgorithm::Sha256, &sig),
            ),
            (DELIVERY, input.delivery_id.to_string()),
            (EVENT, "push".to_string()),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for GitHub: `X-Hub-Signature-256:
/// sha256=<hex>`, HMAC-SHA256 of the body, beside the delivery and event headers.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"ref":"refs/heads/main","repository":{"id":1,"full_name":"octo/hello"}}"#;
        let tag = key
            .expect("github is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body]);
        let headers = Headers::from_iter([
            (SIGNATURE_256, format!("sha256={}", hex::encode(tag))),
            (DELIVERY, "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            (EVENT, "push".into()),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        garbled: |s| {
            let hex = s.header(SIGNATURE_256).trim_start_matches("sha256=");
            [
                hex.to_string(),
                format!("sha1={hex}"),
                "sha256=zz".into(),
                "sha256".into(),
            ]
            .map(|v| s.with_header(SIGNATURE_256, v))
            .to_vec()
        },
        ..Case::new(
            "github",
            "github_sha256",
            || TestKey::pair("gh-hook-Kq8Zt2vB", "gh-hook-Wm4Xc9nR"),
            sign,
            Carrier::header(SIGNATURE_256),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    fn github(secrets: Vec<Secret>) -> GitHub {
        GitHub::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;

    fn signed(alg: HmacAlgorithm, secret: &str, body: &[u8]) -> String {
        hex::encode(alg.compute(secret.as_bytes(), &[body]).unwrap())
    }

    #[test]
    fn every_github_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["github"]) {
            let h = v.headers();
            let got = github(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
        }
    }

    #[test]
    fn meta_vector_verifies_because_it_uses_the_same_header_format() {
        let v = testkit::vector("meta-whatsapp");
        let h = v.headers();
        let got = github(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn uppercase_hex_github_signature_is_accepted() {
        let value = format!(
            "sha256={}",
            signed(HmacAlgorithm::Sha256, "s", b"x").to_uppercase()
        );
        let h = Headers::from_iter([("X-Hub-Signature-256", value.as_str())]);
        assert!(github(vec![secret("k", "s")])
            .verify(&request(&h, b"x"), NOW_MS)
            .is_ok());
    }

    #[test]
    fn legacy_sha1_github_signature_is_refused_by_default() {
        let v = testkit::vector("intercom-ping");
        let h = v.headers();
        let got = github(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), NOW_MS);
        assert_eq!(
            got,
            Err(VerifyError::MissingSignature("x-hub-signature-256".into()))
        );
    }

    #[test]
    fn legacy_sha1_github_signature_is_accepted_when_fallback_is_enabled() {
        // Intercom uses GitHub's legacy `X-Hub-Signature: sha1=` format byte for byte.
        let v = testkit::vector("intercom-ping");
        let h = v.headers();
        let p = GitHub::from_config(
            &serde_json::json!({"allow_sha1_fallback": true}),
            vec![v.secret()],
        )
        .unwrap();
        let got = p.verify(&request(&h, v.body.as_bytes()), NOW_MS).unwrap();
        assert_eq!(got.scheme, "github_sha1");
    }

    #[test]
    fn sha1_fallback_is_not_used_when_the_sha256_header_is_wrong() {
        let p = GitHub::from_config(
            &serde_json::json!({"allow_sha1_fallback": true}),
            vec![secret("k", "s")],
        )
        .unwrap();
        let h = Headers::from_iter([
            ("X-Hub-Signature-256", format!("sha256={}", "00".repeat(32))),
            (
                "X-Hub-Signature",
                format!("sha1={}", signed(HmacAlgorithm::Sha1, "s", b"x")),
            ),
        ]);
        assert_eq!(
            p.verify(&request(&h, b"x"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn github_event_type_includes_the_body_action() {
        let h = Headers::from_iter([
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-GitHub-Event", "pull_request"),
        ]);
        let p = github(vec![secret("k", "s")]);
        let got = p
            .extract(&request(&h, br#"{"action":"opened","number":1}"#))
            .unwrap()
            .remove(0);
        assert_eq!(
            got,
            Extracted {
                unsigned_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
                event_type: Some("pull_request.opened".into()),
                occurred_at_ms: None,
                ..Default::default()
            }
        );
        let got = p
            .extract(&request(&h, b"payload=%7B%7D"))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_type.as_deref(), Some("pull_request"));
    }

    #[test]
    fn github_push_issues_and_ping_map_to_canonical_types_with_the_repository() {
        let p = github(vec![secret("k", "s")]);
        let body = br#"{"ref":"refs/heads/main","repository":{"id":1,"full_name":"octo/hello"}}"#;
        for (event, expected) in [
            ("push", Some(canonical::CODE_PUSHED)),
            ("issues", Some(canonical::ISSUE_CHANGED)),
            ("ping", Some(canonical::WEBHOOK_PING)),
            ("release", None),
        ] {
            let h = Headers::from_iter([("X-GitHub-Delivery", "d"), ("X-GitHub-Event", event)]);
            let got = p.extract(&request(&h, body)).unwrap().remove(0);
            assert_eq!(got.canonical_type, expected, "{event}");
            assert_eq!(got.entity.as_deref(), Some("octo/hello"), "{event}");
        }
        let h = Headers::from_iter([("X-GitHub-Delivery", "d"), ("X-GitHub-Event", "issues")]);
        let got = p
            .extract(&request(&h, br#"{"action":"closed","issue":{"number":1}}"#))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_type.as_deref(), Some("issues.closed"));
        assert_eq!(got.canonical_type, Some(canonical::ISSUE_CHANGED));
        assert_eq!(got.entity, None);
    }

    #[test]
    fn github_delivery_without_delivery_id_is_an_extract_error() {
        let h = Headers::from_iter([("X-GitHub-Event", "push")]);
        assert!(github(vec![secret("k", "s")])
            .extract(&request(&h, b"{}"))
            .is_err());
    }

    #[test]
    fn github_sign_then_verify_round_trips() {
        let p = github(vec![secret("k", "s")]);
        let input = SignInput {
            body: br#"{"ref":"refs/heads/main"}"#,
            now_ms: NOW_MS,
            delivery_id: "d-1",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, input.body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.unsigned_id.as_deref(), Some("d-1"));
        assert_eq!(
            got.event_id, None,
            "the delivery id is not signed: the body keys it"
        );
        assert_eq!(got.event_type.as_deref(), Some("push"));
    }
}
