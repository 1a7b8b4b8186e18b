//! Container labels: what ties a container to its tenant, agent, service and revision.
//!
//! The agent finds its containers by label filter and checks the labels again on what
//! the engine returns ([`Owner::owns`]) before touching anything: a container without
//! `ris.managed=true` and this agent's id is never stopped, removed or even listed.

use std::collections::HashMap;

/// `true` on every container RIS creates.
pub const MANAGED: &str = "ris.managed";
pub const TENANT: &str = "ris.tenant";
/// The agent id: agents sharing an engine never touch each other's containers.
pub const AGENT: &str = "ris.agent";
pub const SERVICE: &str = "ris.service";
pub const REVISION: &str = "ris.revision";
/// `ServiceSpec::container_hash()`: a container whose hash differs is replaced.
pub const HASH: &str = "ris.hash";
/// Replica slot (0-based) a service container fills.
pub const SLOT: &str = "ris.slot";
/// The task a one-off `run` container belongs to.
pub const TASK: &str = "ris.task";

/// The agent on whose behalf containers are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: String,
    pub agent_id: String,
}

impl Owner {
    pub fn new(tenant: impl Into<String>, agent_id: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            agent_id: agent_id.into(),
        }
    }

    /// The labels every container of this agent carries, plus `extra`.
    pub fn labels(&self, extra: &[(&str, String)]) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (MANAGED.to_owned(), "true".to_owned()),
            (TENANT.to_owned(), self.tenant.clone()),
            (AGENT.to_owned(), self.agent_id.clone()),
        ]);
        for (k, v) in extra {
            labels.insert((*k).to_owned(), v.clone());
        }
        labels
    }

    /// A `list_containers` filter selecting this agent's containers (and `extra` labels).
    pub fn filters(&self, extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut label = vec![
            format!("{MANAGED}=true"),
            format!("{TENANT}={}", self.tenant),
            format!("{AGENT}={}", self.agent_id),
        ];
        label.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        HashMap::from([("label".to_owned(), label)])
    }

    /// True when `labels` mark a container this agent created.
    pub fn owns(&self, labels: Option<&HashMap<String, String>>) -> bool {
        let Some(labels) = labels else { return false };
        labels.get(MANAGED).map(String::as_str) == Some("true")
            && labels.get(AGENT) == Some(&self.agent_id)
            && labels.get(TENANT) == Some(&self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_labelled_containers_are_owned() {
        let me = Owner::new("acme", "agent-1");
        let mine = me.labels(&[(SERVICE, "web".to_owned())]);
        assert!(me.owns(Some(&mine)));
        assert!(!me.owns(None), "unlabelled");
        assert!(!me.owns(Some(&HashMap::new())), "no labels");
        let other_agent = Owner::new("acme", "agent-2").labels(&[]);
        assert!(!me.owns(Some(&other_agent)), "another agent's");
        let other_tenant = Owner::new("evil", "agent-1").labels(&[]);
        assert!(!me.owns(Some(&other_tenant)), "another tenant's");
        let mut unmanaged = mine.clone();
        unmanaged.insert(MANAGED.to_owned(), "false".to_owned());
        assert!(!me.owns(Some(&unmanaged)), "not managed");
        let f = me.filters(&[(SERVICE, "web")]);
        assert_eq!(
            f["label"],
            vec![
                "ris.managed=true",
                "ris.tenant=acme",
                "ris.agent=agent-1",
                "ris.service=web"
            ]
        );
    }
}
