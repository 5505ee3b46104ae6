//! Correctly signed requests for a configured source: `inlet sign` prints or sends one, the
//! load generator (`inlet-load`) sends many. Both build them here, with the provider's own
//! `sign`, so a load test exercises exactly what a real sender's signature looks like.

use std::path::Path;

use inlet::config::{Config, Source};
use inlet::ports::{Clock, SystemClock};
use inlet::providers::{ProviderConfigError, SignInput};
use inlet::request::Headers;

/// A request ready to POST to `path` on an `inlet dev` (or the ingest Lambda's) base URL.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no source {0:?} in the config")]
    NoSource(String),
    /// Public-key providers (Discord, SendGrid, PayPal) hold only the sender's public key.
    #[error("cannot sign for {source_id}: {error}")]
    Provider {
        source_id: String,
        error: ProviderConfigError,
    },
}

/// The configured source `id`, or why there is none.
pub fn source<'a>(cfg: &'a Config, id: &str) -> Result<&'a Source, SignError> {
    cfg.source(id)
        .ok_or_else(|| SignError::NoSource(id.to_string()))
}

/// Sign `body` for `source` at `now_ms`. `delivery_id` goes into the headers of providers
/// that carry one (GitHub, Standard Webhooks), where it is also the dedupe key: give each
/// distinct event its own.
pub fn sign_request(
    source: &Source,
    body: Vec<u8>,
    now_ms: i64,
    delivery_id: &str,
) -> Result<SignedRequest, SignError> {
    let mut headers = source
        .provider
        .sign(&SignInput {
            body: &body,
            now_ms,
            delivery_id,
        })
        .map_err(|error| SignError::Provider {
            source_id: source.id.clone(),
            error,
        })?;
    // A provider that signs a form (Twilio) sets its own content type.
    if headers.get("content-type").is_none() {
        headers.insert("content-type", "application/json");
    }
    Ok(SignedRequest {
        path: format!("/webhooks/{}", source.id),
        headers,
        body,
    })
}

/// Where `--send` posts: given the server's base (`http://127.0.0.1:8787`), the webhook base
/// (`…/webhooks/`, the stack's `WebhookBaseUrl`) or the source's full URL.
fn send_url(given: &str, path: &str) -> String {
    let given = given.trim_end_matches('/');
    if given.ends_with(path) {
        given.to_string()
    } else if let Some(base) = given.strip_suffix("/webhooks") {
        format!("{base}{path}")
    } else {
        format!("{given}{path}")
    }
}

/// `inlet sign`: print the request as JSON, or send it to `send` and print the answer.
pub async fn run(
    cfg: &Config,
    source_id: &str,
    body: Option<&Path>,
    event_type: Option<&str>,
    send: Option<&str>,
) -> Result<(), String> {
    let source = source(cfg, source_id).map_err(|e| e.to_string())?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = match (body, event_type) {
        (Some(p), _) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        (None, Some(t)) => inlet::providers::sample::sample_of_type(
            source.provider.as_ref(),
            &id,
            t,
            SystemClock.now_ms(),
        )
        .map_err(|e| format!("--type {t}: {e}"))?,
        (None, None) => source.provider.sample_body(&id, SystemClock.now_ms()),
    };
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let signed = sign_request(source, body, SystemClock.now_ms(), &delivery_id)
        .map_err(|e| e.to_string())?;
    match send {
        None => {
            let mut h = serde_json::Map::new();
            for (k, v) in signed.headers.iter() {
                h.insert(k.to_string(), v.into());
            }
            let body_text = String::from_utf8_lossy(&signed.body).into_owned();
            let out = serde_json::json!({"method": "POST", "path": signed.path, "headers": h, "body": body_text});
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Some(base) => {
            let url = send_url(base, &signed.path);
            let client = reqwest::Client::new();
            let mut req = client.post(&url);
            for (k, v) in signed.headers.iter() {
                req = req.header(k, v);
            }
            let resp = req
                .body(signed.body)
                .send()
                .await
                .map_err(|e| format!("POST {url}: {}", crate::causes(&e)))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            println!("{} {}", status.as_u16(), text);
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{url} answered {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::send_url;

    #[test]
    fn send_takes_a_server_a_webhook_base_or_the_full_url() {
        let want = "http://127.0.0.1:8787/webhooks/stripe";
        for given in [
            "http://127.0.0.1:8787",
            "http://127.0.0.1:8787/",
            "http://127.0.0.1:8787/webhooks/",
            "http://127.0.0.1:8787/webhooks/stripe",
        ] {
            assert_eq!(send_url(given, "/webhooks/stripe"), want, "{given}");
        }
    }
}
