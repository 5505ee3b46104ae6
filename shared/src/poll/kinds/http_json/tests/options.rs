//! Configuration.

use super::*;

#[test]
fn options_are_validated_at_config_time_and_errors_name_the_field() {
    let base = json!({
        "url": "https://api.example.com/v1/bets?after={cursor}",
        "auth": { "kind": "bearer" },
        "items_pointer": "/data",
        "cursor": { "kind": "item_field", "pointer": "/id" },
    });
    assert!(HttpJson::from_options(&base).is_ok());
    let with = |k: &str, v: Value| {
        let mut o = base.clone();
        o[k] = v;
        HttpJson::from_options(&o)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let cases: Vec<(String, &str)> = vec![
        (with("page_size", json!(100)), "page_size"),
        (with("max_pages_per_run", json!(5)), "max_pages_per_run"),
        (
            with(
                "url",
                json!("https://api.example.com/v1?x={cursor}&y={page}"),
            ),
            "{page}",
        ),
        (
            with("url", json!("https://{cursor}.example.com/v1")),
            "url: placeholders",
        ),
        (
            with("url", json!("https://api.example.com:{cursor}/v1")),
            "url: placeholders",
        ),
        (
            with(
                "url",
                json!("https://api.example.com/caf\u{e9}?after={cursor}"),
            ),
            "url: the byte",
        ),
        (
            with("url", json!("https://api.example.com\\v1?after={cursor}")),
            "url: the byte",
        ),
        (with("url", json!("ftp://api.example.com/{cursor}")), "url:"),
        (
            with("url", json!("https://user:pw@api.example.com/{cursor}")),
            "url:",
        ),
        (with("url", json!("https://api.example.com/v1")), "{cursor}"),
        (
            with(
                "url",
                json!("https://api.example.com/v1?since={since}&c={cursor}"),
            ),
            "url:",
        ),
        (with("url", json!(42)), "url:"),
        (
            with("auth", json!({"kind": "bearer", "name": "x"})),
            "auth:",
        ),
        (with("auth", json!({"kind": "header"})), "auth:"),
        (
            with("auth", json!({"kind": "header", "name": "X Key"})),
            "auth.name",
        ),
        (with("auth", json!({"kind": "digest"})), "auth:"),
        (with("items_pointer", json!("data")), "items_pointer"),
        (with("order", json!("random")), "order:"),
        (with("time_unit", json!("seconds")), "time_unit"),
        (with("time_pointer", json!("/ts")), "time_unit"),
        (
            with("cursor", json!({"kind": "item_field"})),
            "cursor.pointer",
        ),
        (with("cursor", json!({"kind": "since"})), "time_pointer"),
        (
            with("cursor", json!({"kind": "link_next", "pointer": "/x"})),
            "cursor:",
        ),
    ];
    for (err, needle) in cases {
        assert!(err.contains(needle), "{err:?} should name {needle:?}");
    }

    let since = json!({
        "url": "https://api.example.com/v1?since={since}",
        "auth": { "kind": "none" },
        "time_pointer": "/ts",
        "time_unit": "seconds",
        "cursor": { "kind": "since", "lookback_seconds": 0 },
    });
    let e = HttpJson::from_options(&since)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("cursor.lookback_seconds"), "{e}");
    let mut no_time = since.clone();
    no_time["cursor"] = json!({"kind": "since"});
    no_time.as_object_mut().map(|o| o.remove("time_pointer"));
    no_time.as_object_mut().map(|o| o.remove("time_unit"));
    let e = HttpJson::from_options(&no_time)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("time_pointer"), "{e}");

    let link = json!({
        "url": "https://api.example.com/v1/events",
        "auth": { "kind": "none" },
        "cursor": { "kind": "link_next" },
        "order": "newest_first",
    });
    let e = HttpJson::from_options(&link)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("order:"), "{e}");

    assert_eq!(
        crate::poll::kinds::build("http_json", &base).map(|k| k.name()),
        Ok(NAME)
    );
}

#[test]
fn template_placeholders_are_encoded_and_times_parse() {
    let k = kind(json!({
        "url": "https://api.example.com/v1?since={since}&at={since_rfc3339}",
        "auth": { "kind": "none" },
        "time_pointer": "/ts",
        "time_unit": "seconds",
        "cursor": { "kind": "since" },
    }));
    assert_eq!(
        k.fill("", 1_700_000_000),
        "https://api.example.com/v1?since=1700000000&at=2023-11-14T22%3A13%3A20Z"
    );
    assert_eq!(pct("a b/c+d=é"), "a%20b%2Fc%2Bd%3D%C3%A9");
    assert_eq!(
        parse_rfc3339_ms("2023-11-14T22:13:20Z"),
        Some(1_700_000_000_000)
    );
    assert_eq!(
        parse_rfc3339_ms("2023-11-15T00:13:20.25+02:00"),
        Some(1_700_000_000_250)
    );
    assert_eq!(parse_rfc3339_ms("2023-11-14"), None);
    assert_eq!(
        strip_param("http://h/x?page=2&api_key=k%20y&b=1", "api_key"),
        "http://h/x?page=2&b=1"
    );
}
