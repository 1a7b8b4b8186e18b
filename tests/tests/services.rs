//! Docker services end to end, on a real Docker engine: an operator deploys a service
//! to a real agent, scales it, updates it (healthy, then unhealthy and rolled back),
//! watches it heal a killed replica, reads its logs through the API, and deletes it
//! without a container left behind. Docker work never reaches an agent without Docker,
//! and a bad spec is refused naming its field.
//!
//! The image is `ris-test/busybox:1`, built locally by `scripts/test-image.sh` (no
//! registry is reachable here): busybox `httpd` serving `/index.html` and `/health`.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use ris_tests::docker::{
    docker_containers, docker_kill, ensure_test_image, DockerCleanup, DockerContainer,
    TEST_IMAGE as IMAGE,
};
use ris_tests::{eventually, wait_for_task, AgentOptions, System, TenantClient};
use serde_json::{json, Value};

/// Containers (running or not) the agent made.
fn containers_of(agent_id: &str) -> Vec<DockerContainer> {
    docker_containers(&format!("ris.agent={agent_id}"))
}

/// `risctl --api <api> --key <key> <args>`, which must succeed; its stdout. Found like
/// the kit finds the ris-* binaries (`RIS_BIN_DIR`, else this test's target directory).
fn risctl(tenant: &TenantClient, args: &[&str]) -> String {
    let dir = std::env::var_os("RIS_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().to_path_buf()
        });
    let out = std::process::Command::new(dir.join("risctl"))
        .args(["--api", &tenant.api_url, "--key", &tenant.key])
        .args(args)
        .env("RISCTL_CONFIG", "/nonexistent/risctl.toml")
        .output()
        .expect("run risctl (cargo build --bins first)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "risctl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A web service on busybox httpd, with an HTTP health check on `health_path`.
fn web_spec(replicas: u32, version: &str, health_path: &str, deadline: u32) -> Value {
    json!({
        "image": IMAGE,
        "command": ["sh", "-c", "echo started $VERSION; exec httpd -f -vv -p 80 -h /www"],
        "env": { "VERSION": version },
        "ports": [{ "container": 80 }],
        "replicas": replicas,
        "health_check": {
            "http": { "port": 80, "path": health_path },
            "interval_secs": 1, "timeout_secs": 1, "retries": 2,
        },
        "update": { "health_deadline_secs": deadline },
    })
}

async fn put(tenant: &TenantClient, name: &str, body: Value) -> (StatusCode, Value) {
    tenant
        .request(Method::PUT, &format!("/v1/services/{name}"), Some(body))
        .await
}

/// Waits until the service's only instance satisfies `ok`; returns it.
async fn instance_where(
    tenant: &TenantClient,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(timeout, async {
        loop {
            let view = tenant.get(&format!("/v1/services/{name}")).await;
            let instance = view["instances"][0].clone();
            if ok(&instance) {
                return instance;
            }
            last = view;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; last view: {last:#}"))
}

/// Running `replicas` replicas at `revision`. A scale replaces nothing, so containers
/// keep the revision that made them: `made_by` is the oldest revision they may carry.
fn running_at(revision: u64, replicas: usize, made_by: u64) -> impl Fn(&Value) -> bool {
    move |i: &Value| {
        let containers = i["containers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        i["state"] == "running"
            && i["revision"] == revision
            && containers.len() == replicas
            && containers.iter().all(|c| {
                c["revision"].as_u64().is_some_and(|r| r >= made_by) && c["state"] == "running"
            })
    }
}

/// Host ports the instance's containers publish for container port 80.
fn host_ports(instance: &Value) -> Vec<u16> {
    instance["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["ports"]["80/tcp"].as_u64())
        .map(|p| u16::try_from(p).unwrap())
        .collect()
}

async fn serves(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_is_deployed_scaled_updated_rolled_back_healed_and_removed() {
    ensure_test_image();
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("docker-1", &["role=web"], 2).await;
    let _cleanup = DockerCleanup::new(format!("ris.agent={}", agent.id));
    tenant.wait_online(&agent).await;

    // Deploy 3 replicas on every agent labelled role=web.
    let (status, view) = put(
        &tenant,
        "web",
        json!({ "target": { "selector": "role=web" }, "spec": web_spec(3, "1", "/health", 20) }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(view["revision"], 1);
    let instance = instance_where(
        &tenant,
        "web",
        "3 replicas",
        Duration::from_secs(60),
        running_at(1, 3, 1),
    )
    .await;
    assert_eq!(instance["agent_id"], agent.id.as_str());
    assert_eq!(instance["desired_replicas"], 3);
    for port in host_ports(&instance) {
        assert!(serves(port).await, "replica on port {port} does not serve");
    }
    // The dispatcher counts instances by state.
    let metrics_url = format!("{}/metrics", system.dispatcher_metrics_url(0));
    eventually(
        "ris_service_instances gauge",
        Duration::from_secs(20),
        || async {
            let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            text.lines()
                .any(|l| l.starts_with("ris_service_instances{state=\"running\"} 1"))
                .then_some(())
        },
    )
    .await;
    // The same declaration again changes nothing.
    let (status, again) = put(
        &tenant,
        "web",
        json!({ "target": { "selector": "role=web" }, "spec": web_spec(3, "1", "/health", 20) }),
    )
    .await;
    assert_eq!(
        (status, again["revision"].clone()),
        (StatusCode::OK, json!(1))
    );

    // Scale to 5, then to 1: new revisions, nothing replaced needlessly.
    for (replicas, revision) in [(5, 2), (1, 3)] {
        let (status, view) = tenant
            .request(
                Method::POST,
                "/v1/services/web/scale",
                Some(json!({ "replicas": replicas })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["revision"], revision);
        instance_where(
            &tenant,
            "web",
            &format!("{replicas} replicas"),
            Duration::from_secs(60),
            running_at(revision, replicas, 1),
        )
        .await;
    }
    assert_eq!(containers_of(&agent.id).len(), 1);

    // Rolling update to a healthy revision (2 replicas of version 2).
    let (status, view) = put(
        &tenant,
        "web",
        json!({ "target": { "selector": "role=web" }, "spec": web_spec(2, "2", "/health", 20) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["revision"], 4);
    let healthy = instance_where(
        &tenant,
        "web",
        "update to revision 4",
        Duration::from_secs(90),
        running_at(4, 2, 4),
    )
    .await;
    let old_ports = host_ports(&healthy);

    // An update whose health check fails: rolled back, the old replicas still serve.
    let (status, _) = put(
        &tenant,
        "web",
        json!({ "target": { "selector": "role=web" }, "spec": web_spec(2, "3", "/missing", 4) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rolled_back = instance_where(&tenant, "web", "rollback", Duration::from_secs(90), |i| {
        i["state"] == "rolled_back"
    })
    .await;
    assert_eq!(rolled_back["desired_revision"], 5, "{rolled_back:#}");
    assert_eq!(rolled_back["revision"], 4, "{rolled_back:#}");
    assert!(rolled_back["reason"].is_string(), "{rolled_back:#}");
    let settled = instance_where(
        &tenant,
        "web",
        "old replicas back",
        Duration::from_secs(60),
        |i| {
            i["state"] == "rolled_back"
                && i["containers"].as_array().is_some_and(|c| {
                    c.len() == 2
                        && c.iter()
                            .all(|c| c["revision"] == 4 && c["state"] == "running")
                })
        },
    )
    .await;
    for port in host_ports(&settled) {
        assert!(
            serves(port).await,
            "old replica on port {port} does not serve"
        );
    }
    assert!(!old_ports.is_empty());

    // A replica killed out of band is restored, and `service.restarted` announced.
    let mut events = SseStream::open(&tenant, "?types=service.*").await;
    let victim = settled["containers"][0]["id"].as_str().unwrap().to_owned();
    docker_kill(&victim);
    let healed = instance_where(
        &tenant,
        "web",
        "the killed replica restored",
        Duration::from_secs(60),
        |i| {
            i["restarts"].as_u64().is_some_and(|r| r >= 1)
                && i["containers"]
                    .as_array()
                    .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "running"))
        },
    )
    .await;
    assert!(healed["restarts"].as_u64().unwrap() >= 1, "{healed:#}");
    let restarted = events
        .until(Duration::from_secs(30), |e| e.event == "service.restarted")
        .await;
    let event = restarted.last().unwrap();
    assert_eq!(event.data["data"]["service"], "web");
    assert_eq!(event.data["data"]["agent_id"], agent.id.as_str());

    // Logs, read through the API from the agent.
    let logs = tenant.get("/v1/services/web/logs?tail=20").await;
    let item = &logs["items"][0];
    assert_eq!(item["agent_id"], agent.id.as_str(), "{logs:#}");
    assert_eq!(item["outcome"], "completed", "{logs:#}");
    let lines: Vec<&str> = item["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(lines.iter().any(|l| l.contains("started 2")), "{logs:#}");
    let one = tenant
        .get(&format!(
            "/v1/services/web/logs?agent_id={}&tail=1",
            agent.id
        ))
        .await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1), "{one:#}");

    // The same through risctl.
    let out = risctl(&tenant, &["services", "logs", "web", "--tail", "5"]);
    assert!(out.contains("started 2"), "{out}");
    let out = risctl(&tenant, &["services", "get", "web"]);
    assert!(
        out.contains("rolled_back") && out.contains("docker-1"),
        "{out}"
    );

    // Every change is a revision, newest first.
    let revisions = tenant.get("/v1/services/web/revisions").await;
    let changes: Vec<&str> = revisions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["change"].as_str())
        .collect();
    assert_eq!(changes, ["update", "update", "scale", "scale", "create"]);

    // DELETE: every container goes; then the service is gone.
    let (status, view) = tenant
        .request(Method::DELETE, "/v1/services/web", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{view}");
    eventually(
        "the service to be gone",
        Duration::from_secs(60),
        || async {
            let (status, _) = tenant.request(Method::GET, "/v1/services/web", None).await;
            (status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let left = docker_containers(&format!("ris.agent={},ris.service=web", agent.id));
    assert!(left.is_empty(), "containers left behind: {left:#?}");
    assert!(containers_of(&agent.id).is_empty());
    let list = tenant.get("/v1/services").await;
    assert_eq!(list["items"], json!([]), "{list:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_reaches_agents_that_match_later_and_leaves_those_that_stop() {
    ensure_test_image();
    let system = System::start().await;
    let tenant = system.tenant().await;
    let spec = json!({ "image": IMAGE, "command": ["httpd", "-f", "-p", "80", "-h", "/www"] });

    // Declared before any agent matches: nothing to run yet.
    let (status, view) = put(
        &tenant,
        "late",
        json!({ "target": { "selector": "role=late" }, "spec": spec }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(view["instances"], json!([]), "{view:#}");

    // An agent that enrolls afterwards gets it (from the dispatcher's sync).
    let mut agent = tenant.agent("late-1", &["role=late"], 2).await;
    let _cleanup = DockerCleanup::new(format!("ris.agent={}", agent.id));
    let instance = instance_where(
        &tenant,
        "late",
        "the late agent to run it",
        Duration::from_secs(60),
        running_at(1, 1, 1),
    )
    .await;
    assert_eq!(instance["agent_id"], agent.id.as_str());
    let list = tenant.get("/v1/services").await;
    assert_eq!(
        list["items"][0]["agents"],
        json!({ "running": 1 }),
        "{list:#}"
    );

    // Logs from an agent that does not answer: 504 after the bounded wait.
    agent.kill().await;
    let (status, body) = tenant
        .request(Method::GET, "/v1/services/late/logs", None)
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], "agent_timeout", "{body}");
    agent.restart().await;
    tenant.wait_online(&agent).await;

    // Retargeted away from it: the agent removes its containers, the instance goes.
    let (status, view) = put(
        &tenant,
        "late",
        json!({ "target": { "selector": "role=elsewhere" }, "spec": spec }),
    )
    .await;
    assert_eq!(
        (status, view["revision"].clone()),
        (StatusCode::OK, json!(2)),
        "{view}"
    );
    eventually("the instance to go", Duration::from_secs(60), || async {
        let view = tenant.get("/v1/services/late").await;
        (view["instances"] == json!([])).then_some(())
    })
    .await;
    assert!(containers_of(&agent.id).is_empty());

    // Deleting a service no agent holds is immediate.
    let (status, _) = tenant
        .request(Method::DELETE, "/v1/services/late", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = tenant.request(Method::GET, "/v1/services/late", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_work_never_reaches_an_agent_without_docker_and_bad_specs_are_refused() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let opts = AgentOptions {
        docker_socket: Some("/nonexistent/docker.sock".into()),
        ..AgentOptions::new(&["role=plain"], 2)
    };
    let plain = tenant.agent_with("no-docker", opts).await;
    tenant.wait_online(&plain).await;

    // A docker task for it fails `docker_unavailable` at once, not at its queue deadline.
    let started = Instant::now();
    let id = tenant
        .submit(json!({
            "target": { "agent_id": plain.id },
            "task": { "kind": "docker", "op": "ps" },
            "queue_timeout_secs": 120,
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["reason"], "docker_unavailable", "{task:#}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Other kinds still run there.
    let id = tenant
        .submit(json!({ "target": { "agent_id": plain.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &id, "completed").await;

    // A bad spec is a 400 naming the field.
    let (status, body) = put(
        &tenant,
        "web",
        json!({
            "target": { "agent_id": plain.id },
            "spec": { "image": IMAGE, "replicas": 2, "ports": [{ "container": 80, "host": 8080 }] },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "spec.ports[0].host", "{body}");
    let (status, body) = put(
        &tenant,
        "web",
        json!({ "target": { "selector": "a=b" }, "spec": { "image": "" } }),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("spec.image")),
        "{body}"
    );
    let (status, body) = put(
        &tenant,
        "Bad_Name",
        json!({ "target": { "selector": "a=b" }, "spec": { "image": IMAGE } }),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("name")),
        "{body}"
    );
    let (status, body) = put(
        &tenant,
        "web",
        json!({ "target": { "agent_id": uuid::Uuid::now_v7() }, "spec": { "image": IMAGE } }),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("agent_not_found")),
        "{body}"
    );
    let (status, _) = tenant
        .request(Method::POST, "/v1/services/none/restart", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(tenant.get("/v1/services").await["items"], json!([]));

    // Another tenant's service is invisible.
    let (status, _) = put(
        &tenant,
        "mine",
        json!({ "target": { "selector": "role=none" }, "spec": { "image": IMAGE } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let other = system.tenant().await;
    let (status, _) = other.request(Method::GET, "/v1/services/mine", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = tenant
        .request(Method::DELETE, "/v1/services/mine", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: Value,
}

/// A minimal SSE reader for `GET /v1/events/stream`.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    async fn open(tenant: &TenantClient, query: &str) -> SseStream {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/events/stream{query}", tenant.api_url))
            .bearer_auth(&tenant.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// Events until one satisfies `last` (included); panics after `timeout`.
    async fn until(
        &mut self,
        timeout: Duration,
        last: impl Fn(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    let done = last(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                continue;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out; events so far: {seen:#?}"));
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(other) => panic!("event stream ended: {other:?}"),
                Err(_) => panic!("timed out; events so far: {seen:#?}"),
            }
        }
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut data) = (None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    Some(SseEvent {
        event: event?,
        data: serde_json::from_str(&data.join("\n")).ok()?,
    })
}
