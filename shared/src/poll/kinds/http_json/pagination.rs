//! The cursor and the four ways of walking pages: `item_field`, `response_token`,
//! `link_next` (the `Link` header) and `since`, and when a conditional request is sound.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::Auth;
use super::items::{raw_pointer, scalar_text, Item};
use super::url::{parse_url, resolve, strip_param};
use super::{fatal, HttpJson, Mode, PAGE_OVERLAP_SECONDS};
use crate::poll::FetchError;
use crate::ports::http::HttpRequest;
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

    /// Move the cursor past a page the way the cursor kind walks; returns `more` (ask again).
    pub(super) fn advance(
        &self,
        state: &mut State,
        root: &RawValue,
        headers: &Headers,
        items: &[Item<'_>],
        url: &str,
    ) -> Result<bool, FetchError> {
        match &self.mode {
            Mode::ItemField { pointer } => advance_item_field(state, items, pointer, url),
            Mode::ResponseToken { pointer } => advance_token(state, root, pointer, url),
            Mode::LinkNext => self.advance_link(state, headers, url),
            Mode::Since { lookback } => self.advance_since(state, items, *lookback, url),
        }
    }

    /// `link_next`: the next URL from the `Link` header, on our origin and without the query
    /// credential; without one, this page's URL is asked again next run.
    fn advance_link(
        &self,
        state: &mut State,
        headers: &Headers,
        url: &str,
    ) -> Result<bool, FetchError> {
        let Some(target) = next_link(headers) else {
            state.next = Some(url.to_owned());
            return Ok(false);
        };
        let absolute =
            resolve(url, &target).map_err(|e| fatal(format!("Link rel=next from {url}: {e}")))?;
        self.check_origin(&absolute, "Link rel=next")?;
        let next = match &self.auth {
            Auth::Query { name } => strip_param(&absolute, name),
            _ => absolute,
        };
        // Compared as the parser writes them: the configured url may be spelt otherwise
        // (`HTTP://Host:80/x`).
        let moved = parse_url(url).map_or(true, |u| u.as_str() != next);
        state.next = Some(next);
        Ok(moved)
    }

    /// Validators belong to the URL they came from, and are kept only where a 304 proves
    /// that nothing new exists (see `conditional_is_sound`).
    pub(super) fn keep_validators(
        &self,
        state: &mut State,
        headers: &Headers,
        url: &str,
        page_len: usize,
        more: bool,
    ) {
        let sound = self.conditional_is_sound(state, page_len, more);
        state.etag = None;
        state.last_modified = None;
        state.validated_url = None;
        if sound {
            state.etag = headers.get("etag").map(str::to_string);
            state.last_modified = headers.get("last-modified").map(str::to_string);
            state.validated_url =
                (state.etag.is_some() || state.last_modified.is_some()).then(|| url.to_owned());
        }
    }

    /// Whether a later 304 for this response's URL would prove there is nothing new.
    /// - `item_field`, `response_token`: yes. The first page after the cursor, or the page of a
    ///   token, changes with any new item (or a new next token in the body).
    /// - `link_next`: only for a last page shorter than the longest page seen. A new item after
    ///   a *full* last page goes to a new page, and only the `Link` header (outside what an ETag
    ///   covers) would say so: a 304 there would hide it forever.
    /// - `since`: no. A walk's first page says nothing about the pages after it.
    fn conditional_is_sound(&self, state: &mut State, page_len: usize, more: bool) -> bool {
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
    fn advance_since(
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

/// `req` asking only for a change when `url` is the URL the stored validators came from.
pub(super) fn conditional(mut req: HttpRequest, state: &State, url: &str) -> HttpRequest {
    if state.validated_url.as_deref() == Some(url) {
        if let Some(etag) = &state.etag {
            req = req.header("if-none-match", etag.clone());
        }
        if let Some(lm) = &state.last_modified {
            req = req.header("if-modified-since", lm.clone());
        }
    }
    req
}

/// `item_field`: the cursor is the newest item's field; a page that does not move it is the
/// end.
fn advance_item_field(
    state: &mut State,
    items: &[Item<'_>],
    pointer: &str,
    url: &str,
) -> Result<bool, FetchError> {
    let Some(last) = items.last() else {
        return Ok(false);
    };
    let value = scalar_text(last.raw, pointer).map_err(|e| {
        fatal(format!(
            "the newest item from {url}: cursor.pointer {pointer:?}: {e}"
        ))
    })?;
    // An API that ignores the cursor (or includes the cursor's own item) would otherwise loop
    // on one page.
    let moved = state.value.as_deref() != Some(value.as_str());
    state.value = Some(value);
    Ok(moved)
}

/// `response_token`: the token in the body; absent, `null` or `""` is caught up, and the
/// token of this page is kept, to be asked again next run.
fn advance_token(
    state: &mut State,
    root: &RawValue,
    pointer: &str,
    url: &str,
) -> Result<bool, FetchError> {
    let token = match raw_pointer(root, pointer) {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Null) => None,
            Ok(Value::String(s)) if s.is_empty() => None,
            Ok(Value::String(s)) => Some(s),
            Ok(Value::Number(n)) => Some(n.to_string()),
            _ => {
                return Err(fatal(format!(
                    "cursor.pointer {pointer:?} in the response from {url} is not a string or \
                     number"
                )))
            }
        },
    };
    let Some(t) = token else {
        return Ok(false);
    };
    let moved = state.value.as_deref() != Some(t.as_str());
    state.value = Some(t);
    Ok(moved)
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
fn next_link(headers: &Headers) -> Option<String> {
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
