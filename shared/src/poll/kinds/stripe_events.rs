//! `stripe_events`: Stripe's List Events API (`GET {api_base}/v1/events`), walked oldest
//! first, each Event object handed over byte-exact so the `stripe` provider's `extract` gives
//! it the same dedupe key (`evt_…`) as the same event received by webhook.
//!
//! Credential: the first live `poll.secrets` entry, sent as `Authorization: Bearer <key>`.
//! Use a **restricted key** with only the "Events: read" permission (`rak_event_read`), not
//! the account's secret key: the poller needs nothing else.
//!
//! How Stripe lists (docs.stripe.com/api/pagination, /api/events/list): objects come newest
//! first; `ending_before=<id>` returns the page *adjacent* to `<id>` on its newer side (the
//! documented "previous page": with more than `limit` newer events, the OLDEST `limit` of them,
//! still newest first), `has_more` saying whether newer ones remain; `starting_after=<id>`
//! returns the adjacent older page; `created[gte]` and `types[]` filter; events are kept 30
//! days, and an unknown cursor id is answered `resource_missing`.
//!
//! The cursor (JSON, stored by the runner only after the items are queued):
//! - `{"after": "evt_…", "created": <unix>}`: every event up to and including `evt_…` (the
//!   newest one handed over) is queued. Next fetch: `ending_before=evt_…`, whose answer is
//!   reversed to oldest first; the cursor moves to the newest event of the page. Gap-free by
//!   construction: each page is adjacent to the previous one.
//! - `{"after": null, "created_gte": <unix>}`: nothing queued yet from `created_gte` on. The
//!   oldest such event is found by walking **down** from the newest with
//!   `created[gte]=…&starting_after=…` (pages that hand over no items, the position kept as
//!   `"starting_after": "evt_…", "starting_after_created": <unix>`); the last page (`has_more:
//!   false`) holds the oldest events: it is handed over reversed and the cursor becomes
//!   `{"after": <its newest>}`, from where the walk goes up as above. Events created during the
//!   walk down are newer than all of it and are met on the way up.
//!
//! First run: `start = "now"` (default) asks for the single newest event (`limit=1`) and starts
//! after it without handing over history (none yet: `created_gte` = now − `overlap_seconds`,
//! covering our clock running ahead of Stripe's); `start = { lookback_seconds = N }` backfills
//! from `created_gte` = now − N as above.
//!
//! Retention: when Stripe no longer knows the `after` event (`resource_missing`) and the
//! cursor's `created` says it is at least 29 days old, the walk restarts from `created_gte` =
//! its `created` − `overlap_seconds`; the overlap is re-sent and dedupe absorbs it. The age
//! alone never triggers the restart: while Stripe still lists the event, `ending_before` is
//! exact, and restarting from an event Stripe still returns would hand the same page over
//! forever. A `resource_missing` for a younger cursor event is fatal: the key belongs to
//! another account or mode, or the account's test data was deleted; resetting the cursor is
//! the operator's call.
//!
//! Assumed, as documented but not observable in the docs' examples: Stripe positions a cursor
//! id in its whole list (the `types[]` filter applies after), orders events of the same second
//! as it created them, and shows a new event above every existing one. An event that became
//! visible below the cursor after the cursor passed it would be missed by any `ending_before`
//! walk; a periodic `start = { lookback_seconds }` reconciliation source would catch it.
//!
//! Options: `api_base` (default `https://api.stripe.com`), `types` (up to 20 event types, sent
//! as `types[]`), `page_size` (1–100, default 100), `start`, `overlap_seconds` (default 300).

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::OptionsError;
use crate::poll::{classify, FetchContext, FetchError, Page, PollKind};
use crate::ports::http::{HttpError, HttpRequest, HttpResponse};

pub const NAME: &str = "stripe_events";

const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// Stripe keeps events for 30 days.
const RETENTION_SECS: i64 = 30 * 86_400;
/// A `resource_missing` for a cursor event at least this old is taken as expiry.
const EXPIRED_AFTER_SECS: i64 = RETENTION_SECS - 86_400;
/// Stripe accepts at most 20 entries in `types[]`.
const MAX_TYPES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Now,
    Lookback { seconds: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct StripeEvents {
    api_base: String,
    types: Vec<String>,
    page_size: u32,
    start: Start,
    overlap_seconds: i64,
}

/// The options table as written; each field is then read on its own so an error names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    api_base: Option<Value>,
    types: Option<Value>,
    page_size: Option<Value>,
    start: Option<Value>,
    overlap_seconds: Option<Value>,
}

fn field<T: DeserializeOwned>(name: &str, value: Option<Value>) -> Result<Option<T>, OptionsError> {
    value
        .map(|v| {
            serde_json::from_value(v).map_err(|e| OptionsError::kind(NAME, format!("{name}: {e}")))
        })
        .transpose()
}

fn bad(name: &str, why: &str) -> OptionsError {
    OptionsError::kind(NAME, format!("{name}: {why}"))
}

/// `api_base` without its trailing `/`: an http(s) URL without query or fragment.
fn api_base(value: Option<String>) -> Result<String, OptionsError> {
    let api_base = value.unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
    let api_base = api_base.trim_end_matches('/').to_owned();
    if !(api_base.starts_with("https://") || api_base.starts_with("http://"))
        || api_base.contains(['?', '#'])
    {
        return Err(bad(
            "api_base",
            "must be an http(s) URL without query or fragment",
        ));
    }
    Ok(api_base)
}

/// `types`: left out (every type), or 1 to [`MAX_TYPES`] non-empty event types.
fn event_types(value: Option<Vec<String>>) -> Result<Vec<String>, OptionsError> {
    let types = match value {
        Some(t) if t.is_empty() => {
            return Err(bad(
                "types",
                "list at least one event type, or leave it out",
            ))
        }
        t => t.unwrap_or_default(),
    };
    if types.len() > MAX_TYPES {
        return Err(bad("types", "Stripe accepts at most 20 event types"));
    }
    if types.iter().any(|t| t.trim().is_empty()) {
        return Err(bad("types", "an event type is empty"));
    }
    Ok(types)
}

/// `start`: `"now"` (the default) or `{ lookback_seconds = N }` within Stripe's retention.
fn start(value: Option<Value>) -> Result<Start, OptionsError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lookback {
        lookback_seconds: u64,
    }
    match value {
        None => Ok(Start::Now),
        Some(Value::String(s)) if s == "now" => Ok(Start::Now),
        Some(Value::Object(table)) => {
            let l: Lookback = serde_json::from_value(Value::Object(table))
                .map_err(|e| bad("start", &e.to_string()))?;
            match i64::try_from(l.lookback_seconds) {
                Ok(seconds) if (1..=RETENTION_SECS).contains(&seconds) => {
                    Ok(Start::Lookback { seconds })
                }
                _ => Err(bad(
                    "start.lookback_seconds",
                    "must be between 1 and 2592000 (Stripe keeps events 30 days)",
                )),
            }
        }
        Some(_) => Err(bad("start", "must be \"now\" or { lookback_seconds = N }")),
    }
}

impl StripeEvents {
    pub(crate) fn from_options(options: &Value) -> Result<Self, OptionsError> {
        let raw: RawOptions = if options.is_null() {
            RawOptions::deserialize(json!({}))
        } else {
            RawOptions::deserialize(options)
        }
        .map_err(|e| OptionsError::kind(NAME, e))?;
        let api_base = api_base(field("api_base", raw.api_base)?)?;
        let types = event_types(field("types", raw.types)?)?;
        let page_size = field::<u32>("page_size", raw.page_size)?.unwrap_or(100);
        if !(1..=100).contains(&page_size) {
            return Err(bad("page_size", "must be between 1 and 100"));
        }
        let start = start(raw.start)?;
        let overlap = field::<u32>("overlap_seconds", raw.overlap_seconds)?.unwrap_or(300);
        if i64::from(overlap) > RETENTION_SECS {
            return Err(bad("overlap_seconds", "must be at most 2592000"));
        }
        Ok(Self {
            api_base,
            types,
            page_size,
            start,
            overlap_seconds: i64::from(overlap),
        })
    }

    /// `GET /v1/events` with `params`, the page size and the type filter.
    fn request(
        &self,
        ctx: &FetchContext<'_>,
        limit: u32,
        params: &[(&str, String)],
    ) -> Result<HttpRequest, FetchError> {
        let key = ctx.credential()?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        for (name, value) in params {
            query.append_pair(name, value);
        }
        for t in &self.types {
            query.append_pair("types[]", t);
        }
        let url = format!("{}/v1/events?{}", self.api_base, query.finish());
        Ok(HttpRequest::get(url, ctx.timeout).header("Authorization", format!("Bearer {key}")))
    }

    async fn first_run(&self, ctx: &FetchContext<'_>, now: i64) -> Result<Page, FetchError> {
        match self.start {
            Start::Lookback { seconds } => self.scan(ctx, now, now - seconds, None).await,
            Start::Now => {
                let resp = ctx.http.send(self.request(ctx, 1, &[])?).await;
                let body = classify(resp)?.body;
                let list = parse_list(&body)?;
                let cursor = match list.data.first() {
                    Some(newest) => Cursor::After(newest.anchor()),
                    None => Cursor::Scan {
                        gte: now - self.overlap_seconds,
                        below: None,
                    },
                };
                Ok(Page {
                    items: Vec::new(),
                    cursor: cursor.to_json(),
                    more: false,
                })
            }
        }
    }

    /// The page just newer than `after`, oldest first.
    async fn follow(
        &self,
        ctx: &FetchContext<'_>,
        now: i64,
        after: Anchor,
    ) -> Result<Page, FetchError> {
        let req = self.request(ctx, self.page_size, &[("ending_before", after.id.clone())])?;
        let resp = ctx.http.send(req).await;
        if let Some(fallback) = self.when_anchor_gone(&resp, "ending_before", now, &after)? {
            return Ok(fallback);
        }
        let body = classify(resp)?.body;
        let list = parse_list(&body)?;
        let Some(newest) = list.data.first() else {
            return Ok(Page {
                items: Vec::new(),
                cursor: Cursor::After(after).to_json(),
                more: false,
            });
        };
        Ok(Page {
            cursor: Cursor::After(newest.anchor()).to_json(),
            items: oldest_first(&list),
            more: list.has_more,
        })
    }

    /// One step of the walk down from the newest event with `created >= gte`; at the bottom,
    /// the oldest page is handed over and the cursor switches to [`Cursor::After`].
    async fn scan(
        &self,
        ctx: &FetchContext<'_>,
        now: i64,
        gte: i64,
        below: Option<Anchor>,
    ) -> Result<Page, FetchError> {
        let mut params = vec![("created[gte]", gte.to_string())];
        if let Some(b) = &below {
            params.push(("starting_after", b.id.clone()));
        }
        let resp = ctx
            .http
            .send(self.request(ctx, self.page_size, &params)?)
            .await;
        if let Some(b) = &below {
            if let Some(restart) = self.when_anchor_gone(&resp, "starting_after", now, b)? {
                return Ok(restart);
            }
        }
        let body = classify(resp)?.body;
        let list = parse_list(&body)?;
        match (list.data.last(), list.has_more) {
            (Some(oldest), true) => Ok(Page {
                items: Vec::new(),
                cursor: Cursor::Scan {
                    gte,
                    below: Some(oldest.anchor()),
                }
                .to_json(),
                more: true,
            }),
            (None, true) => Err(FetchError::Fatal(format!(
                "{NAME}: Stripe answered has_more with no events"
            ))),
            (Some(_), false) => {
                let cursor = match list.data.first() {
                    Some(newest) => Cursor::After(newest.anchor()),
                    None => Cursor::Scan { gte, below: None },
                };
                Ok(Page {
                    items: oldest_first(&list),
                    cursor: cursor.to_json(),
                    // The pages walked past on the way down are newer than this one.
                    more: below.is_some(),
                })
            }
            // Nothing at or after `gte` yet.
            (None, false) => match below {
                None => Ok(Page {
                    items: Vec::new(),
                    cursor: Cursor::Scan { gte, below: None }.to_json(),
                    more: false,
                }),
                // The event we stood on was the oldest, and it was in a page we did not hand
                // over (older ones expired meanwhile): walk again from its time.
                Some(b) => Ok(Page {
                    items: Vec::new(),
                    cursor: Cursor::Scan {
                        gte: b.created,
                        below: None,
                    }
                    .to_json(),
                    more: true,
                }),
            },
        }
    }

    /// Stripe no longer knows the event the cursor stands on: past retention, walk again from
    /// its time (an empty page, one request per fetch); inside retention, fatal.
    fn when_anchor_gone(
        &self,
        resp: &Result<HttpResponse, HttpError>,
        param: &str,
        now: i64,
        anchor: &Anchor,
    ) -> Result<Option<Page>, FetchError> {
        let Ok(r) = resp else { return Ok(None) };
        if !resource_missing(r, param) {
            return Ok(None);
        }
        let age = now - anchor.created;
        if age >= EXPIRED_AFTER_SECS {
            let gte = match param {
                // Everything older than the lost event of a walk down is lost with it.
                "starting_after" => anchor.created,
                _ => anchor.created - self.overlap_seconds,
            };
            return Ok(Some(Page {
                items: Vec::new(),
                cursor: Cursor::Scan { gte, below: None }.to_json(),
                more: true,
            }));
        }
        let why = format!(
            "{NAME}: Stripe does not know the cursor's event {} although it is only {}h old \
             (events are kept 30 days): is the key for another account or mode? Reset the \
             source's cursor to start again (`inlet cursor <source> --reset`)",
            anchor.id,
            age / 3600
        );
        match classify(Ok(r.clone())) {
            Err(FetchError::Fatal(m)) => Err(FetchError::Fatal(format!("{why}: {m}"))),
            Err(other) => Err(other),
            Ok(_) => Err(FetchError::Fatal(why)),
        }
    }
}

/// Stripe's error body: `{"error": {"code": "resource_missing", "param": "ending_before", …}}`.
fn resource_missing(resp: &HttpResponse, param: &str) -> bool {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: Option<String>,
        param: Option<String>,
    }
    matches!(resp.status, 400 | 404)
        && serde_json::from_slice::<Body>(&resp.body).is_ok_and(|b| {
            b.error.code.as_deref() == Some("resource_missing")
                && b.error.param.as_deref().is_none_or(|p| p == param)
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Anchor {
    id: String,
    created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// Everything up to and including this event is queued.
    After(Anchor),
    /// Nothing queued from `created >= gte` on; `below` is how far the walk down has come.
    Scan { gte: i64, below: Option<Anchor> },
}

impl Cursor {
    fn to_json(&self) -> Value {
        match self {
            Cursor::After(a) => json!({"after": a.id, "created": a.created}),
            Cursor::Scan { gte, below: None } => json!({"after": null, "created_gte": gte}),
            Cursor::Scan {
                gte,
                below: Some(b),
            } => json!({
                "after": null,
                "created_gte": gte,
                "starting_after": b.id,
                "starting_after_created": b.created,
            }),
        }
    }

    fn parse(value: &Value) -> Result<Self, FetchError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repr {
            after: Option<String>,
            created: Option<i64>,
            created_gte: Option<i64>,
            starting_after: Option<String>,
            starting_after_created: Option<i64>,
        }
        let not_understood =
            |why: &str| FetchError::Fatal(format!("{NAME}: cursor {value} not understood: {why}"));
        let r = Repr::deserialize(value).map_err(|e| not_understood(&e.to_string()))?;
        match r {
            Repr {
                after: Some(id),
                created: Some(created),
                created_gte: None,
                starting_after: None,
                starting_after_created: None,
            } => Ok(Cursor::After(Anchor { id, created })),
            Repr {
                after: None,
                created: None,
                created_gte: Some(gte),
                starting_after,
                starting_after_created,
            } => match (starting_after, starting_after_created) {
                (None, None) => Ok(Cursor::Scan { gte, below: None }),
                (Some(id), Some(created)) => Ok(Cursor::Scan {
                    gte,
                    below: Some(Anchor { id, created }),
                }),
                _ => Err(not_understood(
                    "starting_after and starting_after_created go together",
                )),
            },
            _ => Err(not_understood(
                "expected {\"after\": id, \"created\": t} or {\"after\": null, \"created_gte\": t}",
            )),
        }
    }
}

/// One element of `data`: its exact bytes and what the walk needs from it.
struct Listed<'a> {
    raw: &'a RawValue,
    id: String,
    created: i64,
}

impl Listed<'_> {
    fn anchor(&self) -> Anchor {
        Anchor {
            id: self.id.clone(),
            created: self.created,
        }
    }
}

struct List<'a> {
    /// Newest first, as Stripe lists.
    data: Vec<Listed<'a>>,
    has_more: bool,
}

fn oldest_first(list: &List<'_>) -> Vec<Vec<u8>> {
    list.data
        .iter()
        .rev()
        .map(|e| e.raw.get().as_bytes().to_vec())
        .collect()
}

fn parse_list(body: &[u8]) -> Result<List<'_>, FetchError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        object: String,
        #[serde(borrow)]
        data: Vec<&'a RawValue>,
        has_more: bool,
    }
    #[derive(Deserialize)]
    struct Head {
        id: String,
        object: String,
        created: i64,
    }
    let fatal = |why: String| {
        FetchError::Fatal(format!(
            "{NAME}: the answer is not Stripe's list of events: {why}"
        ))
    };
    let b: Body<'_> = serde_json::from_slice(body).map_err(|e| fatal(e.to_string()))?;
    if b.object != "list" {
        return Err(fatal(format!("object is {:?}, not \"list\"", b.object)));
    }
    let data = b
        .data
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let head: Head =
                serde_json::from_str(raw.get()).map_err(|e| fatal(format!("data[{i}]: {e}")))?;
            if head.object != "event" || head.id.is_empty() {
                return Err(fatal(format!(
                    "data[{i}] is not an event with an id (object {:?})",
                    head.object
                )));
            }
            Ok(Listed {
                raw,
                id: head.id,
                created: head.created,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(List {
        data,
        has_more: b.has_more,
    })
}

#[async_trait]
impl PollKind for StripeEvents {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(
        &self,
        ctx: &FetchContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<Page, FetchError> {
        let now = ctx.now_ms.div_euclid(1000);
        match cursor.map(Cursor::parse).transpose()? {
            None => self.first_run(ctx, now).await,
            Some(Cursor::After(a)) => self.follow(ctx, now, a).await,
            Some(Cursor::Scan { gte, below }) => self.scan(ctx, now, gte, below).await,
        }
    }
}

// The fake speaks real HTTP through the real client, which needs `http-fetch`.
#[cfg(all(test, feature = "http-fetch"))]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::adapters::http_client::ReqwestHttp;
    use crate::request::{Headers, InboundRequest};
    use crate::secret::Secret;

    const KEY: &str = "rk_test_51SecretKeyValue0123456789abcdef";
    /// "Now" for every test, in Unix seconds.
    const NOW: i64 = 1_750_000_000;
    const DAY: i64 = 86_400;

    // ---- A fake Stripe: /v1/events as documented, on real loopback HTTP. ----

    struct Ev {
        id: String,
        created: i64,
        ty: String,
        /// The exact JSON Stripe would send for this event (pretty, with escapes).
        body: String,
    }

    enum Fault {
        Status {
            status: u16,
            retry_after: Option<u64>,
            body: String,
        },
        /// 200 with this body.
        Body(String),
    }

    #[derive(Default)]
    struct Fake {
        key: String,
        /// Oldest first; Stripe lists them newest first.
        events: Vec<Ev>,
        seq: u64,
        /// Answered, in order, instead of the next requests.
        faults: VecDeque<Fault>,
        /// Every request's query pairs and Authorization header.
        requests: Vec<Recorded>,
    }

    /// A request's query pairs and its Authorization header.
    type Recorded = (Vec<(String, String)>, Option<String>);

    type Shared = Arc<Mutex<Fake>>;

    /// Stripe ids are random, not ordered: the kind must not sort by them.
    fn scramble(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn stripe_error(message: &str, extra: &str) -> String {
        format!(
            "{{\n  \"error\": {{\n    {extra}\"message\": \"{message}\",\n    \"type\": \"invalid_request_error\"\n  }}\n}}\n"
        )
    }

    impl Fake {
        fn new() -> Self {
            Self {
                key: KEY.to_owned(),
                ..Self::default()
            }
        }

        /// A new event, newer than every other (Stripe appends; equal `created` allowed).
        fn push(&mut self, created: i64, ty: &str) -> String {
            assert!(
                self.events.last().is_none_or(|e| e.created <= created),
                "events are created in time order"
            );
            self.seq += 1;
            let n = self.seq;
            let id = format!("evt_1{:016x}", scramble(n));
            let body = format!(
                "{{\n  \"id\": \"{id}\",\n  \"object\": \"event\",\n  \"api_version\": \"2024-06-20\",\n  \"created\": {created},\n  \"data\": {{\n    \"object\": {{\"id\": \"ch_{n}\", \"object\": \"charge\", \"amount\": {amount}, \"currency\": \"eur\", \"customer\": \"cus_{n}\", \"description\": \"caf\\u00e9 \\\"n\\u00b0{n}\\\"\"}}\n  }},\n  \"livemode\": false,\n  \"pending_webhooks\": 1,\n  \"request\": {{\"id\": null, \"idempotency_key\": null}},\n  \"type\": \"{ty}\"\n}}",
                amount = 100 + n
            );
            self.events.push(Ev {
                id: id.clone(),
                created,
                ty: ty.to_owned(),
                body,
            });
            id
        }

        fn push_many(&mut self, count: usize, created: impl Fn(usize) -> i64) {
            for i in 0..count {
                self.push(created(i), "charge.succeeded");
            }
        }

        fn missing(id: &str, param: &str) -> Answer {
            (
                404,
                None,
                stripe_error(
                    &format!("No such event: '{id}'"),
                    &format!(
                        "\"code\": \"resource_missing\",\n    \"doc_url\": \"https://stripe.com/docs/error-codes/resource-missing\",\n    \"param\": \"{param}\",\n    "
                    ),
                ),
            )
        }

        fn handle(&mut self, head: &str) -> Answer {
            let (path, pairs, auth) = parse_head(head);
            self.requests.push((pairs.clone(), auth.clone()));
            match self.faults.pop_front() {
                Some(Fault::Status {
                    status,
                    retry_after,
                    body,
                }) => return (status, retry_after, body),
                Some(Fault::Body(body)) => return (200, None, body),
                None => {}
            }
            if path != "/v1/events" {
                let msg = format!("Unrecognized request URL (GET: {path}).");
                return (404, None, stripe_error(&msg, ""));
            }
            if auth.as_deref() != Some(&format!("Bearer {}", self.key)) {
                return invalid_key(auth.as_deref());
            }
            match ListQuery::parse(&pairs) {
                Ok(q) => self.list(&q),
                Err(refusal) => refusal,
            }
        }

        /// One page of `/v1/events` as Stripe lists it, newest first.
        fn list(&self, q: &ListQuery) -> Answer {
            let wanted = |e: &&Ev| {
                (q.types.is_empty() || q.types.contains(&e.ty))
                    && q.gte.is_none_or(|g| e.created >= g)
            };
            let position = |id: &str| self.events.iter().position(|e| e.id == id);
            // Candidates in the direction of travel, nearest the cursor first.
            let candidates: Vec<&Ev> = if let Some(id) = &q.ending_before {
                let Some(p) = position(id) else {
                    return Self::missing(id, "ending_before");
                };
                self.events[p + 1..].iter().filter(wanted).collect()
            } else if let Some(id) = &q.starting_after {
                let Some(p) = position(id) else {
                    return Self::missing(id, "starting_after");
                };
                self.events[..p].iter().rev().filter(wanted).collect()
            } else {
                self.events.iter().rev().filter(wanted).collect()
            };
            let has_more = candidates.len() > q.limit;
            let mut page: Vec<&Ev> = candidates.into_iter().take(q.limit).collect();
            if q.ending_before.is_some() {
                page.reverse(); // still newest first
            }
            let data: Vec<&str> = page.iter().map(|e| e.body.as_str()).collect();
            let body = format!(
                "{{\n  \"object\": \"list\",\n  \"data\": [{}],\n  \"has_more\": {has_more},\n  \"url\": \"/v1/events\"\n}}",
                data.join(",\n")
            );
            (200, None, body)
        }
    }

    /// Status, `Retry-After` and body of the fake's answer.
    type Answer = (u16, Option<u64>, String);

    /// The request line's path and query pairs, and the Authorization header.
    fn parse_head(head: &str) -> (String, Vec<(String, String)>, Option<String>) {
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let auth = lines.find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_owned())
        });
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        (path.to_owned(), pairs, auth)
    }

    /// Stripe masks all but the end of the key it was given.
    fn invalid_key(auth: Option<&str>) -> Answer {
        let given = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        let tail: String = given
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let msg = format!("Invalid API Key provided: rk_test_{}{tail}", "*".repeat(20));
        (401, None, stripe_error(&msg, ""))
    }

    /// The parameters of `GET /v1/events`, refused as Stripe refuses them.
    struct ListQuery {
        limit: usize,
        ending_before: Option<String>,
        starting_after: Option<String>,
        gte: Option<i64>,
        types: Vec<String>,
    }

    impl ListQuery {
        fn parse(pairs: &[(String, String)]) -> Result<Self, Answer> {
            let bad = |param: &str, msg: &str| {
                (
                    400,
                    None,
                    stripe_error(msg, &format!("\"param\": \"{param}\",\n    ")),
                )
            };
            let mut q = ListQuery {
                limit: 10,
                ending_before: None,
                starting_after: None,
                gte: None,
                types: Vec::new(),
            };
            for (k, v) in pairs {
                match k.as_str() {
                    "limit" => q.limit = v.parse().map_err(|_| bad("limit", "Invalid integer"))?,
                    "ending_before" => q.ending_before = Some(v.clone()),
                    "starting_after" => q.starting_after = Some(v.clone()),
                    "types[]" => q.types.push(v.clone()),
                    "created[gte]" => {
                        q.gte = Some(
                            v.parse()
                                .map_err(|_| bad("created[gte]", "Invalid integer"))?,
                        )
                    }
                    other => {
                        return Err(bad(other, &format!("Received unknown parameter: {other}")))
                    }
                }
            }
            if !(1..=100).contains(&q.limit) {
                return Err(bad("limit", "This value must be between 1 and 100"));
            }
            if q.ending_before.is_some() && q.starting_after.is_some() {
                return Err(bad(
                    "ending_before",
                    "You may only specify one of these parameters: ending_before, starting_after.",
                ));
            }
            Ok(q)
        }
    }

    async fn serve(fake: Shared) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let (status, retry_after, body) = fake
                        .lock()
                        .expect("fake")
                        .handle(&String::from_utf8_lossy(&head));
                    let retry = retry_after
                        .map(|s| format!("Retry-After: {s}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    // ---- Driving the kind the way the runner does. ----

    struct Harness {
        fake: Shared,
        base: String,
        http: ReqwestHttp,
    }

    impl Harness {
        async fn new(fake: Fake) -> Self {
            let fake = Arc::new(Mutex::new(fake));
            let base = serve(fake.clone()).await;
            Self {
                fake,
                base,
                http: ReqwestHttp::new(16 << 20).expect("client"),
            }
        }

        fn kind(&self, mut options: Value) -> StripeEvents {
            options["api_base"] = json!(self.base);
            StripeEvents::from_options(&options).expect("options")
        }

        fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
            self.fake.lock().expect("fake")
        }

        async fn fetch_with(
            &self,
            kind: &StripeEvents,
            credentials: &[Secret],
            cursor: Option<&Value>,
        ) -> Result<Page, FetchError> {
            let ctx = FetchContext {
                http: &self.http,
                credentials,
                now_ms: NOW * 1000,
                timeout: Duration::from_secs(10),
            };
            kind.fetch(&ctx, cursor).await
        }

        async fn fetch(
            &self,
            kind: &StripeEvents,
            cursor: Option<&Value>,
        ) -> Result<Page, FetchError> {
            self.fetch_with(kind, &[Secret::new("poll", KEY, None)], cursor)
                .await
        }

        /// Fetch → take the items → fetch after the returned cursor, until `more` is false;
        /// `between` runs between two pages (new events arriving at Stripe).
        async fn drain(
            &self,
            kind: &StripeEvents,
            cursor: Option<Value>,
            mut between: impl FnMut(usize, &mut Fake),
        ) -> (Vec<Vec<u8>>, Value, usize) {
            let mut cursor = cursor;
            let mut items = Vec::new();
            let mut pages = 0;
            loop {
                let page = self.fetch(kind, cursor.as_ref()).await.expect("page");
                pages += 1;
                assert!(pages < 5_000, "the walk does not end");
                items.extend(page.items);
                cursor = Some(page.cursor);
                if !page.more {
                    break;
                }
                between(pages, &mut self.fake());
            }
            (items, cursor.unwrap_or(Value::Null), pages)
        }

        /// The fake's events (ids) matching `keep`, in the order Stripe created them.
        fn ids_where(&self, keep: impl Fn(&Ev) -> bool) -> Vec<String> {
            self.fake()
                .events
                .iter()
                .filter(|e| keep(e))
                .map(|e| e.id.clone())
                .collect()
        }

        fn body_of(&self, id: &str) -> String {
            self.fake()
                .events
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.body.clone())
                .expect("known event")
        }
    }

    fn ids(items: &[Vec<u8>]) -> Vec<String> {
        items
            .iter()
            .map(|i| {
                let v: Value = serde_json::from_slice(i).expect("item is JSON");
                v["id"].as_str().expect("id").to_owned()
            })
            .collect()
    }

    fn fatal(r: Result<Page, FetchError>) -> String {
        match r {
            Err(FetchError::Fatal(m)) => m,
            other => panic!("expected Fatal, got {other:?}"),
        }
    }

    // ---- Specifications. ----

    #[tokio::test]
    async fn every_event_is_handed_over_once_oldest_first_across_pages_inserts_and_equal_timestamps(
    ) {
        let mut fake = Fake::new();
        fake.push_many(5, |i| NOW - 100 + i as i64);
        let h = Harness::new(fake).await;
        let kind = h.kind(json!({}));

        // First run: starts after the newest event, hands over no history.
        let first = h.fetch(&kind, None).await.expect("first run");
        let newest = h.ids_where(|_| true).pop().expect("history");
        assert_eq!(first.items, Vec::<Vec<u8>>::new());
        assert_eq!(first.cursor, json!({"after": newest, "created": NOW - 96}));
        assert!(!first.more);
        assert!(h.fake().requests[0]
            .0
            .contains(&("limit".into(), "1".into())));
        let history = h.fake().events.len();

        // 1,000 events, seven per second: every 100-event page boundary cuts a second in two.
        h.fake().push_many(1_000, |i| NOW + 1 + (i / 7) as i64);
        let (items, cursor, pages) = h
            .drain(&kind, Some(first.cursor), |page, fake| {
                let top = fake.events.last().map_or(NOW, |e| e.created);
                // Arrivals between pages, with the same `created` as the newest event.
                fake.push_many(3, |_| top);
                if page == 2 {
                    // A burst larger than a page.
                    fake.push_many(150, |i| top + 1 + (i / 10) as i64);
                }
            })
            .await;
        assert!(pages >= 12, "{pages} pages");
        // A later poll picks up from the stored cursor.
        h.fake().push_many(20, |_| NOW + 500);
        let (later, _, _) = h.drain(&kind, Some(cursor), |_, _| {}).await;

        let handed: Vec<Vec<u8>> = items.into_iter().chain(later).collect();
        let expected: Vec<String> = h.ids_where(|_| true).split_off(history);
        assert!(expected.len() > 1_150);
        assert_eq!(ids(&handed), expected, "each event once, in creation order");
        for (item, id) in handed.iter().zip(&expected) {
            assert_eq!(item, h.body_of(id).as_bytes(), "byte-exact");
        }
        let fake = h.fake();
        assert!(fake
            .requests
            .iter()
            .skip(1)
            .all(|(q, _)| q.iter().any(|(k, _)| k == "ending_before")));
    }

    #[tokio::test]
    async fn a_lookback_backfills_from_its_start_oldest_first_then_follows_arrivals() {
        let mut fake = Fake::new();
        fake.push_many(30, |i| NOW - 7_200 + i as i64);
        fake.push_many(4, |_| NOW - 3_601); // just before the lookback: not handed over
        fake.push_many(750, |i| NOW - 3_600 + 10 * (i / 3) as i64); // threes share a second
        let h = Harness::new(fake).await;
        let kind = h.kind(json!({"start": {"lookback_seconds": 3600}, "page_size": 40}));

        let (items, cursor, pages) = h
            .drain(&kind, None, |_, fake| fake.push_many(2, |_| NOW))
            .await;
        let expected = h.ids_where(|e| e.created >= NOW - 3_600);
        assert_eq!(ids(&items), expected);
        assert!(expected.len() > 750);
        // The walk down hands over nothing; the bottom page and the walk up do.
        let requests = h.fake().requests.clone();
        assert!(requests[0]
            .0
            .contains(&("created[gte]".into(), (NOW - 3_600).to_string())));
        assert!(requests
            .iter()
            .any(|(q, _)| q.iter().any(|(k, _)| k == "starting_after")));
        assert!(pages > 2 * 750 / 40, "{pages} pages: down, then up");
        assert_eq!(cursor["after"], json!(expected.last().expect("some")));

        // Nothing new: an empty page, the cursor unchanged.
        let page = h.fetch(&kind, Some(&cursor)).await.expect("page");
        assert_eq!(
            (page.items.len(), &page.cursor, page.more),
            (0, &cursor, false)
        );
    }

    #[tokio::test]
    async fn an_empty_account_starts_now_and_hands_over_its_first_events() {
        let h = Harness::new(Fake::new()).await;
        let kind = h.kind(json!({"start": "now", "page_size": 100}));
        let first = h.fetch(&kind, None).await.expect("first run");
        let start = json!({"after": null, "created_gte": NOW - 300});
        assert_eq!(
            (first.items.len(), &first.cursor, first.more),
            (0, &start, false)
        );
        let again = h.fetch(&kind, Some(&start)).await.expect("still nothing");
        assert_eq!(
            (again.items.len(), &again.cursor, again.more),
            (0, &start, false)
        );

        h.fake().push_many(250, |i| NOW + 10 + (i / 4) as i64);
        let (items, _, _) = h
            .drain(&kind, Some(start), |_, fake| {
                fake.push_many(1, |_| NOW + 100)
            })
            .await;
        assert_eq!(ids(&items), h.ids_where(|_| true));
    }

    #[tokio::test]
    async fn a_cursor_past_stripe_retention_restarts_from_its_time_with_an_overlap() {
        let gone = NOW - 31 * DAY; // the cursor's event, no longer at Stripe
        let mut fake = Fake::new();
        fake.push_many(5, |_| gone - 301); // before the overlap
        fake.push_many(5, |_| gone - 300); // the overlap's first second: re-sent
        fake.push_many(5, |_| gone);
        fake.push_many(200, |i| gone + 1 + (i / 3) as i64);
        let h = Harness::new(fake).await;
        let kind = h.kind(json!({"page_size": 30}));

        // Stripe no longer knows the cursor's 31-day-old event: the walk restarts from its
        // time less the overlap, and goes on with `ending_before` from events Stripe still
        // lists although they are past 30 days (the walk ends: no restart loop).
        let cursor = json!({"after": "evt_gone", "created": gone});
        let (items, _, _) = h.drain(&kind, Some(cursor), |_, _| {}).await;
        assert_eq!(ids(&items), h.ids_where(|e| e.created >= gone - 300));
        let asked: Vec<(String, String)> = h.fake().requests[0].0.clone();
        assert!(asked.contains(&("ending_before".into(), "evt_gone".into())));

        // 29.5 days old and Stripe answers `resource_missing`: the same fallback.
        let lost = NOW - 29 * DAY - DAY / 2;
        h.fake().events.clear();
        h.fake().push_many(3, |_| lost - 10);
        h.fake().push_many(120, |i| lost + (i / 5) as i64);
        let cursor = json!({"after": "evt_expired", "created": lost});
        let page = h.fetch(&kind, Some(&cursor)).await.expect("fallback");
        assert_eq!(page.items.len(), 0);
        assert_eq!(
            page.cursor,
            json!({"after": null, "created_gte": lost - 300})
        );
        assert!(page.more);
        let (items, _, _) = h.drain(&kind, Some(page.cursor), |_, _| {}).await;
        assert_eq!(ids(&items), h.ids_where(|_| true));

        // A walk down whose footing expired starts again from that event's time.
        let cursor = json!({"after": null, "created_gte": NOW - 30 * DAY,
            "starting_after": "evt_expired", "starting_after_created": lost});
        let page = h.fetch(&kind, Some(&cursor)).await.expect("restart");
        assert_eq!(
            (page.items.len(), page.cursor, page.more),
            (0, json!({"after": null, "created_gte": lost}), true)
        );
    }

    #[tokio::test]
    async fn a_cursor_event_unknown_inside_retention_is_fatal() {
        let h = Harness::new(Fake::new()).await;
        let kind = h.kind(json!({}));
        let cursor = json!({"after": "evt_other_account", "created": NOW - DAY});
        let m = fatal(h.fetch(&kind, Some(&cursor)).await);
        assert!(
            m.contains("HTTP 404") && m.contains("evt_other_account"),
            "{m}"
        );
        assert!(m.contains("another account"), "{m}");
        assert!(!m.contains(KEY));
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retryable_and_a_retry_gets_the_same_page() {
        let mut fake = Fake::new();
        let after = fake.push(NOW - 50, "charge.succeeded");
        fake.push_many(12, |i| NOW - 40 + (i / 2) as i64);
        let h = Harness::new(fake).await;
        let kind = h.kind(json!({"page_size": 5}));
        let cursor = json!({"after": after, "created": NOW - 50});
        let overloaded = stripe_error("Too many requests", "\"code\": \"rate_limit\",\n    ");
        h.fake().faults.extend([
            Fault::Status {
                status: 429,
                retry_after: Some(3),
                body: overloaded.clone(),
            },
            Fault::Status {
                status: 503,
                retry_after: None,
                body: overloaded,
            },
            Fault::Status {
                status: 500,
                retry_after: None,
                body: stripe_error("An unknown error occurred", ""),
            },
            Fault::Status {
                status: 502,
                retry_after: None,
                body: "<html>bad gateway</html>".into(),
            },
        ]);
        assert!(matches!(
            h.fetch(&kind, Some(&cursor)).await,
            Err(FetchError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            h.fetch(&kind, Some(&cursor)).await,
            Err(FetchError::Throttled {
                retry_after: None,
                ..
            })
        ));
        for _ in 0..2 {
            assert!(matches!(
                h.fetch(&kind, Some(&cursor)).await,
                Err(FetchError::Transient(_))
            ));
        }
        let page = h.fetch(&kind, Some(&cursor)).await.expect("retry");
        assert_eq!(ids(&page.items), h.ids_where(|_| true)[1..6].to_vec());
        assert!(page.more);
        // A crash before the cursor is stored: the same cursor gives the same page.
        let again = h.fetch(&kind, Some(&cursor)).await.expect("replay");
        assert_eq!(again, page);
    }

    #[tokio::test]
    async fn refusals_are_fatal_with_their_status_and_never_show_the_key() {
        let mut fake = Fake::new();
        fake.key = "rk_test_theRightOne".into();
        let h = Harness::new(fake).await;
        let kind = h.kind(json!({}));
        let cursor = json!({"after": "evt_1", "created": NOW - 10});

        let m = fatal(h.fetch(&kind, Some(&cursor)).await);
        assert!(
            m.contains("HTTP 401") && m.contains("Invalid API Key"),
            "{m}"
        );
        assert!(!m.contains(KEY), "{m}");
        assert_eq!(
            h.fake().requests[0].1.as_deref(),
            Some(format!("Bearer {KEY}").as_str()),
            "the key goes in Authorization: Bearer"
        );

        h.fake().key = KEY.into();
        for (status, body) in [
            (403, stripe_error("The provided key 'rk_test_***cdef' does not have the required permissions for this endpoint on account 'acct_1'. Having the 'rak_event_read' permission would allow this request to continue.", "")),
            (409, stripe_error("Keys for idempotent requests can only be used with the same parameters", "")),
            (400, stripe_error("Received unknown parameter: x", "\"param\": \"x\",\n    ")),
        ] {
            h.fake().faults.push_back(Fault::Status { status, retry_after: None, body });
            let m = fatal(h.fetch(&kind, Some(&cursor)).await);
            assert!(m.contains(&format!("HTTP {status}")), "{m}");
            assert!(!m.contains(KEY), "{m}");
        }

        // A wrong api_base: Stripe's 404 for an unknown URL.
        let wrong = StripeEvents::from_options(&json!({"api_base": format!("{}/v2", h.base)}))
            .expect("options");
        let m = fatal(h.fetch(&wrong, None).await);
        assert!(
            m.contains("HTTP 404") && m.contains("Unrecognized request URL"),
            "{m}"
        );

        // No live credential: nothing is sent.
        let before = h.fake().requests.len();
        let expired = [Secret::new("old", KEY, Some(NOW * 1000 - 1))];
        let m = fatal(h.fetch_with(&kind, &expired, Some(&cursor)).await);
        assert!(m.contains("no live poll credential"), "{m}");
        assert_eq!(h.fake().requests.len(), before);
    }

    #[tokio::test]
    async fn bodies_that_are_not_stripe_event_lists_are_fatal() {
        let h = Harness::new(Fake::new()).await;
        let kind = h.kind(json!({}));
        let cursor = json!({"after": "evt_1", "created": NOW - 10});
        for body in [
            "not json",
            "[]",
            r#"{"object":"list","data":{},"has_more":false}"#,
            r#"{"object":"list","data":[]}"#,
            r#"{"object":"search_result","data":[],"has_more":false}"#,
            r#"{"object":"list","data":[1],"has_more":false}"#,
            r#"{"object":"list","data":[{"id":"evt_1","object":"event"}],"has_more":false}"#,
            r#"{"object":"list","data":[{"id":"ch_1","object":"charge","created":1}],"has_more":false}"#,
            r#"{"object":"list","data":[{"id":"","object":"event","created":1}],"has_more":false}"#,
        ] {
            h.fake().faults.push_back(Fault::Body(body.into()));
            let m = fatal(h.fetch(&kind, Some(&cursor)).await);
            assert!(
                m.starts_with("stripe_events: the answer is not Stripe's list"),
                "{body}: {m}"
            );
        }
        // A walk down told "more" with nothing in the page cannot progress.
        h.fake().faults.push_back(Fault::Body(
            r#"{"object":"list","data":[],"has_more":true}"#.into(),
        ));
        let scan = json!({"after": null, "created_gte": NOW - 60});
        assert!(fatal(h.fetch(&kind, Some(&scan)).await).contains("has_more"));
    }

    #[tokio::test]
    async fn types_and_page_size_are_sent_as_documented_and_items_are_stripe_events() {
        let mut fake = Fake::new();
        let after = fake.push(NOW - 100, "charge.succeeded");
        for i in 0..90 {
            let ty = ["charge.succeeded", "customer.created", "charge.refunded"][i % 3];
            fake.push(NOW - 90 + i as i64, ty);
        }
        let h = Harness::new(fake).await;
        let kind =
            h.kind(json!({"types": ["charge.succeeded", "charge.refunded"], "page_size": 25}));
        let cursor = json!({"after": after, "created": NOW - 100});
        let (items, _, pages) = h.drain(&kind, Some(cursor), |_, _| {}).await;
        assert_eq!(pages, 3);
        assert_eq!(
            ids(&items),
            h.ids_where(|e| e.ty != "customer.created" && e.created > NOW - 100)
        );
        let (query, auth) = h.fake().requests[0].clone();
        assert_eq!(
            query,
            vec![
                ("limit".to_owned(), "25".to_owned()),
                ("ending_before".to_owned(), after.clone()),
                ("types[]".to_owned(), "charge.succeeded".to_owned()),
                ("types[]".to_owned(), "charge.refunded".to_owned()),
            ]
        );
        assert_eq!(auth, Some(format!("Bearer {KEY}")));

        // The runner feeds each item to the `stripe` provider: same id as the webhook's.
        let stripe = crate::providers::build(
            "stripe",
            &json!({}),
            vec![Secret::new("wh", "whsec_x", None)],
        )
        .expect("provider");
        let item = items.first().expect("an item");
        let extracted = stripe
            .extract(&InboundRequest {
                method: "POST",
                headers: &Headers::new(),
                query: &[],
                body: item,
            })
            .expect("extract");
        assert_eq!(extracted[0].event_id, Some(ids(&items)[0].clone()));
        assert_eq!(extracted[0].event_type.as_deref(), Some("charge.succeeded"));
    }

    #[test]
    fn cursors_it_did_not_write_are_fatal() {
        for c in [
            json!("evt_1"),
            json!({"after": "evt_1"}),
            json!({"after": "evt_1", "created": 1, "extra": 1}),
            json!({"after": null}),
            json!({"after": null, "created_gte": 1, "starting_after": "evt_1"}),
        ] {
            assert!(
                matches!(Cursor::parse(&c), Err(FetchError::Fatal(m)) if m.contains("not understood")),
                "{c}"
            );
        }
        for c in [
            Cursor::After(Anchor {
                id: "evt_1".into(),
                created: 5,
            }),
            Cursor::Scan {
                gte: 7,
                below: None,
            },
            Cursor::Scan {
                gte: 7,
                below: Some(Anchor {
                    id: "evt_2".into(),
                    created: 9,
                }),
            },
        ] {
            assert_eq!(Cursor::parse(&c.to_json()), Ok(c));
        }
    }

    #[test]
    fn options_are_checked_and_errors_name_the_field() {
        let k = StripeEvents::from_options(&Value::Null).expect("defaults");
        assert_eq!(
            (
                k.api_base.as_str(),
                k.types.len(),
                k.page_size,
                k.start,
                k.overlap_seconds
            ),
            ("https://api.stripe.com", 0, 100, Start::Now, 300)
        );
        let k = StripeEvents::from_options(&json!({"api_base": "http://127.0.0.1:9/",
            "start": {"lookback_seconds": 86400}, "overlap_seconds": 0}))
        .expect("options");
        assert_eq!(
            (k.api_base.as_str(), k.start, k.overlap_seconds),
            ("http://127.0.0.1:9", Start::Lookback { seconds: 86_400 }, 0)
        );
        for (options, field) in [
            (json!({"pagesize": 10}), "pagesize"),
            (json!({"page_size": 0}), "page_size"),
            (json!({"page_size": 101}), "page_size"),
            (json!({"page_size": "ten"}), "page_size"),
            (json!({"types": []}), "types"),
            (json!({"types": [""]}), "types"),
            (json!({"types": "charge.succeeded"}), "types"),
            (json!({"types": vec!["a.b"; 21]}), "types"),
            (json!({"start": "later"}), "start"),
            (
                json!({"start": {"lookback_seconds": 0}}),
                "start.lookback_seconds",
            ),
            (
                json!({"start": {"lookback_seconds": 31 * DAY}}),
                "start.lookback_seconds",
            ),
            (json!({"start": {"lookback": 5}}), "start"),
            (json!({"api_base": "ftp://stripe"}), "api_base"),
            (
                json!({"api_base": "https://api.stripe.com/?x=1"}),
                "api_base",
            ),
            (json!({"overlap_seconds": -1}), "overlap_seconds"),
        ] {
            let e = StripeEvents::from_options(&options)
                .expect_err("refused")
                .to_string();
            assert!(
                e.starts_with("stripe_events options: ") && e.contains(field),
                "{options}: {e}"
            );
        }
    }

    #[test]
    fn the_registry_builds_the_kind_by_name() {
        assert!(super::super::KINDS.contains(&"stripe_events"));
        let kind = super::super::build("stripe_events", &json!({"page_size": 10})).expect("kind");
        assert_eq!(kind.name(), "stripe_events");
        let e = super::super::build("stripe_events", &json!({"nope": 1}))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let e = super::super::build("stripe_evnts", &json!({}))
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("stripe_events"), "{e}");
    }
}
