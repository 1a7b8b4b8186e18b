//! Submitting: a ticker starts one submission per period; each retries on its own until
//! it is acknowledged or gives up.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{runs_file, LoadOptions, Work};
use crate::wait::eventually;
use crate::TenantClient;

/// One submission and what became of it.
#[derive(Debug, Clone)]
pub struct Submission {
    pub seq: u64,
    /// The `Idempotency-Key` used for every try.
    pub key: String,
    pub work: Work,
    pub selector: String,
    /// The task id from the 202, if one came.
    pub task_id: Option<String>,
    /// HTTP requests made (1 when the first one was accepted).
    pub tries: u32,
    /// Why the failed tries failed (`connect`, `timeout`, `503`, ...).
    pub errors: Vec<String>,
    /// A 4xx other than 408/429: the API refused the submission outright.
    pub rejected: bool,
    /// The task carries [`LoadOptions::retry_policy`](super::LoadOptions::retry_policy).
    pub retry: bool,
}

/// A load being submitted in the background.
pub struct Load {
    accepted: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<Vec<Submission>>,
    run: String,
    runs_file: PathBuf,
    started: Instant,
}

/// A finished load: every submission, for [`super::check`].
#[derive(Debug)]
pub struct LoadRun {
    /// Unique id of the run (`load_run` metadata of its tasks).
    pub run: String,
    pub submissions: Vec<Submission>,
    /// Where the scripts recorded their runs.
    pub runs_file: PathBuf,
    /// How long submitting took, retries included.
    pub elapsed: Duration,
}

impl Load {
    /// Starts submitting. Returns at once.
    pub fn start(tenant: &TenantClient, opts: LoadOptions) -> Load {
        let run = crate::unique("load-");
        let runs_file = runs_file(tenant.workdir(), &run);
        std::fs::write(&runs_file, "").expect("create the runs file");
        // Agents may run as another user.
        drop(std::fs::set_permissions(
            &runs_file,
            std::fs::Permissions::from_mode(0o666),
        ));
        let accepted = Arc::new(AtomicUsize::new(0));
        let driver = Driver {
            http: reqwest::Client::new(),
            key: tenant.key.clone(),
            urls: if opts.api_urls.is_empty() {
                vec![tenant.api_url.clone()]
            } else {
                opts.api_urls.clone()
            },
            run: run.clone(),
            runs_file: runs_file.clone(),
            accepted: accepted.clone(),
            opts,
        };
        Load {
            accepted,
            handle: tokio::spawn(driver.drive()),
            run,
            runs_file,
            started: Instant::now(),
        }
    }

    /// Submissions acknowledged so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` submissions were acknowledged.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) {
        eventually(&format!("{n} submissions accepted"), timeout, || async {
            (self.accepted() >= n).then_some(())
        })
        .await;
    }

    /// Waits for the driver to stop by itself (its duration or task cap reached, every
    /// submission acknowledged or given up).
    pub async fn finish(self) -> LoadRun {
        let submissions = self.handle.await.expect("load driver panicked");
        LoadRun {
            run: self.run,
            submissions,
            runs_file: self.runs_file,
            elapsed: self.started.elapsed(),
        }
    }
}

#[derive(Clone)]
struct Driver {
    http: reqwest::Client,
    key: String,
    urls: Vec<String>,
    run: String,
    runs_file: PathBuf,
    accepted: Arc<AtomicUsize>,
    opts: LoadOptions,
}

impl Driver {
    async fn drive(self) -> Vec<Submission> {
        let period = Duration::from_secs_f64(1.0 / f64::from(self.opts.rate_per_sec.max(1)));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut running = JoinSet::new();
        let mut seq = 0u64;
        while start.elapsed() < self.opts.duration && (seq as usize) < self.opts.max_tasks {
            tick.tick().await;
            running.spawn(self.clone().submit(seq));
            seq += 1;
        }
        let mut done: Vec<Submission> = running
            .join_all()
            .await
            .into_iter()
            .collect::<Vec<Submission>>();
        done.sort_by_key(|s| s.seq);
        done
    }

    /// The retry policy of task `seq`, if it carries one.
    fn retry_of(&self, seq: u64) -> Option<&Value> {
        self.opts
            .retry_policy
            .as_ref()
            .filter(|_| seq.is_multiple_of(2))
    }

    fn body(&self, seq: u64, work: Work, selector: &str) -> Value {
        let script = work.script_with(seq, &self.runs_file, self.opts.long_secs);
        let mut body = json!({
            "target": { "selector": selector },
            "timeout_secs": self.opts.task_timeout_secs,
            "metadata": { "load_run": self.run, "load_seq": seq.to_string() },
            "task": { "kind": "shell", "script": script },
        });
        if let Some(retry) = self.retry_of(seq) {
            body["retry"] = retry.clone();
        }
        body
    }

    async fn submit(self, seq: u64) -> Submission {
        let work = Work::for_seq(seq);
        let selector = self.opts.selectors[seq as usize % self.opts.selectors.len().max(1)].clone();
        let body = self.body(seq, work, &selector);
        let mut sub = Submission {
            seq,
            key: format!("{}-{seq}", self.run),
            work,
            selector,
            task_id: None,
            tries: 0,
            errors: Vec::new(),
            rejected: false,
            retry: self.retry_of(seq).is_some(),
        };
        let started = Instant::now();
        loop {
            let url = &self.urls[(seq as usize + sub.tries as usize) % self.urls.len()];
            sub.tries += 1;
            match self.try_once(url, &sub.key, &body).await {
                Ok(id) => {
                    sub.task_id = Some(id);
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    return sub;
                }
                Err(Failure::Refused(why)) => {
                    sub.errors.push(why);
                    sub.rejected = true;
                    return sub;
                }
                Err(Failure::Retry(why)) => sub.errors.push(why),
            }
            if started.elapsed() > self.opts.give_up_after {
                return sub;
            }
            let backoff = Duration::from_millis(100 << sub.tries.min(4));
            tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
        }
    }

    async fn try_once(&self, url: &str, key: &str, body: &Value) -> Result<String, Failure> {
        let resp = self
            .http
            .post(format!("{url}/v1/tasks"))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Failure::Retry(classify(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Failure::Retry(classify(&e)))?;
        if status == StatusCode::ACCEPTED {
            let json: Value = serde_json::from_str(&text)
                .map_err(|_| Failure::Retry(format!("202 with a bad body: {text}")))?;
            return json["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Failure::Retry(format!("202 without an id: {text}")));
        }
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let why = format!("{}", status.as_u16());
        if retryable {
            Err(Failure::Retry(why))
        } else {
            Err(Failure::Refused(format!("{why} {text}")))
        }
    }
}

enum Failure {
    Retry(String),
    Refused(String),
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connect".to_owned()
    } else if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_body() || e.is_decode() {
        "body".to_owned()
    } else {
        "request".to_owned()
    }
}
