//! Percentiles and the one-JSON-line output every scenario ends with.

use serde_json::{json, Value};

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// p50/p95/p99/max of samples in milliseconds, rounded to 0.01 ms.
pub fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50_ms": round2(percentile(&ms, 50.0)), "p95_ms": round2(percentile(&ms, 95.0)),
        "p99_ms": round2(percentile(&ms, 99.0)),
        "max_ms": round2(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn ms(d: std::time::Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

/// Prints the machine-readable line on stdout and the human summary on stderr.
pub fn emit(result: &Value, human: &str) {
    println!("{result}");
    eprintln!("{human}");
}
