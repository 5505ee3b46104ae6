//! The built `ingest` binary, started as Lambda starts it, against the CLI's Runtime API stub
//! (the one `make footprint` measures with): two invocations, and the lines it prints on
//! stdout are Powertools-shaped — the first invocation cold, the second warm, each line
//! naming the Lambda request id and X-Ray trace the stub handed out — and its metrics go to
//! the namespace its environment names. Meta's GET handshake is the request: ingest answers
//! it without any AWS call, so nothing here leaves loopback.

use std::process::{Command, Stdio};
use std::time::Duration;

use inlet_cli::runtime_stub::{Outcome, RuntimeStub};

const INGEST: &str = env!("CARGO_BIN_EXE_ingest");
const APIGW_V2: &str =
    include_str!("../../../tests/fixtures/example-apigw-v2-request-no-authorizer.json");
const WAIT: Duration = Duration::from_secs(60);
const VERIFY_TOKEN: &str = "ingest-invocation-logs-verify-token";
const NAMESPACE: &str = "Inlet/invocation-logs-test";
const CONFIG: &str = r#"
[[sources]]
id = "meta"
provider = "meta"
secrets = [{ id = "app", value = "env:META_APP_SECRET" },
           { id = "verify", value = "env:META_VERIFY_TOKEN" }]
options = { verify_token_secret = "verify" }

[[targets]]
id = "bus"
kind = "eventbridge"

[[routes]]
sources = ["*"]
targets = ["bus"]
"#;

/// Meta's GET subscription check for the source `meta`, as API Gateway delivers it.
fn handshake(challenge: &str) -> String {
    let mut ev: serde_json::Value = serde_json::from_str(APIGW_V2).expect("fixture");
    ev["rawPath"] = "/webhooks/meta".into();
    ev["requestContext"]["http"]["method"] = "GET".into();
    ev["requestContext"]["http"]["path"] = "/webhooks/meta".into();
    ev["rawQueryString"] =
        format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge={challenge}")
            .into();
    ev["queryStringParameters"] = serde_json::json!({
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": challenge,
    });
    ev["body"] = serde_json::Value::Null;
    ev.to_string()
}

#[tokio::test]
async fn each_line_names_its_invocation_and_only_the_first_is_cold() {
    let stub = RuntimeStub::start(vec![handshake("111"), handshake("222")])
        .await
        .expect("start the stub");
    let home = tempfile::tempdir().expect("tempdir");
    let secrets = serde_json::json!({
        "META_APP_SECRET": "ingest-invocation-logs-app-secret",
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
    });
    let mut cmd = Command::new(INGEST);
    cmd.env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", stub.runtime_api().as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "inlet-ingest"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            // What Lambda sets from LoggingConfig.ApplicationLogLevel.
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
            ("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE),
            ("INLET_CONFIG", CONFIG),
            ("INLET_SECRETS_JSON", &secrets.to_string()),
            ("INLET_QUEUE_URL", "http://127.0.0.1:9/000000000000/unused"),
            ("INLET_TABLE", "unused"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            // Were a call made after all, it would go nowhere but loopback.
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", &home.path().to_string_lossy()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // `make test` searches every process's log lines for secrets: this one's too.
    if let Some(dir) = std::env::var_os("INLET_LOG_DIR") {
        cmd.env("INLET_LOG_DIR", dir);
    }
    let mut child = cmd.spawn().expect("spawn the ingest binary");
    let outcomes = stub.wait_outcomes(2, WAIT).await;
    // The process serves until it is stopped, as on Lambda.
    let _ = child.kill();
    let out = child
        .wait_with_output()
        .expect("the ingest binary's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context = format!(
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ids: Vec<(String, String)> = (0..2).map(RuntimeStub::invocation).collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}\n{context}");
    for (outcome, ((id, _), challenge)) in outcomes.iter().zip(ids.iter().zip(["111", "222"])) {
        let Outcome::Response { request_id, body } = outcome else {
            panic!("{outcome:?}\n{context}");
        };
        assert_eq!(request_id, id);
        let answer: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
        assert_eq!(answer["statusCode"], 200, "{answer}");
        assert_eq!(answer["body"], challenge, "{answer}");
    }

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{context}")))
        .collect();
    let answered: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "handshake answered")
        .collect();
    assert_eq!(answered.len(), 2, "{context}");
    let api_request_id = serde_json::from_str::<serde_json::Value>(APIGW_V2).expect("fixture")
        ["requestContext"]["requestId"]
        .clone();
    for (i, (line, (request_id, trace))) in answered.iter().zip(&ids).enumerate() {
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert_eq!(line["service"], "inlet-ingest", "{line}");
        assert_eq!(line["cold_start"], i == 0, "invocation {i}: {line}");
        assert_eq!(line["function_request_id"], request_id.as_str(), "{line}");
        let root = trace
            .strip_prefix("Root=")
            .and_then(|t| t.split(';').next())
            .expect("a root");
        assert_eq!(line["xray_trace_id"], root, "{line}");
        assert_eq!(line["source"], "meta", "{line}");
        // The HTTP request's own id, a plain string.
        assert!(api_request_id.is_string(), "{api_request_id}");
        assert_eq!(line["request_id"], api_request_id, "{line}");
    }

    // Each handshake is counted in the namespace the environment names.
    let metrics: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(metrics.len(), 2, "{context}");
    for doc in metrics {
        assert_eq!(doc["handshake"], 1.0, "{doc}");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE,
            "{doc}"
        );
    }
}
