//! The keys that sign assignments and control messages ([`ris_broker::envelope`]): the
//! current signer for what the API itself sends (`task.cancel`), and the public keys
//! it hands to agents at enrollment and in every heartbeat reply.

use std::time::{Duration, Instant};

use ris_broker::envelope::{Signer, SignerCache};
use ris_schemas::security::SigningKeyView;
use ris_store::{NewSigningKey, SigningKeyRecord};
use tokio::sync::Mutex;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long the signer and the public key list are reused.
const CACHE_FOR: Duration = Duration::from_secs(5);

pub struct SigningState {
    signer: SignerCache,
    public: Mutex<Option<(Instant, Vec<SigningKeyView>)>>,
}

impl Default for SigningState {
    fn default() -> Self {
        Self {
            signer: SignerCache::new(CACHE_FOR),
            public: Mutex::new(None),
        }
    }
}

pub fn new_key() -> NewSigningKey {
    let (kid, secret_seed, public_key) = Signer::generate();
    NewSigningKey {
        kid,
        public_key,
        secret_seed,
    }
}

pub fn signer_of(record: &SigningKeyRecord) -> ApiResult<Signer> {
    let seed: [u8; 32] = record.secret_seed.as_slice().try_into().map_err(|_| {
        ApiError::internal(&ris_store::StoreError::Corrupt(format!(
            "signing key {} has a malformed seed",
            record.kid
        )))
    })?;
    Ok(Signer::from_seed(&record.kid, &seed))
}

pub fn view(record: &SigningKeyRecord) -> SigningKeyView {
    SigningKeyView {
        kid: record.kid.clone(),
        public_key: hex::encode(&record.public_key),
        activate_at: record.activate_at,
    }
}

/// The key to sign with now (created on first use).
pub async fn signer(state: &AppState) -> ApiResult<Signer> {
    state
        .signing
        .signer
        .get(|| async {
            let record = state.store.current_signing_key(new_key()).await?;
            signer_of(&record)
        })
        .await
}

/// Every key an agent should accept.
pub async fn public_keys(state: &AppState) -> ApiResult<Vec<SigningKeyView>> {
    let mut slot = state.signing.public.lock().await;
    if let Some((at, keys)) = slot.as_ref() {
        if at.elapsed() < CACHE_FOR {
            return Ok(keys.clone());
        }
    }
    // Make sure there is one before the first agent enrolls.
    state.store.current_signing_key(new_key()).await?;
    let keys: Vec<_> = state.store.signing_keys().await?.iter().map(view).collect();
    *slot = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

/// Forgets the cached keys (after a rotation here).
pub async fn forget(state: &AppState) {
    *state.signing.public.lock().await = None;
}
