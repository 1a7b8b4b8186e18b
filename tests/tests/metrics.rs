//! An operator scrapes `/metrics` of the API and of a dispatcher after running tasks and
//! finds requests, transitions, latencies and gauges counted.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::time::Duration;

use ris_tests::{eventually, wait_for_task, System};
use serde_json::json;

/// One sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A minimal Prometheus text-format parser: `name{a="x",b="y"} value`, `#` lines skipped.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// `a="x",b="y"` (values in our metrics hold no quotes or commas).
fn parse_labels(raw: &str) -> BTreeMap<String, String> {
    raw.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// Sum of the samples named `name` whose labels include every pair of `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(url: &str) -> Vec<Sample> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    parse(&text)
}

#[test]
fn parser_reads_names_labels_and_values() {
    let samples = parse(
        "# TYPE x counter\nx_total{a=\"1\",b=\"two\"} 3\n\ny 0.5\nz_count{kind=\"noop\"} 2\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(sum(&samples, "x_total", &[("b", "two")]), 3.0);
    assert_eq!(sum(&samples, "y", &[]), 0.5);
    assert_eq!(sum(&samples, "z_count", &[("kind", "noop")]), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_dispatcher_metrics_count_tasks() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("metrics", &["env=test"], 2).await;
    tenant.wait_online(&agent).await;

    for _ in 0..2 {
        let id = tenant
            .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
            .await;
        wait_for_task(&tenant, &id, "completed").await;
    }

    let api = scrape(&system.api_url).await;
    let submitted = sum(
        &api,
        "ris_http_requests_total",
        &[("method", "POST"), ("route", "/v1/tasks")],
    );
    assert!(submitted >= 2.0, "POST /v1/tasks counted {submitted}");

    let dispatcher_url = system.dispatcher_metrics_url(0);
    let dispatcher = scrape(&dispatcher_url).await;
    let completed = sum(
        &dispatcher,
        "ris_task_transitions_total",
        &[("state", "completed")],
    );
    assert!(completed >= 2.0, "completed transitions {completed}");
    let end_to_end = sum(
        &dispatcher,
        "ris_task_end_to_end_seconds_count",
        &[("kind", "noop"), ("state", "completed")],
    );
    assert!(end_to_end >= 2.0, "end-to-end observations {end_to_end}");
    let dispatched = sum(
        &dispatcher,
        "ris_dispatch_seconds_count",
        &[("kind", "noop")],
    );
    assert!(dispatched >= 2.0, "dispatch observations {dispatched}");

    // Gauges are refreshed every 5 s: the online agent and the tenant's queues appear.
    eventually("dispatcher gauges", Duration::from_secs(15), || async {
        let samples = scrape(&dispatcher_url).await;
        let online = sum(&samples, "ris_agents_online", &[]);
        let queues = samples
            .iter()
            .filter(|s| s.name == "ris_queue_messages")
            .filter(|s| s.labels.get("tenant") == Some(&tenant.name))
            .count();
        (online >= 1.0 && queues == 3).then_some(())
    })
    .await;
}
