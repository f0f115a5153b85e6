//! The one pager of `GET /api/v1/captures`: listings (`upload teleport list`), finding one
//! capture (`status`, `--wait`) and the look-ups after a lost create or completion all page
//! through here.
//!
//! What the docs say and what they do not (PROVIDERS.md): `limit` defaults to 25 and `offset`
//! to 0; neither the largest `limit` nor the order of the list is documented. So a search pages
//! with the documented default, and it stops by the captures' own `created` times rather than
//! by position: once the list has shown itself newest first so far (every `created` readable
//! and none newer than the one before) and a page ends with a capture created before the
//! search's lower bound, no later page can hold a capture created after it. When the server's
//! order is anything else, the search reads to the end of the list. Every scan is bounded
//! ([`MAX_PAGES`]), and a server that ignores `offset` (the same page again) is an error rather
//! than an endless loop.

use chrono::{DateTime, Utc};

use super::admin::{Capture, parse_time};
use crate::error::{Error, Result};
use crate::providers::api::Api;

/// The API's documented default page size (`limit`).
pub const PAGE: u32 = 25;
/// Most pages one scan reads (100,000 captures at the default page size).
pub const MAX_PAGES: u32 = 4_000;

/// Pages of the capture list, from an offset, until a short page.
pub struct Pager<'a> {
    api: &'a Api,
    limit: u32,
    offset: u64,
    previous_first: Option<String>,
    pages: u32,
    done: bool,
}

impl<'a> Pager<'a> {
    /// Pages of `limit` captures from `offset`.
    pub fn new(api: &'a Api, limit: u32, offset: u64) -> Self {
        Pager { api, limit: limit.max(1), offset, previous_first: None, pages: 0, done: false }
    }

    /// The next page, `None` after the last one (a page shorter than `limit`).
    pub async fn next_page(&mut self) -> Result<Option<Vec<Capture>>> {
        if self.done {
            return Ok(None);
        }
        if self.pages >= MAX_PAGES {
            return Err(Error::Protocol {
                provider: self.api.provider,
                what: "list captures".into(),
                message: format!("the list goes on past {MAX_PAGES} pages of {}: giving up", self.limit),
            });
        }
        let page = page(self.api, self.limit, self.offset).await?;
        self.pages += 1;
        let first = page.first().map(|c| c.eid.clone());
        if first.is_some() && self.previous_first == first {
            return Err(Error::Protocol {
                provider: self.api.provider,
                what: "list captures".into(),
                message: "the next page starts with the same capture: the server ignores `offset`".into(),
            });
        }
        self.previous_first = first;
        self.done = (page.len() as u64) < self.limit as u64;
        self.offset += page.len() as u64;
        Ok(Some(page))
    }

    /// Where the next page starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// One page of the capture list.
pub async fn page(api: &Api, limit: u32, offset: u64) -> Result<Vec<Capture>> {
    api.get("list captures", "/api/v1/captures", &[("limit", limit.to_string()), ("offset", offset.to_string())])
        .json()
        .await
}

/// What a search does after seeing a capture.
pub enum Seen {
    /// Go on.
    More,
    /// Found what it looked for: stop.
    Stop,
}

/// Whether the list has shown itself newest first so far, and the `created` it went down to.
#[derive(Clone, Copy, Debug, Default)]
struct Order {
    /// A capture without a readable `created`, or one newer than the one before, was seen.
    broken: bool,
    /// The `created` of the last capture seen.
    last: Option<DateTime<Utc>>,
}

impl Order {
    fn see(&mut self, created: Option<DateTime<Utc>>) {
        match (created, self.last) {
            (Some(t), Some(before)) if t > before => self.broken = true,
            (None, _) => self.broken = true,
            _ => {}
        }
        if created.is_some() {
            self.last = created;
        }
    }

    /// True when no capture further down can have been created at or after `bound`.
    fn passed(&self, bound: DateTime<Utc>) -> bool {
        !self.broken && self.last.is_some_and(|t| t < bound)
    }
}

/// Reads the list (pages of [`PAGE`]) showing each capture to `on`, until `on` says stop, the
/// list ends, or (the list being newest first so far) a page ends below `not_before`.
pub async fn search(api: &Api, not_before: Option<DateTime<Utc>>, mut on: impl FnMut(&Capture) -> Seen) -> Result<()> {
    let mut pager = Pager::new(api, PAGE, 0);
    let mut order = Order::default();
    while let Some(captures) = pager.next_page().await? {
        for c in &captures {
            if let Seen::Stop = on(c) {
                return Ok(());
            }
            order.see(c.str("created").and_then(parse_time));
        }
        if not_before.is_some_and(|bound| order.passed(bound)) {
            return Ok(());
        }
    }
    Ok(())
}

/// The capture `eid`, created at or after `not_before` when that is known.
pub async fn find(api: &Api, eid: &str, not_before: Option<DateTime<Utc>>) -> Result<Option<Capture>> {
    let mut found = None;
    search(api, not_before, |c| {
        if c.eid == eid {
            found = Some(c.clone());
            Seen::Stop
        } else {
            Seen::More
        }
    })
    .await?;
    Ok(found)
}

/// Every capture `pred` accepts among those created at or after `not_before`.
pub async fn find_all(api: &Api, not_before: DateTime<Utc>, pred: impl Fn(&Capture) -> bool) -> Result<Vec<Capture>> {
    let mut out = Vec::new();
    search(api, Some(not_before), |c| {
        if c.str("created").and_then(parse_time).is_some_and(|t| t >= not_before) && pred(c) {
            out.push(c.clone());
        }
        Seen::More
    })
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_stops_below_its_bound_only_while_the_list_is_newest_first() {
        let t = |s: &str| parse_time(s);
        let bound = t("2026-01-01T10:00:00").unwrap();
        // (created times of the captures seen, in list order) → may the search stop?
        for (seen, stop) in [
            (vec!["2026-01-01T10:05:00", "2026-01-01T09:59:00"], true),
            (vec!["2026-01-01T10:05:00", "2026-01-01T10:00:00"], false),
            (vec!["2026-01-01T10:05:00", "2026-01-01T10:05:00", "2026-01-01T09:00:00"], true),
            // Oldest first: a newer capture came after an older one; nothing can be ruled out.
            (vec!["2026-01-01T09:00:00", "2026-01-01T09:30:00"], false),
            (vec!["2026-01-01T10:05:00", "yesterday", "2026-01-01T09:00:00"], false),
            (vec![], false),
        ] {
            let mut order = Order::default();
            for s in &seen {
                order.see(t(s));
            }
            assert_eq!(order.passed(bound), stop, "{seen:?}");
        }
    }
}
