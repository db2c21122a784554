//! Append-only lists in pages: a head (the newest, partly filled page, kept
//! inside its owner's row) and archived full pages under keys of their own.
//!
//! One list append costs no extra key write until a page fills, and a list read
//! newest first touches one key per page. Items are numbered from 0 in append
//! order; the number is the cursor of paged reads.

use serde::{Deserialize, Serialize};

use crate::error::QueryError;

/// Most items one query page returns.
pub const MAX_PAGE_SIZE: usize = 100;

/// Where a newest-first read goes on: items numbered below this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor(pub u64);

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Cursor {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Cursor)
    }
}

/// One page of a query: at most `limit` items and, if there are more, the
/// cursor of the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// The head of a list: how many items it has in all, and the newest ones
/// (`count - items.len()` is always a multiple of the page length).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListHead<T> {
    pub count: u64,
    pub items: Vec<T>,
}

impl<T> Default for ListHead<T> {
    fn default() -> Self {
        Self {
            count: 0,
            items: Vec::new(),
        }
    }
}

impl<T> ListHead<T> {
    /// Appends; when the head was full, returns it as archive page `(number,
    /// items)` for the caller to store.
    pub fn push(&mut self, item: T, page_len: usize) -> Option<(u64, Vec<T>)> {
        let full = if self.items.len() >= page_len {
            let number =
                self.count.saturating_sub(self.items.len() as u64) / page_len.max(1) as u64;
            Some((number, std::mem::take(&mut self.items)))
        } else {
            None
        };
        if self.items.capacity() == 0 {
            // A new page: room for all of it at once (growing it item by item
            // moves it several times).
            self.items.reserve_exact(page_len.max(1));
        }
        self.items.push(item);
        self.count = self.count.saturating_add(1);
        full
    }

    /// Up to `limit` items numbered below `before` (default: all), newest
    /// first, with their numbers; `load_page` reads an archived page.
    pub fn newest_first(
        &self,
        page_len: usize,
        before: Option<Cursor>,
        limit: usize,
        mut load_page: impl FnMut(u64) -> Result<Vec<T>, QueryError>,
    ) -> Result<Page<(u64, T)>, QueryError>
    where
        T: Clone,
    {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let page_len = page_len.max(1);
        let head_base = self.count.saturating_sub(self.items.len() as u64);
        let mut next = before.map_or(self.count, |c| c.0.min(self.count));
        let mut items = Vec::with_capacity(limit.min(next as usize));
        let mut page: Option<(u64, Vec<T>)> = None;
        while next > 0 && items.len() < limit {
            let n = next - 1;
            let item = if n >= head_base {
                self.items.get((n - head_base) as usize).cloned()
            } else {
                let number = n / page_len as u64;
                if page.as_ref().map(|(p, _)| *p) != Some(number) {
                    page = Some((number, load_page(number)?));
                }
                page.as_ref()
                    .and_then(|(_, items)| items.get((n % page_len as u64) as usize).cloned())
            };
            match item {
                Some(item) => items.push((n, item)),
                // A short archive page: the list is damaged; show what there is.
                None => break,
            }
            next = n;
        }
        Ok(Page {
            items,
            next: (next > 0).then_some(Cursor(next)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn pages_newest_first_across_archived_pages() {
        let mut head = ListHead::default();
        let mut archive = HashMap::new();
        for i in 0..23u32 {
            if let Some((number, items)) = head.push(i, 5) {
                archive.insert(number, items);
            }
        }
        assert_eq!(head.count, 23);
        assert_eq!(head.items, vec![20, 21, 22]);
        let load = |n: u64| Ok(archive.get(&n).cloned().unwrap_or_default());
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = head.newest_first(5, cursor, 7, load).unwrap();
            seen.extend(page.items.iter().map(|(_, v)| *v));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..23).rev().collect::<Vec<_>>());
        let page = head.newest_first(5, Some(Cursor(3)), 100, load).unwrap();
        assert_eq!(page.items, vec![(2, 2), (1, 1), (0, 0)]);
        assert_eq!(page.next, None);
    }
}
