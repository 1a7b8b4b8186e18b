//! A harness for tests against the real Docker engine: a service manager on a fresh
//! state directory with a unique tenant and agent id, its reports, and a guard that
//! removes every container carrying that agent id, even when the test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ris_agent::docker::{Engine, Owner};
use ris_agent::service::{ServiceConfig, ServiceManager, ServiceTimings};
use ris_schemas::service::{ServiceName, ServiceSpec, ServiceStatusReport};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::TempDir;

pub const IMAGE: &str = "ris-test/busybox:1";
pub const SOCKET: &str = "/var/run/docker.sock";

/// Builds the test image once per process (the script is idempotent and locked).
pub fn ensure_test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-image.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run test-image.sh");
        assert!(
            out.status.success(),
            "test-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `docker rm -f` of every container labelled `ris.agent=<id>` on drop.
pub struct ContainersGuard(pub String);

impl Drop for ContainersGuard {
    fn drop(&mut self) {
        for id in docker_ids(&format!("label=ris.agent={}", self.0)) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

/// Removes the listed containers on drop (foreign containers a test made).
pub struct Foreign(pub Vec<String>);

impl Drop for Foreign {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker cli");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ids (full) of every container, running or not, matching a `--filter`.
pub fn docker_ids(filter: &str) -> Vec<String> {
    ps_ids(&["-a", "--filter", filter])
}

/// Ids of the running containers matching a `--filter`.
pub fn running_ids(filter: &str) -> Vec<String> {
    ps_ids(&["--filter", filter, "--filter", "status=running"])
}

fn ps_ids(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--no-trunc"])
        .args(args)
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `docker inspect` of one container.
pub fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let mut v: Value = serde_json::from_str(&text).expect("inspect json");
    v[0].take()
}

pub fn spec(v: Value) -> ServiceSpec {
    serde_json::from_value(v).expect("valid spec")
}

pub fn name(s: &str) -> ServiceName {
    ServiceName::parse(s).expect("service name")
}

pub fn fast_timings() -> ServiceTimings {
    ServiceTimings {
        tick: Duration::from_millis(500),
        report_every: Duration::from_secs(30),
        health_poll: Duration::from_millis(200),
        retry_min: Duration::from_millis(300),
        retry_max: Duration::from_secs(2),
    }
}

/// A service manager as an agent runs it, without the broker.
pub struct Harness {
    pub dir: TempDir,
    pub owner: Owner,
    pub engine: Engine,
    pub manager: ServiceManager,
    pub reports: UnboundedReceiver<ServiceStatusReport>,
    pub stop: CancellationToken,
    pub latest: HashMap<ServiceName, ServiceStatusReport>,
    pub guard: ContainersGuard,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_socket(SOCKET).await
    }

    pub async fn with_socket(socket: &str) -> Self {
        ensure_test_image();
        let owner = Owner::new(
            format!("t{:08x}", rand_u32()),
            uuid::Uuid::new_v4().to_string(),
        );
        let guard = ContainersGuard(owner.agent_id.clone());
        let dir = TempDir::new();
        let engine = Engine::new(socket);
        let (manager, reports, stop) = start(&dir, &owner, &engine).await;
        Self {
            dir,
            owner,
            engine,
            manager,
            reports,
            stop,
            latest: HashMap::new(),
            guard,
        }
    }

    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    /// Stops the manager (as an agent stop does) and starts a new one on the same
    /// directory, as the next agent run would.
    pub async fn restart(&mut self) {
        self.manager.wait().await;
        let (manager, reports, stop) = start(&self.dir, &self.owner, &self.engine).await;
        self.manager = manager;
        self.reports = reports;
        self.stop = stop;
        self.latest.clear();
    }

    /// Waits for a report of `service` that satisfies `pred`; panics with the last one
    /// seen after `timeout`.
    pub async fn wait_for(
        &mut self,
        service: &str,
        timeout: Duration,
        pred: impl Fn(&ServiceStatusReport) -> bool,
    ) -> ServiceStatusReport {
        let service = name(service);
        let deadline = Instant::now() + timeout;
        if let Some(r) = self.latest.get(&service) {
            if pred(r) {
                return r.clone();
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reports.recv()).await {
                Ok(Some(r)) => {
                    let matches = r.service == service && pred(&r);
                    self.latest.insert(r.service.clone(), r.clone());
                    if matches {
                        return r;
                    }
                }
                Ok(None) => panic!("report channel closed"),
                Err(_) => panic!(
                    "no matching report for {service} within {timeout:?}; last: {:#?}",
                    self.latest.get(&service)
                ),
            }
        }
    }

    /// This agent's containers of `service` (ids), any state.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let agent = format!("label=ris.agent={}", self.owner.agent_id);
        let service = format!("label=ris.service={service}");
        let mut ids = ps_ids(&["-a", "--filter", &agent, "--filter", &service]);
        ids.sort();
        ids
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // No reconciler pass after this; the guard (a field, dropped next) sweeps.
        self.stop.cancel();
    }
}

async fn start(
    dir: &TempDir,
    owner: &Owner,
    engine: &Engine,
) -> (
    ServiceManager,
    UnboundedReceiver<ServiceStatusReport>,
    CancellationToken,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let config = ServiceConfig {
        dir: dir.path().join("services"),
        owner: owner.clone(),
        engine: engine.clone(),
        timings: fast_timings(),
    };
    let manager = ServiceManager::launch(config, tx, stop.clone())
        .await
        .expect("service manager");
    (manager, rx, stop)
}

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4();
    u32::from_le_bytes(b.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// The container's bridge address.
pub fn ip_of(id: &str) -> String {
    let v = inspect(id);
    v["NetworkSettings"]["Networks"]
        .as_object()
        .and_then(|n| {
            n.values()
                .find_map(|e| e["IPAddress"].as_str().map(str::to_owned))
        })
        .filter(|ip| !ip.is_empty())
        .expect("container ip")
}

/// GET `http://<container ip>/<path>`: the status code, or 0 when nothing answers.
pub async fn http_status(id: &str, path: &str) -> u16 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    match client
        .get(format!("http://{}:80{path}", ip_of(id)))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}
