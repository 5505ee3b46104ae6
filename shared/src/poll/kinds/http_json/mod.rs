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

use async_trait::async_trait;
use serde_json::Value;

use self::auth::{redact, Auth};
use self::items::{json_root, TimeUnit};
use self::pagination::{conditional, State};
use self::url::Seg;
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
pub(crate) struct HttpJson {
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
        let req = self.request(ctx, &url, &state, credential)?;
        let resp = classify(ctx.http.send(req).await)?;
        if resp.status == 304 || resp.status == 204 {
            return Ok(Page {
                items: Vec::new(),
                cursor: to_cursor(&state)?,
                more: false,
            });
        }
        let root = json_root(&resp.body, &url)?;
        let (items, page_len) = self.items(root, &url)?;
        let more = self.advance(&mut state, root, &resp.headers, &items, &url)?;
        self.keep_validators(&mut state, &resp.headers, &url, page_len, more);
        Ok(Page {
            items: items
                .iter()
                .map(|it| it.raw.get().as_bytes().to_vec())
                .collect(),
            cursor: to_cursor(&state)?,
            more,
        })
    }

    /// The GET for `url`: the credential where the auth kind puts it, and the validators of
    /// the last response when the same URL is asked again.
    fn request(
        &self,
        ctx: &FetchContext<'_>,
        url: &str,
        state: &State,
        credential: Option<&str>,
    ) -> Result<HttpRequest, FetchError> {
        let req = HttpRequest::get(self.with_credential(url, credential)?, ctx.timeout)
            .header("accept", "application/json");
        let req = self.authorize(req, credential)?;
        Ok(conditional(req, state, url))
    }
}
