//! Cursor pagination of lists, newest first.
//!
//! A list handler parses `limit` and `cursor` with [`limit`] and [`cursor`], asks the
//! store for one row more than the limit, and builds the page with [`page`]: the extra
//! row only tells that there is a next page, whose cursor is that of the last row shown.

use ris_schemas::api::Page;

use crate::error::{ApiError, ApiResult};

/// `?limit=&cursor=` of a list route with nothing else to filter on; parse them with
/// [`limit`] and [`cursor`].
#[derive(Debug, serde::Deserialize)]
pub struct PageParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// The `limit` query parameter: 1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`].
pub fn limit(raw: Option<&str>) -> ApiResult<i64> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "limit",
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            )),
        },
    }
}

/// The `cursor` query parameter, decoded by `decode`.
pub fn cursor<C>(raw: Option<&str>, decode: impl Fn(&str) -> Option<C>) -> ApiResult<Option<C>> {
    raw.map(|c| {
        decode(c).ok_or_else(|| ApiError::invalid("cursor", "`cursor` is not one this API issued"))
    })
    .transpose()
}

/// A page from up to `limit + 1` rows: at most `limit` items, and a next cursor when
/// there were more.
pub fn page<T, V>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
    view: impl FnMut(T) -> V,
) -> Page<V> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor_of)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_pages() {
        assert_eq!(limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(limit(Some("7")).unwrap(), 7);
        for bad in ["0", "-1", "201", "x"] {
            assert_eq!(
                limit(Some(bad)).unwrap_err().field.as_deref(),
                Some("limit")
            );
        }
        let p = page(vec![1, 2, 3], 2, |n| n.to_string(), |n| n * 10);
        assert_eq!(
            (p.items, p.next_cursor),
            (vec![10, 20], Some("2".to_owned()))
        );
        let p = page(vec![1, 2], 2, |n| n.to_string(), |n| n);
        assert_eq!(p.next_cursor, None);
    }
}
