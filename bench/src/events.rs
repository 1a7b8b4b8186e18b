//! The tenant's task events, as they arrive on `ris.events`: the bench's clock for
//! "the result is persisted" (the dispatcher publishes `task.completed` after the
//! commit) and for where each task ran.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use ris_broker::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use ris_broker::lapin::types::FieldTable;
use ris_broker::lapin::Connection;
use serde_json::Value;

/// One task's events seen so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `task.completed`, `task.failed` or `task.timed_out`.
    pub done: Option<Instant>,
    /// Every `task.executing`: when, and on which agent.
    pub executing: Vec<(Instant, String)>,
    /// Every `task.routing` (placed on an agent): when, and on which agent.
    pub routed: Vec<(Instant, String)>,
}

#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<HashMap<String, Seen>>>);

impl Events {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Seen>) -> R) -> R {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn done_at(&self, id: &str) -> Option<Instant> {
        self.with(|m| m.get(id).and_then(|s| s.done))
    }

    pub fn seen(&self, id: &str) -> Seen {
        self.with(|m| m.get(id).cloned().unwrap_or_default())
    }

    /// Waits until every task in `ids` has a terminal event. Each check looks only at the
    /// tasks still pending: rescanning all of them every 5 ms, under the lock the event
    /// consumer takes, showed in profiles of the benchmark process.
    pub async fn wait_done(&self, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<&String> = ids.iter().collect();
        loop {
            self.with(|m| pending.retain(|id| m.get(*id).is_none_or(|s| s.done.is_none())));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} tasks finished in {timeout:?}",
                    ids.len() - pending.len(),
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Binds an exclusive queue to the tenant's task events; returns the connection (keep
/// it) and the events seen.
pub async fn listen(tenant: &str) -> anyhow::Result<(Connection, Events)> {
    let conn = ris_broker::connect_admin(
        &Default::default(),
        &format!("ris.{tenant}"),
        "ris-bench events",
    )
    .await?;
    let channel = conn.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in [
        "task.routing",
        "task.executing",
        "task.completed",
        "task.failed",
        "task.timed_out",
    ] {
        channel
            .queue_bind(
                queue.name().clone(),
                "ris.events".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let events = Events::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            let Ok(event) = serde_json::from_slice::<Value>(&delivery.data) else {
                continue;
            };
            let Some(id) = event["data"]["task_id"].as_str() else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default();
            let agent = event["data"]["agent_id"].as_str().unwrap_or_default();
            sink.with(|m| {
                let seen = m.entry(id.to_owned()).or_default();
                if kind == "task.executing" {
                    seen.executing.push((at, agent.to_owned()));
                } else if kind == "task.routing" {
                    seen.routed.push((at, agent.to_owned()));
                } else {
                    seen.done.get_or_insert(at);
                }
            });
        }
    });
    Ok((conn, events))
}
