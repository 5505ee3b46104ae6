//! The cursor and the four ways of walking pages: `item_field`, `response_token`,
//! `link_next` (the `Link` header) and `since`, and when a conditional request is sound.

use serde::{Deserialize, Serialize};

use super::items::Item;
use super::{fatal, HttpJson, Mode, PAGE_OVERLAP_SECONDS};
use crate::poll::FetchError;
use crate::request::Headers;

/// What the next fetch needs; stored by the runner as JSON. Never holds the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    /// `item_field`: the newest item's field; `response_token`: the token for the next page (or
    /// the one that fetched the last page, when caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<String>,
    /// `since`: the newest item time seen, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) newest_ms: Option<i64>,
    /// `since`: in the middle of a walk, the newest time of the last page (unix ms): the next
    /// page starts one second before it. Absent: the next request starts a walk at
    /// `newest_ms - lookback_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) resume_ms: Option<i64>,
    /// `link_next`: the URL to ask next (without a query credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_modified: Option<String>,
    /// `link_next`: the most items a page has held (a shorter last page is not full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) longest_page: Option<usize>,
    /// The URL `etag` and `last_modified` came from: sent only when asking it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) validated_url: Option<String>,
}

impl HttpJson {
    /// The URL of the next request, without the query credential.
    pub(super) fn request_url(&self, state: &State) -> Result<String, FetchError> {
        Ok(match &self.mode {
            Mode::LinkNext => match &state.next {
                Some(next) => {
                    self.check_origin(next, "the stored cursor's next URL")?;
                    next.clone()
                }
                None => self.fill("", 0),
            },
            Mode::ItemField { .. } | Mode::ResponseToken { .. } => {
                self.fill(state.value.as_deref().unwrap_or_default(), 0)
            }
            Mode::Since { lookback } => {
                let since = match (resume(state, *lookback), state.newest_ms) {
                    (Some(pos), _) => pos.div_euclid(1000).saturating_sub(PAGE_OVERLAP_SECONDS),
                    (None, Some(t)) => t.div_euclid(1000).saturating_sub(*lookback),
                    (None, None) => 0,
                };
                self.fill("", since.max(0))
            }
        })
    }

    /// Whether a later 304 for this response's URL would prove there is nothing new.
    /// - `item_field`, `response_token`: yes. The first page after the cursor, or the page of a
    ///   token, changes with any new item (or a new next token in the body).
    /// - `link_next`: only for a last page shorter than the longest page seen. A new item after
    ///   a *full* last page goes to a new page, and only the `Link` header (outside what an ETag
    ///   covers) would say so: a 304 there would hide it forever.
    /// - `since`: no. A walk's first page says nothing about the pages after it.
    pub(super) fn conditional_is_sound(
        &self,
        state: &mut State,
        page_len: usize,
        more: bool,
    ) -> bool {
        match self.mode {
            Mode::ItemField { .. } | Mode::ResponseToken { .. } => true,
            Mode::LinkNext => {
                let longest = state.longest_page.unwrap_or(0);
                state.longest_page = Some(longest.max(page_len));
                !more && page_len < longest
            }
            Mode::Since { .. } => false,
        }
    }

    /// The `since` walk (see the module docs). Returns `more`.
    pub(super) fn advance_since(
        &self,
        state: &mut State,
        items: &[Item<'_>],
        lookback: i64,
        url: &str,
    ) -> Result<bool, FetchError> {
        let times: Vec<i64> = items.iter().filter_map(|it| it.time_ms).collect();
        if let Some(w) = times.windows(2).position(|w| matches!(w, [a, b] if b < a)) {
            return Err(fatal(format!(
                "the items from {url} are not in time order (item {} is older than the one \
                 before it); check `order`",
                w + 1
            )));
        }
        let pos = resume(state, lookback);
        let (Some(&oldest), Some(&newest)) = (times.first(), times.last()) else {
            // Nothing after `since`: caught up.
            state.resume_ms = None;
            return Ok(false);
        };
        if let (true, Some(bound)) = (self.newest_first, pos.or(state.newest_ms)) {
            if oldest > bound {
                return Err(fatal(format!(
                    "the page from {url} holds only items newer than those already seen: this \
                     newest_first API returns its newest page, not the one after `since`, so \
                     the items in between would be lost"
                )));
            }
        }
        let seen = state.newest_ms.map_or(newest, |t| t.max(newest));
        state.newest_ms = Some(seen);
        let Some(pos) = pos else {
            // The first page of a walk.
            state.resume_ms = Some(newest);
            return Ok(true);
        };
        if newest > pos {
            state.resume_ms = Some(newest);
            Ok(true)
        } else if newest < pos {
            Err(fatal(format!(
                "the page from {url} ends at {newest} ms, before the end of the page before it \
                 ({pos} ms): more than one page of items within one second (raise the page size \
                 in `url`), or items were deleted"
            )))
        } else {
            state.resume_ms = None;
            Ok(false)
        }
    }
}

/// Where the next `since` page starts, if inside a walk. With a one-second lookback a new walk
/// is the same request as a step of one, so it is treated as one.
fn resume(state: &State, lookback: i64) -> Option<i64> {
    state.resume_ms.or(if lookback <= PAGE_OVERLAP_SECONDS {
        state.newest_ms
    } else {
        None
    })
}

/// The `rel="next"` target among the `Link` headers (RFC 8288), if any.
pub(super) fn next_link(headers: &Headers) -> Option<String> {
    for (name, value) in headers.iter() {
        if !name.eq_ignore_ascii_case("link") {
            continue;
        }
        for link in split_outside(value, ',') {
            let link = link.trim();
            let Some(after) = link.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = after.split_once('>') else {
                continue;
            };
            let is_next = split_outside(params, ';').into_iter().any(|param| {
                let Some((k, v)) = param.split_once('=') else {
                    return false;
                };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.trim().to_string());
            }
        }
    }
    None
}

/// Split on `sep` outside `<…>` and `"…"`.
fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_angle, mut in_quote, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            '"' if !in_angle => in_quote = !in_quote,
            c if c == sep && !in_angle && !in_quote => {
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}
