//! The provider catalogue through the real HTTP server and the whole local pipeline: every
//! provider in the dev config end to end, the handshakes (answered, never enqueued), batched
//! bodies split into one event each, and providers' own acknowledgements.

use ed25519_dalek::{Signer, SigningKey};
use inlet::envelope::Envelope;
use inlet::ports::{Clock, DedupeStatus, TrailRow};
use inlet::providers::SignInput;
use inlet::request::Headers;
use inlet::worker::Outcome;
use sha2::Digest;

use crate::pipeline::Running;

/// Sources whose provider verifies with a public key: Inlet holds no private key to sign with.
const VERIFY_ONLY: &[&str] = &["discord", "sendgrid", "paypal"];

fn sign(run: &Running, source: &str, body: &[u8], delivery: &str) -> Headers {
    run.stack
        .config
        .source(source)
        .expect("source configured")
        .provider
        .sign(&SignInput {
            body,
            now_ms: run.clock.now_ms(),
            delivery_id: delivery,
        })
        .unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn envelopes(run: &Running) -> Vec<Envelope> {
    std::fs::read_to_string(run.jsonl())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("envelope line"))
        .collect()
}

#[tokio::test]
async fn every_provider_in_the_dev_config_is_dispatched_once_end_to_end() {
    let run = Running::start(|_| {}).await;
    let mut signed = 0;
    let mut ids: Vec<&String> = run.stack.config.sources.keys().collect();
    ids.sort();
    for (n, source) in ids.into_iter().enumerate() {
        let provider = &run.stack.config.source(source).expect("source").provider;
        let body = provider.sample_body(&format!("{n:04}e2e{source}"), run.clock.now_ms());
        let delivery = format!("delivery-{source}");
        let headers = match provider.sign(&SignInput {
            body: &body,
            now_ms: run.clock.now_ms(),
            delivery_id: &delivery,
        }) {
            Ok(h) => h,
            Err(e) => {
                assert!(
                    VERIFY_ONLY.contains(&source.as_str()),
                    "{source} cannot sign: {e}"
                );
                continue;
            }
        };
        signed += 1;
        let (status, answer) = run.post(source, &headers, &body).await;
        assert_eq!(status, 200, "{source}: {answer}");
        let outcomes = run.drain().await;
        assert!(
            !outcomes.is_empty()
                && outcomes
                    .iter()
                    .all(|o| matches!(o, Outcome::Dispatched { .. })),
            "{source}: {outcomes:?}"
        );
        // The provider's retry of the same delivery is absorbed.
        let (status, _) = run.post(source, &headers, &body).await;
        assert_eq!(status, 200, "{source}");
        let again = run.drain().await;
        assert!(
            again.len() == outcomes.len()
                && again.iter().all(|o| matches!(o, Outcome::Duplicate { .. })),
            "{source}: {again:?}"
        );
    }
    assert_eq!(
        signed + VERIFY_ONLY.len(),
        run.stack.config.sources.len(),
        "every source is either signed here or verify-only"
    );
    // Each dispatched envelope names the key that verified it; the trail carries it too.
    for env in envelopes(&run) {
        assert!(env.verified.key_id.is_some(), "{}", env.dedupe_key);
    }
    let completed: Vec<_> = run
        .trail()
        .await
        .into_iter()
        .filter_map(|r| match r {
            TrailRow::Record(rec) if rec.status == DedupeStatus::Completed => Some(rec),
            _ => None,
        })
        .collect();
    assert!(completed.iter().all(|r| r.summary.key_id.is_some()));
    let stripe = completed
        .iter()
        .find(|r| r.source == "stripe")
        .expect("stripe record");
    assert_eq!(
        stripe.summary.canonical_type.as_deref(),
        Some("payment.succeeded")
    );
    assert_eq!(
        (stripe.summary.amount, stripe.summary.currency.as_deref()),
        (Some(2000), Some("USD"))
    );
}

#[tokio::test]
async fn handshakes_are_answered_synchronously_and_never_enqueued() {
    let run = Running::start(|_| {}).await;
    let http = reqwest::Client::new();

    // Meta: GET with the verify token → the raw challenge; a wrong token is refused.
    let url = |token: &str| {
        format!(
            "http://{}/webhooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            run.addr
        )
    };
    let resp = http
        .get(url("inlet-dev-meta-verify-token"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.expect("text"), "1158201444");
    let resp = http.get(url("guess")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 401);

    // Slack: a signed url_verification → the challenge.
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = run
        .post("slack", &sign(&run, "slack", body, "d"), body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // The same check unsigned is refused.
    let (status, _) = run.post("slack", &Headers::new(), body).await;
    assert_eq!(status, 401);

    // Zoom: endpoint.url_validation → plainToken and its HMAC under the secret token.
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let (status, answer) = run.post("zoom", &sign(&run, "zoom", body, "d"), body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(b"inlet-dev-zoom-secret-token")
            .expect("key");
    hmac::Mac::update(&mut mac, b"qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        answer["encryptedToken"],
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    );

    // Twitch: webhook_callback_verification → the raw challenge as text.
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"2"}}"#;
    let signed = sign(&run, "twitch", body, "twitch-msg-1");
    let mut h: Headers = signed
        .iter()
        .filter(|(name, _)| *name != "twitch-eventsub-message-type")
        .collect();
    h.insert(
        "Twitch-Eventsub-Message-Type",
        "webhook_callback_verification",
    );
    let (status, answer) = run.post("twitch", &h, body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, "pogchamp-kappa-360noscope-vohiyo");

    // Discord: a PING signed with the application key → {"type":1}.
    let body = br#"{"application_id":"1","id":"2","token":"t","type":1,"version":1}"#;
    let (status, answer) = run.post("discord", &discord_signed(&run, body), body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, serde_json::json!({"type": 1}));

    assert_eq!(run.drain().await, vec![], "no handshake reached the queue");
}

/// Headers for a Discord request signed with the key behind the dev config's public key
/// (the test seed of the Discord vectors).
fn discord_signed(run: &Running, body: &[u8]) -> Headers {
    let seed: [u8; 32] = sha2::Sha256::digest(b"discord-test-key-seed").into();
    let key = SigningKey::from_bytes(&seed);
    let ts = (run.clock.now_ms() / 1000).to_string();
    let mut message = ts.as_bytes().to_vec();
    message.extend_from_slice(body);
    Headers::from_iter([
        (
            "X-Signature-Ed25519",
            hex::encode(key.sign(&message).to_bytes()),
        ),
        ("X-Signature-Timestamp", ts),
    ])
}

#[tokio::test]
async fn a_discord_command_is_enqueued_and_answered_with_a_deferred_callback() {
    let run = Running::start(|_| {}).await;
    let body = br#"{"application_id":"1","id":"1455999425728512000","token":"t","type":2,"data":{"name":"bet"},"member":{"user":{"id":"53908232506183680"}}}"#;
    let (status, answer) = run.post("discord", &discord_signed(&run, body), body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, serde_json::json!({"type": 5}));
    assert_eq!(
        run.drain().await,
        vec![Outcome::Dispatched {
            dedupe_key: "discord#1455999425728512000".into()
        }]
    );
}

#[tokio::test]
async fn a_batched_body_becomes_one_event_each_with_its_own_dedupe_key() {
    let run = Running::start(|_| {}).await;
    // One WhatsApp delivery carrying two messages and a status in one entry.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},"messages":[{"from":"16315551181","id":"wamid.A1","timestamp":"1767225600","text":{"body":"h\u00e9llo"},"type":"text"},{"from":"16315551181","id":"wamid.A2","timestamp":"1767225601","text":{"body":"again"},"type":"text"}],"statuses":[{"id":"wamid.B1","status":"delivered","timestamp":"1767225602","recipient_id":"16315551182"}]},"field":"messages"}]}]}"#;
    let headers = sign(&run, "meta", body, "d");
    let (status, answer) = run.post("meta", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 3);
    let mut outcomes = run.drain().await;
    outcomes.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        outcomes,
        vec![
            Outcome::Dispatched {
                dedupe_key: "meta#wamid.A1".into()
            },
            Outcome::Dispatched {
                dedupe_key: "meta#wamid.A2".into()
            },
            Outcome::Dispatched {
                dedupe_key: "meta#wamid.B1#delivered".into()
            },
        ]
    );
    let request_sha256 = inlet::envelope::sha256_hex(body);
    for env in envelopes(&run) {
        let part = env.part.as_ref().expect("a part of a batch");
        assert_eq!((part.count, &part.request_sha256), (3, &request_sha256));
        // The part is its own message or status beside its entry's context, every member
        // sliced byte for byte from what Meta signed.
        let bytes = env.body_bytes().expect("body");
        let members: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&bytes).expect("a JSON object");
        let kinds: Vec<&str> = ["message", "status"]
            .into_iter()
            .filter(|k| members.contains_key(*k))
            .collect();
        assert_eq!(kinds.len(), 1, "{}", env.dedupe_key);
        assert_eq!(
            members["metadata"].get(),
            r#"{"phone_number_id":"106540352242922"}"#
        );
        for raw in members.values() {
            let raw = raw.get().as_bytes();
            assert!(
                body.windows(raw.len()).any(|w| w == raw),
                "{} is made of slices of the request",
                env.dedupe_key
            );
        }
    }
    // The same delivery again: three duplicates, nothing dispatched twice.
    let (status, _) = run.post("meta", &headers, body).await;
    assert_eq!(status, 200);
    let again = run.drain().await;
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|o| matches!(o, Outcome::Duplicate { .. })));
}
