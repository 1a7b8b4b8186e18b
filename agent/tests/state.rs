//! What the agent keeps on disk: identity, journal, outbox.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::os::unix::fs::PermissionsExt;

use chrono::Utc;
use ris_agent::identity::{Identity, IdentityError};
use ris_agent::journal::{Journal, JournalEntry};
use ris_agent::outbox::{Flushed, Outbox};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::{Assignment, Executing, ResultMessage};
use ris_schemas::task::{NoopSpec, TaskSpec};
use ris_schemas::version::V1;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn identity_is_private_and_not_overwritten_without_force() {
    let tmp = common::TempDir::new();
    let state = tmp.path().join("state");
    let identity = common::identity("https://api.example");
    let path = identity.save(&state, false).unwrap();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(Identity::load(&state).unwrap(), identity);
    // No temporary file is left next to it.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);

    let other = common::identity("https://other.example");
    assert!(matches!(
        other.save(&state, false),
        Err(IdentityError::AlreadyEnrolled(_))
    ));
    other.save(&state, true).unwrap();
    assert_eq!(Identity::load(&state).unwrap(), other);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn identity_debug_hides_secrets_and_missing_identity_is_explained() {
    let identity = common::identity("https://api.example");
    let debug = format!("{identity:?}");
    assert!(
        !debug.contains("s3cret-password") && !debug.contains("hb-token"),
        "{debug}"
    );
    let tmp = common::TempDir::new();
    let err = Identity::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("ris-agent enroll"), "{err}");
}

fn assignment(task_id: TaskId, attempt: u32) -> Assignment {
    Assignment {
        v: V1,
        task_id,
        attempt,
        agent_id: AgentId::new(),
        task: TaskSpec::Noop(NoopSpec {}),
        timeout_secs: 60,
        output_cap_bytes: 1024,
        assigned_at: Utc::now(),
    }
}

/// An entry for attempt 1 of `task`, accepted now.
fn accepted(task: TaskId) -> JournalEntry {
    JournalEntry {
        assignment: assignment(task, 1),
        started_at: Utc::now(),
    }
}

#[tokio::test]
async fn journal_detects_redelivery_across_reopen_and_after_completion() {
    let tmp = common::TempDir::new();
    let task = TaskId::new();
    let journal = Journal::open(tmp.path().join("journal")).unwrap();
    assert!(!journal.contains(task, 1));
    let entry = accepted(task);
    assert!(journal.record(&entry).await.unwrap(), "a new attempt");
    assert!(journal.contains(task, 1));
    assert!(!journal.contains(task, 2), "another attempt is new work");

    // The agent restarts: the entry is unfinished work, and still a known attempt.
    let journal = Journal::open(tmp.path().join("journal")).unwrap();
    assert!(journal.contains(task, 1));
    assert_eq!(journal.unfinished().unwrap(), vec![entry]);

    // Completed: no longer unfinished, still recognised as a redelivery.
    journal.complete(task, 1).await.unwrap();
    assert!(journal.unfinished().unwrap().is_empty());
    assert!(journal.contains(task, 1));

    // Completing an attempt that has no entry still leaves its marker.
    let other = TaskId::new();
    journal.complete(other, 1).await.unwrap();
    assert!(journal.contains(other, 1));
    assert!(journal.unfinished().unwrap().is_empty());
}

/// Two deliveries of one attempt accepted at once: only the first writes an entry (the
/// second is told so and must not run it), and a written entry is readable before its
/// flush and after it.
#[tokio::test]
async fn journal_writes_an_attempt_once() {
    let tmp = common::TempDir::new();
    let journal = Journal::open(tmp.path()).unwrap();
    let task = TaskId::new();
    let entry = accepted(task);
    let unsynced = journal.write(&entry).await.unwrap().expect("a new attempt");
    assert!(journal.contains(task, 1));
    assert!(
        journal.write(&entry).await.unwrap().is_none(),
        "a second copy"
    );
    assert!(!journal.record(&entry).await.unwrap(), "a second copy");
    unsynced.sync().await.unwrap();
    assert_eq!(journal.unfinished().unwrap(), vec![entry]);
}

#[tokio::test]
async fn journal_forget_allows_a_later_run() {
    let tmp = common::TempDir::new();
    let journal = Journal::open(tmp.path()).unwrap();
    let task = TaskId::new();
    let entry = accepted(task);
    journal.record(&entry).await.unwrap();
    journal.forget(task, 1).await.unwrap();
    assert!(!journal.contains(task, 1));
}

fn executing(task_id: TaskId) -> ResultMessage {
    ResultMessage::Executing(Executing {
        v: V1,
        task_id,
        attempt: 1,
        agent_id: AgentId::new(),
        started_at: Utc::now(),
    })
}

#[tokio::test]
async fn outbox_keeps_order_across_reopen() {
    let tmp = common::TempDir::new();
    let dir = tmp.path().join("outbox");
    let ids: Vec<TaskId> = (0..4).map(|_| TaskId::new()).collect();
    {
        let outbox = Outbox::open(&dir).unwrap();
        for id in &ids[..3] {
            outbox.append(&executing(*id)).await.unwrap();
        }
    }
    let outbox = Outbox::open(&dir).unwrap();
    outbox.append(&executing(ids[3])).await.unwrap();
    assert_eq!(outbox.len().unwrap(), 4);

    // The broker fails on the third message: two go out, the rest wait in order.
    let mut seen = Vec::new();
    let flushed = outbox
        .flush(|m| {
            let ok = seen.len() < 2;
            if ok {
                seen.push(m.task_id().unwrap());
            }
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("broker down")
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(
        flushed,
        Flushed {
            published: 2,
            remaining: 2
        }
    );
    assert_eq!(seen, ids[..2]);

    let mut rest = Vec::new();
    let flushed = outbox
        .flush(|m| {
            rest.push(m.task_id().unwrap());
            async { Ok::<(), String>(()) }
        })
        .await
        .unwrap();
    assert_eq!(
        flushed,
        Flushed {
            published: 2,
            remaining: 0
        }
    );
    assert_eq!(rest, ids[2..]);
    assert!(outbox.is_empty().unwrap());
}
