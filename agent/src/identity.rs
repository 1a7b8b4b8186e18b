//! The agent's identity: what enrollment returned, saved in the state directory.
//!
//! `identity.json` holds the broker password and the heartbeat token, so the directory
//! is 0700 and the file 0600, written atomically. Its `Debug` leaves the secrets out.

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ris_schemas::api::EnrollResponse;
use ris_schemas::labels::Labels;
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// File name of the identity inside the state directory.
pub const IDENTITY_FILE: &str = "identity.json";

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Base URL of the API (`https://ris.example.com`), for the heartbeat.
    pub api_url: String,
    pub enrollment: EnrollResponse,
    /// Tasks run at once; also the task queue prefetch.
    pub capacity: u32,
    pub labels: Labels,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity at {0}: run `ris-agent enroll` first")]
    Missing(PathBuf),
    #[error("an identity already exists at {0}; pass --force to replace it")]
    AlreadyEnrolled(PathBuf),
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("{path} is not a valid identity: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot encode the identity: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Identity {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(IDENTITY_FILE)
    }

    pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path))
            }
            Err(error) => return Err(IdentityError::Read { path, error }),
        };
        let identity = serde_json::from_slice(&bytes).map_err(|error| IdentityError::Parse {
            path: path.clone(),
            error,
        })?;
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "identity file is readable by others; it should be mode 0600");
            }
        }
        Ok(identity)
    }

    /// Fails with [`IdentityError::AlreadyEnrolled`] when an identity exists and `force`
    /// is false.
    pub fn check_absent(state_dir: &Path, force: bool) -> Result<(), IdentityError> {
        let path = Self::path(state_dir);
        if !force && path.exists() {
            return Err(IdentityError::AlreadyEnrolled(path));
        }
        Ok(())
    }

    /// Saves the identity: the directory is created with mode 0700, the file written with
    /// mode 0600 through a temporary file and a rename.
    pub fn save(&self, state_dir: &Path, force: bool) -> Result<PathBuf, IdentityError> {
        Self::check_absent(state_dir, force)?;
        let path = Self::path(state_dir);
        let write_err = |error| IdentityError::Write {
            path: path.clone(),
            error,
        };
        fsutil::ensure_private_dir(state_dir).map_err(write_err)?;
        let bytes = serde_json::to_vec_pretty(self)?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(write_err)?;
        Ok(path)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("api_url", &self.api_url)
            .field("agent_id", &self.enrollment.agent_id)
            .field("tenant", &self.enrollment.tenant)
            .field("name", &self.enrollment.name)
            .field("capacity", &self.capacity)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}
