//! Test kit: a fresh database per test, plus builders for the values tests need.
//!
//! Each [`TestDb`] creates `ris_store_test_<random hex>` on the server named by
//! `RIS_TEST_DATABASE_URL` (default: the local PostgreSQL, user `postgres`), migrates
//! it, and drops it (`WITH (FORCE)`) when dropped — also when the test panics.
#![allow(dead_code)] // each test binary uses a different part of the kit

use std::time::Duration;

use chrono::Utc;
use ris_schemas::ids::{AgentId, AgentName, TaskId, TenantName};
use ris_schemas::labels::Labels;
use ris_schemas::messages::Finished;
use ris_schemas::task::{Outcome, TaskOutput, TaskRequest, TaskResult};
use ris_schemas::version::V1;
use ris_store::{NewAgent, PgStore, Tenant, TenantRepo};
use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("RIS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `admin_url` with its database name replaced.
fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{db}")
}

pub struct TestDb {
    pub store: PgStore,
    name: String,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> TestDb {
        let db = TestDb::unmigrated().await;
        db.store.migrate().await.expect("migrate");
        db
    }

    /// A fresh, empty database.
    pub async fn unmigrated() -> TestDb {
        let name = format!("ris_store_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect admin");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        admin.close().await.ok();
        let store = PgStore::connect_lazy(&url_for(&name), 16).expect("pool");
        TestDb { store, name }
    }

    /// Another pool on the same database, as a second process would have.
    pub fn second_store(&self) -> PgStore {
        PgStore::connect_lazy(&url_for(&self.name), 4).expect("pool")
    }

    pub async fn tenant(&self, name: &str) -> Tenant {
        let (tenant, _) = self
            .store
            .create_tenant(&TenantName::parse(name).unwrap())
            .await
            .unwrap();
        tenant
    }

    /// Runs a statement as the connecting (superuser) role, bypassing row-level
    /// security: for arranging states the API cannot reach quickly (expired deadlines).
    pub async fn exec(&self, sql: &str) {
        sqlx::query(sql).execute(self.store.pool()).await.unwrap();
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap();
        n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a helper
        // thread with its own runtime drops the database. FORCE ends our pool's sessions.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url()).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A noop task for any agent labelled `env=test`.
pub fn noop_request(queue_timeout_secs: u32) -> TaskRequest {
    serde_json::from_value(serde_json::json!({
        "target": { "selector": "env=test" },
        "task": { "kind": "noop" },
        "queue_timeout_secs": queue_timeout_secs,
        "metadata": { "origin": "store-tests" },
    }))
    .unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn new_agent(name: &str) -> NewAgent {
    NewAgent {
        id: AgentId::new(),
        name: AgentName::parse(name).unwrap(),
        labels: labels(&[("env", "test")]),
        capacity: 4,
        version: "0.1.0".into(),
        hostname: format!("{name}.local"),
        heartbeat_token_hash: vec![7; 32],
    }
}

pub fn finished(task_id: TaskId, attempt: u32, agent_id: AgentId, outcome: Outcome) -> Finished {
    let now = Utc::now();
    Finished {
        v: V1,
        task_id,
        attempt,
        agent_id,
        started_at: now,
        finished_at: now,
        result: TaskResult {
            outcome,
            reason: (outcome != Outcome::Completed).then(|| "exit_status".to_owned()),
            error: None,
            duration_ms: 42,
            output: TaskOutput::Noop,
        },
    }
}

/// Placement lease long enough never to run out during a test.
pub const LONG_LEASE: Duration = Duration::from_secs(600);
