//! When to report: on every change of what the report says, and every `report_every`
//! even when nothing changed; never twice in a row for the same news otherwise.

use std::time::{Duration, Instant};

use ris_schemas::service::ServiceStatusReport;

use super::StatusSink;

pub struct ReportGate {
    every: Duration,
    last: Option<(ServiceStatusReport, Instant)>,
}

impl ReportGate {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Sends `report` when it differs from the last one sent or that one is old.
    /// Returns whether it was sent.
    pub fn offer(&mut self, sink: &StatusSink, report: ServiceStatusReport) -> bool {
        let due = match &self.last {
            None => true,
            Some((last, at)) => *last != report || at.elapsed() >= self.every,
        };
        if !due {
            return false;
        }
        tracing::debug!(
            state = report.state.as_str(),
            revision = report.revision,
            containers = report.containers.len(),
            "service status"
        );
        // A closed sink means the agent is stopping; nothing to do about it.
        let _ = sink.send(report.clone());
        self.last = Some((report, Instant::now()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ris_schemas::service::{InstanceState, ServiceName};

    fn report(state: InstanceState) -> ServiceStatusReport {
        ServiceStatusReport {
            service: ServiceName::parse("web").unwrap(),
            desired_revision: 1,
            revision: 1,
            state,
            reason: None,
            error: None,
            containers: Vec::new(),
            restarts: 0,
        }
    }

    #[test]
    fn reports_changes_and_heartbeats_only() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut gate = ReportGate::new(Duration::from_millis(50));
        assert!(gate.offer(&tx, report(InstanceState::Converging)));
        assert!(!gate.offer(&tx, report(InstanceState::Converging)));
        assert!(gate.offer(&tx, report(InstanceState::Running)));
        assert!(!gate.offer(&tx, report(InstanceState::Running)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(gate.offer(&tx, report(InstanceState::Running)));
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
