//! Reading a Prometheus text page (`/metrics`) for one summary quantile.

/// The value of `name{quantile="q"}` (the exporter's summaries cover the last minute or
/// so), summed over label sets is meaningless, so the first match is returned.
pub fn quantile(page: &str, name: &str, q: &str) -> Option<f64> {
    let needle = format!("quantile=\"{q}\"");
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Like [`quantile`], for the label set holding `label` (e.g. `step="targets"`).
pub fn quantile_where(page: &str, name: &str, label: &str, q: &str) -> Option<f64> {
    let needle = format!("quantile=\"{q}\"");
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(&needle) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// p50/p99 in ms of each placement step on a dispatcher's `/metrics`.
pub fn placement_steps(page: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for step in [
        "targets",
        "candidates",
        "begin_attempt",
        "publish",
        "inflight_and_event",
    ] {
        let label = format!("step=\"{step}\"");
        let get = |q| {
            quantile_where(page, "ris_placement_step_seconds", &label, q)
                .map(|s| crate::stats::round2(s * 1000.0))
        };
        out.insert(
            step.to_owned(),
            serde_json::json!({ "p50_ms": get("0.5"), "p99_ms": get("0.99") }),
        );
    }
    serde_json::Value::Object(out)
}

/// `name_count` (first label set).
pub fn count(page: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}_count");
    page.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub async fn fetch(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_quantile() {
        let page = "# TYPE x summary\nx{quantile=\"0.5\"} 0.001\nx{quantile=\"0.99\"} 0.02\nx_sum 1\nx_count 7\n";
        assert_eq!(quantile(page, "x", "0.99"), Some(0.02));
        assert_eq!(count(page, "x"), Some(7.0));
    }
}
