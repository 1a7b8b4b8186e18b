//! Removing what a [`System`](crate::System) created: its tenants' vhosts and broker
//! users, and its database.

use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

use crate::system::{MANAGEMENT_URL, PG_ADMIN_URL};

pub(crate) async fn cleanup(tenants: Vec<String>, database: String) {
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
