//! `risctl dev certs`: a development CA and certificates (rcgen), for local TLS.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use ris_runtime::tls::dev_certs::{self, Outcome};

#[derive(Debug, Subcommand)]
pub enum DevCmd {
    /// Make a CA (ca.pem, ca-key.pem), a server certificate for localhost, 127.0.0.1,
    /// ::1 and the --host names (server.pem, server-key.pem) and a client certificate
    /// for mutual TLS (client.pem, client-key.pem). Keeps existing files unless --force.
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// An extra DNS name or IP address for the server certificate; repeat for more.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Make new certificates even when the directory holds a set.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: DevCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCmd::Certs { out, hosts, force } => {
            let outcome = dev_certs::generate(&out, &hosts, force)
                .with_context(|| format!("making certificates in {}", out.display()))?;
            match outcome {
                Outcome::Created => println!("certificates written to {}", out.display()),
                Outcome::AlreadyThere => println!(
                    "{} already holds a set of certificates (--force replaces them)",
                    out.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
