//! Statuses, malformed bodies, the credential in errors.

use super::after_id::{bets_api, bets_options, Bets, BEARER};
use super::*;

fn echo_api() -> Handler {
    Arc::new(|req: &Req| {
        // Every error body echoes the request, credential included, as careless APIs do.
        let echo = format!(
            "{} key={}",
            req.target,
            req.q("api_key").unwrap_or_default()
        );
        match req.path.as_str() {
            "/429" => Resp::new(429, format!("{{\"error\":\"slow down {echo}\"}}"))
                .header("Retry-After", "7"),
            "/500" => Resp::new(500, format!("{{\"error\":\"boom {echo}\"}}")),
            "/401" => Resp::new(401, format!("{{\"error\":\"bad key {echo}\"}}")),
            "/403" => Resp::new(403, format!("{{\"error\":\"{echo}\"}}")),
            "/404" => Resp::new(404, format!("{{\"error\":\"{echo}\"}}")),
            "/409" => Resp::new(409, format!("{{\"error\":\"{echo}\"}}")),
            "/302" => Resp::new(302, "").header("Location", "http://evil.example/"),
            "/notjson" => Resp::new(200, format!("<html>{echo}</html>")),
            "/notarray" => Resp::new(200, "{\"data\":{\"id\":1}}"),
            "/noid" => Resp::new(200, "{\"data\":[{\"id\":1},{\"name\":\"x\"}]}"),
            "/badtime" => Resp::new(200, "{\"data\":[{\"id\":1,\"t\":\"yesterday\"}]}"),
            "/missing" => Resp::new(200, "{\"items\":[]}"),
            "/badtoken" => Resp::new(200, "{\"data\":[],\"next\":{\"a\":1}}"),
            _ => Resp::new(200, "{\"data\":[]}"),
        }
    })
}

fn echo_kind(base: &str, path: &str, extra: Value) -> HttpJson {
    let mut options = json!({
        "url": format!("{base}{path}?after={{cursor}}"),
        "auth": { "kind": "query", "name": "api_key" },
        "items_pointer": "/data",
        "id_pointer": "/id",
        "cursor": { "kind": "item_field" },
    });
    if let (Some(o), Value::Object(e)) = (options.as_object_mut(), extra) {
        o.extend(e);
    }
    kind(options)
}

#[tokio::test]
async fn statuses_map_to_the_runner_s_errors_and_never_carry_the_credential() {
    let base = serve(echo_api()).await;
    let http = http();
    let creds = secrets(QUERY_KEY);
    let go = |path: &'static str| {
        let kind = echo_kind(&base, path, json!({}));
        let http = &http;
        let creds = &creds;
        async move { fetch(&kind, http, creds, None).await.expect_err("an error") }
    };

    let e = go("/429").await;
    assert!(
        matches!(&e, FetchError::Throttled { retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
        "{e:?}"
    );
    assert_redacted(&message(&e), QUERY_KEY);
    assert!(message(&e).contains("<redacted>"));

    let e = go("/500").await;
    assert!(matches!(&e, FetchError::Transient(_)), "{e:?}");
    assert_redacted(&message(&e), QUERY_KEY);

    for (path, status) in [
        ("/401", "401"),
        ("/403", "403"),
        ("/404", "404"),
        ("/409", "409"),
        ("/302", "302"),
    ] {
        let e = go(path).await;
        assert!(
            matches!(&e, FetchError::Fatal(m) if m.contains(status)),
            "{path}: {e:?}"
        );
        assert_redacted(&message(&e), QUERY_KEY);
    }

    for path in ["/notjson", "/notarray", "/noid", "/missing"] {
        let e = go(path).await;
        assert!(matches!(&e, FetchError::Fatal(_)), "{path}: {e:?}");
        assert_redacted(&message(&e), QUERY_KEY);
    }
    let e = fetch(
        &echo_kind(
            &base,
            "/badtime",
            json!({"time_pointer": "/t", "time_unit": "rfc3339"}),
        ),
        &http,
        &creds,
        None,
    )
    .await
    .expect_err("bad time");
    assert!(
        matches!(&e, FetchError::Fatal(m) if m.contains("time_pointer")),
        "{e:?}"
    );

    // A network error names the URL, which carries the query credential.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let e = fetch(&echo_kind(&url, "/x", json!({})), &http, &creds, None)
        .await
        .expect_err("network");
    assert!(matches!(&e, FetchError::Transient(_)), "{e:?}");
    assert_redacted(&message(&e), QUERY_KEY);

    // Bearer and basic credentials echoed in a body are scrubbed too.
    let state = Arc::new(Mutex::new(Bets::default()));
    let bets = serve(bets_api(state)).await;
    let kind = kind(bets_options(&bets, "/v1/bets", "oldest_first"));
    let wrong = format!("{BEARER}-old");
    let e = fetch(&kind, &http, &secrets(&wrong), None)
        .await
        .expect_err("401");
    assert!(
        matches!(&e, FetchError::Fatal(m) if m.contains("401")),
        "{e:?}"
    );
    assert_redacted(&message(&e), &wrong);
}

#[tokio::test]
async fn items_are_byte_exact_and_an_id_repeated_within_a_page_comes_once() {
    let body = "{\"data\":[ {\"id\":1,\"note\":\"caf\\u00e9\"} ,{ \"id\" : \"2\" , \"x\" : [1,2] },\n{\"id\":1,\"again\":true}, {\"id\":3} ],\"next\":null}";
    let base = serve(Arc::new(move |_: &Req| Resp::new(200, body))).await;
    let kind = kind(json!({
        "url": format!("{base}/feed?t={{cursor}}"),
        "auth": { "kind": "none" },
        "items_pointer": "/data",
        "id_pointer": "/id",
        "cursor": { "kind": "response_token", "pointer": "/next" },
    }));
    let page = fetch(&kind, &http(), &[], None).await.expect("page");
    let items: Vec<&str> = page
        .items
        .iter()
        .map(|i| std::str::from_utf8(i).expect("utf8"))
        .collect();
    assert_eq!(
        items,
        vec![
            "{\"id\":1,\"note\":\"caf\\u00e9\"}",
            "{ \"id\" : \"2\" , \"x\" : [1,2] }",
            "{\"id\":3}"
        ]
    );
    assert!(!page.more, "a null token is the end");
}
