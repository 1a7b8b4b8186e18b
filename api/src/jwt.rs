//! Access tokens: HS256 JWTs with a `kid`, signed with keys kept in PostgreSQL
//! (`jwt_keys`), so several API instances share them and a new key can take over
//! while tokens signed with the old one stay valid until it is retired.
//!
//! Only `alg: HS256` is accepted (so `none` and algorithm confusion are refused);
//! the signature is compared in constant time; `exp` is checked; and the token's
//! session must still be live (logout revokes it at once).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use ris_store::JwtKeyRecord;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Lifetime of an access token.
pub const ACCESS_TTL_SECS: u32 = 900;
const CACHE_FOR: Duration = Duration::from_secs(5);
const ISSUER: &str = "ris";

#[derive(Default)]
pub struct JwtState {
    keys: Mutex<Option<(Instant, Vec<JwtKeyRecord>)>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: Uuid,
    /// The session id (revoked by logout).
    pub sid: Uuid,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

fn mac(secret: &[u8], input: &str) -> ApiResult<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| {
        ApiError::internal(&ris_store::StoreError::Corrupt(
            "JWT key of no length".into(),
        ))
    })?;
    mac.update(input.as_bytes());
    Ok(mac)
}

async fn keys(state: &AppState, refresh: bool) -> ApiResult<Vec<JwtKeyRecord>> {
    let mut slot = state.jwt.keys.lock().await;
    if let Some((at, keys)) = slot.as_ref() {
        if !refresh && at.elapsed() < CACHE_FOR {
            return Ok(keys.clone());
        }
    }
    let keys = state.store.jwt_keys().await?;
    *slot = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

fn b64json<T: Serialize>(value: &T) -> ApiResult<String> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh key: random kid and 256-bit secret.
pub fn new_key() -> JwtKeyRecord {
    JwtKeyRecord {
        kid: format!("j{}", &crate::secrets::random_secret()[..12]),
        secret: crate::secrets::random_secret().into_bytes(),
        activate_at: Utc::now(),
    }
}

/// A signed access token for the user's session.
pub async fn issue(state: &AppState, claims: &Claims) -> ApiResult<String> {
    let key = state.store.current_jwt_key(new_key()).await?;
    let header = Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
        kid: Some(key.kid.clone()),
    };
    let input = format!("{}.{}", b64json(&header)?, b64json(claims)?);
    let signature = mac(&key.secret, &input)?.finalize().into_bytes();
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Forgets the cached keys (a key was retired here; other instances follow within
/// [`CACHE_FOR`]).
pub async fn forget(state: &AppState) {
    *state.jwt.keys.lock().await = None;
}

/// Whether a bearer credential looks like a JWT (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Checks signature, algorithm, issuer and expiry; the caller checks the session.
pub async fn verify(state: &AppState, token: &str) -> Result<Claims, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| "malformed token");
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| "malformed token")?;
    if header.alg != "HS256" {
        return Err("unsupported token algorithm");
    }
    let kid = header.kid.ok_or("token without a key id")?;
    let mut found = None;
    for refresh in [false, true] {
        let keys = keys(state, refresh).await.map_err(|_| "keys unavailable")?;
        if let Some(k) = keys.into_iter().find(|k| k.kid == kid) {
            found = Some(k);
            break;
        }
    }
    let key = found.ok_or("token signed with an unknown key")?;
    let signature = decode(s)?;
    mac(&key.secret, &format!("{h}.{c}"))
        .map_err(|_| "bad key")?
        .verify_slice(&signature)
        .map_err(|_| "bad token signature")?;
    let claims: Claims = serde_json::from_slice(&decode(c)?).map_err(|_| "malformed claims")?;
    if claims.iss != ISSUER {
        return Err("token from another issuer");
    }
    if claims.exp <= Utc::now().timestamp() {
        return Err("token expired");
    }
    Ok(claims)
}

pub fn claims_for(user: &ris_store::UserRecord, session: Uuid) -> Claims {
    let now = Utc::now().timestamp();
    Claims {
        iss: ISSUER.into(),
        sub: user.id,
        sid: session,
        role: user.role.clone(),
        tenant: user.tenant.as_ref().map(|t| t.name.to_string()),
        iat: now,
        exp: now + i64::from(ACCESS_TTL_SECS),
    }
}
