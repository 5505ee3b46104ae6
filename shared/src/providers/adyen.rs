//! Adyen. Standard notifications carry the signature **inside the body**: each
//! `notificationItems[i].NotificationRequestItem.additionalData.hmacSignature` is base64
//! HMAC-SHA256 over `pspReference:originalReference:merchantAccountCode:merchantReference:
//! amount.value:amount.currency:eventCode:success` (missing fields are empty, no escaping),
//! keyed with the **hex-decoded** HMAC key. Platform, Management and Banking webhooks sign the
//! raw body instead, in the `HmacSignature` header (same key form). Basic auth may be added on
//! top. Sources: `Adyen/adyen-python-api-library` `Adyen/util.py` (`generate_notification_sig`,
//! `is_valid_hmac_payload`), `@adyen/api-library` `HmacValidator`; docs.adyen.com "Verify HMAC
//! signatures".
//!
//! Adyen's older integrations expect the response body `[accepted]`, and any 2xx satisfies the
//! current ones, so the acknowledgement is `[accepted]` (the requirement is *unverified here*:
//! no Adyen document we could check states it).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::crypto::{
    self, split_named_secrets, HmacAlgorithm, KeyError, Keyring, SecretIds, SignatureEncoding,
};
use super::fields;
use super::{
    canonical, money, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time::rfc3339_ms;

const HEADER: &str = "hmacsignature";
const AUTHORIZATION: &str = "authorization";
const ITEM_SIGNATURE: &str =
    "notificationItems[].NotificationRequestItem.additionalData.hmacSignature";

/// Which Adyen event code means "the customer paid" (`payment.succeeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PaidSignal {
    /// `AUTHORISATION` success=true (automatic capture, the common card set-up: Adyen sends a
    /// `CAPTURE` later only for delayed/manual capture, and mapping both would emit two
    /// `payment.succeeded` for one payment). `CAPTURE` keeps its own type, no canonical one.
    #[default]
    #[serde(alias = "authorization")]
    Authorisation,
    /// Manual capture: `AUTHORISATION` success=true is `payment.pending`, `CAPTURE`
    /// success=true is `payment.succeeded`, a failed capture (`CAPTURE` false,
    /// `CAPTURE_FAILED`) is `payment.failed`.
    Capture,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdyenOptions {
    /// Id(s) of the source's secrets that hold the Basic-auth `user:pass` configured on the
    /// Adyen webhook. Those secrets are taken out of the HMAC key ring; when set, every
    /// request must carry matching `Authorization: Basic` credentials.
    basic_auth_secret: Option<SecretIds>,
    /// Require the `HmacSignature` header (Platform/Management/Banking webhooks only): body
    /// signatures of standard notifications are then not accepted.
    require_hmac_header: bool,
    payment_succeeded_on: PaidSignal,
}

#[derive(Debug)]
pub(crate) struct Adyen {
    keys: Keyring,
    basic_auth: Option<Keyring>,
    require_hmac_header: bool,
    paid_signal: PaidSignal,
}

impl Adyen {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: AdyenOptions = crypto::parse_options("adyen", options)?;
        let (basic, hmac) = split_named_secrets(
            "adyen",
            "basic_auth_secret",
            opts.basic_auth_secret.as_ref(),
            secrets,
        )?;
        let basic_auth = if basic.is_empty() {
            None
        } else {
            Some(Keyring::decoded("adyen basic_auth_secret", basic, |raw| {
                if fields::is_user_pass(raw, false) {
                    Ok(raw.to_vec())
                } else {
                    Err(KeyError::Format("must be user:pass"))
                }
            })?)
        };
        Ok(Self {
            keys: Keyring::decoded("adyen", hmac, decode_hex_key)?,
            basic_auth,
            require_hmac_header: opts.require_hmac_header,
            paid_signal: opts.payment_succeeded_on,
        })
    }

    /// Verify every item's body signature; the key ids that matched, in item order.
    fn verify_items(&self, body: &[u8], now_ms: i64) -> Result<String, VerifyError> {
        let items = parse_items(body).map_err(|why| match why {
            // Not a standard notification, and no header: nothing signs this body.
            ItemsError::NotANotification => {
                VerifyError::MissingSignature(format!("{HEADER} header or {ITEM_SIGNATURE}"))
            }
            ItemsError::Malformed(why) => VerifyError::MalformedSignature(why),
        })?;
        if items.is_empty() {
            return Err(VerifyError::MissingSignature(format!(
                "{HEADER} header, and notificationItems is empty"
            )));
        }
        let mut key_ids: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let text = item
                .signature
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    VerifyError::MissingSignature(format!(
                        "notificationItems[{i}].NotificationRequestItem.additionalData.hmacSignature"
                    ))
                })?;
            let sig = SignatureEncoding::Base64.decode(text).ok_or_else(|| {
                VerifyError::MalformedSignature(format!(
                    "notificationItems[{i}] hmacSignature is not base64"
                ))
            })?;
            let f = &item.fields;
            let parts: [&[u8]; 15] = [
                f[0].as_bytes(),
                b":",
                f[1].as_bytes(),
                b":",
                f[2].as_bytes(),
                b":",
                f[3].as_bytes(),
                b":",
                f[4].as_bytes(),
                b":",
                f[5].as_bytes(),
                b":",
                f[6].as_bytes(),
                b":",
                f[7].as_bytes(),
            ];
            // Each item stands alone: one that fails refuses the whole request, because the 2xx
            // acknowledges the whole batch to Adyen — accepting part of it would make Adyen
            // drop the refused items forever instead of retrying them.
            let key_id = self.keys.first_match(now_ms, |key| {
                HmacAlgorithm::Sha256.verify(key, &parts, &sig)
            })?;
            if !key_ids.contains(&key_id) {
                key_ids.push(key_id);
            }
        }
        Ok(key_ids.join(","))
    }

    fn check_basic_auth(&self, headers: &Headers, now_ms: i64) -> Result<(), VerifyError> {
        let Some(ring) = &self.basic_auth else {
            return Ok(());
        };
        let value = crypto::needed_header(headers, AUTHORIZATION)?;
        let credentials = fields::basic_credentials(value).map_err(|_| {
            VerifyError::MalformedSignature("authorization: expected Basic <base64>".into())
        })?;
        ring.first_match(now_ms, |expected| crypto::token_eq(&credentials, expected))?;
        Ok(())
    }

    fn item_canonical(
        &self,
        event_code: &str,
        success: bool,
        item: &Item<'_>,
    ) -> Option<&'static str> {
        use canonical::*;
        let capture = self.paid_signal == PaidSignal::Capture;
        match (event_code, success) {
            ("AUTHORISATION", true) if capture => Some(PAYMENT_PENDING),
            ("AUTHORISATION", true) => Some(PAYMENT_SUCCEEDED),
            ("AUTHORISATION", false) => Some(PAYMENT_FAILED),
            ("CAPTURE", true) if capture => Some(PAYMENT_SUCCEEDED),
            ("CAPTURE", false) | ("CAPTURE_FAILED", _) if capture => Some(PAYMENT_FAILED),
            ("REFUND", true) => Some(PAYMENT_REFUNDED),
            ("CANCELLATION", true) => Some(PAYMENT_CANCELED),
            ("CANCEL_OR_REFUND", true) => match item.modification_action.as_deref() {
                Some("refund") => Some(PAYMENT_REFUNDED),
                Some("cancel") => Some(PAYMENT_CANCELED),
                _ => None,
            },
            ("CHARGEBACK" | "NOTIFICATION_OF_CHARGEBACK", _) => Some(PAYMENT_DISPUTED),
            _ => None,
        }
    }
}

fn decode_hex_key(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    std::str::from_utf8(raw)
        .ok()
        .map(str::trim)
        .and_then(|text| hex::decode(text).ok())
        .ok_or(KeyError::Format(
            "is not a hex HMAC key (Adyen shows 64 hex characters)",
        ))
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow, rename = "notificationItems")]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct ItemWrapper<'a> {
    #[serde(borrow, rename = "NotificationRequestItem")]
    item: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem<'a> {
    #[serde(borrow, default)]
    psp_reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    original_reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    merchant_account_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    merchant_reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount: Option<RawAmount<'a>>,
    #[serde(borrow, default)]
    event_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    success: Option<&'a RawValue>,
    #[serde(default)]
    event_date: Option<String>,
    #[serde(default)]
    additional_data: Option<AdditionalData>,
}

#[derive(Deserialize)]
struct RawAmount<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    currency: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AdditionalData {
    #[serde(rename = "hmacSignature", default)]
    hmac_signature: Option<String>,
    #[serde(rename = "modification.action", default)]
    modification_action: Option<String>,
}

/// One notification item: its signed fields as text, in signing order, and its raw bytes.
struct Item<'a> {
    /// psp, originalRef, merchantAccount, merchantRef, value, currency, eventCode, success.
    fields: [Cow<'a, str>; 8],
    signature: Option<String>,
    modification_action: Option<String>,
    event_date: Option<String>,
    raw: &'a str,
}

enum ItemsError {
    /// The body has no `notificationItems` (a Platform/Management webhook, or not JSON).
    NotANotification,
    Malformed(String),
}

/// A signed field as the SDKs stringify it: a string's content, a number's or boolean's
/// literal text exactly as written in the body (never through a float), `""` when absent.
fn field_text<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
    i: usize,
) -> Result<Cow<'a, str>, ItemsError> {
    let Some(raw) = raw else {
        return Ok(Cow::Borrowed(""));
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|e| ItemsError::Malformed(format!("notificationItems[{i}].{name}: {e}"))),
        Some(b'{' | b'[') => Err(ItemsError::Malformed(format!(
            "notificationItems[{i}].{name} is not a string or number"
        ))),
        _ if text == "null" => Ok(Cow::Borrowed("")),
        _ => Ok(Cow::Borrowed(text)),
    }
}

fn parse_items(body: &[u8]) -> Result<Vec<Item<'_>>, ItemsError> {
    let notification: Notification<'_> =
        serde_json::from_slice(body).map_err(|_| ItemsError::NotANotification)?;
    let Some(items) = notification.items else {
        return Err(ItemsError::NotANotification);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, wrapper)| {
            let malformed = |e: serde_json::Error| {
                ItemsError::Malformed(format!(
                    "notificationItems[{i}] is not a NotificationRequestItem: {e}"
                ))
            };
            let wrapper: ItemWrapper<'_> =
                serde_json::from_str(wrapper.get()).map_err(malformed)?;
            let item: RawItem<'_> = serde_json::from_str(wrapper.item.get()).map_err(malformed)?;
            let (value, currency) = match &item.amount {
                Some(a) => (a.value, a.currency),
                None => (None, None),
            };
            let text = |raw, name| field_text(raw, name, i);
            let (signature, modification_action) = match item.additional_data {
                Some(d) => (d.hmac_signature, d.modification_action),
                None => (None, None),
            };
            Ok(Item {
                fields: [
                    text(item.psp_reference, "pspReference")?,
                    text(item.original_reference, "originalReference")?,
                    text(item.merchant_account_code, "merchantAccountCode")?,
                    text(item.merchant_reference, "merchantReference")?,
                    text(value, "amount.value")?,
                    text(currency, "amount.currency")?,
                    text(item.event_code, "eventCode")?,
                    text(item.success, "success")?,
                ],
                signature,
                modification_action,
                event_date: item.event_date,
                raw: wrapper.item.get(),
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Provider for Adyen {
    fn name(&self) -> &'static str {
        "adyen"
    }

    /// With an `HmacSignature` header the header decides (it signs the whole body); without
    /// one, every notification item must carry a signature that verifies.
    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let header = crypto::required_header(req.headers, HEADER);
        let (scheme, key_id) = match header {
            Ok(value) => {
                let sig = SignatureEncoding::Base64.decode(value).ok_or_else(|| {
                    VerifyError::MalformedSignature(format!("{HEADER} is not base64"))
                })?;
                let key_id = self.keys.first_match(now_ms, |key| {
                    HmacAlgorithm::Sha256.verify(key, &[req.body], &sig)
                })?;
                ("adyen_hmac_header", key_id)
            }
            Err(missing) if self.require_hmac_header => return Err(missing),
            Err(_) => ("adyen_hmac_items", self.verify_items(req.body, now_ms)?),
        };
        self.check_basic_auth(req.headers, now_ms)?;
        Ok(Verified {
            scheme,
            key_id: Some(key_id),
        })
    }

    fn acknowledgement(&self, _req: &InboundRequest<'_>) -> Option<HandshakeReply> {
        Some(HandshakeReply::text("[accepted]"))
    }

    /// One event per notification item, `part` = the `NotificationRequestItem` object's exact
    /// bytes. A Platform/Management webhook (no `notificationItems`) is one event typed by its
    /// `type`, deduplicated by body hash (it carries no event id).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let items = match parse_items(req.body) {
            Ok(items) => items,
            Err(ItemsError::Malformed(why)) => return Err(ExtractError(why)),
            Err(ItemsError::NotANotification) => {
                let body = crypto::json_object(req.body).ok_or_else(|| {
                    ExtractError("adyen webhook body is not a JSON object".into())
                })?;
                let event_type = body.get("type").and_then(|t| t.as_str()).ok_or_else(|| {
                    ExtractError(
                        "adyen webhook has neither notificationItems nor a string \"type\"".into(),
                    )
                })?;
                return Ok(vec![Extracted {
                    event_type: Some(event_type.to_string()),
                    occurred_at_ms: body
                        .get("createdAt")
                        .or_else(|| body.get("timestamp"))
                        .and_then(|t| t.as_str())
                        .and_then(rfc3339_ms),
                    ..Default::default()
                }]);
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let [psp, _, _, merchant_ref, value, currency, event_code, success] = &item.fields;
                if psp.is_empty() || event_code.is_empty() {
                    return Err(ExtractError(format!(
                        "adyen notificationItems[{i}] has no pspReference or eventCode"
                    )));
                }
                let succeeded = success.as_ref() == "true";
                let currency = money::currency(currency);
                Ok(Extracted {
                    unsigned_id: None,
                    // Success is part of the key: an AUTHORISATION can arrive as false and
                    // then true (or the reverse) for one pspReference, and those are two
                    // different facts, not a retry of one.
                    event_id: Some(format!("{psp}#{event_code}#{success}")),
                    event_type: Some(event_code.to_string()),
                    canonical_type: self.item_canonical(event_code, succeeded, item),
                    occurred_at_ms: item.event_date.as_deref().and_then(rfc3339_ms),
                    entity: (!merchant_ref.is_empty()).then(|| merchant_ref.to_string()),
                    object_id: Some(psp.to_string()),
                    amount: currency
                        .as_ref()
                        .and_then(|_| money::minor_from_text(value)),
                    currency,
                    part: Some(item.raw.as_bytes().to_vec()),
                })
            })
            .collect()
    }

    /// A standard AUTHORISATION notification; its item is signed with the first live key when
    /// there is one, so the body verifies on its own as well as with [`Provider::sign`]'s header.
    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let psp: String = id
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(char::from)
            .take(16)
            .collect();
        let merchant_ref = format!("order-{psp}");
        let date = crate::time::format_rfc3339_ms(now_ms);
        let signing = format!("{psp}::InletTest:{merchant_ref}:2000:EUR:AUTHORISATION:true");
        let signature = self
            .keys
            .signing_key(now_ms)
            .ok()
            .and_then(|key| {
                HmacAlgorithm::Sha256
                    .compute(key, &[signing.as_bytes()])
                    .ok()
            })
            .map(|sig| SignatureEncoding::Base64.encode(&sig))
            .unwrap_or_default();
        serde_json::json!({
            "live": "false",
            "notificationItems": [{"NotificationRequestItem": {
                "pspReference": psp, "merchantReference": merchant_ref,
                "merchantAccountCode": "InletTest", "amount": {"currency": "EUR", "value": 2000},
                "eventCode": "AUTHORISATION", "success": "true", "eventDate": date,
                "paymentMethod": "visa", "additionalData": {"hmacSignature": signature}
            }}]
        })
        .to_string()
        .into_bytes()
    }

    /// The `HmacSignature` header over the body (the Platform/Management form); body
    /// signatures of standard notifications cannot be added by headers.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        let mut headers = Headers::from_iter([(HEADER, SignatureEncoding::Base64.encode(&sig))]);
        if let Some(ring) = &self.basic_auth {
            let credentials = ring.signing_key(input.now_ms)?;
            headers.insert(
                AUTHORIZATION,
                format!("Basic {}", SignatureEncoding::Base64.encode(credentials)),
            );
        }
        Ok(headers)
    }
}

/// How the provider suite (`suite.rs`) signs for Adyen's standard notifications: each
/// item's `additionalData.hmacSignature`, base64 HMAC-SHA256 (hex-decoded key) of
/// `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    const ITEM_0: &str =
        "notificationItems[0].NotificationRequestItem.additionalData.hmacSignature";
    fn key(hex_key: &str) -> TestKey {
        TestKey {
            configured: hex_key.to_string(),
            signing: hex::decode(hex_key).expect("hex"),
        }
    }
    fn body(signature: &str) -> String {
        format!(
            r#"{{"live":"false","notificationItems":[{{"NotificationRequestItem":{{"pspReference":"7914073381342284","merchantReference":"ref-1","merchantAccountCode":"Merchant","amount":{{"currency":"EUR","value":2000}},"eventCode":"AUTHORISATION","success":"true","eventDate":"2026-01-01T00:00:00Z","additionalData":{{"hmacSignature":"{signature}"}}}}}}]}}"#
        )
    }
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let signing = "7914073381342284::Merchant:ref-1:2000:EUR:AUTHORISATION:true";
        let tag = key
            .expect("adyen is keyed")
            .hmac(HmacAlgorithm::Sha256, &[signing.as_bytes()]);
        Signed::post(
            Headers::new(),
            body(&SignatureEncoding::Base64.encode(&tag)),
        )
    }
    fn with_signature(s: &Signed, replace: &str) -> Signed {
        let text = String::from_utf8_lossy(&s.body);
        let start = text.find(r#""hmacSignature":""#).expect("signed") + 17;
        let end = start + text[start..].find('"').expect("closed");
        s.with_body(format!("{}{replace}{}", &text[..start], &text[end..]))
    }
    Case {
        tamper: |s| {
            let text =
                String::from_utf8_lossy(&s.body).replace(r#""value":2000"#, r#""value":2001"#);
            s.body = text.into_bytes();
        },
        garbled: |s| vec![with_signature(s, "!!")],
        ..Case::new(
            "adyen",
            "adyen_hmac_items",
            || {
                [
                    key("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),
                    key("00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"),
                ]
            },
            sign,
            Carrier::Custom(|s| {
                vec![(
                    with_signature(s, ""),
                    VerifyError::MissingSignature(ITEM_0.into()),
                )]
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    const OTHER_KEY: &str = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";

    fn adyen(secrets: Vec<Secret>) -> Adyen {
        Adyen::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn adyen_with(options: serde_json::Value, secrets: Vec<Secret>) -> Adyen {
        Adyen::from_config(&options, secrets).unwrap()
    }

    #[test]
    fn adyen_deliveries_are_acknowledged_with_accepted() {
        let v = testkit::vector("adyen-standard-notification");
        let p = adyen(vec![secret("hmac", v.secret.as_deref().expect("key"))]);
        let h = v.headers();
        assert_eq!(
            p.acknowledgement(&request(&h, v.body.as_bytes())),
            Some(HandshakeReply::text("[accepted]"))
        );
    }

    fn sig_b64(hex_key: &str, message: &str) -> String {
        let key = hex::decode(hex_key).unwrap();
        SignatureEncoding::Base64.encode(
            &HmacAlgorithm::Sha256
                .compute(&key, &[message.as_bytes()])
                .unwrap(),
        )
    }

    /// A notification item JSON with a signature made by `hex_key` over its own fields.
    fn item(hex_key: &str, psp: &str, code: &str, success: &str, value: &str) -> String {
        let msg = format!("{psp}::Merchant:ref-{psp}:{value}:EUR:{code}:{success}");
        format!(
            r#"{{"NotificationRequestItem":{{"pspReference":"{psp}","merchantReference":"ref-{psp}","merchantAccountCode":"Merchant","amount":{{"currency":"EUR","value":{value}}},"eventCode":"{code}","success":"{success}","eventDate":"2026-01-01T01:00:00+01:00","additionalData":{{"hmacSignature":"{}"}}}}}}"#,
            sig_b64(hex_key, &msg)
        )
    }

    fn batch(items: &[String]) -> String {
        format!(
            r#"{{"live":"false","notificationItems":[{}]}}"#,
            items.join(",")
        )
    }

    #[test]
    fn every_adyen_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["adyen"]) {
            let h = v.headers();
            let got = adyen(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            match got {
                Ok(verified) => {
                    assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
                    assert_eq!(verified.scheme, "adyen_hmac_items");
                }
                Err(e) => assert_eq!(e, VerifyError::SignatureMismatch { keys_tried: 1 }),
            }
        }
    }

    #[test]
    fn adyen_vector_extracts_one_event_per_item_with_money_and_reference() {
        let v = testkit::vector("adyen-standard-notification");
        let h = v.headers();
        let got = adyen(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(
            e.event_id.as_deref(),
            Some("7914073381342284#AUTHORISATION#true")
        );
        assert_eq!(e.event_type.as_deref(), Some("AUTHORISATION"));
        assert_eq!(e.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
        assert_eq!(e.entity.as_deref(), Some("TestPayment-1407325143704"));
        assert_eq!((e.amount, e.currency.as_deref()), (Some(1130), Some("EUR")));
        // 2019-05-06T17:15:34.121+02:00 = 15:15:34.121Z
        assert_eq!(e.occurred_at_ms, Some(1_557_155_734_121));
        let part = std::str::from_utf8(e.part.as_deref().unwrap()).unwrap();
        assert!(part.starts_with(r#"{"pspReference":"7914073381342284""#));
        assert!(v.body.contains(part));
    }

    #[test]
    fn every_item_of_a_batch_is_verified_and_split_byte_exact() {
        let items = [
            item(KEY, "A1", "AUTHORISATION", "true", "1000"),
            item(KEY, "B2", "REFUND", "true", "250"),
            item(KEY, "C3", "AUTHORISATION", "false", "99"),
        ];
        let body = batch(&items);
        let h = Headers::new();
        let p = adyen(vec![secret("k", KEY)]);
        let verified = p.verify(&request(&h, body.as_bytes()), NOW_MS).unwrap();
        assert_eq!(verified.key_id.as_deref(), Some("k"));
        let got = p.extract(&request(&h, body.as_bytes())).unwrap();
        assert_eq!(got.len(), 3);
        let canon: Vec<_> = got.iter().map(|e| e.canonical_type).collect();
        assert_eq!(
            canon,
            [
                Some(canonical::PAYMENT_SUCCEEDED),
                Some(canonical::PAYMENT_REFUNDED),
                Some(canonical::PAYMENT_FAILED)
            ]
        );
        assert_eq!(got[2].event_id.as_deref(), Some("C3#AUTHORISATION#false"));
        for (e, wrapper) in got.iter().zip(&items) {
            let part = e.part.as_deref().unwrap();
            let start = body.find(std::str::from_utf8(part).unwrap()).unwrap();
            assert_eq!(&body.as_bytes()[start..start + part.len()], part);
            assert!(wrapper.contains(std::str::from_utf8(part).unwrap()));
            assert_eq!(e.occurred_at_ms, Some(NOW_MS));
        }
    }

    #[test]
    fn one_forged_item_refuses_the_whole_batch() {
        let mut forged = item(KEY, "B2", "REFUND", "true", "250");
        forged = forged.replace(":250}", ":25000}");
        let body = batch(&[item(KEY, "A1", "AUTHORISATION", "true", "1000"), forged]);
        let got = adyen(vec![secret("k", KEY)])
            .verify(&request(&Headers::new(), body.as_bytes()), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn item_without_signature_is_named_in_the_refusal() {
        let unsigned = item(KEY, "B2", "REFUND", "true", "250").replace(
            r#","additionalData":{"hmacSignature""#,
            r#","additionalData":{"other""#,
        );
        let body = batch(&[item(KEY, "A1", "AUTHORISATION", "true", "1000"), unsigned]);
        let got = adyen(vec![secret("k", KEY)])
            .verify(&request(&Headers::new(), body.as_bytes()), NOW_MS);
        assert_eq!(
            got,
            Err(VerifyError::MissingSignature(
                "notificationItems[1].NotificationRequestItem.additionalData.hmacSignature".into()
            ))
        );
    }

    #[test]
    fn garbled_item_signature_and_shape_are_malformed() {
        let p = adyen(vec![secret("k", KEY)]);
        let h = Headers::new();
        let garbled = item(KEY, "A1", "AUTHORISATION", "true", "1")
            .replace(r#""hmacSignature":""#, r#""hmacSignature":"!!"#);
        for body in [
            batch(&[garbled]),
            r#"{"notificationItems":[{"NotARequestItem":{}}]}"#.to_string(),
            r#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":{"x":1}}}]}"#
                .to_string(),
            r#"{"notificationItems":"nope"}"#.to_string(),
        ] {
            let got = p.verify(&request(&h, body.as_bytes()), NOW_MS);
            assert!(
                matches!(
                    got,
                    Err(VerifyError::MissingSignature(_)) | Err(VerifyError::MalformedSignature(_))
                ),
                "{body}: {got:?}"
            );
        }
        let got = p.verify(
            &request(
                &h,
                batch(&[item(KEY, "A", "X", "true", "1")
                    .replace(r#""hmacSignature":""#, r#""hmacSignature":"!!"#)])
                .as_bytes(),
            ),
            NOW_MS,
        );
        assert!(
            matches!(got, Err(VerifyError::MalformedSignature(_))),
            "{got:?}"
        );
    }

    #[test]
    fn body_without_items_or_header_has_no_signature() {
        let p = adyen(vec![secret("k", KEY)]);
        let h = Headers::new();
        for body in [
            &b"not json"[..],
            br#"{"type":"balancePlatform.accountHolder.created"}"#,
            br#"{"notificationItems":[]}"#,
        ] {
            assert!(
                matches!(
                    p.verify(&request(&h, body), NOW_MS),
                    Err(VerifyError::MissingSignature(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn number_literals_are_signed_as_written_and_strings_by_content() {
        // value as a string and a missing originalReference/currency still sign the SDK way.
        let msg = "P1:::ref:1130::AUTHORISATION:true";
        let body = format!(
            r#"{{"notificationItems":[{{"NotificationRequestItem":{{"pspReference":"P1","merchantReference":"ref","amount":{{"value":"1130"}},"eventCode":"AUTHORISATION","success":"true","additionalData":{{"hmacSignature":"{}"}}}}}}]}}"#,
            sig_b64(KEY, msg)
        );
        let p = adyen(vec![secret("k", KEY)]);
        assert!(p
            .verify(&request(&Headers::new(), body.as_bytes()), NOW_MS)
            .is_ok());
        // 1130.0 is not the signed 1130: the literal text is what counts, never a float.
        let float = item(KEY, "A1", "AUTHORISATION", "true", "1130").replace(":1130}", ":1130.0}");
        assert_eq!(
            p.verify(
                &request(&Headers::new(), batch(&[float]).as_bytes()),
                NOW_MS
            ),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn the_key_as_text_instead_of_hex_bytes_does_not_verify() {
        let v = testkit::vector("adyen-standard-notification");
        // Same key, but used as its UTF-8 text: a hex-decoding mistake must not pass.
        let p = Adyen {
            keys: Keyring::new("adyen", vec![secret("k", KEY)]).unwrap(),
            basic_auth: None,
            require_hmac_header: false,
            paid_signal: PaidSignal::Authorisation,
        };
        assert!(p
            .verify(&request(&Headers::new(), v.body.as_bytes()), NOW_MS)
            .is_err());
    }

    #[test]
    fn items_signed_by_old_and_new_keys_name_both() {
        let body = batch(&[
            item(OTHER_KEY, "A1", "AUTHORISATION", "true", "1"),
            item(KEY, "B1", "AUTHORISATION", "true", "1"),
        ]);
        let p = adyen(vec![secret("old", OTHER_KEY), secret("new", KEY)]);
        let got = p
            .verify(&request(&Headers::new(), body.as_bytes()), NOW_MS)
            .unwrap();
        assert_eq!(got.key_id.as_deref(), Some("old,new"));
    }

    #[test]
    fn platform_webhook_header_signs_the_raw_body() {
        let body = br#"{"data":{"balancePlatform":"YOUR_BP","accountHolder":{"id":"AH1"}},"environment":"test","type":"balancePlatform.accountHolder.created"}"#;
        let key = hex::decode(KEY).unwrap();
        let sig = SignatureEncoding::Base64
            .encode(&HmacAlgorithm::Sha256.compute(&key, &[body]).unwrap());
        let p = adyen(vec![secret("k", KEY)]);
        let h = Headers::from_iter([("HmacSignature", sig.as_str())]);
        let got = p.verify(&request(&h, body), NOW_MS).unwrap();
        assert_eq!(got.scheme, "adyen_hmac_header");
        let tampered = String::from_utf8_lossy(body).replace("AH1", "AH2");
        assert_eq!(
            p.verify(&request(&h, tampered.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let garbled = Headers::from_iter([("HmacSignature", "***")]);
        assert!(matches!(
            p.verify(&request(&garbled, body), NOW_MS),
            Err(VerifyError::MalformedSignature(_))
        ));
        let e = p.extract(&request(&h, body)).unwrap().remove(0);
        assert_eq!(
            e.event_type.as_deref(),
            Some("balancePlatform.accountHolder.created")
        );
        assert_eq!((e.event_id, e.canonical_type, e.part), (None, None, None));
    }

    #[test]
    fn required_header_refuses_body_signatures_alone() {
        let v = testkit::vector("adyen-standard-notification");
        let p = adyen_with(
            serde_json::json!({"require_hmac_header": true}),
            vec![v.secret()],
        );
        assert_eq!(
            p.verify(&request(&Headers::new(), v.body.as_bytes()), NOW_MS),
            Err(VerifyError::MissingSignature("hmacsignature".into()))
        );
    }

    #[test]
    fn basic_auth_is_checked_on_top_and_kept_out_of_the_hmac_ring() {
        let v = testkit::vector("adyen-standard-notification");
        let secrets = vec![v.secret(), secret("basic", "adyen:pa55")];
        let p = adyen_with(serde_json::json!({"basic_auth_secret": "basic"}), secrets);
        let body = v.body.as_bytes();
        assert_eq!(
            p.verify(&request(&Headers::new(), body), NOW_MS),
            Err(VerifyError::MissingHeader("authorization".into()))
        );
        let good = Headers::from_iter([("Authorization", "Basic YWR5ZW46cGE1NQ==")]);
        let got = p.verify(&request(&good, body), NOW_MS).unwrap();
        assert_eq!(got.key_id, Some(format!("{}-key", v.id)));
        let wrong = Headers::from_iter([("Authorization", "Basic YWR5ZW46cGE1Ng==")]);
        assert_eq!(
            p.verify(&request(&wrong, body), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let bearer = Headers::from_iter([("Authorization", "Bearer YWR5ZW46cGE1NQ==")]);
        assert!(matches!(
            p.verify(&request(&bearer, body), NOW_MS),
            Err(VerifyError::MalformedSignature(_))
        ));
        // A forged body with the right credentials is still refused.
        let forged = v.body.replace("1130", "9999");
        assert_eq!(
            p.verify(&request(&good, forged.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn basic_auth_config_errors_name_the_option_not_the_value() {
        let err = Adyen::from_config(
            &serde_json::json!({"basic_auth_secret": "nope"}),
            vec![secret("k", KEY)],
        )
        .unwrap_err();
        assert!(
            err.0.contains("basic_auth_secret") && err.0.contains("\"nope\""),
            "{err}"
        );
        let err = Adyen::from_config(
            &serde_json::json!({"basic_auth_secret": "b"}),
            vec![secret("k", KEY), secret("b", "no-colon")],
        )
        .unwrap_err();
        assert!(
            err.0.contains("user:pass") && !err.0.contains("no-colon"),
            "{err}"
        );
        let err = Adyen::from_config(
            &serde_json::json!({"basic_auth_secret": ["b"]}),
            vec![secret("b", "u:p")],
        )
        .unwrap_err();
        assert!(err.0.contains("at least one secret"), "{err}");
        let err = Adyen::from_config(
            &serde_json::Value::Null,
            vec![secret("k", "not-hex-at-all")],
        )
        .unwrap_err();
        assert!(
            err.0.contains("\"k\" is not a hex HMAC key") && !err.0.contains("not-hex-at-all"),
            "{err}"
        );
        let err = Adyen::from_config(
            &serde_json::json!({"hmac_header": true}),
            vec![secret("k", KEY)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `hmac_header`"), "{err}");
    }

    #[test]
    fn capture_mode_moves_payment_succeeded_to_capture() {
        let items = [
            item(KEY, "A1", "AUTHORISATION", "true", "1"),
            item(KEY, "A1", "CAPTURE", "true", "1"),
            item(KEY, "A1", "CAPTURE_FAILED", "true", "1"),
        ];
        let body = batch(&items);
        let h = Headers::new();
        let default = adyen(vec![secret("k", KEY)])
            .extract(&request(&h, body.as_bytes()))
            .unwrap();
        let canon: Vec<_> = default.iter().map(|e| e.canonical_type).collect();
        assert_eq!(canon, [Some(canonical::PAYMENT_SUCCEEDED), None, None]);
        let capture = adyen_with(
            serde_json::json!({"payment_succeeded_on": "capture"}),
            vec![secret("k", KEY)],
        )
        .extract(&request(&h, body.as_bytes()))
        .unwrap();
        let canon: Vec<_> = capture.iter().map(|e| e.canonical_type).collect();
        assert_eq!(
            canon,
            [
                Some(canonical::PAYMENT_PENDING),
                Some(canonical::PAYMENT_SUCCEEDED),
                Some(canonical::PAYMENT_FAILED)
            ]
        );
    }

    #[test]
    fn modification_and_dispute_codes_map_to_canonical_types() {
        let items = [
            item(KEY, "A", "CANCELLATION", "true", "1"),
            item(KEY, "B", "CHARGEBACK", "true", "1"),
            item(KEY, "C", "NOTIFICATION_OF_CHARGEBACK", "true", "1"),
            item(KEY, "D", "REFUND", "false", "1"),
            item(KEY, "E", "REPORT_AVAILABLE", "true", "1"),
        ];
        let body = batch(&items);
        let got = adyen(vec![secret("k", KEY)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap();
        let canon: Vec<_> = got.iter().map(|e| e.canonical_type).collect();
        assert_eq!(
            canon,
            [
                Some(canonical::PAYMENT_CANCELED),
                Some(canonical::PAYMENT_DISPUTED),
                Some(canonical::PAYMENT_DISPUTED),
                None,
                None
            ]
        );
        let cancel_or_refund = br#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":"X","eventCode":"CANCEL_OR_REFUND","success":"true","additionalData":{"modification.action":"refund"}}}]}"#;
        let e = adyen(vec![secret("k", KEY)])
            .extract(&request(&Headers::new(), cancel_or_refund))
            .unwrap()
            .remove(0);
        assert_eq!(e.canonical_type, Some(canonical::PAYMENT_REFUNDED));
        assert_eq!((e.amount, e.currency, e.entity), (None, None, None));
    }

    #[test]
    fn adyen_items_without_psp_reference_or_event_code_are_extract_errors() {
        let p = adyen(vec![secret("k", KEY)]);
        let h = Headers::new();
        for body in [
            &br#"{"notificationItems":[{"NotificationRequestItem":{"eventCode":"AUTHORISATION"}}]}"#[..],
            br#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":"1"}}]}"#,
            br#"{"notificationItems":[{"Other":{}}]}"#,
            b"[]",
            br#"{"no":"type"}"#,
        ] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
        assert_eq!(
            p.extract(&request(&h, br#"{"notificationItems":[]}"#))
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn rfc3339_offsets_are_applied() {
        assert_eq!(rfc3339_ms("2026-01-01T00:00:00Z"), Some(NOW_MS));
        assert_eq!(rfc3339_ms("2026-01-01T01:00:00+01:00"), Some(NOW_MS));
        assert_eq!(rfc3339_ms("2025-12-31T23:30:00.000-00:30"), Some(NOW_MS));
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00+1:00",
            "2026-01-01T00:00:00+25:00",
            "2026-01-01T00:00:00é",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn adyen_sample_and_sign_round_trip_both_ways() {
        let p = adyen_with(
            serde_json::json!({"basic_auth_secret": "b"}),
            vec![secret("k", KEY), secret("b", "u:p")],
        );
        let body = p.sample_body("0d5c2f8e-1b7a-4a8c-9e31-6f0b2a4c7d9e", NOW_MS);
        let auth = Headers::from_iter([("Authorization", "Basic dTpw")]);
        // The sample's item signature verifies alone (with the basic credentials)…
        assert!(p.verify(&request(&auth, &body), NOW_MS).is_ok());
        // …and sign() adds the header form.
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "d",
        };
        let h = p.sign(&input).unwrap();
        assert_eq!(
            p.verify(&request(&h, &body), NOW_MS).unwrap().scheme,
            "adyen_hmac_header"
        );
        let e = p.extract(&request(&h, &body)).unwrap().remove(0);
        assert_eq!(
            e.event_id.as_deref(),
            Some("0d5c2f8e1b7a4a8c#AUTHORISATION#true")
        );
        assert_eq!((e.amount, e.currency.as_deref()), (Some(2000), Some("EUR")));
    }

    #[test]
    fn adyen_debug_output_never_shows_keys_or_credentials() {
        let p = adyen_with(
            serde_json::json!({"basic_auth_secret": "b"}),
            vec![secret("k", KEY), secret("b", "u:hunter2")],
        );
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("44782"),
            "{debug}"
        );
    }
}
