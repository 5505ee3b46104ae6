//! The presets proof: each named provider expressible in the generic scheme has a table in
//! `shared/testdata/presets.toml`, and every vector of that provider in
//! `shared/testdata/vectors.json` gets its expected verdict through the generic provider
//! built from that table. PayPal is the one provider that needs code (certificate fetch).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::providers::crypto::testkit::{self, request, secret, DEFAULT_NOW_MS};

const PRESETS: &str = include_str!("../../../testdata/presets.toml");
const VECTORS: &str = include_str!("../../../testdata/vectors.json");

/// Providers whose scheme the generic config cannot express, and why (also in
/// docs/generic-scheme.md).
const NEEDS_CODE: &[&str] = &["paypal"];

fn presets() -> BTreeMap<String, Value> {
    toml::from_str(PRESETS).expect("presets.toml parses")
}

fn raw_vectors() -> Vec<Value> {
    serde_json::from_str(VECTORS).expect("vectors.json parses")
}

/// Which preset a vector belongs to.
fn preset_for(v: &Value) -> Option<&'static str> {
    let provider = v["provider"].as_str()?;
    Some(match provider {
        "standard-webhooks" if v["secret"].is_null() => "standard_webhooks_v1a",
        "standard-webhooks" => "standard_webhooks",
        "checkout.com" => "checkout_com",
        "twilio" if v["content_type"] == "application/json" => "twilio_json",
        "twilio" => "twilio_form",
        "paypal" => return None,
        "github" => "github",
        "svix" => "svix",
        "slack" => "slack",
        "square" => "square",
        "sendgrid" => "sendgrid",
        "adyen" => "adyen",
        "stripe" => "stripe",
        "paddle" => "paddle",
        "razorpay" => "razorpay",
        "mailgun" => "mailgun",
        "shopify" => "shopify",
        "meta" => "meta",
        "telegram" => "telegram",
        "zoom" => "zoom",
        "twitch" => "twitch",
        "discord" => "discord",
        "intercom" => "intercom",
        "linear" => "linear",
        "gitlab" => "gitlab",
        "postmark" => "postmark",
        other => panic!("vector provider {other} has no preset mapping"),
    })
}

/// `https://host/…` → `https://host:443/…` (Twilio signs either form).
fn with_default_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let port = if scheme == "https" { 443 } else { 80 };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    format!("{scheme}://{host}:{port}{path}")
}

/// The preset's options with the vector's configured URL (presets carry placeholders).
fn options_for(preset: &str, v: &Value) -> Value {
    let mut options = presets()
        .remove(preset)
        .unwrap_or_else(|| panic!("no preset {preset}"));
    if let Some(url) = v["url"].as_str() {
        options["url"] = match preset {
            "twilio_form" => json!([url, with_default_port(url)]),
            // The configured URL is the vector's without the `bodySHA256` Twilio appends.
            "twilio_json" => json!(url.split("&bodySHA256=").next().unwrap()),
            _ => json!(url),
        };
    }
    options
}

fn secrets_for(preset: &str, v: &Value) -> Vec<Secret> {
    let id = v["id"].as_str().unwrap();
    let value = v["secret"]
        .as_str()
        .or_else(|| v["public_key"].as_str())
        .expect("vector has a secret or public key");
    let mut secrets = vec![secret(&format!("{id}-key"), value)];
    if preset == "meta" {
        secrets.push(secret("verify_token", "meta-verify-token"));
    }
    secrets
}

/// The vector's clock: `now`, else (no freshness check applies) its own signed timestamp, so
/// presets that do check freshness judge the signature and not the vector's age.
fn now_ms(v: &Value) -> i64 {
    v["now"]
        .as_i64()
        .or_else(|| v["timestamp"].as_i64().filter(|t| *t < 10_000_000_000))
        .map_or(DEFAULT_NOW_MS, |s| s * 1000)
}

fn headers(v: &Value) -> Headers {
    v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, val)| (k.as_str(), val.as_str().unwrap().to_string()))
        .collect()
}

fn build(preset: &str, v: &Value) -> Generic {
    Generic::from_config(&options_for(preset, v), secrets_for(preset, v))
        .unwrap_or_else(|e| panic!("preset {preset}: {e}"))
}

#[test]
fn every_preset_in_presets_toml_builds() {
    let table = presets();
    assert!(table.len() >= 25, "{} presets", table.len());
    for (name, options) in table {
        let value = match name.as_str() {
            "discord" => "33d0283fbf6d6672ab310e97f6b87995515fffe6cb1a4c7f04226b9f391f58ec",
            "standard_webhooks_v1a" => "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=",
            "sendgrid" => "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==",
            "postmark" => "user:pass",
            "adyen" => "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
            _ => "whsec_c2VjcmV0LWtleS0wMTIzNDU2Nzg5",
        };
        let mut secrets = vec![secret("k", value)];
        if name == "meta" {
            secrets.push(secret("verify_token", "vt"));
        }
        Generic::from_config(&options, secrets).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn every_vector_gets_its_expected_verdict_through_its_preset() {
    let mut per_preset: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for v in raw_vectors() {
        let id = v["id"].as_str().unwrap();
        let Some(preset) = preset_for(&v) else {
            skipped.push(v["provider"].as_str().unwrap().to_string());
            continue;
        };
        let p = build(preset, &v);
        let h = headers(&v);
        let body = v["body"].as_str().unwrap().as_bytes();
        let got = p.verify(&request(&h, body), now_ms(&v));
        let expected = v["expected"]["valid"].as_bool().unwrap();
        assert_eq!(got.is_ok(), expected, "{id} via preset {preset}: {got:?}");
        let counts = per_preset.entry(preset).or_default();
        counts.0 += 1;
        counts.1 += usize::from(expected);
    }
    assert!(
        skipped.iter().all(|p| NEEDS_CODE.contains(&p.as_str())),
        "{skipped:?}"
    );
    // Every provider named in the brief is covered by at least one vector.
    for preset in [
        "github",
        "stripe",
        "standard_webhooks",
        "standard_webhooks_v1a",
        "svix",
        "shopify",
        "slack",
        "telegram",
        "meta",
        "paddle",
        "square",
        "zoom",
        "twitch",
        "discord",
        "sendgrid",
        "mailgun",
        "postmark",
        "checkout_com",
        "razorpay",
        "gitlab",
        "intercom",
        "linear",
        "twilio_form",
        "twilio_json",
        "adyen",
    ] {
        assert!(
            per_preset.contains_key(preset),
            "no vector ran for {preset}"
        );
    }
    let total: usize = per_preset.values().map(|c| c.0).sum();
    assert_eq!(total, 38, "{per_preset:?}");
}

#[test]
fn stale_and_future_vectors_fail_on_time_and_tampered_ones_on_the_signature() {
    for (id, check) in [
        (
            "standardwebhooks-neg-stale",
            (|e: &VerifyError| matches!(e, VerifyError::TimestampTooOld { .. }))
                as fn(&VerifyError) -> bool,
        ),
        ("standardwebhooks-neg-future", |e| {
            matches!(e, VerifyError::TimestampInFuture { .. })
        }),
        ("standardwebhooks-neg-tampered", |e| {
            matches!(e, VerifyError::SignatureMismatch { .. })
        }),
        ("twilio-neg-json-tampered", |e| {
            matches!(e, VerifyError::SignatureMismatch { .. })
        }),
        ("square-neg-url-mismatch", |e| {
            matches!(e, VerifyError::SignatureMismatch { .. })
        }),
        ("sendgrid-neg-stripped-crlf", |e| {
            matches!(e, VerifyError::SignatureMismatch { .. })
        }),
        ("adyen-neg-amount-tampered", |e| {
            matches!(e, VerifyError::SignatureMismatch { .. })
        }),
    ] {
        let v = raw_vectors().into_iter().find(|v| v["id"] == id).unwrap();
        let preset = preset_for(&v).unwrap();
        let h = headers(&v);
        let got = build(preset, &v)
            .verify(
                &request(&h, v["body"].as_str().unwrap().as_bytes()),
                now_ms(&v),
            )
            .unwrap_err();
        assert!(check(&got), "{id}: {got:?}");
    }
}

fn vector_and_provider(id: &str) -> (Value, Generic) {
    let v = raw_vectors().into_iter().find(|v| v["id"] == id).unwrap();
    let p = build(preset_for(&v).unwrap(), &v);
    (v, p)
}

fn extract(id: &str) -> Vec<Extracted> {
    let (v, p) = vector_and_provider(id);
    let h = headers(&v);
    p.extract(&request(&h, v["body"].as_str().unwrap().as_bytes()))
        .unwrap()
}

#[test]
fn presets_extract_the_dedupe_keys_of_design_md() {
    let stripe = extract("stripe-valid").remove(0);
    assert_eq!(stripe.event_id.as_deref(), Some("evt_test_webhook"));
    assert_eq!(stripe.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
    assert_eq!(
        (stripe.amount, stripe.currency.as_deref()),
        (Some(2000), Some("USD"))
    );
    let adyen = extract("adyen-standard-notification").remove(0);
    assert_eq!(
        adyen.event_id.as_deref(),
        Some("7914073381342284#AUTHORISATION")
    );
    assert_eq!(
        (adyen.amount, adyen.currency.as_deref()),
        (Some(1130), Some("EUR"))
    );
    assert_eq!(adyen.occurred_at_ms, Some(1_557_155_734_121));
    let mailgun = extract("mailgun-json").remove(0);
    // Mailgun signs only `timestamp` and `token`: its event id names the event, never keys it.
    assert_eq!(
        (mailgun.event_id.as_deref(), mailgun.unsigned_id.as_deref()),
        (None, Some("CPgfbmQMTCKtHW6uIWtuVe"))
    );
    assert_eq!(mailgun.canonical_type, Some(canonical::MESSAGE_DELIVERED));
    assert_eq!(mailgun.occurred_at_ms, Some(1_767_225_598_500));
    let telegram = extract("telegram-secret-token").remove(0);
    assert_eq!(telegram.event_id.as_deref(), Some("10000"));
    let razorpay = extract("razorpay-valid").remove(0);
    // Razorpay's event id header is outside the signed body.
    assert_eq!(
        (
            razorpay.event_id.as_deref(),
            razorpay.unsigned_id.as_deref()
        ),
        (None, Some("evt_Example000001"))
    );
    assert_eq!(razorpay.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
    assert_eq!(
        (razorpay.amount, razorpay.currency.as_deref()),
        (Some(100), Some("INR"))
    );
    let shopify = extract("shopify-valid").remove(0);
    assert_eq!(shopify.canonical_type, Some(canonical::ORDER_CREATED));
}

#[test]
fn sendgrid_preset_splits_the_batch_into_byte_exact_events() {
    let (v, p) = vector_and_provider("sendgrid-sdk-test");
    let body = v["body"].as_str().unwrap();
    let h = headers(&v);
    let events = p.extract(&request(&h, body.as_bytes())).unwrap();
    assert_eq!(events.len(), 1);
    let part = events[0].part.as_deref().unwrap();
    assert!(body.as_bytes().windows(part.len()).any(|w| w == part));
    assert_eq!(part.first(), Some(&b'{'));
    assert_eq!(part.last(), Some(&b'}'));
    assert_eq!(
        events[0].event_id.as_deref(),
        Some("ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA")
    );
    assert_eq!(events[0].canonical_type, Some(canonical::MESSAGE_FAILED));
    assert_eq!(events[0].entity.as_deref(), Some("hello@world.com"));
}

#[test]
fn discord_preset_answers_the_ping_vector_with_type_1() {
    let (v, p) = vector_and_provider("discord-ping");
    let h = headers(&v);
    let got = p.handshake(
        &request(&h, v["body"].as_str().unwrap().as_bytes()),
        now_ms(&v),
    );
    assert_eq!(
        got,
        Some(Ok(HandshakeReply::json(
            v["expected"]["response_json"].clone()
        )))
    );
}

#[test]
fn symmetric_presets_sign_what_they_verify() {
    for (preset, body) in [
        ("github", "{}"),
        ("stripe", "{}"),
        ("standard_webhooks", "{}"),
        ("svix", "{}"),
        ("shopify", "{}"),
        ("slack", "a=1"),
        ("telegram", "{}"),
        ("meta", "{}"),
        ("paddle", "{}"),
        ("square", "{}"),
        ("zoom", "{}"),
        ("twitch", "{}"),
        ("postmark", "{}"),
        ("checkout_com", "{}"),
        ("razorpay", "{}"),
        ("gitlab", "{}"),
        ("intercom", "{}"),
        ("twilio_form", "A=1&B=2"),
        ("twilio_json", "{}"),
    ] {
        let key = if preset == "postmark" {
            "u:p"
        } else {
            "whsec_c2VjcmV0LWtleS0wMTIzNDU2Nzg5"
        };
        let mut secrets = vec![secret("k", key)];
        if preset == "meta" {
            secrets.push(secret("verify_token", "vt"));
        }
        let p = Generic::from_config(&presets()[preset], secrets).unwrap();
        let input = SignInput {
            body: body.as_bytes(),
            now_ms: DEFAULT_NOW_MS,
            delivery_id: "d-1",
        };
        let h = p.sign(&input).unwrap_or_else(|e| panic!("{preset}: {e}"));
        let got = p.verify(&request(&h, input.body), DEFAULT_NOW_MS);
        assert!(got.is_ok(), "{preset}: {got:?} {h:?}");
    }
}

#[test]
fn the_testkit_vectors_and_the_raw_vectors_agree() {
    // The presets proof reads vectors.json itself (for `public_key`, `content_type`,
    // `timestamp`); make sure it sees the same set as the shared testkit.
    let kit = testkit::vectors();
    assert_eq!(kit.len(), raw_vectors().len());
    assert!(kit.iter().any(|v| v.url.is_some()));
}
