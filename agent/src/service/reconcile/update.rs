//! Rolling updates: replacing one replica by one of the target revision, and rolling
//! back when the new one is not healthy in time.

use std::time::{Duration, Instant};

use super::{Reconciler, Replica, Verdict, SETTLE};
use crate::docker::containers;
use crate::docker::{reason, DockerError};
use crate::service::health::{self, Probe};
use crate::service::record::{FailedRevision, Revision, ServiceRecord};

impl Reconciler {
    /// Replaces `old` by a replica of `target`, one at a time.
    pub(super) async fn replace(
        &mut self,
        record: &ServiceRecord,
        target: &Revision,
        rolled_back: bool,
        old: Replica,
    ) -> Result<(), DockerError> {
        let spec = target.spec.get();
        let engine = self.ctx.config.engine.clone();
        containers::ensure_image(&engine, &spec.image).await?;
        let slot = old.slot.unwrap_or(0);
        let stop_first = spec.needs_stop_first();
        if stop_first {
            tracing::info!(container = %old.name, "update: stopping the old replica first");
            self.remove(&old).await?;
        }
        let id = self.create(target, slot).await?;
        let deadline = Duration::from_secs(u64::from(spec.update.health_deadline_secs));
        match self.wait_healthy(&id, target, deadline, record).await? {
            Verdict::Healthy => {
                self.tally.passed(&id);
                if !stop_first {
                    self.remove(&old).await?;
                }
                tracing::info!(container = %old.name, revision = target.revision, slot, "update: replica replaced");
            }
            Verdict::Interrupted => {
                tracing::info!("update interrupted by a newer order");
            }
            Verdict::Unhealthy(why) => {
                containers::remove(&engine, &id).await?;
                if rolled_back {
                    tracing::warn!(error = %why, "replica of the rollback revision not healthy");
                } else {
                    self.mark_failed(target.revision, why).await;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn mark_failed(&mut self, revision: u32, why: String) {
        let mut record = self.handle.record.lock().await;
        if record.current.revision != revision {
            return;
        }
        let mut next = record.clone();
        next.failed = Some(FailedRevision {
            revision,
            reason: reason::HEALTH_CHECK_FAILED.to_owned(),
            error: why.clone(),
        });
        let back_to = next.good.as_ref().map(|g| g.revision);
        if let Err(e) = self.ctx.store.save_async(&next).await {
            tracing::error!(error = %e, "cannot store the service record");
        }
        *record = next;
        metrics::counter!("ris_agent_service_rollbacks_total", "service" => self.service.to_string())
            .increment(1);
        tracing::warn!(revision, back_to = ?back_to, error = %why, "update failed its health check; rolling back");
    }

    /// Waits until the new replica `id` is healthy, for at most `deadline`.
    pub(super) async fn wait_healthy(
        &mut self,
        id: &str,
        target: &Revision,
        deadline: Duration,
        record: &ServiceRecord,
    ) -> Result<Verdict, DockerError> {
        let order_revision = record.current.revision;
        let started = Instant::now();
        let check = target.spec.get().health_check.as_ref();
        let poll = self.ctx.config.timings.health_poll;
        let mut last = String::from("not checked yet");
        let mut running_since: Option<Instant> = None;
        loop {
            if self.ctx.stop.is_cancelled()
                || self.handle.record.lock().await.current.revision != order_revision
            {
                return Ok(Verdict::Interrupted);
            }
            let c = match containers::inspect(&self.ctx.config.engine, id).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => {
                    return Ok(Verdict::Unhealthy(format!(
                        "the new replica of revision {} disappeared",
                        target.revision
                    )))
                }
                Err(e) => return Err(e),
            };
            match health::probe_once(&self.ctx.http, &c, check).await {
                Probe::Healthy if check.is_some() => return Ok(Verdict::Healthy),
                Probe::Healthy => {
                    if running_since.get_or_insert_with(Instant::now).elapsed() >= SETTLE {
                        return Ok(Verdict::Healthy);
                    }
                }
                Probe::NotYet(why) => {
                    if !health::is_running(&c) {
                        return Ok(Verdict::Unhealthy(format!(
                            "the new replica of revision {} stopped: {why}",
                            target.revision
                        )));
                    }
                    last = why;
                }
            }
            // Long deadlines must not hold up the periodic report.
            self.report(record);
            if started.elapsed() >= deadline {
                return Ok(Verdict::Unhealthy(format!(
                    "the new replica of revision {} was not healthy within {}s: {last}",
                    target.revision,
                    deadline.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }
}
