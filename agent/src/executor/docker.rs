//! One-off `docker` tasks: pull, run, ps, inspect, stop, rm, images, logs.
//!
//! Same contract as the other executors: never fails, never panics; a timeout or a
//! cancel ends the task (`timed_out` / `cancelled`), and a `run` container is then
//! killed and removed. Engine failures carry the docker reason codes
//! (`docker_unavailable`, `image_pull_failed`, `port_in_use`, `not_managed`, ...).
//!
//! Only containers this agent created are listed, inspected, stopped or removed (see
//! [`crate::docker::labels`]).

use std::time::{Duration, Instant};

use bollard::query_parameters::{ListImagesOptions, StopContainerOptions};
use ris_schemas::docker::{DockerOutput, DockerRun, DockerSpec};
use ris_schemas::ids::TaskId;
use ris_schemas::service::ServiceName;
use ris_schemas::task::{Outcome, TaskOutput, TaskResult};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{elapsed_ms, reason, unsuccessful, Limits};
use crate::docker::containers::{self, ContainerShape};
use crate::docker::{labels, DockerError, Engine, Owner};

/// How often a `run` container is looked at while it runs.
const POLL: Duration = Duration::from_millis(200);
/// Default grace of `stop`.
const DEFAULT_STOP_GRACE_SECS: u32 = 10;

#[derive(Clone)]
pub struct DockerExecutor {
    engine: Engine,
    owner: Owner,
}

impl DockerExecutor {
    pub fn new(engine: Engine, owner: Owner) -> Self {
        Self { engine, owner }
    }

    #[tracing::instrument(skip_all, fields(tenant = %self.owner.tenant, agent_id = %self.owner.agent_id, task_id = %task_id, op = spec.op()))]
    pub async fn run(
        &self,
        task_id: TaskId,
        spec: &DockerSpec,
        limits: Limits,
        cancel: &CancellationToken,
    ) -> TaskResult {
        let started = Instant::now();
        // Named up front so a timeout or cancel can find what `run` created.
        let name = format!("ris-task-{}-{}", task_id, short_id());
        let work = self.op(task_id, spec, limits, &name);
        let ended = tokio::select! {
            r = work => Ok(r),
            _ = tokio::time::sleep(limits.timeout) => Err(Outcome::TimedOut),
            _ = cancel.cancelled() => Err(Outcome::Cancelled),
        };
        match ended {
            Ok(Ok((outcome, output))) => {
                let (reason, error) = match (&outcome, output.exit_code) {
                    (Outcome::Completed, _) => (None, None),
                    (_, Some(code)) => (
                        Some(reason::EXIT_STATUS.to_owned()),
                        Some(format!("the container exited with code {code}")),
                    ),
                    _ => (None, None),
                };
                TaskResult {
                    outcome,
                    reason,
                    error,
                    duration_ms: elapsed_ms(started),
                    output: TaskOutput::Docker(output),
                }
            }
            Ok(Err(e)) => unsuccessful(
                Outcome::Failed,
                e.reason(),
                e.to_string(),
                started,
                TaskOutput::None,
            ),
            Err(outcome) => {
                if matches!(spec, DockerSpec::Run(_)) {
                    if let Err(e) = containers::remove(&self.engine, &name).await {
                        tracing::warn!(container = %name, error = %e, "cannot remove the container of a stopped run");
                    }
                }
                let (why, text) = if outcome == Outcome::TimedOut {
                    (
                        reason::TIMEOUT,
                        format!("timed out after {:?}", limits.timeout),
                    )
                } else {
                    (reason::CANCELLED, "cancelled".to_owned())
                };
                unsuccessful(outcome, why, text, started, TaskOutput::None)
            }
        }
    }

    async fn op(
        &self,
        task_id: TaskId,
        spec: &DockerSpec,
        limits: Limits,
        name: &str,
    ) -> Result<(Outcome, DockerOutput), DockerError> {
        let done = |data: Value| {
            Ok((
                Outcome::Completed,
                DockerOutput {
                    data,
                    ..DockerOutput::default()
                },
            ))
        };
        match spec {
            DockerSpec::Pull { image } => {
                let status = containers::pull(&self.engine, image).await?;
                done(json!({ "image": image, "status": status }))
            }
            DockerSpec::Run(run) => self.run_container(task_id, run, limits, name).await,
            DockerSpec::Ps { all } => done(self.ps(*all).await?),
            DockerSpec::Inspect { container } => {
                let c = containers::owned(&self.engine, &self.owner, container).await?;
                done(inspect_view(&c))
            }
            DockerSpec::Stop {
                container,
                timeout_secs,
            } => {
                containers::owned(&self.engine, &self.owner, container).await?;
                let grace = timeout_secs.unwrap_or(DEFAULT_STOP_GRACE_SECS);
                let docker = self.engine.client().await?;
                let options = StopContainerOptions {
                    t: Some(i32::try_from(grace).unwrap_or(i32::MAX)),
                    ..StopContainerOptions::default()
                };
                if let Err(e) = docker.stop_container(container, Some(options)).await {
                    return Err(self.engine.fail(e).await);
                }
                done(json!({ "stopped": container }))
            }
            DockerSpec::Rm { container, force } => {
                let c = containers::owned(&self.engine, &self.owner, container).await?;
                let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                if running && !*force {
                    return Err(DockerError::Engine {
                        status: 409,
                        message: format!("container {container} is running; pass force"),
                    });
                }
                containers::remove(&self.engine, container).await?;
                done(json!({ "removed": container }))
            }
            DockerSpec::Images {} => done(self.images().await?),
            DockerSpec::Logs {
                service,
                tail,
                since,
            } => {
                let output = self
                    .service_logs(service, *tail, *since, limits.output_cap)
                    .await?;
                Ok((Outcome::Completed, output))
            }
        }
    }

    async fn run_container(
        &self,
        task_id: TaskId,
        run: &DockerRun,
        limits: Limits,
        name: &str,
    ) -> Result<(Outcome, DockerOutput), DockerError> {
        containers::ensure_image(&self.engine, &run.image).await?;
        let shape = ContainerShape {
            name: name.to_owned(),
            image: run.image.clone(),
            command: run.command.clone(),
            entrypoint: run.entrypoint.clone(),
            env: run.env.clone(),
            ports: run.ports.clone(),
            labels: self.owner.labels(&[(labels::TASK, task_id.to_string())]),
            ..ContainerShape::default()
        };
        let id = containers::create_and_start(&self.engine, &shape).await?;
        let exit_code = loop {
            let c = containers::inspect(&self.engine, &id).await?;
            let state = c.state.unwrap_or_default();
            if !state.running.unwrap_or(false) && !state.restarting.unwrap_or(false) {
                break state.exit_code.unwrap_or(-1);
            }
            tokio::time::sleep(POLL).await;
        };
        let logs = containers::logs(&self.engine, &id, None, None, limits.output_cap).await?;
        if !run.keep {
            containers::remove(&self.engine, &id).await?;
        }
        let outcome = if exit_code == 0 {
            Outcome::Completed
        } else {
            Outcome::Failed
        };
        Ok((
            outcome,
            DockerOutput {
                exit_code: Some(exit_code),
                stdout: logs.stdout,
                stderr: logs.stderr,
                truncated: logs.truncated,
                data: json!({ "container": { "id": id, "name": name, "kept": run.keep } }),
            },
        ))
    }

    async fn ps(&self, all: bool) -> Result<Value, DockerError> {
        let list = containers::list(&self.engine, &self.owner, &[], all).await?;
        Ok(Value::Array(
            list.iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "name": containers::summary_name(c),
                        "image": c.image,
                        "state": c.state.map(|s| s.to_string()),
                        "status": c.status,
                        "created": c.created,
                        "labels": c.labels,
                    })
                })
                .collect(),
        ))
    }

    async fn images(&self) -> Result<Value, DockerError> {
        let docker = self.engine.client().await?;
        let images = match docker.list_images(None::<ListImagesOptions>).await {
            Ok(i) => i,
            Err(e) => return Err(self.engine.fail(e).await),
        };
        Ok(Value::Array(
            images
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id,
                        "tags": i.repo_tags,
                        "size": i.size,
                        "created": i.created,
                    })
                })
                .collect(),
        ))
    }

    /// Logs of the service's containers on this agent, each line prefixed by the
    /// container name; the whole answer capped at `cap` bytes per stream.
    pub async fn service_logs(
        &self,
        service: &ServiceName,
        tail: Option<u32>,
        since: Option<i64>,
        cap: usize,
    ) -> Result<DockerOutput, DockerError> {
        let mut list = containers::list(
            &self.engine,
            &self.owner,
            &[(labels::SERVICE, service.as_str())],
            true,
        )
        .await?;
        list.sort_by_key(containers::summary_name);
        let mut out = DockerOutput::default();
        for c in &list {
            let Some(id) = c.id.as_deref() else { continue };
            let name = containers::summary_name(c);
            let logs = match containers::logs(&self.engine, id, tail, since, cap).await {
                Ok(l) => l,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            for (text, buf) in [
                (&logs.stdout, &mut out.stdout),
                (&logs.stderr, &mut out.stderr),
            ] {
                for line in text.lines() {
                    let line = format!("{name} | {line}\n");
                    if !containers::push_capped(buf, line.as_bytes(), cap) {
                        out.truncated = true;
                    }
                }
            }
            out.truncated |= logs.truncated;
        }
        out.data =
            json!({ "containers": list.iter().map(containers::summary_name).collect::<Vec<_>>() });
        Ok(out)
    }
}

/// The useful part of `docker inspect`.
fn inspect_view(c: &bollard::models::ContainerInspectResponse) -> Value {
    let state = c.state.as_ref();
    json!({
        "id": c.id,
        "name": c.name.as_deref().map(|n| n.trim_start_matches('/')),
        "image": c.config.as_ref().and_then(|cfg| cfg.image.clone()),
        "created": c.created,
        "state": {
            "status": state.and_then(|s| s.status).map(|s| s.to_string()),
            "running": state.and_then(|s| s.running),
            "exit_code": state.and_then(|s| s.exit_code),
            "started_at": state.and_then(|s| s.started_at.clone()),
            "finished_at": state.and_then(|s| s.finished_at.clone()),
            "health": state.and_then(|s| s.health.as_ref()).and_then(|h| h.status).map(|s| s.to_string()),
        },
        "labels": c.config.as_ref().and_then(|cfg| cfg.labels.clone()),
        "ports": containers::published_ports(c),
        "ip": containers::container_ip(c),
    })
}

/// 8 random hex characters.
pub(crate) fn short_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..8].to_owned()
}
