//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod docker;

use ris_agent::Identity;
use ris_schemas::api::{AmqpCredentials, EnrollResponse};
use ris_schemas::ids::{AgentId, AgentName, TenantName};
use ris_schemas::labels::Labels;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("ris-agent-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn enroll_response() -> EnrollResponse {
    let agent_id = AgentId::new();
    EnrollResponse {
        agent_id,
        tenant: TenantName::parse("acme").unwrap(),
        name: AgentName::parse("web-1").unwrap(),
        amqp: AmqpCredentials {
            url: "amqp://127.0.0.1:5672".into(),
            vhost: "ris.acme".into(),
            username: format!("agent-{agent_id}"),
            password: "s3cret-password".into(),
            queue: format!("ris.agent.{agent_id}"),
            control_queue: format!("ris.agent.{agent_id}.ctl"),
            results_exchange: "ris.results".into(),
        },
        heartbeat_token: "hb-token".into(),
        heartbeat_interval_secs: 5,
        signing_keys: Vec::new(),
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn identity(api_url: &str) -> Identity {
    Identity {
        api_url: api_url.into(),
        enrollment: enroll_response(),
        capacity: 4,
        labels: labels(&[("env", "prod")]),
    }
}

/// Serves `router` on 127.0.0.1 with a random port; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}
