//! Signing what the dispatcher sends to agents (assignments, revoke orders), and
//! recognising dead letters an agent refused for their signature.
//!
//! Keys live in PostgreSQL (`ris_store::SigningKeyRepo`); the current one is reused
//! for [`CACHE_FOR`], so a rotation takes effect here within that time (new keys are
//! published to agents long before they activate).

use std::time::Duration;

use chrono::Utc;
use ris_broker::envelope::{self, KeyRing, Scope, Signer, SignerCache, ToAgent};
use ris_broker::{BrokerError, PublishOptions, Publisher};
use ris_schemas::ids::{AgentId, TenantName};
use ris_schemas::messages::{AgentMessage, ControlMessage};
use ris_store::{NewDeadLetter, NewSigningKey, StoreError};

use crate::context::Context;

pub const CACHE_FOR: Duration = Duration::from_secs(10);

/// The dead-letter reason of a message an agent refused for its signature.
pub const BAD_SIGNATURE: &str = "bad_signature";

pub fn cache() -> SignerCache {
    SignerCache::new(CACHE_FOR)
}

async fn current(ctx: &Context) -> Result<Signer, StoreError> {
    ctx.signer
        .get(|| async {
            let (kid, secret_seed, public_key) = Signer::generate();
            let record = ctx
                .store
                .current_signing_key(NewSigningKey {
                    kid,
                    public_key,
                    secret_seed,
                })
                .await?;
            let seed: [u8; 32] = record.secret_seed.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!("signing key {} has a malformed seed", record.kid))
            })?;
            Ok(Signer::from_seed(&record.kid, &seed))
        })
        .await
}

/// Signs and publishes `message` to `agent` (routing key: its id or control key).
pub async fn publish<M: ToAgent>(
    ctx: &Context,
    publisher: &Publisher,
    tenant: &TenantName,
    agent: AgentId,
    routing_key: &str,
    message: &M,
    opts: PublishOptions,
) -> Result<(), BrokerError> {
    let signer = current(ctx)
        .await
        .map_err(|e| BrokerError::Signing(e.to_string()))?;
    envelope::publish_to_agent(
        publisher,
        &signer,
        tenant,
        agent,
        routing_key,
        message,
        opts,
    )
    .await
}

/// When `letter` is a message an agent rejected (from its task or control queue) whose
/// signature does not verify for that agent, the reason to record: `bad_signature`.
pub async fn refused_signature(
    ctx: &Context,
    tenant: &TenantName,
    letter: &NewDeadLetter,
    properties: &ris_broker::lapin::BasicProperties,
    body: &[u8],
) -> Option<&'static str> {
    if letter.reason != "rejected" {
        return None;
    }
    let id = letter
        .source_queue
        .strip_prefix("ris.agent.")
        .map(|rest| rest.trim_end_matches(".ctl"))?;
    let agent = AgentId(uuid::Uuid::try_parse(id).ok()?);
    let (task, attempt) = if letter.source_queue.ends_with(".ctl") {
        serde_json::from_slice::<ControlMessage>(body)
            .ok()
            .map_or((None, 0), |m| m.task_and_attempt())
    } else {
        serde_json::from_slice::<AgentMessage>(body)
            .ok()
            .map_or((None, 0), |m| m.task_and_attempt())
    };
    let keys = match ctx.store.signing_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "signing keys unavailable; dead letter not classified");
            return None;
        }
    };
    let hex_keys: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.kid.clone(), hex::encode(&k.public_key)))
        .collect();
    let ring = KeyRing::from_hex(hex_keys.iter().map(|(k, p)| (k.as_str(), p.as_str())));
    let scope = Scope {
        tenant,
        agent,
        task,
        attempt,
    };
    // Expiry is not the question here: was it ever genuinely signed for this agent?
    match ring.verify(properties.headers().as_ref(), &scope, body, Utc::now()) {
        Ok(()) | Err(envelope::EnvelopeError::Expired) => None,
        Err(_) => Some(BAD_SIGNATURE),
    }
}
