//! Fault injection on agents, under load: an agent SIGKILLed while it runs tasks, and an
//! agent cut off from the broker and the API for longer than the heartbeat timeout and
//! then reconnected. Every task must end exactly once; tasks the lost agent was running
//! are retried elsewhere when their policy allows `agent_lost`, else fail with that
//! reason; a result the agent brings back from an attempt that was retried meanwhile is
//! kept but never wins.
//!
//! These tests touch only processes they started (and an iptables rule for a uid of
//! their own), so they run alongside other tests; the cut-off one needs root and
//! `iptables`. `cargo test -p ris-tests --test faults_agents -- --nocapture` prints the
//! tables and the time of each fault (`RIS_KEEP_LOGS=1` keeps the logs).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ris_tests::load::{check, fleet, mark, Load, LoadOptions};
use ris_tests::{eventually, wait_for_task, AgentOptions, AgentProc, CutOff, System, TenantClient};
use serde_json::{json, Value};

/// How long the check waits for every task to end once the load is over.
const RECOVERY: Duration = Duration::from_secs(30);

/// Every page of `GET /v1/tasks?<query>`.
async fn list_tasks(tenant: &TenantClient, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?{query}&limit=200&cursor={c}"),
            None => format!("/v1/tasks?{query}&limit=200"),
        };
        let page = tenant.get(&path).await;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// `queued@0 routing@1 executing@1 retrying@1(agent_lost) ...` of a task.
async fn trail(tenant: &TenantClient, id: &str) -> (String, Vec<Value>) {
    let events = tenant.get(&format!("/v1/tasks/{id}/events")).await;
    let items = events["items"].as_array().cloned().unwrap_or_default();
    let text = items
        .iter()
        .map(|e| {
            let mut s = format!(
                "{}@{}",
                e["state"].as_str().unwrap_or("?"),
                e["attempt"].as_u64().unwrap_or(0)
            );
            if let Some(r) = e["reason"].as_str() {
                s.push_str(&format!("({r})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ");
    (text, items)
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "timed_out" | "cancelled")
}

fn carries_retry(task: &Value) -> bool {
    !task["request"]["retry"].is_null()
}

/// The load's `sleep <long_secs>` tasks (sequence numbers ending in 2, 5 or 8).
fn is_long(task: &Value) -> bool {
    task["metadata"]["load_seq"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|seq| matches!(seq % 10, 2 | 5 | 8))
}

/// `(state, reason)` a load task should end in when its agent is not lost: the failing
/// kind (`exit 3`, sequence numbers ending in 9) fails with `exit_status`.
fn expected_outcome(task: &Value) -> (&'static str, Option<&'static str>) {
    let failing = task["metadata"]["load_seq"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|seq| seq % 10 == 9);
    if failing {
        ("failed", Some("exit_status"))
    } else {
        ("completed", None)
    }
}

fn ids(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `GET /v1/agents/{id}` shows `offline`.
async fn wait_offline(tenant: &TenantClient, agent: &AgentProc, timeout: Duration) {
    eventually(
        &format!("agent {} to be offline", agent.name),
        timeout,
        || async {
            let view = tenant.get(&format!("/v1/agents/{}", agent.id)).await;
            (view["status"] == "offline").then_some(())
        },
    )
    .await;
}

/// Waits until none of `ids` is still `executing` on `agent`: the reaper has declared
/// the agent lost and recovered them (the API shows an agent `offline` as soon as its
/// presence expires; the reaper acts `agent_lost_grace_ms` later).
async fn wait_reaped(tenant: &TenantClient, agent: &AgentProc, ids: &[String], timeout: Duration) {
    eventually(
        &format!("the reaper to recover the tasks of agent {}", agent.name),
        timeout,
        || async {
            for id in ids {
                let task = tenant.get(&format!("/v1/tasks/{id}")).await;
                if task["state"] == "executing" && task["agent_id"] == agent.id.as_str() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_task_under_load() {
    // presence_ttl_secs 4, heartbeat every second (the kit's defaults); the reaper adds
    // its grace (agent_lost_grace_ms, 5 s) and its 2 s round.
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agents = fleet(&tenant, &[], 4, 4).await;
    // One label for all, so every task can run on any agent. Long tasks sleep 3 s, so
    // the agent killed has several mid-run; half the tasks may be retried on agent loss.
    let load = Load::start(
        &tenant,
        LoadOptions {
            rate_per_sec: 10,
            duration: Duration::from_secs(20),
            selectors: vec!["fleet=load".to_owned()],
            retry_policy: Some(json!({
                "max_attempts": 3, "initial_ms": 200, "retry_on": ["agent_lost"]
            })),
            long_secs: 3,
            ..LoadOptions::default()
        },
    );
    load.wait_accepted(40, Duration::from_secs(20)).await;

    // The victim: the agent running the most tasks, with at least one long task of each
    // policy among them (so both promises are exercised).
    let victim = eventually(
        "an agent running long tasks both with and without agent_lost retries",
        Duration::from_secs(20),
        || async {
            let mut best: Option<(usize, usize)> = None;
            for (i, agent) in agents.iter().enumerate() {
                let running =
                    list_tasks(&tenant, &format!("state=executing&agent_id={}", agent.id)).await;
                let long_retry = running
                    .iter()
                    .filter(|t| is_long(t) && carries_retry(t))
                    .count();
                let long_plain = running
                    .iter()
                    .filter(|t| is_long(t) && !carries_retry(t))
                    .count();
                if long_retry > 0 && long_plain > 0 && best.is_none_or(|(_, n)| running.len() > n) {
                    best = Some((i, running.len()));
                }
            }
            best
        },
    )
    .await;
    let (victim, running_then) = victim;
    let victim_id = agents[victim].id.clone();
    mark(&format!(
        "SIGKILL agent {} ({victim_id}), {running_then} tasks executing",
        agents[victim].name
    ));
    agents[victim].kill().await;
    let killed_at = Instant::now();

    // Its socket breaks with it, so the API cuts its presence to two heartbeat intervals
    // (2 s here) and the reaper declares it lost as soon as that lapses, with no grace.
    // So the snapshot is taken before then: a second and a half is enough for whatever
    // the agent reported before it died to be processed, and from then on its tasks'
    // states stay put until the reaper acts. (At three seconds, as this once waited, the
    // reaper had sometimes acted already and the snapshot found nothing running.)
    let settle = Duration::from_millis(1500);
    tokio::time::sleep(settle.saturating_sub(killed_at.elapsed())).await;
    let snapshot_at: DateTime<Utc> = Utc::now();
    let executing = list_tasks(&tenant, &format!("state=executing&agent_id={victim_id}")).await;
    let routing = list_tasks(&tenant, &format!("state=routing&agent_id={victim_id}")).await;
    let (exec_retry, exec_plain): (Vec<Value>, Vec<Value>) =
        executing.into_iter().partition(carries_retry);
    wait_offline(&tenant, &agents[victim], Duration::from_secs(30)).await;
    let offline_after = killed_at.elapsed();
    mark(&format!(
        "agent {} shows offline {offline_after:.1?} after the kill",
        agents[victim].name
    ));
    mark(&format!(
        "agent {} dead: executing {} with agent_lost retries, {} without; {} waiting in its queue",
        agents[victim].name,
        exec_retry.len(),
        exec_plain.len(),
        routing.len()
    ));
    assert!(
        !exec_retry.is_empty() && !exec_plain.is_empty(),
        "the killed agent was not running tasks of both policies: {} with retries, {} without",
        exec_retry.len(),
        exec_plain.len()
    );

    let running_ids: Vec<String> = ids(&exec_retry)
        .into_iter()
        .chain(ids(&exec_plain))
        .collect();
    wait_reaped(
        &tenant,
        &agents[victim],
        &running_ids,
        Duration::from_secs(30),
    )
    .await;
    let lost_after = killed_at.elapsed();
    mark(&format!(
        "agent {} declared lost, its tasks recovered {lost_after:.1?} after the kill",
        agents[victim].name
    ));

    let run = load.finish().await;
    let scenario = format!(
        "agent SIGKILL mid-task (4 agents × 4; {} running with agent_lost retries, {} without, {} queued on it; offline after {offline_after:.1?}, lost after {lost_after:.1?})",
        exec_retry.len(),
        exec_plain.len(),
        routing.len()
    );
    let report = check(&tenant, &run, &scenario, RECOVERY).await;
    println!("{report}");
    report.assert_clean();

    let mut broken = Vec::new();
    // Running with agent_lost allowed: completed on another agent, on a later attempt.
    for id in ids(&exec_retry) {
        let task = tenant.get(&format!("/v1/tasks/{id}")).await;
        let (trail, events) = trail(&tenant, &id).await;
        let retried_for_loss = events
            .iter()
            .any(|e| e["state"] == "retrying" && e["reason"] == "agent_lost");
        let (state, reason) = expected_outcome(&task);
        let ok = task["state"] == state
            && task["reason"].as_str() == reason
            && task["attempts"].as_u64().unwrap_or(0) > 1
            && task["agent_id"].as_str() != Some(victim_id.as_str())
            && retried_for_loss;
        if !ok {
            broken.push(format!(
                "running, retry on agent_lost: task {id} should be {state} on another agent after a retrying(agent_lost): {} attempts {} agent {}; events {trail}",
                task["state"], task["attempts"], task["agent_id"]
            ));
        }
    }
    // Running without it: failed agent_lost, on its one attempt.
    for id in ids(&exec_plain) {
        let task = tenant.get(&format!("/v1/tasks/{id}")).await;
        let ok =
            task["state"] == "failed" && task["reason"] == "agent_lost" && task["attempts"] == 1;
        if !ok {
            let (trail, _) = trail(&tenant, &id).await;
            broken.push(format!(
                "running, no retry: task {id} should be failed(agent_lost) after 1 attempt: {}({}) attempts {}; events {trail}",
                task["state"], task["reason"], task["attempts"]
            ));
        }
    }
    // Waiting in its queue: ran on another agent, as if nothing happened.
    for id in ids(&routing) {
        let task = tenant.get(&format!("/v1/tasks/{id}")).await;
        let (state, reason) = expected_outcome(&task);
        let ok = task["state"] == state
            && task["reason"].as_str() == reason
            && task["agent_id"].as_str() != Some(victim_id.as_str());
        if !ok {
            let (trail, _) = trail(&tenant, &id).await;
            broken.push(format!(
                "queued on it: task {id} should be {state} on another agent: {}({}) agent {}; events {trail}",
                task["state"], task["reason"], task["agent_id"]
            ));
        }
    }
    // Nothing else ended on the dead agent after it died (tasks placed on it between
    // the kill and the reaper included): what ended there ended before the kill, or is
    // one of the failed(agent_lost) above.
    let plain: BTreeSet<String> = ids(&exec_plain).into_iter().collect();
    let mut ended_there: BTreeMap<String, usize> = BTreeMap::new();
    for task in list_tasks(&tenant, &format!("agent_id={victim_id}")).await {
        let id = task["id"].as_str().unwrap_or_default().to_owned();
        let state = task["state"].as_str().unwrap_or_default();
        *ended_there.entry(state.to_owned()).or_default() += 1;
        if plain.contains(&id) {
            continue;
        }
        let updated = task["updated_at"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok());
        let (want, reason) = expected_outcome(&task);
        let ok = is_terminal(state)
            && task["state"] == want
            && task["reason"].as_str() == reason
            && updated.is_some_and(|u| u < snapshot_at);
        if !ok {
            let (trail, _) = trail(&tenant, &id).await;
            broken.push(format!(
                "left on the dead agent: task {id} {state}({}) updated {}; events {trail}",
                task["reason"], task["updated_at"]
            ));
        }
    }
    println!(
        "  tasks whose last attempt was on the killed agent, by state: {ended_there:?}; \
         agent_lost: {} failed, {} retried elsewhere, {} re-placed from its queue",
        exec_plain.len(),
        exec_retry.len(),
        routing.len()
    );
    // The only outcomes that differ from what the work gives are those failed(agent_lost).
    assert_eq!(
        report.failed.get("agent_lost").copied().unwrap_or(0),
        exec_plain.len(),
        "failed(agent_lost) should be exactly the tasks running on the killed agent without retries"
    );
    assert_eq!(
        report.unexpected,
        exec_plain.len(),
        "unexpected outcomes other than those failed(agent_lost) (see the table)"
    );
    assert!(
        broken.is_empty(),
        "agent-loss promises broken:\n  {}",
        broken.join("\n  ")
    );
}

/// A uid of its own for the agent to cut off, so tests running side by side (each with
/// its own iptables rule) never cut each other's agents off.
fn random_uid() -> u32 {
    60_000 + rand::random::<u32>() % 4_000
}

/// Result files the agent could not publish yet.
fn outbox_len(agent: &AgentProc) -> usize {
    std::fs::read_dir(agent.state_dir.join("outbox"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Tasks of load run `run` that the reaper took back from `agent` while they were only
/// waiting there (`queued(agent_lost)`) and whose re-placed attempt `agent` nevertheless
/// ran (a result of that attempt from `agent`): the queue purge does not reach
/// assignments the agent already holds. Allowed by at-least-once (the result is fenced
/// off), but the work ran twice.
async fn stale_assignments_run(tenant: &TenantClient, run: &str, agent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for task in list_tasks(tenant, "").await {
        if task["metadata"]["load_run"] != run || task["attempts"].as_u64().unwrap_or(0) < 2 {
            continue;
        }
        let id = task["id"].as_str().unwrap_or_default();
        let (_, events) = trail(tenant, id).await;
        let taken_back: Vec<u64> = events
            .iter()
            .filter(|e| e["state"] == "queued" && e["reason"] == "agent_lost")
            .filter_map(|e| e["attempt"].as_u64())
            .collect();
        if taken_back.is_empty() {
            continue;
        }
        let attempts = tenant.get(&format!("/v1/tasks/{id}/attempts")).await;
        let ran_there = attempts["items"].as_array().into_iter().flatten().any(|a| {
            a["agent_id"] == agent
                && a["attempt"]
                    .as_u64()
                    .is_some_and(|n| taken_back.contains(&n))
        });
        if ran_there {
            let seq = task["metadata"]["load_seq"].as_str().unwrap_or("?");
            out.push(format!("seq {seq}"));
        }
    }
    out
}

/// What the marker task prints: `first` on the attempt that finds no mark, else `second`.
const MARKER_SCRIPT: &str =
    "if [ -e MARK ]; then echo second; else touch MARK; echo first; fi; sleep 8";

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cut_off_then_reconnected_never_lets_a_stale_result_win() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    // The agent to cut off runs as a uid of its own, so an iptables rule can single out
    // its packets.
    let uid = random_uid();
    let labels = vec!["fleet=load".to_owned(), "pool=cut".to_owned()];
    let cut = tenant
        .agent_with(
            "cut",
            AgentOptions {
                labels: labels.clone(),
                capacity: 4,
                run_as: Some((uid, uid)),
                ..AgentOptions::default()
            },
        )
        .await;
    tenant.wait_online(&cut).await;

    // The marker task runs in a directory both agents' users can write: its first
    // attempt leaves a mark the second one sees. Started while the cut agent is the only
    // one, so attempt 1 is there.
    let shared = system.workdir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let id = tenant
        .submit(json!({
            "target": { "selector": "pool=cut" },
            "timeout_secs": 60,
            "task": { "kind": "shell", "script": MARKER_SCRIPT, "cwd": shared.display().to_string() },
            "retry": { "max_attempts": 3, "initial_ms": 200, "retry_on": ["agent_lost"] },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "executing").await;
    assert_eq!(task["agent_id"], cut.id.as_str());

    // A steady load across the agents alongside: the cut agent holds some of it when
    // cut off, and brings results of attempts that were retried or failed meanwhile.
    let load = Load::start(
        &tenant,
        LoadOptions {
            rate_per_sec: 8,
            duration: Duration::from_secs(20),
            selectors: vec!["fleet=load".to_owned()],
            retry_policy: Some(json!({
                "max_attempts": 3, "initial_ms": 200, "retry_on": ["agent_lost"]
            })),
            long_secs: 2,
            ..LoadOptions::default()
        },
    );
    load.wait_accepted(8, Duration::from_secs(10)).await;

    mark(&format!("cutting off agent cut (uid {uid}) mid-task"));
    let cutoff = CutOff::uid(uid);
    let cut_at = Instant::now();
    // Room for the whole load on its own while the cut agent is away, so the retried
    // marker task starts at once.
    let other = tenant
        .agent_with(
            "other",
            AgentOptions {
                labels,
                capacity: 8,
                ..AgentOptions::default()
            },
        )
        .await;
    tenant.wait_online(&other).await;

    // Longer than the heartbeat timeout: presence TTL (4 s) + reaper grace (5 s) + up
    // to a reaper round (2 s).
    wait_offline(&tenant, &cut, Duration::from_secs(40)).await;
    let offline_after = cut_at.elapsed();
    mark(&format!(
        "agent cut shows offline {offline_after:.1?} after the cut"
    ));
    wait_reaped(
        &tenant,
        &cut,
        std::slice::from_ref(&id),
        Duration::from_secs(30),
    )
    .await;
    let lost_after = cut_at.elapsed();
    mark(&format!(
        "agent cut declared lost, the marker task recovered {lost_after:.1?} after the cut"
    ));
    eventually(
        "attempt 2 of the marker task to run on the other agent",
        Duration::from_secs(20),
        || async {
            let task = tenant.get(&format!("/v1/tasks/{id}")).await;
            (task["attempts"] == 2
                && task["state"] == "executing"
                && task["agent_id"] == other.id.as_str())
            .then_some(())
        },
    )
    .await;

    // Reconnect while attempt 2 still runs: the stale attempt-1 result (completed,
    // "first") races the real one.
    let cut_for = cut_at.elapsed();
    mark(&format!(
        "reconnecting agent cut after {cut_for:.1?} cut off"
    ));
    cutoff.restore();
    let reconnected_at = Instant::now();

    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["attempts"], 2, "{task:#}");
    assert_eq!(task["agent_id"], other.id.as_str(), "{task:#}");
    assert_eq!(task["result"]["output"]["stdout"], "second\n", "{task:#}");

    // The stale result comes back with the agent and is kept under its attempt.
    let attempts = eventually(
        "the attempt-1 result to be recorded once the agent is back",
        Duration::from_secs(45),
        || async {
            let attempts = tenant.get(&format!("/v1/tasks/{id}/attempts")).await;
            let items = attempts["items"].as_array().cloned().unwrap_or_default();
            items.iter().any(|a| a["attempt"] == 1).then_some(items)
        },
    )
    .await;
    let stale_after = reconnected_at.elapsed();
    mark(&format!(
        "attempt-1 result recorded {stale_after:.1?} after the reconnection"
    ));
    tenant.wait_online(&cut).await;
    let back_after = reconnected_at.elapsed();
    eventually(
        "the cut agent's outbox to be flushed",
        Duration::from_secs(30),
        || async { (outbox_len(&cut) == 0).then_some(()) },
    )
    .await;
    mark(&format!(
        "agent cut online again {back_after:.1?} after the reconnection, outbox empty"
    ));

    let run = load.finish().await;
    let scenario = format!(
        "agent cut off (iptables) for {cut_for:.1?} mid-task, then reconnected (offline after {offline_after:.1?}, lost after {lost_after:.1?}; stale result back {stale_after:.1?} after reconnecting)"
    );
    let report = check(&tenant, &run, &scenario, RECOVERY).await;
    println!("{report}");

    let (trail, events) = trail(&tenant, &id).await;
    let describe = |a: &Value| {
        let who = if a["agent_id"] == cut.id.as_str() {
            "cut"
        } else {
            "other"
        };
        format!(
            "attempt {} on {who}: {} {:?}",
            a["attempt"],
            a["result"]["outcome"].as_str().unwrap_or("?"),
            a["result"]["output"]["stdout"].as_str().unwrap_or("")
        )
    };
    println!("  marker task {id}: {trail}");
    let reran = stale_assignments_run(&tenant, &run.run, &cut.id).await;
    println!(
        "  assignments re-placed from the cut agent's queue that it still ran when back: {}{}",
        reran.len(),
        if reran.is_empty() {
            String::new()
        } else {
            format!(" ({})", reran.join(", "))
        }
    );
    println!(
        "  marker results: {}",
        attempts.iter().map(describe).collect::<Vec<_>>().join("; ")
    );
    report.assert_clean();

    let first = attempts.iter().find(|a| a["attempt"] == 1).unwrap();
    assert_eq!(first["agent_id"], cut.id.as_str(), "{first:#}");
    assert_eq!(first["result"]["outcome"], "completed", "{first:#}");
    assert_eq!(first["result"]["output"]["stdout"], "first\n", "{first:#}");
    let second = attempts.iter().find(|a| a["attempt"] == 2);
    assert!(
        second
            .is_some_and(|a| a["result"]["output"]["stdout"] == "second\n"
                && a["agent_id"] == other.id.as_str()),
        "{attempts:#?}"
    );
    let numbers: Vec<u64> = attempts
        .iter()
        .filter_map(|a| a["attempt"].as_u64())
        .collect();
    assert_eq!(numbers.len(), 2, "one result per attempt: {numbers:?}");

    // ...and it changed nothing.
    let after = tenant.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(after["state"], "completed", "{after:#}");
    assert_eq!(after["attempts"], 2, "{after:#}");
    assert_eq!(after["agent_id"], other.id.as_str(), "{after:#}");
    assert_eq!(after["result"]["output"]["stdout"], "second\n", "{after:#}");
    assert_eq!(after["updated_at"], task["updated_at"], "{after:#}");
    let terminal = events
        .iter()
        .filter(|e| is_terminal(e["state"].as_str().unwrap_or_default()))
        .count();
    assert_eq!(terminal, 1, "exactly one terminal event: {trail}");
    assert!(
        events
            .iter()
            .any(|e| e["state"] == "retrying" && e["reason"] == "agent_lost"),
        "retried for agent loss: {trail}"
    );
    // The only outcomes of the load that differ from what its work gives are tasks
    // failed(agent_lost): running on the cut agent without a retry policy.
    assert_eq!(
        report.unexpected,
        report.failed.get("agent_lost").copied().unwrap_or(0),
        "unexpected outcomes other than failed(agent_lost) (see the table)"
    );
}
