//! The reconciler of one service: converges its containers to the stored record.
//!
//! Each pass looks at the service's containers on this agent (found by label), then:
//!
//! 1. restores replicas that died (start again; recreated when that fails) or, for the
//!    target revision, vanished out of band, counting a restart for each;
//! 2. scales: creates replicas for missing slots, removes surplus ones (highest slots
//!    first); a change of `replicas` alone replaces nothing, since the container hash
//!    leaves `replicas` out;
//! 3. replaces one replica whose hash differs from the target's (rolling update): with a
//!    surge, start the new one, wait until it is healthy, remove the old one; stop-first
//!    (a fixed host port, or `max_surge: 0`), remove the old one first. A new replica not
//!    healthy within `update.health_deadline_secs` is removed and its revision recorded
//!    as failed: the target becomes the last good revision (rolled back), and the failed
//!    revision is not tried again until a newer one arrives.
//!
//! After a pass that changed something the next one starts at once; otherwise after a
//! tick or an order. Engine errors (pull failed, port taken, engine away) are retried
//! with exponential backoff. A report goes to the sink whenever it changes.

mod scale;
mod update;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bollard::models::ContainerInspectResponse;
use ris_schemas::service::{ContainerStatus, ServiceName};
use tracing::Instrument;

use super::health::HttpTally;
use super::record::{Revision, ServiceRecord};
use super::status::ReportGate;
use super::{Context, Handle};
use crate::docker::DockerError;

/// A replica without a health check counts as healthy once it has run this long.
const SETTLE: Duration = Duration::from_secs(1);

/// One container of the service, as seen in this pass.
struct Replica {
    id: String,
    name: String,
    slot: Option<u32>,
    hash: String,
    revision: u32,
    running: bool,
    inspect: ContainerInspectResponse,
    health: Option<String>,
}

/// How waiting for a new replica ended.
enum Verdict {
    Healthy,
    Unhealthy(String),
    /// A newer order arrived, or the agent is stopping: stop waiting, judge nothing.
    Interrupted,
}

pub(crate) struct Reconciler {
    ctx: Arc<Context>,
    handle: Handle,
    service: ServiceName,
    /// Restores per replica slot, and in total, since this agent run took the service.
    restarts: BTreeMap<u32, u32>,
    total_restarts: u32,
    /// Slot → container id of the target's replicas at the end of the last pass, to
    /// notice a replica removed out of band.
    seen: BTreeMap<u32, String>,
    seen_hash: String,
    tally: HttpTally,
    /// The engine error of the last pass: reason and message.
    problem: Option<(String, String)>,
    retry: Option<(Instant, ExponentialBackoff)>,
    /// The revision the retry state belongs to (a new order retries at once).
    order_revision: u32,
    /// Every replica of the target runs and is healthy.
    converged: bool,
    view: Vec<ContainerStatus>,
    gate: ReportGate,
}

impl Reconciler {
    pub(crate) fn new(ctx: Arc<Context>, service: ServiceName, handle: Handle) -> Self {
        let every = ctx.config.timings.report_every;
        Self {
            ctx,
            handle,
            service,
            restarts: BTreeMap::new(),
            total_restarts: 0,
            seen: BTreeMap::new(),
            seen_hash: String::new(),
            tally: HttpTally::default(),
            problem: None,
            retry: None,
            order_revision: 0,
            converged: false,
            view: Vec::new(),
            gate: ReportGate::new(every),
        }
    }

    pub(crate) async fn run(mut self) {
        let owner = &self.ctx.config.owner;
        let span = tracing::info_span!("service", tenant = %owner.tenant, agent_id = %owner.agent_id, service = %self.service);
        async move {
            let stop = self.ctx.stop.clone();
            let wake = self.handle.wake.clone();
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let record = self.handle.record.lock().await.clone();
                let again = if record.removed {
                    if self.remove_all(&record).await {
                        self.report(&record);
                        if self.ctx.forget(&self.service, &self.handle).await {
                            tracing::info!("service removed");
                            return;
                        }
                    } else {
                        self.report(&record);
                    }
                    false
                } else {
                    let again = self.pass(&record).await;
                    self.report(&record);
                    again
                };
                if !again {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.ctx.config.timings.tick) => {}
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One reconciliation; true when it changed something (look again at once).
    async fn pass(&mut self, record: &ServiceRecord) -> bool {
        if record.current.revision != self.order_revision {
            self.order_revision = record.current.revision;
            self.retry = None;
            self.problem = None;
        }
        if let Some((at, _)) = &self.retry {
            if Instant::now() < *at {
                return false;
            }
        }
        match self.converge(record).await {
            Ok(again) => {
                if self.problem.take().is_some() {
                    tracing::info!("service converging again");
                }
                self.retry = None;
                again
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn fail(&mut self, e: DockerError) {
        let timings = &self.ctx.config.timings;
        let (_, backoff) = self.retry.get_or_insert_with(|| {
            let b = ExponentialBuilder::default()
                .with_min_delay(timings.retry_min)
                .with_max_delay(timings.retry_max)
                .without_max_times()
                .build();
            (Instant::now(), b)
        });
        let delay = backoff.next().unwrap_or(timings.retry_max);
        self.retry = self.retry.take().map(|(_, b)| (Instant::now() + delay, b));
        let reason = e.reason().to_owned();
        if self.problem.as_ref().map(|(r, _)| r) != Some(&reason) {
            tracing::warn!(reason = %reason, error = %e, retry_in = ?delay, "service cannot converge");
        }
        self.problem = Some((reason, e.to_string()));
        if e.is_unavailable() {
            self.view.clear();
        }
    }

    /// The revision to run: the current one, or after its update failed the last good
    /// one (`true`: rolled back). `None`: it failed and there is nothing to go back to.
    fn target(record: &ServiceRecord) -> Option<(Revision, bool)> {
        if record.current_failed() {
            record.good.clone().map(|g| (g, true))
        } else {
            Some((record.current.clone(), false))
        }
    }

    async fn converge(&mut self, record: &ServiceRecord) -> Result<bool, DockerError> {
        let target = Self::target(record);
        let replicas = self.observe(target.as_ref().map(|(t, _)| t)).await?;
        self.converged = false;
        let Some((target, rolled_back)) = target else {
            // Failed with no good revision: keep what runs, restore what died.
            let (_, again) = self.restore_dead(replicas).await?;
            return Ok(again);
        };
        let hash = target.spec.container_hash();
        if hash != self.seen_hash {
            self.seen.clear();
            self.seen_hash = hash.clone();
        }
        let n = target.spec.get().replicas.get();
        let (cur, stale): (Vec<Replica>, Vec<Replica>) =
            replicas.into_iter().partition(|r| r.hash == hash);

        self.count_vanished(&cur, n);
        let (cur, restored) = self.restore_dead(cur).await?;
        let (stale, restored_old) = self.restore_dead(stale).await?;
        let (cur, trimmed) = self.trim_surplus(cur, n).await?;
        let (stale, trimmed_old) = self.trim_old(stale, &cur, n).await?;
        let created = self.fill_missing(&target, &cur, &stale, n).await?;
        let again = restored || restored_old || trimmed || trimmed_old || created;

        if let Some(old) = stale.into_iter().next() {
            self.replace(record, &target, rolled_back, old).await?;
            return Ok(true);
        }
        self.converged = !again
            && cur.len() == n as usize
            && cur
                .iter()
                .all(|r| r.running && matches!(r.health.as_deref(), None | Some("healthy")));
        if self.converged && !rolled_back {
            self.promote(&target).await;
        }
        Ok(again)
    }

    /// Records `target` as the last good revision.
    async fn promote(&self, target: &Revision) {
        let mut record = self.handle.record.lock().await;
        if record.good.as_ref().map(|g| g.revision) == Some(target.revision)
            || record.current.revision != target.revision
        {
            return;
        }
        let mut next = record.clone();
        next.good = Some(target.clone());
        match self.ctx.store.save_async(&next).await {
            Ok(()) => {
                tracing::info!(revision = target.revision, "revision converged");
                *record = next;
            }
            Err(e) => tracing::error!(error = %e, "cannot store the service record"),
        }
    }
}
