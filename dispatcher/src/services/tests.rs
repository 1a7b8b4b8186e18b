#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use chrono::Utc;
use ris_schemas::ids::AgentName;
use ris_schemas::labels::{LabelSelector, Labels};
use ris_schemas::service::{ServiceSpec, ServiceTarget};
use ris_store::{AgentRecord, ServiceRecord};

use super::*;

fn agent(name: &str, labels: &[(&str, &str)]) -> AgentRecord {
    AgentRecord {
        id: AgentId::new(),
        tenant_id: uuid::Uuid::nil(),
        name: AgentName::try_from(name.to_owned()).unwrap(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Labels>(),
        capacity: 1,
        version: "test".into(),
        hostname: name.into(),
        addresses: Vec::new(),
        heartbeat_token_hash: Vec::new(),
        enrolled_at: Utc::now(),
        last_seen_at: None,
        capabilities: Some(vec!["docker".into()]),
    }
}

fn service(name: &str, selector: &str, revision: u32) -> ServiceRecord {
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({"image": "x:1"})).unwrap();
    ServiceRecord {
        name: ServiceName::parse(name).unwrap(),
        revision,
        target: ServiceTarget::Selector(LabelSelector::parse(selector).unwrap()),
        spec,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        deleted_at: None,
    }
}

fn instance(
    s: &ServiceRecord,
    a: &AgentRecord,
    desired: u32,
    reported: Option<u32>,
) -> InstanceRecord {
    InstanceRecord {
        service: s.name.clone(),
        agent_id: a.id,
        agent_name: a.name.to_string(),
        desired_revision: desired,
        removing: false,
        reported_desired_revision: reported,
        revision: reported,
        state: InstanceState::Running,
        reason: None,
        error: None,
        containers: Vec::new(),
        restarts: 0,
        reported_at: None,
        last_applied_at: None,
    }
}

#[test]
fn new_matches_get_instances_and_strays_are_removed() {
    let eu = agent("eu", &[("env", "prod")]);
    let us = agent("us", &[("env", "dev")]);
    let web = service("web", "env=prod", 2);
    let state = SyncState {
        services: vec![web.clone()],
        instances: vec![instance(&web, &us, 2, Some(2))],
        agents: vec![eu.clone(), us.clone()],
    };
    let steps = plan(&state, &HashSet::new());
    assert_eq!(
        steps,
        vec![
            SyncStep::Create {
                service: web.name.clone(),
                agent: eu.id,
                revision: 2
            },
            SyncStep::Remove {
                service: web.name.clone(),
                agent: us.id,
                revision: 2
            },
        ]
    );
}

#[test]
fn lagging_agents_are_told_again_only_when_online() {
    let eu = agent("eu", &[("env", "prod")]);
    let web = service("web", "env=prod", 3);
    let state = SyncState {
        services: vec![web.clone()],
        instances: vec![instance(&web, &eu, 3, Some(2))],
        agents: vec![eu.clone()],
    };
    assert!(plan(&state, &HashSet::new()).is_empty());
    let online = HashSet::from([eu.id]);
    assert_eq!(
        plan(&state, &online),
        vec![SyncStep::Resend {
            service: web.name.clone(),
            agent: eu.id,
            desired_revision: 3,
            removing: false
        }]
    );
    // Caught up: nothing to do.
    let mut caught_up = state.clone();
    caught_up.instances[0].reported_desired_revision = Some(3);
    assert!(plan(&caught_up, &online).is_empty());
}

#[test]
fn deleted_services_are_removed_everywhere_and_revived_agents_reapplied() {
    let eu = agent("eu", &[("env", "prod")]);
    let mut web = service("web", "env=prod", 4);
    web.deleted_at = Some(Utc::now());
    let state = SyncState {
        services: vec![web.clone()],
        instances: vec![instance(&web, &eu, 3, Some(3))],
        agents: vec![eu.clone()],
    };
    assert_eq!(
        plan(&state, &HashSet::new()),
        vec![SyncStep::Remove {
            service: web.name.clone(),
            agent: eu.id,
            revision: 4
        }]
    );
    // Declared again while the agent was being told to remove it: apply again.
    let mut again = state.clone();
    again.services[0].deleted_at = None;
    again.services[0].revision = 5;
    again.instances[0].removing = true;
    assert_eq!(
        plan(&again, &HashSet::new()),
        vec![SyncStep::Create {
            service: web.name.clone(),
            agent: eu.id,
            revision: 5
        }]
    );
}
