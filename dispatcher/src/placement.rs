//! Placement: which agent runs a task, and handing it over.
//!
//! Candidates are the tenant's agents that match the target and are online (a presence
//! key in Redis) and, for a task that needs a capability (`docker`), advertise it in
//! their heartbeat. A task for one named agent that is online without the capability
//! fails at once with `<capability>_unavailable`. Load is `running / capacity`, where
//! `running` is the larger of what the agent last reported and what dispatchers have
//! placed on it since (in-flight set in Redis), so a burst of placements between two
//! heartbeats still spreads out. Lowest load wins; ties are broken at random.
//!
//! The placement is recorded first (`routing`, attempt n+1) and published second. If the
//! publish fails, the task goes back to `queued`; if the dispatcher dies in between,
//! the task is `routing` with no message — recovering those is the reliability sweep's
//! job (see docs/architecture.md).

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{Duration, Utc};
use rand::seq::SliceRandom;
use ris_broker::{names, PublishOptions, Publisher};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::{AgentMessage, Assignment};
use ris_schemas::task::{Target, TaskRequest, TaskState};
use ris_schemas::version::V1;
use ris_store::{Placement, TaskRecord, TenantCtx, Transition, TransitionOutcome};

use crate::context::Context;
use crate::events;
use crate::recovery;
use crate::retry::{until_ok, Stop};

/// An online agent that could take the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub agent: AgentId,
    pub running: u32,
    pub capacity: u32,
}

impl Candidate {
    /// Compares loads `a.running/a.capacity` and `b.running/b.capacity` exactly.
    fn load_cmp(&self, other: &Candidate) -> Ordering {
        let a = u64::from(self.running) * u64::from(other.capacity.max(1));
        let b = u64::from(other.running) * u64::from(self.capacity.max(1));
        a.cmp(&b)
    }
}

/// The least-loaded candidate; among equals, one at random.
pub fn choose(candidates: &[Candidate]) -> Option<AgentId> {
    let least = candidates.iter().min_by(|a, b| a.load_cmp(b))?;
    let ties: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.load_cmp(least) == Ordering::Equal)
        .collect();
    ties.choose(&mut rand::thread_rng()).map(|c| c.agent)
}

/// What became of a placement attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Handed to the agent.
    Assigned { agent: AgentId, attempt: u32 },
    /// No online agent matches now; the task stays `queued` and the sweeper retries.
    NoAgent,
    /// Another dispatcher got there first, or the task is no longer waiting.
    NotWaiting,
    /// The task can never be placed (its agent does not exist) and has failed.
    Failed,
    /// The assignment could not be published; the task is `queued` again.
    PublishFailed,
    /// Shutting down.
    Interrupted,
    /// A dependency failed in a way retrying cannot fix (logged); the task stays where it
    /// was and a later sweep tries again.
    Error,
}

fn stopped<E>(stop: Stop<E>) -> Placed {
    match stop {
        Stop::Shutdown => Placed::Interrupted,
        Stop::Failed(_) => Placed::Error,
    }
}

/// Places `task` (which should be `queued`, or `retrying` and due) on an agent. The
/// caller decides that a retry is due: the sweep claims only due tasks.
#[tracing::instrument(skip_all, fields(tenant = %tenant.name, task_id = %task.id, agent_id))]
pub async fn place(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: TaskRecord,
) -> Placed {
    if !matches!(task.state, TaskState::Queued | TaskState::Retrying) {
        return Placed::NotWaiting;
    }
    let step = Step::start();
    let target = &task.request.target;
    let required = task.request.task.required_capability();
    let (agent, step) = match pick(ctx, tenant, target, required, step).await {
        Ok(Pick::Agent(agent, step)) => (agent, step),
        Ok(Pick::NoTarget { cached: true } | Pick::NoCandidate { cached: true, .. }) => {
            return again_with_fresh_list(ctx, tenant, publisher, task).await;
        }
        Ok(Pick::NoTarget { cached: false }) => {
            if let Target::Agent(id) = task.request.target {
                let detail = serde_json::json!({ "agent_id": id });
                return fail(
                    ctx,
                    tenant,
                    publisher,
                    &task,
                    "unknown_agent".into(),
                    detail,
                )
                .await;
            }
            return Placed::NoAgent;
        }
        Ok(Pick::NoCandidate { lacking, .. }) => {
            // An agent named by id that is online and says it cannot run this kind of
            // task never will while it says so: fail now rather than at the queue
            // deadline. (A selector waits: a capable agent may still come.)
            if let (Target::Agent(id), Some(capability), true) = (target, required, lacking > 0) {
                let reason = format!("{capability}_unavailable");
                let detail = serde_json::json!({ "agent_id": id, "capability": capability });
                return fail(ctx, tenant, publisher, &task, reason, detail).await;
            }
            return Placed::NoAgent;
        }
        Err(placed) => return placed,
    };
    tracing::Span::current().record("agent_id", tracing::field::display(agent));
    let placement = Placement::new(task.id, agent);
    record_and_assign(ctx, tenant, publisher, placement, step)
        .await
        .unwrap_or(Placed::NotWaiting)
}

/// Places a task known only from its submission, without reading it first: the API
/// stored it `queued` with this very request just before publishing it. Only the
/// common case is handled here: an agent found at once, and the task as submitted
/// (checked when the placement is recorded). `None` in every other case, with nothing
/// changed: the caller then reads the task and places it with [`place`].
#[tracing::instrument(skip_all, fields(tenant = %tenant.name, %task_id, agent_id))]
pub async fn place_submitted(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task_id: TaskId,
    request: Arc<TaskRequest>,
) -> Option<Placed> {
    let step = Step::start();
    let required = request.task.required_capability();
    let (agent, step) = match pick(ctx, tenant, &request.target, required, step).await {
        Ok(Pick::Agent(agent, step)) => (agent, step),
        Ok(_) => return None,
        Err(placed) => return Some(placed),
    };
    tracing::Span::current().record("agent_id", tracing::field::display(agent));
    let placement = Placement::of_submitted(task_id, agent, request);
    record_and_assign(ctx, tenant, publisher, placement, step).await
}

/// What [`pick`] found.
enum Pick {
    /// The agent to place on (and the timing of the placement so far).
    Agent(AgentId, Step),
    /// No agent of the list (cached or read afresh) matches the target.
    NoTarget { cached: bool },
    /// Agents match, but none is online and able; `lacking` were online without the
    /// capability the task needs.
    NoCandidate { cached: bool, lacking: usize },
}

/// The least-loaded online agent that matches `target` and has `required`. `Err`: what
/// became of the placement when a dependency stayed down or the dispatcher stopped.
async fn pick(
    ctx: &Context,
    tenant: &TenantCtx,
    target: &Target,
    required: Option<&str>,
    step: Step,
) -> Result<Pick, Placed> {
    let (agents, cached) = until_ok("list_agents", &ctx.shutdown, || {
        targets(ctx, tenant, target)
    })
    .await
    .map_err(stopped)?;
    if agents.is_empty() {
        return Ok(Pick::NoTarget { cached });
    }
    let step = step.next("targets");
    let (candidates, lacking) = until_ok("presence", &ctx.shutdown, || {
        candidates(ctx, tenant, &agents, required)
    })
    .await
    .map_err(stopped)?;
    match choose(&candidates) {
        Some(agent) => Ok(Pick::Agent(agent, step.next("candidates"))),
        None => Ok(Pick::NoCandidate { cached, lacking }),
    }
}

/// Records `placement` (in some batch) and hands the task to its agent. `None` when
/// the task was not as a placement chosen from its submission expected: nothing changed.
async fn record_and_assign(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    placement: Placement,
    step: Step,
) -> Option<Placed> {
    let agent = placement.agent;
    let task = match until_ok("begin_attempt", &ctx.shutdown, || {
        ctx.batches.begin_attempt(tenant, placement.clone())
    })
    .await
    {
        // A child of a job that stopped dispatching: cancelled instead of placed.
        Ok(TransitionOutcome::Applied(task)) if task.state != TaskState::Routing => {
            tracing::info!(state = %task.state, reason = ?task.reason, "not placed: its job stopped");
            events::task_changed(publisher, &tenant.name, &task).await;
            return Some(Placed::NotWaiting);
        }
        Ok(TransitionOutcome::Applied(task)) => task,
        Ok(TransitionOutcome::Unexpected) => return None,
        Ok(_) => return Some(Placed::NotWaiting),
        Err(stop) => return Some(stopped(stop)),
    };
    step.next("begin_attempt");
    Some(assign(ctx, tenant, publisher, task, agent).await)
}

/// Before giving up on a task, reads the tenant's agents afresh (an agent enrolled or
/// relabelled within the cache's TTL) and places it with that list.
async fn again_with_fresh_list(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: TaskRecord,
) -> Placed {
    ctx.agent_lists.invalidate(tenant);
    Box::pin(place(ctx, tenant, publisher, task)).await
}

/// Times the steps of a placement: `ris_placement_step_seconds{step}`, so a slow step
/// shows on `/metrics` (see docs/benchmarks.md).
struct Step(std::time::Instant);

impl Step {
    fn start() -> Self {
        Step(std::time::Instant::now())
    }

    fn next(self, name: &'static str) -> Self {
        metrics::histogram!("ris_placement_step_seconds", "step" => name)
            .record(self.0.elapsed().as_secs_f64());
        Step::start()
    }
}

/// The ids of the agents `target` names, from the cached list; whether that list was
/// cached (a miss on a cached list is checked against a fresh one).
async fn targets(
    ctx: &Context,
    tenant: &TenantCtx,
    target: &Target,
) -> Result<(Vec<AgentId>, bool), ris_store::StoreError> {
    let listed = ctx.agent_lists.get(&ctx.store, tenant).await?;
    let agents = listed.agents.iter();
    let ids = match target {
        Target::Agent(id) => agents.filter(|a| a.id == *id).map(|a| a.id).collect(),
        Target::Selector(selector) => agents
            .filter(|a| selector.matches(&a.labels))
            .map(|a| a.id)
            .collect(),
    };
    Ok((ids, listed.cached))
}

/// The online agents among `agents` that advertise `required` (when the task needs a
/// capability), and how many online ones were left out for lacking it.
async fn candidates(
    ctx: &Context,
    tenant: &TenantCtx,
    agents: &[AgentId],
    required: Option<&str>,
) -> Result<(Vec<Candidate>, usize), ris_presence::PresenceError> {
    let loads = ctx.online.loads(&ctx.presence, tenant, agents).await?;
    let inflight = ctx.presence.inflight_counts(&tenant.name, agents).await?;
    let mut lacking = 0;
    let candidates = agents
        .iter()
        .zip(loads)
        .zip(inflight)
        .filter_map(|((&agent, load), inflight)| {
            let load = load?;
            if let Some(capability) = required {
                if !load.capabilities.iter().any(|c| c == capability) {
                    lacking += 1;
                    return None;
                }
            }
            Some(Candidate {
                agent,
                running: load.running.max(inflight),
                capacity: load.capacity.max(1),
            })
        })
        .collect();
    Ok((candidates, lacking))
}

/// Publishes the assignment for the attempt just recorded.
/// Publishes the assignment of `task`'s current attempt again, to the agent it was
/// placed on. For a submission redelivered after a dispatcher died between recording a
/// placement and publishing it: the message may or may not exist, and a second copy is
/// harmless (the agent's journal runs an attempt once).
pub async fn republish(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: TaskRecord,
) -> Placed {
    let Some(agent) = task.agent_id.filter(|_| task.state == TaskState::Routing) else {
        return Placed::NotWaiting;
    };
    tracing::info!(task_id = %task.id, attempt = task.attempts, %agent, "re-publishing the assignment of a redelivered submission");
    assign(ctx, tenant, publisher, task, agent).await
}

async fn assign(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: TaskRecord,
    agent: AgentId,
) -> Placed {
    let attempt = task.attempts;
    let request = &task.request;
    let message = AgentMessage::Assign(Assignment {
        v: V1,
        task_id: task.id,
        attempt,
        agent_id: agent,
        task: request.task.clone(),
        timeout_secs: request.timeout_secs.secs(),
        output_cap_bytes: request.output_cap_bytes.bytes() as u32,
        assigned_at: Utc::now(),
    });
    // The assignment expires in the agent's queue if not taken in time; the dead
    // letter brings it back to a dispatcher (see `recovery::assignment_lapsed`).
    let until_deadline = (task.queue_deadline - Utc::now())
        .to_std()
        .unwrap_or_default();
    let window = until_deadline.clamp(
        std::time::Duration::from_secs(1),
        recovery::ASSIGNMENT_WINDOW,
    );
    let opts = PublishOptions {
        message_id: Some(format!("{}.{attempt}", task.id)),
        expiration_ms: Some(window.as_millis() as u64),
        ..PublishOptions::default()
    };
    let step = Step::start();
    let key = agent.to_string();
    let published =
        crate::signing::publish(ctx, publisher, &tenant.name, agent, &key, &message, opts).await;
    if let Err(err) = published {
        tracing::warn!(error = %err, queue = %names::agent_queue(agent), "assignment not published; requeueing");
        let retry_in = std::time::Duration::from_secs(1);
        if let Ok(TransitionOutcome::Applied(task)) =
            until_ok("requeue_task", &ctx.shutdown, || {
                ctx.store
                    .requeue_task(tenant, task.id, "publish_failed", retry_in)
            })
            .await
        {
            events::task_changed(publisher, &tenant.name, &task).await;
        }
        return Placed::PublishFailed;
    }
    let step = step.next("publish");
    // Counts against the agent until the task could no longer be running. Recorded
    // while the `routing` event goes out: neither waits for the other.
    let expires = Utc::now() + Duration::seconds(i64::from(request.timeout_secs.secs()) + 60);
    let count = async {
        if let Err(err) = ctx
            .presence
            .inflight_add(&tenant.name, agent, task.id, expires)
            .await
        {
            tracing::warn!(error = %err, "in-flight count not recorded");
        }
    };
    tokio::join!(count, events::task_changed(publisher, &tenant.name, &task));
    step.next("inflight_and_event");
    tracing::debug!(attempt, "task assigned");
    Placed::Assigned { agent, attempt }
}

/// Fails a task that can never be placed (`unknown_agent`, `docker_unavailable`).
async fn fail(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: &TaskRecord,
    reason: String,
    detail: serde_json::Value,
) -> Placed {
    tracing::info!(reason = %reason, "task cannot be placed; failed");
    let transition = || {
        ctx.store.transition_task(
            tenant,
            task.id,
            Transition {
                to: TaskState::Failed,
                attempt: None,
                agent_id: None,
                reason: Some(reason.clone()),
                detail: detail.clone(),
            },
        )
    };
    match until_ok("transition_task", &ctx.shutdown, transition).await {
        Ok(TransitionOutcome::Applied(task)) => {
            events::task_changed(publisher, &tenant.name, &task).await;
            crate::replies::task_ended(ctx, tenant, publisher, &task).await;
            Placed::Failed
        }
        Ok(_) => Placed::NotWaiting,
        Err(stop) => stopped(stop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(running: u32, capacity: u32) -> Candidate {
        Candidate {
            agent: AgentId::new(),
            running,
            capacity,
        }
    }

    #[test]
    fn picks_lowest_ratio() {
        let busy = cand(1, 1);
        let half = cand(2, 4);
        let idle = cand(0, 1);
        assert_eq!(choose(&[busy, half, idle]), Some(idle.agent));
        assert_eq!(choose(&[busy, half]), Some(half.agent));
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let a = cand(1, 2);
        let b = cand(2, 4);
        let picks: std::collections::HashSet<_> =
            (0..200).filter_map(|_| choose(&[a, b])).collect();
        assert_eq!(
            picks.len(),
            2,
            "both equally loaded agents should be chosen sometimes"
        );
    }
}
