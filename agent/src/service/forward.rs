//! Forwarding service reports to `ris.results` as `service.status` messages.
//!
//! Only the latest report of each service matters, so reports that cannot be published
//! (broker away) are not put in the outbox: the newest one per service is kept in
//! memory and retried every few seconds, and a newer report replaces it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ris_schemas::messages::{ResultMessage, ServiceStatus};
use ris_schemas::service::{ServiceName, ServiceStatusReport};
use ris_schemas::version::V1;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::agent::Shared;

pub type StatusReceiver = UnboundedReceiver<ServiceStatusReport>;

/// How often unpublished reports are retried.
const RETRY: Duration = Duration::from_secs(3);

pub(crate) async fn forward(shared: Arc<Shared>, mut rx: StatusReceiver, stop: CancellationToken) {
    let mut pending: BTreeMap<ServiceName, ServiceStatusReport> = BTreeMap::new();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            next = rx.recv() => match next {
                Some(report) => {
                    pending.insert(report.service.clone(), report);
                    false
                }
                None => true,
            },
            _ = retry.tick() => false,
            _ = stop.cancelled() => true,
        };
        while let Ok(report) = rx.try_recv() {
            pending.insert(report.service.clone(), report);
        }
        publish(&shared, &mut pending).await;
        if stopping {
            return;
        }
    }
}

async fn publish(shared: &Shared, pending: &mut BTreeMap<ServiceName, ServiceStatusReport>) {
    while let Some((service, report)) = pending.pop_first() {
        let message = ResultMessage::ServiceStatus(ServiceStatus {
            v: V1,
            agent_id: shared.agent_id,
            sent_at: Utc::now(),
            report,
        });
        if let Err(e) = shared.reporter.publish(&message).await {
            tracing::debug!(%service, error = %e, "service status not published; kept for a retry");
            if let ResultMessage::ServiceStatus(s) = message {
                pending.insert(service, s.report);
            }
            return;
        }
    }
}
