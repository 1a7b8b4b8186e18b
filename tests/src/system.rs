//! A whole RIS system as child processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use tokio::process::{Child, Command};

use crate::wait::eventually;

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// Where the ris-* binaries are.
fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("RIS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --bins` first (or set RIS_BIN_DIR)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub dispatchers: usize,
    pub heartbeat_interval_secs: u32,
    pub presence_ttl_secs: u32,
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            dispatchers: 1,
            heartbeat_interval_secs: 1,
            presence_ttl_secs: 4,
        }
    }
}

/// A running system. Dropping it stops everything and cleans up.
pub struct System {
    pub api_url: String,
    pub admin_key: String,
    pub database: String,
    pub redis_prefix: String,
    http: reqwest::Client,
    api: Child,
    dispatchers: Vec<Child>,
    tenants: std::sync::Mutex<Vec<String>>,
    pub workdir: tempfile::TempDir,
}

impl System {
    pub async fn start() -> System {
        Self::start_with(SystemOptions::default()).await
    }

    pub async fn start_with(opts: SystemOptions) -> System {
        let database = crate::unique("ris_e2e_");
        let mut admin = PgConnection::connect(PG_ADMIN_URL)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await
            .expect("create database");
        let redis_prefix = crate::unique("ris-e2e-");
        let admin_key = format!("admin-{}", crate::unique(""));
        let port = free_port();
        let workdir = tempfile::tempdir().expect("tempdir");
        let env = [
            (
                "RIS_DATABASE_URL".to_owned(),
                format!("postgres://postgres@127.0.0.1:5432/{database}"),
            ),
            ("RIS_REDIS_PREFIX".to_owned(), redis_prefix.clone()),
            (
                "RIS_PRESENCE_TTL_SECS".to_owned(),
                opts.presence_ttl_secs.to_string(),
            ),
        ];
        let api = spawn(
            "ris-api",
            &[],
            env.iter().cloned().chain([
                ("RIS_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
                ("RIS_BOOTSTRAP_ADMIN_KEY".to_owned(), admin_key.clone()),
                (
                    "RIS_HEARTBEAT_INTERVAL_SECS".to_owned(),
                    opts.heartbeat_interval_secs.to_string(),
                ),
            ]),
            &workdir.path().join("api.log"),
        );
        let dispatchers = (0..opts.dispatchers)
            .map(|i| {
                spawn(
                    "ris-dispatcher",
                    &[],
                    env.iter()
                        .cloned()
                        .chain([("RIS_METRICS_LISTEN".to_owned(), "127.0.0.1:0".to_owned())]),
                    &workdir.path().join(format!("dispatcher-{i}.log")),
                )
            })
            .collect();
        let system = System {
            api_url: format!("http://127.0.0.1:{port}"),
            admin_key,
            database,
            redis_prefix,
            http: reqwest::Client::new(),
            api,
            dispatchers,
            tenants: Default::default(),
            workdir,
        };
        let health = format!("{}/healthz", system.api_url);
        eventually(
            "the API to answer /healthz",
            Duration::from_secs(30),
            || async {
                let ok = system
                    .http
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ok.then_some(())
            },
        )
        .await;
        system
    }

    /// Sends a request as the platform admin; returns status and JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        request(
            &self.http,
            &self.api_url,
            &self.admin_key,
            method,
            path,
            body,
        )
        .await
    }

    /// Creates a tenant with a unique name and an API key for it.
    pub async fn tenant(&self) -> TenantClient {
        let name = crate::unique("t-");
        let (status, body) = self
            .admin(Method::POST, "/v1/tenants", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create tenant: {body}");
        self.tenants
            .lock()
            .expect("tenants lock")
            .push(name.clone());
        let (status, key) = self
            .admin(
                Method::POST,
                "/v1/api-keys",
                Some(json!({ "name": "e2e", "tenant": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create api key: {key}");
        TenantClient {
            name,
            key: key["key"].as_str().expect("key").to_owned(),
            api_url: self.api_url.clone(),
            http: self.http.clone(),
            workdir: self.workdir.path().to_path_buf(),
        }
    }

    /// Kills the API (SIGKILL) — for fault tests.
    pub async fn kill_api(&mut self) {
        drop(self.api.kill().await);
    }

    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.workdir.path().join(file)).unwrap_or_default()
    }
}

fn spawn(
    name: &str,
    args: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
    log: &Path,
) -> Child {
    let log_file = std::fs::File::create(log).expect("log file");
    Command::new(bin(name))
        .args(args)
        .envs(env)
        .env("RUST_LOG", "info,ris=debug")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

async fn request(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

impl Drop for System {
    fn drop(&mut self) {
        drop(self.api.start_kill());
        for d in &mut self.dispatchers {
            drop(d.start_kill());
        }
        let tenants = std::mem::take(&mut *self.tenants.lock().unwrap_or_else(|e| e.into_inner()));
        let database = self.database.clone();
        // Cleanup needs async I/O; Drop is sync and may run inside a runtime, so use a
        // thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(cleanup(tenants, database));
        });
        drop(cleanup.join());
    }
}

async fn cleanup(tenants: Vec<String>, database: String) {
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("guest", Some("guest"));
    for tenant in tenants {
        let vhost = format!("ris.{tenant}");
        if let Ok(resp) = auth(http.get(format!("{MANAGEMENT_URL}/api/users")))
            .send()
            .await
        {
            if let Ok(users) = resp.json::<Vec<Value>>().await {
                for user in users {
                    let name = user["name"].as_str().unwrap_or_default();
                    if name.starts_with(&format!("{vhost}.")) {
                        drop(
                            auth(http.delete(format!("{MANAGEMENT_URL}/api/users/{name}")))
                                .send()
                                .await,
                        );
                    }
                }
            }
        }
        drop(
            auth(http.delete(format!("{MANAGEMENT_URL}/api/vhosts/ris.{tenant}")))
                .send()
                .await,
        );
    }
    // Give the killed processes a moment to drop their connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(mut admin) = PgConnection::connect(PG_ADMIN_URL).await {
        drop(
            admin
                .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
                .await,
        );
    }
}

/// An operator of one tenant, holding its API key.
#[derive(Clone)]
pub struct TenantClient {
    pub name: String,
    pub key: String,
    pub api_url: String,
    http: reqwest::Client,
    workdir: PathBuf,
}

/// A running `ris-agent run` process.
pub struct AgentProc {
    pub id: String,
    pub name: String,
    pub state_dir: PathBuf,
    pub child: Child,
}

impl AgentProc {
    pub fn identity(&self) -> Value {
        let text =
            std::fs::read_to_string(self.state_dir.join("identity.json")).expect("identity.json");
        serde_json::from_str(&text).expect("identity json")
    }

    pub async fn kill(&mut self) {
        drop(self.child.kill().await);
    }
}

impl TenantClient {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        request(&self.http, &self.api_url, &self.key, method, path, body).await
    }

    /// GET that must succeed.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Submits a task; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, resp) = self.request(Method::POST, "/v1/tasks", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit: {resp}");
        resp["id"].as_str().expect("task id").to_owned()
    }

    pub async fn enrollment_token(&self) -> String {
        let (status, body) = self
            .request(
                Method::POST,
                "/v1/agents/enrollment-tokens",
                Some(json!({ "ttl_secs": 600 })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "enrollment token: {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Runs `ris-agent enroll` with the given arguments; returns (success, stdout+stderr).
    pub async fn enroll_cmd(
        &self,
        state_dir: &Path,
        token: &str,
        name: &str,
        extra: &[&str],
    ) -> (bool, String) {
        let out = Command::new(bin("ris-agent"))
            .arg("enroll")
            .args(["--api", &self.api_url, "--token", token, "--name", name])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .output()
            .await
            .expect("run ris-agent enroll");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Enrolls an agent and starts `ris-agent run` for it.
    pub async fn agent(&self, name: &str, labels: &[&str], capacity: u32) -> AgentProc {
        let state_dir = self.workdir.join(format!("agent-{}-{name}", self.name));
        let token = self.enrollment_token().await;
        let mut extra: Vec<String> = labels
            .iter()
            .flat_map(|l| ["--label".to_owned(), (*l).to_owned()])
            .collect();
        extra.extend(["--capacity".to_owned(), capacity.to_string()]);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (ok, output) = self.enroll_cmd(&state_dir, &token, name, &extra).await;
        assert!(ok, "enroll {name}: {output}");
        let child = spawn(
            "ris-agent",
            &[
                "run",
                "--state-dir",
                state_dir.to_str().expect("utf-8 path"),
            ],
            [],
            &self.workdir.join(format!("agent-{}-{name}.log", self.name)),
        );
        let mut agent = AgentProc {
            id: String::new(),
            name: name.to_owned(),
            state_dir,
            child,
        };
        agent.id = agent.identity()["enrollment"]["agent_id"]
            .as_str()
            .expect("agent id")
            .to_owned();
        agent
    }

    /// Waits until the agent shows `online` in `GET /v1/agents/{id}`.
    pub async fn wait_online(&self, agent: &AgentProc) -> Value {
        eventually(
            &format!("agent {} online", agent.name),
            Duration::from_secs(30),
            || async {
                let view = self.get(&format!("/v1/agents/{}", agent.id)).await;
                (view["status"] == "online").then_some(view)
            },
        )
        .await
    }
}
