//! One-off `docker` tasks against the real engine, and an agent without an engine.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::time::{Duration, Instant};

use common::docker::{docker, docker_ids, name, spec, ContainersGuard, Foreign, Harness, IMAGE};
use ris_agent::docker::{Engine, Owner};
use ris_agent::executor::{DockerExecutor, Limits};
use ris_agent::heartbeat;
use ris_schemas::docker::{DockerOutput, DockerSpec};
use ris_schemas::ids::TaskId;
use ris_schemas::service::InstanceState;
use ris_schemas::task::{Outcome, TaskOutput, TaskResult};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn owner() -> Owner {
    Owner::new("tasks", uuid::Uuid::new_v4().to_string())
}

fn limits(timeout_secs: u64) -> Limits {
    Limits {
        timeout: Duration::from_secs(timeout_secs),
        output_cap: 1024,
    }
}

fn task(v: serde_json::Value) -> DockerSpec {
    serde_json::from_value(v).expect("docker spec")
}

fn output(r: &TaskResult) -> &DockerOutput {
    match &r.output {
        TaskOutput::Docker(o) => o,
        other => panic!("not a docker output: {other:?}"),
    }
}

async fn run(
    exec: &DockerExecutor,
    spec: serde_json::Value,
    timeout_secs: u64,
) -> (TaskId, TaskResult) {
    let id = TaskId::new();
    let r = exec
        .run(
            id,
            &task(spec),
            limits(timeout_secs),
            &CancellationToken::new(),
        )
        .await;
    (id, r)
}

#[tokio::test]
async fn run_returns_exit_code_and_capped_logs_and_removes_the_container() {
    common::docker::ensure_test_image();
    let owner = owner();
    let _guard = ContainersGuard(owner.agent_id.clone());
    let exec = DockerExecutor::new(Engine::new(common::docker::SOCKET), owner.clone());

    let (id, r) = run(
        &exec,
        json!({"op": "run", "image": IMAGE, "command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
        30,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("exit_status"));
    let out = output(&r);
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert!(
        docker_ids(&format!("label=ris.task={id}")).is_empty(),
        "removed"
    );

    let (_, r) = run(
        &exec,
        json!({"op": "run", "image": IMAGE, "command": ["sh", "-c", "seq 1 2000"]}),
        30,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Completed);
    let out = output(&r);
    assert_eq!(out.exit_code, Some(0));
    assert!(out.truncated && out.stdout.len() <= 1024 && out.stdout.starts_with("1\n2\n"));

    // `keep`: the container stays, labelled, and `ps`, `inspect`, `rm` see it.
    let (id, r) = run(
        &exec,
        json!({"op": "run", "image": IMAGE, "command": ["true"], "keep": true}),
        30,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Completed);
    let kept = docker_ids(&format!("label=ris.task={id}"));
    assert_eq!(kept.len(), 1);
    let labels = common::docker::inspect(&kept[0])["Config"]["Labels"].clone();
    assert_eq!(labels["ris.managed"], "true");
    assert_eq!(labels["ris.tenant"], "tasks");
    assert_eq!(labels["ris.agent"], owner.agent_id.as_str());
    let (_, r) = run(&exec, json!({"op": "ps", "all": true}), 10).await;
    let listed = output(&r).data.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "only this agent's containers: {listed:?}");
    assert_eq!(listed[0]["id"], kept[0].as_str());
    let (_, r) = run(&exec, json!({"op": "inspect", "container": kept[0]}), 10).await;
    assert_eq!(output(&r).data["state"]["exit_code"], 0);
    let (_, r) = run(&exec, json!({"op": "rm", "container": kept[0]}), 10).await;
    assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
    assert!(docker_ids(&format!("label=ris.task={id}")).is_empty());

    let (_, r) = run(&exec, json!({"op": "images"}), 10).await;
    let images = output(&r).data.to_string();
    assert!(images.contains(IMAGE), "{images}");
}

#[tokio::test]
async fn run_timeout_and_cancel_kill_and_remove_the_container() {
    common::docker::ensure_test_image();
    let owner = owner();
    let _guard = ContainersGuard(owner.agent_id.clone());
    let exec = DockerExecutor::new(Engine::new(common::docker::SOCKET), owner.clone());
    let started = Instant::now();
    let (_, r) = run(
        &exec,
        json!({"op": "run", "image": IMAGE, "command": ["sleep", "60"]}),
        2,
    )
    .await;
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert_eq!(r.reason.as_deref(), Some("timeout"));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(docker_ids(&format!("label=ris.agent={}", owner.agent_id)).is_empty());

    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c2.cancel();
    });
    let spec = task(json!({"op": "run", "image": IMAGE, "command": ["sleep", "60"]}));
    let r = exec.run(TaskId::new(), &spec, limits(60), &cancel).await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(docker_ids(&format!("label=ris.agent={}", owner.agent_id)).is_empty());
}

#[tokio::test]
async fn pull_of_a_missing_image_fails_with_the_engine_message() {
    let exec = DockerExecutor::new(Engine::new(common::docker::SOCKET), owner());
    let (_, r) = run(
        &exec,
        json!({"op": "pull", "image": "ris-test/does-not-exist:1"}),
        60,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.reason.as_deref(), Some("image_pull_failed"));
    assert!(!r.error.clone().unwrap_or_default().is_empty());
    let (_, r) = run(
        &exec,
        json!({"op": "run", "image": "ris-test/does-not-exist:1"}),
        60,
    )
    .await;
    assert_eq!(r.reason.as_deref(), Some("image_pull_failed"));
}

#[tokio::test]
async fn other_containers_cannot_be_stopped_removed_or_inspected() {
    common::docker::ensure_test_image();
    let plain = docker(&["run", "-d", IMAGE, "sleep", "300"]);
    let _foreign = Foreign(vec![plain.clone()]);
    let exec = DockerExecutor::new(Engine::new(common::docker::SOCKET), owner());
    for op in [
        json!({"op": "stop", "container": plain}),
        json!({"op": "rm", "container": plain, "force": true}),
        json!({"op": "inspect", "container": plain}),
    ] {
        let (_, r) = run(&exec, op.clone(), 10).await;
        assert_eq!(r.outcome, Outcome::Failed, "{op}");
        assert_eq!(r.reason.as_deref(), Some("not_managed"), "{op}");
    }
    assert_eq!(common::docker::inspect(&plain)["State"]["Running"], true);
}

#[tokio::test]
async fn logs_of_a_service_are_prefixed_by_container_name() {
    let mut h = Harness::new().await;
    let svc = name("talk");
    let s = spec(json!({
        "image": IMAGE,
        "command": ["sh", "-c", "echo hello from $HOSTNAME; echo oops >&2; sleep 300"],
        "replicas": 2,
    }));
    h.manager.apply(&svc, 1, &s).await.unwrap();
    let r = h
        .wait_for("talk", Duration::from_secs(30), |r| {
            r.state == InstanceState::Running && r.containers.len() == 2
        })
        .await;
    let exec = DockerExecutor::new(h.engine.clone(), h.owner.clone());
    let (_, t) = run(
        &exec,
        json!({"op": "logs", "service": "talk", "tail": 10}),
        10,
    )
    .await;
    assert_eq!(t.outcome, Outcome::Completed, "{t:?}");
    let out = output(&t);
    for c in &r.containers {
        assert!(
            out.stdout.contains(&format!("{} | hello from", c.name)),
            "{}",
            out.stdout
        );
        assert!(
            out.stderr.contains(&format!("{} | oops", c.name)),
            "{}",
            out.stderr
        );
    }
    // Another agent sees none of them.
    let stranger = DockerExecutor::new(h.engine.clone(), owner());
    let (_, t) = run(&stranger, json!({"op": "logs", "service": "talk"}), 10).await;
    assert_eq!(output(&t).stdout, "");
    // `since` in the future: nothing.
    let future = chrono::Utc::now().timestamp() + 3600;
    let (_, t) = run(
        &exec,
        json!({"op": "logs", "service": "talk", "since": future}),
        10,
    )
    .await;
    assert_eq!(output(&t).stdout, "");
}

#[tokio::test]
async fn no_engine_means_no_capability_and_docker_unavailable() {
    let socket = format!("/tmp/ris-no-docker-{}.sock", uuid::Uuid::new_v4());
    let engine = Engine::new(&socket);
    assert!(!engine.probe().await);
    let caps = heartbeat::capabilities(Some(&engine));
    assert!(!caps.iter().any(|c| c == "docker"), "{caps:?}");

    let real = Engine::new(common::docker::SOCKET);
    assert!(real.probe().await);
    assert!(heartbeat::capabilities(Some(&real))
        .iter()
        .any(|c| c == "docker"));

    let exec = DockerExecutor::new(engine.clone(), owner());
    for op in [json!({"op": "ps"}), json!({"op": "run", "image": IMAGE})] {
        let (_, r) = run(&exec, op, 10).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.reason.as_deref(), Some("docker_unavailable"));
        assert!(r.error.unwrap_or_default().contains(&socket));
    }

    let mut h = Harness::with_socket(&socket).await;
    h.manager
        .apply(&name("web"), 1, &spec(json!({"image": IMAGE})))
        .await
        .unwrap();
    let r = h
        .wait_for("web", Duration::from_secs(10), |r| {
            r.state == InstanceState::Failed
        })
        .await;
    assert_eq!(r.reason.as_deref(), Some("docker_unavailable"));
    assert!(r.containers.is_empty());
}

#[tokio::test]
async fn services_and_the_capability_recover_when_the_engine_comes_back() {
    let socket =
        std::env::temp_dir().join(format!("ris-late-docker-{}.sock", uuid::Uuid::new_v4()));
    let _link = RemoveOnDrop(socket.clone());
    let mut h = Harness::with_socket(socket.to_str().unwrap()).await;
    h.manager
        .apply(
            &name("late"),
            1,
            &spec(json!({"image": IMAGE, "command": ["sleep", "300"], "replicas": 2})),
        )
        .await
        .unwrap();
    let r = h
        .wait_for("late", Duration::from_secs(10), |r| {
            r.state == InstanceState::Failed
        })
        .await;
    assert_eq!(r.reason.as_deref(), Some("docker_unavailable"));
    assert!(!h.engine.probe().await);

    // The engine appears at the configured path.
    std::os::unix::fs::symlink(common::docker::SOCKET, &socket).unwrap();
    h.wait_for("late", Duration::from_secs(20), |r| {
        r.state == InstanceState::Running && r.containers.len() == 2
    })
    .await;
    assert!(h.engine.probe().await);
    assert!(heartbeat::capabilities(Some(&h.engine))
        .iter()
        .any(|c| c == "docker"));
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
