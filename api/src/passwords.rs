//! Passwords (argon2id, PHC strings) and TOTP codes (RFC 6238: HMAC-SHA1, 6 digits,
//! 30 s steps).

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use rand::RngCore;

pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 256;
/// TOTP step, seconds.
pub const STEP: i64 = 30;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. `None` for the hash spends the
/// same time against a dummy, so an unknown user takes as long as a wrong password.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| hash_password("dummy password for timing").unwrap_or_default());
    let (hash, real) = match hash {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

/// 20 random bytes, as RFC 4226 recommends.
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// RFC 4648 base32 without padding (what authenticator apps expect).
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

pub fn otpauth_uri(email: &str, secret: &[u8]) -> String {
    let label: String = email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xff)
            }
        })
        .collect();
    format!(
        "otpauth://totp/RIS:{label}?secret={}&issuer=RIS&algorithm=SHA1&digits=6&period={STEP}",
        base32(secret)
    )
}

/// The 6-digit code of `secret` for time step `step` (RFC 4226 HOTP, counter = step).
pub fn code_at(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!("{:06}", binary % 1_000_000)
}

/// The step whose code `code` is, within one step of `now` (clock drift), if any.
pub fn verify_totp(secret: &[u8], code: &str, now_unix: i64) -> Option<i64> {
    let current = now_unix.div_euclid(STEP);
    (current - 1..=current + 1).find(|&step| {
        let expected = code_at(secret, step);
        bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            code.trim().as_bytes(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B, 8 digits there; the last 6 digits here.
        assert_eq!(code_at(secret, 59 / STEP), "287082");
        assert_eq!(code_at(secret, 1_111_111_109 / STEP), "081804");
        assert_eq!(code_at(secret, 2_000_000_000 / STEP), "279037");
        assert_eq!(verify_totp(secret, "287082", 59 + 30), Some(1));
        assert_eq!(verify_totp(secret, "287082", 59 + 90), None);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn passwords_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("wrong horse battery", Some(&h)));
        assert!(!verify_password("correct horse battery", None));
    }
}
