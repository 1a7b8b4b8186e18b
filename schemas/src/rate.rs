//! Rates of a fleet job: a count, or a percentage of its targets (`50`, `"10%"`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A count, or a percentage of a job's targets: `50` or `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
#[schemars(with = "RateSchema")]
pub enum Rate {
    Count(u32),
    /// Hundredths of a percent, `1..=10000` (`"12.5%"` is 1250).
    Percent(u32),
}

/// The JSON Schema of [`Rate`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum RateSchema {
    Count(u32),
    #[schemars(extend("pattern" = r"^[0-9]+(\.[0-9]{1,2})?%$"))]
    Percent(String),
}

impl Rate {
    /// The absolute number for `targets` targets: a percentage rounds up when `up`, else
    /// down.
    pub fn of(self, targets: u32, up: bool) -> u32 {
        match self {
            Rate::Count(n) => n,
            Rate::Percent(hundredths) => {
                let scaled = u64::from(targets) * u64::from(hundredths);
                let n = if up {
                    scaled.div_ceil(10_000)
                } else {
                    scaled / 10_000
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }

    /// `max_concurrency` for `targets` targets: at least 1.
    pub fn concurrency(self, targets: u32) -> u32 {
        self.of(targets, true).max(1)
    }

    /// `max_errors` for `targets` targets.
    pub fn errors(self, targets: u32) -> u32 {
        self.of(targets, false)
    }

    fn parse_percent(s: &str) -> Option<u32> {
        let number = s.trim().strip_suffix('%')?.trim();
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty()
            || frac.len() > 2
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let whole: u32 = whole.parse().ok()?;
        let frac: u32 = format!("{frac:0<2}").parse().ok()?;
        let hundredths = whole.checked_mul(100)?.checked_add(frac)?;
        (1..=10_000).contains(&hundredths).then_some(hundredths)
    }
}

impl TryFrom<serde_json::Value> for Rate {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        const EXPECTED: &str =
            "must be a non-negative whole number or a percentage between 0% and 100% such as \"10%\"";
        match &v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Rate::Count)
                .ok_or_else(|| format!("{EXPECTED}, got {n}")),
            serde_json::Value::String(s) => {
                if let Ok(n) = s.trim().parse::<u32>() {
                    return Ok(Rate::Count(n));
                }
                Rate::parse_percent(s).map(Rate::Percent).ok_or_else(|| {
                    if s.trim() == "0%" {
                        "a percentage must be more than 0% (use 0 for none)".to_owned()
                    } else {
                        format!("{EXPECTED}, got \"{s}\"")
                    }
                })
            }
            other => Err(format!("{EXPECTED}, got {other}")),
        }
    }
}

impl From<Rate> for serde_json::Value {
    fn from(r: Rate) -> Self {
        match r {
            Rate::Count(n) => serde_json::Value::from(n),
            Rate::Percent(_) => serde_json::Value::from(r.to_string()),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Count(n) => write!(f, "{n}"),
            Rate::Percent(h) if h % 100 == 0 => write!(f, "{}%", h / 100),
            Rate::Percent(h) => {
                let frac = format!("{:02}", h % 100);
                write!(f, "{}.{}%", h / 100, frac.trim_end_matches('0'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(v: serde_json::Value) -> Result<Rate, String> {
        Rate::try_from(v)
    }

    #[test]
    fn rates_parse_and_resolve() {
        assert_eq!(rate(serde_json::json!(5)), Ok(Rate::Count(5)));
        assert_eq!(rate(serde_json::json!("7")), Ok(Rate::Count(7)));
        assert_eq!(rate(serde_json::json!("10%")), Ok(Rate::Percent(1000)));
        assert_eq!(rate(serde_json::json!("12.5%")), Ok(Rate::Percent(1250)));
        assert_eq!(rate(serde_json::json!("100%")), Ok(Rate::Percent(10000)));
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("-5%"),
            serde_json::json!("101%"),
            serde_json::json!("0%"),
            serde_json::json!("abc"),
            serde_json::json!("5.123%"),
            serde_json::json!("%"),
            serde_json::json!(null),
        ] {
            assert!(rate(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(Rate::Percent(1000).concurrency(5), 1);
        assert_eq!(Rate::Percent(1000).concurrency(11), 2);
        assert_eq!(Rate::Percent(500).errors(10), 0);
        assert_eq!(Rate::Percent(500).errors(40), 2);
        assert_eq!(Rate::Count(0).concurrency(10), 1);
        assert_eq!(Rate::Percent(1250).to_string(), "12.5%");
        assert_eq!(Rate::Percent(1205).to_string(), "12.05%");
        let back: Rate =
            serde_json::from_value(serde_json::to_value(Rate::Percent(1250)).unwrap()).unwrap();
        assert_eq!(back, Rate::Percent(1250));
    }
}
