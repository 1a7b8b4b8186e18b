//! AMQP request/reply: a task's final outcome, sent to the queue its submitter named.
//!
//! An integrator publishes a submission with the properties `reply_to` (one of its own
//! queues, `ris.int.<name>.*`), `correlation_id`, and `user_id` (its broker user,
//! which the broker validates). [`requested`] checks the pair when the submission
//! arrives, [`remember`] stores it with the task, and [`task_ended`], called wherever
//! a task may become terminal, publishes a `ReplyMessage` through the default
//! exchange with routing key = `reply_to` and the `correlation_id` echoed. (A cancel
//! through the API that ends a task at once replies from the API, see
//! `ris_api::routes::integrations::task_ended`.)
//!
//! Why `user_id` is required: the dispatcher publishes as the platform, which may write
//! to every queue of the vhost. Without the check, a `reply_to` of `ris.agent.<id>` or
//! `ris.submit` would make it inject messages where the integrator itself may not
//! publish. Requiring the integrator's own prefix keeps each one to its own queues.
//!
//! A reply is a notification, like an event: if its queue is gone (the integrator
//! disconnected and its queue was auto-deleted) it is logged, and the task is not
//! affected. Re-publishing the same submission (same `task_id`) to a new `reply_to`
//! gets the final outcome again when the task has already ended.

use ris_broker::lapin::message::Delivery;
use ris_broker::{integration_queue_prefix, tenant_user_prefix, BrokerError, Publisher};
use ris_schemas::ids::TenantName;
use ris_schemas::integrations::IntegrationName;
use ris_store::{ReplyTarget, TaskRecord, TenantCtx};

use crate::context::Context;
use crate::retry::{until_ok, Stop};

/// The reply target a submission asks for: `Ok(None)` without `reply_to`, `Err(reason)`
/// when `reply_to` is not a queue of the publishing integration (the submission is
/// then dead-lettered with that reason).
pub fn requested(
    tenant: &TenantName,
    platform_user: &str,
    delivery: &Delivery,
) -> Result<Option<ReplyTarget>, String> {
    let props = &delivery.properties;
    let text = |v: &Option<ris_broker::lapin::types::ShortString>| {
        v.as_ref().map(|s| s.as_str().to_owned())
    };
    check(
        tenant,
        platform_user,
        text(props.reply_to()),
        text(props.user_id()).as_deref(),
        text(props.correlation_id()),
    )
}

/// [`requested`] on the properties themselves.
fn check(
    tenant: &TenantName,
    platform_user: &str,
    reply_to: Option<String>,
    user: Option<&str>,
    correlation_id: Option<String>,
) -> Result<Option<ReplyTarget>, String> {
    let Some(reply_to) = reply_to else {
        return Ok(None);
    };
    let allowed_prefix = match user {
        // The platform replays dead letters (the original user cannot be replayed):
        // any integration's queue, never anything else.
        Some(u) if u == platform_user => "ris.int.".to_owned(),
        Some(u) => match integration_of(tenant, u) {
            Some(name) => integration_queue_prefix(&name),
            None => {
                return Err(format!(
                    "reply_to given, but user_id {u} is not an integration of the tenant"
                ))
            }
        },
        None => {
            return Err(
                "reply_to needs the user_id property set to the integration's broker user".into(),
            )
        }
    };
    let owned = reply_to
        .strip_prefix(&allowed_prefix)
        .is_some_and(|rest| !rest.is_empty());
    if !owned {
        return Err(format!(
            "reply_to {reply_to:?} is not a queue of the publisher (must start with {allowed_prefix:?})"
        ));
    }
    Ok(Some(ReplyTarget {
        reply_to,
        correlation_id,
    }))
}

/// `ris.<tenant>.int.<name>` → `<name>`.
fn integration_of(tenant: &TenantName, user: &str) -> Option<IntegrationName> {
    let rest = user.strip_prefix(&tenant_user_prefix(tenant))?;
    IntegrationName::parse(rest.strip_prefix("int.")?).ok()
}

/// Stores the reply target with the task, if the submission asked for one, and replies
/// at once when the task has already ended (a re-published submission). Returns the
/// task as it is now; `None` when shutting down (leave the delivery unacked).
pub async fn remember(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    target: Option<ReplyTarget>,
    task: TaskRecord,
) -> Option<TaskRecord> {
    let Some(target) = target else {
        return Some(task);
    };
    let stored = until_ok("set_reply_to", &ctx.shutdown, || {
        ctx.store.set_reply_to(
            tenant,
            task.id,
            &target.reply_to,
            target.correlation_id.as_deref(),
        )
    })
    .await;
    match stored {
        Ok(Some(current)) => {
            if current.state.is_terminal() {
                send(publisher, &current, &target).await;
            }
            Some(current)
        }
        Ok(None) => Some(task),
        Err(Stop::Shutdown) => None,
        Err(Stop::Failed(err)) => {
            tracing::warn!(task_id = %task.id, error = %err, "reply target not stored; no reply will be sent");
            Some(task)
        }
    }
}

/// Sends the task's final outcome to its reply target, if it has ended and has one.
/// Never fails: problems are logged.
pub async fn task_ended(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task: &TaskRecord,
) {
    if !task.state.is_terminal() || !task.awaits_reply {
        return;
    }
    let target = until_ok("reply_target", &ctx.shutdown, || {
        ctx.store.reply_target(tenant, task.id)
    })
    .await;
    match target {
        Ok(Some(target)) => send(publisher, task, &target).await,
        Ok(None) | Err(Stop::Shutdown) => {}
        Err(Stop::Failed(err)) => {
            tracing::warn!(task_id = %task.id, error = %err, "reply target unreadable; no reply sent");
        }
    }
}

async fn send(publisher: &Publisher, task: &TaskRecord, target: &ReplyTarget) {
    let sent = ris_broker::publish_reply(
        publisher,
        &target.reply_to,
        target.correlation_id.as_deref(),
        &ris_store::reply_of(task),
    )
    .await;
    let outcome = match &sent {
        Ok(()) => "sent",
        Err(BrokerError::Unroutable { .. }) => "no_queue",
        Err(_) => "failed",
    };
    metrics::counter!("ris_task_replies_total", "outcome" => outcome).increment(1);
    match sent {
        Ok(()) => tracing::debug!(task_id = %task.id, reply_to = %target.reply_to, "reply sent"),
        Err(err) => tracing::warn!(
            task_id = %task.id,
            reply_to = %target.reply_to,
            error = %err,
            "reply not delivered (the task is not affected)"
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(reply_to: Option<&str>, user: Option<&str>) -> Result<Option<ReplyTarget>, String> {
        let tenant = TenantName::parse("acme").unwrap();
        check(
            &tenant,
            "guest",
            reply_to.map(str::to_owned),
            user,
            Some("c-1".into()),
        )
    }

    #[test]
    fn no_reply_to_means_no_reply() {
        assert_eq!(run(None, None), Ok(None));
        assert_eq!(run(None, Some("ris.acme.int.billing")), Ok(None));
    }

    #[test]
    fn an_integration_may_name_only_its_own_queues() {
        let ok = run(
            Some("ris.int.billing.replies"),
            Some("ris.acme.int.billing"),
        )
        .unwrap();
        assert_eq!(
            ok,
            Some(ReplyTarget {
                reply_to: "ris.int.billing.replies".into(),
                correlation_id: Some("c-1".into()),
            })
        );
        for (reply_to, user) in [
            ("ris.int.billing.replies", None),
            (
                "ris.agent.0191d2a4-0000-7000-8000-000000000001",
                Some("ris.acme.int.billing"),
            ),
            ("ris.submit", Some("ris.acme.int.billing")),
            ("ris.int.erp.replies", Some("ris.acme.int.billing")),
            ("ris.int.billing-2.replies", Some("ris.acme.int.billing")),
            ("ris.int.billing.", Some("ris.acme.int.billing")),
            ("ris.int.billing.replies", Some("ris.other.int.billing")),
            ("ris.int.billing.replies", Some("ris.acme.agent.x")),
        ] {
            assert!(run(Some(reply_to), user).is_err(), "{reply_to} {user:?}");
        }
    }

    #[test]
    fn a_platform_replay_may_name_any_integration_queue_only() {
        assert!(run(Some("ris.int.erp.replies"), Some("guest")).is_ok());
        assert!(run(Some("ris.results"), Some("guest")).is_err());
    }
}
