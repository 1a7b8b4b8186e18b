//! Enrollment: exchange a one-time token for the agent's identity.
//!
//! `POST {api}/v1/agents/enroll` with an [`EnrollRequest`]; on success the
//! [`EnrollResponse`] becomes an [`Identity`] saved in the state directory. A refusal
//! (4xx) carries the API's [`ApiErrorBody`], whose `message` is shown as is.

use std::path::PathBuf;

use ris_schemas::api::{ApiErrorBody, EnrollRequest, EnrollResponse};
use ris_schemas::ids::AgentName;
use ris_schemas::labels::Labels;

use crate::executor::error_chain;
use crate::identity::{Identity, IdentityError};
use crate::machine;

/// What `ris-agent enroll` was asked.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub api_url: String,
    pub token: String,
    pub name: AgentName,
    pub labels: Labels,
    pub capacity: u32,
    pub state_dir: PathBuf,
    /// Replace an existing identity.
    pub force: bool,
    /// CA certificate (PEM) the API and the broker must chain to; copied into the state
    /// directory and trusted from then on. `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) presented to the API (mutual TLS); copied into the
    /// state directory (`client.pem`, `client-key.pem`, mode 0600) and used from then on.
    /// Needs `ca`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    #[error("enrollment refused: {message}")]
    Refused { status: u16, message: String },
    #[error("the API failed with HTTP {status}: {body}")]
    Server { status: u16, body: String },
    #[error("cannot reach the API at {url}: {error}")]
    Transport { url: String, error: String },
    #[error("the API answered with an unexpected body: {0}")]
    BadResponse(String),
    #[error("CA certificate: {0}")]
    Ca(#[from] ris_runtime::tls::TlsError),
    #[error("a client certificate needs the CA it is checked against (--ca)")]
    ClientCertWithoutCa,
    #[error("saving the CA certificate to {path}: {source}")]
    SaveCa {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Enrolls with the API and saves the identity. Refuses to replace an existing identity
/// unless `force` is set, and checks that before spending the one-time token.
pub async fn enroll(opts: EnrollOptions) -> Result<(Identity, PathBuf), EnrollError> {
    if opts.capacity == 0 {
        return Err(EnrollError::ZeroCapacity);
    }
    Identity::check_absent(&opts.state_dir, opts.force)?;
    let api_url = opts.api_url.trim_end_matches('/').to_owned();
    let request = EnrollRequest {
        token: opts.token,
        name: opts.name,
        labels: opts.labels.clone(),
        capacity: opts.capacity,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: machine::hostname(),
    };
    let tls = match (&opts.ca, &opts.client_cert) {
        (Some(ca), Some((cert, key))) => {
            Some(ris_runtime::tls::client_config_with_cert(ca, cert, key)?)
        }
        (Some(ca), None) => Some(ris_runtime::tls::client_config(ca)?),
        (None, Some(_)) => return Err(EnrollError::ClientCertWithoutCa),
        (None, None) => None,
    };
    let enrollment = post_enroll(&api_url, &request, tls).await?;
    let identity = Identity {
        api_url,
        enrollment,
        capacity: opts.capacity,
        labels: opts.labels,
    };
    let path = identity.save(&opts.state_dir, opts.force)?;
    if let Some(ca) = &opts.ca {
        let dest = opts.state_dir.join(crate::config::CA_FILE);
        std::fs::copy(ca, &dest).map_err(|source| EnrollError::SaveCa { path: dest, source })?;
    }
    if let Some((cert, key)) = &opts.client_cert {
        for (from, name) in [
            (cert, crate::config::CLIENT_CERT_FILE),
            (key, crate::config::CLIENT_KEY_FILE),
        ] {
            let dest = opts.state_dir.join(name);
            save_private(from, &dest)
                .map_err(|source| EnrollError::SaveCa { path: dest, source })?;
        }
    }
    Ok((identity, path))
}

async fn post_enroll(
    api_url: &str,
    request: &EnrollRequest,
    tls: Option<ris_runtime::tls::rustls::ClientConfig>,
) -> Result<EnrollResponse, EnrollError> {
    let url = format!("{api_url}/v1/agents/enroll");
    let transport = |e: reqwest::Error| EnrollError::Transport {
        url: url.clone(),
        error: error_chain(&e),
    };
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    let client = builder.build().map_err(transport)?;
    let response = client
        .post(&url)
        .json(request)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| EnrollError::BadResponse(e.to_string()));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_client_error() {
        let message = serde_json::from_slice::<ApiErrorBody>(&body)
            .map(|b| b.message)
            .unwrap_or_else(|_| format!("HTTP {status}: {text}"));
        return Err(EnrollError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Err(EnrollError::Server {
        status: status.as_u16(),
        body: text,
    })
}

/// Copies `from` to `to`, readable by the owner only.
fn save_private(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
}
