//! Container and image operations, each sorted into a [`DockerError`] on failure.
//!
//! Everything that lists containers filters by this agent's labels and checks the
//! labels again on the answer; everything that changes a container takes it from such
//! a list or checks its labels first ([`owned`]).

use std::collections::{BTreeMap, HashMap};

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HealthConfig, HostConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions,
};
use futures::StreamExt;
use ris_schemas::service::{HealthCheck, Limits, PortMapping};

use super::{DockerError, Engine, Owner};

/// Nanoseconds in a second, for Docker's health check durations.
const NANOS: i64 = 1_000_000_000;

/// Everything that shapes a new container.
#[derive(Debug, Clone, Default)]
pub struct ContainerShape {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    /// Only a `cmd` check is handed to Docker; `http` checks are run by the agent.
    pub health_check: Option<HealthCheck>,
    pub limits: Limits,
    pub labels: HashMap<String, String>,
}

impl ContainerShape {
    fn body(&self) -> ContainerCreateBody {
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        for p in &self.ports {
            let key = format!("{}/{}", p.container.get(), p.protocol.as_str());
            exposed.push(key.clone());
            let binding = PortBinding {
                host_ip: None,
                host_port: Some(p.host.map(|h| h.get().to_string()).unwrap_or_default()),
            };
            bindings.insert(key, Some(vec![binding]));
        }
        let healthcheck = self
            .health_check
            .as_ref()
            .and_then(|hc| hc.cmd.as_ref().map(|cmd| (hc, cmd)))
            .map(|(hc, cmd)| HealthConfig {
                test: Some(
                    std::iter::once("CMD".to_owned())
                        .chain(cmd.iter().cloned())
                        .collect(),
                ),
                interval: Some(i64::from(hc.interval_secs) * NANOS),
                timeout: Some(i64::from(hc.timeout_secs) * NANOS),
                retries: Some(i64::from(hc.retries)),
                ..HealthConfig::default()
            });
        let host_config = HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            memory: self.limits.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: self.limits.cpus.map(|c| (c * 1e9).round() as i64),
            ..HostConfig::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            labels: Some(self.labels.clone()),
            healthcheck,
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }
}

/// `name` → `name:latest` when it names neither a tag nor a digest (the engine would
/// otherwise pull every tag).
pub fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// True when the image is on the machine.
pub async fn has_image(engine: &Engine, image: &str) -> Result<bool, DockerError> {
    let docker = engine.client().await?;
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) => match engine.fail(e).await {
            e if e.is_not_found() => Ok(false),
            e => Err(e),
        },
    }
}

/// Pulls `image`; the engine's last status line on success.
pub async fn pull(engine: &Engine, image: &str) -> Result<String, DockerError> {
    let docker = engine.client().await?;
    let options = CreateImageOptions {
        from_image: Some(with_tag(image)),
        ..CreateImageOptions::default()
    };
    let mut stream = docker.create_image(Some(options), None, None);
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status {
                    last = status;
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(DockerError::PullFailed(error))
            }
            Err(e) => {
                return Err(match engine.fail(e).await {
                    DockerError::Engine { message, .. } | DockerError::PortInUse(message) => {
                        DockerError::PullFailed(message)
                    }
                    other => other,
                })
            }
        }
    }
    Ok(last)
}

/// Pulls `image` unless it is already there.
pub async fn ensure_image(engine: &Engine, image: &str) -> Result<(), DockerError> {
    if !has_image(engine, image).await? {
        tracing::info!(image, "image missing; pulling");
        pull(engine, image).await?;
    }
    Ok(())
}

/// Creates and starts a container; a container that cannot start is removed. Returns
/// its id.
pub async fn create_and_start(
    engine: &Engine,
    shape: &ContainerShape,
) -> Result<String, DockerError> {
    let docker = engine.client().await?;
    let options = CreateContainerOptions {
        name: Some(shape.name.clone()),
        ..CreateContainerOptions::default()
    };
    let created = match docker.create_container(Some(options), shape.body()).await {
        Ok(c) => c,
        Err(e) => {
            return Err(match engine.fail(e).await {
                DockerError::Engine { message, .. } => DockerError::CreateFailed(message),
                other => other,
            })
        }
    };
    if let Err(e) = docker.start_container(&created.id, None).await {
        let err = engine.fail(e).await;
        if let Err(rm) = remove(engine, &created.id).await {
            tracing::warn!(container = %created.id, error = %rm, "cannot remove a container that failed to start");
        }
        return Err(err);
    }
    Ok(created.id)
}

/// Starts an existing (stopped) container.
pub async fn start(engine: &Engine, id: &str) -> Result<(), DockerError> {
    let docker = engine.client().await?;
    match docker.start_container(id, None).await {
        Ok(()) => Ok(()),
        Err(e) => Err(engine.fail(e).await),
    }
}

/// This agent's containers carrying the `extra` labels (`all`: stopped ones too).
pub async fn list(
    engine: &Engine,
    owner: &Owner,
    extra: &[(&str, &str)],
    all: bool,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let docker = engine.client().await?;
    let options = ListContainersOptions {
        all,
        filters: Some(owner.filters(extra)),
        ..ListContainersOptions::default()
    };
    match docker.list_containers(Some(options)).await {
        // The filter did the work; the check keeps a filter mistake from ever reaching
        // a container that is not ours.
        Ok(list) => Ok(list
            .into_iter()
            .filter(|c| owner.owns(c.labels.as_ref()))
            .collect()),
        Err(e) => Err(engine.fail(e).await),
    }
}

pub async fn inspect(engine: &Engine, id: &str) -> Result<ContainerInspectResponse, DockerError> {
    let docker = engine.client().await?;
    match docker.inspect_container(id, None).await {
        Ok(c) => Ok(c),
        Err(e) => Err(engine.fail(e).await),
    }
}

/// Inspects `id` and checks it is this agent's.
pub async fn owned(
    engine: &Engine,
    owner: &Owner,
    id: &str,
) -> Result<ContainerInspectResponse, DockerError> {
    let c = inspect(engine, id).await?;
    let labels = c.config.as_ref().and_then(|cfg| cfg.labels.as_ref());
    if owner.owns(labels) {
        Ok(c)
    } else {
        Err(DockerError::NotManaged(id.to_owned()))
    }
}

/// Force-removes a container (and its anonymous volumes); gone already is fine.
pub async fn remove(engine: &Engine, id: &str) -> Result<(), DockerError> {
    let docker = engine.client().await?;
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) => match engine.fail(e).await {
            e if e.is_not_found() => Ok(()),
            // "removal already in progress"
            DockerError::Engine { status: 409, .. } => Ok(()),
            e => Err(e),
        },
    }
}

/// Captured output of a container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Logs {
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// The logs of `id`: the last `tail` lines (all when `None`), since `since` (unix
/// seconds); each stream capped at `cap` bytes (the first bytes are kept).
pub async fn logs(
    engine: &Engine,
    id: &str,
    tail: Option<u32>,
    since: Option<i64>,
    cap: usize,
) -> Result<Logs, DockerError> {
    let docker = engine.client().await?;
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: tail.map_or_else(|| "all".to_owned(), |t| t.to_string()),
        since: since
            .map(|s| i32::try_from(s.max(0)).unwrap_or(i32::MAX))
            .unwrap_or(0),
        ..LogsOptions::default()
    };
    let mut stream = docker.logs(id, Some(options));
    let mut out = Logs::default();
    while let Some(item) = stream.next().await {
        let (buf, bytes) = match item {
            Ok(LogOutput::StdErr { message }) => (&mut out.stderr, message),
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (&mut out.stdout, message)
            }
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => return Err(engine.fail(e).await),
        };
        if !push_capped(buf, &bytes, cap) {
            out.truncated = true;
        }
    }
    Ok(out)
}

/// Appends as much of `bytes` as fits in `cap`; false when something was cut.
pub fn push_capped(buf: &mut String, bytes: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= room {
        buf.push_str(&text);
        return true;
    }
    let mut end = room;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    buf.push_str(&text[..end]);
    false
}

/// The container's first name without Docker's leading `/`.
pub fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

/// `"<container>/<proto>" -> host port` of a running container.
pub fn published_ports(c: &ContainerInspectResponse) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    let ports = c.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    for (key, bindings) in ports.into_iter().flatten() {
        let host = bindings
            .iter()
            .flatten()
            .find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()));
        if let Some(host) = host {
            out.insert(key.clone(), host);
        }
    }
    out
}

/// The container's address on its (first) network.
pub fn container_ip(c: &ContainerInspectResponse) -> Option<String> {
    let networks = c.network_settings.as_ref()?.networks.as_ref()?;
    networks
        .values()
        .filter_map(|n| n.ip_address.clone())
        .find(|ip| !ip.is_empty())
}
