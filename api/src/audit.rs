//! What the guard writes to the audit log, and what handlers may add to it.
//!
//! The guard ([`crate::guard`]) records every mutating call and every refused
//! credential. A handler that knows more than the guard — the tenant of an
//! enrollment, the id of what it created — attaches an [`AuditNote`] to its response.
//!
//! Entries go through one [`AuditWriter`] per process: the entries of concurrent
//! requests are appended together (group commit: one transaction and one lock on the
//! chain per batch, where one per request made every mutating call of a tenant queue
//! behind one advisory lock). A request still answers only after its entry is
//! committed, as before.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use ris_runtime::batch::KeyedBatcher;
use ris_schemas::security::AuditOutcome;
use ris_store::{DynStore, NewAuditEntry, TenantCtx, MAX_AUDIT_BATCH};
use uuid::Uuid;

use crate::state::AppState;

/// Longest request id or target kept.
const MAX_FIELD: usize = 200;

/// Facts a handler adds to the audit entry of its call (a response extension).
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The chain to write to, when the credential does not name it (enrollment,
    /// signed hooks, a platform admin acting on a tenant).
    pub tenant: Option<TenantCtx>,
    /// Who acted, when not the credential (`agent:<id>` for an enrollment).
    pub actor: Option<String>,
    /// What was acted on, e.g. `task:<id>`.
    pub target: Option<String>,
}

impl AuditNote {
    pub fn target(target: impl Into<String>) -> Self {
        Self {
            target: Some(target.into()),
            ..Self::default()
        }
    }

    /// Attaches the note to a response.
    pub fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The request facts the guard captured before running the handler.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub method: Method,
    pub path: String,
    /// The route's operation id, or `auth.failed` when the credential was refused.
    pub action: &'static str,
    pub request_id: Option<String>,
    pub source: Option<String>,
}

impl RequestFacts {
    pub fn new(method: &Method, path: &str, action: &'static str, headers: &HeaderMap) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| clip(v).to_owned());
        Self {
            method: method.clone(),
            path: clip(path).to_owned(),
            action,
            request_id,
            source: None,
        }
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn outcome(status: StatusCode) -> AuditOutcome {
    match status.as_u16() {
        401 | 403 | 429 => AuditOutcome::Denied,
        s if s >= 400 => AuditOutcome::Failed,
        _ => AuditOutcome::Success,
    }
}

/// Calls worth an entry: every mutating call, and every refused credential.
pub fn worth_recording(method: &Method, status: StatusCode) -> bool {
    let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    mutating || status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// Writes one entry. A failure is logged and counted, never shown to the caller (the
/// call itself already happened).
pub async fn record(
    state: &AppState,
    facts: &RequestFacts,
    tenant: Option<TenantCtx>,
    actor: String,
    status: StatusCode,
    note: Option<&AuditNote>,
) {
    let action = facts.action;
    let tenant = note.and_then(|n| n.tenant.clone()).or(tenant);
    let entry = NewAuditEntry {
        tenant,
        actor: note.and_then(|n| n.actor.clone()).unwrap_or(actor),
        action: action.to_owned(),
        target: note
            .and_then(|n| n.target.clone())
            .unwrap_or_else(|| format!("{} {}", facts.method, facts.path)),
        outcome: outcome(status),
        status: status.as_u16(),
        request_id: facts.request_id.clone(),
        source: facts.source.clone(),
        at: Utc::now(),
    };
    if let Err(e) = state.audit.append(entry).await {
        metrics::counter!("ris_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, action, "audit entry not written");
    }
}

/// Entries waiting for the writer, at most; a request finding the queue full waits.
const QUEUE: usize = 8192;

/// Appends audit entries in batches ([`ris_runtime::batch::KeyedBatcher`]): whatever
/// accumulated while the previous batch was being written goes in the next, split by
/// chain (the tenant's, or the platform's), chains written concurrently, one
/// transaction each.
#[derive(Clone)]
pub struct AuditWriter(KeyedBatcher<Option<Uuid>, NewAuditEntry, Result<(), String>>);

impl AuditWriter {
    /// Starts the writer task (it ends when every [`AuditWriter`] clone is dropped).
    pub fn start(store: DynStore) -> Self {
        Self(KeyedBatcher::start(
            QUEUE,
            MAX_AUDIT_BATCH,
            1,
            move |_chain, entries: Vec<NewAuditEntry>| {
                let store = store.clone();
                async move {
                    let count = entries.len();
                    metrics::histogram!("ris_audit_batch_entries").record(count as f64);
                    let written = store
                        .append_audit(entries)
                        .await
                        .map(drop)
                        .map_err(|e| crate::error::error_chain(&e));
                    vec![written; count]
                }
            },
        ))
    }

    /// Appends `entry`; returns once it is committed (or failed, with why).
    pub async fn append(&self, entry: NewAuditEntry) -> Result<(), String> {
        let chain = entry.tenant.as_ref().map(|t| t.id);
        self.0
            .submit(chain, entry)
            .await
            .unwrap_or_else(|| Err("the audit writer has stopped".to_owned()))
    }
}
