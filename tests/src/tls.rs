//! TLS for the test kit: certificates for the API (made with the project's rcgen dev CA),
//! the broker's CA (the one `scripts/services.sh` configured RabbitMQ with), and HTTP
//! clients that trust them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ris_runtime::tls::dev_certs;

/// How a [`crate::System`] talks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KitTls {
    /// Plain HTTP and plain AMQP, explicitly enabled (`insecure_http`, `insecure_amqp`).
    #[default]
    Off,
    /// HTTPS/WSS on the API, AMQPS (5671) to the broker.
    On,
    /// As `On`, and the API requires a client certificate signed by the kit's CA.
    Mutual,
}

/// The CA RabbitMQ's TLS listener (5671) uses: `$RIS_DEV_CERTS/ca.pem`, by default
/// `/etc/ris/dev-certs/ca.pem` (made by `scripts/services.sh`).
pub fn broker_ca() -> PathBuf {
    std::env::var_os("RIS_DEV_CERTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ris/dev-certs"))
        .join(dev_certs::CA_CERT)
}

/// The AMQPS address of the local broker.
pub const BROKER_AMQPS_URL: &str = "amqps://127.0.0.1:5671";

/// Makes a dev CA and certificates in `dir` and `dir/trust.pem`: that CA plus the
/// broker's, the one file agents and clients of the kit trust.
pub fn make_certs(dir: &Path) -> PathBuf {
    dev_certs::generate(dir, &[], false).expect("generate dev certificates");
    let mut trust = std::fs::read(dir.join(dev_certs::CA_CERT)).expect("read ca.pem");
    trust.extend(std::fs::read(broker_ca()).expect("read the broker CA (run scripts/services.sh)"));
    let path = dir.join("trust.pem");
    std::fs::write(&path, trust).expect("write trust.pem");
    path
}

/// An HTTP client trusting only the CAs in `trust`, presenting `identity` (certificate,
/// key) when given.
pub fn https_client(trust: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let config = match identity {
        None => ris_runtime::tls::client_config(trust),
        Some((cert, key)) => ris_runtime::tls::client_config_with_cert(trust, cert, key),
    }
    .expect("TLS client configuration");
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("HTTPS client")
}

/// A rustls client configuration shared with tests that open raw TLS sockets.
pub fn client_config(trust: &Path) -> Arc<ris_runtime::tls::rustls::ClientConfig> {
    Arc::new(ris_runtime::tls::client_config(trust).expect("TLS client configuration"))
}
