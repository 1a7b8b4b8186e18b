//! A development CA and certificates, made with `rcgen` (`risctl dev certs`).
//!
//! [`generate`] writes into one directory: the CA (`ca.pem`, `ca-key.pem`), a server
//! certificate for `localhost`, `127.0.0.1`, `::1` and any extra hosts (`server.pem`,
//! `server-key.pem`), and a client certificate for mutual TLS (`client.pem`,
//! `client-key.pem`). Idempotent: when every file is there, nothing is rewritten.
//! Keys are written with mode 0600. For development and tests only: the CA key sits
//! next to the certificates it signed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";
const ALL: [&str; 6] = [
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
];

/// Names every server certificate covers, besides the hosts given.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What [`generate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    AlreadyThere,
}

/// Makes the CA and certificates in `dir` (created if missing) unless all are there
/// already; `force` makes new ones anyway. `hosts` are extra DNS names or IP addresses
/// for the server certificate.
pub fn generate(dir: &Path, hosts: &[String], force: bool) -> Result<Outcome, TlsError> {
    if !force && ALL.iter().all(|f| dir.join(f).is_file()) {
        return Ok(Outcome::AlreadyThere);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "RIS development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(dir, CA_KEY, &ca_key.serialize_pem(), true)?;
    write(dir, CA_CERT, &ca_cert.pem(), false)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| (*s).to_owned()).collect();
    names.extend(
        hosts
            .iter()
            .filter(|h| !names.contains(h))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "RIS development server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write(dir, SERVER_KEY, &server_key.serialize_pem(), true)?;
    write(dir, SERVER_CERT, &server_cert.pem(), false)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "RIS development client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;
    write(dir, CLIENT_KEY, &client_key.serialize_pem(), true)?;
    write(dir, CLIENT_CERT, &client_cert.pem(), false)?;
    Ok(Outcome::Created)
}

fn write(dir: &Path, name: &str, content: &str, secret: bool) -> Result<(), TlsError> {
    let path: PathBuf = dir.join(name);
    let err = |source| TlsError::Write {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(content.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{client_config, ServerTls};

    #[test]
    fn generated_certificates_load_and_are_kept() {
        let dir = tempfile_dir();
        assert_eq!(
            generate(&dir, &["ris.test".into()], false).unwrap(),
            Outcome::Created
        );
        let before = std::fs::read(dir.join(CA_CERT)).unwrap();
        assert_eq!(generate(&dir, &[], false).unwrap(), Outcome::AlreadyThere);
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), before);
        let tls = ServerTls {
            cert: dir.join(SERVER_CERT),
            key: dir.join(SERVER_KEY),
            client_ca: Some(dir.join(CA_CERT)),
            client_auth: Default::default(),
        };
        tls.server_config(&[b"http/1.1"]).unwrap();
        client_config(&dir.join(CA_CERT)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("ris-dev-certs-{}", std::process::id()))
    }
}
