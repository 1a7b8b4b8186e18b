//! Tallying what the check saw into the per-scenario table.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ris_schemas::task::TaskState;
use serde_json::Value;

use super::check::is_terminal;
use super::driver::{LoadRun, Submission};
use super::history::{lifecycle, trail};

/// Problem lines printed at most.
const MAX_PROBLEMS: usize = 25;

/// What the check read back for one submission.
#[derive(Debug)]
pub(super) struct Seen {
    pub submission: Submission,
    /// `GET /v1/tasks/{id}`, when readable.
    pub task: Option<Value>,
    /// `GET /v1/tasks/{id}/events` items.
    pub events: Vec<Value>,
    /// `GET /v1/tasks/{id}/attempts` items: one result per attempt that reported.
    pub attempts: Vec<Value>,
    pub read_error: Option<String>,
    /// Tasks of the run carrying this submission's sequence number.
    pub tasks_for_submission: usize,
    /// Times its script ran.
    pub runs: u32,
}

/// The outcome of one scenario. `Display` prints the table.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    /// Submissions acknowledged by a 202.
    pub submitted: usize,
    /// Submissions that never got a 202 before the driver gave up.
    pub unacknowledged: usize,
    /// Submissions refused with a 4xx.
    pub rejected: usize,
    /// HTTP requests made for all submissions.
    pub submit_tries: usize,
    /// Submissions that needed more than one request.
    pub submit_retried: usize,
    /// Failed submission requests by cause.
    pub submit_errors: BTreeMap<String, usize>,
    pub completed: usize,
    /// `failed` tasks by reason.
    pub failed: BTreeMap<String, usize>,
    pub timed_out: usize,
    pub cancelled: usize,
    /// Tasks with more than one attempt.
    pub retried: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub lifecycle_violations: usize,
    /// Tasks whose work ran more than once, in as many attempts (a retry re-ran work
    /// that had already run: allowed, but visible to whoever owns the side effects).
    pub reran: usize,
    /// Terminal, but not in the state/reason their work should give.
    pub unexpected: usize,
    /// Stored tasks whose submission was never acknowledged (all must still finish).
    pub orphans: usize,
    /// From the end of the load until every task was terminal; `None`: not within the
    /// recovery window.
    pub settled_after: Option<Duration>,
    /// Task creation to terminal state (server clocks), over terminal tasks.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    /// One line per task with a problem.
    pub problems: Vec<String>,
    /// `(seq, task id)` of tasks not terminal after the recovery window.
    pub unfinished: Vec<(u64, String)>,
    /// What became of those in the extra time the check followed them.
    pub late: Vec<String>,
}

impl Report {
    pub(super) fn tally(
        scenario: &str,
        run: &LoadRun,
        seen: Vec<Seen>,
        settled_after: Option<Duration>,
    ) -> Report {
        let mut r = Report {
            scenario: scenario.to_owned(),
            settled_after,
            ..Report::default()
        };
        let mut latencies = Vec::new();
        for s in &seen {
            r.count_submission(&s.submission);
            if let Some(ms) = r.count_task(s) {
                latencies.push(ms);
            }
        }
        latencies.sort_unstable();
        let pick = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round().max(0.0) as usize;
            Duration::from_millis(latencies.get(i).copied().unwrap_or(0))
        };
        r.latency_p50 = pick(0.5);
        r.latency_p99 = pick(0.99);
        r.latency_max = pick(1.0);
        debug_assert_eq!(run.submissions.len(), seen.len());
        r
    }

    fn count_submission(&mut self, sub: &Submission) {
        self.submit_tries += sub.tries as usize;
        if sub.tries > 1 {
            self.submit_retried += 1;
        }
        for e in &sub.errors {
            *self.submit_errors.entry(e.clone()).or_default() += 1;
        }
        if sub.task_id.is_some() {
            self.submitted += 1;
        } else if sub.rejected {
            self.rejected += 1;
        } else {
            self.unacknowledged += 1;
        }
    }

    /// Tallies one task; returns its creation-to-terminal time in ms when terminal.
    fn count_task(&mut self, s: &Seen) -> Option<u64> {
        let sub = &s.submission;
        let who = format!(
            "seq {} task {}",
            sub.seq,
            sub.task_id.as_deref().unwrap_or("(unacknowledged)")
        );
        if sub.task_id.is_none() && s.tasks_for_submission > 0 {
            self.orphans += 1;
        }
        if s.tasks_for_submission > 1 {
            self.duplicates += 1;
            self.problem(format!(
                "{who}: DUPLICATE one submission (key {}) created {} tasks",
                sub.key, s.tasks_for_submission
            ));
        }
        let Some(task) = &s.task else {
            if sub.task_id.is_some() {
                self.lost += 1;
                let why = s.read_error.as_deref().unwrap_or("not found");
                self.problem(format!("{who}: LOST acknowledged but unreadable: {why}"));
            }
            return None;
        };
        let state = task["state"].as_str().unwrap_or_default();
        let attempts = task["attempts"].as_u64().unwrap_or(0);
        let trail = trail(&s.events);
        if attempts > 1 {
            self.retried += 1;
        }
        if !is_terminal(task) {
            self.lost += 1;
            if let Some(id) = &sub.task_id {
                self.unfinished.push((sub.seq, id.clone()));
            }
            self.problem(format!(
                "{who}: LOST still {state} after the recovery window; events {trail}"
            ));
        }
        self.count_duplicates(s, &who, attempts, &trail);
        if let Err(why) = lifecycle(&s.events, state) {
            self.lifecycle_violations += 1;
            self.problem(format!("{who}: LIFECYCLE {why}; events {trail}"));
        }
        if !is_terminal(task) {
            return None;
        }
        let reason = task["reason"].as_str();
        match state {
            "completed" => self.completed += 1,
            "failed" => {
                *self
                    .failed
                    .entry(reason.unwrap_or("(none)").to_owned())
                    .or_default() += 1
            }
            "timed_out" => self.timed_out += 1,
            _ => self.cancelled += 1,
        }
        if (state, reason) != sub.work.expected() {
            self.unexpected += 1;
            self.problem(format!(
                "{who}: unexpected outcome {state}/{} for {:?}; events {trail}",
                reason.unwrap_or("-"),
                sub.work
            ));
        }
        latency_ms(task)
    }

    fn count_duplicates(&mut self, s: &Seen, who: &str, attempts: u64, trail: &str) {
        let terminal_events = s
            .events
            .iter()
            .filter(|e| {
                TaskState::parse(e["state"].as_str().unwrap_or_default())
                    .is_some_and(TaskState::is_terminal)
            })
            .count();
        let mut numbers: Vec<u64> = s
            .attempts
            .iter()
            .filter_map(|a| a["attempt"].as_u64())
            .collect();
        let reported = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        if terminal_events > 1 {
            self.duplicates += 1;
            self.problem(format!(
                "{who}: DUPLICATE {terminal_events} terminal events; events {trail}"
            ));
        } else if numbers.len() < reported {
            self.duplicates += 1;
            self.problem(format!(
                "{who}: DUPLICATE two results for one attempt (attempts reported {:?}); events {trail}",
                s.attempts.iter().map(|a| a["attempt"].as_u64()).collect::<Vec<_>>()
            ));
        } else if u64::from(s.runs) > attempts.max(1) {
            self.duplicates += 1;
            self.problem(format!(
                "{who}: DUPLICATE ran {} times in {attempts} attempt(s); events {trail}",
                s.runs
            ));
        } else if s.runs > 1 {
            self.reran += 1;
            let outcomes: Vec<String> = s
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}",
                        a["attempt"].as_u64().unwrap_or(0),
                        a["result"]["outcome"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            self.problem(format!(
                "{who}: re-run: ran {} times in {attempts} attempts (results {}); events {trail}",
                s.runs,
                outcomes.join(" ")
            ));
        }
    }

    fn problem(&mut self, line: String) {
        self.problems.push(line);
    }

    /// Panics (printing the table) if any task was lost or duplicated or broke the
    /// lifecycle.
    pub fn assert_clean(&self) {
        assert!(
            self.duplicates == 0 && self.lost == 0 && self.lifecycle_violations == 0,
            "scenario `{}`: {} duplicates, {} lost, {} lifecycle violations (table above)",
            self.scenario,
            self.duplicates,
            self.lost,
            self.lifecycle_violations
        );
    }
}

fn latency_ms(task: &Value) -> Option<u64> {
    let at = |field: &str| task[field].as_str()?.parse::<DateTime<Utc>>().ok();
    let ms = (at("updated_at")? - at("created_at")?).num_milliseconds();
    u64::try_from(ms).ok()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: usize = self.failed.values().sum();
        writeln!(f, "== fault scenario: {} ==", self.scenario)?;
        writeln!(
            f,
            "  {:>9} | {:>9} | {:>6} | {:>7} | {:>10} | {:>4}",
            "submitted", "completed", "failed", "retried", "duplicates", "lost"
        )?;
        writeln!(
            f,
            "  {:>9} | {:>9} | {:>6} | {:>7} | {:>10} | {:>4}",
            self.submitted, self.completed, failed, self.retried, self.duplicates, self.lost
        )?;
        let reasons: Vec<String> = self
            .failed
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(f, "  failed by reason: {}", or_none(&reasons.join(", ")))?;
        let errors: Vec<String> = self
            .submit_errors
            .iter()
            .map(|(e, n)| format!("{e} ×{n}"))
            .collect();
        writeln!(
            f,
            "  submissions: {} requests; {} retried ({}); {} unacknowledged, {} rejected, {} stored without a 202",
            self.submit_tries,
            self.submit_retried,
            or_none(&errors.join(", ")),
            self.unacknowledged,
            self.rejected,
            self.orphans
        )?;
        writeln!(
            f,
            "  other: timed_out {}, cancelled {}, lifecycle violations {}, unexpected outcomes {}, work ran more than once {}",
            self.timed_out, self.cancelled, self.lifecycle_violations, self.unexpected, self.reran
        )?;
        let settled = self
            .settled_after
            .map_or_else(|| "NOT within the recovery window".to_owned(), secs);
        writeln!(
            f,
            "  timing: all terminal {settled} after the load ended; created→terminal p50 {}, p99 {}, max {}",
            secs(self.latency_p50),
            secs(self.latency_p99),
            secs(self.latency_max)
        )?;
        if !self.problems.is_empty() {
            writeln!(
                f,
                "  problems ({}, first {MAX_PROBLEMS} shown):",
                self.problems.len()
            )?;
            for p in self.problems.iter().take(MAX_PROBLEMS) {
                writeln!(f, "    {p}")?;
            }
        }
        if !self.late.is_empty() {
            writeln!(f, "  lost tasks followed after the recovery window:")?;
            for p in self.late.iter().take(MAX_PROBLEMS) {
                writeln!(f, "    {p}")?;
            }
        }
        Ok(())
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}
