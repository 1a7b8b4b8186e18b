//! TLS everywhere: the API serves HTTPS and WSS, every AMQP connection is AMQPS, TLS 1.1
//! is refused, plain-text clients cannot reach the TLS listeners, a wrong CA is refused,
//! and mutual TLS rejects a client without a certificate.
//!
//! The broker side needs RabbitMQ's TLS listener on 5671, which `scripts/services.sh`
//! configures with the CA in `/etc/ris/dev-certs` (`RIS_DEV_CERTS`).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::time::Duration;

use ris_broker::BrokerConfig;
use ris_tests::tls::{broker_ca, https_client, BROKER_AMQPS_URL};
use ris_tests::{wait_for_task, AgentOptions, KitTls, System, SystemOptions};
use serde_json::json;

async fn tls_system(tls: KitTls) -> System {
    System::start_with(SystemOptions {
        tls,
        ..SystemOptions::default()
    })
    .await
}

/// `host:port` of the first API.
fn api_authority(system: &System) -> String {
    system
        .api_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

/// Runs `openssl s_client` against `authority` with extra flags; returns whether the
/// handshake completed, and the output.
async fn s_client(authority: &str, ca: &Path, flags: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", authority, "-CAfile"])
        .arg(ca)
        .args(flags)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let established = out.status.success() && text.contains("Verify return code: 0 (ok)");
    (established, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_over_https_wss_and_amqps() {
    let system = tls_system(KitTls::On).await;
    assert!(system.api_url.starts_with("https://"), "{}", system.api_url);
    let tenant = system.tenant().await;
    let agent = tenant.agent("tls-agent", &["env=tls"], 1).await;
    let identity = agent.identity();
    assert_eq!(identity["enrollment"]["amqp"]["url"], BROKER_AMQPS_URL);
    // Online means the WSS heartbeat is up; completed means AMQPS both ways.
    tenant.wait_online(&agent).await;
    let id = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "shell", "argv": ["echo", "over tls"] } }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["result"]["output"]["stdout"], "over tls\n", "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_cannot_reach_the_https_listener() {
    let system = tls_system(KitTls::On).await;
    let plain = format!("http://{}/healthz", api_authority(&system));
    let result = reqwest::Client::new()
        .get(&plain)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(result.is_err(), "plain HTTP got an answer: {result:?}");
    // The same port answers over HTTPS.
    let (status, _) = system.admin(reqwest::Method::GET, "/healthz", None).await;
    assert!(status.is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_is_refused_and_1_2_accepted_by_the_api_and_the_broker() {
    let system = tls_system(KitTls::On).await;
    let certs = system.certs.clone().unwrap();
    let api_ca = certs.join("ca.pem");
    let endpoints = [
        (api_authority(&system), api_ca.as_path()),
        ("127.0.0.1:5671".to_owned(), broker_ca_path()),
    ];
    for (authority, ca) in &endpoints {
        // SECLEVEL=0 lets this openssl offer TLS 1.1 at all: the refusal is the server's.
        let (ok, out) = s_client(
            authority,
            ca,
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        )
        .await;
        assert!(!ok, "{authority} accepted TLS 1.1:\n{out}");
        for version in ["-tls1_2", "-tls1_3"] {
            let (ok, out) = s_client(authority, ca, &[version]).await;
            assert!(ok, "{authority} refused {version}:\n{out}");
        }
    }
}

fn broker_ca_path() -> &'static Path {
    static CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(broker_ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_needs_the_right_ca_and_plain_amqp_cannot_reach_5671() {
    let tls = BrokerConfig {
        amqp_url: BROKER_AMQPS_URL.to_owned(),
        ca_file: Some(broker_ca()),
        connect_timeout_ms: 5000,
        ..BrokerConfig::default()
    };
    let conn = ris_broker::connect(&tls, "/", "guest", "guest", "e2e tls")
        .await
        .expect("AMQPS with the dev CA");
    drop(conn.close(200, "done".into()).await);

    // Plain AMQP spoken to the TLS port: no connection.
    let plain = BrokerConfig {
        amqp_url: "amqp://127.0.0.1:5671".to_owned(),
        connect_timeout_ms: 3000,
        ..BrokerConfig::default()
    };
    let result = ris_broker::connect(&plain, "/", "guest", "guest", "e2e plain").await;
    assert!(result.is_err(), "plain AMQP reached the TLS listener");

    // A CA that did not sign the broker's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    other_ca(other.path());
    let wrong = BrokerConfig {
        ca_file: Some(other.path().join("ca.pem")),
        ..tls
    };
    let result = ris_broker::connect(&wrong, "/", "guest", "guest", "e2e wrong ca").await;
    assert!(
        result.is_err(),
        "AMQPS accepted a certificate from an untrusted CA"
    );
}

fn other_ca(dir: &Path) {
    ris_tests::tls::make_certs(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_the_wrong_ca_refuses_the_api() {
    let system = tls_system(KitTls::On).await;
    let tenant = system.tenant().await;
    let other = tempfile::tempdir().unwrap();
    other_ca(other.path());
    let wrong_ca = other.path().join("ca.pem");
    let token = tenant.enrollment_token().await;
    let state = tenant.workdir().join("agent-wrong-ca");
    let (ok, out) = tenant
        .enroll_cmd(
            &state,
            &token,
            "wrong-ca",
            &["--ca", wrong_ca.to_str().unwrap()],
        )
        .await;
    assert!(!ok, "enrolled against an API its CA did not sign: {out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    // The token was not spent: with the right CA it still works.
    let (ok, out) = tenant.enroll_cmd(&state, &token, "right-ca", &[]).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_rejects_a_client_without_a_certificate() {
    let system = tls_system(KitTls::Mutual).await;
    let certs = system.certs.clone().unwrap();
    // The kit's client presents the dev client certificate: it gets in.
    let (status, _) = system.admin(reqwest::Method::GET, "/healthz", None).await;
    assert!(status.is_success());
    // The same trust without a client certificate: the handshake fails.
    let anonymous = https_client(&certs.join("trust.pem"), None);
    let result = anonymous
        .get(format!("{}/healthz", system.api_url))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(result.is_err(), "no client certificate, yet: {result:?}");

    // An agent enrolled with the client certificate gets in: enrollment over HTTPS and
    // the WSS heartbeat both present it, and a task runs there.
    let tenant = system.tenant().await;
    let cert = certs.join(ris_runtime::tls::dev_certs::CLIENT_CERT);
    let key = certs.join(ris_runtime::tls::dev_certs::CLIENT_KEY);
    let opts = AgentOptions {
        labels: vec!["env=mtls".into()],
        enroll_args: vec![
            "--client-cert".into(),
            cert.display().to_string(),
            "--client-key".into(),
            key.display().to_string(),
        ],
        ..AgentOptions::default()
    };
    let agent = tenant.agent_with("mtls-agent", opts).await;
    tenant.wait_online(&agent).await;
    let id = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "shell", "argv": ["echo", "mtls"] } }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["result"]["output"]["stdout"], "mtls\n", "{task}");
}
