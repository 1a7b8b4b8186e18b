//! The outbox: results that could not be published yet, on disk, in order.
//!
//! When the broker is unreachable a result is appended as `outbox/<seq>.json` (sequence
//! zero-padded to 20 digits so names sort in order; written and fsynced). On reconnect,
//! and periodically while connected, the outbox is flushed oldest first; each entry is
//! deleted once its publish is confirmed, and a flush stops at the first failure so the
//! order holds.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ris_schemas::messages::ResultMessage;

use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("cannot encode an outbox entry: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("outbox task panicked or was cancelled")]
    Blocking,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |error| OutboxError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// The next sequence number to hand out.
    next_seq: Mutex<u64>,
    /// One flush at a time, so entries are never published out of order or twice.
    flushing: tokio::sync::Mutex<()>,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flushed {
    pub published: usize,
    /// Entries still waiting (a publish failed).
    pub remaining: usize,
}

impl Outbox {
    /// Opens (creating with mode 0700) the outbox and continues its sequence.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OutboxError> {
        let dir = dir.into();
        fsutil::ensure_private_dir(&dir).map_err(io_err(&dir))?;
        let last = list(&dir)?.last().map_or(0, |(seq, _)| *seq);
        Ok(Self {
            dir,
            next_seq: Mutex::new(last + 1),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    /// Appends a result durably; returns its sequence number.
    pub async fn append(&self, message: &ResultMessage) -> Result<u64, OutboxError> {
        let bytes = serde_json::to_vec(message)?;
        let seq = {
            let mut next = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = *next;
            *next += 1;
            seq
        };
        let path = self.dir.join(format!("{seq:020}.json"));
        tokio::task::spawn_blocking(move || {
            fsutil::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))
        })
        .await
        .map_err(|_| OutboxError::Blocking)??;
        Ok(seq)
    }

    /// Number of waiting entries.
    pub fn len(&self) -> Result<usize, OutboxError> {
        Ok(list(&self.dir)?.len())
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }

    /// Publishes waiting entries oldest first through `publish`, deleting each once
    /// `publish` succeeds, and stops at the first failure. An entry that cannot be read
    /// is moved aside as `*.corrupt` and logged.
    pub async fn flush<F, Fut, E>(&self, mut publish: F) -> Result<Flushed, OutboxError>
    where
        F: FnMut(ResultMessage) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let _one_at_a_time = self.flushing.lock().await;
        let entries = list(&self.dir)?;
        let mut flushed = Flushed::default();
        for (i, (seq, path)) in entries.iter().enumerate() {
            let message = match read_entry(path).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable outbox entry; moved aside");
                    let _ = std::fs::rename(path, path.with_extension("corrupt"));
                    continue;
                }
            };
            if let Err(e) = publish(message).await {
                tracing::debug!(seq, error = %e, "outbox flush stopped");
                flushed.remaining = entries.len() - i;
                return Ok(flushed);
            }
            let p = path.clone();
            tokio::task::spawn_blocking(move || fsutil::remove_durably(&p).map_err(io_err(&p)))
                .await
                .map_err(|_| OutboxError::Blocking)??;
            flushed.published += 1;
        }
        Ok(flushed)
    }
}

async fn read_entry(path: &Path) -> Result<ResultMessage, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Entries by sequence number, oldest first.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OutboxError> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = item.map_err(io_err(dir))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let seq = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(seq) = seq {
            entries.push((seq, path));
        }
    }
    entries.sort_by_key(|(seq, _)| *seq);
    Ok(entries)
}
