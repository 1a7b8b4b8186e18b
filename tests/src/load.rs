//! A load driver for fault tests: a steady, bounded stream of task submissions, then a
//! check of every task it submitted.
//!
//! ```ignore
//! let load = Load::start(&tenant, LoadOptions { api_urls: system.api_urls.clone(), ..Default::default() });
//! load.wait_accepted(20, Duration::from_secs(10)).await;
//! // ... inject faults while it runs ...
//! let run = load.finish().await;
//! let report = check(&tenant, &run, "dispatcher SIGKILL ×6", Duration::from_secs(30)).await;
//! println!("{report}");
//! report.assert_clean();
//! ```
//!
//! # What it submits
//! `rate_per_sec` tasks a second for `duration` (at most `max_tasks`), cycling through
//! four kinds of shell script — quick (`true`), short (`sleep 0.2`), long (`sleep 1`, or
//! `long_secs`) and failing (`exit 3`) — and through `selectors`. Every script first
//! appends its sequence number to a per-run file in the workdir, so the check can count
//! how many times each task really ran. Each task carries `load_run` and `load_seq`
//! metadata, and, when `retry_policy` is set, every other task (even sequence numbers)
//! carries that policy as its `retry`.
//!
//! # Faults while submitting
//! A submission that meets a connection error, a timeout or a 5xx is retried (with the
//! same `Idempotency-Key`, on the next of `api_urls`) until it gets a 202 or
//! `give_up_after` passes. A retried submit must never create a second task; the check
//! counts it as a duplicate if it did.
//!
//! # The check ([`check`])
//! Waits up to `recovery` for every task of the run to be terminal, then reads each back
//! (`GET /v1/tasks/{id}`, `/events` and `/attempts`) and counts, per the [`Report`]:
//! - **lost**: acknowledged by a 202 but not readable, or not terminal after the
//!   recovery window (the check then follows such tasks a while longer and says whether
//!   they ended late or stayed stuck);
//! - **duplicates**: more than one terminal event, two results for one attempt, two
//!   tasks for one submission, or a script that ran more times than the task had
//!   attempts;
//! - **re-runs** (reported, not failed on): work that ran once per attempt but more than
//!   once in all, i.e. a retry re-ran work whose earlier attempt had really run;
//! - **lifecycle violations**: events that do not start at `queued`, do not follow
//!   [`TaskState::transition`](ris_schemas::task::TaskState::transition), or do not end
//!   in the task's current state.

mod check;
mod driver;
mod history;
mod report;

use std::path::PathBuf;
use std::time::Duration;

pub use check::check;
pub use driver::{Load, LoadRun, Submission};
pub use report::Report;

use crate::{AgentOptions, AgentProc, TenantClient};

/// Prints `[fault HH:MM:SS.mmm] what` (UTC, like the process logs), so a fault can be
/// lined up with the logs when diagnosing.
pub fn mark(what: &str) {
    println!(
        "[fault {}] {what}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
}

/// Labels of the `i`-th agent of a [`fleet`]: `fleet=load` and `pool=a` or `pool=b`.
pub fn fleet_labels(i: usize) -> Vec<String> {
    let pool = if i.is_multiple_of(2) { "a" } else { "b" };
    vec!["fleet=load".to_owned(), format!("pool={pool}")]
}

/// Enrolls and starts `n` agents named `load-<i>` with [`fleet_labels`] and
/// `capacity`, the `i`-th enrolled against (so heartbeating to) `api_urls[i % len]`
/// (the tenant's API when empty), and waits until all are online.
pub async fn fleet(
    tenant: &TenantClient,
    api_urls: &[String],
    n: usize,
    capacity: u32,
) -> Vec<AgentProc> {
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let opts = AgentOptions {
            labels: fleet_labels(i),
            capacity,
            api_url: (!api_urls.is_empty()).then(|| api_urls[i % api_urls.len()].clone()),
            ..AgentOptions::default()
        };
        agents.push(tenant.agent_with(&format!("load-{i}"), opts).await);
    }
    for agent in &agents {
        tenant.wait_online(agent).await;
    }
    agents
}

/// What a [`Load`] submits, how fast, and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Submissions started per second.
    pub rate_per_sec: u32,
    /// How long to keep submitting.
    pub duration: Duration,
    /// Hard cap on submissions.
    pub max_tasks: usize,
    /// Label selectors used as targets, in turn.
    pub selectors: Vec<String>,
    /// API base URLs; a submission starts on one (round robin) and moves to the next on
    /// each retry. Empty: the tenant's `api_url`.
    pub api_urls: Vec<String>,
    /// A submission still failing after this long is abandoned (counted as
    /// unacknowledged, not lost: nobody was told it was accepted).
    pub give_up_after: Duration,
    /// `timeout_secs` of every task.
    pub task_timeout_secs: u32,
    /// The `retry` field of the tasks with an even sequence number (half the load, of
    /// every kind but the failing one); the others carry none. `None`: no task carries
    /// one.
    pub retry_policy: Option<serde_json::Value>,
    /// How long [`Work::Long`] sleeps, in seconds.
    pub long_secs: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rate_per_sec: 10,
            duration: Duration::from_secs(30),
            max_tasks: 400,
            selectors: ["fleet=load", "pool=a", "pool=b"]
                .map(str::to_owned)
                .to_vec(),
            api_urls: Vec::new(),
            give_up_after: Duration::from_secs(45),
            task_timeout_secs: 30,
            retry_policy: None,
            long_secs: 1,
        }
    }
}

/// The kinds of work in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `true`
    Quick,
    /// `sleep 0.2`
    Short,
    /// `sleep 1` ([`LoadOptions::long_secs`])
    Long,
    /// `exit 3`: must end `failed` with reason `exit_status`.
    Fail,
}

impl Work {
    /// Three of each ten are quick, three short, three long, one failing.
    pub fn for_seq(seq: u64) -> Work {
        match seq % 10 {
            0 | 3 | 6 => Work::Quick,
            1 | 4 | 7 => Work::Short,
            2 | 5 | 8 => Work::Long,
            _ => Work::Fail,
        }
    }

    fn tail(self, long_secs: u32) -> String {
        match self {
            Work::Quick => "true".to_owned(),
            Work::Short => "sleep 0.2".to_owned(),
            Work::Long => format!("sleep {long_secs}"),
            Work::Fail => "exit 3".to_owned(),
        }
    }

    /// The shell script: record the run, then do the work.
    pub fn script(self, seq: u64, runs_file: &std::path::Path) -> String {
        self.script_with(seq, runs_file, 1)
    }

    /// [`Work::script`] with [`Work::Long`] sleeping `long_secs`.
    pub fn script_with(self, seq: u64, runs_file: &std::path::Path, long_secs: u32) -> String {
        format!(
            "echo {seq} >> '{}'; {}",
            runs_file.display(),
            self.tail(long_secs)
        )
    }

    /// `(state, reason)` the task should end in when nothing goes wrong.
    pub fn expected(self) -> (&'static str, Option<&'static str>) {
        match self {
            Work::Fail => ("failed", Some("exit_status")),
            _ => ("completed", None),
        }
    }
}

/// The file a run's scripts append their sequence numbers to.
fn runs_file(workdir: &std::path::Path, run: &str) -> PathBuf {
    workdir.join(format!("{run}.runs"))
}
