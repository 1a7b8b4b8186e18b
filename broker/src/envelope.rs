//! Signed envelopes: every assignment and control message to an agent carries an
//! Ed25519 signature, so a stolen broker credential or a compromised queue cannot make
//! an agent run anything.
//!
//! The message body is unchanged (integrators and older readers see the same JSON);
//! the signature travels in three AMQP headers:
//!
//! - `x-ris-sig-kid`: which key signed (keys rotate; agents hold every current one);
//! - `x-ris-sig-exp`: unix seconds after which the message must not be acted on;
//! - `x-ris-sig`: hex Ed25519 signature over [`signed_bytes`], which covers the tenant,
//!   the agent id, the task id and attempt (when the message has them), the expiry and
//!   the body.
//!
//! The verifier rebuilds the scope from what it knows itself (its own tenant and agent
//! id) and from the body it is about to act on, so a message signed for another agent
//! or tenant, or with a changed body, does not verify.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use lapin::types::{AMQPValue, FieldTable};
use ris_schemas::ids::{AgentId, TaskId, TenantName};
use ris_schemas::messages::{AgentMessage, ControlMessage};

use crate::{BrokerError, PublishOptions, Publisher, AGENTS_EXCHANGE};

pub const HEADER_KID: &str = "x-ris-sig-kid";
pub const HEADER_EXPIRES: &str = "x-ris-sig-exp";
pub const HEADER_SIGNATURE: &str = "x-ris-sig";

/// What a message is about, as far as its signature is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    pub tenant: &'a TenantName,
    pub agent: AgentId,
    pub task: Option<TaskId>,
    /// 0 when the message names no attempt.
    pub attempt: u32,
}

/// Domain-separated bytes the signature covers.
pub fn signed_bytes(scope: &Scope<'_>, expires: i64, body: &[u8]) -> Vec<u8> {
    let task = scope.task.map_or_else(|| "-".to_owned(), |t| t.to_string());
    let mut out = format!(
        "ris-envelope-v1\n{}\n{}\n{task}\n{}\n{expires}\n",
        scope.tenant, scope.agent, scope.attempt
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The signing half of a key, held by dispatchers and APIs.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    pub fn from_seed(kid: impl Into<String>, seed: &[u8; 32]) -> Self {
        Self {
            kid: kid.into(),
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A fresh key: (kid, seed, public key).
    pub fn generate() -> (String, [u8; 32], [u8; 32]) {
        let seed: [u8; 32] = rand::random();
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let kid = format!("k{}", hex::encode(&public[..6]));
        (kid, seed, public)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The three headers for a message with this scope and body, valid until `expires`.
    pub fn headers(
        &self,
        scope: &Scope<'_>,
        expires: DateTime<Utc>,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let exp = expires.timestamp();
        let signature = self.key.sign(&signed_bytes(scope, exp, body));
        vec![
            (HEADER_KID.to_owned(), self.kid.clone()),
            (HEADER_EXPIRES.to_owned(), exp.to_string()),
            (
                HEADER_SIGNATURE.to_owned(),
                hex::encode(signature.to_bytes()),
            ),
        ]
    }
}

/// The current [`Signer`], reloaded at most every `ttl` (rotation takes effect within
/// it; new keys are published well before they activate, so agents know them first).
pub struct SignerCache {
    ttl: std::time::Duration,
    slot: tokio::sync::Mutex<Option<(std::time::Instant, Signer)>>,
}

impl SignerCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached signer, or the one `load` returns when the cache is empty or stale.
    pub async fn get<F, Fut, E>(&self, load: F) -> Result<Signer, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Signer, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, signer)) = slot.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(signer.clone());
            }
        }
        let signer = load().await?;
        *slot = Some((std::time::Instant::now(), signer.clone()));
        Ok(signer)
    }
}

/// Messages sent to agents, and what of them the signature scope names.
pub trait ToAgent: serde::Serialize {
    /// The task and attempt the message is about (`None`, 0 when it names none).
    fn task_and_attempt(&self) -> (Option<TaskId>, u32);
}

impl ToAgent for AgentMessage {
    fn task_and_attempt(&self) -> (Option<TaskId>, u32) {
        match self {
            AgentMessage::Assign(a) => (Some(a.task_id), a.attempt),
        }
    }
}

impl ToAgent for ControlMessage {
    fn task_and_attempt(&self) -> (Option<TaskId>, u32) {
        match self {
            ControlMessage::Cancel { task_id, .. } => (Some(*task_id), 0),
            ControlMessage::Revoke {
                task_id, attempt, ..
            } => (Some(*task_id), *attempt),
            _ => (None, 0),
        }
    }
}

/// How long a signed message stays valid. Long enough for clock skew and a message
/// waiting in a queue; a replay within it is harmless (the agent's journal runs an
/// attempt once, and control orders are idempotent).
pub const VALIDITY: chrono::Duration = chrono::Duration::hours(1);

/// Serializes `message`, signs it for `agent` of `tenant`, and publishes it to the
/// `ris.agents` exchange with `routing_key` (the agent's id, or its control key).
pub async fn publish_to_agent<M: ToAgent>(
    publisher: &Publisher,
    signer: &Signer,
    tenant: &TenantName,
    agent: AgentId,
    routing_key: &str,
    message: &M,
    mut opts: PublishOptions,
) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(message)?;
    let (task, attempt) = message.task_and_attempt();
    let scope = Scope {
        tenant,
        agent,
        task,
        attempt,
    };
    opts.headers
        .extend(signer.headers(&scope, Utc::now() + VALIDITY, &body));
    publisher
        .publish_bytes(AGENTS_EXCHANGE, routing_key, &body, opts)
        .await
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("no signature")]
    Missing,
    #[error("signed with an unknown key `{0}`")]
    UnknownKey(String),
    #[error("malformed signature headers")]
    Malformed,
    #[error("signature does not match")]
    BadSignature,
    #[error("signature expired")]
    Expired,
}

/// The verifying keys an agent trusts, by kid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: HashMap<String, VerifyingKey>,
}

impl KeyRing {
    /// From `(kid, hex public key)` pairs; malformed keys are skipped.
    pub fn from_hex<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|(kid, public)| {
                let bytes: [u8; 32] = hex::decode(public).ok()?.try_into().ok()?;
                Some((kid.to_owned(), VerifyingKey::from_bytes(&bytes).ok()?))
            })
            .collect();
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature headers of a message with this scope and body.
    pub fn verify(
        &self,
        headers: Option<&FieldTable>,
        scope: &Scope<'_>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), EnvelopeError> {
        let get = |name: &str| headers.and_then(|h| text(h.inner().get(name)));
        let (Some(kid), Some(exp), Some(sig)) =
            (get(HEADER_KID), get(HEADER_EXPIRES), get(HEADER_SIGNATURE))
        else {
            return Err(EnvelopeError::Missing);
        };
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| EnvelopeError::UnknownKey(kid.clone()))?;
        let exp: i64 = exp.parse().map_err(|_| EnvelopeError::Malformed)?;
        let sig: [u8; 64] = hex::decode(&sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(EnvelopeError::Malformed)?;
        key.verify(
            &signed_bytes(scope, exp, body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| EnvelopeError::BadSignature)?;
        if now.timestamp() > exp {
            return Err(EnvelopeError::Expired);
        }
        Ok(())
    }
}

fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Turns `(name, value)` string headers into a field table (for tests and verifiers
/// that hold headers as strings).
pub fn field_table(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Signer, KeyRing, TenantName) {
        let (kid, seed, public) = Signer::generate();
        let signer = Signer::from_seed(&kid, &seed);
        let ring = KeyRing::from_hex([(kid.as_str(), hex::encode(public).as_str())]);
        (signer, ring, TenantName::parse("acme").unwrap())
    }

    #[test]
    fn verifies_only_the_signed_scope_and_body() {
        let (signer, ring, tenant) = setup();
        let scope = Scope {
            tenant: &tenant,
            agent: AgentId::new(),
            task: Some(TaskId::new()),
            attempt: 1,
        };
        let now = Utc::now();
        let exp = now + chrono::Duration::seconds(60);
        let headers = field_table(&signer.headers(&scope, exp, b"{}"));
        assert_eq!(ring.verify(Some(&headers), &scope, b"{}", now), Ok(()));
        assert_eq!(
            ring.verify(Some(&headers), &scope, b"{ }", now),
            Err(EnvelopeError::BadSignature)
        );
        let other_agent = Scope {
            agent: AgentId::new(),
            ..scope.clone()
        };
        assert_eq!(
            ring.verify(Some(&headers), &other_agent, b"{}", now),
            Err(EnvelopeError::BadSignature)
        );
        let next_attempt = Scope {
            attempt: 2,
            ..scope.clone()
        };
        assert!(ring
            .verify(Some(&headers), &next_attempt, b"{}", now)
            .is_err());
        let later = exp + chrono::Duration::seconds(1);
        assert_eq!(
            ring.verify(Some(&headers), &scope, b"{}", later),
            Err(EnvelopeError::Expired)
        );
        assert_eq!(
            ring.verify(None, &scope, b"{}", now),
            Err(EnvelopeError::Missing)
        );
        let (stranger, _, _) = setup();
        let forged = field_table(&stranger.headers(&scope, exp, b"{}"));
        assert!(matches!(
            ring.verify(Some(&forged), &scope, b"{}", now),
            Err(EnvelopeError::UnknownKey(_))
        ));
    }
}
