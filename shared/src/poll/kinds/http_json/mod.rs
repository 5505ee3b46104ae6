//! `http_json`: polling a generic JSON API (an iGaming back office, a KYC vendor, a PSP report
//! without webhooks) with a URL template, an auth scheme, items at a JSON pointer and one of four
//! cursor modes:
//!
//! - `item_field`: `{cursor}` is a field of the newest item returned so far ("after this id").
//!   A non-empty page means "ask again"; an empty page (or one that does not move the cursor) is
//!   the end.
//! - `response_token`: `{cursor}` is a token read from the body; absent, `null` or `""` means
//!   caught up, and the token that fetched the last page is kept, so the next run asks for that
//!   page again (its items come again and dedupe absorbs them; new items appended to it are not
//!   lost).
//! - `link_next`: the next request goes to the RFC 8288 `Link: <…>; rel="next"` URL, only when it
//!   is on the scheme, host and port of `url` (else `Fatal`: a response never sends our credential
//!   elsewhere). Without a next link the URL of the last page is kept and asked again next run.
//! - `since`: a poll starts at `{since}` = the newest item time seen minus `lookback_seconds`
//!   and walks forward: each next page starts one second before the newest time of the page
//!   before (`{since_rfc3339}` is the same instant as RFC 3339). The overlaps are what make equal
//!   timestamps safe: an API whose `since` is exclusive would otherwise skip the items that share
//!   the boundary second but did not fit in the page; and items that show up late with an older
//!   time are caught while they are inside the lookback window. Items in an overlap are returned
//!   again and dedupe absorbs them. The walk ends when a page gets no further than the page
//!   before; a page that ends *before* it (more than a page of items within one second) stops the
//!   run with `Fatal` rather than skip items. Limit: more than one page of items sharing one exact
//!   timestamp cannot be paged by time at all (the kind cannot tell that page from the end
//!   without a page size): keep the page size in `url` above the largest burst per second.
//!
//! Conditional requests: the `ETag` and `Last-Modified` of a 2xx response are kept in the cursor
//! with the URL they belong to, and sent as `If-None-Match` / `If-Modified-Since` when that URL is
//! asked again (a caught-up poll); a 304 is an empty page, the same cursor and `more = false`.
//! They are kept only where a 304 proves that nothing is new: always for `item_field` and
//! `response_token`; for `link_next` only after a last page shorter than a full one (a new page
//! after a full last page shows only in the `Link` header, which an ETag does not cover); never
//! for `since` (the first page of a walk says nothing about the pages after it).
//!
//! Items are the elements of the array at `items_pointer`, sliced byte-exact from the body, oldest
//! first (`order = "newest_first"` pages are reversed). With `id_pointer`, an id repeated within
//! one page is returned once. The credential never appears in a cursor, and every error message is
//! scrubbed of it (raw, URL-encoded and base64 forms).

mod auth;
mod items;
mod options;
mod pagination;
#[cfg(all(test, feature = "http-fetch"))]
mod tests;
mod url;

use std::collections::HashSet;

use async_trait::async_trait;
use base64::Engine;
use serde_json::value::RawValue;
use serde_json::Value;

use self::auth::{redact, Auth};
use self::items::{item_time, raw_pointer, scalar_text, Item, TimeUnit};
use self::pagination::{next_link, State};
use self::url::{parse_url, resolve, strip_param, Seg};
use crate::poll::{classify, FetchContext, FetchError, Page, PollKind};
use crate::ports::http::HttpRequest;

pub const NAME: &str = "http_json";

const DEFAULT_LOOKBACK_SECONDS: i64 = 300;
const MAX_LOOKBACK_SECONDS: i64 = 30 * 86_400;
/// The overlap between two pages of one `since` walk: enough for an exclusive `since` to return
/// again the items that share the boundary second.
const PAGE_OVERLAP_SECONDS: i64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    ItemField { pointer: String },
    ResponseToken { pointer: String },
    LinkNext,
    Since { lookback: i64 },
}

/// The `http_json` poll kind, built from validated options.
#[derive(Debug, Clone)]
pub struct HttpJson {
    template: Vec<Seg>,
    origin: ::url::Origin,
    auth: Auth,
    items_pointer: String,
    id_pointer: Option<String>,
    time: Option<(String, TimeUnit)>,
    mode: Mode,
    newest_first: bool,
}

fn fatal(msg: impl Into<String>) -> FetchError {
    FetchError::Fatal(msg.into())
}

fn to_cursor(state: &State) -> Result<Value, FetchError> {
    serde_json::to_value(state).map_err(|e| fatal(format!("cursor: {e}")))
}

#[async_trait]
impl PollKind for HttpJson {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(
        &self,
        ctx: &FetchContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<Page, FetchError> {
        let state = match cursor {
            None | Some(Value::Null) => State::default(),
            Some(v) => serde_json::from_value::<State>(v.clone())
                .map_err(|e| fatal(format!("the stored cursor is not an http_json cursor: {e}")))?,
        };
        let credential = match self.auth {
            Auth::None {} => None,
            _ => Some(ctx.credential()?),
        };
        self.fetch_page(ctx, state, credential)
            .await
            .map_err(|e| redact(e, credential))
    }
}

impl HttpJson {
    async fn fetch_page(
        &self,
        ctx: &FetchContext<'_>,
        mut state: State,
        credential: Option<&str>,
    ) -> Result<Page, FetchError> {
        let url = self.request_url(&state)?;
        let mut req = HttpRequest::get(self.with_credential(&url, credential)?, ctx.timeout)
            .header("accept", "application/json");
        match (&self.auth, credential) {
            (Auth::Bearer {}, Some(c)) => req = req.header("authorization", format!("Bearer {c}")),
            (Auth::Basic {}, Some(c)) => {
                if !c.contains(':') {
                    return Err(fatal(
                        "the poll credential for basic auth must be user:pass",
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(c);
                req = req.header("authorization", format!("Basic {encoded}"));
            }
            (Auth::Header { name }, Some(c)) => req = req.header(name, c),
            _ => {}
        }
        if state.validated_url.as_deref() == Some(url.as_str()) {
            if let Some(etag) = &state.etag {
                req = req.header("if-none-match", etag.clone());
            }
            if let Some(lm) = &state.last_modified {
                req = req.header("if-modified-since", lm.clone());
            }
        }

        let resp = classify(ctx.http.send(req).await)?;
        if resp.status == 304 || resp.status == 204 {
            return Ok(Page {
                items: Vec::new(),
                cursor: to_cursor(&state)?,
                more: false,
            });
        }

        let body = std::str::from_utf8(&resp.body)
            .map_err(|_| fatal(format!("the response from {url} is not UTF-8 JSON")))?;
        let root: &RawValue = serde_json::from_str(body)
            .map_err(|e| fatal(format!("the response from {url} is not JSON: {e}")))?;
        let list = raw_pointer(root, &self.items_pointer).ok_or_else(|| {
            fatal(format!(
                "no {:?} in the response from {url}",
                self.items_pointer
            ))
        })?;
        let raws: Vec<&RawValue> = if list.get() == "null" {
            Vec::new()
        } else {
            serde_json::from_str(list.get()).map_err(|_| {
                fatal(format!(
                    "{:?} in the response from {url} is not an array",
                    self.items_pointer
                ))
            })?
        };

        let page_len = raws.len();
        let mut items = Vec::with_capacity(raws.len());
        for (i, raw) in raws.into_iter().enumerate() {
            let id =
                match &self.id_pointer {
                    Some(p) => Some(scalar_text(raw, p).map_err(|e| {
                        fatal(format!("item {i} from {url}: id_pointer {p:?}: {e}"))
                    })?),
                    None => None,
                };
            let time_ms =
                match &self.time {
                    Some((p, unit)) => Some(item_time(raw, p, *unit).map_err(|e| {
                        fatal(format!("item {i} from {url}: time_pointer {p:?}: {e}"))
                    })?),
                    None => None,
                };
            items.push(Item { raw, id, time_ms });
        }
        if self.newest_first {
            items.reverse();
        }
        if self.id_pointer.is_some() {
            let mut seen = HashSet::new();
            items.retain(|it| it.id.as_ref().is_none_or(|id| seen.insert(id.clone())));
        }

        let more = match &self.mode {
            Mode::ItemField { pointer } => {
                match items.last() {
                    None => false,
                    Some(last) => {
                        let value = scalar_text(last.raw, pointer).map_err(|e| {
                            fatal(format!(
                                "the newest item from {url}: cursor.pointer {pointer:?}: {e}"
                            ))
                        })?;
                        // An API that ignores the cursor (or includes the cursor's own item)
                        // would otherwise loop on one page.
                        let moved = state.value.as_deref() != Some(value.as_str());
                        state.value = Some(value);
                        moved
                    }
                }
            }
            Mode::ResponseToken { pointer } => {
                let token = match raw_pointer(root, pointer) {
                    None => None,
                    Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                        Ok(Value::Null) => None,
                        Ok(Value::String(s)) if s.is_empty() => None,
                        Ok(Value::String(s)) => Some(s),
                        Ok(Value::Number(n)) => Some(n.to_string()),
                        _ => {
                            return Err(fatal(format!(
                                "cursor.pointer {pointer:?} in the response from {url} is not a \
                                 string or number"
                            )))
                        }
                    },
                };
                match token {
                    // Caught up: keep the token of this page, asked again next run.
                    None => false,
                    Some(t) => {
                        let moved = state.value.as_deref() != Some(t.as_str());
                        state.value = Some(t);
                        moved
                    }
                }
            }
            Mode::LinkNext => match next_link(&resp.headers) {
                None => {
                    state.next = Some(url.clone());
                    false
                }
                Some(target) => {
                    let absolute = resolve(&url, &target)
                        .map_err(|e| fatal(format!("Link rel=next from {url}: {e}")))?;
                    self.check_origin(&absolute, "Link rel=next")?;
                    let next = match &self.auth {
                        Auth::Query { name } => strip_param(&absolute, name),
                        _ => absolute,
                    };
                    // Compared as the parser writes them: the configured url may be spelt
                    // otherwise (`HTTP://Host:80/x`).
                    let moved = parse_url(&url).map_or(true, |u| u.as_str() != next);
                    state.next = Some(next);
                    moved
                }
            },
            Mode::Since { lookback } => self.advance_since(&mut state, &items, *lookback, &url)?,
        };

        // Validators belong to the URL they came from, and are kept only where a 304 proves
        // that nothing new exists (see `conditional_is_sound`).
        let sound = self.conditional_is_sound(&mut state, page_len, more);
        state.etag = None;
        state.last_modified = None;
        state.validated_url = None;
        if sound {
            state.etag = resp.headers.get("etag").map(str::to_string);
            state.last_modified = resp.headers.get("last-modified").map(str::to_string);
            state.validated_url =
                (state.etag.is_some() || state.last_modified.is_some()).then(|| url.clone());
        }

        Ok(Page {
            items: items
                .iter()
                .map(|it| it.raw.get().as_bytes().to_vec())
                .collect(),
            cursor: to_cursor(&state)?,
            more,
        })
    }
}
