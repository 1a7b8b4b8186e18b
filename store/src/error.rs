//! Errors of the storage layer.
//!
//! [`StoreError`] is what every repository call can fail with; callers treat it as an
//! internal error. Outcomes a caller must act on (a task not found, a stale attempt, a
//! used enrollment token) are not errors but values: see [`crate::TransitionOutcome`],
//! [`crate::ResultOutcome`] and [`RedeemError`].

use ris_schemas::ids::TaskId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode into its domain type (bad JSON, unknown state, ...).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The task id is already used by another tenant. Submitters may choose task ids,
    /// so this can happen; the other tenant's task is not revealed.
    #[error("task id {0} is already in use")]
    TaskIdTaken(TaskId),
    /// The caller broke a repository method's contract (a bug, not bad data).
    #[error("invalid store call: {0}")]
    Invalid(String),
}

impl StoreError {
    /// The database could not be reached (down, restarting, pool exhausted): retrying
    /// later may succeed. Anything else is a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            StoreError::Db(
                E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed,
            ) => true,
            // SQLSTATE classes 08 (connection exception) and 57 (operator intervention:
            // shutdown, "cannot connect now" while starting).
            StoreError::Db(E::Database(e)) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            _ => false,
        }
    }

    /// PostgreSQL rolled the transaction back to resolve a conflict with another one (a
    /// deadlock, or a serialization failure): running it again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e))
            if e.code().is_some_and(|c| c.starts_with("40")))
    }

    pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(format!("{what}: {err}"))
    }
}

/// Why an enrollment token could not be redeemed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("enrollment token is unknown")]
    NotFound,
    #[error("enrollment token has already been used")]
    AlreadyUsed,
    #[error("enrollment token has expired")]
    Expired,
    /// The token stays unused, so the agent may retry under another name.
    #[error("an agent with this name already exists in the tenant")]
    NameTaken,
    /// The tenant has `max` agents already (quota `max_agents`); the token stays unused.
    #[error("the tenant has reached its quota of {max} agents")]
    QuotaExceeded { max: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RedeemError {
    fn from(e: sqlx::Error) -> Self {
        RedeemError::Store(StoreError::Db(e))
    }
}
