//! The opaque cursor of task lists: the position of the last row of a page.

use chrono::{DateTime, Utc};
use ris_schemas::ids::TaskId;

/// Where a page of tasks ended (lists are newest first: `created_at` desc, id desc).
/// Encoded as `<unix micros>_<uuid>`, which is URL-safe; clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: TaskId,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.0.simple()
        )
    }

    /// `None` for anything [`Cursor::encode`] did not produce.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (micros, id) = s.split_once('_')?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        let id = uuid::Uuid::try_parse(id).ok().map(TaskId)?;
        Some(Cursor { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: TaskId::new(),
        };
        let s = c.encode();
        assert!(s
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
        assert_eq!(Cursor::decode(&s), Some(c));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "_",
            "abc_def",
            "123",
            "123_not-a-uuid",
            "x_0190a4f2000070008000000000000000",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
