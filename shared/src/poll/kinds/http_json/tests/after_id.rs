//! An "after id" API (bearer): GET /v1/bets?after=<id>&limit=N.

use super::*;

pub(super) const BEARER: &str = "bo_live_7Hq/x+Z=";

#[derive(Default)]
pub(super) struct Bets {
    /// (id, created), ascending ids.
    items: Vec<(u64, i64)>,
    requests: Vec<Req>,
}

impl Bets {
    fn insert(&mut self, n: usize) {
        for _ in 0..n {
            let id = self.items.last().map_or(1, |(id, _)| id + 1);
            self.items.push((id, 1_700_000_000 + id as i64));
        }
    }
}

fn bet_json(id: u64, created: i64) -> String {
    // Irregular spacing and a unicode escape: items must come back byte-exact.
    format!(
        "{{ \"id\" : {id},\"type\":\"bet.placed\", \"created\": {created}, \"player\":\"p\\u00e9{}\" }}",
        id % 7
    )
}

pub(super) fn bets_api(state: Arc<Mutex<Bets>>) -> Handler {
    Arc::new(move |req: &Req| {
        let mut st = state.lock().expect("lock");
        st.requests.push(req.clone());
        if req.h("authorization").as_deref() != Some(&format!("Bearer {BEARER}")) {
            let given = req.h("authorization").unwrap_or_default();
            return Resp::new(401, format!("{{\"error\":\"invalid token: {given}\"}}"));
        }
        let after: u64 = req
            .q("after")
            .filter(|a| !a.is_empty())
            .map_or(0, |a| a.parse().expect("numeric after"));
        let limit: usize = req.q("limit").map_or(50, |l| l.parse().expect("limit"));
        let mut page: Vec<(u64, i64)> = st
            .items
            .iter()
            .filter(|(id, _)| *id > after)
            .take(limit)
            .copied()
            .collect();
        if req.path == "/v1/bets_desc" {
            // Newest first, but the page adjacent to the cursor (Stripe's ending_before).
            page.reverse();
        }
        let data: Vec<String> = page.iter().map(|(id, c)| bet_json(*id, *c)).collect();
        let body = format!(
            "{{\"object\":\"list\",\n \"data\": [\n  {}\n ]}}",
            data.join(" ,\n  ")
        );
        let etag = etag_of(&body);
        if req.h("if-none-match").as_deref() == Some(etag.as_str()) {
            return Resp::new(304, "");
        }
        Resp::new(200, body)
            .header("ETag", etag)
            .header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
    })
}

pub(super) fn bets_options(base: &str, path: &str, order: &str) -> Value {
    json!({
        "url": format!("{base}{path}?after={{cursor}}&limit=40"),
        "auth": { "kind": "bearer" },
        "items_pointer": "/data",
        "id_pointer": "/id",
        "cursor": { "kind": "item_field" },
        "order": order,
    })
}

#[tokio::test]
async fn an_after_id_api_yields_every_item_once_in_order_with_inserts_between_pages() {
    let state = Arc::new(Mutex::new(Bets::default()));
    state.lock().expect("lock").insert(1_000);
    let base = serve(bets_api(state.clone())).await;
    let kind = kind(bets_options(&base, "/v1/bets", "oldest_first"));
    let creds = secrets(BEARER);

    let run = drain(&kind, &creds, None, |page| {
        if page <= 30 {
            state.lock().expect("lock").insert(4);
        }
    })
    .await
    .expect("drained");

    let want: Vec<String> = state
        .lock()
        .expect("lock")
        .items
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(want.len() > 1_100, "inserts happened: {}", want.len());
    let got = ids(&run.items);
    assert_eq!(first_occurrences(&got), want, "the full set, in order");
    assert_eq!(got.len(), want.len(), "an after-id cursor needs no overlap");
    // Byte-exact: the exact text the API sent for each item.
    for (item, (id, created)) in run.items.iter().zip(&state.lock().expect("lock").items) {
        assert_eq!(item, bet_json(*id, *created).as_bytes());
    }
    let last = want.last().expect("items");
    assert_eq!(run.cursor.as_ref().expect("cursor")["value"], json!(last));
    for req in &state.lock().expect("lock").requests {
        assert_eq!(req.h("authorization"), Some(format!("Bearer {BEARER}")));
    }
}

#[tokio::test]
async fn a_caught_up_poll_asks_conditionally_and_a_304_is_an_empty_page_with_the_same_cursor() {
    let state = Arc::new(Mutex::new(Bets::default()));
    state.lock().expect("lock").insert(30);
    let base = serve(bets_api(state.clone())).await;
    let kind = kind(bets_options(&base, "/v1/bets", "oldest_first"));
    let creds = secrets(BEARER);
    let http = http();

    let first = drain(&kind, &creds, None, |_| {}).await.expect("drained");
    assert_eq!(first.items.len(), 30);
    let cursor = first.cursor.expect("cursor");
    assert!(cursor["etag"].is_string() && cursor["last_modified"].is_string());

    let page = fetch(&kind, &http, &creds, Some(&cursor))
        .await
        .expect("304 page");
    assert_eq!(
        page,
        Page {
            items: vec![],
            cursor: cursor.clone(),
            more: false
        }
    );
    let last = state
        .lock()
        .expect("lock")
        .requests
        .last()
        .cloned()
        .expect("req");
    assert_eq!(last.h("if-none-match").as_deref(), cursor["etag"].as_str());
    assert_eq!(
        last.h("if-modified-since").as_deref(),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );

    state.lock().expect("lock").insert(2);
    let next = drain(&kind, &creds, Some(cursor), |_| {})
        .await
        .expect("drained");
    assert_eq!(ids(&next.items), vec!["31", "32"]);
}

#[tokio::test]
async fn a_newest_first_after_id_api_is_reversed_and_its_cursor_is_the_newest_item() {
    let state = Arc::new(Mutex::new(Bets::default()));
    state.lock().expect("lock").insert(250);
    let base = serve(bets_api(state.clone())).await;
    let kind = kind(bets_options(&base, "/v1/bets_desc", "newest_first"));
    let creds = secrets(BEARER);

    let run = drain(&kind, &creds, None, |page| {
        state.lock().expect("lock").insert(page % 3);
    })
    .await
    .expect("drained");
    let want: Vec<String> = state
        .lock()
        .expect("lock")
        .items
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(
        ids(&run.items),
        want,
        "oldest first across and within pages"
    );
}
