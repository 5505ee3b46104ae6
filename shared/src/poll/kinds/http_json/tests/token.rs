//! A token API (basic): GET /v2/checks?page_token=<t>, next_page_token in the body.

use base64::Engine;

use super::*;

const BASIC: &str = "kyc_user:pa55/w:rd";

fn token_api(state: Arc<Mutex<Vec<u64>>>) -> Handler {
    Arc::new(move |req: &Req| {
        let st = state.lock().expect("lock");
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(BASIC)
        );
        if req.h("authorization") != Some(want) {
            return Resp::new(401, "{\"error\":\"unauthorized\"}");
        }
        let offset: usize = match req.q("page_token").as_deref() {
            None | Some("") => 0,
            Some(t) => match t.strip_prefix("off:") {
                Some(o) => o.parse().expect("offset"),
                None => return Resp::new(400, "{\"error\":\"bad token\"}"),
            },
        };
        let page: Vec<String> = st
            .iter()
            .skip(offset)
            .take(30)
            .map(|id| format!("{{\"id\":\"chk_{id}\",\"status\":\"verified\"}}"))
            .collect();
        let end = offset + page.len();
        let next = if end < st.len() {
            format!("\"off:{end}\"")
        } else {
            "null".into()
        };
        Resp::new(
            200,
            format!(
                "{{\"results\":[{}],\"next_page_token\":{next}}}",
                page.join(",")
            ),
        )
    })
}

#[tokio::test]
async fn a_token_api_pages_to_a_null_token_and_the_next_run_asks_for_the_last_page_again() {
    let state = Arc::new(Mutex::new((0..200).collect::<Vec<u64>>()));
    let base = serve(token_api(state.clone())).await;
    let kind = kind(json!({
        "url": format!("{base}/v2/checks?page_token={{cursor}}"),
        "auth": { "kind": "basic" },
        "items_pointer": "/results",
        "id_pointer": "/id",
        "cursor": { "kind": "response_token", "pointer": "/next_page_token" },
    }));
    let creds = secrets(BASIC);
    let run = drain(&kind, &creds, None, |_| {
        let mut st = state.lock().expect("lock");
        let n = st.len() as u64;
        st.push(n);
    })
    .await
    .expect("drained");
    let want = |st: &Vec<u64>| st.iter().map(|i| format!("chk_{i}")).collect::<Vec<_>>();
    assert_eq!(ids(&run.items), want(&state.lock().expect("lock")));

    state.lock().expect("lock").extend([500, 501]);
    let next = drain(&kind, &creds, run.cursor, |_| {})
        .await
        .expect("drained");
    let mut all = ids(&run.items);
    all.extend(ids(&next.items));
    assert_eq!(first_occurrences(&all), want(&state.lock().expect("lock")));
    assert!(ids(&next.items).ends_with(&["chk_500".into(), "chk_501".into()]));
}
