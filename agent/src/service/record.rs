//! What the agent was told about one service, kept on disk so it survives an agent
//! restart and a broker outage: `<state dir>/services/<name>.json`, written atomically.

use std::io;
use std::path::{Path, PathBuf};

use ris_schemas::service::{ServiceName, ServiceSpec};
use serde::{Deserialize, Serialize};

use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot encode the record of {0}: {1}")]
    Encode(ServiceName, serde_json::Error),
    #[error("a blocking file task failed")]
    Blocking,
}

/// One revision of a service as the agent runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u32,
    pub spec: ServiceSpec,
}

/// A revision whose update failed; not tried again until a newer revision arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRevision {
    pub revision: u32,
    pub reason: String,
    pub error: String,
}

/// The desired state of one service on this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: ServiceName,
    /// The last revision the agent was told to run (or, once `removed`, the revision of
    /// the remove order).
    pub current: Revision,
    /// The last revision whose replicas all ran (and were healthy): where a failed
    /// update rolls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good: Option<Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedRevision>,
    /// Told to remove the service; the file goes once its containers are gone.
    #[serde(default)]
    pub removed: bool,
}

impl ServiceRecord {
    pub fn new(service: ServiceName, revision: u32, spec: ServiceSpec) -> Self {
        Self {
            service,
            current: Revision { revision, spec },
            good: None,
            failed: None,
            removed: false,
        }
    }

    /// True when the current revision failed and must not be tried again.
    pub fn current_failed(&self) -> bool {
        self.failed
            .as_ref()
            .is_some_and(|f| f.revision == self.current.revision)
    }
}

/// The `services/` directory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RecordError> {
        let dir = dir.into();
        fsutil::ensure_private_dir(&dir).map_err(|source| RecordError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, service: &ServiceName) -> PathBuf {
        self.dir.join(format!("{service}.json"))
    }

    /// Every record; unreadable files are logged and skipped (the next order for the
    /// service rewrites them).
    pub fn load_all(&self) -> Result<Vec<ServiceRecord>, RecordError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| RecordError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if fsutil::is_temp_name(&name) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<ServiceRecord>(&b).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable service record skipped")
                }
            }
        }
        records.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(records)
    }

    pub fn save(&self, record: &ServiceRecord) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| RecordError::Encode(record.service.clone(), e))?;
        let path = self.path(&record.service);
        fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| RecordError::Write { path, source })
    }

    pub fn delete(&self, service: &ServiceName) -> Result<(), RecordError> {
        let path = self.path(service);
        fsutil::remove_durably(&path).map_err(|source| RecordError::Write { path, source })
    }

    /// [`RecordStore::save`] off the async threads.
    pub async fn save_async(&self, record: &ServiceRecord) -> Result<(), RecordError> {
        let (store, record) = (self.clone(), record.clone());
        tokio::task::spawn_blocking(move || store.save(&record))
            .await
            .map_err(|_| RecordError::Blocking)?
    }

    /// [`RecordStore::delete`] off the async threads.
    pub async fn delete_async(&self, service: &ServiceName) -> Result<(), RecordError> {
        let (store, service) = (self.clone(), service.clone());
        tokio::task::spawn_blocking(move || store.delete(&service))
            .await
            .map_err(|_| RecordError::Blocking)?
    }
}
