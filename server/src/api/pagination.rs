//! Cursor pagination shared by every list endpoint: `?after=<cursor>&limit=<n>` in,
//! `{"items": [...], "next_cursor": ...}` out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn limit(&self) -> ApiResult<u32> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(
                "invalid-query",
                format!("limit {n} is outside 1..={MAX_LIMIT}"),
            )),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit` items; a full page has a cursor to continue from.
    pub fn new(items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = (items.len() == limit as usize)
            .then(|| items.last().map(&cursor_of))
            .flatten();
        Self { items, next_cursor }
    }
}
