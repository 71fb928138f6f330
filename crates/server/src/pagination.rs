//! Cursor pagination shared by every list. Ids are UUID v7, so ordering by id
//! is ordering by creation time; the cursor is the last id of a page, opaque
//! to clients. Unlike offsets it stays correct while rows are inserted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Select,
};

pub const DEFAULT_LIMIT: u64 = 20;
pub const MAX_LIMIT: u64 = 100;

/// Which page to fetch: newest first, strictly after the cursor's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u64,
    pub after: Option<uuid::Uuid>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

pub fn encode_cursor(id: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Option<uuid::Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    uuid::Uuid::from_slice(&bytes).ok()
}

/// Runs `select` as one page ordered by `id_column`, newest first. Fetches one
/// extra row to learn whether another page follows.
pub async fn fetch_page<E, C>(
    conn: &C,
    select: Select<E>,
    id_column: E::Column,
    request: PageRequest,
    id_of: impl Fn(&E::Model) -> uuid::Uuid,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut select = select.order_by_desc(id_column);
    if let Some(after) = request.after {
        select = select.filter(id_column.lt(after));
    }
    let mut items = select.limit(request.limit + 1).all(conn).await?;
    let next_cursor = if items.len() as u64 > request.limit {
        items.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
        items.last().map(|last| encode_cursor(id_of(last)))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(decode_cursor("AAAA"), None);
    }
}
