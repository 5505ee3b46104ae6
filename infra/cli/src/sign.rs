use std::path::Path;

use inlet::config::Config;
use inlet::ports::{Clock, SystemClock};
use inlet::providers::SignInput;

/// A plausible event for the provider, so `inlet sign --source stripe` works with no file.
fn sample_body(provider: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now_s = SystemClock.now_ms() / 1000;
    match provider {
        "stripe" => serde_json::json!({
            "id": format!("evt_{}", &id[..24]), "object": "event", "api_version": "2024-06-20",
            "created": now_s, "type": "payment_intent.succeeded",
            "data": {"object": {"id": format!("pi_{}", &id[..24]), "object": "payment_intent", "amount": 2000, "currency": "usd"}}
        }),
        "github" => serde_json::json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        "standard_webhooks" | "svix" => serde_json::json!({"type": "invoice.paid", "data": {"id": id}}),
        "telegram" => serde_json::json!({
            "update_id": now_s,
            "message": {"message_id": 1, "date": now_s, "chat": {"id": 1111111, "type": "private"}, "text": "/start"}
        }),
        _ => serde_json::json!({"id": id, "type": "test.event", "created": now_s}),
    }
    .to_string()
}

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
        None => sample_body(source.provider.name()).into_bytes(),
    };
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let headers = source
        .provider
        .sign(&SignInput {
            body: &body,
            now_ms: SystemClock.now_ms(),
            delivery_id: &delivery_id,
        })
        .map_err(|e| format!("cannot sign for {source_id}: {e}"))?;
    let path = format!("/webhooks/{source_id}");
    let body_text = String::from_utf8_lossy(&body).into_owned();
    match send {
        None => {
            let mut h = serde_json::Map::new();
            h.insert("content-type".into(), "application/json".into());
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
            let mut req = client.post(&url).header("content-type", "application/json");
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
