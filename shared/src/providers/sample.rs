//! `inlet sign --type TYPE`: a provider's sample event as another event type. Which field
//! holds the type is the provider's own business (`/type`, `/event_type`, `/event`,
//! `/notificationItems/0/…/eventCode`), so rather than a second description of each body,
//! the sample's type is read back through the provider's own `extract`, every string in the
//! body equal to it is replaced, and `extract` must then read the new type. A provider whose
//! type travels in a header (GitHub, Shopify) says so instead of signing something else.

use serde_json::Value;

use super::{Provider, SignInput};
use crate::request::{Headers, InboundRequest};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleTypeError {
    #[error(
        "{provider} events carry their type outside the body, so --type cannot set it: \
         pass --body with an event of that type"
    )]
    NotInBody { provider: String },
    #[error("{provider}'s sample event has no type to change")]
    NoType { provider: String },
    #[error("{provider}'s sample event is not JSON, so --type cannot set its type")]
    NotJson { provider: String },
}

/// The type `extract` reads from `body`, signed as the provider signs (public-key schemes
/// cannot sign, and most take their type from the body alone).
fn type_of(p: &dyn Provider, body: &[u8], now_ms: i64) -> Option<String> {
    let headers = p
        .sign(&SignInput {
            body,
            now_ms,
            delivery_id: "sample",
        })
        .unwrap_or_else(|_| Headers::new());
    let req = InboundRequest {
        method: "POST",
        headers: &headers,
        query: &[],
        body,
    };
    p.extract(&req)
        .ok()?
        .into_iter()
        .next()
        .and_then(|e| e.event_type)
}

/// Every string equal to `from` becomes `to`; how many were.
fn replace_strings(v: &mut Value, from: &str, to: &str) -> usize {
    match v {
        Value::String(s) if s == from => {
            *s = to.to_owned();
            1
        }
        Value::Array(items) => items.iter_mut().map(|i| replace_strings(i, from, to)).sum(),
        Value::Object(map) => map.values_mut().map(|i| replace_strings(i, from, to)).sum(),
        _ => 0,
    }
}

/// The provider's sample event (`id` fresh, at `now_ms`) with `event_type` as its type.
pub fn sample_of_type(
    p: &dyn Provider,
    id: &str,
    event_type: &str,
    now_ms: i64,
) -> Result<Vec<u8>, SampleTypeError> {
    let provider = p.name().to_owned();
    let sample = p.sample_body(id, now_ms);
    let current = type_of(p, &sample, now_ms).ok_or_else(|| SampleTypeError::NoType {
        provider: provider.clone(),
    })?;
    let mut doc: Value = serde_json::from_slice(&sample).map_err(|_| SampleTypeError::NotJson {
        provider: provider.clone(),
    })?;
    if replace_strings(&mut doc, &current, event_type) == 0 {
        return Err(SampleTypeError::NotInBody { provider });
    }
    let body = doc.to_string().into_bytes();
    match type_of(p, &body, now_ms) {
        Some(t) if t == event_type => Ok(body),
        _ => Err(SampleTypeError::NotInBody { provider }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::suite::{cases, T};

    #[test]
    fn every_provider_either_reads_the_asked_type_back_or_says_the_type_is_elsewhere() {
        let mut typed = Vec::new();
        for case in cases() {
            let (p, _) = case.signed();
            match sample_of_type(&*p, "sample-1", "x.custom_type", T) {
                Ok(body) => {
                    assert_eq!(
                        type_of(&*p, &body, T).as_deref(),
                        Some("x.custom_type"),
                        "{}",
                        case.name
                    );
                    typed.push(case.name);
                }
                Err(SampleTypeError::NotInBody { .. }) => {
                    // Honest only if the sample's type really is not a body string.
                    let sample = p.sample_body("sample-1", T);
                    if let Some(t) = type_of(&*p, &sample, T) {
                        let mut doc: Value = serde_json::from_slice(&sample).expect("json");
                        let found = replace_strings(&mut doc, &t, "x.other");
                        let body = doc.to_string().into_bytes();
                        assert!(
                            found == 0 || type_of(&*p, &body, T).as_deref() != Some("x.other"),
                            "{}: the type {t:?} is in the body",
                            case.name
                        );
                    }
                }
                Err(e) => assert!(
                    matches!(
                        e,
                        SampleTypeError::NoType { .. } | SampleTypeError::NotJson { .. }
                    ),
                    "{}: {e}",
                    case.name
                ),
            }
        }
        for payments in ["stripe", "paddle", "checkout", "square", "razorpay"] {
            assert!(typed.contains(&payments), "{payments}: {typed:?}");
        }
    }

    #[test]
    fn a_stripe_sample_of_a_refund_is_a_refund_with_the_rest_unchanged() {
        let (p, _) = cases()
            .into_iter()
            .find(|c| c.name == "stripe")
            .expect("stripe case")
            .signed();
        let body = sample_of_type(&*p, "evt_9", "charge.refunded", T).expect("typed");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        let plain: Value = serde_json::from_slice(&p.sample_body("evt_9", T)).expect("json");
        assert_eq!(doc["type"], "charge.refunded");
        assert_eq!(doc["data"], plain["data"]);
        assert_eq!(doc["id"], plain["id"]);
    }
}
