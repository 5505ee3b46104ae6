use std::path::Path;

use inlet::config::Config;
use inlet::ports::{Clock, SystemClock};
use inlet::providers::SignInput;

pub async fn run(
    cfg: &Config,
    source_id: &str,
    body: Option<&Path>,
    send: Option<&str>,
) -> Result<(), String> {
    let source = cfg
        .source(source_id)
        .ok_or_else(|| format!("no source {source_id:?} in the config"))?;
    let body = match body {
        Some(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => source.provider.sample_body(
            &uuid::Uuid::new_v4().simple().to_string(),
            SystemClock.now_ms(),
        ),
    };
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let mut headers = source
        .provider
        .sign(&SignInput {
            body: &body,
            now_ms: SystemClock.now_ms(),
            delivery_id: &delivery_id,
        })
        .map_err(|e| format!("cannot sign for {source_id}: {e}"))?;
    // A provider that signs a form (Twilio) sets its own content type.
    if headers.get("content-type").is_none() {
        headers.insert("content-type", "application/json");
    }
    let path = format!("/webhooks/{source_id}");
    let body_text = String::from_utf8_lossy(&body).into_owned();
    match send {
        None => {
            let mut h = serde_json::Map::new();
            for (k, v) in headers.iter() {
                h.insert(k.to_string(), v.into());
            }
            let out = serde_json::json!({"method": "POST", "path": path, "headers": h, "body": body_text});
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Some(base) => {
            let url = format!("{}{path}", base.trim_end_matches('/'));
            let client = reqwest::Client::new();
            let mut req = client.post(&url);
            for (k, v) in headers.iter() {
                req = req.header(k, v);
            }
            let resp = req
                .body(body)
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
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
