//! Is a replica healthy?
//!
//! A replica is healthy when it runs and, with a health check, passes it: an `http`
//! check is run by the agent (`GET http://<container address>:<port><path>`, 2xx), a
//! `cmd` check by Docker itself (the agent reads `State.Health.Status`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::ContainerInspectResponse;
use ris_schemas::service::{HealthCheck, HttpHealthCheck};

use crate::docker::containers;

/// Result of one look at a replica's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    /// Not (yet) passing; why.
    NotYet(String),
}

/// One HTTP check against a container.
pub async fn http_check(
    client: &reqwest::Client,
    c: &ContainerInspectResponse,
    check: &HttpHealthCheck,
    timeout: Duration,
) -> Probe {
    let Some(ip) = containers::container_ip(c) else {
        return Probe::NotYet("the container has no network address".to_owned());
    };
    let url = format!("http://{ip}:{}{}", check.port.get(), check.path);
    match client.get(&url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() => Probe::Healthy,
        Ok(r) => Probe::NotYet(format!("GET {url} answered {}", r.status())),
        Err(e) => Probe::NotYet(format!(
            "GET {url} failed: {}",
            crate::executor::error_chain(&e)
        )),
    }
}

/// Docker's own verdict on a `cmd` check.
pub fn docker_health(c: &ContainerInspectResponse) -> Option<String> {
    c.state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| s.to_string())
}

/// True when the container runs.
pub fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// One look at a replica: running, and passing its check when it has one.
pub async fn probe_once(
    client: &reqwest::Client,
    c: &ContainerInspectResponse,
    check: Option<&HealthCheck>,
) -> Probe {
    if !is_running(c) {
        let code = c.state.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
        return Probe::NotYet(format!("the container is not running (exit code {code})"));
    }
    match check {
        None => Probe::Healthy,
        Some(HealthCheck {
            http: Some(http),
            timeout_secs,
            ..
        }) => {
            http_check(
                client,
                c,
                http,
                Duration::from_secs(u64::from(*timeout_secs)),
            )
            .await
        }
        Some(_) => match docker_health(c).as_deref() {
            Some("healthy") => Probe::Healthy,
            other => Probe::NotYet(format!(
                "docker health status is {}",
                other.unwrap_or("unknown")
            )),
        },
    }
}

/// The running tally of a replica's HTTP checks (steady state, outside updates), with
/// Docker's semantics: `starting` until the first pass, `unhealthy` after `retries`
/// failures in a row.
#[derive(Debug, Default)]
pub struct HttpTally {
    per_container: HashMap<String, Tally>,
}

#[derive(Debug)]
struct Tally {
    failures: u32,
    passed_once: bool,
    last: Instant,
}

impl HttpTally {
    /// Checks `c` when its interval has elapsed and returns its health word.
    pub async fn health(
        &mut self,
        client: &reqwest::Client,
        id: &str,
        c: &ContainerInspectResponse,
        check: &HealthCheck,
        http: &HttpHealthCheck,
    ) -> String {
        let interval = Duration::from_secs(u64::from(check.interval_secs));
        let due = self
            .per_container
            .get(id)
            .is_none_or(|t| t.last.elapsed() >= interval);
        if due {
            let timeout = Duration::from_secs(u64::from(check.timeout_secs));
            let passed = http_check(client, c, http, timeout).await == Probe::Healthy;
            let t = self.per_container.entry(id.to_owned()).or_insert(Tally {
                failures: 0,
                passed_once: false,
                last: Instant::now(),
            });
            t.last = Instant::now();
            if passed {
                t.failures = 0;
                t.passed_once = true;
            } else {
                t.failures += 1;
            }
        }
        match self.per_container.get(id) {
            Some(t) if t.failures >= check.retries => "unhealthy",
            Some(t) if t.passed_once => "healthy",
            _ => "starting",
        }
        .to_owned()
    }

    /// Marks `id` as passing (it was just checked healthy during an update).
    pub fn passed(&mut self, id: &str) {
        self.per_container.insert(
            id.to_owned(),
            Tally {
                failures: 0,
                passed_once: true,
                last: Instant::now(),
            },
        );
    }

    /// Forgets containers that are gone.
    pub fn retain(&mut self, live: &[&str]) {
        self.per_container
            .retain(|id, _| live.contains(&id.as_str()));
    }
}
