//! Client for the RabbitMQ management HTTP API: vhosts, users, permissions, queue depth.
//!
//! Every mutation is an idempotent PUT or DELETE (a DELETE answered 404 is a success), so
//! provisioning can be retried from the top after any failure.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::percent::encode;

/// Upper bound on one management API request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A management API client authenticated as the admin user. Cheap to clone.
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct QueueInfo {
    messages: Option<u64>,
    messages_ready: Option<u64>,
    messages_unacknowledged: Option<u64>,
}

impl Management {
    pub fn new(cfg: &BrokerConfig) -> Result<Self, BrokerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: cfg.management_url.trim_end_matches('/').to_owned(),
            username: cfg.username.clone(),
            password: cfg.password.clone(),
        })
    }

    /// Checks that the API answers and accepts our credentials.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        self.send(Method::GET, "/api/overview".into(), None).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), BrokerError> {
        let path = format!("/api/vhosts/{}", encode(vhost));
        self.send(Method::PUT, path, Some(json!({}))).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), BrokerError> {
        self.delete(format!("/api/vhosts/{}", encode(vhost))).await
    }

    pub async fn vhost_exists(&self, vhost: &str) -> Result<bool, BrokerError> {
        let path = format!("/api/vhosts/{}", encode(vhost));
        Ok(self.get_optional(path).await?.is_some())
    }

    /// Creates or updates a user. `tags` is comma-separated (`""` for none, as agents).
    #[tracing::instrument(skip(self, password))]
    pub async fn put_user(
        &self,
        user: &str,
        password: &str,
        tags: &str,
    ) -> Result<(), BrokerError> {
        let path = format!("/api/users/{}", encode(user));
        let body = json!({ "password": password, "tags": tags });
        self.send(Method::PUT, path, Some(body)).await?;
        Ok(())
    }

    /// Deletes a user; RabbitMQ closes its open connections.
    #[tracing::instrument(skip(self))]
    pub async fn delete_user(&self, user: &str) -> Result<(), BrokerError> {
        self.delete(format!("/api/users/{}", encode(user))).await
    }

    pub async fn list_users_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let resp = self.send(Method::GET, "/api/users".into(), None).await?;
        let users: Vec<Named> = resp.json().await?;
        Ok(users
            .into_iter()
            .map(|u| u.name)
            .filter(|name| name.starts_with(prefix))
            .collect())
    }

    /// Sets the user's configure/write/read regexes in `vhost` (takes effect for new
    /// connections: RabbitMQ caches permissions per connection).
    #[tracing::instrument(skip(self))]
    pub async fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), BrokerError> {
        let path = format!("/api/permissions/{}/{}", encode(vhost), encode(user));
        let body = json!({ "configure": configure, "write": write, "read": read });
        self.send(Method::PUT, path, Some(body)).await?;
        Ok(())
    }

    /// Restricts the routing keys the user may publish with (`write`) or bind with
    /// (`read`) on a topic exchange.
    #[tracing::instrument(skip(self))]
    pub async fn set_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), BrokerError> {
        let path = format!("/api/topic-permissions/{}/{}", encode(vhost), encode(user));
        let body = json!({ "exchange": exchange, "write": write, "read": read });
        self.send(Method::PUT, path, Some(body)).await?;
        Ok(())
    }

    /// Messages in the queue (ready + unacknowledged), `None` if the queue does not exist.
    ///
    /// The management API refreshes its statistics every few seconds: the figure lags,
    /// and a queue declared a moment ago has no figure yet, which counts as 0.
    pub async fn queue_message_count(
        &self,
        vhost: &str,
        queue: &str,
    ) -> Result<Option<u64>, BrokerError> {
        let path = format!("/api/queues/{}/{}", encode(vhost), encode(queue));
        let Some(resp) = self.get_optional(path).await? else {
            return Ok(None);
        };
        let info: QueueInfo = resp.json().await?;
        let split = info.messages_ready.unwrap_or(0) + info.messages_unacknowledged.unwrap_or(0);
        Ok(Some(info.messages.unwrap_or(split)))
    }

    /// Routing keys of the bindings from `exchange` to `queue` (empty if either is
    /// missing).
    pub async fn binding_keys(
        &self,
        vhost: &str,
        exchange: &str,
        queue: &str,
    ) -> Result<Vec<String>, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Binding {
            routing_key: String,
        }
        let path = format!(
            "/api/bindings/{}/e/{}/q/{}",
            encode(vhost),
            encode(exchange),
            encode(queue)
        );
        let Some(resp) = self.get_optional(path).await? else {
            return Ok(Vec::new());
        };
        let bindings: Vec<Binding> = resp.json().await?;
        Ok(bindings.into_iter().map(|b| b.routing_key).collect())
    }

    /// GET that maps 404 to `None`.
    async fn get_optional(&self, path: String) -> Result<Option<reqwest::Response>, BrokerError> {
        let resp = self.request(Method::GET, &path, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(Method::GET, path, resp).await.map(Some)
    }

    /// DELETE that treats 404 as success (already gone).
    async fn delete(&self, path: String) -> Result<(), BrokerError> {
        let resp = self.request(Method::DELETE, &path, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(Method::DELETE, path, resp).await.map(drop)
    }

    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, BrokerError> {
        let resp = self.request(method.clone(), &path, body).await?;
        check(method, path, resp).await
    }

    /// Sends a request, retrying (three times, 100 ms to 1 s apart) when the broker
    /// answers 5xx or the connection fails: the management API answers 500 now and then
    /// under load (e.g. listing users while others are deleted), and every call made
    /// here is idempotent (GET, PUT of a definition, DELETE).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, BrokerError> {
        let once = || async {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .basic_auth(&self.username, Some(&self.password));
            if let Some(body) = &body {
                req = req.json(body);
            }
            let resp = req.send().await?;
            if resp.status().is_server_error() {
                return check(method.clone(), path.to_owned(), resp).await;
            }
            Ok(resp)
        };
        once.retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(3),
        )
        .when(|err: &BrokerError| match err {
            BrokerError::Management { status, .. } => *status >= 500,
            BrokerError::Http(e) => e.is_connect() || e.is_timeout(),
            _ => false,
        })
        .notify(|err, after| tracing::debug!(error = %err, ?after, "management API call retried"))
        .await
    }
}

/// Turns a non-2xx answer into [`BrokerError::Management`] with the response body.
async fn check(
    method: Method,
    path: String,
    resp: reqwest::Response,
) -> Result<reqwest::Response, BrokerError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Err(BrokerError::Management {
        method: method.to_string(),
        path,
        status,
        body,
    })
}
