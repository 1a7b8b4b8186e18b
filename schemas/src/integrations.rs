//! Integrations: REST bodies of `/v1/integrations` and the integration's name.
//!
//! An integration is an enterprise system that talks to RIS over AMQP with its own
//! least-privilege broker user `ris.<tenant>.int.<name>` (see `docs/integrating.md`).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::InvalidName;

/// An integration's name, unique in its tenant, with the rules of a tenant name: 1–32
/// characters of lowercase letters, digits and `-`, starting and ending with a letter
/// or digit. It contains no `.`, so the queue namespace `ris.int.<name>.` of one
/// integration never contains another's.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(
    with = "String",
    extend("pattern" = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", "minLength" = 1, "maxLength" = 32)
)]
pub struct IntegrationName(String);

impl IntegrationName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        crate::ids::check_slug("integration name", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IntegrationName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IntegrationName> for String {
    fn from(n: IntegrationName) -> Self {
        n.0
    }
}

impl fmt::Display for IntegrationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POST /v1/integrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    pub name: IntegrationName,
}

/// An integration as listed by `GET /v1/integrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntegrationView {
    pub name: IntegrationName,
    /// Its broker user.
    pub username: String,
    pub created_at: DateTime<Utc>,
}

/// The answer to `POST /v1/integrations`: the only time the password is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntegrationCreated {
    pub name: IntegrationName,
    pub created_at: DateTime<Utc>,
    pub amqp: IntegrationCredentials,
    pub contract: WireContract,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntegrationCredentials {
    /// `amqp://host:port` or `amqps://host:port`, without credentials or vhost.
    pub url: String,
    pub vhost: String,
    pub username: String,
    pub password: String,
}

/// The names an integration uses (see `docs/integrating.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WireContract {
    /// Publish `task.submit` messages here (fanout: any routing key).
    pub submit_exchange: String,
    /// Topic exchange of task and agent events; bind your own queue to it.
    pub events_exchange: String,
    /// Every queue the integration declares must start with this (`ris.int.<name>.`).
    pub queue_prefix: String,
    /// Set the `user_id` property to this on submissions that carry `reply_to`.
    pub user_id: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_the_tenant_name_rules() {
        for ok in ["billing", "a", "erp-2", &"x".repeat(32)] {
            assert!(IntegrationName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Billing", "a.b", "a_b", &"x".repeat(33)] {
            assert!(IntegrationName::parse(bad).is_err(), "{bad}");
        }
        let body: Result<CreateIntegration, _> =
            serde_json::from_value(serde_json::json!({ "name": "Bad.Name" }));
        assert!(body.is_err());
    }
}
