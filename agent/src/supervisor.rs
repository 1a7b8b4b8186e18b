//! The AMQP supervisor: one connection at a time, rebuilt whenever it is lost.
//!
//! Each session: install a publisher, flush the outbox in order, start the task
//! consumer (prefetch = capacity) and, on its own channel, the control consumer
//! (prefetch 16). A connection error event, a consumer that ends, or a connection that
//! is no longer open ends the session; the next one starts after
//! `connect_with_retry`'s backoff. Running tasks are not touched by any of this.
//!
//! Two tokens steer it: `consume_stop` (shutdown asked) stops taking tasks while results
//! can still be published; `conn_stop` (draining over) closes the connection.

use std::sync::Arc;

use futures::StreamExt;
use ris_broker::lapin::{Channel, Connection, Consumer, Event};
use ris_broker::Publisher;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::Shared;
use crate::config::broker_config;
use crate::worker::{self, WorkerEnd};

/// Prefetch of the control consumer.
const CONTROL_PREFETCH: u16 = 16;

enum SessionEnd {
    Stopped,
    Lost(String),
}

pub(crate) async fn supervise(
    shared: Arc<Shared>,
    consume_stop: CancellationToken,
    conn_stop: CancellationToken,
) {
    if let Some(links) = shared.swarm.clone() {
        return supervise_shared(&shared, &links.connection, &consume_stop, &conn_stop).await;
    }
    let cfg = broker_config(&shared.identity, &shared.state_dir);
    let amqp = &shared.identity.enrollment.amqp;
    let name = format!(
        "ris-agent {} ({})",
        shared.identity.enrollment.name, shared.agent_id
    );
    loop {
        let connect = ris_broker::connect_with_retry(
            &cfg,
            &amqp.vhost,
            &amqp.username,
            &amqp.password,
            &name,
            &conn_stop,
        );
        let Some(conn) = connect.await else { return };
        tracing::info!(vhost = %amqp.vhost, "connected to the broker");
        let end = session(&shared, &conn, &consume_stop, &conn_stop, Owner::Agent).await;
        // Only now, with the connection closed: dropping an open channel makes lapin
        // close it in the background, which races with closing the connection.
        shared.reporter.set_publisher(None);
        match end {
            SessionEnd::Stopped => {
                tracing::info!("broker connection closed");
                return;
            }
            SessionEnd::Lost(why) => {
                tracing::warn!(reason = %why, "broker connection lost; reconnecting");
            }
        }
    }
}

/// Sessions on a connection a swarm shares: the agent opens and drops its own channels
/// but never closes the connection; when it is lost for good the swarm ends.
async fn supervise_shared(
    shared: &Arc<Shared>,
    conn: &Connection,
    consume_stop: &CancellationToken,
    conn_stop: &CancellationToken,
) {
    while conn.status().connected() {
        let end = session(shared, conn, consume_stop, conn_stop, Owner::Swarm).await;
        shared.reporter.set_publisher(None);
        match end {
            SessionEnd::Stopped => return,
            SessionEnd::Lost(why) => {
                tracing::warn!(reason = %why, "swarm session lost; starting another");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = conn_stop.cancelled() => return,
                }
            }
        }
    }
    tracing::warn!("the swarm's shared connection is closed");
}

/// Reports an agent may have awaiting their confirms at once (each lane is a channel).
/// An agent reports two messages per task, and a confirm takes a millisecond or two, so
/// two lanes carry about a thousand tasks a second; every channel more is a process in
/// the broker for each agent of the fleet.
pub(crate) const AGENT_LANES: usize = 2;

/// Who closes the connection when a session ends.
#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Agent,
    Swarm,
}

async fn session(
    shared: &Arc<Shared>,
    conn: &Connection,
    consume_stop: &CancellationToken,
    conn_stop: &CancellationToken,
    owner: Owner,
) -> SessionEnd {
    // Listen before anything else so no error event is missed.
    let mut events = conn.events_listener();
    let setup_timeout = shared.timings.setup_timeout;
    let publisher = Publisher::with_lanes(conn, AGENT_LANES);
    match tokio::time::timeout(setup_timeout, publisher).await {
        Ok(Ok(publisher)) => shared.reporter.set_publisher(Some(
            publisher.with_confirm_timeout(shared.timings.publish_timeout),
        )),
        Ok(Err(e)) => return SessionEnd::Lost(format!("cannot open the publisher: {e}")),
        Err(_) => return SessionEnd::Lost("publisher setup timed out".to_owned()),
    }
    if let Err(e) = shared.reporter.flush_outbox().await {
        tracing::error!(error = %e, "cannot read the outbox");
    }
    let consumers =
        tokio::time::timeout(setup_timeout, start_consumers(shared, conn, consume_stop));
    let (tasks, control) = match consumers.await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return SessionEnd::Lost(e),
        Err(_) => return SessionEnd::Lost("consumer setup timed out".to_owned()),
    };

    // The worker runs as its own task so that ending the session never drops it in the
    // middle of accepting a delivery; it is stopped and awaited instead.
    let worker_stop = consume_stop.child_token();
    let (task_channel, mut worker) = match tasks {
        Some((channel, consumer)) => {
            let run = worker::consume_tasks(shared.clone(), consumer, worker_stop.clone());
            (Some(channel), Some(tokio::spawn(run)))
        }
        None => (None, None),
    };
    let mut worker_running = worker.is_some();
    let control = worker_control(shared, control);
    tokio::pin!(control);
    let mut retry = tokio::time::interval(shared.timings.outbox_retry);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end = loop {
        tokio::select! {
            _ = conn_stop.cancelled() => break SessionEnd::Stopped,
            event = events.next() => match event {
                Some(Event::Error(e)) => break SessionEnd::Lost(e.to_string()),
                Some(_) => {}
                None => break SessionEnd::Lost("connection event stream ended".to_owned()),
            },
            end = join_worker(&mut worker), if worker_running => {
                worker_running = false;
                match end {
                    Some(WorkerEnd::Stopped) => {
                        if let Some(channel) = &task_channel {
                            close_task_channel(channel).await;
                        }
                    }
                    Some(WorkerEnd::ConsumerEnded) => break SessionEnd::Lost("task consumer ended".to_owned()),
                    Some(WorkerEnd::Failed(e)) => break SessionEnd::Lost(format!("task consumer failed: {e}")),
                    None => break SessionEnd::Lost("task consumer panicked".to_owned()),
                }
            },
            why = &mut control => break SessionEnd::Lost(why),
            _ = retry.tick() => {
                if !conn.status().connected() {
                    break SessionEnd::Lost("connection is no longer open".to_owned());
                }
                if shared.reporter.has_pending() {
                    if let Err(e) = shared.reporter.flush_outbox().await {
                        tracing::error!(error = %e, "cannot read the outbox");
                    }
                }
            }
        }
    };
    worker_stop.cancel();
    if let (true, Some(handle)) = (worker_running, worker) {
        // Bounded by the publish timeout of the delivery being accepted, if any.
        let _ = handle.await;
    }
    // Closed while the channels and consumers above are still held (see `supervise`).
    if owner == Owner::Agent && conn.status().connected() {
        let _ = conn.close(200, "ris-agent session over".into()).await;
    }
    if owner == Owner::Swarm {
        if let Some(channel) = &task_channel {
            close_task_channel(channel).await;
        }
    }
    drop(task_channel);
    end
}

/// Waits for the worker task; `None` if it panicked.
async fn join_worker(worker: &mut Option<JoinHandle<WorkerEnd>>) -> Option<WorkerEnd> {
    match worker.as_mut() {
        Some(handle) => handle.await.ok(),
        None => std::future::pending().await,
    }
}

/// The control consumer future: runs forever when there is none to run.
async fn worker_control(shared: &Arc<Shared>, control: (Channel, Consumer)) -> String {
    let (_channel, consumer) = control;
    crate::control::consume_control(
        shared.running.clone(),
        shared.services.clone(),
        shared.trust.clone(),
        consumer,
    )
    .await
}

type Consumers = (Option<(Channel, Consumer)>, (Channel, Consumer));

async fn start_consumers(
    shared: &Arc<Shared>,
    conn: &Connection,
    consume_stop: &CancellationToken,
) -> Result<Consumers, String> {
    let amqp = &shared.identity.enrollment.amqp;
    let id = shared.agent_id;
    let tasks = if consume_stop.is_cancelled() {
        None
    } else {
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open the task channel: {e}"))?;
        let prefetch = u16::try_from(shared.running.capacity()).unwrap_or(u16::MAX);
        let consumer = ris_broker::consume(
            &channel,
            &amqp.queue,
            &format!("ris-agent.{id}.tasks"),
            prefetch,
        )
        .await
        .map_err(|e| format!("cannot consume {}: {e}", amqp.queue))?;
        Some((channel, consumer))
    };
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open the control channel: {e}"))?;
    let consumer = ris_broker::consume(
        &channel,
        &amqp.control_queue,
        &format!("ris-agent.{id}.ctl"),
        CONTROL_PREFETCH,
    )
    .await
    .map_err(|e| format!("cannot consume {}: {e}", amqp.control_queue))?;
    if tasks.is_some() {
        tracing::info!(queue = %amqp.queue, prefetch = shared.running.capacity(), "consuming tasks");
    }
    Ok((tasks, (channel, consumer)))
}

/// Closing the channel hands unacked (not yet accepted) deliveries back to the queue.
async fn close_task_channel(channel: &Channel) {
    match channel
        .close(200, "ris-agent stopped taking tasks".into())
        .await
    {
        Ok(()) => tracing::info!("stopped consuming tasks"),
        Err(e) => tracing::debug!(error = %e, "closing the task channel failed"),
    }
}
