//! The Lambda Runtime API stub `inlet-footprint` measures against, driven over loopback HTTP
//! as a function's runtime client drives it.

use std::time::{Duration, Instant};

use inlet_cli::runtime_stub::{Outcome, RuntimeStub};

const WAIT: Duration = Duration::from_secs(10);

fn url(stub: &RuntimeStub, path: &str) -> String {
    format!("http://{}/2018-06-01/runtime{path}", stub.runtime_api())
}

#[tokio::test]
async fn the_stub_hands_out_its_events_in_order_records_the_first_next_and_every_answer() {
    let stub = RuntimeStub::start(vec![r#"{"n":1}"#.into(), r#"{"n":2}"#.into()])
        .await
        .expect("start the stub");
    let http = reqwest::Client::new();
    assert_eq!(stub.first_next(), None);

    let before = Instant::now();
    let mut ids = Vec::new();
    for expected in [r#"{"n":1}"#, r#"{"n":2}"#] {
        let resp = http
            .get(url(&stub, "/invocation/next"))
            .send()
            .await
            .expect("next");
        assert_eq!(resp.status(), 200);
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let id = header("lambda-runtime-aws-request-id");
        let deadline: u128 = header("lambda-runtime-deadline-ms")
            .parse()
            .expect("deadline");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        assert!(deadline > now_ms, "the deadline is in the future");
        assert!(header("lambda-runtime-invoked-function-arn").starts_with("arn:aws:lambda:"));
        let (want_id, want_trace) = RuntimeStub::invocation(ids.len());
        assert_eq!(id, want_id);
        assert_eq!(header("lambda-runtime-trace-id"), want_trace);
        assert!(want_trace.starts_with("Root=1-"), "{want_trace}");
        assert_eq!(resp.text().await.expect("body"), expected);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each event has its own request id");
    let first = stub.first_next().expect("the first next is recorded");
    assert!(first >= before && first <= Instant::now());
    assert_eq!(
        stub.wait_first_next(WAIT).await,
        Some(first),
        "only the first counts"
    );

    // No event left: the next request is held open, as the real API holds it.
    let held = tokio::time::timeout(
        Duration::from_millis(300),
        http.get(url(&stub, "/invocation/next")).send(),
    )
    .await;
    assert!(
        held.is_err(),
        "a next with no event waiting must not be answered"
    );

    for (path, body) in [
        (format!("/invocation/{}/response", ids[0]), "done"),
        (format!("/invocation/{}/error", ids[1]), "boom"),
        ("/init/error".to_string(), "bad config"),
    ] {
        let resp = http
            .post(url(&stub, &path))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 202, "{path}");
    }
    assert_eq!(
        stub.wait_outcomes(3, WAIT).await,
        vec![
            Outcome::Response {
                request_id: ids[0].clone(),
                body: "done".into()
            },
            Outcome::Error {
                request_id: ids[1].clone(),
                body: "boom".into()
            },
            Outcome::InitError {
                body: "bad config".into()
            },
        ]
    );
}

#[tokio::test]
async fn waiting_for_answers_ends_at_an_init_error_or_the_timeout() {
    let stub = RuntimeStub::start(vec!["{}".into()]).await.expect("start");
    assert_eq!(stub.wait_first_next(Duration::from_millis(50)).await, None);
    assert!(stub
        .wait_outcomes(1, Duration::from_millis(50))
        .await
        .is_empty());

    let stub_api = stub.runtime_api();
    let waiter = tokio::spawn(async move {
        let http = reqwest::Client::new();
        http.post(format!("http://{stub_api}/2018-06-01/runtime/init/error"))
            .body("no INLET_CONFIG")
            .send()
            .await
            .expect("post")
            .status()
    });
    // Waiting for more answers than will come still returns as soon as init has failed.
    let outcomes = stub.wait_outcomes(5, WAIT).await;
    assert_eq!(
        outcomes,
        vec![Outcome::InitError {
            body: "no INLET_CONFIG".into()
        }]
    );
    assert_eq!(waiter.await.expect("join"), 202);
}
