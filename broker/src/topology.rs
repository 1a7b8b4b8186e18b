//! Exchanges, queues and bindings of a tenant vhost, declared in code.
//!
//! Every declaration is idempotent: declaring again with the same arguments is a no-op,
//! so every process may (re)declare at startup. Changing an argument of an existing queue
//! fails with PRECONDITION_FAILED: such changes belong in a policy or a migration.

use std::future::Future;
use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use ris_schemas::ids::AgentId;

use crate::error::{short, BrokerError};
use crate::names::{
    agent_control_key, agent_control_queue, agent_queue, AGENTS_EXCHANGE, DEAD_EXCHANGE,
    DEAD_QUEUE, EVENTS_EXCHANGE, RESULTS_EXCHANGE, RESULTS_QUEUE, SUBMIT_EXCHANGE, SUBMIT_QUEUE,
    WEBHOOKS_QUEUE,
};

/// Bound on a whole declaration sequence (a broker in trouble must not hang startup).
const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);

/// Redeliveries after which a quorum queue gives up on a message and dead-letters it.
const DELIVERY_LIMIT: i32 = 10;

/// Declares, idempotently, everything in a tenant vhost: the exchanges; `ris.submit` and
/// `ris.results` as quorum queues dead-lettering to `ris.dead` after 10 redeliveries
/// (poison messages that crash-loop a consumer get parked); `ris.dead` as a classic
/// durable queue; the bindings.
#[tracing::instrument(skip_all)]
pub async fn declare_tenant(channel: &Channel) -> Result<(), BrokerError> {
    bounded("declaring the tenant topology", async {
        exchange(channel, SUBMIT_EXCHANGE, ExchangeKind::Fanout).await?;
        exchange(channel, RESULTS_EXCHANGE, ExchangeKind::Topic).await?;
        exchange(channel, AGENTS_EXCHANGE, ExchangeKind::Direct).await?;
        exchange(channel, EVENTS_EXCHANGE, ExchangeKind::Topic).await?;
        exchange(channel, DEAD_EXCHANGE, ExchangeKind::Fanout).await?;
        queue(channel, SUBMIT_QUEUE, work_queue_args()).await?;
        bind(channel, SUBMIT_QUEUE, SUBMIT_EXCHANGE, "").await?;
        queue(channel, RESULTS_QUEUE, work_queue_args()).await?;
        bind(channel, RESULTS_QUEUE, RESULTS_EXCHANGE, "#").await?;
        queue(channel, DEAD_QUEUE, dead_queue_args()).await?;
        bind(channel, DEAD_QUEUE, DEAD_EXCHANGE, "").await
    })
    .await
}

/// Declares the agent's classic durable queues `ris.agent.<id>` (tasks) and
/// `ris.agent.<id>.ctl` (control), dead-lettering to `ris.dead`, bound to `ris.agents`
/// with keys `<id>` and `<id>.ctl`. Assumes [`declare_tenant`] ran in this vhost.
#[tracing::instrument(skip(channel))]
pub async fn declare_agent_queues(channel: &Channel, agent: AgentId) -> Result<(), BrokerError> {
    bounded("declaring agent queues", async {
        let (tasks, control) = (agent_queue(agent), agent_control_queue(agent));
        queue(channel, &tasks, agent_queue_args()).await?;
        bind(channel, &tasks, AGENTS_EXCHANGE, &agent.to_string()).await?;
        queue(channel, &control, agent_queue_args()).await?;
        bind(
            channel,
            &control,
            AGENTS_EXCHANGE,
            &agent_control_key(agent),
        )
        .await
    })
    .await
}

/// Deletes the agent's two queues and the messages in them (idempotent).
#[tracing::instrument(skip(channel))]
pub async fn delete_agent_queues(channel: &Channel, agent: AgentId) -> Result<(), BrokerError> {
    bounded("deleting agent queues", async {
        for name in [agent_queue(agent), agent_control_queue(agent)] {
            channel
                .queue_delete(short("queue", &name)?, QueueDeleteOptions::default())
                .await?;
        }
        Ok(())
    })
    .await
}

/// `ris.submit` and `ris.results`: the dispatcher's inputs.
fn work_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    // Quorum: replicated (survives losing a node in a cluster), and supports a delivery
    // limit. Declare-time only: it cannot be changed by policy later.
    args.insert("x-queue-type".into(), string("quorum"));
    // Messages rejected without requeue, or over the delivery limit, go to ris.dead
    // instead of being dropped, so they stay inspectable and replayable.
    args.insert("x-dead-letter-exchange".into(), string(DEAD_EXCHANGE));
    // A message that crash-loops its consumer (redelivered on every restart) is parked
    // after this many deliveries instead of blocking the queue forever.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DELIVERY_LIMIT),
    );
    args
}

/// `ris.agent.<id>` and `ris.agent.<id>.ctl`.
fn agent_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    // Classic: one pair per agent, possibly thousands per tenant; classic queues are far
    // cheaper per queue than quorum queues (each a Raft group). An agent queue holds
    // only a few assignments at a time, all also recorded in PostgreSQL, so the dispatcher
    // can re-place them if a node is lost. Explicit, so a vhost default queue type
    // (RabbitMQ 3.13+) cannot turn them into quorum queues.
    args.insert("x-queue-type".into(), string("classic"));
    // Assignments that expire (per-message TTL) or that the agent rejects reach ris.dead.
    args.insert("x-dead-letter-exchange".into(), string(DEAD_EXCHANGE));
    args
}

/// `ris.dead`: the end of the line.
fn dead_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    // Classic and explicit (see agent queues); low traffic, read by operators.
    // No dead-letter exchange of its own: a message rejected here must not loop.
    args.insert("x-queue-type".into(), string("classic"));
    args
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let name = short("exchange", name)?;
    channel
        .exchange_declare(name, kind, options, FieldTable::default())
        .await?;
    Ok(())
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(short("queue", name)?, options, args)
        .await?;
    Ok(())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            short("queue", queue)?,
            short("exchange", exchange)?,
            short("routing key", key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares [`WEBHOOKS_QUEUE`] (quorum, dead-lettering to `ris.dead` after 10 deliveries,
/// like the other shared work queues) without binding it: events reach it only through
/// [`bind_events`], one binding per pattern a webhook asks for, so a tenant without
/// webhooks has its events routed to no durable queue at all.
pub async fn declare_webhook_queue(channel: &Channel) -> Result<(), BrokerError> {
    bounded(
        "declaring the webhook queue",
        queue(channel, WEBHOOKS_QUEUE, work_queue_args()),
    )
    .await
}

/// Routes events whose key matches `pattern` (`task.*`, `#`, ...) to `queue`.
pub async fn bind_events(channel: &Channel, queue: &str, pattern: &str) -> Result<(), BrokerError> {
    bounded(
        "binding events",
        bind(channel, queue, EVENTS_EXCHANGE, pattern),
    )
    .await
}

/// Undoes [`bind_events`] (a binding that does not exist is no error).
pub async fn unbind_events(
    channel: &Channel,
    queue: &str,
    pattern: &str,
) -> Result<(), BrokerError> {
    bounded("unbinding events", async {
        channel
            .queue_unbind(
                short("queue", queue)?,
                short("exchange", EVENTS_EXCHANGE)?,
                short("routing key", pattern)?,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    })
    .await
}

/// Runs `work` under [`DECLARE_TIMEOUT`].
async fn bounded<T>(
    what: &'static str,
    work: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(DECLARE_TIMEOUT, work)
        .await
        .map_err(|_| BrokerError::Timeout(DECLARE_TIMEOUT, what))?
}
