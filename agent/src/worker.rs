//! The task consumer: turns deliveries on `ris.agent.<id>` into running tasks.
//!
//! For each valid assignment: journal it and publish `executing` (the entry's flush and
//! the report's confirm overlap), wait for both, then ack. From then on the task does not hold its delivery (RabbitMQ's consumer
//! timeout would kill a long one); the heartbeat is its lease. The task runs spawned,
//! up to `capacity` at once, and its `finished` report is published or outboxed.
//! Anything that cannot be parsed, is meant for another agent, or is not signed by the
//! platform for this agent ([`crate::trust`]) is rejected without requeue (the queue
//! dead-letters it to `ris.dead`; the dispatcher records a signature failure there as
//! `bad_signature`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use ris_broker::lapin::Consumer;
use ris_schemas::ids::TaskId;
use ris_schemas::messages::{AgentMessage, Assignment, Executing, Finished, ResultMessage};
use ris_schemas::task::{Outcome, TaskOutput, TaskResult};
use ris_schemas::version::V1;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::Shared;
use crate::executor::{reason, Limits};
use crate::journal::JournalEntry;
use crate::live::{self, LiveOutput};
use crate::report::Delivered;
use crate::running::RunningGuard;

/// How long a finished run waits for its last live output chunk to be published.
const LIVE_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Why the consumer loop ended.
#[derive(Debug)]
pub(crate) enum WorkerEnd {
    /// Asked to stop (shutdown or session end).
    Stopped,
    /// The broker cancelled the consumer or the channel closed.
    ConsumerEnded,
    Failed(String),
}

/// Consumes the task queue until `stop` fires or the consumer ends. A delivery being
/// handled is always finished (journal, report, ack) before the loop looks at `stop`.
pub(crate) async fn consume_tasks(
    shared: Arc<Shared>,
    mut consumer: Consumer,
    stop: CancellationToken,
) -> WorkerEnd {
    loop {
        // Counts as a task of the tracker while a delivery may be taken and accepted, so
        // a shutdown drain cannot finish between an accept and the spawn of its run.
        let _accepting = shared.tracker.token();
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return WorkerEnd::Stopped,
            next = consumer.next() => next,
        };
        match next {
            None => return WorkerEnd::ConsumerEnded,
            Some(Err(e)) => return WorkerEnd::Failed(e.to_string()),
            Some(Ok(delivery)) => handle(&shared, delivery, &stop).await,
        }
    }
}

async fn handle(shared: &Arc<Shared>, delivery: Delivery, stop: &CancellationToken) {
    let assignment = match serde_json::from_slice::<AgentMessage>(&delivery.data) {
        Ok(AgentMessage::Assign(a)) => a,
        Err(e) => {
            tracing::warn!(error = %e, bytes = delivery.data.len(), "unparseable task message; rejected");
            reject(&delivery).await;
            return;
        }
    };
    if assignment.agent_id != shared.agent_id {
        tracing::warn!(
            task_id = %assignment.task_id,
            addressed_to = %assignment.agent_id,
            "assignment for another agent; rejected"
        );
        reject(&delivery).await;
        return;
    }
    let signed = shared
        .trust
        .verify(&delivery, &AgentMessage::Assign(assignment.clone()));
    if let Err(e) = signed {
        tracing::warn!(
            task_id = %assignment.task_id,
            attempt = assignment.attempt,
            reason = "bad_signature",
            error = %e,
            "assignment not signed by the platform; rejected, not run"
        );
        reject(&delivery).await;
        return;
    }
    accept(shared, delivery, assignment, stop).await;
}

#[tracing::instrument(skip_all, fields(task_id = %a.task_id, attempt = a.attempt, agent_id = %shared.agent_id))]
async fn accept(shared: &Arc<Shared>, delivery: Delivery, a: Assignment, stop: &CancellationToken) {
    if shared.journal.contains(a.task_id, a.attempt) {
        tracing::info!("redelivery of an accepted attempt; acked, not run again");
        ack(&delivery).await;
        return;
    }
    if dropped_if_cancelled(shared, &delivery, a.task_id, a.attempt).await {
        return;
    }
    let permit = tokio::select! {
        permit = shared.running.acquire_slot() => permit,
        // Not acked: closing the channel puts it back in the queue.
        _ = stop.cancelled() => return,
    };
    let Some(permit) = permit else { return };
    let guard = shared.running.register(a.task_id);
    // Again once registered: the order may have come while this waited for a slot (see
    // `control::apply` for why registering first closes the race).
    if dropped_if_cancelled(shared, &delivery, a.task_id, a.attempt).await {
        return;
    }
    let entry = JournalEntry {
        assignment: a,
        started_at: Utc::now(),
    };
    let a = &entry.assignment;
    let unsynced = match shared.journal.write(&entry).await {
        Ok(Some(unsynced)) => unsynced,
        Ok(None) => {
            tracing::info!("another delivery of this attempt was accepted; acked, not run again");
            ack(&delivery).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot journal the task; requeued");
            // Give a full disk a moment instead of spinning on redeliveries.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
            requeue(&delivery).await;
            return;
        }
    };
    let executing = ResultMessage::Executing(Executing {
        v: V1,
        task_id: a.task_id,
        attempt: a.attempt,
        agent_id: shared.agent_id,
        started_at: entry.started_at,
    });
    // The entry's flush and the report's confirm each wait on a disk (ours, the
    // broker's): both at once. The task starts only when both are done.
    let (synced, reported) = tokio::join!(unsynced.sync(), shared.reporter.publish(&executing));
    match (synced, reported) {
        (Ok(()), Ok(())) => {}
        (synced, Err(e)) => {
            tracing::warn!(error = %e, journaled = synced.is_ok(), "cannot report executing; requeued, not started");
            if let Err(e) = shared.journal.forget(a.task_id, a.attempt).await {
                tracing::error!(error = %e, "cannot remove the journal entry");
            }
            requeue(&delivery).await;
            return;
        }
        (Err(e), Ok(())) => {
            // Reported `executing`, so the dispatcher waits for this attempt's result:
            // it gets one, and the attempt is closed without running.
            tracing::error!(error = %e, "cannot flush the journal entry; the attempt fails unstarted");
            ack(&delivery).await;
            report_unjournaled(shared, &entry).await;
            return;
        }
    }
    // A lost ack means a redelivery, which the journal recognises.
    ack(&delivery).await;
    tracing::info!(
        kind = a.task.kind(),
        timeout_secs = a.timeout_secs,
        "task started"
    );
    let run = run_task(shared.clone(), entry, guard, permit);
    shared.tracker.spawn(run.in_current_span());
}

/// Runs the task and reports its end; the slot and the registration are held until the
/// result is safe.
async fn run_task(
    shared: Arc<Shared>,
    entry: JournalEntry,
    guard: RunningGuard,
    permit: OwnedSemaphorePermit,
) {
    let a = &entry.assignment;
    let (live, receiver) = LiveOutput::channel(live::CHANNEL_CAPACITY);
    let attempt = live::Attempt {
        task_id: a.task_id,
        attempt: a.attempt,
        agent_id: shared.agent_id,
    };
    let reporter = shared.clone();
    let batcher = live::spawn(attempt, receiver, move |message| {
        let reporter = reporter.clone();
        async move { reporter.reporter.publish_live(&message).await }
    });
    let mut result = shared
        .executors
        .run(a.task_id, &a.task, Limits::of(a), guard.token(), Some(live))
        .await;
    // Let the last live chunk go out before the result that ends the stream (bounded:
    // live output never holds up a result for long).
    if tokio::time::timeout(LIVE_FLUSH_WAIT, batcher)
        .await
        .is_err()
    {
        tracing::debug!("live output still flushing; result reported anyway");
    }
    if result.outcome == Outcome::Cancelled && shared.running.killed() {
        result.outcome = Outcome::Failed;
        result.reason = Some(reason::AGENT_SHUTDOWN.to_owned());
        result.error = Some("the agent stopped before the task finished".to_owned());
    }
    tracing::info!(
        outcome = ?result.outcome,
        reason = result.reason.as_deref().unwrap_or(""),
        duration_ms = result.duration_ms,
        "task finished"
    );
    let finished = finished_report(&shared, a.task_id, a.attempt, entry.started_at, result);
    finish(&shared, &finished, a.task_id, a.attempt).await;
    drop(guard);
    drop(permit);
}

/// Publishes or outboxes a `finished` report, then closes the journal entry. If even the
/// outbox fails the entry stays, and the next start reports it as `agent_restarted`.
async fn finish(shared: &Shared, finished: &ResultMessage, task_id: TaskId, attempt: u32) {
    match shared.reporter.deliver(finished).await {
        Ok(Delivered::Published | Delivered::Outboxed(_)) => {
            if let Err(e) = shared.journal.complete(task_id, attempt).await {
                tracing::error!(error = %e, "cannot close the journal entry");
            }
        }
        Err(e) => tracing::error!(error = %e, "result neither published nor outboxed"),
    }
}

/// Startup: journal entries left by a previous run are tasks the agent died running.
/// Each is reported (through the outbox) as failed with reason `agent_restarted`.
pub(crate) async fn recover_unfinished(shared: &Shared) -> usize {
    let entries = match shared.journal.unfinished() {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal");
            return 0;
        }
    };
    let count = entries.len();
    for entry in entries {
        let a = &entry.assignment;
        tracing::warn!(task_id = %a.task_id, attempt = a.attempt, "task was running when the agent stopped; reporting it failed");
        let result = TaskResult {
            duration_ms: u64::try_from((Utc::now() - entry.started_at).num_milliseconds())
                .unwrap_or(0),
            ..ended_early(
                Outcome::Failed,
                reason::AGENT_RESTARTED,
                "the agent restarted while the task was running",
            )
        };
        let finished = finished_report(shared, a.task_id, a.attempt, entry.started_at, result);
        match shared.reporter.defer(&finished).await {
            Ok(_) => {
                if let Err(e) = shared.journal.complete(a.task_id, a.attempt).await {
                    tracing::error!(error = %e, "cannot close the journal entry");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot outbox the agent_restarted report"),
        }
    }
    count
}

/// An assignment of a task cancelled by a control order is acked and dropped, never run,
/// and reported `cancelled` with reason `not_started` (a task cancelled through the API is
/// already `cancelled` and keeps the report only as an attempt's result; a child of a
/// halting job waits for it, so the job knows the child never started). A revoked
/// attempt is dropped silently: it was re-placed elsewhere. True when it was dropped.
async fn dropped_if_cancelled(
    shared: &Shared,
    delivery: &Delivery,
    task_id: TaskId,
    attempt: u32,
) -> bool {
    if shared.running.revoked().contains((task_id, attempt)) {
        tracing::info!("assignment of a revoked attempt; acked and dropped, not run");
        ack(delivery).await;
    } else if shared.running.cancelled().contains(task_id) {
        tracing::info!("assignment of a cancelled task; acked and dropped, not run");
        ack(delivery).await;
        report_not_started(shared, task_id, attempt).await;
    } else {
        return false;
    }
    true
}

/// Closes an attempt reported `executing` whose journal entry could not be made durable:
/// it never started, and fails with reason `journal_failed` (retried as the task's policy
/// says for a failure).
async fn report_unjournaled(shared: &Shared, entry: &JournalEntry) {
    let a = &entry.assignment;
    let result = ended_early(
        Outcome::Failed,
        reason::JOURNAL_FAILED,
        "the agent could not record the task on its disk; not started",
    );
    let finished = finished_report(shared, a.task_id, a.attempt, entry.started_at, result);
    finish(shared, &finished, a.task_id, a.attempt).await;
}

/// Reports that the attempt ended without ever starting.
async fn report_not_started(shared: &Shared, task_id: TaskId, attempt: u32) {
    let result = ended_early(
        Outcome::Cancelled,
        reason::NOT_STARTED,
        "cancelled before it started",
    );
    let finished = finished_report(shared, task_id, attempt, Utc::now(), result);
    if let Err(e) = shared.reporter.deliver(&finished).await {
        tracing::warn!(error = %e, "not-started report neither published nor outboxed");
    }
}

/// This agent's `finished` report of an attempt it accepted at `started_at`, ending now.
fn finished_report(
    shared: &Shared,
    task_id: TaskId,
    attempt: u32,
    started_at: DateTime<Utc>,
    result: TaskResult,
) -> ResultMessage {
    ResultMessage::Finished(Finished {
        v: V1,
        task_id,
        attempt,
        agent_id: shared.agent_id,
        started_at,
        finished_at: Utc::now(),
        result,
    })
}

/// The result of an attempt that ended before its task ran (or could report it).
fn ended_early(outcome: Outcome, reason: &str, error: &str) -> TaskResult {
    TaskResult {
        outcome,
        reason: Some(reason.to_owned()),
        error: Some(error.to_owned()),
        duration_ms: 0,
        output: TaskOutput::None,
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed");
    }
}

async fn reject(delivery: &Delivery) {
    if let Err(e) = delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
    {
        tracing::warn!(error = %e, "reject failed");
    }
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    if let Err(e) = delivery.acker.nack(options).await {
        tracing::debug!(error = %e, "requeue failed (the channel is likely gone)");
    }
}
