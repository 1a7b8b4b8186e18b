//! Agent labels and label selectors.
//!
//! Labels are `key=value` pairs given at enrollment (`--label env=prod`). A selector is
//! a comma-separated list of requirements, `env=prod,region!=us`, all of which must hold.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::InvalidName;

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 63
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// An agent's labels: keys of 1–63 characters (`[A-Za-z0-9._/-]`), values of 0–63
/// characters (`[A-Za-z0-9._-]`), at most 64 of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
#[schemars(with = "BTreeMap<String, String>")]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub fn parse_pair(s: &str) -> Result<(String, String), InvalidName> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| InvalidName(format!("label `{s}` must have the form key=value")))?;
        check_pair(k.trim(), v.trim())?;
        Ok((k.trim().to_owned(), v.trim().to_owned()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

fn check_pair(k: &str, v: &str) -> Result<(), InvalidName> {
    if !valid_key(k) {
        return Err(InvalidName(format!(
            "label key `{k}` must be 1 to 63 characters of letters, digits, '.', '_', '-' or '/'"
        )));
    }
    if !valid_value(v) {
        return Err(InvalidName(format!(
            "label value `{v}` must be at most 63 characters of letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = InvalidName;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        if map.len() > 64 {
            return Err(InvalidName("at most 64 labels are allowed".into()));
        }
        for (k, v) in &map {
            check_pair(k, v)?;
        }
        Ok(Self(map))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(l: Labels) -> Self {
        l.0
    }
}

impl FromIterator<(String, String)> for Labels {
    /// Collects already-validated pairs (from [`Labels::parse_pair`]).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
}

/// A label selector such as `env=prod,region=eu`. Every requirement must hold; an empty
/// selector is refused (target an agent by id, or use a label every agent has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct LabelSelector {
    source: String,
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(InvalidName(format!(
                    "selector `{s}` has an empty requirement; use key=value[,key=value]"
                )));
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                check_pair(k.trim(), v.trim())?;
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                check_pair(k.trim(), v.trim())?;
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else {
                return Err(InvalidName(format!(
                    "selector requirement `{part}` must be key=value or key!=value"
                )));
            };
            requirements.push(req);
        }
        Ok(Self {
            source: s.trim().to_owned(),
            requirements,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v.as_str()),
        })
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl TryFrom<String> for LabelSelector {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<LabelSelector> for String {
    fn from(s: LabelSelector) -> Self {
        s.source
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_all_requirements() {
        let sel = LabelSelector::parse("env=prod, region=eu").unwrap();
        assert!(sel.matches(&labels(&[("env", "prod"), ("region", "eu"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        assert!(!sel.matches(&labels(&[("env", "dev"), ("region", "eu")])));
    }

    #[test]
    fn selector_not_equals() {
        let sel = LabelSelector::parse("env!=prod").unwrap();
        assert!(sel.matches(&labels(&[("env", "dev")])));
        assert!(sel.matches(&labels(&[])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn bad_selectors() {
        for bad in ["", "env", "env=prod,", "e nv=prod", "env=pr od"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_pairs() {
        assert_eq!(
            Labels::parse_pair("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert!(Labels::parse_pair("envprod").is_err());
        let bad: Result<Labels, _> =
            serde_json::from_str(r#"{"env": "has space"}"#).map_err(|e| e.to_string());
        assert!(bad.is_err());
    }
}
