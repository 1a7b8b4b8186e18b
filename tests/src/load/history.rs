//! A task's event history: printing it, and checking it follows the lifecycle.

use ris_schemas::task::TaskState;
use serde_json::Value;

/// `queued@0 routing@1 executing@1 completed@1`
pub(super) fn trail(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            let mut s = format!(
                "{}@{}",
                e["state"].as_str().unwrap_or("?"),
                e["attempt"].as_u64().unwrap_or(0)
            );
            if let Some(reason) = e["reason"].as_str() {
                s.push_str(&format!("({reason})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The events start at `queued`, follow the transition table with attempts never going
/// down, and end in the task's current state.
pub(super) fn lifecycle(events: &[Value], current: &str) -> Result<(), String> {
    let mut states = Vec::with_capacity(events.len());
    for e in events {
        let raw = e["state"].as_str().unwrap_or_default();
        let state = TaskState::parse(raw).ok_or_else(|| format!("unknown state `{raw}`"))?;
        states.push((state, e["attempt"].as_u64().unwrap_or(0)));
    }
    match states.first() {
        Some((TaskState::Queued, _)) => {}
        Some((s, _)) => return Err(format!("first event is {s}, not queued")),
        None => return Err("no events".to_owned()),
    }
    for pair in states.windows(2) {
        let ((from, a), (to, b)) = (pair[0], pair[1]);
        from.transition(to)
            .map_err(|_| format!("{from} → {to} is not a transition"))?;
        if b < a {
            return Err(format!("attempt went from {a} to {b}"));
        }
    }
    let last = states.last().map(|(s, _)| s.as_str()).unwrap_or_default();
    if last != current {
        return Err(format!("last event is {last} but the task is {current}"));
    }
    Ok(())
}
