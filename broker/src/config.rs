//! Broker settings shared by every component that talks to RabbitMQ.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// How to reach RabbitMQ (AMQP and management API) as the admin user.
///
/// `amqp_url` holds neither credentials nor a vhost: each connection picks its vhost
/// (one per tenant) and user (admin or an agent), see [`crate::amqp_uri`].
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Base AMQP URL, e.g. `amqp://127.0.0.1:5672` or `amqps://broker:5671`.
    pub amqp_url: String,
    /// Admin user, used by the API and the dispatcher (and to provision tenants).
    pub username: String,
    /// Password of `username`. Never logged (see the `Debug` impl).
    pub password: String,
    /// Base URL of the management HTTP API.
    pub management_url: String,
    /// URL handed to agents at enrollment, when they reach the broker by another name
    /// (NAT, TLS front end). Defaults to `amqp_url`; see [`BrokerConfig::agent_amqp_url`].
    pub public_amqp_url: Option<String>,
    /// AMQP frame_max. lapin preallocates 32 × frame_max per connection, so processes
    /// holding many connections should lower it (e.g. 16384).
    pub frame_max: Option<u32>,
    /// Heartbeat interval; also keeps NAT mappings alive.
    pub heartbeat_secs: u16,
    /// Bound on opening a connection (lapin's own connect never gives up).
    pub connect_timeout_ms: u64,
    /// PEM CA certificate(s) an `amqps://` broker's certificate must chain to. Without
    /// it, the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Allow `amqp://` (plain text) URLs: for local development only. Servers refuse to
    /// start with a plain URL otherwise, see [`BrokerConfig::check_transport`].
    pub insecure_amqp: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://127.0.0.1:5672".into(),
            username: "guest".into(),
            password: "guest".into(),
            management_url: "http://127.0.0.1:15672".into(),
            public_amqp_url: None,
            frame_max: None,
            heartbeat_secs: 10,
            connect_timeout_ms: 5000,
            ca_file: None,
            insecure_amqp: false,
        }
    }
}

impl BrokerConfig {
    /// The AMQP URL agents should dial: `public_amqp_url`, else `amqp_url`.
    pub fn agent_amqp_url(&self) -> &str {
        self.public_amqp_url.as_deref().unwrap_or(&self.amqp_url)
    }

    /// Fails when `amqp_url` or `public_amqp_url` is plain AMQP and `insecure_amqp`
    /// does not allow it. Servers call it at start.
    pub fn check_transport(&self) -> Result<(), BrokerError> {
        if self.insecure_amqp {
            return Ok(());
        }
        for url in [Some(&self.amqp_url), self.public_amqp_url.as_ref()]
            .into_iter()
            .flatten()
        {
            if !url.starts_with("amqps://") {
                return Err(BrokerError::PlainAmqp(url.clone()));
            }
        }
        Ok(())
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Like a derived `Debug`, with the password redacted.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("amqp_url", &self.amqp_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("management_url", &self.management_url)
            .field("public_amqp_url", &self.public_amqp_url)
            .field("frame_max", &self.frame_max)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("insecure_amqp", &self.insecure_amqp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_amqp_needs_the_explicit_opt_in() {
        let mut cfg = BrokerConfig::default();
        assert!(matches!(
            cfg.check_transport(),
            Err(BrokerError::PlainAmqp(_))
        ));
        cfg.insecure_amqp = true;
        assert!(cfg.check_transport().is_ok());
        cfg.insecure_amqp = false;
        cfg.amqp_url = "amqps://127.0.0.1:5671".into();
        assert!(cfg.check_transport().is_ok());
        cfg.public_amqp_url = Some("amqp://broker:5672".into());
        assert!(cfg.check_transport().is_err());
    }

    #[test]
    fn defaults_fill_missing_fields_and_debug_hides_password() {
        let cfg: BrokerConfig = serde_json::from_str(r#"{"password":"s3cret"}"#).unwrap();
        assert_eq!(cfg.amqp_url, "amqp://127.0.0.1:5672");
        assert_eq!(cfg.heartbeat_secs, 10);
        assert_eq!(cfg.agent_amqp_url(), "amqp://127.0.0.1:5672");
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
