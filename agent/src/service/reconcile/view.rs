//! What the reconciler sees and says: the service's containers with their health, and
//! the status report built from them.

use chrono::{DateTime, Utc};
use ris_schemas::service::{ContainerStatus, InstanceState, ServiceStatusReport};

use super::{Reconciler, Replica};
use crate::docker::{containers, labels, DockerError};
use crate::service::health;
use crate::service::record::{Revision, ServiceRecord};

impl Reconciler {
    /// The service's containers on this agent, with their health, also kept as the
    /// report's view.
    pub(super) async fn observe(
        &mut self,
        target: Option<&Revision>,
    ) -> Result<Vec<Replica>, DockerError> {
        let engine = &self.ctx.config.engine;
        let owner = &self.ctx.config.owner;
        let list = containers::list(
            engine,
            owner,
            &[(labels::SERVICE, self.service.as_str())],
            true,
        )
        .await?;
        let mut replicas = Vec::with_capacity(list.len());
        for summary in &list {
            let Some(id) = summary.id.clone() else {
                continue;
            };
            let inspect = match containers::inspect(engine, &id).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let label = |k: &str| summary.labels.as_ref().and_then(|l| l.get(k)).cloned();
            replicas.push(Replica {
                name: containers::summary_name(summary),
                slot: label(labels::SLOT).and_then(|s| s.parse().ok()),
                hash: label(labels::HASH).unwrap_or_default(),
                revision: label(labels::REVISION)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                running: health::is_running(&inspect),
                health: None,
                inspect,
                id,
            });
        }
        let ids: Vec<&str> = replicas.iter().map(|r| r.id.as_str()).collect();
        self.tally.retain(&ids);
        let target_hash = target.map(|t| t.spec.container_hash());
        for r in &mut replicas {
            let check = target
                .filter(|_| Some(&r.hash) == target_hash.as_ref())
                .and_then(|t| t.spec.get().health_check.as_ref());
            r.health = match check {
                Some(hc) if r.running => match &hc.http {
                    Some(http) => Some(
                        self.tally
                            .health(&self.ctx.http, &r.id, &r.inspect, hc, http)
                            .await,
                    ),
                    None => health::docker_health(&r.inspect),
                },
                _ => health::docker_health(&r.inspect).filter(|h| h != "none"),
            };
        }
        self.view = replicas.iter().map(|r| self.status_of(r)).collect();
        self.view.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(replicas)
    }

    pub(super) fn status_of(&self, r: &Replica) -> ContainerStatus {
        let state = r
            .inspect
            .state
            .as_ref()
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        let created_at = r
            .inspect
            .created
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.with_timezone(&Utc))
            .unwrap_or_default();
        ContainerStatus {
            id: r.id.clone(),
            name: r.name.clone(),
            revision: r.revision,
            state,
            health: r.health.clone(),
            restarts: r
                .slot
                .and_then(|s| self.restarts.get(&s))
                .copied()
                .unwrap_or(0),
            ports: containers::published_ports(&r.inspect),
            created_at,
        }
    }

    /// Removes every container of the service. True when none is left.
    pub(super) async fn remove_all(&mut self, _record: &ServiceRecord) -> bool {
        let engine = &self.ctx.config.engine;
        let owner = &self.ctx.config.owner;
        let result = async {
            let list = containers::list(engine, owner, &[(labels::SERVICE, self.service.as_str())], true).await?;
            for c in &list {
                if let Some(id) = c.id.as_deref() {
                    containers::remove(engine, id).await?;
                    tracing::info!(container = %containers::summary_name(c), "service removed: container removed");
                }
            }
            Ok::<_, DockerError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.problem = None;
                self.view.clear();
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    pub(super) fn report(&mut self, record: &ServiceRecord) {
        let (state, reason, error, revision) = self.state_of(record);
        let report = ServiceStatusReport {
            service: self.service.clone(),
            desired_revision: record.current.revision,
            revision,
            state,
            reason,
            error,
            containers: self.view.clone(),
            restarts: self.total_restarts,
        };
        self.gate.offer(&self.ctx.sink, report);
    }

    pub(super) fn state_of(
        &self,
        record: &ServiceRecord,
    ) -> (InstanceState, Option<String>, Option<String>, u32) {
        let current = record.current.revision;
        if record.removed && self.problem.is_none() {
            return (InstanceState::Removed, None, None, current);
        }
        if let Some((reason, error)) = &self.problem {
            return (
                InstanceState::Failed,
                Some(reason.clone()),
                Some(error.clone()),
                current,
            );
        }
        if let (true, Some(failed)) = (record.current_failed(), &record.failed) {
            return match &record.good {
                Some(good) => (
                    InstanceState::RolledBack,
                    Some(failed.reason.clone()),
                    Some(failed.error.clone()),
                    good.revision,
                ),
                None => (
                    InstanceState::Failed,
                    Some(failed.reason.clone()),
                    Some(failed.error.clone()),
                    current,
                ),
            };
        }
        let state = if self.converged {
            InstanceState::Running
        } else {
            InstanceState::Converging
        };
        (state, None, None, current)
    }
}
