//! Every provider's handshake, verifier and body parser on arbitrary requests. The first
//! byte picks the provider (from `providers.json`), the second the method; then header lines
//! (`name: value`), an optional `?query` line, a blank line, and the body. `extract` runs
//! even when verification fails, so the body parsers see hostile bodies too.
#![no_main]

use std::sync::{Arc, OnceLock};

use inlet::providers::{self, Provider};
use inlet::request::{Headers, InboundRequest};
use inlet::secret::Secret;
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_767_225_630_000;

fn catalogue() -> &'static Vec<Arc<dyn Provider>> {
    static ALL: OnceLock<Vec<Arc<dyn Provider>>> = OnceLock::new();
    ALL.get_or_init(|| {
        let specs: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../providers.json")).expect("providers.json");
        specs
            .iter()
            .map(|spec| {
                let secrets = spec["secrets"]
                    .as_array()
                    .expect("secrets")
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let text = s.as_str().expect("secret");
                        Secret::new(format!("k{i}"), text.as_bytes().to_vec(), None)
                    })
                    .collect();
                let name = spec["provider"].as_str().expect("provider");
                providers::build(name, &spec["options"], secrets)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, method, rest @ ..] = data else {
        return;
    };
    let all = catalogue();
    let provider = &all[usize::from(*pick) % all.len()];
    let method = if method % 2 == 0 { "POST" } else { "GET" };
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let (head, body) = rest.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let mut headers = Headers::new();
    let mut query = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        if let Some(q) = line.strip_prefix('?') {
            for pair in q.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                query.push((k.to_string(), v.to_string()));
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim(), value.trim());
        }
    }
    let req = InboundRequest {
        method,
        headers: &headers,
        query: &query,
        body,
    };
    let _ = provider.handshake(&req, NOW_MS);
    let _ = provider.verify(&req, NOW_MS);
    let _ = provider.extract(&req);
});
