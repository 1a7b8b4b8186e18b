//! A submission from `ris.submit`.
//!
//! Submissions come from the API (which has already stored the task) and from
//! integrators publishing straight to the broker (whose task is stored here). Either way
//! the task is stored once (the id is the key), placed if it is still waiting, and the
//! delivery acked only after that. A message that does not parse is dead-lettered with
//! the reason; the consumer keeps going.

use std::sync::Arc;

use chrono::Utc;
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::options::BasicAckOptions;
use ris_broker::{Publisher, SUBMIT_QUEUE};
use ris_schemas::ids::TaskId;
use ris_schemas::messages::{Submit, SubmitMessage};
use ris_schemas::task::TaskState;
use ris_store::{Inserted, TenantCtx};

use crate::context::Context;
use crate::placement::{self, Placed};
use crate::retry::{until_ok, Stop};

/// What became of a delivery.
#[derive(Debug)]
pub enum Handled {
    Acked,
    DeadLettered,
    /// Shutting down: the delivery is left unacked and returns to the queue.
    Released,
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.name, task_id))]
pub async fn handle(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    delivery: Delivery,
) -> Handled {
    let message: SubmitMessage = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(err) => {
            return dead_letter(
                publisher,
                &delivery,
                &format!("unparseable submission: {err}"),
            )
            .await
        }
    };
    let SubmitMessage::Submit(Submit {
        task_id, request, ..
    }) = message;
    tracing::Span::current().record("task_id", tracing::field::display(task_id));
    let reply =
        match crate::replies::requested(&tenant.name, &ctx.config.broker.username, &delivery) {
            Ok(reply) => reply,
            Err(reason) => return dead_letter(publisher, &delivery, &reason).await,
        };
    // The API stores a task `queued` and then publishes its submission, stamped with
    // the platform's broker user (which the broker checks): on its first delivery such a
    // submission is placed without reading the task, the placement applying only if the
    // task is still as submitted. Anything else (a redelivery, a reply asked for, an
    // integrator's submission, or a task no longer as submitted) takes the general path.
    let request = Arc::new(request);
    if reply.is_none() && !delivery.redelivered && from_platform(ctx, &delivery) {
        if let Some(placed) =
            placement::place_submitted(ctx, tenant, publisher, task_id, request.clone()).await
        {
            return settle(ctx, tenant, &delivery, task_id, placed).await;
        }
        tracing::debug!("not placed from its submission alone; reading the task");
    }
    // The general path. Most submissions come from the API, which stored the task
    // before publishing it: a read finds it with one statement less than an insert that
    // conflicts (and reads are batched with the other handlers').
    let stored = match until_ok("get_task", &ctx.shutdown, || {
        ctx.batches.get_task(tenant, task_id)
    })
    .await
    {
        Ok(stored) => stored,
        Err(Stop::Shutdown) => return Handled::Released,
        Err(Stop::Failed(err)) => {
            return dead_letter(publisher, &delivery, &format!("submission refused: {err}")).await
        }
    };
    let inserted = match stored {
        Some(task) => Ok(Inserted::Existing(task)),
        None => {
            until_ok("insert_task", &ctx.shutdown, || {
                ctx.store.insert_task(tenant, task_id, &request, None)
            })
            .await
        }
    };
    let inserted = match inserted {
        Ok(inserted) => inserted,
        Err(Stop::Shutdown) => return Handled::Released,
        Err(Stop::Failed(err)) => {
            return dead_letter(publisher, &delivery, &format!("submission refused: {err}")).await
        }
    };
    let task = match inserted {
        Inserted::New(task) => {
            metrics::counter!("ris_tasks_submitted_total", "kind" => request.task.kind())
                .increment(1);
            crate::events::task_changed(publisher, &tenant.name, &task).await;
            task
        }
        Inserted::Existing(task) => task,
    };
    let Some(task) = crate::replies::remember(ctx, tenant, publisher, reply, task).await else {
        return Handled::Released;
    };
    // A submission redelivered while its task waits for a retry must not cut the wait
    // short: the sweep places the retry when it is due.
    let waiting_retry = task.state == TaskState::Retrying && task.next_placement_at > Utc::now();
    // Redelivered while `routing`: a dispatcher may have died after recording the
    // placement and before publishing it. A second copy of the assignment is harmless
    // (the agent runs an attempt once).
    let placed = if task.state == TaskState::Routing && delivery.redelivered {
        placement::republish(ctx, tenant, publisher, task).await
    } else if waiting_retry {
        Placed::NotWaiting
    } else {
        placement::place(ctx, tenant, publisher, task).await
    };
    settle(ctx, tenant, &delivery, task_id, placed).await
}

/// Whether the submission was published by the platform itself (the API), as the
/// broker vouches for `user_id`.
fn from_platform(ctx: &Context, delivery: &Delivery) -> bool {
    delivery
        .properties
        .user_id()
        .as_ref()
        .is_some_and(|user| user.as_str() == ctx.config.broker.username)
}

/// Acks the delivery once its placement is settled (or leaves it to the broker when
/// the dispatcher is stopping).
async fn settle(
    ctx: &Context,
    tenant: &TenantCtx,
    delivery: &Delivery,
    task_id: TaskId,
    placed: Placed,
) -> Handled {
    if placed == Placed::Interrupted {
        return Handled::Released;
    }
    if placed == Placed::NoAgent {
        // Waiting for an agent: from now on the sweep retries it (new tasks are left to
        // their submission for a grace, and this was that submission).
        if let Err(Stop::Shutdown) = until_ok("task_due_now", &ctx.shutdown, || {
            ctx.store.task_due_now(tenant, task_id)
        })
        .await
        {
            return Handled::Released;
        }
    }
    ack(delivery).await
}

pub async fn ack(delivery: &Delivery) -> Handled {
    if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel is gone; the broker redelivers, and handling is idempotent.
        tracing::warn!(error = %err, "ack failed");
    }
    Handled::Acked
}

pub async fn dead_letter(publisher: &Publisher, delivery: &Delivery, reason: &str) -> Handled {
    dead_letter_from(publisher, delivery, SUBMIT_QUEUE, reason).await
}

pub async fn dead_letter_from(
    publisher: &Publisher,
    delivery: &Delivery,
    queue: &str,
    reason: &str,
) -> Handled {
    tracing::warn!(queue, reason, "dead-lettering message");
    metrics::counter!("ris_dead_lettered_total", "queue" => queue.to_owned()).increment(1);
    if let Err(err) = ris_broker::dead_letter(publisher, delivery, queue, reason).await {
        tracing::error!(error = %err, "dead-lettering failed; the message stays with the broker");
    }
    Handled::DeadLettered
}
