//! Publishing with confirms: a message counts as sent only once the broker confirmed it
//! *and* routed it to a queue.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::error::{short, BrokerError};

mod lanes;
use lanes::Lanes;

/// How long to wait for a confirm before giving up (the message may still arrive:
/// callers retry, consumers are idempotent).
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Mandatory publishes in flight at once per [`Publisher::new`] (one channel each).
/// At ~0.6 ms per confirm, 4 lanes carry several thousand messages a second.
pub const DEFAULT_LANES: usize = 4;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Per-message options for [`Publisher::publish_json`] and [`Publisher::publish_bytes`].
#[derive(Default, Clone, Debug)]
pub struct PublishOptions {
    /// String headers (sent as AMQP long strings).
    pub headers: Vec<(String, String)>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// The broker rejects the message unless it equals the connection's user, which
    /// lets consumers trust it (agents set it to their own user).
    pub user_id: Option<String>,
    /// Per-message TTL; an expired message is dead-lettered by its queue.
    pub expiration_ms: Option<u64>,
    /// Default `true` (an unroutable message is an error); events use `false`.
    pub mandatory: Option<bool>,
}

/// Publishes with confirms. Clones share the channels; publishes from many tasks run
/// concurrently, each waiting only for its own confirm.
///
/// Mandatory publishes (the default) go through confirm lanes, one message in flight per
/// channel (see `lanes` for why); non-mandatory ones (events) are pipelined on the main
/// channel, where no message is ever returned.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    confirm_timeout: Duration,
}

struct Inner {
    /// Carries pipelined non-mandatory publishes (when `pipelined`); see [`Publisher::channel`].
    main: Channel,
    /// False for [`Publisher::from_channel`]: the one channel is the one lane.
    pipelined: bool,
    /// Held only while a publish on `main` is polled (never across an await): lapin picks
    /// the confirm's delivery tag and queues the frames in two steps, and two threads
    /// interleaving them would pair confirms with the wrong messages.
    send_lock: Mutex<()>,
    lanes: Arc<Lanes>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("channel", &self.inner.main.id())
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Opens a main channel and [`DEFAULT_LANES`] lanes on `conn`, all in confirm mode.
    pub async fn new(conn: &Connection) -> Result<Self, BrokerError> {
        Self::with_lanes(conn, DEFAULT_LANES).await
    }

    /// Like [`Publisher::new`] with `lanes` mandatory publishes in flight at most
    /// (each lane is a channel; at least one).
    pub async fn with_lanes(conn: &Connection, lanes: usize) -> Result<Self, BrokerError> {
        let main = confirm_channel(conn).await?;
        let mut channels = Vec::with_capacity(lanes.max(1));
        for _ in 0..lanes.max(1) {
            channels.push(confirm_channel(conn).await?);
        }
        Ok(Self::build(main, true, channels))
    }

    /// Puts an existing channel in confirm mode. Same semantics as [`Publisher::new`], but
    /// with a single channel publishes take turns (one in flight at a time).
    pub async fn from_channel(channel: Channel) -> Result<Self, BrokerError> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self::build(channel.clone(), false, vec![channel]))
    }

    fn build(main: Channel, pipelined: bool, lanes: Vec<Channel>) -> Self {
        let inner = Inner {
            main,
            pipelined,
            send_lock: Mutex::new(()),
            lanes: Lanes::new(lanes),
        };
        Self {
            inner: Arc::new(inner),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        }
    }

    /// Changes how long a publish waits for its confirm (default 30 s).
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Serializes `body` as JSON and publishes it, see [`Publisher::publish_bytes`].
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &T,
        opts: PublishOptions,
    ) -> Result<(), BrokerError> {
        let bytes = serde_json::to_vec(body)?;
        self.publish_bytes(exchange, routing_key, &bytes, opts)
            .await
    }

    /// Publishes a persistent `application/json` message and waits for its confirm.
    pub async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        opts: PublishOptions,
    ) -> Result<(), BrokerError> {
        let mandatory = opts.mandatory.unwrap_or(true);
        let properties = properties(opts)?;
        self.publish_raw(exchange, routing_key, body, properties, mandatory)
            .await
    }

    /// Publishes with the given properties as they are and waits for the confirm:
    /// `Ack(None)` is success, `Ack(Some(returned))` is [`BrokerError::Unroutable`],
    /// `Nack` is [`BrokerError::Nacked`].
    #[tracing::instrument(level = "debug", skip(self, body, properties), fields(len = body.len()))]
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let message = Message {
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            options: BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        };
        let confirmation = if mandatory || !self.pipelining() {
            let mut lane = self.inner.lanes.acquire().await?;
            let confirmed = self.send(lane.channel()?, message).await;
            if !matches!(confirmed, Err(BrokerError::Timeout(..))) {
                lane.settled();
            }
            confirmed?
        } else {
            self.send_pipelined(message).await?
        };
        interpret(confirmation, exchange, routing_key)
    }

    /// True while every kind of publish can go through: the main channel is open and at
    /// least one lane is left. A channel error (NOT_FOUND for a missing exchange,
    /// ACCESS_REFUSED, ...) closes the channel it happened on for good, so callers that
    /// cache a publisher should check this, not just `channel().status()`, and rebuild.
    pub fn is_open(&self) -> bool {
        self.inner.main.status().connected() && self.inner.lanes.live() > 0
    }

    /// Whether non-mandatory publishes may be pipelined on the main channel (else they
    /// take a lane too).
    fn pipelining(&self) -> bool {
        self.inner.pipelined && self.inner.main.status().connected()
    }

    /// The main channel (e.g. to declare topology on it). Do not consume on it: a
    /// channel error there also fails the publishes in flight.
    pub fn channel(&self) -> &Channel {
        &self.inner.main
    }

    /// Publishes on a lane (nothing else in flight on it) and waits for the confirm.
    async fn send(&self, channel: &Channel, m: Message<'_>) -> Result<Confirmation, BrokerError> {
        let confirm = channel
            .basic_publish(m.exchange, m.routing_key, m.options, m.body, m.properties)
            .await?;
        self.wait(confirm).await
    }

    /// Publishes on the main channel, many in flight, and waits for the confirm.
    async fn send_pipelined(&self, m: Message<'_>) -> Result<Confirmation, BrokerError> {
        let main = &self.inner.main;
        let mut send =
            pin!(main.basic_publish(m.exchange, m.routing_key, m.options, m.body, m.properties));
        let confirm = poll_fn(|cx| {
            let _guard = self
                .inner
                .send_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            send.as_mut().poll(cx)
        })
        .await?;
        self.wait(confirm).await
    }

    async fn wait(&self, confirm: lapin::PublisherConfirm) -> Result<Confirmation, BrokerError> {
        let limit = self.confirm_timeout;
        let confirmation = tokio::time::timeout(limit, confirm)
            .await
            .map_err(|_| BrokerError::Timeout(limit, "waiting for a publisher confirm"))??;
        Ok(confirmation)
    }
}

/// A publish, validated.
struct Message<'a> {
    exchange: ShortString,
    routing_key: ShortString,
    options: BasicPublishOptions,
    body: &'a [u8],
    properties: BasicProperties,
}

/// Maps the broker's answer to a result; `Ack` alone is not success.
fn interpret(confirmation: Confirmation, exchange: &str, key: &str) -> Result<(), BrokerError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable {
            exchange: exchange.into(),
            routing_key: key.into(),
        }),
        Confirmation::Nack(_) => Err(BrokerError::Nacked {
            exchange: exchange.into(),
            routing_key: key.into(),
        }),
        // Unreachable: every channel is put in confirm mode before use.
        Confirmation::NotRequested => Ok(()),
    }
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Message properties: persistent JSON stamped with the current time, plus `opts`.
fn properties(opts: PublishOptions) -> Result<BasicProperties, BrokerError> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(now);
    if !opts.headers.is_empty() {
        let mut table = FieldTable::default();
        for (name, value) in opts.headers {
            table.insert(
                short("header name", &name)?,
                AMQPValue::LongString(value.into()),
            );
        }
        props = props.with_headers(table);
    }
    if let Some(id) = opts.message_id {
        props = props.with_message_id(short("message_id", &id)?);
    }
    if let Some(id) = opts.correlation_id {
        props = props.with_correlation_id(short("correlation_id", &id)?);
    }
    if let Some(reply_to) = opts.reply_to {
        props = props.with_reply_to(short("reply_to", &reply_to)?);
    }
    if let Some(user) = opts.user_id {
        props = props.with_user_id(short("user_id", &user)?);
    }
    if let Some(ms) = opts.expiration_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    Ok(props)
}
