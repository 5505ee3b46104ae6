//! Secret references read from SSM Parameter Store and Secrets Manager (moto), through the
//! same `load_config_from` and `Refreshing` the Lambdas use: a config kept in SSM, a webhook
//! secret in a JSON secret and one in a SecureString, and a rotation picked up without a
//! restart.

use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::aws::AwsSecretStore;
use inlet::bootstrap::{load_config_from, Loaded, Refreshing};
use inlet::ingest::{Ingest, WebhookRequest, WebhookResponse};
use inlet::ports::{Clock, Ledger, Queue, SecretStore, SecretStoreError, SystemClock};

use crate::pipeline::{sample_body, signed_headers};
use crate::support;

const OLD_KEY: &str = "whsec_b2xkLXN0cmlwZS1zaWduaW5nLXNlY3JldA==";
const NEW_KEY: &str = "whsec_bmV3LXN0cmlwZS1zaWduaW5nLXNlY3JldA==";
const GITHUB_KEY: &str = "github-webhook-secret-kept-in-ssm";

struct Names {
    config: String,
    github: String,
    keys: String,
}

async fn put_parameter(sdk: &aws_config::SdkConfig, name: &str, value: &str, secure: bool) {
    let kind = if secure {
        aws_sdk_ssm::types::ParameterType::SecureString
    } else {
        aws_sdk_ssm::types::ParameterType::String
    };
    aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .expect("put the parameter");
}

/// The config in SSM names its secrets only by reference; the deployed default environment
/// refuses literals, so the values can only come from the stores.
async fn stores(sdk: &aws_config::SdkConfig) -> Names {
    let prefix = format!("/{}", support::aws::unique_name("inlet"));
    let names = Names {
        config: format!("{prefix}/config"),
        github: format!("{prefix}/github"),
        keys: support::aws::unique_name("inlet-keys"),
    };
    let config = format!(
        r#"
        [[sources]]
        id = "stripe"
        provider = "stripe"
        secrets = ["secretsmanager:{keys}#stripe"]
        [[sources]]
        id = "github"
        provider = "github"
        secrets = ["ssm:{github}"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        bus_name = "inlet-test"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
        "#,
        keys = names.keys,
        github = names.github,
    );
    put_parameter(sdk, &names.config, &config, false).await;
    put_parameter(sdk, &names.github, GITHUB_KEY, true).await;
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(&names.keys)
        .secret_string(serde_json::json!({"stripe": OLD_KEY, "other": "x"}).to_string())
        .send()
        .await
        .expect("create the secret");
    names
}

async fn post(
    ingest: &Ingest,
    source: &str,
    n: u64,
    signer: &inlet::config::Config,
) -> WebhookResponse {
    let body = sample_body(source, n);
    let now = SystemClock.now_ms();
    ingest
        .handle(WebhookRequest {
            method: "POST".into(),
            path: format!("/webhooks/{source}"),
            headers: signed_headers(signer, source, &body, now, &format!("d-{n}")),
            body,
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn aws_secrets_come_from_ssm_and_secrets_manager_and_rotate_without_a_restart() {
    let sdk = support::aws::sdk_config().await;
    let names = stores(&sdk).await;
    let store: Arc<dyn SecretStore> = Arc::new(AwsSecretStore::from_conf(&sdk));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let embedded = support::embedded::store(clock.clone());
    let queue: Arc<dyn Queue> = Arc::new(embedded.queue("main", None));
    let ledger: Arc<dyn Ledger> = Arc::new(embedded.ledger());
    let config_ref = format!("ssm:{}", names.config);

    // Every `get` past the interval reads the stores again, as a Lambda does after
    // INLET_SECRETS_REFRESH_SECONDS.
    let live = Refreshing::start(Some(Duration::ZERO), move || {
        let (store, queue, ledger, clock, config_ref) = (
            store.clone(),
            queue.clone(),
            ledger.clone(),
            clock.clone(),
            config_ref.clone(),
        );
        async move {
            let env = move |name: &str| (name == "INLET_CONFIG").then(|| config_ref.clone());
            let Loaded { config, remote } = load_config_from(&env, store.as_ref()).await?;
            Ok((Ingest::new(config, queue, ledger, clock), remote))
        }
    })
    .await
    .expect("the config and its secrets load from moto");

    let before = live.get().await;
    let old_config = Arc::new(before.config().clone());
    assert_eq!(post(&before, "stripe", 1, &old_config).await.status, 200);
    assert_eq!(post(&before, "github", 2, &old_config).await.status, 200);

    aws_sdk_secretsmanager::Client::new(&sdk)
        .put_secret_value()
        .secret_id(&names.keys)
        .secret_string(serde_json::json!({"stripe": NEW_KEY}).to_string())
        .send()
        .await
        .expect("rotate the secret");
    let after = live.get().await;
    assert_eq!(
        post(&after, "stripe", 3, &after.config().clone())
            .await
            .status,
        200,
        "the rotated secret verifies"
    );
    assert_eq!(
        post(&after, "stripe", 4, &old_config).await.status,
        401,
        "the retired secret no longer does"
    );
}

#[tokio::test]
async fn aws_a_missing_or_malformed_reference_is_named_and_no_value_is_shown() {
    let sdk = support::aws::sdk_config().await;
    let names = stores(&sdk).await;
    let store = AwsSecretStore::from_conf(&sdk);

    let missing = store.parameter("/inlet/none").await.unwrap_err();
    assert!(
        matches!(missing, SecretStoreError::NotFound { .. }),
        "{missing}"
    );
    let missing = store.secret("inlet-none").await.unwrap_err();
    assert!(
        matches!(missing, SecretStoreError::NotFound { .. }),
        "{missing}"
    );

    let field = format!(
        r#"[[sources]]
        id = "stripe"
        provider = "stripe"
        secrets = ["secretsmanager:{}#absent"]"#,
        names.keys
    );
    let env = move |name: &str| (name == "INLET_CONFIG").then(|| field.clone());
    let err = load_config_from(&env, &store)
        .await
        .err()
        .expect("a field the secret lacks");
    let text = err.to_string();
    assert!(
        text.contains(&names.keys) && text.contains("absent"),
        "{text}"
    );
    assert!(!text.contains(OLD_KEY), "{text}");

    let env =
        |name: &str| (name == "INLET_CONFIG").then(|| "ssm:/inlet/no-such-config".to_string());
    let err = load_config_from(&env, &store)
        .await
        .err()
        .expect("no such config");
    assert!(
        err.to_string().contains("ssm:/inlet/no-such-config"),
        "{err}"
    );
}
