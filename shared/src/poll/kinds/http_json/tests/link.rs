//! A Link-header API (query key): GET /api/events?page=N.

use super::*;

fn link_api(
    state: Arc<Mutex<Vec<u64>>>,
    base: Arc<Mutex<String>>,
    next_host: Option<String>,
) -> Handler {
    Arc::new(move |req: &Req| {
        let st = state.lock().expect("lock");
        if req.q("api_key").as_deref() != Some(QUERY_KEY) {
            return Resp::new(401, format!("{{\"error\":\"bad key in {}\"}}", req.target));
        }
        let page_no: usize = req.q("page").map_or(1, |p| p.parse().expect("page"));
        let per = 25;
        let items: Vec<String> = st
            .iter()
            .skip((page_no - 1) * per)
            .take(per)
            .map(|id| format!("{{\"id\":{id},\"kind\":\"deposit\"}}"))
            .collect();
        let body = format!("[{}]", items.join(","));
        // A body-only ETag, as most APIs compute it: it does not see the Link header.
        let etag = etag_of(&body);
        if req.h("if-none-match").as_deref() == Some(etag.as_str()) {
            return Resp::new(304, "");
        }
        let mut resp = Resp::new(200, body).header("ETag", etag);
        let pages = st.len().div_ceil(per);
        let host = next_host
            .clone()
            .unwrap_or_else(|| base.lock().expect("lock").clone());
        let key = pct(QUERY_KEY);
        let last = format!("<{host}/api/events?page={pages}&api_key={key}>; rel=\"last\"");
        if page_no < pages {
            // Alternate absolute and relative targets; the key echoed, as many APIs do.
            let next = if page_no.is_multiple_of(2) && next_host.is_none() {
                format!("</api/events?api_key={key}&page={}>", page_no + 1)
            } else {
                format!("<{host}/api/events?page={}&api_key={key}>", page_no + 1)
            };
            resp = resp.header("Link", format!("{last}, {next}; rel=\"next\""));
        } else {
            resp = resp.header("Link", last);
        }
        resp
    })
}

fn link_options(base: &str) -> Value {
    json!({
        "url": format!("{base}/api/events?page=1"),
        "auth": { "kind": "query", "name": "api_key" },
        "id_pointer": "/id",
        "cursor": { "kind": "link_next" },
    })
}

#[tokio::test]
async fn a_link_header_api_is_followed_on_its_own_origin_and_the_key_never_reaches_the_cursor() {
    let state = Arc::new(Mutex::new((0..300).collect::<Vec<u64>>()));
    let base_cell = Arc::new(Mutex::new(String::new()));
    let base = serve(link_api(state.clone(), base_cell.clone(), None)).await;
    *base_cell.lock().expect("lock") = base.clone();
    let kind = kind(link_options(&base));
    let creds = secrets(QUERY_KEY);
    let run = drain(&kind, &creds, None, |_| {
        let mut st = state.lock().expect("lock");
        let n = st.len() as u64;
        st.push(n);
    })
    .await
    .expect("drained");
    let want = |st: &Vec<u64>| st.iter().map(u64::to_string).collect::<Vec<_>>();
    assert_eq!(
        first_occurrences(&ids(&run.items)),
        want(&state.lock().expect("lock"))
    );
    let cursor = run.cursor.expect("cursor");
    assert_redacted(&cursor.to_string(), QUERY_KEY);
    let next = cursor["next"].as_str().expect("next url");
    assert!(next.starts_with(&base), "{next}");

    // The next run asks for the last page again and continues from it.
    state.lock().expect("lock").extend([900, 901, 902]);
    let again = drain(&kind, &creds, Some(cursor), |_| {})
        .await
        .expect("drained");
    let mut all = ids(&run.items);
    all.extend(ids(&again.items));
    assert_eq!(first_occurrences(&all), want(&state.lock().expect("lock")));
}

#[tokio::test]
async fn a_full_last_link_page_is_asked_again_unconditionally_so_a_new_page_is_not_hidden() {
    let state = Arc::new(Mutex::new((0..50).collect::<Vec<u64>>()));
    let base_cell = Arc::new(Mutex::new(String::new()));
    let base = serve(link_api(state.clone(), base_cell.clone(), None)).await;
    *base_cell.lock().expect("lock") = base.clone();
    let kind = kind(link_options(&base));
    let creds = secrets(QUERY_KEY);
    let http = http();

    // Two full pages: the last one's ETag would not change when item 50 starts page 3.
    let run = drain(&kind, &creds, None, |_| {}).await.expect("drained");
    let cursor = run.cursor.expect("cursor");
    assert!(cursor.get("etag").is_none(), "{cursor}");
    state.lock().expect("lock").push(50);
    let run = drain(&kind, &creds, Some(cursor), |_| {})
        .await
        .expect("drained");
    assert!(ids(&run.items).contains(&"50".to_string()));

    // Now the last page (page 3) is short: a 304 for it proves nothing is new.
    let cursor = run.cursor.expect("cursor");
    assert!(cursor["etag"].is_string(), "{cursor}");
    let page = fetch(&kind, &http, &creds, Some(&cursor))
        .await
        .expect("304");
    assert_eq!(
        (page.items.len(), page.more, &page.cursor),
        (0, false, &cursor)
    );
}

#[tokio::test]
async fn a_link_to_another_host_or_port_is_refused_before_any_request_goes_there() {
    let state = Arc::new(Mutex::new((0..60).collect::<Vec<u64>>()));
    // The "other host": a listener that records whether anything reached it.
    let hits = Arc::new(Mutex::new(0_u32));
    let hits2 = hits.clone();
    let elsewhere = serve(Arc::new(move |_: &Req| {
        *hits2.lock().expect("lock") += 1;
        Resp::new(200, "[]")
    }))
    .await;
    let port = elsewhere.rsplit(':').next().expect("port").to_string();
    for target in [
        elsewhere.clone(),
        format!("http://localhost:{port}"),
        "https://evil.example".to_string(),
    ] {
        let base_cell = Arc::new(Mutex::new(String::new()));
        let base = serve(link_api(
            state.clone(),
            base_cell.clone(),
            Some(target.clone()),
        ))
        .await;
        *base_cell.lock().expect("lock") = base.clone();
        let kind = kind(link_options(&base));
        let err = drain(&kind, &secrets(QUERY_KEY), None, |_| {})
            .await
            .expect_err("refused");
        let m = message(&err);
        assert!(
            matches!(err, FetchError::Fatal(_)) && m.contains("refusing"),
            "{target}: {m}"
        );
        assert_redacted(&m, QUERY_KEY);
    }
    assert_eq!(*hits.lock().expect("lock"), 0);

    // Userinfo and backslash tricks never pass as the same origin.
    let kind = kind(link_options("http://127.0.0.1:8080"));
    for evil in [
        "http://127.0.0.1:8080@evil.example/x",
        "http://evil.example\\@127.0.0.1:8080/x",
        "/\\evil.example/x",
        "//evil.example/x",
        "javascript:alert(1)",
    ] {
        let ok = resolve("http://127.0.0.1:8080/a/b?page=1", evil)
            .and_then(|u| parse_url(&u).map(|u| u.origin() == kind.origin));
        assert!(!matches!(ok, Ok(true)), "{evil} accepted");
    }
    assert_eq!(
        resolve("http://h:1/a/b?x=1", "c?page=2").as_deref(),
        Ok("http://h:1/a/c?page=2")
    );
    assert_eq!(
        resolve("http://h:1/a/b?x=1", "?page=2").as_deref(),
        Ok("http://h:1/a/b?page=2")
    );
}
