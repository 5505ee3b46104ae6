use super::*;
use crate::envelope;
use crate::ordering::Ordering;
use crate::retry::RetryPolicy;
use std::path::PathBuf;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

const BASE: &str = r#"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["env:GH_SECRET"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
    "#;

fn check(text: &str, env: &dyn SecretEnv) -> Result<Config, ConfigError> {
    validate(
        ConfigDoc::parse(text, Some("toml"))?,
        PathBuf::from("."),
        env,
    )
}

fn field_of(r: Result<Config, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid(problems)) if !problems.is_empty() => problems[0].field.clone(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn env_secret_resolves_and_defaults_apply() {
    let cfg = check(BASE, &env_of(&[("GH_SECRET", "s3cret")])).expect("valid");
    let src = cfg.source("gh").expect("source");
    assert_eq!(src.provider.name(), "github");
    assert_eq!(src.dedupe_window_ms, 7 * 86_400_000);
    assert_eq!(cfg.targets_for("gh", &["push"]), vec!["bus".to_string()]);
}

fn with_ordering(lines: &str) -> String {
    BASE.replacen(
        "secrets = [\"env:GH_SECRET\"]",
        &format!("secrets = [\"env:GH_SECRET\"]\n{lines}"),
        1,
    )
}

#[test]
fn order_by_and_version_are_json_pointers_and_make_the_queue_fifo() {
    let env = env_of(&[("GH_SECRET", "s")]);
    let plain = check(BASE, &env).expect("valid");
    assert!(!plain.needs_fifo());
    let cfg = check(
        &with_ordering("order_by = \"/data/wallet\"\nversion = \"/data/version\""),
        &env,
    )
    .expect("valid");
    assert!(cfg.needs_fifo());
    assert_eq!(
        cfg.ordering("gh"),
        Some(&Ordering {
            order_by: "/data/wallet".into(),
            version: Some("/data/version".into()),
        })
    );
    assert_eq!(
        field_of(check(&with_ordering("order_by = \"data.wallet\""), &env)),
        "sources[0].order_by"
    );
    assert_eq!(
        field_of(check(
            &with_ordering("order_by = \"/w\"\nversion = \"/v~2\""),
            &env
        )),
        "sources[0].version"
    );
    // A version alone cannot say whose version it is.
    assert_eq!(
        field_of(check(&with_ordering("version = \"/v\""), &env)),
        "sources[0].version"
    );
}

#[test]
fn routes_match_the_provider_type_or_the_canonical_type() {
    let text = format!(
        "{BASE}\n[[targets]]\nid = \"payments\"\nkind = \"jsonl\"\npath = \"p.jsonl\"\n\
             [[routes]]\nsources = [\"*\"]\ntypes = [\"payment.*\"]\ntargets = [\"payments\"]\n"
    );
    let cfg = check(&text, &env_of(&[("GH_SECRET", "s")])).expect("valid");
    let both = vec!["bus".to_string(), "payments".to_string()];
    assert_eq!(
        cfg.targets_for("gh", &["payment_intent.succeeded", "payment.succeeded"]),
        both
    );
    assert_eq!(
        cfg.targets_for("gh", &["payment_intent.succeeded"]),
        vec!["bus".to_string()]
    );
    assert_eq!(cfg.targets_for("gh", &[]), vec!["bus".to_string()]);
}

#[test]
fn a_poll_only_source_needs_no_webhook_secret_and_takes_no_webhooks() {
    let text = r#"
            [[sources]]
            id = "stripe-poll"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            secrets = ["env:STRIPE_KEY"]
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
        "#;
    let cfg = check(text, &env_of(&[("STRIPE_KEY", "rk_test_x")])).expect("valid");
    let src = cfg.source("stripe-poll").expect("source");
    assert!(!src.webhooks);
    assert!(src.poll.is_some());
    // Without a poll table it would take nothing at all.
    let no_poll = text.replace("[sources.poll]", "[sources.pollx]");
    assert!(check(&no_poll, &env_of(&[])).is_err());
    let cut = text.split("[sources.poll]").collect::<Vec<_>>();
    let without = format!(
        "{}[[targets]]{}",
        cut[0],
        cut[1].split("[[targets]]").nth(1).unwrap_or_default()
    );
    assert_eq!(
        field_of(check(&without, &env_of(&[]))),
        "sources[0].webhooks"
    );
    // A webhook secret on a poll-only source is a mistake worth naming.
    let with_secret = text.replace(
        "webhooks = false",
        "webhooks = false\nsecrets = [\"env:X\"]",
    );
    assert_eq!(
        field_of(check(
            &with_secret,
            &env_of(&[("STRIPE_KEY", "k"), ("X", "y")])
        )),
        "sources[0].secrets"
    );
}

#[test]
fn a_poll_only_generic_source_needs_no_signature_options() {
    let text = r#"
            [[sources]]
            id = "kyc"
            provider = "generic"
            webhooks = false
            options = { event_id = { json_pointer = "/id" } }
            [sources.poll]
            kind = "http_json"
            every = "2m"
            secrets = ["env:KEY"]
            options = { url = "https://kyc.example.com/v1/checks?after={cursor}", auth = { kind = "bearer" }, items_pointer = "/checks", id_pointer = "/id", cursor = { kind = "item_field" } }
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
        "#;
    assert!(check(text, &env_of(&[("KEY", "k")])).is_ok());
    // Nor any options at all (the dedupe key then falls back to the body hash).
    let bare = text.replace("options = { event_id = { json_pointer = \"/id\" } }\n", "");
    assert_ne!(bare, text);
    assert!(check(&bare, &env_of(&[("KEY", "k")])).is_ok());
    // Taking webhooks, the same source must say where its signature is.
    let webhooks = text.replace("webhooks = false", "secrets = [\"env:KEY\"]");
    assert_eq!(
        field_of(check(&webhooks, &env_of(&[("KEY", "k")]))),
        "sources[0] (generic)"
    );
}

#[test]
fn a_source_may_hold_its_events_longer_but_never_past_the_visibility() {
    let text = BASE.replace(
        "secrets = [\"env:GH_SECRET\"]",
        "secrets = [\"env:GH_SECRET\"]\nlease_seconds = 170",
    );
    let cfg = check(&text, &env_of(&[("GH_SECRET", "s")])).expect("valid");
    assert_eq!(cfg.lease_ms_for("gh"), 170_000);
    assert_eq!(cfg.lease_ms_for("other"), cfg.lease_ms());
    let plain = check(BASE, &env_of(&[("GH_SECRET", "s")])).expect("valid");
    assert_eq!(plain.lease_ms_for("gh"), plain.lease_ms());
    for bad in ["0", "181"] {
        let text = BASE.replace(
            "secrets = [\"env:GH_SECRET\"]",
            &format!("secrets = [\"env:GH_SECRET\"]\nlease_seconds = {bad}"),
        );
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "s")]))),
            "sources[0].lease_seconds"
        );
    }
}

/// Every place a secret is resolved must be listed by `secret_references`, else a Lambda
/// would not read that reference from the store and its start would fail.
#[tokio::test]
async fn remote_references_are_all_listed_and_resolve_from_the_store() {
    use crate::remote_secrets::{fetch_all, tests::MemoryStore};
    let text = r#"
            [[sources]]
            id = "gh"
            provider = "github"
            secrets = [{ id = "2026", value = "secretsmanager:inlet/keys#github" }, "ssm:/inlet/gh-old"]
            [[sources]]
            id = "stripe"
            provider = "stripe"
            secrets = ["secretsmanager:inlet/keys#stripe"]
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            secrets = ["ssm:/inlet/stripe-api"]
            [[targets]]
            id = "hook"
            kind = "http"
            url = "https://hooks.example.com/in"
            secret = "ssm:/inlet/target"
            [[routes]]
            sources = ["*"]
            targets = ["hook"]
        "#;
    let doc = ConfigDoc::parse(text, Some("toml")).unwrap();
    assert_eq!(
        doc.secret_references(),
        [
            "secretsmanager:inlet/keys#github",
            "ssm:/inlet/gh-old",
            "secretsmanager:inlet/keys#stripe",
            "ssm:/inlet/stripe-api",
            "ssm:/inlet/target",
        ]
    );
    let store = MemoryStore::default();
    store.set_secret(
        "inlet/keys",
        r#"{"github":"gh-new","stripe":"whsec_dGVzdHNlY3JldA=="}"#,
    );
    store.set_parameter("/inlet/gh-old", "gh-old");
    store.set_parameter("/inlet/stripe-api", "rk_test_1");
    store.set_parameter(
        "/inlet/target",
        "whsec_dGFyZ2V0LXNpZ25pbmcta2V5LTI0Ynl0ZXM=",
    );
    let values = fetch_all(&store, doc.secret_references()).await.unwrap();
    let no_env = |_: &str| None;
    let env = WithRemote {
        env: &no_env,
        values: &values,
    };
    let config = validate(doc.clone(), PathBuf::from("."), &env).unwrap();
    assert_eq!(config.sources.len(), 2);

    // Without the store the field is named and the way out given.
    let err = validate(doc, PathBuf::from("."), &no_env).unwrap_err();
    assert_eq!(field_of(Err(err)), "sources[0].secrets[0].value");
}

#[test]
fn an_ssm_config_needs_the_store() {
    let env = env_of(&[("INLET_CONFIG", "ssm:/inlet/config")]);
    assert!(matches!(
        doc_source_from_env(&env),
        Ok(DocSource::Parameter(name)) if name == "/inlet/config"
    ));
    let err = load_from_env(&env).unwrap_err();
    assert!(err.to_string().contains("ssm:/inlet/config"), "{err}");
}

#[test]
fn poll_schedules_are_rates_scheduler_accepts() {
    let text = r#"
            [[sources]]
            id = "tg"
            provider = "telegram"
            webhooks = false
            [sources.poll]
            kind = "telegram_updates"
            every = "20s"
            secrets = ["env:TG"]
            [[sources]]
            id = "stripe"
            provider = "stripe"
            secrets = ["env:WH"]
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            [[sources]]
            id = "daily"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "1day"
            [[sources]]
            id = "odd"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "90s"
            [[sources]]
            id = "gh"
            provider = "github"
            secrets = ["env:WH"]
        "#;
    let doc = ConfigDoc::parse(text, Some("toml")).expect("parses");
    assert_eq!(
        doc.poll_schedules().expect("schedules"),
        vec![
            ("tg".to_owned(), "rate(1 minute)".to_owned()),
            ("stripe".to_owned(), "rate(10 minutes)".to_owned()),
            ("daily".to_owned(), "rate(1 day)".to_owned()),
            ("odd".to_owned(), "rate(2 minutes)".to_owned()),
        ]
    );
    let bad = text.replace("every = \"10m\"", "every = \"soon\"");
    assert!(ConfigDoc::parse(&bad, Some("toml"))
        .expect("parses")
        .poll_schedules()
        .is_err());
}

#[test]
fn missing_env_secret_names_the_field() {
    assert_eq!(field_of(check(BASE, &env_of(&[]))), "sources[0].secrets[0]");
}

#[test]
fn literal_secret_is_refused_outside_local_configs() {
    let text = BASE.replace("env:GH_SECRET", "literal:abc");
    assert_eq!(
        field_of(check(&text, &env_of(&[]))),
        "sources[0].secrets[0]"
    );
    let local = format!("[settings]\nenvironment = \"local\"\n{text}");
    assert!(check(&local, &env_of(&[])).is_ok());
}

#[test]
fn unknown_field_is_a_parse_error_naming_it() {
    let text = BASE.replace(
        "provider = \"github\"",
        "provider = \"github\"\nsecretz = []",
    );
    match check(&text, &env_of(&[("GH_SECRET", "x")])) {
        Err(ConfigError::Parse { message, .. }) => {
            assert!(message.contains("secretz"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn misspelt_target_field_is_refused() {
    let text = BASE.replace(
        "kind = \"eventbridge\"",
        "kind = \"eventbridge\"\nbus_nam = \"x\"",
    );
    assert!(matches!(
        check(&text, &env_of(&[("GH_SECRET", "x")])),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn route_to_a_missing_target_names_the_field() {
    let text = BASE.replace("targets = [\"bus\"]", "targets = [\"nope\"]");
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "routes[0].targets[0]"
    );
}

#[test]
fn a_source_without_a_catch_all_route_is_refused() {
    let text = BASE.replace(
        "targets = [\"bus\"]",
        "types = [\"push\"]\ntargets = [\"bus\"]",
    );
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "sources[0]"
    );
}

const RETRYING: &str = r#"
        [settings]
        max_receive_count = 10
        retry_base = "2s"
        retry_cap = "1m"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["env:GH_SECRET"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[targets]]
        id = "hook"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
        [[routes]]
        sources = ["gh"]
        types = ["push"]
        targets = ["hook"]
        retry = { attempts = 8, base = "5s" }
        [[routes]]
        sources = ["*"]
        types = ["pu*"]
        targets = ["bus"]
        retry = { attempts = 3, cap = "10m" }
    "#;

#[test]
fn retry_policy_defaults_come_from_the_settings() {
    let cfg = check(BASE, &env_of(&[("GH_SECRET", "x")])).expect("valid");
    let defaults = RetryPolicy {
        attempts: 5,
        base: std::time::Duration::from_secs(1),
        cap: std::time::Duration::from_secs(300),
    };
    assert_eq!(cfg.default_retry, defaults, "attempts = max_receive_count");
    assert_eq!(cfg.retry_policy("gh", &["push"]), defaults);
    assert_eq!(cfg.retry_after_max, std::time::Duration::from_secs(3600));
}

#[test]
fn matching_routes_with_retry_tables_merge_to_the_most_patient() {
    let cfg = check(RETRYING, &env_of(&[("GH_SECRET", "x")])).expect("valid");
    let s = std::time::Duration::from_secs;
    // Only the catch-all matches (it has no retry table): the settings' policy.
    assert_eq!(
        cfg.retry_policy("gh", &["issues"]),
        RetryPolicy {
            attempts: 10,
            base: s(2),
            cap: s(60)
        }
    );
    // Both retry routes match: the largest attempts, base and cap, each filled from the
    // settings where the route left it out (8/5s/1m and 3/2s/10m).
    assert_eq!(
        cfg.retry_policy("gh", &["push"]),
        RetryPolicy {
            attempts: 8,
            base: s(5),
            cap: s(600)
        }
    );
    // Only the second one.
    assert_eq!(
        cfg.retry_policy("gh", &["pull_request"]),
        RetryPolicy {
            attempts: 3,
            base: s(2),
            cap: s(600)
        }
    );
}

#[test]
fn the_request_bounds_have_defaults_and_name_their_fields() {
    let env = env_of(&[("GH_SECRET", "x")]);
    let cfg = check(BASE, &env).expect("valid");
    assert_eq!(cfg.settings.max_events_per_request, 5_000);
    assert_eq!(cfg.ingest_deadline, std::time::Duration::from_secs(6));
    let with = |settings: &str| check(&format!("[settings]\n{settings}\n{BASE}"), &env);
    let cfg = with("max_events_per_request = 20\ningest_deadline = \"1500ms\"").expect("valid");
    assert_eq!(cfg.settings.max_events_per_request, 20);
    assert_eq!(cfg.ingest_deadline, std::time::Duration::from_millis(1500));
    for (settings, field) in [
        (
            "max_events_per_request = 0",
            "settings.max_events_per_request",
        ),
        (
            "max_events_per_request = 100001",
            "settings.max_events_per_request",
        ),
        ("ingest_deadline = \"50ms\"", "settings.ingest_deadline"),
        ("ingest_deadline = \"30s\"", "settings.ingest_deadline"),
        ("ingest_deadline = \"soon\"", "settings.ingest_deadline"),
    ] {
        assert_eq!(field_of(with(settings)), field, "{settings}");
    }
}

#[test]
fn bad_retry_policies_name_their_fields() {
    let env = env_of(&[("GH_SECRET", "x")]);
    let with = |from: &str, to: &str| field_of(check(&RETRYING.replacen(from, to, 1), &env));
    assert_eq!(
        with("attempts = 8", "attempts = 11"),
        "routes[1].retry.attempts",
        "more than max_receive_count"
    );
    assert_eq!(
        with("attempts = 8", "attempts = 0"),
        "routes[1].retry.attempts"
    );
    assert_eq!(
        with("base = \"5s\"", "base = \"2m\""),
        "routes[1].retry.base",
        "base > cap"
    );
    assert_eq!(
        with("cap = \"10m\"", "cap = \"13h\""),
        "routes[2].retry.cap"
    );
    assert_eq!(
        with("cap = \"10m\"", "cap = \"soon\""),
        "routes[2].retry.cap"
    );
    assert_eq!(
        with("base = \"5s\"", "base = \"500ms\""),
        "routes[1].retry.base"
    );
    assert_eq!(
        with("retry_cap = \"1m\"", "retry_cap = \"1s\""),
        "settings.retry_base"
    );
    assert_eq!(
        with(
            "retry_base = \"2s\"",
            "retry_base = \"2s\"\nretry_attempts = 11"
        ),
        "settings.retry_attempts"
    );
    assert_eq!(
        with(
            "retry_base = \"2s\"",
            "retry_base = \"2s\"\nretry_after_max = \"1d\""
        ),
        "settings.retry_after_max"
    );
    assert!(matches!(
        check(
            &RETRYING.replacen("attempts = 8", "attempts = 8, tries = 2", 1),
            &env
        ),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn lease_longer_than_visibility_is_refused() {
    let text = format!("[settings]\nlease_seconds = 300\nvisibility_timeout_seconds = 100\n{BASE}");
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "settings.lease_seconds"
    );
}

#[test]
fn server_limits_have_defaults_and_bad_ones_name_their_fields() {
    let env = env_of(&[("GH_SECRET", "x")]);
    let s = std::time::Duration::from_secs;
    let cfg = check(BASE, &env).expect("valid");
    assert_eq!(
        cfg.server,
        ServerLimits {
            header_timeout: s(10),
            body_timeout: s(30),
            idle_timeout: s(60),
            max_connections: 512,
            max_connections_per_ip: 128,
        }
    );
    let with = |settings: &str| check(&format!("[settings]\n{settings}\n{BASE}"), &env);
    let cfg = with("header_timeout = \"1s\"\nbody_timeout = \"1500ms\"\nidle_timeout = \"2s\"\nmax_connections = 8\nmax_connections_per_ip = 8")
            .expect("valid");
    assert_eq!(
        cfg.server.body_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(cfg.server.max_connections_per_ip, 8);
    for (settings, field) in [
        ("header_timeout = \"0s\"", "settings.header_timeout"),
        ("header_timeout = \"soon\"", "settings.header_timeout"),
        ("body_timeout = \"2h\"", "settings.body_timeout"),
        ("idle_timeout = \"0ms\"", "settings.idle_timeout"),
        ("max_connections = 0", "settings.max_connections"),
        (
            "max_connections_per_ip = 0",
            "settings.max_connections_per_ip",
        ),
        (
            "max_connections = 10\nmax_connections_per_ip = 11",
            "settings.max_connections_per_ip",
        ),
    ] {
        assert_eq!(field_of(with(settings)), field, "{settings}");
    }
}

#[test]
fn trail_retention_defaults_to_30_days_and_must_be_1_to_3650() {
    let env = env_of(&[("GH_SECRET", "x")]);
    let cfg = check(BASE, &env).expect("valid");
    assert_eq!(cfg.settings.trail_retention_days, 30);
    assert_eq!(
        cfg.settings.trail_expires_at(1_000),
        1_000 + 30 * 86_400_000
    );
    for days in [1, 3650] {
        let text = format!("[settings]\ntrail_retention_days = {days}\n{BASE}");
        let cfg = check(&text, &env).expect("in range");
        assert_eq!(
            cfg.settings.trail_expires_at(0),
            i64::from(days) * 86_400_000
        );
    }
    for days in [0, 3651] {
        let text = format!("[settings]\ntrail_retention_days = {days}\n{BASE}");
        assert_eq!(
            field_of(check(&text, &env)),
            "settings.trail_retention_days",
            "{days}"
        );
    }
}

#[test]
fn bad_cidr_and_unknown_provider_name_their_fields() {
    let text = BASE.replace("secrets =", "allow_cidrs = [\"10.0.0.0/33\"]\nsecrets =");
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "sources[0].allow_cidrs[0]"
    );
    let text = BASE.replace("\"github\"", "\"gitbub\"");
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "sources[0].provider"
    );
}

#[test]
fn deployment_env_overrides_queue_settings() {
    let env = env_of(&[
        ("INLET_CONFIG", BASE),
        ("GH_SECRET", "x"),
        ("INLET_MAX_RECEIVE_COUNT", "9"),
        ("INLET_LEASE_SECONDS", "40"),
        ("INLET_VISIBILITY_TIMEOUT_SECONDS", "200"),
    ]);
    let cfg = load_from_env(&env).expect("valid");
    assert_eq!(
        (
            cfg.settings.max_receive_count,
            cfg.settings.lease_seconds,
            cfg.settings.visibility_timeout_seconds
        ),
        (9, 40, 200)
    );
    let bad = env_of(&[
        ("INLET_CONFIG", BASE),
        ("GH_SECRET", "x"),
        ("INLET_LEASE_SECONDS", "soon"),
    ]);
    assert_eq!(field_of(load_from_env(&bad)), "INLET_LEASE_SECONDS");
}

const CHECKED: &str = r#"
        [settings]
        environment = "local"
        [[sources]]
        id = "stripe"
        provider = "stripe"
        secrets = ["literal:whsec_x"]
        [sources.poll]
        kind = "stripe_events"
        every = "10m"
        secrets = ["literal:rk_x"]
        [[sources.checks]]
        name = "payment-settles"
        on = ["payment_intent.created"]
        expect = ["payment.succeeded", "payment.failed"]
        after = "15m"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["literal:s"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
    "#;

#[test]
fn a_check_defaults_to_polling_its_own_source() {
    let cfg = check(CHECKED, &env_of(&[])).expect("valid");
    let checks = &cfg.source("stripe").expect("source").checks;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].poll, "stripe");
    assert_eq!(checks[0].after, std::time::Duration::from_secs(900));
    assert!(cfg.source("gh").expect("source").checks.is_empty());
}

#[test]
fn bad_checks_name_their_fields() {
    let with = |from: &str, to: &str| {
        let text = CHECKED.replacen(from, to, 1);
        field_of(check(&text, &env_of(&[])))
    };
    assert_eq!(
        with("after = \"15m\"", "after = \"15m\"\npoll = \"nope\""),
        "sources[0].checks[0].poll"
    );
    // A source that is not polled has nothing to run when the check is due.
    assert_eq!(
        with("after = \"15m\"", "after = \"15m\"\npoll = \"gh\""),
        "sources[0].checks[0].poll"
    );
    assert_eq!(
        with("on = [\"payment_intent.created\"]", "on = []"),
        "sources[0].checks[0].on"
    );
    assert_eq!(
        with(
            "expect = [\"payment.succeeded\", \"payment.failed\"]",
            "expect = []"
        ),
        "sources[0].checks[0].expect"
    );
    assert_eq!(
        with("after = \"15m\"", "after = \"30s\""),
        "sources[0].checks[0].after"
    );
    assert_eq!(
        with("after = \"15m\"", "after = \"8days\""),
        "sources[0].checks[0].after"
    );
    assert_eq!(
        with("after = \"15m\"", "after = \"soon\""),
        "sources[0].checks[0].after"
    );
    assert_eq!(
        with("name = \"payment-settles\"", "name = \"Bad Name\""),
        "sources[0].checks[0].name"
    );
    let twice = CHECKED.replace(
            "[[sources]]\n        id = \"gh\"",
            "[[sources.checks]]\n        name = \"payment-settles\"\n        on = [\"a\"]\n        expect = [\"b\"]\n        after = \"1m\"\n        [[sources]]\n        id = \"gh\"",
        );
    assert_eq!(
        field_of(check(&twice, &env_of(&[]))),
        "sources[0].checks[1].name"
    );
}

#[test]
fn ip_allow_list_fails_closed_without_an_address() {
    let text = BASE.replace(
        "secrets =",
        "allow_cidrs = [\"10.0.0.0/8\", \"192.0.2.7\"]\nsecrets =",
    );
    let cfg = check(&text, &env_of(&[("GH_SECRET", "x")])).expect("valid");
    let src = cfg.source("gh").expect("source");
    assert!(src.ip_allowed(Some("10.1.2.3".parse().expect("ip"))));
    assert!(src.ip_allowed(Some("192.0.2.7".parse().expect("ip"))));
    assert!(!src.ip_allowed(Some("127.0.0.1".parse().expect("ip"))));
    assert!(!src.ip_allowed(None));
    // A dual-stack listener's view of an IPv4 caller.
    assert!(src.ip_allowed(Some("::ffff:10.1.2.3".parse().expect("ip"))));
    assert!(!src.ip_allowed(Some("::ffff:127.0.0.1".parse().expect("ip"))));
}

#[test]
fn kept_headers_are_bounded_so_every_envelope_fits() {
    let many: Vec<String> = (0..=envelope::MAX_KEEP_HEADERS)
        .map(|n| format!("\"x-h{n}\""))
        .collect();
    let text = BASE.replace(
        "secrets =",
        &format!("keep_headers = [{}]\nsecrets =", many.join(", ")),
    );
    assert_eq!(
        field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
        "sources[0].keep_headers"
    );
    let long = BASE.replace(
        "secrets =",
        &format!("keep_headers = [\"{}\"]\nsecrets =", "x".repeat(65)),
    );
    assert_eq!(
        field_of(check(&long, &env_of(&[("GH_SECRET", "x")]))),
        "sources[0].keep_headers"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass_without_echoes() {
    let text = r#"
        [settings]
        max_receive_count = 0
        max_connections = 0
        [[sources]]
        id = "Bad Id"
        provider = "github"
        secrets = ["env:GH_SECRET"]
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["env:MISSING"]
        allow_cidrs = ["nonsense"]
        [[sources]]
        id = "shop"
        provider = "shopify"
        secrets = ["env:GH_SECRET"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus", "nope"]
        [[routes]]
        sources = ["gh"]
        targets = ["bus"]
        retry = { attempts = 3 }
    "#;
    let err = check(text, &env_of(&[("GH_SECRET", "x")])).expect_err("invalid");
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    // Each mistake once, in document order: the source whose secret is missing is not also
    // "no source" to the route naming it, a retry table is not judged against an invalid
    // receive count, and the per-address limit is not judged against an invalid total.
    assert_eq!(
        fields,
        [
            "settings.max_receive_count",
            "settings.max_connections",
            "sources[0].id",
            "sources[1].secrets[0]",
            "sources[1].allow_cidrs[0]",
            "routes[0].targets[1]",
        ]
    );
    let shown = err.to_string();
    assert!(shown.starts_with("6 problems in the config:"), "{shown}");
    assert!(
        shown.contains("\n  - routes[0].targets[1]: no target \"nope\""),
        "{shown}"
    );
    // One problem reads as it always did.
    let one =
        check(&BASE.replace("env:GH_SECRET", "env:MISSING"), &env_of(&[])).expect_err("invalid");
    assert_eq!(
        one.to_string(),
        "sources[0].secrets[0]: environment variable MISSING is not set (nor a key in INLET_SECRETS_JSON)"
    );
}

#[test]
fn an_unknown_field_is_named_as_such_not_as_invalid_toml() {
    let err = ConfigDoc::parse(
        "[[sources]]\nid = \"s\"\nprovider = \"stripe\"\nsecretz = []\n",
        Some("toml"),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.starts_with("config (TOML): "), "{err}");
    assert!(err.contains("unknown field `secretz`"), "{err}");
    assert!(!err.contains("not valid"), "{err}");
}

#[test]
fn a_duration_typo_shows_the_form_a_duration_takes() {
    let text = format!("[settings]\ningest_deadline = \"5 secs.\"\n{BASE}");
    let err = check(&text, &env_of(&[("GH_SECRET", "s3cret")]))
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("settings.ingest_deadline: \"5 secs.\" is not a duration ("),
        "{err}"
    );
    assert!(err.contains("write it like 30s, 5m"), "{err}");
}

#[test]
fn every_unknown_field_is_named_at_once_by_its_path_with_the_closest_name() {
    let text = "[settings]\nlease_secondz = 5\n\n[[sources]]\nid = \"s\"\nprovider = \"stripe\"\n\
                secrets = [\"env:X\"]\ncolour = \"red\"\n\n[[sources]]\nid = \"t\"\nprovider = \"stripe\"\n\
                secretz = [\"env:X\"]\n";
    for (doc, hint) in [
        (text.to_owned(), Some("toml")),
        (
            serde_json::to_string(&toml::from_str::<serde_json::Value>(text).expect("toml"))
                .expect("json"),
            Some("json"),
        ),
    ] {
        let err = ConfigDoc::parse(&doc, hint)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("3 unknown fields"), "{err}");
        for want in [
            "settings.lease_secondz: unknown field `lease_secondz`",
            "(did you mean `lease_seconds`?)",
            "sources[0].colour: unknown field `colour`",
            "sources[1].secretz: unknown field `secretz`",
            "(did you mean `secrets`?)",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }
    // A wrong type is not an unknown field: the parser's own message, with its line.
    let err = ConfigDoc::parse("[settings]\nlease_seconds = \"soon\"\n", Some("toml"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn worker_batch_size_and_concurrency_outside_their_bounds_name_their_fields() {
    let env = env_of(&[("GH_SECRET", "x")]);
    let with = |settings: &str| check(&format!("[settings]\n{settings}\n{BASE}"), &env);
    let cfg = with("worker_batch_size = 10000\nworker_concurrency = 64").expect("valid");
    assert_eq!(
        (
            cfg.settings.worker_batch_size,
            cfg.settings.worker_concurrency
        ),
        (10_000, 64)
    );
    let defaults = check(BASE, &env).expect("valid");
    assert_eq!(defaults.settings.worker_concurrency, 2);
    for (settings, field) in [
        ("worker_batch_size = 0", "settings.worker_batch_size"),
        ("worker_batch_size = 10001", "settings.worker_batch_size"),
        ("worker_concurrency = 0", "settings.worker_concurrency"),
        ("worker_concurrency = 65", "settings.worker_concurrency"),
    ] {
        assert_eq!(field_of(with(settings)), field, "{settings}");
    }
}
