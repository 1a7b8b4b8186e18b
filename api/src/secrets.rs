//! Keys and tokens: generated from the OS RNG, stored only as SHA-256 hashes.
//!
//! Every secret here carries 256 bits of entropy, so a fast hash is enough (there is
//! nothing to brute-force); passwords, when users arrive, get argon2id instead.
//!
//! | secret            | form                          | stored                     |
//! |-------------------|-------------------------------|----------------------------|
//! | API key           | `ris_<key id hex>_<secret>`   | key id + SHA-256(secret)   |
//! | enrollment token  | `ret_<secret>`                | SHA-256(token)             |
//! | heartbeat token   | `rht_<secret>`                | SHA-256(token)             |
//! | broker password   | `<secret>`                    | only in RabbitMQ           |

use rand::RngCore;
use ris_schemas::ids::ApiKeyId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, hex-encoded.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256(data: &str) -> Vec<u8> {
    Sha256::digest(data.as_bytes()).to_vec()
}

/// Compares a presented secret with a stored hash in constant time.
pub fn matches_hash(presented: &str, stored_hash: &[u8]) -> bool {
    sha256(presented).ct_eq(stored_hash).into()
}

/// A new API key: (id, full key string to show once, hash of the secret part).
pub fn new_api_key() -> (ApiKeyId, String, Vec<u8>) {
    let id = ApiKeyId::new();
    let secret = random_secret();
    let key = format!("ris_{}_{}", id.0.simple(), secret);
    (id, key, sha256(&secret))
}

/// Splits `ris_<id>_<secret>` into its id and secret.
pub fn parse_api_key(key: &str) -> Option<(ApiKeyId, &str)> {
    let rest = key.strip_prefix("ris_")?;
    let (id, secret) = rest.split_once('_')?;
    let id = uuid::Uuid::try_parse(id).ok()?;
    Some((ApiKeyId(id), secret))
}

pub fn new_enrollment_token() -> String {
    format!("ret_{}", random_secret())
}

pub fn new_heartbeat_token() -> String {
    format!("rht_{}", random_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_round_trip() {
        let (id, key, hash) = new_api_key();
        let (parsed, secret) = parse_api_key(&key).unwrap();
        assert_eq!(parsed, id);
        assert!(matches_hash(secret, &hash));
        assert!(!matches_hash("nope", &hash));
        assert!(parse_api_key("ris_nothex_x").is_none());
        assert!(parse_api_key("other").is_none());
    }
}
