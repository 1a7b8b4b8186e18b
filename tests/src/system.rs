//! A whole RIS system as child processes: `apis` × `ris-api` and `dispatchers` ×
//! `ris-dispatcher`, each of which a fault test can SIGKILL and start again.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use crate::cleanup::cleanup;
use crate::process::{Launch, ServerProc};
use crate::tenant::TenantClient;
use crate::tls::{self, KitTls};
use crate::wait::eventually;

pub(crate) const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub(crate) const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// A port free now, never handed out before in this process. The listener that found it
/// is closed before the server binds it, and the kernel may offer the same port to the
/// next caller meanwhile: two tests starting systems at once would then share one API
/// (the second to bind fails) and one of them would talk to the other's.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub dispatchers: usize,
    /// `ris-api` instances, each on its own port, all sharing the database, Redis
    /// prefix and admin key. [`System::api_url`] is the first; agents enroll (and so
    /// heartbeat) against it unless told otherwise.
    pub apis: usize,
    pub heartbeat_interval_secs: u32,
    pub presence_ttl_secs: u32,
    /// Extra `RIS_*` variables for both the API and the dispatchers.
    pub env: Vec<(String, String)>,
    /// Plain text (default, explicitly enabled), or HTTPS/WSS/AMQPS.
    pub tls: KitTls,
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            dispatchers: 1,
            apis: 1,
            heartbeat_interval_secs: 1,
            presence_ttl_secs: 4,
            env: Vec::new(),
            tls: KitTls::Off,
        }
    }
}

/// A running system. Dropping it stops everything and cleans up.
///
/// Set `RIS_KEEP_LOGS=1` to have the process logs copied to
/// `/tmp/ris-e2e-logs/<database>/` when the system is dropped.
pub struct System {
    /// The first API instance.
    pub api_url: String,
    /// Every API instance, in start order.
    pub api_urls: Vec<String>,
    pub admin_key: String,
    pub database: String,
    pub redis_prefix: String,
    http: reqwest::Client,
    apis: Vec<ServerProc>,
    dispatchers: Vec<ServerProc>,
    tenants: std::sync::Mutex<Vec<String>>,
    pub workdir: tempfile::TempDir,
    /// With TLS: the directory of the API's dev certificates (`ca.pem`, `client.pem`,
    /// `client-key.pem`, ...) and `trust.pem`, which agents and the kit's client trust.
    pub certs: Option<std::path::PathBuf>,
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
        let workdir = tempfile::tempdir().expect("tempdir");
        let mut env = vec![
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
        let certs = (opts.tls != KitTls::Off).then(|| workdir.path().join("certs"));
        let (scheme, http) = match &certs {
            // By default the kit runs the system in plain text, explicitly enabled;
            // tests/tls.rs runs it with TLS.
            None => {
                env.extend([
                    ("RIS_INSECURE_HTTP".to_owned(), "true".to_owned()),
                    ("RIS_BROKER__INSECURE_AMQP".to_owned(), "true".to_owned()),
                ]);
                ("http", reqwest::Client::new())
            }
            Some(dir) => {
                let trust = tls::make_certs(dir);
                let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
                env.extend([
                    ("RIS_TLS__CERT".to_owned(), path("server.pem")),
                    ("RIS_TLS__KEY".to_owned(), path("server-key.pem")),
                    (
                        "RIS_BROKER__AMQP_URL".to_owned(),
                        tls::BROKER_AMQPS_URL.to_owned(),
                    ),
                    (
                        "RIS_BROKER__CA_FILE".to_owned(),
                        tls::broker_ca().to_string_lossy().into_owned(),
                    ),
                ]);
                let identity = if opts.tls == KitTls::Mutual {
                    env.push(("RIS_TLS__CLIENT_CA".to_owned(), path("ca.pem")));
                    Some((dir.join("client.pem"), dir.join("client-key.pem")))
                } else {
                    None
                };
                let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
                ("https", tls::https_client(&trust, identity))
            }
        };
        env.extend(opts.env.iter().cloned());
        let apis: Vec<ServerProc> = (0..opts.apis.max(1))
            .map(|i| {
                let port = free_port();
                let mut launch = Launch::new("ris-api", workdir.path().join(api_log(i)));
                launch.env = env.clone();
                launch.env.extend([
                    ("RIS_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
                    ("RIS_BOOTSTRAP_ADMIN_KEY".to_owned(), admin_key.clone()),
                    (
                        "RIS_HEARTBEAT_INTERVAL_SECS".to_owned(),
                        opts.heartbeat_interval_secs.to_string(),
                    ),
                ]);
                ServerProc::start(launch, format!("{scheme}://127.0.0.1:{port}/healthz"))
            })
            .collect();
        let dispatchers = (0..opts.dispatchers)
            .map(|i| {
                let port = free_port();
                let log = workdir.path().join(format!("dispatcher-{i}.log"));
                let mut launch = Launch::new("ris-dispatcher", log);
                launch.env = env.clone();
                launch
                    .env
                    .push(("RIS_METRICS_LISTEN".to_owned(), format!("127.0.0.1:{port}")));
                ServerProc::start(launch, format!("http://127.0.0.1:{port}/healthz"))
            })
            .collect();
        let api_urls: Vec<String> = apis
            .iter()
            .map(|a| a.health_url.trim_end_matches("/healthz").to_owned())
            .collect();
        let system = System {
            api_url: api_urls[0].clone(),
            api_urls,
            admin_key,
            database,
            redis_prefix,
            http,
            apis,
            dispatchers,
            tenants: Default::default(),
            workdir,
            certs,
        };
        for api in &system.apis {
            api.wait_healthy(&system.http, Duration::from_secs(30))
                .await;
        }
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
        TenantClient::new(
            name,
            key["key"].as_str().expect("key").to_owned(),
            self.api_url.clone(),
            self.http.clone(),
            self.workdir.path().to_path_buf(),
            self.certs.as_ref().map(|d| d.join("trust.pem")),
        )
    }

    /// Kills the first API (SIGKILL) — for fault tests.
    pub async fn kill_api(&mut self) {
        self.kill_api_at(0).await;
    }

    /// Starts the first API again on the same port with the same environment, and waits
    /// for its `/healthz`.
    pub async fn restart_api(&mut self) {
        self.restart_api_at(0).await;
    }

    /// Kills API instance `i` (SIGKILL) and reaps it.
    pub async fn kill_api_at(&mut self, i: usize) {
        self.apis[i].kill().await;
    }

    /// Starts API instance `i` again (killing it first if it runs) and waits for it.
    pub async fn restart_api_at(&mut self, i: usize) {
        self.apis[i].restart(&self.http).await;
    }

    /// Kills dispatcher `i` (SIGKILL) and reaps it.
    pub async fn kill_dispatcher(&mut self, i: usize) {
        self.dispatchers[i].kill().await;
    }

    /// Starts dispatcher `i` again (killing it first if it runs) with the same
    /// environment and metrics port, and waits for its `/healthz`.
    pub async fn restart_dispatcher(&mut self, i: usize) {
        self.dispatchers[i].restart(&self.http).await;
    }

    /// Process id of API instance `i`, if it runs.
    pub fn api_pid(&self, i: usize) -> Option<u32> {
        self.apis[i].pid()
    }

    /// Process id of dispatcher `i`, if it runs.
    pub fn dispatcher_pid(&self, i: usize) -> Option<u32> {
        self.dispatchers[i].pid()
    }

    /// `http://host:port` of dispatcher `i`'s metrics server (`/healthz`, `/metrics`).
    pub fn dispatcher_metrics_url(&self, i: usize) -> String {
        self.dispatchers[i]
            .health_url
            .trim_end_matches("/healthz")
            .to_owned()
    }

    /// Waits until every API answers `/readyz` with 200 (all its dependencies up).
    pub async fn wait_ready(&self, timeout: Duration) {
        for url in &self.api_urls {
            let readyz = format!("{url}/readyz");
            eventually(&format!("{readyz} to be 200"), timeout, || async {
                let ok = self
                    .http
                    .get(&readyz)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ok.then_some(())
            })
            .await;
        }
    }

    /// The content of a log file in the workdir (`api.log`, `api-1.log`,
    /// `dispatcher-0.log`, `agent-<tenant>-<name>.log`).
    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.workdir.path().join(file)).unwrap_or_default()
    }

    fn keep_logs(&self) {
        if std::env::var_os("RIS_KEEP_LOGS").is_none() {
            return;
        }
        let dest = Path::new("/tmp/ris-e2e-logs").join(&self.database);
        if std::fs::create_dir_all(&dest).is_err() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(self.workdir.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    drop(std::fs::copy(&path, dest.join(entry.file_name())));
                }
            }
        }
        eprintln!("logs kept in {}", dest.display());
    }
}

/// Log file of API instance `i`: `api.log` for the first, `api-<i>.log` for the others.
fn api_log(i: usize) -> String {
    if i == 0 {
        "api.log".to_owned()
    } else {
        format!("api-{i}.log")
    }
}

pub(crate) async fn request(
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
        for p in self.apis.iter_mut().chain(self.dispatchers.iter_mut()) {
            p.start_kill();
        }
        self.keep_logs();
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
