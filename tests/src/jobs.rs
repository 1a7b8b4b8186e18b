//! Fleet-job helpers for end-to-end tests: a labelled fleet whose scripts can be told to
//! fail, and agent-side run records (a script appends `start`/`stop` lines with the time
//! to a file, like [`crate::load`] does), read back as runs to check concurrency and
//! start times against what the API says.

use std::collections::HashMap;
use std::path::Path;

use crate::{AgentOptions, AgentProc, TenantClient};

/// Enrolls and starts agents `<fleet>-<i>` labelled `fleet=<fleet>`, capacity 2; their
/// environment has `RIS_TEST_AGENT` (the name) and `RIS_TEST_FAIL` (`1` where `fails(i)`),
/// which [`recording_script`] reads. Waits until all are online.
pub async fn fleet(
    tenant: &TenantClient,
    fleet: &str,
    n: usize,
    fails: impl Fn(usize) -> bool,
) -> Vec<AgentProc> {
    let mut agents = Vec::new();
    for i in 0..n {
        let name = format!("{fleet}-{i}");
        let opts = AgentOptions {
            labels: vec![format!("fleet={fleet}")],
            capacity: 2,
            env: vec![
                ("RIS_TEST_AGENT".into(), name.clone()),
                (
                    "RIS_TEST_FAIL".into(),
                    if fails(i) { "1" } else { "0" }.into(),
                ),
            ],
            ..AgentOptions::default()
        };
        agents.push(tenant.agent_with(&name, opts).await);
    }
    for agent in &agents {
        tenant.wait_online(agent).await;
    }
    agents
}

/// A script that records `start <agent> <ns>` and `stop <agent> <ns>` in `record` and
/// sleeps `ok_secs` in between — or, on failing agents, `fail_secs`, and then fails.
pub fn recording_script(record: &Path, ok_secs: f64, fail_secs: f64) -> String {
    let file = record.display();
    format!(
        "echo \"start $RIS_TEST_AGENT $(date +%s%N)\" >> {file}; \
         if [ \"$RIS_TEST_FAIL\" = 1 ]; then sleep {fail_secs}; else sleep {ok_secs}; fi; \
         echo \"stop $RIS_TEST_AGENT $(date +%s%N)\" >> {file}; \
         [ \"$RIS_TEST_FAIL\" != 1 ]"
    )
}

/// One agent-side run: when the script started and stopped (ns since the epoch); no stop
/// when it was killed.
#[derive(Debug, Clone)]
pub struct Run {
    pub agent: String,
    pub start: i64,
    pub stop: Option<i64>,
}

/// The runs recorded in `record`, in start order.
pub fn runs(record: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, agent, at] = parts[..] else {
            panic!("bad record line {line:?}")
        };
        let at: i64 = at.parse().expect("a time in ns");
        match what {
            "start" => {
                open.insert(agent.to_owned(), runs.len());
                runs.push(Run {
                    agent: agent.to_owned(),
                    start: at,
                    stop: None,
                });
            }
            "stop" => {
                let i = open.remove(agent).expect("stop without start");
                runs[i].stop = Some(at);
            }
            other => panic!("bad record {other}"),
        }
    }
    runs.sort_by_key(|r| r.start);
    runs
}

/// Most runs open at any one moment (a run without a stop stays open).
pub fn max_overlap(runs: &[Run]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for r in runs {
        edges.push((r.start, 1));
        edges.push((r.stop.unwrap_or(i64::MAX), -1));
    }
    // At equal times a stop comes before a start.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_open_runs() {
        let run = |start, stop| Run {
            agent: "a".into(),
            start,
            stop,
        };
        assert_eq!(max_overlap(&[run(0, Some(10)), run(10, Some(20))]), 1);
        assert_eq!(
            max_overlap(&[run(0, Some(10)), run(5, None), run(6, Some(7))]),
            3
        );
        assert_eq!(max_overlap(&[]), 0);
    }
}
