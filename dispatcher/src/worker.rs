//! One tenant's worker: an AMQP connection to the tenant's vhost, a confirm-mode
//! publisher, and the `ris.submit`, `ris.results` and `ris.dead` consumers, each on its
//! own channel.
//! When the connection breaks the worker tears everything down and reconnects with
//! backoff; when its token is cancelled (tenant deleted, or shutdown) it drains and stops.

use std::future::ready;
use std::time::Duration;

use futures::StreamExt;
use ris_broker::lapin::{Connection, Consumer};
use ris_broker::{BrokerError, Publisher, DEAD_QUEUE, RESULTS_QUEUE, SUBMIT_QUEUE};
use ris_store::Tenant;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Confirm-mode channels for mandatory publishes per tenant connection.
const PUBLISH_LANES: usize = 32;
use crate::{dead_letters, results, submit};

#[tracing::instrument(skip_all, fields(tenant = %tenant.name))]
pub async fn run(ctx: Context, tenant: Tenant, stop: CancellationToken) {
    let vhost = tenant.name.vhost();
    let name = format!("ris-dispatcher/{} {}", std::process::id(), tenant.name);
    let broker = &ctx.config.broker;
    loop {
        let Some(conn) = ris_broker::connect_with_retry(
            broker,
            &vhost,
            &broker.username,
            &broker.password,
            &name,
            &stop,
        )
        .await
        else {
            break;
        };
        tracing::info!("tenant worker connected");
        if let Err(err) = serve(&ctx, &tenant, &conn, &name, &stop).await {
            tracing::warn!(error = %err, "tenant worker lost its connection");
        }
        ctx.set_publisher(&tenant.name, None);
        drop(conn.close(200, "tenant worker stopping".into()).await);
        if stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => break,
        }
    }
    tracing::info!("tenant worker stopped");
}

async fn serve(
    ctx: &Context,
    tenant: &Tenant,
    conn: &Connection,
    name: &str,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let prefetch = ctx.config.consumer_concurrency.max(1);
    // Assignments are mandatory publishes, one in flight per lane: enough lanes that
    // confirm latency does not cap placements per second.
    let publisher = Publisher::with_lanes(conn, PUBLISH_LANES).await?;
    let submit_channel = conn.create_channel().await?;
    let results_channel = conn.create_channel().await?;
    let dead_channel = conn.create_channel().await?;
    let submissions = ris_broker::consume(
        &submit_channel,
        SUBMIT_QUEUE,
        &format!("{name} submit"),
        prefetch,
    )
    .await?;
    let reports = ris_broker::consume(
        &results_channel,
        RESULTS_QUEUE,
        &format!("{name} results"),
        prefetch,
    )
    .await?;
    let dead = ris_broker::consume(
        &dead_channel,
        DEAD_QUEUE,
        &format!("{name} dead"),
        dead_letters::PREFETCH,
    )
    .await?;
    ctx.set_publisher(&tenant.name, Some(publisher.clone()));
    let tenant_ctx = tenant.ctx();
    let limit = usize::from(prefetch);
    let submit_loop = deliveries(submissions, stop).for_each_concurrent(limit, |delivery| {
        submit::handle(ctx, &tenant_ctx, &publisher, delivery).map(drop)
    });
    // The results handlers' store changes are committed in batches.
    let batcher = crate::report_batcher::ReportBatcher::start(ctx.clone(), tenant_ctx.clone());
    let results_loop = deliveries(reports, stop).for_each_concurrent(limit, |delivery| {
        results::handle(ctx, &tenant_ctx, &publisher, &batcher, delivery).map(drop)
    });
    let dead_limit = usize::from(dead_letters::PREFETCH);
    let dead_loop = deliveries(dead, stop).for_each_concurrent(dead_limit, |delivery| {
        dead_letters::handle(ctx, &tenant_ctx, &publisher, delivery).map(drop)
    });
    // Any stream ending means the channel or connection is gone (or we are stopping).
    tokio::select! {
        _ = submit_loop => {}
        _ = results_loop => {}
        _ = dead_loop => {}
        res = crate::webhooks::consume(ctx, &tenant_ctx, &publisher, conn, name, stop) => res?,
    }
    Ok(())
}

use futures::FutureExt;

/// Deliveries until the consumer fails or `stop` fires.
fn deliveries(
    consumer: Consumer,
    stop: &CancellationToken,
) -> impl futures::Stream<Item = ris_broker::lapin::message::Delivery> + '_ {
    consumer
        .take_until(stop.cancelled())
        .take_while(|d| {
            if let Err(err) = d {
                tracing::warn!(error = %err, "consumer failed");
            }
            ready(d.is_ok())
        })
        .filter_map(|d| ready(d.ok()))
}
