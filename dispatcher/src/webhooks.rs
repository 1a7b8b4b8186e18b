//! Outbound webhooks: tenant events POSTed, signed, to the URLs tenants subscribed.
//!
//! Two halves, joined by the `webhook_deliveries` table:
//!
//! - **Fan-out** ([`consume`]): each tenant worker consumes the durable queue
//!   `ris.webhooks`, bound to `ris.events` with the patterns the tenant's webhooks ask
//!   for and nothing else ([`sync_bindings`]). For each event it
//!   creates one delivery row per matching webhook (idempotent by `(webhook, event)`),
//!   then acks. The tenant's webhooks are cached for [`CACHE_TTL`], so a busy tenant
//!   costs one insert per event, not a lookup too.
//! - **Delivery** ([`run`]): every [`TICK`] the loop claims due deliveries across
//!   tenants (a lease, `FOR UPDATE SKIP LOCKED`: dispatchers never send the same one
//!   at once) and POSTs them, at most [`CONCURRENCY`] at a time, each bounded by
//!   [`REQUEST_TIMEOUT`]. A 2xx is success; anything else is retried with exponential
//!   backoff and full jitter ([`backoff`]) up to [`MAX_ATTEMPTS`], then the delivery is
//!   `dead`.
//!
//! Nothing here is on the task path: a slow or dead endpoint only holds permits of this
//! loop, never a consumer of `ris.submit` or `ris.results`.
//!
//! Each request carries `Content-Type: application/json`, `RIS-Delivery-Id`,
//! `RIS-Event-Type` and `RIS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`; the body is the event exactly as published on `ris.events`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use hmac::{Hmac, Mac};
use rand::Rng;
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::{Channel, Connection};
use ris_broker::{BrokerError, Publisher, EVENTS_EXCHANGE};
use ris_schemas::event::Event;
use ris_schemas::webhooks::{EventPatterns, WebhookId};
use ris_store::{AttemptOutcome, DueDelivery, NewEvent, NextStep, TenantCtx};
use sha2::Sha256;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::retry::{until_ok, Stop};
use crate::submit::{ack, dead_letter_from, Handled};

/// The queue that feeds the fan-out, in every tenant vhost.
pub const QUEUE: &str = ris_broker::WEBHOOKS_QUEUE;
/// Unacked events in flight per tenant.
pub const PREFETCH: u16 = 32;
/// How long a tenant's webhook list is reused before it is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(3);
/// How often the delivery loop looks for due deliveries.
pub const TICK: Duration = Duration::from_millis(250);
/// Requests in flight at once, per dispatcher.
pub const CONCURRENCY: usize = 16;
/// Bound on one request, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery is not offered again before this (longer than a request), so a
/// dispatcher that dies mid-request delays it, never loses it.
const LEASE: Duration = Duration::from_secs(30);
/// Attempts per delivery (counted from the latest redelivery request).
pub const MAX_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Declares `ris.webhooks` (idempotent; no bindings: see [`sync_bindings`]).
pub async fn declare(channel: &Channel) -> Result<(), BrokerError> {
    ris_broker::declare_webhook_queue(channel).await
}

/// Keeps `ris.webhooks` bound to exactly the patterns the tenant's webhooks ask for, so
/// events nobody subscribed to are never written to it (with a binding for everything,
/// every task's four events went through this quorum queue, and its writes slowed every
/// other confirm on the broker). Every [`CACHE_TTL`] it reads the webhooks, and the
/// queue's bindings from the management API, binds the wanted patterns that are
/// missing and unbinds the rest (a deleted webhook's, and the catch-all `#` of earlier
/// versions). The API binds a new webhook's patterns as it creates it, so its first
/// events are not missed; a binding lost in a race with a concurrent change comes back
/// the next round.
async fn sync_bindings(ctx: &Context, tenant: &TenantCtx, channel: &Channel) {
    let management = match ris_broker::Management::new(&ctx.config.broker) {
        Ok(m) => m,
        Err(err) => return tracing::warn!(error = %err, "event bindings not kept in step"),
    };
    let vhost = tenant.name.vhost();
    let mut tick = tokio::time::interval(CACHE_TTL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Read afresh, not from the consumer's cache: a webhook created a moment ago
        // (and bound by the API) must not look unwanted.
        let hooks = match until_ok("list_webhooks", &ctx.shutdown, || {
            ctx.store.list_webhooks(tenant)
        })
        .await
        {
            Ok(hooks) => hooks,
            Err(Stop::Shutdown) => return,
            Err(Stop::Failed(err)) => {
                tracing::warn!(error = %err, "webhooks unreadable; event bindings left as they are");
                continue;
            }
        };
        let wanted: BTreeSet<String> = hooks
            .iter()
            .flat_map(|w| w.events.as_slice().iter().map(|p| p.as_str().to_owned()))
            .collect();
        let bound: BTreeSet<String> = match management
            .binding_keys(&vhost, EVENTS_EXCHANGE, QUEUE)
            .await
        {
            Ok(keys) => keys.into_iter().collect(),
            Err(err) => {
                tracing::warn!(error = %err, "event bindings unreadable; left as they are");
                continue;
            }
        };
        for pattern in wanted.difference(&bound) {
            if let Err(err) = ris_broker::bind_events(channel, QUEUE, pattern).await {
                tracing::warn!(error = %err, pattern, "event binding not made; retried next round");
            }
        }
        for pattern in bound.difference(&wanted) {
            match ris_broker::unbind_events(channel, QUEUE, pattern).await {
                Ok(()) => tracing::debug!(pattern, "event binding removed"),
                Err(err) => {
                    tracing::warn!(error = %err, pattern, "event binding not removed; retried next round");
                }
            }
        }
    }
}

/// A tenant's webhooks and their patterns.
type Hooks = Arc<Vec<(WebhookId, EventPatterns)>>;

/// The tenant's webhooks, reread after [`CACHE_TTL`].
#[derive(Default)]
pub struct Cache(Mutex<Option<(Instant, Hooks)>>);

impl Cache {
    async fn get(
        &self,
        ctx: &Context,
        tenant: &TenantCtx,
    ) -> Result<Hooks, Stop<ris_store::StoreError>> {
        let mut slot = self.0.lock().await;
        if let Some((read_at, hooks)) = slot.as_ref() {
            if read_at.elapsed() < CACHE_TTL {
                return Ok(hooks.clone());
            }
        }
        let hooks = until_ok("list_webhooks", &ctx.shutdown, || {
            ctx.store.list_webhooks(tenant)
        })
        .await?;
        let hooks: Hooks = Arc::new(hooks.into_iter().map(|w| (w.id, w.events)).collect());
        *slot = Some((Instant::now(), Arc::clone(&hooks)));
        Ok(hooks)
    }
}

/// Declares `ris.webhooks` on its own channel and fans its events out until the
/// consumer fails or `stop` fires.
pub async fn consume(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    conn: &Connection,
    name: &str,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let channel = conn.create_channel().await?;
    declare(&channel).await?;
    let consumer =
        ris_broker::consume(&channel, QUEUE, &format!("{name} webhooks"), PREFETCH).await?;
    let cache = Cache::default();
    let bindings_channel = conn.create_channel().await?;
    let bindings = sync_bindings(ctx, tenant, &bindings_channel);
    let events = consumer
        .take_until(stop.cancelled())
        .take_while(|d| {
            if let Err(err) = d {
                tracing::warn!(error = %err, "webhook consumer failed");
            }
            std::future::ready(d.is_ok())
        })
        .filter_map(|d| std::future::ready(d.ok()))
        .for_each_concurrent(usize::from(PREFETCH), |delivery| {
            handle(ctx, tenant, publisher, &cache, delivery).map(drop)
        });
    // The bindings loop only ends at shutdown; the consumer's end ends both.
    tokio::select! {
        _ = events => {}
        _ = bindings => {}
    }
    Ok(())
}

/// One event: a delivery row per matching webhook, then ack.
#[tracing::instrument(skip_all, fields(tenant = %tenant.name, event))]
pub async fn handle(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    cache: &Cache,
    delivery: Delivery,
) -> Handled {
    let event: Event = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(err) => {
            let reason = format!("unparseable event: {err}");
            return dead_letter_from(publisher, &delivery, QUEUE, &reason).await;
        }
    };
    tracing::Span::current().record("event", tracing::field::display(event.id.0));
    // Live output is a best-effort view of running tasks, many events per task: it is
    // not worth durable, retried deliveries (the final result is in `task.<state>`).
    if event.kind == Event::OUTPUT {
        return ack(&delivery).await;
    }
    let hooks = match cache.get(ctx, tenant).await {
        Ok(h) => h,
        Err(Stop::Shutdown) => return Handled::Released,
        Err(Stop::Failed(err)) => {
            let reason = format!("webhooks could not be read: {err}");
            return dead_letter_from(publisher, &delivery, QUEUE, &reason).await;
        }
    };
    let matching: Vec<WebhookId> = hooks
        .iter()
        .filter(|(_, patterns)| patterns.matches(&event.kind))
        .map(|(id, _)| *id)
        .collect();
    if matching.is_empty() {
        return ack(&delivery).await;
    }
    let new = NewEvent {
        event_id: event.id.0,
        event_type: event.kind,
        body: delivery.data.clone(),
    };
    let created = until_ok("create_deliveries", &ctx.shutdown, || {
        ctx.store.create_deliveries(tenant, &new, &matching)
    })
    .await;
    match created {
        Ok(n) => tracing::debug!(deliveries = n, "event queued for webhooks"),
        Err(Stop::Shutdown) => return Handled::Released,
        Err(Stop::Failed(err)) => {
            let reason = format!("deliveries could not be stored: {err}");
            return dead_letter_from(publisher, &delivery, QUEUE, &reason).await;
        }
    }
    ack(&delivery).await
}

/// The delivery loop, until shutdown (in-flight requests are abandoned then; their
/// lease runs out and another dispatcher retries them).
pub async fn run(ctx: Context) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        // A redirect could point a tenant's deliveries anywhere; receivers get one URL.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ris-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(err) => return tracing::error!(error = %err, "no HTTP client; webhooks disabled"),
    };
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let in_flight = TaskTracker::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Claim only what can start now: a claimed delivery waits for no one.
        let free = permits.available_permits();
        if free == 0 {
            continue;
        }
        let due = match ctx.store.claim_due_deliveries(free as i64, LEASE).await {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(error = %err, "webhook delivery sweep failed");
                continue;
            }
        };
        for due in due {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let (ctx, client) = (ctx.clone(), client.clone());
            in_flight.spawn(async move {
                attempt(&ctx, &client, due).await;
                drop(permit);
            });
        }
    }
    in_flight.close();
    in_flight.wait().await;
}

/// One attempt of one delivery, recorded.
#[tracing::instrument(skip_all, fields(tenant = %due.tenant.name, delivery = %due.delivery.id, event_type = %due.delivery.event_type))]
async fn attempt(ctx: &Context, client: &reqwest::Client, due: DueDelivery) {
    let sent = tokio::select! {
        r = send(client, &due) => r,
        _ = ctx.shutdown.cancelled() => return,
    };
    let d = &due.delivery;
    let used = (d.attempt + 1).saturating_sub(d.budget_from);
    let failed = |response_status, error: String| AttemptOutcome {
        next: after_failure(used, &mut rand::thread_rng()),
        response_status,
        error: Some(error),
    };
    let outcome = match sent {
        Ok(status) if (200..300).contains(&status) => AttemptOutcome {
            next: NextStep::Succeeded,
            response_status: Some(status),
            error: None,
        },
        Ok(status) => failed(Some(status), format!("receiver answered HTTP {status}")),
        Err(err) => failed(None, error_chain(&err)),
    };
    let label = match outcome.next {
        NextStep::Succeeded => "succeeded",
        NextStep::RetryAt(_) => "retrying",
        NextStep::Dead => "dead",
    };
    metrics::counter!("ris_webhook_deliveries_total", "outcome" => label).increment(1);
    match &outcome.next {
        NextStep::Dead => tracing::warn!(
            attempts = used,
            error = outcome.error.as_deref().unwrap_or_default(),
            "webhook delivery dead: every attempt failed"
        ),
        NextStep::RetryAt(at) => tracing::info!(
            attempt = used,
            retry_at = %at,
            error = outcome.error.as_deref().unwrap_or_default(),
            "webhook delivery failed; will retry"
        ),
        NextStep::Succeeded => tracing::debug!(attempt = used, "webhook delivered"),
    }
    let tenant = due.tenant.ctx();
    let recorded = until_ok("record_delivery_attempt", &ctx.shutdown, || {
        ctx.store
            .record_delivery_attempt(&tenant, d.id, d.attempt, &outcome)
    })
    .await;
    if let Ok(false) = recorded {
        tracing::info!("attempt not recorded: the delivery changed meanwhile");
    }
}

/// POSTs the delivery; the receiver's status code, or why there was none.
async fn send(client: &reqwest::Client, due: &DueDelivery) -> Result<u16, reqwest::Error> {
    let t = Utc::now().timestamp();
    let signature = signature(due.secret.expose().as_bytes(), t, &due.body);
    let response = client
        .post(due.url.as_url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("RIS-Delivery-Id", due.delivery.id.to_string())
        .header("RIS-Event-Type", &due.delivery.event_type)
        .header("RIS-Signature", format!("t={t},v1={signature}"))
        .body(due.body.clone())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// What follows failed attempt `used` (1-based, counted from the latest redelivery
/// request): another attempt after [`backoff`], or none after [`MAX_ATTEMPTS`].
pub fn after_failure(used: u32, rng: &mut impl Rng) -> NextStep {
    if used >= MAX_ATTEMPTS {
        NextStep::Dead
    } else {
        NextStep::RetryAt(Utc::now() + backoff(used, rng))
    }
}

/// The wait after failed attempt `n` (1-based): uniform in `[0, min(cap, base ×
/// 2^(n−1))]` (full jitter, so many deliveries failing together spread out).
pub fn backoff(n: u32, rng: &mut impl Rng) -> chrono::Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
        .min(BACKOFF_CAP);
    let millis = rng.gen_range(0..=ceiling.as_millis() as i64);
    chrono::Duration::milliseconds(millis)
}

/// `outer: inner: innermost`, without the URL (it is the webhook's own, already shown).
fn error_chain(err: &reqwest::Error) -> String {
    let mut s = if err.is_timeout() {
        format!("timed out after {REQUEST_TIMEOUT:?}")
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Ours signs "<t>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"12.{}");
        assert_eq!(
            signature(b"Jefe", 12, b"{}"),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn eight_attempts_then_dead() {
        let mut rng = rand::thread_rng();
        for used in 1..MAX_ATTEMPTS {
            let before = Utc::now();
            let NextStep::RetryAt(at) = after_failure(used, &mut rng) else {
                panic!("attempt {used} is retried");
            };
            assert!(
                at >= before && at <= Utc::now() + BACKOFF_CAP,
                "{used}: {at}"
            );
        }
        assert_eq!(after_failure(MAX_ATTEMPTS, &mut rng), NextStep::Dead);
        assert_eq!(after_failure(MAX_ATTEMPTS + 3, &mut rng), NextStep::Dead);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let mut rng = rand::thread_rng();
        for (n, ceiling_ms) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (9, 256_000),
            (10, 300_000),
        ] {
            for _ in 0..200 {
                let d = backoff(n, &mut rng).num_milliseconds();
                assert!((0..=ceiling_ms).contains(&d), "attempt {n}: {d} ms");
            }
        }
        assert!(backoff(u32::MAX, &mut rng) <= chrono::Duration::seconds(300));
    }
}
