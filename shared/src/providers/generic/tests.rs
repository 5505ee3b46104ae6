//! Specifications of the generic scheme, one behaviour per test. The presets for named
//! providers are proved separately against every shared vector (`presets.rs`).

use base64::Engine;
use serde_json::json;

use super::*;
use crate::providers::crypto::testkit::{self, expiring_secret, request, secret};

const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
const NOW_S: i64 = NOW_MS / 1000;

fn generic(options: serde_json::Value, secrets: Vec<Secret>) -> Generic {
    Generic::from_config(&options, secrets).unwrap()
}

fn legacy(options: serde_json::Value, secrets: Vec<Secret>) -> Generic {
    Generic::from_config_as("hmac", &options, secrets).unwrap()
}

fn config_error(options: serde_json::Value) -> String {
    Generic::from_config(&options, vec![secret("k", "s")])
        .unwrap_err()
        .0
}

fn hmac_hex(alg: HmacAlgorithm, key: &str, message: &str) -> String {
    hex::encode(alg.compute(key.as_bytes(), &[message.as_bytes()]).unwrap())
}

fn hex_sha256(key: &str, message: &str) -> String {
    hmac_hex(HmacAlgorithm::Sha256, key, message)
}

fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A timestamped config in the former `hmac` provider's syntax, used by the negatives.
fn timestamped() -> serde_json::Value {
    json!({
        "header": "X-Signature",
        "timestamp_header": "X-Timestamp",
        "message": "{timestamp}.{body}",
    })
}

fn timestamped_headers(key: &str, ts: i64, body: &str) -> Headers {
    Headers::from_iter([
        ("X-Timestamp", ts.to_string()),
        ("X-Signature", hex_sha256(key, &format!("{ts}.{body}"))),
    ])
}

// ---- HMAC, headers, templates (the former `hmac` provider's behaviour) ----

#[test]
fn hmac_alias_keeps_the_former_provider_name_and_syntax() {
    let v = testkit::vector("github-docs");
    let p = legacy(
        json!({"header": "X-Hub-Signature-256", "prefix": "sha256="}),
        vec![v.secret()],
    );
    assert_eq!(p.name(), "hmac");
    let h = v.headers();
    let got = p
        .verify(&request(&h, v.body.as_bytes()), v.now_ms())
        .unwrap();
    assert_eq!(got.scheme, "hmac_sha256");
    assert_eq!(
        p.verify(&request(&h, b"Hello, World?"), v.now_ms()),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    let structured = generic(
        json!({"signature": {"header": "X-Hub-Signature-256"}, "prefix": "sha256="}),
        vec![v.secret()],
    );
    assert_eq!(structured.name(), "generic");
    assert!(structured
        .verify(&request(&h, v.body.as_bytes()), v.now_ms())
        .is_ok());
}

#[test]
fn the_dev_config_in_infra_still_builds_under_the_hmac_alias() {
    // infra/dev/inlet.toml's `custom` source, verbatim.
    let p = legacy(
        json!({
            "header": "x-signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
            "timestamp_header": "x-timestamp",
            "message": "{timestamp}.{body}",
            "id_pointer": "/id",
            "type_pointer": "/type",
        }),
        vec![secret("0", "inlet-dev-custom-secret")],
    );
    let body = p.sample_body("evt-1", NOW_MS);
    let input = SignInput {
        body: &body,
        now_ms: NOW_MS,
        delivery_id: "d-1",
    };
    let h = p.sign(&input).unwrap();
    let req = request(&h, &body);
    assert!(p.verify(&req, NOW_MS).is_ok());
    let got = p.extract(&req).unwrap().remove(0);
    assert_eq!(got.event_id.as_deref(), Some("evt-1"));
    assert_eq!(got.event_type.as_deref(), Some("test.event"));
}

#[test]
fn sha512_base64_signature_with_hex_key_and_ms_timestamp_verifies() {
    let key = [0x0bu8; 32];
    let body = br#"{"round":"r-1","amount":"10.00"}"#;
    let ts = (NOW_MS - 1234).to_string();
    // Computed independently of the provider, with the hmac crate directly.
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(&key).unwrap();
    mac.update(b"req-7|");
    mac.update(ts.as_bytes());
    mac.update(b"|");
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let p = generic(
        json!({
            "signature": {"header": "X-Request-Signature"},
            "algorithm": "sha512",
            "encoding": "base64",
            "key_encoding": "hex",
            "timestamp": {"header": "X-Request-Time"},
            "timestamp_unit": "milliseconds",
            "message": ["header:X-Request-Id", "timestamp", "body"],
            "message_separator": "|",
            "event_id": {"header": "X-Request-Id"},
        }),
        vec![secret("k", &hex::encode(key))],
    );
    let h = Headers::from_iter([
        ("x-request-id", "req-7"),
        ("x-request-time", ts.as_str()),
        ("x-request-signature", sig.as_str()),
    ]);
    let req = request(&h, body);
    assert_eq!(p.verify(&req, NOW_MS).unwrap().scheme, "hmac_sha512");
    let unpadded = Headers::from_iter([
        ("x-request-id", "req-7"),
        ("x-request-time", ts.as_str()),
        ("x-request-signature", sig.trim_end_matches('=')),
    ]);
    assert!(
        p.verify(&request(&unpadded, body), NOW_MS).is_ok(),
        "base64 padding is optional"
    );
    let other_id = Headers::from_iter([
        ("x-request-id", "req-8"),
        ("x-request-time", ts.as_str()),
        ("x-request-signature", sig.as_str()),
    ]);
    assert_eq!(
        p.verify(&request(&other_id, body), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    assert!(matches!(
        p.verify(&req, NOW_MS + 300_000 + 1234 + 1),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn missing_signed_header_is_missing_header() {
    let p = legacy(
        json!({"header": "X-Sig", "message": "{header:X-Id}.{body}"}),
        vec![secret("k", "s")],
    );
    let h = Headers::from_iter([("X-Sig", hex_sha256("s", ".{}"))]);
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::MissingHeader("x-id".into()))
    );
}

#[test]
fn garbled_signatures_are_malformed_and_prefix_and_hex_case_do_not_matter() {
    let p = legacy(
        json!({"header": "X-Sig", "prefix": "sha256="}),
        vec![secret("k", "s")],
    );
    let good = hex_sha256("s", "{}");
    for value in [
        good.clone(),
        format!("sha256={good}x"),
        "sha256=".into(),
        "sha2".into(),
        "sha256=é".into(),
        "ésha256=00".into(),
    ] {
        let h = Headers::from_iter([("X-Sig", value.as_str())]);
        let got = p.verify(&request(&h, b"{}"), NOW_MS);
        assert!(
            matches!(got, Err(VerifyError::MalformedSignature(_))),
            "{value}: {got:?}"
        );
    }
    let h = Headers::from_iter([("X-Sig", format!("SHA256={}", good.to_uppercase()))]);
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    let p = legacy(timestamped(), vec![secret("k", "s")]);
    let h = Headers::from_iter([("X-Timestamp", "yesterday"), ("X-Signature", good.as_str())]);
    assert!(matches!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
}

#[test]
fn future_timestamp_is_refused_with_its_own_tolerance() {
    let mut options = timestamped();
    options["future_tolerance_seconds"] = json!(5);
    let p = legacy(options, vec![secret("k", "s")]);
    let h = timestamped_headers("s", NOW_S + 5, "{}");
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    let h = timestamped_headers("s", NOW_S + 6, "{}");
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::TimestampInFuture {
            ahead_s: 6,
            tolerance_s: 5
        })
    );
}

#[test]
fn unlimited_future_tolerance_checks_only_the_past() {
    let mut options = timestamped();
    options["future_tolerance_seconds"] = json!("unlimited");
    let p = legacy(options, vec![secret("k", "s")]);
    let h = timestamped_headers("s", NOW_S + 86_400, "{}");
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    let h = timestamped_headers("s", NOW_S - 301, "{}");
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_err());
}

#[test]
fn md5_is_refused_without_allow_weak_and_verifies_with_it() {
    let err = config_error(json!({"header": "X-Sig", "algorithm": "md5"}));
    assert!(err.contains("allow_weak = true"), "{err}");
    let p = generic(
        json!({"header": "X-Auth-Signature", "algorithm": "md5", "allow_weak": true, "encoding": "base64"}),
        vec![secret("k", "s")],
    );
    let tag = HmacAlgorithm::Md5.compute(b"s", &[b"{}"]).unwrap();
    let h = Headers::from_iter([("X-Auth-Signature", SignatureEncoding::Base64.encode(&tag))]);
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS).unwrap().scheme,
        "hmac_md5"
    );
}

#[test]
fn sign_then_verify_round_trips_for_every_encoding_and_format() {
    let formats = [
        json!({"kind": "plain"}),
        json!({"kind": "kv_list", "item_separator": ";", "timestamp_key": "ts", "signature_key": "h1"}),
        json!({"kind": "versioned_list", "versions": ["v1"]}),
    ];
    for (encoding, algorithm) in [
        ("hex", "sha1"),
        ("base64", "sha256"),
        ("base64url", "sha512"),
    ] {
        for format in &formats {
            let timestamp = if format["kind"] == "kv_list" {
                json!(null)
            } else {
                json!({"header": "X-Ts"})
            };
            let mut options = json!({
                "signature": {"header": "X-Sig"},
                "prefix": "v1=",
                "algorithm": algorithm,
                "encoding": encoding,
                "key_encoding": "base64",
                "timestamp_unit": "milliseconds",
                "format": format,
                "message": "{{v1}}:{header:X-Id}:{timestamp}:{body}",
                "event_id": {"header": "X-Id"},
            });
            if !timestamp.is_null() {
                options["timestamp"] = timestamp;
            }
            let p = generic(options, vec![secret("k", "c2VjcmV0LWtleQ")]);
            let input = SignInput {
                body: b"{\"a\":1}",
                now_ms: NOW_MS,
                delivery_id: "d-9",
            };
            let h = p.sign(&input).unwrap();
            let req = request(&h, input.body);
            assert!(p.verify(&req, NOW_MS).is_ok(), "{encoding} {format}: {h:?}");
            assert_eq!(
                p.extract(&req).unwrap().remove(0).event_id.as_deref(),
                Some("d-9")
            );
        }
    }
}

#[test]
fn sign_writes_rfc3339_timestamps_that_verify() {
    let p = generic(
        json!({
            "signature": {"header": "X-Sig"},
            "timestamp": {"header": "X-Ts"},
            "timestamp_unit": "rfc3339",
            "message": ["timestamp", "body"],
        }),
        vec![secret("k", "s")],
    );
    let h = p
        .sign(&SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        })
        .unwrap();
    assert_eq!(h.get("x-ts"), Some("2026-01-01T00:00:00.000Z"));
    assert!(p.verify(&request(&h, b"{}"), NOW_MS + 1000).is_ok());
    assert!(matches!(
        p.verify(&request(&h, b"{}"), NOW_MS + 301_000),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn sign_refuses_what_only_the_sender_knows_and_body_signatures() {
    let p = generic(
        json!({"header": "X-Sig", "message": "{header:X-Shop}{body}"}),
        vec![secret("k", "s")],
    );
    let input = SignInput {
        body: b"{}",
        now_ms: NOW_MS,
        delivery_id: "d",
    };
    assert!(p.sign(&input).unwrap_err().0.contains("x-shop"));
    let in_body = generic(
        json!({"signature": {"json_pointer": "/sig"}, "message": ["json_field:/data"]}),
        vec![secret("k", "s")],
    );
    assert!(in_body
        .sign(&input)
        .unwrap_err()
        .0
        .contains("body field /sig"));
}

// ---- Signature locations and formats ----

#[test]
fn signature_in_a_query_parameter_verifies() {
    let p = generic(
        json!({"signature": {"query": "sig"}}),
        vec![secret("k", "s")],
    );
    let h = Headers::new();
    let q = query(&[("sig", &hex_sha256("s", "{}"))]);
    let req = InboundRequest {
        method: "POST",
        headers: &h,
        query: &q,
        body: b"{}",
    };
    assert!(p.verify(&req, NOW_MS).is_ok());
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::MissingSignature("query parameter sig".into()))
    );
}

#[test]
fn signature_and_signed_values_in_form_fields_verify() {
    // Mailgun's legacy form posts: top-level timestamp, token, signature.
    let p = generic(
        json!({
            "signature": {"form_field": "signature"},
            "timestamp": {"form_field": "timestamp"},
            "message": ["form_field:timestamp", "form_field:token"],
            "tolerance_seconds": 900,
            "future_tolerance_seconds": 900,
            "event_id": {"form_field": "token"},
        }),
        vec![secret("k", "s")],
    );
    let sig = hex_sha256("s", &format!("{NOW_S}tok-1"));
    let body = format!("timestamp={NOW_S}&token=tok-1&signature={sig}&event=delivered");
    let h = Headers::new();
    let req = request(&h, body.as_bytes());
    assert!(p.verify(&req, NOW_MS).is_ok());
    assert_eq!(
        p.extract(&req).unwrap().remove(0).event_id.as_deref(),
        Some("tok-1")
    );
    let forged = body.replace("tok-1", "tok-2");
    assert_eq!(
        p.verify(&request(&h, forged.as_bytes()), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    assert_eq!(
        p.verify(&request(&h, b"timestamp=1&token=t"), NOW_MS),
        Err(VerifyError::MissingSignature("form field signature".into()))
    );
}

#[test]
fn kv_list_accepts_any_matching_signature_entry_and_reads_its_timestamp() {
    let p = generic(
        json!({
            "signature": {"header": "Stripe-Signature"},
            "format": {"kind": "kv_list", "timestamp_key": "t", "signature_key": "v1"},
            "message": "{timestamp}.{body}",
        }),
        vec![secret("k", "s")],
    );
    let good = hex_sha256("s", &format!("{NOW_S}.{{}}"));
    let wrong = hex_sha256("x", &format!("{NOW_S}.{{}}"));
    let h = Headers::from_iter([(
        "Stripe-Signature",
        format!("t={NOW_S},v1={wrong},v0=zz,v1={good}"),
    )]);
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    let no_t = Headers::from_iter([("Stripe-Signature", format!("v1={good}"))]);
    assert_eq!(
        p.verify(&request(&no_t, b"{}"), NOW_MS),
        Err(VerifyError::MissingHeader("t= in stripe-signature".into()))
    );
    let no_v1 = Headers::from_iter([("Stripe-Signature", format!("t={NOW_S},v0={good}"))]);
    assert!(matches!(
        p.verify(&request(&no_v1, b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
    let two_t = Headers::from_iter([("Stripe-Signature", format!("t={NOW_S},t=1,v1={good}"))]);
    assert!(matches!(
        p.verify(&request(&two_t, b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
}

#[test]
fn versioned_list_skips_unknown_versions() {
    let p = generic(
        json!({
            "signature": {"header": "webhook-signature"},
            "format": {"kind": "versioned_list", "versions": ["v1"]},
            "encoding": "base64",
        }),
        vec![secret("k", "s")],
    );
    let tag = HmacAlgorithm::Sha256.compute(b"s", &[b"{}"]).unwrap();
    let good = SignatureEncoding::Base64.encode(&tag);
    let h = Headers::from_iter([("webhook-signature", format!("v1a,AAAA v2,xyz v1,{good}"))]);
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
    let only_other = Headers::from_iter([("webhook-signature", format!("v1a,{good}"))]);
    assert!(matches!(
        p.verify(&request(&only_other, b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
}

#[test]
fn a_signature_list_longer_than_the_bound_is_refused_even_with_the_right_entry() {
    let p = generic(
        json!({
            "signature": {"header": "Stripe-Signature"},
            "format": {"kind": "kv_list", "timestamp_key": "t", "signature_key": "v1"},
            "message": "{timestamp}.{body}",
        }),
        vec![secret("k", "s")],
    );
    let good = hex_sha256("s", &format!("{NOW_S}.{{}}"));
    let list = |wrong: usize| {
        let mut value = format!("t={NOW_S}");
        for _ in 0..wrong {
            value.push_str(&format!(",v1={}", "00".repeat(32)));
        }
        Headers::from_iter([("Stripe-Signature", format!("{value},v1={good}"))])
    };
    let max = crate::providers::crypto::MAX_SIGNATURE_CANDIDATES;
    assert!(p.verify(&request(&list(max - 1), b"{}"), NOW_MS).is_ok());
    assert!(matches!(
        p.verify(&request(&list(max), b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(why)) if why.contains("more than the")
    ));
}

#[test]
fn an_id_outside_the_signed_message_names_the_event_but_does_not_key_it() {
    let key = "s";
    let signed_header = generic(
        json!({"header": "X-Sig", "message": ["header:X-Id", "literal:.", "body"], "id_header": "X-Id"}),
        vec![secret("k", key)],
    );
    let body_only = generic(
        json!({"header": "X-Sig", "id_header": "X-Id"}),
        vec![secret("k", key)],
    );
    let h = Headers::from_iter([("X-Id", "evt-1")]);
    let got = signed_header
        .extract(&request(&h, b"{}"))
        .unwrap()
        .remove(0);
    assert_eq!(
        (got.event_id.as_deref(), got.unsigned_id),
        (Some("evt-1"), None)
    );
    let got = body_only.extract(&request(&h, b"{}")).unwrap().remove(0);
    assert_eq!(
        (got.event_id, got.unsigned_id.as_deref()),
        (None, Some("evt-1"))
    );
    // A body field is covered by a signature over the body.
    let pointer = generic(
        json!({"header": "X-Sig", "id_pointer": "/id"}),
        vec![secret("k", key)],
    );
    let got = pointer
        .extract(&request(&Headers::new(), br#"{"id":"e9"}"#))
        .unwrap()
        .remove(0);
    assert_eq!(got.event_id.as_deref(), Some("e9"));
}

// ---- Message parts ----

#[test]
fn url_method_path_and_query_parts_come_from_the_configured_url_and_request() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "url": "https://hooks.example.com/in/abc?x=1",
            "message": ["method", "literal: ", "path", "literal:?", "query", "literal:\n", "body"],
        }),
        vec![secret("k", "s")],
    );
    let h = Headers::from_iter([("X-Sig", hex_sha256("s", "POST /in/abc?x=1\n{}"))]);
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
}

#[test]
fn any_configured_url_variant_may_match() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "url": ["https://a.example.com/x", "https://a.example.com:443/x"],
            "message": ["url", "body"],
        }),
        vec![secret("k", "s")],
    );
    for url in ["https://a.example.com/x", "https://a.example.com:443/x"] {
        let h = Headers::from_iter([("X-Sig", hex_sha256("s", &format!("{url}{{}}")))]);
        assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok(), "{url}");
    }
    let h = Headers::from_iter([("X-Sig", hex_sha256("s", "https://b.example.com/x{}"))]);
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
}

#[test]
fn body_digest_parts_sign_the_body_through_its_hash() {
    use sha2::Digest;
    let body = b"{\"a\":1}";
    let digest = hex::encode(sha2::Sha256::digest(body));
    let crc = crate::providers::crypto::crc32(body);
    let p = generic(
        json!({"header": "X-Sig", "message": ["sha256_hex(body)", "literal:|", "crc32_dec(body)"]}),
        vec![secret("k", "s")],
    );
    let h = Headers::from_iter([("X-Sig", hex_sha256("s", &format!("{digest}|{crc}")))]);
    assert!(p.verify(&request(&h, body), NOW_MS).is_ok());
    assert!(p.verify(&request(&h, b"{\"a\":2}"), NOW_MS).is_err());
}

#[test]
fn json_fields_default_to_empty_when_absent() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "message": ["json_field:/a", "json_field:/missing", "json_field:/n"],
            "message_separator": ":",
        }),
        vec![secret("k", "s")],
    );
    let h = Headers::from_iter([("X-Sig", hex_sha256("s", "x::1130"))]);
    assert!(p
        .verify(&request(&h, br#"{"a":"x","n":1130}"#), NOW_MS)
        .is_ok());
}

#[test]
fn sorted_flat_json_values_sign_the_values_in_key_order() {
    // iGaming: base64 HMAC-SHA512 over the values sorted by key, joined with ','.
    let p = generic(
        json!({
            "header": "X-Request-Signature",
            "algorithm": "sha512",
            "encoding": "base64",
            "message": ["sorted_flat_json_values:,"],
        }),
        vec![secret("k", "s")],
    );
    let tag = HmacAlgorithm::Sha512
        .compute(b"s", &[b"10.00,p-1,r-9"])
        .unwrap();
    let h = Headers::from_iter([(
        "X-Request-Signature",
        SignatureEncoding::Base64.encode(&tag),
    )]);
    let body = br#"{"round":"r-9","amount":"10.00","player":"p-1"}"#;
    assert!(p.verify(&request(&h, body), NOW_MS).is_ok());
    assert!(matches!(
        p.verify(&request(&h, br#"{"a":{"b":1}}"#), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
}

#[test]
fn timestamp_from_a_json_pointer_in_milliseconds_is_checked() {
    // Linear: freshness from the signed body field `webhookTimestamp` (ms), ±60 s.
    let p = generic(
        json!({
            "header": "Linear-Signature",
            "timestamp": {"json_pointer": "/webhookTimestamp"},
            "timestamp_unit": "milliseconds",
            "tolerance_seconds": 60,
            "future_tolerance_seconds": 60,
        }),
        vec![secret("k", "s")],
    );
    let body = format!("{{\"webhookTimestamp\":{}}}", NOW_MS - 61_000);
    let h = Headers::from_iter([("Linear-Signature", hex_sha256("s", &body))]);
    assert!(matches!(
        p.verify(&request(&h, body.as_bytes()), NOW_MS),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    assert!(p
        .verify(&request(&h, body.as_bytes()), NOW_MS - 2000)
        .is_ok());
    let h = Headers::from_iter([("Linear-Signature", hex_sha256("s", "{}"))]);
    assert_eq!(
        p.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::MissingHeader(
            "body field /webhookTimestamp".into()
        ))
    );
}

// ---- Other scheme kinds ----

fn token_provider(secrets: Vec<Secret>) -> Generic {
    generic(
        json!({"scheme": "token_equals", "signature": {"header": "X-Gitlab-Token"}}),
        secrets,
    )
}

#[test]
fn token_equals_accepts_the_exact_token_from_any_live_key() {
    let p = token_provider(vec![secret("old", "tok-old"), secret("new", "tok-new")]);
    let h = Headers::from_iter([("X-Gitlab-Token", "tok-new")]);
    let got = p.verify(&request(&h, b"anything"), NOW_MS).unwrap();
    assert_eq!(
        (got.scheme, got.key_id.as_deref()),
        ("token_equals", Some("new"))
    );
}

#[test]
fn token_equals_refuses_wrong_missing_and_expired_tokens() {
    let p = token_provider(vec![
        expiring_secret("old", "tok-old", NOW_MS - 1),
        secret("new", "tok-new"),
    ]);
    for wrong in ["tok-old", "tok-new2", "tok-ne", "TOK-NEW"] {
        let h = Headers::from_iter([("X-Gitlab-Token", wrong)]);
        assert_eq!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 }),
            "{wrong}"
        );
    }
    assert_eq!(
        p.verify(&request(&Headers::new(), b"{}"), NOW_MS),
        Err(VerifyError::MissingSignature("x-gitlab-token".into()))
    );
}

#[test]
fn token_equals_signs_by_sending_the_token() {
    let p = token_provider(vec![secret("k", "tok")]);
    let h = p
        .sign(&SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        })
        .unwrap();
    assert_eq!(h.get("x-gitlab-token"), Some("tok"));
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
}

#[test]
fn token_schemes_refuse_options_that_would_pretend_to_sign() {
    for (options, expected) in [
        (
            json!({"scheme": "token_equals", "header": "X-T", "message": "{body}"}),
            "message does not apply",
        ),
        (
            json!({"scheme": "token_equals", "header": "X-T", "timestamp_header": "X-Ts"}),
            "signs nothing",
        ),
        (
            json!({"scheme": "token_equals", "header": "X-T", "encoding": "hex"}),
            "encoding does not apply",
        ),
        (
            json!({"scheme": "basic_auth", "format": {"kind": "versioned_list", "versions": ["v1"]}}),
            "format does not apply",
        ),
        (
            json!({"scheme": "token_equals", "header": "X-T", "key_encoding": "hex"}),
            "key_encoding does not apply",
        ),
        (json!({"scheme": "token_equals"}), "signature is required"),
    ] {
        let err = config_error(options.clone());
        assert!(err.contains(expected), "{options}: {err}");
    }
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

#[test]
fn basic_auth_accepts_the_configured_user_and_password() {
    let p = generic(
        json!({"scheme": "basic_auth"}),
        vec![secret("old", "hook:old"), secret("new", "hook:pass")],
    );
    let h = Headers::from_iter([("Authorization", basic("hook:pass"))]);
    let got = p.verify(&request(&h, b"{}"), NOW_MS).unwrap();
    assert_eq!(
        (got.scheme, got.key_id.as_deref()),
        ("basic_auth", Some("new"))
    );
    let lower = Headers::from_iter([(
        "authorization",
        basic("hook:pass").replace("Basic", "basic"),
    )]);
    assert!(p.verify(&request(&lower, b"{}"), NOW_MS).is_ok());
}

#[test]
fn basic_auth_refuses_wrong_password_other_schemes_and_garbled_credentials() {
    let p = generic(
        json!({"scheme": "basic_auth"}),
        vec![secret("k", "hook:pass")],
    );
    let wrong = Headers::from_iter([("Authorization", basic("hook:pas"))]);
    assert_eq!(
        p.verify(&request(&wrong, b"{}"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    for value in ["Bearer aG9vazpwYXNz", "Basic !!!", "Basic"] {
        let h = Headers::from_iter([("Authorization", value)]);
        assert!(
            matches!(
                p.verify(&request(&h, b"{}"), NOW_MS),
                Err(VerifyError::MalformedSignature(_))
            ),
            "{value}"
        );
    }
    assert_eq!(
        p.verify(&request(&Headers::new(), b"{}"), NOW_MS),
        Err(VerifyError::MissingSignature("authorization".into()))
    );
}

#[test]
fn basic_auth_secret_must_be_user_colon_password_and_is_not_echoed() {
    let err = Generic::from_config(
        &json!({"scheme": "basic_auth"}),
        vec![secret("pm", "hunter2")],
    )
    .unwrap_err()
    .0;
    assert!(err.contains("\"pm\" is not user:pass"), "{err}");
    assert!(!err.contains("hunter2"));
}

#[test]
fn basic_auth_sign_round_trips() {
    let p = generic(
        json!({"scheme": "basic_auth"}),
        vec![secret("k", "hook:pass")],
    );
    let h = p
        .sign(&SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        })
        .unwrap();
    assert_eq!(h.get("authorization"), Some(basic("hook:pass").as_str()));
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
}

fn ed25519_signer(seed: u8) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    (key, public)
}

fn ed25519_provider(secrets: Vec<Secret>) -> Generic {
    generic(
        json!({
            "scheme": "ed25519",
            "signature": {"header": "X-Signature-Ed25519"},
            "timestamp": {"header": "X-Signature-Timestamp"},
            "message": ["timestamp", "body"],
        }),
        secrets,
    )
}

fn ed25519_headers(key: &ed25519_dalek::SigningKey, ts: i64, body: &[u8]) -> Headers {
    use ed25519_dalek::Signer;
    let mut msg = ts.to_string().into_bytes();
    msg.extend_from_slice(body);
    Headers::from_iter([
        ("X-Signature-Timestamp", ts.to_string()),
        (
            "X-Signature-Ed25519",
            hex::encode(key.sign(&msg).to_bytes()),
        ),
    ])
}

#[test]
fn ed25519_signatures_verify_with_the_matching_public_key() {
    let (old, old_pub) = ed25519_signer(1);
    let (new, new_pub) = ed25519_signer(2);
    let p = ed25519_provider(vec![secret("old", &old_pub), secret("new", &new_pub)]);
    let h = ed25519_headers(&new, NOW_S, b"{}");
    let got = p.verify(&request(&h, b"{}"), NOW_MS).unwrap();
    assert_eq!(
        (got.scheme, got.key_id.as_deref()),
        ("ed25519", Some("new"))
    );
    let h = ed25519_headers(&old, NOW_S, b"{}");
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
}

#[test]
fn ed25519_refuses_tampering_wrong_keys_stale_timestamps_and_garbage() {
    let (key, public) = ed25519_signer(1);
    let (_, other_pub) = ed25519_signer(3);
    let p = ed25519_provider(vec![secret("k", &public)]);
    let h = ed25519_headers(&key, NOW_S, b"{}");
    assert_eq!(
        p.verify(&request(&h, b"{ }"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    let other = ed25519_provider(vec![secret("o", &other_pub)]);
    assert_eq!(
        other.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    let stale = ed25519_headers(&key, NOW_S - 301, b"{}");
    assert!(matches!(
        p.verify(&request(&stale, b"{}"), NOW_MS),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    let garbled = Headers::from_iter([
        ("X-Signature-Timestamp", NOW_S.to_string()),
        ("X-Signature-Ed25519", "not-hex".to_string()),
    ]);
    assert!(matches!(
        p.verify(&request(&garbled, b"{}"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
    let expired = ed25519_provider(vec![expiring_secret("k", &public, NOW_MS - 1)]);
    assert_eq!(
        expired.verify(&request(&h, b"{}"), NOW_MS),
        Err(VerifyError::NoLiveKey)
    );
}

#[test]
fn ed25519_keys_are_checked_at_config_and_sign_is_refused() {
    let err = Generic::from_config(
        &json!({"scheme": "ed25519", "header": "X-Sig"}),
        vec![secret("pk", "abcd")],
    )
    .unwrap_err()
    .0;
    assert!(err.contains("\"pk\" is 2 bytes"), "{err}");
    let err = config_error(json!({"scheme": "ed25519", "header": "X-Sig", "key_encoding": "utf8"}));
    assert!(err.contains("needs key_encoding hex"), "{err}");
    let (_, public) = ed25519_signer(1);
    let p = ed25519_provider(vec![secret("k", &public)]);
    let err = p
        .sign(&SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        })
        .unwrap_err();
    assert!(
        err.0.contains("private key the receiver does not hold"),
        "{err}"
    );
}

fn p256_signer(seed: u8) -> (p256::ecdsa::SigningKey, String) {
    use p256::pkcs8::EncodePublicKey;
    let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let der = key.verifying_key().to_public_key_der().unwrap();
    (key, SignatureEncoding::Base64.encode(der.as_bytes()))
}

fn p256_provider(secrets: Vec<Secret>) -> Generic {
    generic(
        json!({
            "scheme": "ecdsa_p256",
            "signature": {"header": "X-Twilio-Email-Event-Webhook-Signature"},
            "timestamp": {"header": "X-Twilio-Email-Event-Webhook-Timestamp"},
            "message": ["timestamp", "body"],
            "tolerance_seconds": 600,
        }),
        secrets,
    )
}

fn p256_headers(key: &p256::ecdsa::SigningKey, ts: i64, body: &[u8], der: bool) -> Headers {
    use p256::ecdsa::signature::Signer;
    let mut msg = ts.to_string().into_bytes();
    msg.extend_from_slice(body);
    let sig: p256::ecdsa::Signature = key.sign(&msg);
    let bytes = if der {
        sig.to_der().as_bytes().to_vec()
    } else {
        sig.to_bytes().to_vec()
    };
    Headers::from_iter([
        ("X-Twilio-Email-Event-Webhook-Timestamp", ts.to_string()),
        (
            "X-Twilio-Email-Event-Webhook-Signature",
            SignatureEncoding::Base64.encode(&bytes),
        ),
    ])
}

#[test]
fn ecdsa_p256_accepts_der_and_raw_signatures_from_the_matching_key() {
    let (old, old_pub) = p256_signer(1);
    let (new, new_pub) = p256_signer(2);
    let p = p256_provider(vec![secret("old", &old_pub), secret("new", &new_pub)]);
    for der in [true, false] {
        let h = p256_headers(&new, NOW_S, b"[]\r\n", der);
        let got = p.verify(&request(&h, b"[]\r\n"), NOW_MS).unwrap();
        assert_eq!(
            (got.scheme, got.key_id.as_deref()),
            ("ecdsa_p256_sha256", Some("new")),
            "der={der}"
        );
    }
    let h = p256_headers(&old, NOW_S, b"[]\r\n", true);
    assert!(p.verify(&request(&h, b"[]\r\n"), NOW_MS).is_ok());
}

#[test]
fn ecdsa_p256_refuses_tampering_wrong_keys_stale_timestamps_and_garbage() {
    let (key, public) = p256_signer(1);
    let (_, other_pub) = p256_signer(3);
    let p = p256_provider(vec![secret("k", &public)]);
    let h = p256_headers(&key, NOW_S, b"[]\r\n", true);
    assert_eq!(
        p.verify(&request(&h, b"[]"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    let other = p256_provider(vec![secret("o", &other_pub)]);
    assert_eq!(
        other.verify(&request(&h, b"[]\r\n"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    let stale = p256_headers(&key, NOW_S - 601, b"[]\r\n", true);
    assert!(matches!(
        p.verify(&request(&stale, b"[]\r\n"), NOW_MS),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    let garbled = Headers::from_iter([
        ("X-Twilio-Email-Event-Webhook-Timestamp", NOW_S.to_string()),
        ("X-Twilio-Email-Event-Webhook-Signature", "%%%".to_string()),
    ]);
    assert!(matches!(
        p.verify(&request(&garbled, b"[]\r\n"), NOW_MS),
        Err(VerifyError::MalformedSignature(_))
    ));
    let err = Generic::from_config(
        &json!({"scheme": "ecdsa_p256", "header": "X-Sig"}),
        vec![secret("sg", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")],
    )
    .unwrap_err()
    .0;
    assert!(err.contains("\"sg\" is not a P-256 public key"), "{err}");
}

// ---- Extraction and batches ----

#[test]
fn extract_reads_ids_and_types_from_headers_and_pointers() {
    let v = testkit::vector("shopify-valid");
    let p = legacy(
        json!({
            "header": "X-Shopify-Hmac-Sha256",
            "encoding": "base64",
            "id_header": "X-Shopify-Webhook-Id",
            "type_header": "X-Shopify-Topic",
        }),
        vec![v.secret()],
    );
    let h = v.headers();
    let got = p
        .extract(&request(&h, v.body.as_bytes()))
        .unwrap()
        .remove(0);
    // The header is outside the signed message: it names the event, the body digest keys it.
    assert_eq!(
        (got.event_id.as_deref(), got.unsigned_id.as_deref()),
        (None, Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"))
    );
    assert_eq!(got.event_type.as_deref(), Some("orders/create"));

    let p = legacy(
        json!({
            "header": "X-Sig",
            "id_pointer": "/data/id",
            "type_pointer": "/kind",
            "occurred_at_pointer": "/at",
        }),
        vec![secret("k", "s")],
    );
    let none = Headers::new();
    let got = p
        .extract(&request(
            &none,
            br#"{"data":{"id":820982911946154508},"kind":"order","at":1767225600}"#,
        ))
        .unwrap()
        .remove(0);
    assert_eq!(
        got,
        Extracted {
            event_id: Some("820982911946154508".into()),
            event_type: Some("order".into()),
            occurred_at_ms: Some(1_767_225_600_000),
            ..Default::default()
        }
    );
    let got = p
        .extract(&request(&none, br#"{"data":{"id":"a"},"at":1767225600.5}"#))
        .unwrap()
        .remove(0);
    assert_eq!(got.occurred_at_ms, Some(1_767_225_600_500));
    assert_eq!(got.event_type, None);
}

#[test]
fn configured_id_that_is_absent_or_not_an_id_is_an_extract_error() {
    let p = legacy(
        json!({"header": "X-Sig", "id_pointer": "/id"}),
        vec![secret("k", "s")],
    );
    let none = Headers::new();
    for body in [
        &b"not json"[..],
        br#"{"other":1}"#,
        br#"{"id":1.5}"#,
        br#"{"id":""}"#,
        br#"{"id":null}"#,
    ] {
        assert!(p.extract(&request(&none, body)).is_err(), "{body:?}");
    }
    let p = legacy(
        json!({"header": "X-Sig", "id_header": "X-Id"}),
        vec![secret("k", "s")],
    );
    assert!(p.extract(&request(&none, b"{}")).is_err());
}

#[test]
fn without_an_id_source_dedupe_falls_back_to_the_body_hash() {
    let p = legacy(json!({"header": "X-Sig"}), vec![secret("k", "s")]);
    let got = p
        .extract(&request(&Headers::new(), b"anything"))
        .unwrap()
        .remove(0);
    assert_eq!(got, Extracted::default());
}

#[test]
fn extract_maps_money_entity_object_time_and_canonical_types() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "event_id": [{"json_pointer": "/psp"}, {"json_pointer": "/code"}],
            "event_type": {"json_pointer": "/code"},
            "canonical": {"AUTHORISATION": "payment.succeeded"},
            "occurred_at": {"json_pointer": "/at"},
            "occurred_at_unit": "rfc3339",
            "entity": {"json_pointer": "/player"},
            "object_id": {"json_pointer": "/psp"},
            "amount": {"json_pointer": "/amount"},
            "amount_unit": "major",
            "currency": {"json_pointer": "/ccy"},
        }),
        vec![secret("k", "s")],
    );
    let body = br#"{"psp":"7914","code":"AUTHORISATION","at":"2026-01-01T00:00:00Z","player":"p-1","amount":"11.30","ccy":"eur"}"#;
    let got = p
        .extract(&request(&Headers::new(), body))
        .unwrap()
        .remove(0);
    assert_eq!(
        got,
        Extracted {
            event_id: Some("7914#AUTHORISATION".into()),
            unsigned_id: None,
            event_type: Some("AUTHORISATION".into()),
            canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
            occurred_at_ms: Some(NOW_MS),
            entity: Some("p-1".into()),
            object_id: Some("7914".into()),
            amount: Some(1130),
            currency: Some("EUR".into()),
            part: None,
        }
    );
    let unmapped = br#"{"psp":"1","code":"REFUND","amount":"1.5","ccy":"JPY"}"#;
    let got = p
        .extract(&request(&Headers::new(), unmapped))
        .unwrap()
        .remove(0);
    assert_eq!(got.canonical_type, None);
    assert_eq!(got.amount, None, "1.5 JPY has more decimals than yen allow");
}

#[test]
fn minor_amounts_are_integers() {
    let p = generic(
        json!({"header": "X-Sig", "amount": {"json_pointer": "/a"}, "currency": {"json_pointer": "/c"}}),
        vec![secret("k", "s")],
    );
    let got = p
        .extract(&request(&Headers::new(), br#"{"a":10000,"c":"GBP"}"#))
        .unwrap()
        .remove(0);
    assert_eq!(
        (got.amount, got.currency.as_deref()),
        (Some(10000), Some("GBP"))
    );
    let got = p
        .extract(&request(&Headers::new(), br#"{"a":"12.5","c":"GBP"}"#))
        .unwrap()
        .remove(0);
    assert_eq!(got.amount, None);
}

#[test]
fn items_pointer_splits_a_batch_into_byte_exact_parts() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "items_pointer": "/events",
            "event_id": {"json_pointer": "/id"},
            "event_type": {"json_pointer": "/t"},
        }),
        vec![secret("k", "s")],
    );
    let body =
        b"{\"events\": [ {\"id\":\"a\", \"t\":\"x\"},\n {\"id\":2,\"t\":\"\\u00e9\"} ], \"n\":2}";
    let got = p.extract(&request(&Headers::new(), body)).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event_id.as_deref(), Some("a"));
    assert_eq!(
        got[0].part.as_deref(),
        Some(&b"{\"id\":\"a\", \"t\":\"x\"}"[..])
    );
    assert_eq!(got[1].event_id.as_deref(), Some("2"));
    assert_eq!(got[1].event_type.as_deref(), Some("é"));
    assert_eq!(
        got[1].part.as_deref(),
        Some(&b"{\"id\":2,\"t\":\"\\u00e9\"}"[..])
    );
    let top = generic(
        json!({"header": "X-Sig", "items_pointer": ""}),
        vec![secret("k", "s")],
    );
    assert_eq!(
        top.extract(&request(&Headers::new(), b"[]")).unwrap(),
        vec![]
    );
    assert_eq!(
        top.extract(&request(&Headers::new(), b"[1, {}]")).unwrap()[0]
            .part
            .as_deref(),
        Some(&b"1"[..])
    );
    for bad in [&b"{}"[..], b"not json", b"{\"events\":{}}"] {
        assert!(p.extract(&request(&Headers::new(), bad)).is_err());
    }
}

#[test]
fn items_are_counted_before_any_is_extracted() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "items_pointer": "/events",
            "event_id": {"json_pointer": "/id"},
        }),
        vec![secret("k", "s")],
    );
    let h = Headers::new();
    let body = br#"{"events":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#;
    assert_eq!(p.extract_at_most(&request(&h, body), 3).unwrap().len(), 3);
    assert_eq!(
        p.extract_at_most(&request(&h, body), 2),
        Err(ExtractFailure::TooManyEvents { count: 3, limit: 2 })
    );
    // The items without an id would be extract errors: the count comes first.
    let worse = br#"{"events":[{"id":"a"},{},{}]}"#;
    assert_eq!(
        p.extract_at_most(&request(&h, worse), 2),
        Err(ExtractFailure::TooManyEvents { count: 3, limit: 2 })
    );
    assert!(matches!(
        p.extract_at_most(&request(&h, worse), 3),
        Err(ExtractFailure::Malformed(_))
    ));
}

#[test]
fn a_signature_inside_each_item_verifies_every_item() {
    let item = |psp: &str, value: i64, key: &str| {
        let sig = SignatureEncoding::Base64.encode(
            &HmacAlgorithm::Sha256
                .compute(key.as_bytes(), &[format!("{psp}:{value}").as_bytes()])
                .unwrap(),
        );
        format!(r#"{{"psp":"{psp}","value":{value},"sig":"{sig}"}}"#)
    };
    let p = generic(
        json!({
            "signature": {"json_pointer": "/sig"},
            "encoding": "base64",
            "items_pointer": "/items",
            "message": ["json_field:/psp", "json_field:/value"],
            "message_separator": ":",
            "event_id": {"json_pointer": "/psp"},
        }),
        vec![secret("k", "s")],
    );
    let h = Headers::new();
    let good = format!(
        "{{\"items\":[{},{}]}}",
        item("a", 1, "s"),
        item("b", 2, "s")
    );
    assert!(p.verify(&request(&h, good.as_bytes()), NOW_MS).is_ok());
    let got = p.extract(&request(&h, good.as_bytes())).unwrap();
    assert_eq!(got.len(), 2);
    let one_forged = format!(
        "{{\"items\":[{},{}]}}",
        item("a", 1, "s"),
        item("b", 2, "x")
    );
    assert_eq!(
        p.verify(&request(&h, one_forged.as_bytes()), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
    assert!(matches!(
        p.verify(&request(&h, br#"{"items":[]}"#), NOW_MS),
        Err(VerifyError::MissingSignature(_))
    ));
    assert!(matches!(
        p.verify(&request(&h, b"nope"), NOW_MS),
        Err(VerifyError::MissingSignature(_))
    ));
}

#[test]
fn sample_body_fills_the_configured_pointers_and_batch() {
    let p = generic(
        json!({
            "header": "X-Sig",
            "items_pointer": "/events",
            "event_id": {"json_pointer": "/meta/id"},
            "event_type": {"json_pointer": "/kind"},
        }),
        vec![secret("k", "s")],
    );
    let body = p.sample_body("evt-9", NOW_MS);
    let got = p.extract(&request(&Headers::new(), &body)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_id.as_deref(), Some("evt-9"));
    assert_eq!(got[0].event_type.as_deref(), Some("test.event"));
}

// ---- Handshakes ----

fn meta_provider() -> Generic {
    generic(
        json!({
            "signature": {"header": "X-Hub-Signature-256"},
            "prefix": "sha256=",
            "handshake": {"kind": "echo_query_param"},
        }),
        vec![
            secret("app", "app-secret"),
            secret("verify_token", "vt-123"),
        ],
    )
}

fn get<'a>(h: &'a Headers, q: &'a [(String, String)]) -> InboundRequest<'a> {
    InboundRequest {
        method: "GET",
        headers: h,
        query: q,
        body: b"",
    }
}

#[test]
fn echo_query_param_answers_meta_subscription_with_the_challenge() {
    let p = meta_provider();
    let h = Headers::new();
    let q = query(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", "vt-123"),
        ("hub.challenge", "1158201444"),
    ]);
    assert_eq!(
        p.handshake(&get(&h, &q), NOW_MS),
        Some(Ok(HandshakeReply::text("1158201444")))
    );
}

#[test]
fn echo_query_param_refuses_a_wrong_token_or_mode_and_ignores_other_requests() {
    let p = meta_provider();
    let h = Headers::new();
    for (mode, token) in [
        ("subscribe", "vt-124"),
        ("unsubscribe", "vt-123"),
        ("subscribe", "app-secret"),
    ] {
        let q = query(&[
            ("hub.mode", mode),
            ("hub.verify_token", token),
            ("hub.challenge", "1"),
        ]);
        assert_eq!(
            p.handshake(&get(&h, &q), NOW_MS),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 })),
            "{mode} {token}"
        );
    }
    assert_eq!(p.handshake(&get(&h, &[]), NOW_MS), None);
    assert_eq!(p.handshake(&request(&h, b"{}"), NOW_MS), None);
    // The verify token is not a signing key.
    let forged = Headers::from_iter([(
        "X-Hub-Signature-256",
        format!("sha256={}", hex_sha256("vt-123", "{}")),
    )]);
    assert_eq!(
        p.verify(&request(&forged, b"{}"), NOW_MS),
        Err(VerifyError::SignatureMismatch { keys_tried: 1 })
    );
}

#[test]
fn echo_query_param_needs_its_verify_token_secret() {
    let err = config_error(json!({"header": "X-Sig", "handshake": {"kind": "echo_query_param"}}));
    assert!(
        err.contains("needs a secret with id \"verify_token\""),
        "{err}"
    );
}

fn slack_provider() -> Generic {
    generic(
        json!({
            "signature": {"header": "X-Slack-Signature"},
            "prefix": "v0=",
            "timestamp": {"header": "X-Slack-Request-Timestamp"},
            "message": "v0:{timestamp}:{body}",
            "handshake": {
                "kind": "echo_json_field",
                "when": {"json_pointer": "/type", "equals": "url_verification"},
                "field": "/challenge",
            },
        }),
        vec![secret("k", "s")],
    )
}

fn slack_headers(key: &str, body: &str) -> Headers {
    Headers::from_iter([
        ("X-Slack-Request-Timestamp", NOW_S.to_string()),
        (
            "X-Slack-Signature",
            format!("v0={}", hex_sha256(key, &format!("v0:{NOW_S}:{body}"))),
        ),
    ])
}

#[test]
fn echo_json_field_answers_a_signed_slack_url_verification() {
    let body = r#"{"token":"t","challenge":"3eZbrw1aB","type":"url_verification"}"#;
    let h = slack_headers("s", body);
    assert_eq!(
        slack_provider().handshake(&request(&h, body.as_bytes()), NOW_MS),
        Some(Ok(HandshakeReply::json(json!({"challenge": "3eZbrw1aB"}))))
    );
    let event = r#"{"type":"event_callback"}"#;
    let h = slack_headers("s", event);
    assert_eq!(
        slack_provider().handshake(&request(&h, event.as_bytes()), NOW_MS),
        None
    );
}

#[test]
fn forged_slack_url_verification_is_refused() {
    let body = r#"{"challenge":"x","type":"url_verification"}"#;
    let h = slack_headers("wrong", body);
    assert_eq!(
        slack_provider().handshake(&request(&h, body.as_bytes()), NOW_MS),
        Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
    );
}

#[test]
fn echo_text_answers_a_signed_twitch_callback_verification() {
    let p = generic(
        json!({
            "signature": {"header": "Twitch-Eventsub-Message-Signature"},
            "prefix": "sha256=",
            "timestamp": {"header": "Twitch-Eventsub-Message-Timestamp"},
            "timestamp_unit": "rfc3339",
            "message": ["header:Twitch-Eventsub-Message-Id", "timestamp", "body"],
            "handshake": {
                "kind": "echo_text",
                "when": {"header": "Twitch-Eventsub-Message-Type", "equals": "webhook_callback_verification"},
                "field": "/challenge",
            },
        }),
        vec![secret("k", "s")],
    );
    let body = r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo"}"#;
    let ts = "2026-01-01T00:00:00.5Z";
    let headers = |key: &str| {
        Headers::from_iter([
            ("Twitch-Eventsub-Message-Id", "m-1".to_string()),
            ("Twitch-Eventsub-Message-Timestamp", ts.to_string()),
            (
                "Twitch-Eventsub-Message-Type",
                "webhook_callback_verification".to_string(),
            ),
            (
                "Twitch-Eventsub-Message-Signature",
                format!("sha256={}", hex_sha256(key, &format!("m-1{ts}{body}"))),
            ),
        ])
    };
    let h = headers("s");
    assert_eq!(
        p.handshake(&request(&h, body.as_bytes()), NOW_MS),
        Some(Ok(HandshakeReply::text("pogchamp-kappa-360noscope-vohiyo")))
    );
    let forged = headers("x");
    assert!(matches!(
        p.handshake(&request(&forged, body.as_bytes()), NOW_MS),
        Some(Err(VerifyError::SignatureMismatch { .. }))
    ));
}

#[test]
fn hmac_json_response_answers_zoom_url_validation_with_the_matching_key() {
    let p = generic(
        json!({
            "signature": {"header": "x-zm-signature"},
            "prefix": "v0=",
            "timestamp": {"header": "x-zm-request-timestamp"},
            "message": "v0:{timestamp}:{body}",
            "handshake": {
                "kind": "hmac_json_response",
                "when": {"json_pointer": "/event", "equals": "endpoint.url_validation"},
                "field": "/payload/plainToken",
            },
        }),
        vec![secret("old", "zoom-old"), secret("new", "zoom-new")],
    );
    let body = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1,"event":"endpoint.url_validation"}"#;
    let headers = |key: &str| {
        Headers::from_iter([
            ("x-zm-request-timestamp", NOW_S.to_string()),
            (
                "x-zm-signature",
                format!("v0={}", hex_sha256(key, &format!("v0:{NOW_S}:{body}"))),
            ),
        ])
    };
    let h = headers("zoom-new");
    assert_eq!(
        p.handshake(&request(&h, body.as_bytes()), NOW_MS),
        Some(Ok(HandshakeReply::json(json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": hex_sha256("zoom-new", "qgg8vlvZRS6UYooatFL8Aw"),
        }))))
    );
    let forged = headers("zoom-x");
    assert!(matches!(
        p.handshake(&request(&forged, body.as_bytes()), NOW_MS),
        Some(Err(VerifyError::SignatureMismatch { .. }))
    ));
}

#[test]
fn static_json_answers_a_verified_discord_ping_and_refuses_a_forged_one() {
    let (key, public) = ed25519_signer(7);
    let p = generic(
        json!({
            "scheme": "ed25519",
            "signature": {"header": "X-Signature-Ed25519"},
            "timestamp": {"header": "X-Signature-Timestamp"},
            "message": ["timestamp", "body"],
            "handshake": {"kind": "static_json", "when": {"json_pointer": "/type", "equals": 1}, "body": {"type": 1}},
        }),
        vec![secret("k", &public)],
    );
    let body = br#"{"type":1,"id":"1"}"#;
    let h = ed25519_headers(&key, NOW_S, body);
    assert_eq!(
        p.handshake(&request(&h, body), NOW_MS),
        Some(Ok(HandshakeReply::json(json!({"type": 1}))))
    );
    let (other, _) = ed25519_signer(8);
    let forged = ed25519_headers(&other, NOW_S, body);
    assert_eq!(
        p.handshake(&request(&forged, body), NOW_MS),
        Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
    );
    let command = br#"{"type":2}"#;
    let h = ed25519_headers(&key, NOW_S, command);
    assert_eq!(p.handshake(&request(&h, command), NOW_MS), None);
}

// ---- Config errors ----

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (
            json!({"header": "X-Sig", "tolerance": 5}),
            "unknown field `tolerance`",
        ),
        (
            json!({"header": "X-Sig", "message": "{payload}"}),
            "unknown placeholder {payload}",
        ),
        (
            json!({"header": "X-Sig", "message": ["payload"]}),
            "unknown message part \"payload\"",
        ),
        (
            json!({"header": "X-Sig", "message": "{header:}{body}"}),
            "unknown placeholder {header:}",
        ),
        (
            json!({"header": "X-Sig", "message": "{timestamp}.{body}"}),
            "message part timestamp needs a timestamp source",
        ),
        (
            json!({"header": "X-Sig", "message": "{body"}),
            "unclosed '{'",
        ),
        (
            json!({"header": "X-Sig", "message": "}{body}"}),
            "unmatched '}'",
        ),
        (
            json!({"header": "X-Sig", "message": "v0:static"}),
            "message signs no request content",
        ),
        (
            json!({"header": "X-Sig", "message": ["header:X-Id", "timestamp"], "timestamp_header": "X-Ts"}),
            "message signs no request content",
        ),
        (
            json!({"header": "X-Sig", "encoding": "base32"}),
            "unknown variant `base32`",
        ),
        (
            json!({"header": "X-Sig", "id_pointer": "id"}),
            "id_pointer must be a JSON pointer",
        ),
        (json!({"header": " "}), "header must not be empty"),
        (json!({"prefix": "sha256="}), "signature is required"),
        (serde_json::Value::Null, "signature is required"),
        (
            json!({"header": "X-Sig", "signature": {"header": "X-Sig"}}),
            "give signature or its shorthand header, not both",
        ),
        (
            json!({"signature": {"headr": "X-Sig"}}),
            "unknown variant `headr`",
        ),
        (
            json!({"signature": {"json_pointer": "sig"}}),
            "signature json_pointer must start with '/'",
        ),
        (
            json!({"header": "X-Sig", "message": ["url", "body"]}),
            "need url =",
        ),
        (
            json!({"header": "X-Sig", "url": "https://a/b"}),
            "url is set but the message has no url",
        ),
        (
            json!({"header": "X-Sig", "url": "ftp://a/b", "message": "{url}{body}"}),
            "must start with https://",
        ),
        (
            json!({"header": "X-Sig", "tolerance_seconds": 5}),
            "need a timestamp",
        ),
        (
            json!({"header": "X-Sig", "timestamp_header": "X-Ts", "tolerance_seconds": -5}),
            "cannot be negative",
        ),
        (
            json!({"header": "X-Sig", "format": {"kind": "kv_list", "timestamp_key": "t", "signature_key": "v1"}, "timestamp_header": "X-Ts"}),
            "remove timestamp",
        ),
        (
            json!({"header": "X-Sig", "format": {"kind": "kv_list"}}),
            "missing field `signature_key`",
        ),
        (
            json!({"header": "X-Sig", "format": {"kind": "versioned_list", "versions": []}}),
            "format.versions",
        ),
        (
            json!({"header": "X-Sig", "event_type": {"json_pointer": "/t"}, "canonical": {"paid": "payment.succeded"}}),
            "canonical[\"paid\"] = \"payment.succeded\" is not a canonical type",
        ),
        (
            json!({"header": "X-Sig", "canonical": {"paid": "payment.succeeded"}}),
            "configure event_type too",
        ),
        (
            json!({"header": "X-Sig", "amount": {"json_pointer": "/a"}, "amount_unit": "major"}),
            "needs currency",
        ),
        (
            json!({"header": "X-Sig", "items_pointer": "events"}),
            "items_pointer must be a JSON pointer",
        ),
        (
            json!({"header": "X-Sig", "event_id": {"header": "X-Id"}, "id_pointer": "/id"}),
            "not both",
        ),
        (
            json!({"scheme": "ed25519", "header": "X-Sig", "handshake": {"kind": "hmac_json_response", "when": {"json_pointer": "/e", "equals": "v"}, "field": "/p"}}),
            "needs scheme hmac",
        ),
        (
            json!({"header": "X-Sig", "handshake": {"kind": "echo_text", "when": {"equals": "v"}, "field": "/c"}}),
            "exactly one of json_pointer or header",
        ),
        (
            json!({"header": "X-Sig", "handshake": {"kind": "echo_text", "when": {"header": "X", "equals": "v"}, "field": "c"}}),
            "handshake.field must be a JSON pointer",
        ),
        (
            json!({"scheme": "rsa", "header": "X-Sig"}),
            "unknown variant `rsa`",
        ),
    ];
    for (options, expected) in cases {
        let err = config_error(options.clone());
        assert!(err.starts_with("generic options: "), "{options}: {err}");
        assert!(err.contains(expected), "{options}: {err}");
    }
    let err = Generic::from_config_as(
        "hmac",
        &json!({"header": "X-Sig", "tolerance": 5}),
        vec![secret("k", "s")],
    )
    .unwrap_err()
    .0;
    assert!(err.starts_with("hmac options: "), "{err}");
}

#[test]
fn config_refuses_no_secrets_and_undecodable_keys_without_echoing_them() {
    assert!(Generic::from_config(&json!({"header": "X-Sig"}), vec![]).is_err());
    for (encoding, expected) in [
        ("hex", "\"adyen\" is not hex"),
        ("base64", "\"adyen\" is not base64"),
        ("whsec", "\"adyen\" is not whsec_<base64>"),
    ] {
        let err = Generic::from_config(
            &json!({"header": "X-Sig", "key_encoding": encoding}),
            vec![secret("adyen", "zz-not-hex!")],
        )
        .unwrap_err();
        assert!(err.0.contains(expected), "{err}");
        assert!(!err.0.contains("zz-not-hex"));
    }
}

#[test]
fn whsec_keys_are_base64_decoded_after_the_prefix() {
    let p = generic(
        json!({"header": "X-Sig", "key_encoding": "whsec"}),
        vec![secret("k", "whsec_c2VjcmV0")],
    );
    let h = Headers::from_iter([("X-Sig", hex_sha256("secret", "{}"))]);
    assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
}

#[test]
fn unknown_provider_name_is_refused() {
    assert!(
        Generic::from_config_as("hmac2", &json!({"header": "X"}), vec![secret("k", "s")]).is_err()
    );
}
