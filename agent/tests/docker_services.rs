//! Docker services against the real engine: the service manager is driven directly
//! (no broker), with its reports read from the sink. Each test has its own tenant and
//! agent id and removes its containers when it ends, failed or not.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::docker::{
    docker, docker_ids, http_status, inspect, name, running_ids, spec, Foreign, Harness, IMAGE,
};
use ris_agent::service::Applied;
use ris_schemas::service::{InstanceState, ServiceStatusReport};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// An HTTP service on the test image, checked on `/health`.
fn web(replicas: u32, version: &str, health_path: &str) -> serde_json::Value {
    json!({
        "image": IMAGE,
        "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "env": {"VERSION": version},
        "replicas": replicas,
        "health_check": {"http": {"port": 80, "path": health_path}, "interval_secs": 1, "retries": 2},
        "update": {"health_deadline_secs": 4},
        "limits": {"memory_bytes": 64 * 1024 * 1024, "cpus": 0.5},
    })
}

fn running_with(n: usize, revision: u32) -> impl Fn(&ServiceStatusReport) -> bool {
    move |r| {
        r.state == InstanceState::Running
            && r.revision == revision
            && r.containers.len() == n
            && r.containers
                .iter()
                .all(|c| c.state == "running" && c.health.as_deref() == Some("healthy"))
    }
}

fn ids(r: &ServiceStatusReport) -> BTreeSet<String> {
    r.containers.iter().map(|c| c.id.clone()).collect()
}

#[tokio::test]
async fn deploy_three_then_scale_to_five_and_one_without_replacing() {
    let mut h = Harness::new().await;
    let svc = name("web");
    let s1 = spec(web(3, "1", "/health"));
    h.manager.apply(&svc, 1, &s1).await.unwrap();
    let r = h.wait_for("web", WAIT, running_with(3, 1)).await;
    let first = ids(&r);
    assert_eq!(
        h.containers("web").into_iter().collect::<BTreeSet<_>>(),
        first
    );

    // Every container carries the labels that tie it to tenant, agent, service, revision.
    for id in &first {
        let labels = inspect(id)["Config"]["Labels"].clone();
        assert_eq!(labels["ris.managed"], "true");
        assert_eq!(labels["ris.tenant"], h.owner.tenant.as_str());
        assert_eq!(labels["ris.agent"], h.owner.agent_id.as_str());
        assert_eq!(labels["ris.service"], "web");
        assert_eq!(labels["ris.revision"], "1");
        assert_eq!(labels["ris.hash"], s1.container_hash().as_str());
        let host = inspect(id)["HostConfig"].clone();
        assert_eq!(host["Memory"], 64 * 1024 * 1024);
        assert_eq!(host["NanoCpus"], 500_000_000);
        assert_eq!(http_status(id, "/").await, 200);
    }
    let file = h.services_dir().join("web.json");
    assert!(file.exists(), "desired state on disk");

    h.manager
        .apply(&svc, 2, &s1.with_replicas(5.try_into().unwrap()))
        .await
        .unwrap();
    let r = h.wait_for("web", WAIT, running_with(5, 2)).await;
    assert!(first.is_subset(&ids(&r)), "scaling up replaced nothing");
    assert_eq!(r.desired_revision, 2);

    h.manager
        .apply(&svc, 3, &s1.with_replicas(1.try_into().unwrap()))
        .await
        .unwrap();
    let r = h.wait_for("web", WAIT, running_with(1, 3)).await;
    assert!(
        first.is_superset(&ids(&r)),
        "scaling down kept an original replica"
    );
    assert_eq!(h.containers("web").len(), 1);
    assert_eq!(r.restarts, 0);

    // Nothing changes, nothing is reported (the periodic report is 30 s away).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut spam = Vec::new();
    while let Ok(r) = h.reports.try_recv() {
        spam.push(r);
    }
    assert!(spam.is_empty(), "reports without a change: {spam:#?}");
}

#[tokio::test]
async fn rolling_update_to_a_healthy_revision_replaces_one_at_a_time() {
    let mut h = Harness::new().await;
    let svc = name("api");
    h.manager
        .apply(&svc, 1, &spec(web(3, "1", "/health")))
        .await
        .unwrap();
    let before = ids(&h.wait_for("api", WAIT, running_with(3, 1)).await);

    // Watch the engine during the update: never more than one extra replica, never
    // fewer than the desired count running.
    let agent = h.owner.agent_id.clone();
    let most = Arc::new(AtomicUsize::new(0));
    let least = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (most, least, stop) = (most.clone(), least.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.is_cancelled() {
                let all = docker_ids(&format!("label=ris.agent={agent}"));
                let running = running_ids(&format!("label=ris.agent={agent}")).len();
                most.fetch_max(all.len(), Ordering::Relaxed);
                least.fetch_min(running, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    h.manager
        .apply(&svc, 2, &spec(web(3, "2", "/health")))
        .await
        .unwrap();
    let r = h.wait_for("api", WAIT, running_with(3, 2)).await;
    stop.cancel();
    watcher.await.unwrap();
    assert!(ids(&r).is_disjoint(&before), "every replica replaced");
    assert!(r.containers.iter().all(|c| c.revision == 2));
    for c in &r.containers {
        let env = inspect(&c.id)["Config"]["Env"].clone();
        assert!(
            env.as_array().unwrap().iter().any(|e| e == "VERSION=2"),
            "{env}"
        );
    }
    assert!(
        most.load(Ordering::Relaxed) <= 4,
        "at most one surge replica"
    );
    assert!(
        least.load(Ordering::Relaxed) >= 3,
        "never below the desired count"
    );
    assert_eq!(h.containers("api").len(), 3);
}

#[tokio::test]
async fn unhealthy_update_is_rolled_back_with_old_replicas_serving() {
    let mut h = Harness::new().await;
    let svc = name("shop");
    h.manager
        .apply(&svc, 1, &spec(web(3, "1", "/health")))
        .await
        .unwrap();
    let old = ids(&h.wait_for("shop", WAIT, running_with(3, 1)).await);

    // Revision 2's health check can never pass (404).
    h.manager
        .apply(&svc, 2, &spec(web(3, "2", "/missing")))
        .await
        .unwrap();
    let r = h
        .wait_for("shop", WAIT, |r| r.state == InstanceState::RolledBack)
        .await;
    assert_eq!(r.reason.as_deref(), Some("health_check_failed"));
    assert_eq!(r.revision, 1, "running the previous revision");
    assert_eq!(r.desired_revision, 2);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("revision 2") && error.contains("404"),
        "{error}"
    );

    // The old replicas still serve, and revision 2 is not tried again.
    for _ in 0..6 {
        let now: BTreeSet<String> = h.containers("shop").into_iter().collect();
        assert_eq!(now, old, "only the old replicas exist");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in &old {
        assert_eq!(http_status(id, "/").await, 200, "old replica {id} serves");
        assert_eq!(inspect(id)["Config"]["Labels"]["ris.revision"], "1");
    }
    let r = h
        .wait_for("shop", WAIT, |r| {
            r.state == InstanceState::RolledBack && r.containers.len() == 3
        })
        .await;
    assert_eq!(ids(&r), old);

    // A newer revision is tried again.
    h.manager
        .apply(&svc, 3, &spec(web(3, "3", "/health")))
        .await
        .unwrap();
    let r = h.wait_for("shop", WAIT, running_with(3, 3)).await;
    assert!(ids(&r).is_disjoint(&old));
}

#[tokio::test]
async fn stop_first_update_that_fails_restores_the_removed_replica() {
    let mut h = Harness::new().await;
    let svc = name("solo");
    let mut v1 = web(2, "1", "/health");
    v1["update"]["max_surge"] = json!(0);
    v1["update"]["max_unavailable"] = json!(1);
    h.manager.apply(&svc, 1, &spec(v1.clone())).await.unwrap();
    h.wait_for("solo", WAIT, running_with(2, 1)).await;
    let mut v2 = web(2, "2", "/missing");
    v2["update"] = v1["update"].clone();
    h.manager.apply(&svc, 2, &spec(v2)).await.unwrap();
    h.wait_for("solo", WAIT, |r| r.state == InstanceState::RolledBack)
        .await;
    let r = h
        .wait_for("solo", WAIT, |r| {
            r.state == InstanceState::RolledBack
                && r.containers.len() == 2
                && r.containers
                    .iter()
                    .all(|c| c.revision == 1 && c.health.as_deref() == Some("healthy"))
        })
        .await;
    assert_eq!(r.revision, 1);
}

#[tokio::test]
async fn killed_or_removed_replicas_are_restored() {
    let mut h = Harness::new().await;
    let svc = name("heal");
    h.manager
        .apply(&svc, 1, &spec(web(2, "1", "/health")))
        .await
        .unwrap();
    let r = h.wait_for("heal", WAIT, running_with(2, 1)).await;
    let victim = r.containers[0].id.clone();

    docker(&["kill", &victim]);
    let r = h
        .wait_for("heal", Duration::from_secs(10), |r| {
            r.restarts >= 1
                && r.containers
                    .iter()
                    .any(|c| c.id == victim && c.state == "running" && c.restarts == 1)
        })
        .await;
    assert_eq!(r.containers.len(), 2);
    assert_eq!(inspect(&victim)["State"]["Running"], true);

    let gone = r.containers[1].id.clone();
    docker(&["rm", "-f", &gone]);
    let r = h
        .wait_for("heal", Duration::from_secs(10), |r| {
            r.restarts >= 2 && r.containers.len() == 2 && !r.containers.iter().any(|c| c.id == gone)
        })
        .await;
    assert_eq!(r.restarts, 2);
    h.wait_for("heal", WAIT, running_with(2, 1)).await;
}

#[tokio::test]
async fn desired_state_survives_an_agent_restart_and_remove_cleans_up() {
    let mut h = Harness::new().await;
    let svc = name("keep");
    h.manager
        .apply(&svc, 2, &spec(web(2, "1", "/health")))
        .await
        .unwrap();
    let before = ids(&h.wait_for("keep", WAIT, running_with(2, 2)).await);

    h.restart().await;
    assert_eq!(h.manager.services().await, vec![svc.clone()]);
    let r = h.wait_for("keep", WAIT, running_with(2, 2)).await;
    assert_eq!(ids(&r), before, "the same containers, nothing recreated");

    // A late, older order changes nothing.
    let stale = h
        .manager
        .apply(&svc, 1, &spec(web(5, "0", "/health")))
        .await
        .unwrap();
    assert_eq!(stale, Applied::Stale);
    let stale = h.manager.remove(&svc, 1).await.unwrap();
    assert_eq!(stale, Applied::Stale);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.containers("keep").len(), 2);

    assert_eq!(h.manager.remove(&svc, 3).await.unwrap(), Applied::Accepted);
    let r = h
        .wait_for("keep", WAIT, |r| r.state == InstanceState::Removed)
        .await;
    assert!(r.containers.is_empty());
    assert!(h.containers("keep").is_empty(), "no container left behind");
    for _ in 0..20 {
        if !h.services_dir().join("keep.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !h.services_dir().join("keep.json").exists(),
        "record deleted"
    );
    assert!(h.manager.services().await.is_empty());
}

#[tokio::test]
async fn missing_image_fails_with_image_pull_failed() {
    let mut h = Harness::new().await;
    let svc = name("ghost");
    let s = spec(json!({"image": "ris-test/does-not-exist:1", "replicas": 1}));
    h.manager.apply(&svc, 1, &s).await.unwrap();
    let r = h
        .wait_for("ghost", WAIT, |r| r.state == InstanceState::Failed)
        .await;
    assert_eq!(r.reason.as_deref(), Some("image_pull_failed"));
    assert!(!r.error.clone().unwrap_or_default().is_empty());
    assert!(h.containers("ghost").is_empty());
}

#[tokio::test]
async fn taken_host_port_fails_with_port_in_use() {
    let mut h = Harness::new().await;
    let port = 20000 + (std::process::id() % 20000) as u16;
    let squatter = docker(&[
        "run",
        "-d",
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let _foreign = Foreign(vec![squatter]);
    let svc = name("port");
    let s = spec(json!({
        "image": IMAGE,
        "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "ports": [{"container": 80, "host": port}],
    }));
    h.manager.apply(&svc, 1, &s).await.unwrap();
    let r = h
        .wait_for("port", WAIT, |r| r.state == InstanceState::Failed)
        .await;
    assert_eq!(r.reason.as_deref(), Some("port_in_use"), "{r:#?}");
    assert!(
        h.containers("port").is_empty(),
        "the container that could not start is gone"
    );
}

#[tokio::test]
async fn ephemeral_host_ports_are_reported() {
    let mut h = Harness::new().await;
    let svc = name("ports");
    let mut s = web(2, "1", "/health");
    s["ports"] = json!([{"container": 80}]);
    h.manager.apply(&svc, 1, &spec(s)).await.unwrap();
    let r = h.wait_for("ports", WAIT, running_with(2, 1)).await;
    for c in &r.containers {
        let port = c.ports.get("80/tcp").copied().expect("published port");
        assert!(port > 0);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let status = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
}

#[tokio::test]
async fn other_containers_are_never_touched() {
    let mut h = Harness::new().await;
    // Same service name and tenant, another agent; and one with no labels at all.
    let other = docker(&[
        "run",
        "-d",
        "--label",
        "ris.managed=true",
        "--label",
        &format!("ris.tenant={}", h.owner.tenant),
        "--label",
        "ris.agent=someone-else",
        "--label",
        "ris.service=web",
        IMAGE,
        "sleep",
        "300",
    ]);
    let plain = docker(&["run", "-d", IMAGE, "sleep", "300"]);
    let _foreign = Foreign(vec![other.clone(), plain.clone()]);

    let svc = name("web");
    h.manager
        .apply(&svc, 1, &spec(web(1, "1", "/health")))
        .await
        .unwrap();
    let r = h.wait_for("web", WAIT, running_with(1, 1)).await;
    assert!(!ids(&r).contains(&other));
    h.manager.remove(&svc, 2).await.unwrap();
    h.wait_for("web", WAIT, |r| r.state == InstanceState::Removed)
        .await;
    for id in [&other, &plain] {
        assert_eq!(inspect(id)["State"]["Running"], true, "{id} untouched");
    }
}
