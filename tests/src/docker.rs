//! Docker helpers for end-to-end tests: the local test image and the containers agents
//! made.
//!
//! No registry is reachable here, so services run [`TEST_IMAGE`], built locally by
//! `scripts/test-image.sh` (busybox: `httpd -f -p 80 -h /www` serves `/index.html` and
//! `/health`). Agents label every container (`ris.managed`, `ris.tenant`, `ris.agent`,
//! `ris.service`, `ris.revision`, `ris.hash`), which is how tests find them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The image services in tests run.
pub const TEST_IMAGE: &str = "ris-test/busybox:1";

/// Builds [`TEST_IMAGE`] once per process (the script itself is idempotent and takes a
/// lock, so parallel test processes are fine).
pub fn ensure_test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run scripts/test-image.sh");
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// One container as `docker inspect` shows it.
#[derive(Debug, Clone)]
pub struct DockerContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// `running`, `exited`, ...
    pub state: String,
    pub labels: BTreeMap<String, String>,
    /// The raw `docker inspect` document.
    pub inspect: Value,
}

impl DockerContainer {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// Containers (running or not) matching every label filter in `label_filter`,
/// comma-separated: `"ris.tenant=acme,ris.service=web"`, or a bare key (`"ris.managed"`).
pub fn docker_containers(label_filter: &str) -> Vec<DockerContainer> {
    let mut args = vec!["ps".to_owned(), "-aq".to_owned(), "--no-trunc".to_owned()];
    for f in label_filter
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        args.push("--filter".to_owned());
        args.push(format!("label={f}"));
    }
    let out = Command::new("docker")
        .args(&args)
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut found = Vec::new();
    for id in ids {
        // One at a time: a container removed meanwhile is simply skipped.
        let out = Command::new("docker")
            .args(["inspect", &id])
            .output()
            .expect("docker inspect");
        if !out.status.success() {
            continue;
        }
        let Ok(Value::Array(mut docs)) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue;
        };
        let Some(doc) = docs.pop() else { continue };
        let labels = doc["Config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        found.push(DockerContainer {
            id: doc["Id"].as_str().unwrap_or(&id).to_owned(),
            name: doc["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            state: doc["State"]["Status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            labels,
            inspect: doc,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// `docker kill` (the agent should restore the container).
pub fn docker_kill(id: &str) {
    let out = Command::new("docker")
        .args(["kill", id])
        .output()
        .expect("docker kill");
    assert!(
        out.status.success(),
        "docker kill {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Force-removes every container matching `label_filter` (as [`docker_containers`]).
pub fn docker_rm_all(label_filter: &str) {
    for c in docker_containers(label_filter) {
        let _ = Command::new("docker").args(["rm", "-f", &c.id]).output();
    }
}

/// Removes every container matching the label filters it was given when dropped, so a
/// failed test leaves nothing behind.
///
/// Declare it *before* the [`System`](crate::System) and the agents, so that it is
/// dropped after them (an agent still running when the sweep happens may create a
/// container right after it), and add filters as ids become known:
///
/// ```ignore
/// let cleanup = DockerCleanup::default();
/// let system = System::start().await;
/// let tenant = system.tenant().await;
/// let agent = tenant.agent("docker-1", &["role=web"], 2).await;
/// cleanup.add(format!("ris.agent={}", agent.id));
/// ```
#[derive(Default)]
pub struct DockerCleanup(std::sync::Mutex<Vec<String>>);

impl DockerCleanup {
    pub fn new(label_filter: impl Into<String>) -> Self {
        let cleanup = Self::default();
        cleanup.add(label_filter);
        cleanup
    }

    pub fn add(&self, label_filter: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(label_filter.into());
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let filters = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for f in filters {
            docker_rm_all(&f);
        }
    }
}
