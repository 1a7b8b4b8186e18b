//! Identifiers and names.
//!
//! Each type can only hold a valid value: parsing is the only way in, and serde goes
//! through the same parser, so a handler that receives a [`TenantName`] never checks it
//! again.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a name or identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered identifier (UUIDv7), so newer ids sort after older ones.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}
/// Shared with the other modules that define time-ordered ids.
pub(crate) use uuid_id;

uuid_id!(
    /// Identifies an agent across its whole life (enrollment to removal).
    AgentId
);
uuid_id!(
    /// Identifies a task. Integrators publishing over AMQP may choose it themselves,
    /// which makes re-publishing the same submission harmless.
    TaskId
);
uuid_id!(
    /// Identifies an API key (the public part of the key string).
    ApiKeyId
);
uuid_id!(
    /// Identifies one event in a task's history.
    EventId
);

/// Checks a "slug" (tenant and integration names): 1–32 characters of lowercase
/// letters, digits and dashes, starting and ending with a letter or digit. `what` names
/// the thing in the error.
pub(crate) fn check_slug(what: &str, s: &str) -> Result<(), InvalidName> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if s.is_empty() || s.len() > 32 {
        return Err(InvalidName(format!(
            "{what} must be 1 to 32 characters, got {}",
            s.len()
        )));
    }
    if !s.chars().all(ok_char) {
        return Err(InvalidName(format!(
            "{what} may contain only lowercase letters, digits and '-'"
        )));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(InvalidName(format!(
            "{what} must start and end with a letter or digit"
        )));
    }
    Ok(())
}

/// A tenant name: 1–32 characters of lowercase letters, digits and dashes, starting and
/// ending with a letter or digit. It names the tenant's RabbitMQ vhost (`ris.<name>`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(
    with = "String",
    extend("pattern" = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", "minLength" = 1, "maxLength" = 32)
)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        check_slug("tenant name", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The RabbitMQ vhost that holds this tenant's queues.
    pub fn vhost(&self) -> String {
        format!("ris.{}", self.0)
    }
}

impl TryFrom<String> for TenantName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TenantName> for String {
    fn from(n: TenantName) -> Self {
        n.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent's human name, unique in its tenant: 1–63 characters of letters, digits,
/// `.`, `_` and `-` (a hostname fits).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("pattern" = r"^[A-Za-z0-9._-]{1,63}$"))]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidName(
                "agent name must be 1 to 63 characters of letters, digits, '.', '_' or '-'".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AgentName> for String {
    fn from(n: AgentName) -> Self {
        n.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for ok in ["acme", "a", "acme-2", "0x"] {
            assert!(TenantName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme-",
            "ac_me",
            "a.b",
            &"a".repeat(33),
        ] {
            assert!(TenantName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(TenantName::parse("acme").unwrap().vhost(), "ris.acme");
    }

    #[test]
    fn tenant_name_serde_rejects_invalid() {
        let err = serde_json::from_str::<TenantName>("\"Bad Name\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }

    #[test]
    fn agent_names() {
        assert!(AgentName::parse("web-1.eu_x").is_ok());
        assert!(AgentName::parse("web 1").is_err());
        assert!(AgentName::parse("").is_err());
    }
}
