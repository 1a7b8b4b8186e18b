//! Follows the `tenants` table: one [`worker`](crate::worker) per tenant, started when
//! the tenant appears and stopped when it is deleted.

use std::collections::HashMap;
use std::time::Duration;

use ris_schemas::ids::TenantName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::worker;

pub async fn supervise(ctx: Context) {
    let tracker = TaskTracker::new();
    let mut workers: HashMap<TenantName, CancellationToken> = HashMap::new();
    let mut tick =
        tokio::time::interval(Duration::from_millis(ctx.config.tenant_refresh_ms.max(100)));
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let tenants = match ctx.store.list_tenants().await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list tenants; keeping current workers");
                continue;
            }
        };
        workers.retain(|name, token| {
            let keep = tenants.iter().any(|t| &t.name == name);
            if !keep {
                tracing::info!(tenant = %name, "tenant gone; stopping its worker");
                token.cancel();
            }
            keep
        });
        for tenant in tenants {
            if workers.contains_key(&tenant.name) {
                continue;
            }
            let token = ctx.shutdown.child_token();
            workers.insert(tenant.name.clone(), token.clone());
            tracker.spawn(worker::run(ctx.clone(), tenant, token));
        }
        metrics::gauge!("ris_dispatcher_tenant_workers").set(workers.len() as f64);
    }
    tracker.close();
    tracker.wait().await;
}
