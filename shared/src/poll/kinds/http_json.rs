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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::poll::{classify, FetchContext, FetchError, Page, PollKind};
use crate::ports::http::HttpRequest;
use crate::request::Headers;

pub const NAME: &str = "http_json";

const DEFAULT_LOOKBACK_SECONDS: i64 = 300;
const MAX_LOOKBACK_SECONDS: i64 = 30 * 86_400;
/// The overlap between two pages of one `since` walk: enough for an exclusive `since` to return
/// again the items that share the boundary second.
const PAGE_OVERLAP_SECONDS: i64 = 1;

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// `poll.options` as written; each field is then read on its own so an error names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsDoc {
    url: Value,
    auth: Value,
    cursor: Value,
    #[serde(default)]
    items_pointer: Option<Value>,
    #[serde(default)]
    id_pointer: Option<Value>,
    #[serde(default)]
    time_pointer: Option<Value>,
    #[serde(default)]
    time_unit: Option<Value>,
    #[serde(default)]
    order: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Auth {
    /// `Authorization: Bearer <credential>`.
    Bearer {},
    /// `Authorization: Basic base64(<credential>)`, the credential being `user:pass`.
    Basic {},
    /// `<name>: <credential>`.
    Header {
        name: String,
    },
    /// `?<name>=<credential>` appended to every request URL.
    Query {
        name: String,
    },
    None {},
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CursorDoc {
    ItemField {
        #[serde(default)]
        pointer: Option<String>,
    },
    ResponseToken {
        pointer: String,
    },
    LinkNext {},
    Since {
        #[serde(default)]
        lookback_seconds: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TimeUnit {
    Seconds,
    Milliseconds,
    Rfc3339,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    ItemField { pointer: String },
    ResponseToken { pointer: String },
    LinkNext,
    Since { lookback: i64 },
}

/// A piece of the URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Cursor,
    Since,
    SinceRfc3339,
}

/// The `http_json` poll kind, built from validated options.
#[derive(Debug, Clone)]
pub struct HttpJson {
    template: Vec<Seg>,
    origin: Origin,
    auth: Auth,
    items_pointer: String,
    id_pointer: Option<String>,
    time: Option<(String, TimeUnit)>,
    mode: Mode,
    newest_first: bool,
}

fn field<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("{name}: {e}"))
}

fn pointer_field(name: &str, value: Option<Value>) -> Result<Option<String>, String> {
    let Some(value) = value else { return Ok(None) };
    let p: String = field(name, value)?;
    check_pointer(name, &p)?;
    Ok(Some(p))
}

fn check_pointer(name: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{name}: {p:?} is not a JSON pointer (\"\" or starting with /)"
        ))
    }
}

impl HttpJson {
    /// Build from `poll.options`; every error names the offending field.
    pub fn from_options(options: &Value) -> Result<Self, String> {
        let doc: OptionsDoc =
            serde_json::from_value(options.clone()).map_err(|e| format!("options: {e}"))?;
        let url: String = field("url", doc.url)?;
        let auth: Auth = field("auth", doc.auth)?;
        let cursor: CursorDoc = field("cursor", doc.cursor)?;
        let items_pointer = pointer_field("items_pointer", doc.items_pointer)?.unwrap_or_default();
        let id_pointer = pointer_field("id_pointer", doc.id_pointer)?;
        let time_pointer = pointer_field("time_pointer", doc.time_pointer)?;
        let time_unit: Option<TimeUnit> =
            doc.time_unit.map(|v| field("time_unit", v)).transpose()?;
        let order: Order = doc
            .order
            .map(|v| field("order", v))
            .transpose()?
            .unwrap_or_default();

        let template = parse_template(&url).map_err(|e| format!("url: {e}"))?;
        let authority = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?', '#']).next());
        if authority.is_some_and(|a| a.contains(['{', '}'])) {
            return Err("url: placeholders are allowed only in the path and the query".into());
        }
        let parts = split_url(&url).map_err(|e| format!("url: {e}"))?;
        if url.contains('#') {
            return Err("url: a fragment (#…) is never sent to the server; remove it".into());
        }

        match &auth {
            Auth::Header { name } if !is_token(name) => {
                return Err(format!("auth.name: {name:?} is not an HTTP header name"));
            }
            Auth::Query { name } if name.is_empty() => {
                return Err("auth.name: the query parameter name is empty".into());
            }
            _ => {}
        }

        let time = match (time_pointer, time_unit) {
            (Some(p), Some(u)) => Some((p, u)),
            (Some(_), None) => {
                return Err(
                    "time_unit: required with time_pointer (seconds, milliseconds or rfc3339)"
                        .into(),
                )
            }
            (None, Some(_)) => return Err("time_unit: set without time_pointer".into()),
            (None, None) => None,
        };

        let mode = match cursor {
            CursorDoc::ItemField { pointer } => {
                let pointer = match pointer.or_else(|| id_pointer.clone()) {
                    Some(p) => p,
                    None => {
                        return Err(
                            "cursor.pointer: item_field needs a pointer (or id_pointer)".into()
                        )
                    }
                };
                check_pointer("cursor.pointer", &pointer)?;
                Mode::ItemField { pointer }
            }
            CursorDoc::ResponseToken { pointer } => {
                check_pointer("cursor.pointer", &pointer)?;
                Mode::ResponseToken { pointer }
            }
            CursorDoc::LinkNext {} => Mode::LinkNext,
            CursorDoc::Since { lookback_seconds } => {
                let lookback = lookback_seconds.unwrap_or(DEFAULT_LOOKBACK_SECONDS);
                if !(1..=MAX_LOOKBACK_SECONDS).contains(&lookback) {
                    return Err(format!(
                        "cursor.lookback_seconds: must be between 1 and {MAX_LOOKBACK_SECONDS} \
                         (the overlap is what keeps items sharing a timestamp at a page boundary)"
                    ));
                }
                if time.is_none() {
                    return Err(
                        "time_pointer: required with cursor kind \"since\" (with time_unit)".into(),
                    );
                }
                Mode::Since { lookback }
            }
        };

        let has = |s: &Seg| template.contains(s);
        let since_placeholder = has(&Seg::Since) || has(&Seg::SinceRfc3339);
        match &mode {
            Mode::ItemField { .. } | Mode::ResponseToken { .. } => {
                if !has(&Seg::Cursor) {
                    return Err("url: this cursor kind needs a {cursor} placeholder".into());
                }
                if since_placeholder {
                    return Err(
                        "url: {since} and {since_rfc3339} need cursor kind \"since\"".into(),
                    );
                }
            }
            Mode::LinkNext => {
                if template.iter().any(|s| !matches!(s, Seg::Lit(_))) {
                    return Err(
                        "url: with cursor kind \"link_next\" the URL has no placeholders (the \
                         next page's URL comes from the Link header)"
                            .into(),
                    );
                }
            }
            Mode::Since { .. } => {
                if !since_placeholder {
                    return Err(
                        "url: cursor kind \"since\" needs {since} or {since_rfc3339}".into(),
                    );
                }
                if has(&Seg::Cursor) {
                    return Err(
                        "url: {cursor} needs cursor kind item_field or response_token".into(),
                    );
                }
            }
        }
        if order == Order::NewestFirst
            && matches!(mode, Mode::ResponseToken { .. } | Mode::LinkNext)
        {
            return Err(
                "order: newest_first pages followed by token or link walk back in time and \
                 never reach new items; use cursor kind item_field or since"
                    .into(),
            );
        }

        Ok(Self {
            template,
            origin: parts.origin,
            auth,
            items_pointer,
            id_pointer,
            time,
            mode,
            newest_first: order == Order::NewestFirst,
        })
    }

    fn fill(&self, value: &str, since_s: i64) -> String {
        let mut out = String::new();
        for seg in &self.template {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Cursor => out.push_str(&pct(value)),
                Seg::Since => out.push_str(&since_s.to_string()),
                Seg::SinceRfc3339 => {
                    let t = UNIX_EPOCH + Duration::from_secs(since_s.max(0) as u64);
                    out.push_str(&pct(&humantime::format_rfc3339_seconds(t).to_string()));
                }
            }
        }
        out
    }
}

fn parse_template(url: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut rest = url;
    while let Some(i) = rest.find(['{', '}']) {
        let (before, from) = rest.split_at(i);
        lit.push_str(before);
        let Some(after) = from.strip_prefix('{') else {
            return Err("a `}` without `{`".into());
        };
        let end = after.find('}').ok_or("a `{` without `}`")?;
        let (name, tail) = after.split_at(end);
        let seg = match name {
            "cursor" => Seg::Cursor,
            "since" => Seg::Since,
            "since_rfc3339" => Seg::SinceRfc3339,
            other => {
                return Err(format!(
                "unknown placeholder {{{other}}}; known: {{cursor}}, {{since}}, {{since_rfc3339}}"
            ))
            }
        };
        if !lit.is_empty() {
            segs.push(Seg::Lit(std::mem::take(&mut lit)));
        }
        segs.push(seg);
        rest = tail.strip_prefix('}').unwrap_or(tail);
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        segs.push(Seg::Lit(lit));
    }
    Ok(segs)
}

/// RFC 7230 `token` (a header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// URLs: origins, relative references, the query credential
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

struct UrlParts<'a> {
    origin: Origin,
    /// `scheme://authority`.
    prefix: &'a str,
    /// Path, query and fragment.
    rest: &'a str,
}

/// A strict split of an absolute http(s) URL. Anything a WHATWG parser (reqwest's) could read
/// differently is refused: non-printable or non-ASCII bytes, backslashes, userinfo, percent
/// signs or odd characters in the host. So the origin seen here is the one the request goes to.
fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    if let Some(bad) = url.bytes().find(|b| !b.is_ascii_graphic() || *b == b'\\') {
        return Err(format!("the byte {bad:#04x} is not allowed in a URL here"));
    }
    let (scheme, after) = url
        .split_once("://")
        .ok_or("not an absolute URL (scheme://host/…)")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("scheme {other:?}: only http and https")),
    };
    let auth_len = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, _) = after.split_at(auth_len);
    let prefix_len = url.len() - after.len() + auth_len;
    let (prefix, rest) = url.split_at(prefix_len);
    if authority.contains('@') {
        return Err("credentials in the URL (user@host) are not allowed; use poll.secrets".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, tail) = v6.split_once(']').ok_or("an unclosed [ in the host")?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!("host [{inner}] is not an IPv6 address"));
        }
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or("junk after ]")?),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(format!("host {host:?} is not a host name or address"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .map_err(|_| format!("port {p:?} out of range"))?,
        Some(p) => return Err(format!("port {p:?} is not a number")),
    };
    Ok(UrlParts {
        origin: Origin { scheme, host, port },
        prefix,
        rest,
    })
}

/// Resolve a `Link` target (absolute, `//host…`, `/path`, `?query` or a relative path) against
/// the URL of the request it answered; the fragment is dropped.
fn resolve(base: &str, reference: &str) -> Result<String, String> {
    if let Some(bad) = reference
        .bytes()
        .find(|b| !b.is_ascii_graphic() || *b == b'\\')
    {
        return Err(format!("the byte {bad:#04x} in a link target"));
    }
    let reference = reference.split('#').next().unwrap_or_default();
    let base_parts = split_url(base)?;
    let has_scheme = reference.find(':').is_some_and(|i| {
        let (s, _) = reference.split_at(i);
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let base_path_query = base_parts.rest.split('#').next().unwrap_or_default();
    let resolved = if has_scheme {
        reference.to_string()
    } else if reference.starts_with("//") {
        format!("{}:{reference}", base_parts.origin.scheme)
    } else if reference.starts_with('/') {
        format!("{}{reference}", base_parts.prefix)
    } else if reference.starts_with('?') {
        let path = base_path_query.split('?').next().unwrap_or_default();
        format!("{}{path}{reference}", base_parts.prefix)
    } else if reference.is_empty() {
        format!("{}{base_path_query}", base_parts.prefix)
    } else {
        let path = base_path_query.split('?').next().unwrap_or_default();
        let dir = path.rfind('/').map_or("/", |i| path.split_at(i + 1).0);
        format!("{}{dir}{reference}", base_parts.prefix)
    };
    Ok(resolved)
}

/// `url` without any query parameter named `name` (a server echoing our query credential into
/// its next link must not get it stored in the cursor).
fn strip_param(url: &str, name: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
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

// ---------------------------------------------------------------------------------------------
// The cursor
// ---------------------------------------------------------------------------------------------

/// What the next fetch needs; stored by the runner as JSON. Never holds the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// `item_field`: the newest item's field; `response_token`: the token for the next page (or
    /// the one that fetched the last page, when caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// `since`: the newest item time seen, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest_ms: Option<i64>,
    /// `since`: in the middle of a walk, the newest time of the last page (unix ms): the next
    /// page starts one second before it. Absent: the next request starts a walk at
    /// `newest_ms - lookback_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_ms: Option<i64>,
    /// `link_next`: the URL to ask next (without a query credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// `link_next`: the most items a page has held (a shorter last page is not full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    longest_page: Option<usize>,
    /// The URL `etag` and `last_modified` came from: sent only when asking it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    validated_url: Option<String>,
}

struct Item<'a> {
    raw: &'a RawValue,
    id: Option<String>,
    time_ms: Option<i64>,
}

fn fatal(msg: impl Into<String>) -> FetchError {
    FetchError::Fatal(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Fetch
// ---------------------------------------------------------------------------------------------

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
    /// The URL of the next request, without the query credential.
    fn request_url(&self, state: &State) -> Result<String, FetchError> {
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

    fn check_origin(&self, url: &str, what: &str) -> Result<(), FetchError> {
        let parts = split_url(url).map_err(|e| fatal(format!("{what} {url}: {e}")))?;
        if parts.origin != self.origin {
            return Err(fatal(format!(
                "{what} {url} is on {}, not on {} (the configured url): refusing to send the \
                 credential elsewhere",
                parts.origin, self.origin
            )));
        }
        Ok(())
    }

    fn with_credential(&self, url: &str, credential: Option<&str>) -> String {
        match (&self.auth, credential) {
            (Auth::Query { name }, Some(c)) => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}{}={}", pct(name), pct(c))
            }
            _ => url.to_string(),
        }
    }

    async fn fetch_page(
        &self,
        ctx: &FetchContext<'_>,
        mut state: State,
        credential: Option<&str>,
    ) -> Result<Page, FetchError> {
        let url = self.request_url(&state)?;
        let mut req = HttpRequest::get(self.with_credential(&url, credential), ctx.timeout)
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
                    let moved = next != url;
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

/// Where the next `since` page starts, if inside a walk. With a one-second lookback a new walk
/// is the same request as a step of one, so it is treated as one.
fn resume(state: &State, lookback: i64) -> Option<i64> {
    state.resume_ms.or(if lookback <= PAGE_OVERLAP_SECONDS {
        state.newest_ms
    } else {
        None
    })
}

fn to_cursor(state: &State) -> Result<Value, FetchError> {
    serde_json::to_value(state).map_err(|e| fatal(format!("cursor: {e}")))
}

/// A JSON pointer applied to raw JSON, without re-serialising: `None` when the path does not
/// exist or the body is malformed at it.
fn raw_pointer<'a>(root: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut cur = root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = cur.get();
        cur = if text.starts_with('{') {
            let map: HashMap<String, &'a RawValue> = serde_json::from_str(text).ok()?;
            *map.get(&token)?
        } else if text.starts_with('[') {
            if token.len() > 1 && token.starts_with('0') {
                return None;
            }
            let index: usize = token.parse().ok()?;
            let list: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
            *list.get(index)?
        } else {
            return None;
        };
    }
    Some(cur)
}

fn leaf(item: &RawValue, pointer: &str) -> Result<Value, String> {
    let raw = raw_pointer(item, pointer).ok_or("missing")?;
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// A string or number at `pointer`, as text.
fn scalar_text(item: &RawValue, pointer: &str) -> Result<String, String> {
    match leaf(item, pointer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("not a string or number: {other}")),
    }
}

fn item_time(item: &RawValue, pointer: &str, unit: TimeUnit) -> Result<i64, String> {
    let v = leaf(item, pointer)?;
    let number = |scale: f64| -> Result<i64, String> {
        let f = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("not a number: {v}"))?;
        let ms = (f * scale).floor();
        if !(0.0..=1e16).contains(&ms) {
            return Err(format!("out of range: {v}"));
        }
        Ok(ms as i64)
    };
    match unit {
        TimeUnit::Seconds => number(1000.0),
        TimeUnit::Milliseconds => number(1.0),
        TimeUnit::Rfc3339 => match &v {
            Value::String(s) => parse_rfc3339_ms(s).ok_or_else(|| format!("not RFC 3339: {s:?}")),
            _ => Err(format!("not an RFC 3339 string: {v}")),
        },
    }
}

/// RFC 3339 (`T`/`t` or, as RFC 3339 §5.6 allows, a space between date and time; optional
/// fraction; `Z` or `±hh:mm`) to unix ms, with the providers' offset-aware parser.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    match text.as_bytes().get(10) {
        Some(b' ') => {
            let joined = format!("{}T{}", text.get(..10)?, text.get(11..)?);
            crate::time::rfc3339_ms(&joined)
        }
        _ => crate::time::rfc3339_ms(text),
    }
}

/// Scrub the credential (raw, URL-encoded, form-encoded, base64; for `user:pass` also the
/// password alone) from an error.
fn redact(err: FetchError, credential: Option<&str>) -> FetchError {
    let Some(c) = credential.filter(|c| !c.is_empty()) else {
        return err;
    };
    let mut forms: Vec<String> = vec![
        c.to_string(),
        pct(c),
        form_urlencoded::byte_serialize(c.as_bytes()).collect(),
        base64::engine::general_purpose::STANDARD.encode(c),
    ];
    if let Some((_, pass)) = c.split_once(':') {
        if !pass.is_empty() {
            forms.push(pass.to_string());
            forms.push(pct(pass));
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let scrub = |s: String| {
        forms
            .iter()
            .fold(s, |acc, f| acc.replace(f.as_str(), "<redacted>"))
    };
    match err {
        FetchError::Throttled {
            retry_after,
            detail,
        } => FetchError::Throttled {
            retry_after,
            detail: scrub(detail),
        },
        FetchError::Transient(m) => FetchError::Transient(scrub(m)),
        FetchError::Fatal(m) => FetchError::Fatal(scrub(m)),
    }
}

#[cfg(all(test, feature = "http-fetch"))]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::adapters::http_client::ReqwestHttp;
    use crate::secret::Secret;

    // ---- a minimal HTTP/1.1 fake provider on loopback ----------------------------------------

    #[derive(Debug, Clone)]
    struct Req {
        target: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
    }

    impl Req {
        fn q(&self, name: &str) -> Option<String> {
            self.query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
        fn h(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Resp {
        fn new(status: u16, body: impl Into<String>) -> Self {
            Self {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into(),
            }
        }
        fn header(mut self, name: &str, value: impl Into<String>) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }
    }

    type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

    /// Serves `handler` on a loopback port, one request per connection; returns the base URL.
    async fn serve(handler: Handler) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = head.split("\r\n");
                    let target = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("/")
                        .to_string();
                    let headers = lines
                        .take_while(|l| !l.is_empty())
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let (path, query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_string(), q.to_string()),
                        None => (target.clone(), String::new()),
                    };
                    let query = form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .collect();
                    let resp = handler(&Req {
                        target,
                        path,
                        query,
                        headers,
                    });
                    let body = if resp.status == 304 {
                        String::new()
                    } else {
                        resp.body
                    };
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        resp.status,
                        body.len()
                    );
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn etag_of(body: &str) -> String {
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        format!("\"{:x}\"", h.finish())
    }

    // ---- driving the kind the way the runner does ----------------------------------------------

    fn http() -> ReqwestHttp {
        ReqwestHttp::new(4 << 20).expect("client")
    }

    fn secrets(value: &str) -> Vec<Secret> {
        vec![Secret::new("k1", value, None)]
    }

    fn kind(options: Value) -> HttpJson {
        HttpJson::from_options(&options).expect("valid options")
    }

    async fn fetch(
        kind: &HttpJson,
        http: &ReqwestHttp,
        creds: &[Secret],
        cursor: Option<&Value>,
    ) -> Result<Page, FetchError> {
        let ctx = FetchContext {
            http,
            credentials: creds,
            now_ms: 0,
            timeout: Duration::from_secs(10),
        };
        kind.fetch(&ctx, cursor).await
    }

    #[derive(Debug)]
    struct Run {
        items: Vec<Vec<u8>>,
        cursor: Option<Value>,
        pages: usize,
    }

    /// Fetch → keep the items → next fetch with the returned cursor, until `more == false`;
    /// `between(page)` runs between two pages (inserts into the fake).
    async fn drain(
        kind: &HttpJson,
        creds: &[Secret],
        cursor: Option<Value>,
        mut between: impl FnMut(usize),
    ) -> Result<Run, FetchError> {
        let http = http();
        let mut run = Run {
            items: Vec::new(),
            cursor,
            pages: 0,
        };
        loop {
            let page = fetch(kind, &http, creds, run.cursor.as_ref()).await?;
            run.pages += 1;
            run.items.extend(page.items);
            run.cursor = Some(page.cursor);
            if !page.more {
                return Ok(run);
            }
            assert!(run.pages < 5_000, "the poll never reached the end");
            between(run.pages);
        }
    }

    fn id_of(item: &[u8]) -> String {
        let v: Value = serde_json::from_slice(item).expect("item is JSON");
        match &v["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn ids(items: &[Vec<u8>]) -> Vec<String> {
        items.iter().map(|i| id_of(i)).collect()
    }

    /// What dedupe leaves: the first occurrence of each id, in delivery order.
    fn first_occurrences(ids: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|i| seen.insert((*i).clone()))
            .cloned()
            .collect()
    }

    fn assert_redacted(message: &str, secret: &str) {
        for form in [
            secret.to_string(),
            pct(secret),
            form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
        ] {
            assert!(
                !message.contains(&form),
                "the credential leaked into {message:?}"
            );
        }
    }

    fn message(e: &FetchError) -> String {
        match e {
            FetchError::Throttled { detail, .. } => detail.clone(),
            FetchError::Transient(m) | FetchError::Fatal(m) => m.clone(),
        }
    }

    // ---- an "after id" API (bearer): GET /v1/bets?after=<id>&limit=N ---------------------------

    const BEARER: &str = "bo_live_7Hq/x+Z=";

    #[derive(Default)]
    struct Bets {
        /// (id, created), ascending ids.
        items: Vec<(u64, i64)>,
        requests: Vec<Req>,
    }

    impl Bets {
        fn insert(&mut self, n: usize) {
            for _ in 0..n {
                let id = self.items.last().map_or(1, |(id, _)| id + 1);
                self.items.push((id, 1_700_000_000 + id as i64));
            }
        }
    }

    fn bet_json(id: u64, created: i64) -> String {
        // Irregular spacing and a unicode escape: items must come back byte-exact.
        format!(
            "{{ \"id\" : {id},\"type\":\"bet.placed\", \"created\": {created}, \"player\":\"p\\u00e9{}\" }}",
            id % 7
        )
    }

    fn bets_api(state: Arc<Mutex<Bets>>) -> Handler {
        Arc::new(move |req: &Req| {
            let mut st = state.lock().expect("lock");
            st.requests.push(req.clone());
            if req.h("authorization").as_deref() != Some(&format!("Bearer {BEARER}")) {
                let given = req.h("authorization").unwrap_or_default();
                return Resp::new(401, format!("{{\"error\":\"invalid token: {given}\"}}"));
            }
            let after: u64 = req
                .q("after")
                .filter(|a| !a.is_empty())
                .map_or(0, |a| a.parse().expect("numeric after"));
            let limit: usize = req.q("limit").map_or(50, |l| l.parse().expect("limit"));
            let mut page: Vec<(u64, i64)> = st
                .items
                .iter()
                .filter(|(id, _)| *id > after)
                .take(limit)
                .copied()
                .collect();
            if req.path == "/v1/bets_desc" {
                // Newest first, but the page adjacent to the cursor (Stripe's ending_before).
                page.reverse();
            }
            let data: Vec<String> = page.iter().map(|(id, c)| bet_json(*id, *c)).collect();
            let body = format!(
                "{{\"object\":\"list\",\n \"data\": [\n  {}\n ]}}",
                data.join(" ,\n  ")
            );
            let etag = etag_of(&body);
            if req.h("if-none-match").as_deref() == Some(etag.as_str()) {
                return Resp::new(304, "");
            }
            Resp::new(200, body)
                .header("ETag", etag)
                .header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        })
    }

    fn bets_options(base: &str, path: &str, order: &str) -> Value {
        json!({
            "url": format!("{base}{path}?after={{cursor}}&limit=40"),
            "auth": { "kind": "bearer" },
            "items_pointer": "/data",
            "id_pointer": "/id",
            "cursor": { "kind": "item_field" },
            "order": order,
        })
    }

    #[tokio::test]
    async fn an_after_id_api_yields_every_item_once_in_order_with_inserts_between_pages() {
        let state = Arc::new(Mutex::new(Bets::default()));
        state.lock().expect("lock").insert(1_000);
        let base = serve(bets_api(state.clone())).await;
        let kind = kind(bets_options(&base, "/v1/bets", "oldest_first"));
        let creds = secrets(BEARER);

        let run = drain(&kind, &creds, None, |page| {
            if page <= 30 {
                state.lock().expect("lock").insert(4);
            }
        })
        .await
        .expect("drained");

        let want: Vec<String> = state
            .lock()
            .expect("lock")
            .items
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        assert!(want.len() > 1_100, "inserts happened: {}", want.len());
        let got = ids(&run.items);
        assert_eq!(first_occurrences(&got), want, "the full set, in order");
        assert_eq!(got.len(), want.len(), "an after-id cursor needs no overlap");
        // Byte-exact: the exact text the API sent for each item.
        for (item, (id, created)) in run.items.iter().zip(&state.lock().expect("lock").items) {
            assert_eq!(item, bet_json(*id, *created).as_bytes());
        }
        let last = want.last().expect("items");
        assert_eq!(run.cursor.as_ref().expect("cursor")["value"], json!(last));
        for req in &state.lock().expect("lock").requests {
            assert_eq!(req.h("authorization"), Some(format!("Bearer {BEARER}")));
        }
    }

    #[tokio::test]
    async fn a_caught_up_poll_asks_conditionally_and_a_304_is_an_empty_page_with_the_same_cursor() {
        let state = Arc::new(Mutex::new(Bets::default()));
        state.lock().expect("lock").insert(30);
        let base = serve(bets_api(state.clone())).await;
        let kind = kind(bets_options(&base, "/v1/bets", "oldest_first"));
        let creds = secrets(BEARER);
        let http = http();

        let first = drain(&kind, &creds, None, |_| {}).await.expect("drained");
        assert_eq!(first.items.len(), 30);
        let cursor = first.cursor.expect("cursor");
        assert!(cursor["etag"].is_string() && cursor["last_modified"].is_string());

        let page = fetch(&kind, &http, &creds, Some(&cursor))
            .await
            .expect("304 page");
        assert_eq!(
            page,
            Page {
                items: vec![],
                cursor: cursor.clone(),
                more: false
            }
        );
        let last = state
            .lock()
            .expect("lock")
            .requests
            .last()
            .cloned()
            .expect("req");
        assert_eq!(last.h("if-none-match").as_deref(), cursor["etag"].as_str());
        assert_eq!(
            last.h("if-modified-since").as_deref(),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );

        state.lock().expect("lock").insert(2);
        let next = drain(&kind, &creds, Some(cursor), |_| {})
            .await
            .expect("drained");
        assert_eq!(ids(&next.items), vec!["31", "32"]);
    }

    #[tokio::test]
    async fn a_newest_first_after_id_api_is_reversed_and_its_cursor_is_the_newest_item() {
        let state = Arc::new(Mutex::new(Bets::default()));
        state.lock().expect("lock").insert(250);
        let base = serve(bets_api(state.clone())).await;
        let kind = kind(bets_options(&base, "/v1/bets_desc", "newest_first"));
        let creds = secrets(BEARER);

        let run = drain(&kind, &creds, None, |page| {
            state.lock().expect("lock").insert(page % 3);
        })
        .await
        .expect("drained");
        let want: Vec<String> = state
            .lock()
            .expect("lock")
            .items
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        assert_eq!(
            ids(&run.items),
            want,
            "oldest first across and within pages"
        );
    }

    // ---- a since API (header key): GET /v1/tx?since=<unix s>&limit=N, `ts > since` ----------

    const API_KEY: &str = "kyc-9f8e7d6c";

    #[derive(Default)]
    struct Ledger {
        /// (seq, ts in ms); served sorted by (ts, seq).
        items: Vec<(u64, i64)>,
    }

    impl Ledger {
        fn push(&mut self, ts_ms: i64) {
            let seq = self.items.len() as u64;
            self.items.push((seq, ts_ms));
        }
        fn max_ts(&self) -> i64 {
            self.items.iter().map(|(_, t)| *t).max().unwrap_or(0)
        }
        fn sorted(&self) -> Vec<(u64, i64)> {
            let mut v = self.items.clone();
            v.sort_by_key(|(seq, ts)| (*ts, *seq));
            v
        }
    }

    fn since_api(state: Arc<Mutex<Ledger>>, unit: TimeUnit) -> Handler {
        Arc::new(move |req: &Req| {
            let st = state.lock().expect("lock");
            if req.h("x-api-key").as_deref() != Some(API_KEY) {
                return Resp::new(401, "{\"error\":\"missing key\"}");
            }
            let since_ms = match (req.q("since"), req.q("updated_after")) {
                (Some(s), _) => s.parse::<i64>().expect("unix seconds") * 1000,
                (_, Some(t)) => parse_rfc3339_ms(&t).expect("rfc3339 since"),
                _ => return Resp::new(400, "{\"error\":\"since required\"}"),
            };
            let limit: usize = req.q("limit").map_or(40, |l| l.parse().expect("limit"));
            let page: Vec<String> = st
                .sorted()
                .into_iter()
                .filter(|(_, ts)| *ts > since_ms)
                .take(limit)
                .map(|(seq, ts)| {
                    let t = match unit {
                        TimeUnit::Seconds => (ts / 1000).to_string(),
                        TimeUnit::Milliseconds => ts.to_string(),
                        TimeUnit::Rfc3339 => format!(
                            "\"{}\"",
                            humantime::format_rfc3339_millis(
                                UNIX_EPOCH + Duration::from_millis(ts as u64)
                            )
                        ),
                    };
                    format!("{{\"id\":\"tx_{seq}\",\"ts\":{t}}}")
                })
                .collect();
            Resp::new(
                200,
                format!("{{\"result\":{{\"transactions\":[{}]}}}}", page.join(",")),
            )
        })
    }

    fn since_options(base: &str, lookback: i64, limit: usize, unit: &str) -> Value {
        json!({
            "url": format!("{base}/v1/tx?since={{since}}&limit={limit}"),
            "auth": { "kind": "header", "name": "X-Api-Key" },
            "items_pointer": "/result/transactions",
            "id_pointer": "/id",
            "time_pointer": "/ts",
            "time_unit": unit,
            "cursor": { "kind": "since", "lookback_seconds": lookback },
        })
    }

    /// 1,000+ items, 1–5 sharing each second (so page boundaries split equal timestamps),
    /// inserts at the newest second (and the next) between pages.
    #[tokio::test]
    async fn a_since_api_yields_every_item_with_equal_timestamps_at_boundaries_and_inserts() {
        for lookback in [1, 2, 300] {
            let state = Arc::new(Mutex::new(Ledger::default()));
            {
                let mut st = state.lock().expect("lock");
                let mut second = 1_700_000_000_i64;
                let mut n = 0_u64;
                while st.items.len() < 1_000 {
                    n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    for _ in 0..1 + (n >> 33) % 5 {
                        st.push(second * 1000);
                    }
                    second += 1;
                }
            }
            let base = serve(since_api(state.clone(), TimeUnit::Seconds)).await;
            let kind = kind(since_options(&base, lookback, 40, "seconds"));
            let creds = secrets(API_KEY);

            let run = drain(&kind, &creds, None, |page| {
                if page > 40 {
                    return;
                }
                let mut st = state.lock().expect("lock");
                let newest = st.max_ts();
                for _ in 0..4 {
                    st.push(newest);
                }
                if page % 3 == 0 {
                    st.push(newest + 1000);
                }
            })
            .await
            .expect("drained");

            let want: Vec<String> = state
                .lock()
                .expect("lock")
                .sorted()
                .iter()
                .map(|(seq, _)| format!("tx_{seq}"))
                .collect();
            assert!(want.len() > 1_100, "inserts happened");
            let got = ids(&run.items);
            let distinct: HashSet<&String> = got.iter().collect();
            assert_eq!(
                distinct.len(),
                want.len(),
                "every item at least once (lookback {lookback})"
            );
            assert_eq!(
                first_occurrences(&got),
                want,
                "the full set in order (lookback {lookback})"
            );
            let cursor = run.cursor.expect("cursor");
            assert_eq!(
                cursor["newest_ms"],
                json!(state.lock().expect("lock").max_ts())
            );

            // Caught up: the next run brings nothing new; a late item inside the lookback
            // window comes with the next run.
            let again = drain(&kind, &creds, Some(cursor.clone()), |_| {})
                .await
                .expect("drained");
            let known: HashSet<String> = want.iter().cloned().collect();
            assert!(ids(&again.items).iter().all(|i| known.contains(i)));
            if lookback == 300 {
                let late = state.lock().expect("lock").max_ts() - 120_000;
                state.lock().expect("lock").push(late);
                let late_id = format!("tx_{}", want.len());
                let run = drain(&kind, &creds, again.cursor, |_| {})
                    .await
                    .expect("drained");
                assert!(
                    ids(&run.items).contains(&late_id),
                    "late item inside the window"
                );
            }
        }
    }

    #[tokio::test]
    async fn items_sharing_the_boundary_second_with_an_exclusive_since_are_not_lost() {
        let state = Arc::new(Mutex::new(Ledger::default()));
        {
            let mut st = state.lock().expect("lock");
            for s in [100, 100, 101, 101, 101, 102] {
                st.push(1_700_000_000_000 + s * 1000);
            }
        }
        let base = serve(since_api(state.clone(), TimeUnit::Rfc3339)).await;
        let kind = kind(json!({
            "url": format!("{base}/v1/tx?updated_after={{since_rfc3339}}&limit=4"),
            "auth": { "kind": "header", "name": "X-Api-Key" },
            "items_pointer": "/result/transactions",
            "id_pointer": "/id",
            "time_pointer": "/ts",
            "time_unit": "rfc3339",
            "cursor": { "kind": "since", "lookback_seconds": 1 },
        }));
        let run = drain(&kind, &secrets(API_KEY), None, |_| {})
            .await
            .expect("drained");
        let got = ids(&run.items);
        // Page 1 ends inside second 101 (tx_2, tx_3); tx_4 shares it and still comes.
        assert_eq!(
            first_occurrences(&got),
            vec!["tx_0", "tx_1", "tx_2", "tx_3", "tx_4", "tx_5"]
        );
    }

    #[tokio::test]
    async fn more_than_a_page_inside_one_second_stops_the_run_instead_of_skipping_items() {
        let state = Arc::new(Mutex::new(Ledger::default()));
        {
            let mut st = state.lock().expect("lock");
            for ms in [1_000_000, 1_000_500, 1_001_200] {
                st.push(ms);
            }
        }
        let base = serve(since_api(state.clone(), TimeUnit::Milliseconds)).await;
        let kind = kind(since_options(&base, 300, 3, "milliseconds"));
        let creds = secrets(API_KEY);
        let err = drain(&kind, &creds, None, |_| {
            // Late items inside the newest second: the window no longer fits in a page.
            let mut st = state.lock().expect("lock");
            if st.items.len() == 3 {
                st.push(1_000_600);
                st.push(1_000_700);
            }
        })
        .await
        .expect_err("fatal");
        assert!(
            matches!(&err, FetchError::Fatal(m) if m.contains("more than one page")),
            "{err:?}"
        );
    }

    // ---- a token API (basic): GET /v2/checks?page_token=<t>, next_page_token in the body ------

    const BASIC: &str = "kyc_user:pa55/w:rd";

    fn token_api(state: Arc<Mutex<Vec<u64>>>) -> Handler {
        Arc::new(move |req: &Req| {
            let st = state.lock().expect("lock");
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(BASIC)
            );
            if req.h("authorization") != Some(want) {
                return Resp::new(401, "{\"error\":\"unauthorized\"}");
            }
            let offset: usize = match req.q("page_token").as_deref() {
                None | Some("") => 0,
                Some(t) => match t.strip_prefix("off:") {
                    Some(o) => o.parse().expect("offset"),
                    None => return Resp::new(400, "{\"error\":\"bad token\"}"),
                },
            };
            let page: Vec<String> = st
                .iter()
                .skip(offset)
                .take(30)
                .map(|id| format!("{{\"id\":\"chk_{id}\",\"status\":\"verified\"}}"))
                .collect();
            let end = offset + page.len();
            let next = if end < st.len() {
                format!("\"off:{end}\"")
            } else {
                "null".into()
            };
            Resp::new(
                200,
                format!(
                    "{{\"results\":[{}],\"next_page_token\":{next}}}",
                    page.join(",")
                ),
            )
        })
    }

    #[tokio::test]
    async fn a_token_api_pages_to_a_null_token_and_the_next_run_asks_for_the_last_page_again() {
        let state = Arc::new(Mutex::new((0..200).collect::<Vec<u64>>()));
        let base = serve(token_api(state.clone())).await;
        let kind = kind(json!({
            "url": format!("{base}/v2/checks?page_token={{cursor}}"),
            "auth": { "kind": "basic" },
            "items_pointer": "/results",
            "id_pointer": "/id",
            "cursor": { "kind": "response_token", "pointer": "/next_page_token" },
        }));
        let creds = secrets(BASIC);
        let run = drain(&kind, &creds, None, |_| {
            let mut st = state.lock().expect("lock");
            let n = st.len() as u64;
            st.push(n);
        })
        .await
        .expect("drained");
        let want = |st: &Vec<u64>| st.iter().map(|i| format!("chk_{i}")).collect::<Vec<_>>();
        assert_eq!(ids(&run.items), want(&state.lock().expect("lock")));

        state.lock().expect("lock").extend([500, 501]);
        let next = drain(&kind, &creds, run.cursor, |_| {})
            .await
            .expect("drained");
        let mut all = ids(&run.items);
        all.extend(ids(&next.items));
        assert_eq!(first_occurrences(&all), want(&state.lock().expect("lock")));
        assert!(ids(&next.items).ends_with(&["chk_500".into(), "chk_501".into()]));
    }

    // ---- a Link-header API (query key): GET /api/events?page=N ------------------------------

    const QUERY_KEY: &str = "q key+/=&s3cret";

    fn link_api(
        state: Arc<Mutex<Vec<u64>>>,
        base: Arc<Mutex<String>>,
        next_host: Option<String>,
    ) -> Handler {
        Arc::new(move |req: &Req| {
            let st = state.lock().expect("lock");
            if req.q("api_key").as_deref() != Some(QUERY_KEY) {
                return Resp::new(401, format!("{{\"error\":\"bad key in {}\"}}", req.target));
            }
            let page_no: usize = req.q("page").map_or(1, |p| p.parse().expect("page"));
            let per = 25;
            let items: Vec<String> = st
                .iter()
                .skip((page_no - 1) * per)
                .take(per)
                .map(|id| format!("{{\"id\":{id},\"kind\":\"deposit\"}}"))
                .collect();
            let body = format!("[{}]", items.join(","));
            // A body-only ETag, as most APIs compute it: it does not see the Link header.
            let etag = etag_of(&body);
            if req.h("if-none-match").as_deref() == Some(etag.as_str()) {
                return Resp::new(304, "");
            }
            let mut resp = Resp::new(200, body).header("ETag", etag);
            let pages = st.len().div_ceil(per);
            let host = next_host
                .clone()
                .unwrap_or_else(|| base.lock().expect("lock").clone());
            let key = pct(QUERY_KEY);
            let last = format!("<{host}/api/events?page={pages}&api_key={key}>; rel=\"last\"");
            if page_no < pages {
                // Alternate absolute and relative targets; the key echoed, as many APIs do.
                let next = if page_no.is_multiple_of(2) && next_host.is_none() {
                    format!("</api/events?api_key={key}&page={}>", page_no + 1)
                } else {
                    format!("<{host}/api/events?page={}&api_key={key}>", page_no + 1)
                };
                resp = resp.header("Link", format!("{last}, {next}; rel=\"next\""));
            } else {
                resp = resp.header("Link", last);
            }
            resp
        })
    }

    fn link_options(base: &str) -> Value {
        json!({
            "url": format!("{base}/api/events?page=1"),
            "auth": { "kind": "query", "name": "api_key" },
            "id_pointer": "/id",
            "cursor": { "kind": "link_next" },
        })
    }

    #[tokio::test]
    async fn a_link_header_api_is_followed_on_its_own_origin_and_the_key_never_reaches_the_cursor()
    {
        let state = Arc::new(Mutex::new((0..300).collect::<Vec<u64>>()));
        let base_cell = Arc::new(Mutex::new(String::new()));
        let base = serve(link_api(state.clone(), base_cell.clone(), None)).await;
        *base_cell.lock().expect("lock") = base.clone();
        let kind = kind(link_options(&base));
        let creds = secrets(QUERY_KEY);
        let run = drain(&kind, &creds, None, |_| {
            let mut st = state.lock().expect("lock");
            let n = st.len() as u64;
            st.push(n);
        })
        .await
        .expect("drained");
        let want = |st: &Vec<u64>| st.iter().map(u64::to_string).collect::<Vec<_>>();
        assert_eq!(
            first_occurrences(&ids(&run.items)),
            want(&state.lock().expect("lock"))
        );
        let cursor = run.cursor.expect("cursor");
        assert_redacted(&cursor.to_string(), QUERY_KEY);
        let next = cursor["next"].as_str().expect("next url");
        assert!(next.starts_with(&base), "{next}");

        // The next run asks for the last page again and continues from it.
        state.lock().expect("lock").extend([900, 901, 902]);
        let again = drain(&kind, &creds, Some(cursor), |_| {})
            .await
            .expect("drained");
        let mut all = ids(&run.items);
        all.extend(ids(&again.items));
        assert_eq!(first_occurrences(&all), want(&state.lock().expect("lock")));
    }

    #[tokio::test]
    async fn a_full_last_link_page_is_asked_again_unconditionally_so_a_new_page_is_not_hidden() {
        let state = Arc::new(Mutex::new((0..50).collect::<Vec<u64>>()));
        let base_cell = Arc::new(Mutex::new(String::new()));
        let base = serve(link_api(state.clone(), base_cell.clone(), None)).await;
        *base_cell.lock().expect("lock") = base.clone();
        let kind = kind(link_options(&base));
        let creds = secrets(QUERY_KEY);
        let http = http();

        // Two full pages: the last one's ETag would not change when item 50 starts page 3.
        let run = drain(&kind, &creds, None, |_| {}).await.expect("drained");
        let cursor = run.cursor.expect("cursor");
        assert!(cursor.get("etag").is_none(), "{cursor}");
        state.lock().expect("lock").push(50);
        let run = drain(&kind, &creds, Some(cursor), |_| {})
            .await
            .expect("drained");
        assert!(ids(&run.items).contains(&"50".to_string()));

        // Now the last page (page 3) is short: a 304 for it proves nothing is new.
        let cursor = run.cursor.expect("cursor");
        assert!(cursor["etag"].is_string(), "{cursor}");
        let page = fetch(&kind, &http, &creds, Some(&cursor))
            .await
            .expect("304");
        assert_eq!(
            (page.items.len(), page.more, &page.cursor),
            (0, false, &cursor)
        );
    }

    #[tokio::test]
    async fn a_link_to_another_host_or_port_is_refused_before_any_request_goes_there() {
        let state = Arc::new(Mutex::new((0..60).collect::<Vec<u64>>()));
        // The "other host": a listener that records whether anything reached it.
        let hits = Arc::new(Mutex::new(0_u32));
        let hits2 = hits.clone();
        let elsewhere = serve(Arc::new(move |_: &Req| {
            *hits2.lock().expect("lock") += 1;
            Resp::new(200, "[]")
        }))
        .await;
        let port = elsewhere.rsplit(':').next().expect("port").to_string();
        for target in [
            elsewhere.clone(),
            format!("http://localhost:{port}"),
            "https://evil.example".to_string(),
        ] {
            let base_cell = Arc::new(Mutex::new(String::new()));
            let base = serve(link_api(
                state.clone(),
                base_cell.clone(),
                Some(target.clone()),
            ))
            .await;
            *base_cell.lock().expect("lock") = base.clone();
            let kind = kind(link_options(&base));
            let err = drain(&kind, &secrets(QUERY_KEY), None, |_| {})
                .await
                .expect_err("refused");
            let m = message(&err);
            assert!(
                matches!(err, FetchError::Fatal(_)) && m.contains("refusing"),
                "{target}: {m}"
            );
            assert_redacted(&m, QUERY_KEY);
        }
        assert_eq!(*hits.lock().expect("lock"), 0);

        // Userinfo and backslash tricks never pass as the same origin.
        let kind = kind(link_options("http://127.0.0.1:8080"));
        for evil in [
            "http://127.0.0.1:8080@evil.example/x",
            "http://evil.example\\@127.0.0.1:8080/x",
            "/\\evil.example/x",
            "//evil.example/x",
            "javascript:alert(1)",
        ] {
            let ok = resolve("http://127.0.0.1:8080/a/b?page=1", evil)
                .and_then(|u| split_url(&u).map(|p| p.origin == kind.origin));
            assert!(!matches!(ok, Ok(true)), "{evil} accepted");
        }
        assert_eq!(
            resolve("http://h:1/a/b?x=1", "c?page=2").as_deref(),
            Ok("http://h:1/a/c?page=2")
        );
        assert_eq!(
            resolve("http://h:1/a/b?x=1", "?page=2").as_deref(),
            Ok("http://h:1/a/b?page=2")
        );
    }

    // ---- statuses, malformed bodies, the credential in errors -------------------------------

    fn echo_api() -> Handler {
        Arc::new(|req: &Req| {
            // Every error body echoes the request, credential included, as careless APIs do.
            let echo = format!(
                "{} key={}",
                req.target,
                req.q("api_key").unwrap_or_default()
            );
            match req.path.as_str() {
                "/429" => Resp::new(429, format!("{{\"error\":\"slow down {echo}\"}}"))
                    .header("Retry-After", "7"),
                "/500" => Resp::new(500, format!("{{\"error\":\"boom {echo}\"}}")),
                "/401" => Resp::new(401, format!("{{\"error\":\"bad key {echo}\"}}")),
                "/403" => Resp::new(403, format!("{{\"error\":\"{echo}\"}}")),
                "/404" => Resp::new(404, format!("{{\"error\":\"{echo}\"}}")),
                "/409" => Resp::new(409, format!("{{\"error\":\"{echo}\"}}")),
                "/302" => Resp::new(302, "").header("Location", "http://evil.example/"),
                "/notjson" => Resp::new(200, format!("<html>{echo}</html>")),
                "/notarray" => Resp::new(200, "{\"data\":{\"id\":1}}"),
                "/noid" => Resp::new(200, "{\"data\":[{\"id\":1},{\"name\":\"x\"}]}"),
                "/badtime" => Resp::new(200, "{\"data\":[{\"id\":1,\"t\":\"yesterday\"}]}"),
                "/missing" => Resp::new(200, "{\"items\":[]}"),
                "/badtoken" => Resp::new(200, "{\"data\":[],\"next\":{\"a\":1}}"),
                _ => Resp::new(200, "{\"data\":[]}"),
            }
        })
    }

    fn echo_kind(base: &str, path: &str, extra: Value) -> HttpJson {
        let mut options = json!({
            "url": format!("{base}{path}?after={{cursor}}"),
            "auth": { "kind": "query", "name": "api_key" },
            "items_pointer": "/data",
            "id_pointer": "/id",
            "cursor": { "kind": "item_field" },
        });
        if let (Some(o), Value::Object(e)) = (options.as_object_mut(), extra) {
            o.extend(e);
        }
        kind(options)
    }

    #[tokio::test]
    async fn statuses_map_to_the_runner_s_errors_and_never_carry_the_credential() {
        let base = serve(echo_api()).await;
        let http = http();
        let creds = secrets(QUERY_KEY);
        let go = |path: &'static str| {
            let kind = echo_kind(&base, path, json!({}));
            let http = &http;
            let creds = &creds;
            async move { fetch(&kind, http, creds, None).await.expect_err("an error") }
        };

        let e = go("/429").await;
        assert!(
            matches!(&e, FetchError::Throttled { retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
            "{e:?}"
        );
        assert_redacted(&message(&e), QUERY_KEY);
        assert!(message(&e).contains("<redacted>"));

        let e = go("/500").await;
        assert!(matches!(&e, FetchError::Transient(_)), "{e:?}");
        assert_redacted(&message(&e), QUERY_KEY);

        for (path, status) in [
            ("/401", "401"),
            ("/403", "403"),
            ("/404", "404"),
            ("/409", "409"),
            ("/302", "302"),
        ] {
            let e = go(path).await;
            assert!(
                matches!(&e, FetchError::Fatal(m) if m.contains(status)),
                "{path}: {e:?}"
            );
            assert_redacted(&message(&e), QUERY_KEY);
        }

        for path in ["/notjson", "/notarray", "/noid", "/missing"] {
            let e = go(path).await;
            assert!(matches!(&e, FetchError::Fatal(_)), "{path}: {e:?}");
            assert_redacted(&message(&e), QUERY_KEY);
        }
        let e = fetch(
            &echo_kind(
                &base,
                "/badtime",
                json!({"time_pointer": "/t", "time_unit": "rfc3339"}),
            ),
            &http,
            &creds,
            None,
        )
        .await
        .expect_err("bad time");
        assert!(
            matches!(&e, FetchError::Fatal(m) if m.contains("time_pointer")),
            "{e:?}"
        );

        // A network error names the URL, which carries the query credential.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let e = fetch(&echo_kind(&url, "/x", json!({})), &http, &creds, None)
            .await
            .expect_err("network");
        assert!(matches!(&e, FetchError::Transient(_)), "{e:?}");
        assert_redacted(&message(&e), QUERY_KEY);

        // Bearer and basic credentials echoed in a body are scrubbed too.
        let state = Arc::new(Mutex::new(Bets::default()));
        let bets = serve(bets_api(state)).await;
        let kind = kind(bets_options(&bets, "/v1/bets", "oldest_first"));
        let wrong = format!("{BEARER}-old");
        let e = fetch(&kind, &http, &secrets(&wrong), None)
            .await
            .expect_err("401");
        assert!(
            matches!(&e, FetchError::Fatal(m) if m.contains("401")),
            "{e:?}"
        );
        assert_redacted(&message(&e), &wrong);
    }

    #[tokio::test]
    async fn items_are_byte_exact_and_an_id_repeated_within_a_page_comes_once() {
        let body = "{\"data\":[ {\"id\":1,\"note\":\"caf\\u00e9\"} ,{ \"id\" : \"2\" , \"x\" : [1,2] },\n{\"id\":1,\"again\":true}, {\"id\":3} ],\"next\":null}";
        let base = serve(Arc::new(move |_: &Req| Resp::new(200, body))).await;
        let kind = kind(json!({
            "url": format!("{base}/feed?t={{cursor}}"),
            "auth": { "kind": "none" },
            "items_pointer": "/data",
            "id_pointer": "/id",
            "cursor": { "kind": "response_token", "pointer": "/next" },
        }));
        let page = fetch(&kind, &http(), &[], None).await.expect("page");
        let items: Vec<&str> = page
            .items
            .iter()
            .map(|i| std::str::from_utf8(i).expect("utf8"))
            .collect();
        assert_eq!(
            items,
            vec![
                "{\"id\":1,\"note\":\"caf\\u00e9\"}",
                "{ \"id\" : \"2\" , \"x\" : [1,2] }",
                "{\"id\":3}"
            ]
        );
        assert!(!page.more, "a null token is the end");
    }

    // ---- configuration ----------------------------------------------------------------------

    #[test]
    fn options_are_validated_at_config_time_and_errors_name_the_field() {
        let base = json!({
            "url": "https://api.example.com/v1/bets?after={cursor}",
            "auth": { "kind": "bearer" },
            "items_pointer": "/data",
            "cursor": { "kind": "item_field", "pointer": "/id" },
        });
        assert!(HttpJson::from_options(&base).is_ok());
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            HttpJson::from_options(&o).err().unwrap_or_default()
        };
        let cases: Vec<(String, &str)> = vec![
            (with("page_size", json!(100)), "page_size"),
            (with("max_pages_per_run", json!(5)), "max_pages_per_run"),
            (
                with(
                    "url",
                    json!("https://api.example.com/v1?x={cursor}&y={page}"),
                ),
                "{page}",
            ),
            (
                with("url", json!("https://{cursor}.example.com/v1")),
                "url: placeholders",
            ),
            (with("url", json!("ftp://api.example.com/{cursor}")), "url:"),
            (
                with("url", json!("https://user:pw@api.example.com/{cursor}")),
                "url:",
            ),
            (with("url", json!("https://api.example.com/v1")), "{cursor}"),
            (
                with(
                    "url",
                    json!("https://api.example.com/v1?since={since}&c={cursor}"),
                ),
                "url:",
            ),
            (with("url", json!(42)), "url:"),
            (
                with("auth", json!({"kind": "bearer", "name": "x"})),
                "auth:",
            ),
            (with("auth", json!({"kind": "header"})), "auth:"),
            (
                with("auth", json!({"kind": "header", "name": "X Key"})),
                "auth.name",
            ),
            (with("auth", json!({"kind": "digest"})), "auth:"),
            (with("items_pointer", json!("data")), "items_pointer"),
            (with("order", json!("random")), "order:"),
            (with("time_unit", json!("seconds")), "time_unit"),
            (with("time_pointer", json!("/ts")), "time_unit"),
            (
                with("cursor", json!({"kind": "item_field"})),
                "cursor.pointer",
            ),
            (with("cursor", json!({"kind": "since"})), "time_pointer"),
            (
                with("cursor", json!({"kind": "link_next", "pointer": "/x"})),
                "cursor:",
            ),
        ];
        for (err, needle) in cases {
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
        }

        let since = json!({
            "url": "https://api.example.com/v1?since={since}",
            "auth": { "kind": "none" },
            "time_pointer": "/ts",
            "time_unit": "seconds",
            "cursor": { "kind": "since", "lookback_seconds": 0 },
        });
        let e = HttpJson::from_options(&since).err().unwrap_or_default();
        assert!(e.contains("cursor.lookback_seconds"), "{e}");
        let mut no_time = since.clone();
        no_time["cursor"] = json!({"kind": "since"});
        no_time.as_object_mut().map(|o| o.remove("time_pointer"));
        no_time.as_object_mut().map(|o| o.remove("time_unit"));
        let e = HttpJson::from_options(&no_time).err().unwrap_or_default();
        assert!(e.contains("time_pointer"), "{e}");

        let link = json!({
            "url": "https://api.example.com/v1/events",
            "auth": { "kind": "none" },
            "cursor": { "kind": "link_next" },
            "order": "newest_first",
        });
        let e = HttpJson::from_options(&link).err().unwrap_or_default();
        assert!(e.contains("order:"), "{e}");

        assert_eq!(
            crate::poll::kinds::build("http_json", &base).map(|k| k.name()),
            Ok(NAME)
        );
    }

    #[test]
    fn template_placeholders_are_encoded_and_times_parse() {
        let k = kind(json!({
            "url": "https://api.example.com/v1?since={since}&at={since_rfc3339}",
            "auth": { "kind": "none" },
            "time_pointer": "/ts",
            "time_unit": "seconds",
            "cursor": { "kind": "since" },
        }));
        assert_eq!(
            k.fill("", 1_700_000_000),
            "https://api.example.com/v1?since=1700000000&at=2023-11-14T22%3A13%3A20Z"
        );
        assert_eq!(pct("a b/c+d=é"), "a%20b%2Fc%2Bd%3D%C3%A9");
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-15T00:13:20.25+02:00"),
            Some(1_700_000_000_250)
        );
        assert_eq!(parse_rfc3339_ms("2023-11-14"), None);
        assert_eq!(
            strip_param("http://h/x?page=2&api_key=k%20y&b=1", "api_key"),
            "http://h/x?page=2&b=1"
        );
    }
}
