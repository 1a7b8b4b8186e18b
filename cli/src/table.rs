//! Aligned plain-text tables and the small value formatters the tables share.
//!
//! Columns are padded to their widest cell (counted in characters); the last column is
//! not padded, so lines carry no trailing spaces. Cells are single-line: newlines and
//! tabs become spaces so a stray value cannot break the alignment.

use chrono::{DateTime, Utc};

/// A table with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cells: Vec<String> = cells.into_iter().map(|c| single_line(&c.into())).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let last = line.len().saturating_sub(1);
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = width - cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

fn single_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

/// `-` for a missing value.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A timestamp as `2026-11-29 10:02:03`, UTC.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// How long ago, coarsely: `4s ago`, `12m ago`, `3h ago`, `5d ago`.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(["NAME", "STATUS", "LABELS"]);
        t.row(["web-1", "online", "env=prod"]);
        t.row(["a-much-longer-name", "offline", ""]);
        let text = t.render();
        assert_eq!(
            text,
            "NAME                STATUS   LABELS\n\
             web-1               online   env=prod\n\
             a-much-longer-name  offline\n"
        );
    }

    #[test]
    fn widths_count_characters_and_cells_stay_on_one_line() {
        let mut t = Table::new(["A", "B"]);
        t.row(["é", "x"]).row(["two\nlines", "y"]);
        assert_eq!(t.render(), "A          B\né          x\ntwo lines  y\n");
    }

    #[test]
    fn short_rows_are_padded() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["1"]);
        assert_eq!(t.render(), "A  B  C\n1\n");
        assert!(!t.is_empty());
    }

    #[test]
    fn ago_is_coarse() {
        let now = Utc::now();
        let secs = |s| now - chrono::Duration::seconds(s);
        assert_eq!(ago(secs(4), now), "4s ago");
        assert_eq!(ago(secs(125), now), "2m ago");
        assert_eq!(ago(secs(7200), now), "2h ago");
        assert_eq!(ago(secs(3 * 86_400), now), "3d ago");
        assert_eq!(ago(now + chrono::Duration::seconds(3), now), "0s ago");
    }
}
