//! The task journal: which assignments this agent accepted, on disk.
//!
//! An assignment is journaled (`journal/<task_id>.<attempt>.json`) before its delivery
//! is acked and the task started; the entry's fsync runs while the `executing` report
//! awaits its confirm, and the task starts only once both are done. The journal
//! answers two questions:
//!
//! - *Is this delivery a redelivery?* RabbitMQ redelivers when an ack was lost with the
//!   connection. An accepted `(task_id, attempt)` must not run twice.
//! - *What was running when the agent died?* Entries left at startup are reported as
//!   failed with reason `agent_restarted`.
//!
//! When the result is published or outboxed the entry is renamed to
//! `<task_id>.<attempt>.done`, a marker, so a redelivery that arrives after the task
//! ended is still recognised. Markers older than a week (by the time the task was
//! accepted) are pruned at startup.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use ris_schemas::ids::TaskId;
use ris_schemas::messages::Assignment;
use serde::{Deserialize, Serialize};

use crate::fsutil;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub assignment: Assignment,
    /// When the agent accepted it (the `started_at` of its reports).
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("cannot encode a journal entry: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("journal task panicked or was cancelled")]
    Blocking,
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |error| JournalError::Io {
        path: path.to_path_buf(),
        error,
    }
}

impl Journal {
    /// Opens (creating with mode 0700) the journal directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        fsutil::ensure_private_dir(&dir).map_err(io_err(&dir))?;
        Ok(Self { dir })
    }

    fn entry_path(&self, task_id: TaskId, attempt: u32) -> PathBuf {
        self.dir.join(format!("{task_id}.{attempt}.json"))
    }

    fn marker_path(&self, task_id: TaskId, attempt: u32) -> PathBuf {
        self.dir.join(format!("{task_id}.{attempt}.done"))
    }

    /// True when this attempt was accepted before (running, or ended).
    pub fn contains(&self, task_id: TaskId, attempt: u32) -> bool {
        self.entry_path(task_id, attempt).exists() || self.marker_path(task_id, attempt).exists()
    }

    /// Records an accepted assignment durably: [`Journal::write`], then
    /// [`Unsynced::sync`]. `Ok(false)`: the attempt was journaled already.
    pub async fn record(&self, entry: &JournalEntry) -> Result<bool, JournalError> {
        match self.write(entry).await? {
            Some(unsynced) => unsynced.sync().await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Writes an entry under its final name without waiting for the disk, so the caller
    /// can overlap the flush ([`Unsynced::sync`]) with other work: the worker publishes
    /// the `executing` report meanwhile, and starts the task only once both are done.
    /// The file is new (never written over), so a crash before the flush leaves no
    /// entry, or a truncated one that [`Journal::unfinished`] moves aside: either way a
    /// task that never started. A failed write leaves nothing behind.
    ///
    /// `Ok(None)`: an entry for this attempt exists already (another delivery of the
    /// same attempt is being accepted, or was).
    pub async fn write(&self, entry: &JournalEntry) -> Result<Option<Unsynced>, JournalError> {
        let path = self.entry_path(entry.assignment.task_id, entry.assignment.attempt);
        let bytes = serde_json::to_vec(entry)?;
        tokio::task::spawn_blocking(move || match fsutil::write_new(&path, &bytes, 0o600) {
            Ok(file) => Ok(Some(Unsynced { file, path })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        })
        .await
        .map_err(|_| JournalError::Blocking)?
    }

    /// The attempt's result is safe (published or outboxed): the entry becomes its
    /// marker. One rename and one directory fsync (on the task path of every task;
    /// writing a fresh marker and removing the entry took three fsyncs).
    pub async fn complete(&self, task_id: TaskId, attempt: u32) -> Result<(), JournalError> {
        let entry = self.entry_path(task_id, attempt);
        let marker = self.marker_path(task_id, attempt);
        blocking(move || {
            match std::fs::rename(&entry, &marker) {
                Ok(()) => fsutil::sync_dir(&self_dir(&marker)).map_err(io_err(&marker)),
                // No entry (never journaled here): a marker still records the end.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fsutil::write_atomic(&marker, b"", 0o600).map_err(io_err(&marker))
                }
                Err(e) => Err(io_err(&entry)(e)),
            }
        })
        .await
    }

    /// Forgets an entry without a marker: the task was never started (its `executing`
    /// report failed and the delivery goes back to the queue to be run later).
    pub async fn forget(&self, task_id: TaskId, attempt: u32) -> Result<(), JournalError> {
        let entry = self.entry_path(task_id, attempt);
        blocking(move || fsutil::remove_durably(&entry).map_err(io_err(&entry))).await
    }

    /// Entries without a result: tasks that were running when the agent stopped.
    /// Unreadable entries are logged and moved aside as `*.corrupt`.
    pub fn unfinished(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let mut entries = Vec::new();
        for path in self.list("json")? {
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JournalEntry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable journal entry (a crash before its flush leaves one; that task never started); moved aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        entries.sort_by_key(|e| e.started_at);
        Ok(entries)
    }

    /// Deletes done-markers older than `ttl`; returns how many.
    pub fn prune_markers(&self, ttl: Duration) -> Result<usize, JournalError> {
        let now = SystemTime::now();
        let mut pruned = 0;
        for path in self.list("done")? {
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > ttl);
            if old && std::fs::remove_file(&path).is_ok() {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    fn list(&self, extension: &str) -> Result<Vec<PathBuf>, JournalError> {
        let mut paths = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = item.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let temp = name.as_deref().is_some_and(fsutil::is_temp_name);
            if !temp && path.extension().is_some_and(|e| e == extension) {
                paths.push(path);
            }
        }
        Ok(paths)
    }
}

/// A journal entry written but not yet flushed to disk ([`Journal::write`]).
#[derive(Debug)]
#[must_use = "an entry is durable only once synced"]
pub struct Unsynced {
    file: std::fs::File,
    path: PathBuf,
}

impl Unsynced {
    /// Flushes the entry and its directory entry: from then on it survives a crash.
    pub async fn sync(self) -> Result<(), JournalError> {
        blocking(move || {
            self.file.sync_all().map_err(io_err(&self.path))?;
            fsutil::sync_dir(&self_dir(&self.path)).map_err(io_err(&self.path))
        })
        .await
    }
}

/// The directory holding `path` (the journal's own; its paths always have one).
fn self_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs blocking file work off the async runtime.
async fn blocking(
    f: impl FnOnce() -> Result<(), JournalError> + Send + 'static,
) -> Result<(), JournalError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| JournalError::Blocking)?
}
