//! `telegram_updates`: a bot's updates from the Bot API's `getUpdates`, as the same Update
//! objects Telegram would POST to a webhook (so the `telegram` provider extracts them and the
//! dedupe key is the `update_id`, whichever path delivered an update first).
//!
//! `GET {api_base}/bot<token>/getUpdates?offset=…&limit=…&timeout=…&allowed_updates=[…]`
//! answers `{"ok":true,"result":[Update, …]}`, oldest first (ascending `update_id`).
//! Source: <https://core.telegram.org/bots/api#getupdates>
//!
//! **Confirmation is the cursor.** `offset` is the `update_id` of the first update wanted, and
//! sending it *confirms* every update below it: Telegram forgets them for good. The cursor is
//! `{"offset": <last update_id + 1>}`, and this kind sends it only as the `offset` of the
//! *next* fetch. The runner stores a page's cursor only after the page's items are durably
//! enqueued, and the next fetch starts from the stored cursor, so Telegram forgets a page only
//! once it is on the queue:
//! - a crash after enqueue but before the cursor write restarts from the older offset, which
//!   Telegram still answers with the same (unconfirmed) page: re-sent, absorbed by dedupe;
//! - a crash before enqueue loses nothing for the same reason;
//! - nothing is ever confirmed that was not enqueued, because a confirmation is a request this
//!   kind makes with a cursor the runner stored.
//!
//! The last page of a run is confirmed by the first fetch of the next run, so the schedule must
//! be well under the 24 hours Telegram keeps unconfirmed updates. With no cursor yet (a
//! source's first run) no `offset` is sent and Telegram starts at its earliest unconfirmed
//! update.
//!
//! **The token is the URL.** Telegram takes the credential as a path segment, and HTTP client
//! errors quote the URL, so every error this kind returns has the token (and its secret half)
//! replaced by `<token>`.
//!
//! **Long polling.** `timeout_seconds` (0–50) makes Telegram hold the request until an update
//! arrives or the time is up. The request itself is bounded by the runner's per-request timeout,
//! which must exceed `timeout_seconds` by a few seconds; when it does not, the long-poll sent is
//! shortened to fit (down to a short poll), so a quiet bot never looks like a timing-out API.
//!
//! **One poller per bot.** Telegram ends a pending `getUpdates` when another arrives (409
//! "terminated by other getUpdates request") and refuses `getUpdates` while a webhook is set
//! (409 "can't use getUpdates method while webhook is active"); both are `Fatal` with a
//! message saying which and what to do.

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::OptionsError;
use crate::poll::{classify, FetchContext, FetchError, Page, PollKind};
use crate::ports::http::{HttpRequest, HttpResponse};

const NAME: &str = "telegram_updates";
const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// `getUpdates` accepts 1–100 and defaults to 100.
const MAX_LIMIT: u32 = 100;
/// Long-polls longer than this buy nothing and outlast common proxy idle timeouts.
const MAX_TIMEOUT_SECONDS: u32 = 50;
/// Kept between the long-poll and the request timeout: Telegram answers an idle long-poll
/// right at `timeout`, and the answer still has to travel.
const LONG_POLL_HEADROOM: Duration = Duration::from_secs(5);
/// What replaces the bot token in every error.
const REDACTED: &str = "<token>";

/// `poll.options` as written; each field is checked by hand so every error names its field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    api_base: Option<Value>,
    limit: Option<Value>,
    timeout_seconds: Option<Value>,
    allowed_updates: Option<Value>,
}

fn field<T: DeserializeOwned>(name: &str, value: Option<Value>) -> Result<Option<T>, OptionsError> {
    value
        .map(|v| {
            serde_json::from_value(v).map_err(|e| OptionsError::kind(NAME, format!("{name}: {e}")))
        })
        .transpose()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TelegramUpdates {
    /// Without a trailing slash.
    api_base: String,
    limit: u32,
    timeout_seconds: u32,
    /// The JSON array as sent; `None` sends nothing, and Telegram keeps the bot's previous
    /// setting (an empty list means every type except `chat_member` and a few others).
    allowed_updates: Option<String>,
}

impl TelegramUpdates {
    pub(crate) fn from_options(options: &Value) -> Result<Self, OptionsError> {
        let Options {
            api_base,
            limit,
            timeout_seconds,
            allowed_updates,
        } = if options.is_null() {
            Options::default()
        } else {
            Options::deserialize(options).map_err(|e| OptionsError::kind(NAME, e))?
        };

        let api_base: String =
            field("api_base", api_base)?.unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        let api_base = api_base.trim_end_matches('/').to_owned();
        let host = api_base
            .strip_prefix("https://")
            .or_else(|| api_base.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(['?', '#', ' '])) {
            return Err(OptionsError::kind(
                NAME,
                format!(
                "api_base must be an http(s) URL such as {DEFAULT_API_BASE:?}, got {api_base:?}"
            ),
            ));
        }

        let limit: u32 = field("limit", limit)?.unwrap_or(MAX_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(OptionsError::kind(
                NAME,
                format!("limit must be 1-{MAX_LIMIT} (getUpdates' range), got {limit}"),
            ));
        }

        let timeout_seconds: u32 = field("timeout_seconds", timeout_seconds)?.unwrap_or(0);
        if timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(OptionsError::kind(
                NAME,
                format!(
                    "timeout_seconds must be 0-{MAX_TIMEOUT_SECONDS} (the long-poll \
                 must end inside the poller's request timeout), got {timeout_seconds}"
                ),
            ));
        }

        let allowed_updates: Option<Vec<String>> = field("allowed_updates", allowed_updates)?;
        if let Some(types) = &allowed_updates {
            let valid = |t: &String| {
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            };
            if let Some(bad) = types.iter().find(|t| !valid(t)) {
                return Err(OptionsError::kind(
                    NAME,
                    format!(
                        "allowed_updates: {bad:?} is not an update type \
                     (snake_case names such as \"message\", \"callback_query\")"
                    ),
                ));
            }
        }
        let allowed_updates = allowed_updates.map(|types| Value::from(types).to_string());

        Ok(Self {
            api_base,
            limit,
            timeout_seconds,
            allowed_updates,
        })
    }

    /// The long-poll actually sent: `timeout_seconds`, shortened to end inside the request
    /// timeout with [`LONG_POLL_HEADROOM`] to spare.
    fn long_poll_seconds(&self, request_timeout: Duration) -> u64 {
        let room = request_timeout.saturating_sub(LONG_POLL_HEADROOM).as_secs();
        u64::from(self.timeout_seconds).min(room)
    }

    fn url(&self, token: &str, offset: Option<i64>, long_poll: u64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(offset) = offset {
            query.append_pair("offset", &offset.to_string());
        }
        query.append_pair("limit", &self.limit.to_string());
        query.append_pair("timeout", &long_poll.to_string());
        if let Some(types) = &self.allowed_updates {
            query.append_pair("allowed_updates", types);
        }
        format!("{}/bot{token}/getUpdates?{}", self.api_base, query.finish())
    }

    async fn fetch_with(
        &self,
        ctx: &FetchContext<'_>,
        token: &str,
        offset: Option<i64>,
    ) -> Result<Page, FetchError> {
        let url = self.url(token, offset, self.long_poll_seconds(ctx.timeout));
        let resp = ctx.http.send(HttpRequest::get(url, ctx.timeout)).await;
        // Telegram explains a refusal in the body (`description`, `parameters.retry_after`):
        // read it before `classify` turns the response into an error.
        let refusal = match &resp {
            Ok(r) if !(200..=299).contains(&r.status) => Some(ApiError::read(r)),
            _ => None,
        };
        let resp = classify(resp).map_err(|e| match refusal {
            Some(refusal) => refusal.explain(e),
            None => e,
        })?;
        self.page(&resp.body, offset)
    }

    fn page(&self, body: &[u8], offset: Option<i64>) -> Result<Page, FetchError> {
        let not_updates =
            |why: &str| FetchError::Fatal(format!("getUpdates answered 2xx, but {why}"));
        let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
            not_updates(&format!(
                "the body is not a Telegram response ({{\"ok\":…,\"result\":…}}): {e}"
            ))
        })?;
        if !envelope.ok {
            return Err(not_updates(&format!(
                "\"ok\" is false: {}",
                envelope.description.as_deref().unwrap_or("no description")
            )));
        }
        let result = envelope
            .result
            .ok_or_else(|| not_updates("the body has no \"result\""))?;
        let updates: Vec<&RawValue> = serde_json::from_str(result.get())
            .map_err(|_| not_updates("\"result\" is not an array of updates"))?;

        let mut items = Vec::with_capacity(updates.len());
        let mut last: Option<i64> = None;
        for (i, update) in updates.iter().enumerate() {
            let UpdateId { update_id } = serde_json::from_str(update.get()).map_err(|_| {
                not_updates(&format!(
                    "update {i} of the page has no integer \"update_id\""
                ))
            })?;
            if last.is_some_and(|prev| update_id <= prev) {
                return Err(not_updates(&format!(
                    "update_id {update_id} follows {} (updates must ascend)",
                    last.unwrap_or_default()
                )));
            }
            last = Some(update_id);
            items.push(update.get().as_bytes().to_vec());
        }

        let next = match last {
            Some(id) => Some(
                id.checked_add(1)
                    .ok_or_else(|| not_updates(&format!("update_id {id} leaves no next offset")))?,
            ),
            None => None,
        };
        // Never move back: an update below the offset asked for would be a re-send.
        let next = match (next, offset) {
            (Some(n), Some(o)) => Some(n.max(o)),
            (n, o) => n.or(o),
        };
        let more = items.len() >= self.limit as usize;
        Ok(Page {
            items,
            cursor: next.map_or_else(|| json!({}), |o| json!({ "offset": o })),
            more,
        })
    }
}

#[async_trait]
impl PollKind for TelegramUpdates {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(
        &self,
        ctx: &FetchContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<Page, FetchError> {
        let offset = read_cursor(cursor)?;
        let token = ctx.credential()?;
        check_token(token)?;
        self.fetch_with(ctx, token, offset)
            .await
            .map_err(|e| redact_error(e, token))
    }
}

/// `None`, `null` and `{}` mean "from Telegram's earliest unconfirmed update".
fn read_cursor(cursor: Option<&Value>) -> Result<Option<i64>, FetchError> {
    let bad = || {
        FetchError::Fatal(format!(
            "{NAME} cursor must be {{\"offset\": <update_id>}}, got {}",
            cursor.map(Value::to_string).unwrap_or_default()
        ))
    };
    match cursor {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(Value::Object(map)) if map.len() == 1 => match map.get("offset") {
            Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// `<bot id>:<secret>` as @BotFather gives it. Anything else would change the URL's shape
/// (a `/` or `?` in the path), so it is refused without being quoted.
fn check_token(token: &str) -> Result<(), FetchError> {
    let shaped = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if shaped {
        Ok(())
    } else {
        Err(FetchError::Fatal(
            "the poll credential (poll.secrets) is not a Telegram bot token \
             (<bot id>:<secret>, as @BotFather gives it)"
                .into(),
        ))
    }
}

fn redact(text: &str, token: &str) -> String {
    let mut text = text.replace(token, REDACTED);
    // The secret half alone (a URL parser may have split or re-encoded the rest).
    if let Some((_, secret)) = token.split_once(':') {
        if !secret.is_empty() {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

fn redact_error(e: FetchError, token: &str) -> FetchError {
    match e {
        FetchError::Throttled {
            retry_after,
            detail,
        } => FetchError::Throttled {
            retry_after,
            detail: redact(&detail, token),
        },
        FetchError::Transient(m) => FetchError::Transient(redact(&m, token)),
        FetchError::Fatal(m) => FetchError::Fatal(redact(&m, token)),
    }
}

/// `{"ok":true,"result":[…]}`, each update borrowed byte-exact.
#[derive(Deserialize)]
struct Envelope<'a> {
    ok: bool,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct UpdateId {
    update_id: i64,
}

/// `{"ok":false,"error_code":409,"description":"…","parameters":{"retry_after":7}}`.
#[derive(Debug, Default)]
struct ApiError {
    status: u16,
    description: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn read(resp: &HttpResponse) -> Self {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            parameters: Option<Parameters>,
        }
        #[derive(Deserialize)]
        struct Parameters {
            #[serde(default)]
            retry_after: Option<u64>,
        }
        let body: Option<Body> = serde_json::from_slice(&resp.body).ok();
        let (description, retry_after) = match body {
            Some(b) => (b.description, b.parameters.and_then(|p| p.retry_after)),
            None => (None, None),
        };
        Self {
            status: resp.status,
            description,
            retry_after,
        }
    }

    /// `classify`'s verdict, with Telegram's reason and what to do about it.
    fn explain(self, verdict: FetchError) -> FetchError {
        let status = self.status;
        let said = self.description.unwrap_or_default();
        match verdict {
            FetchError::Throttled {
                retry_after,
                detail,
            } => {
                // Flood control puts the wait in the body; a header, when sent, may differ:
                // honour the longer.
                let body = self.retry_after.map(Duration::from_secs);
                let retry_after = match (retry_after, body) {
                    (Some(h), Some(b)) => Some(h.max(b)),
                    (h, b) => h.or(b),
                };
                let detail = if said.is_empty() {
                    detail
                } else {
                    format!("HTTP {status}: Telegram says {said:?}")
                };
                FetchError::Throttled {
                    retry_after,
                    detail,
                }
            }
            FetchError::Fatal(m) if status == 409 => {
                let lower = said.to_ascii_lowercase();
                FetchError::Fatal(if lower.contains("webhook") {
                    format!(
                        "HTTP 409: this bot has a webhook set, and Telegram refuses getUpdates \
                         while it does. Either delete the webhook (deleteWebhook) to keep this \
                         poll, or drop the poll and receive the bot's updates on Inlet's webhook \
                         endpoint. Telegram says {said:?}"
                    )
                } else if lower.contains("terminated by other getupdates") {
                    format!(
                        "HTTP 409: another getUpdates poller is using this bot token (Telegram \
                         ended this request in favour of a newer one). Only one consumer per bot \
                         may poll: stop the other one (another Inlet deployment or source, a bot \
                         framework, a script) or give it its own bot. Telegram says {said:?}"
                    )
                } else if said.is_empty() {
                    m
                } else {
                    format!("HTTP 409: Telegram says {said:?}")
                })
            }
            FetchError::Fatal(m) if status == 401 || status == 404 => FetchError::Fatal(format!(
                "{m} (Telegram answers {status} to a wrong, revoked or malformed bot token: \
                 check poll.secrets against @BotFather, and api_base)"
            )),
            other => other,
        }
    }
}

#[cfg(all(test, feature = "http-fetch"))]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex, MutexGuard};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;

    use super::*;
    use crate::adapters::http_client::ReqwestHttp;
    use crate::providers::telegram::Telegram;
    use crate::providers::Provider;
    use crate::request::{Headers, InboundRequest};
    use crate::secret::Secret;

    const TOKEN: &str = "123456789:AAH-s3cr3t_Tok3n-xyz";
    const SECRET_HALF: &str = "AAH-s3cr3t_Tok3n-xyz";

    // ---- the fake Bot API -------------------------------------------------------------

    /// A canned answer served before the next request's normal handling.
    struct Canned {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    }

    #[derive(Default)]
    struct State {
        /// Unconfirmed updates, ascending: what Telegram still holds.
        pending: VecDeque<(i64, String)>,
        /// Every update ever added, for the assertions.
        all: Vec<(i64, String)>,
        last_id: i64,
        webhook: bool,
        /// Bumped by every getUpdates: a pending long-poll that sees it move was superseded.
        generation: u64,
        /// getUpdates requests waiting in a long-poll right now.
        waiting: usize,
        canned: VecDeque<Canned>,
        /// Each request's query parameters.
        queries: Vec<HashMap<String, String>>,
    }

    /// One bot on a loopback Bot API. It keeps the documented semantics: `offset` confirms
    /// (drops) earlier updates, `limit` caps the page, `timeout` holds the request until an
    /// update arrives, a newer getUpdates ends a pending one with 409, a set webhook refuses
    /// getUpdates with 409, and a wrong token gets 401.
    struct FakeBot {
        token: String,
        state: Mutex<State>,
        changed: Notify,
    }

    impl FakeBot {
        async fn start() -> (Arc<Self>, String) {
            let bot = Arc::new(Self {
                token: TOKEN.to_owned(),
                state: Mutex::new(State {
                    last_id: 700_000_000,
                    ..State::default()
                }),
                changed: Notify::new(),
            });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = bot.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let bot = server.clone();
                    tokio::spawn(async move {
                        let _ = bot.connection(sock).await;
                    });
                }
            });
            (bot, base)
        }

        fn state(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }

        /// Something changed: wake long-polls and `until`.
        fn touch(&self) {
            self.changed.notify_waiters();
        }

        /// `n` new updates of mixed kinds, in Telegram's compact JSON but with the odd
        /// spacing and non-ASCII text that re-serialising would change.
        fn add(&self, n: usize) -> Vec<i64> {
            let mut st = self.state();
            let mut ids = Vec::new();
            for _ in 0..n {
                st.last_id += 1;
                let id = st.last_id;
                let text = match id % 3 {
                    0 => format!(
                        r#"{{"update_id":{id}, "message":{{"message_id":{id},"date":1767225600,"chat":{{"id":-1001234,"type":"supergroup"}},"text":"h\u00e9llo – {id} 🙂"}}}}"#
                    ),
                    1 => format!(
                        r#"{{"update_id":{id},"callback_query":{{"id":"{id}","from":{{"id":42,"is_bot":false,"first_name":"Ann"}},"data":"x=1.50"}}}}"#
                    ),
                    _ => format!(
                        r#"{{"update_id":{id},"edited_message":{{"message_id":9,"date":1767225601,"edit_date":1767225700,"chat":{{"id":77,"type":"private"}},"text":"1.0e3"}}}}"#
                    ),
                };
                st.pending.push_back((id, text.clone()));
                st.all.push((id, text));
                ids.push(id);
            }
            drop(st);
            self.touch();
            ids
        }

        fn script(&self, status: u16, headers: &[(&'static str, &str)], body: &str) {
            self.state().canned.push_back(Canned {
                status,
                headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
                body: body.to_owned(),
            });
        }

        fn set_webhook(&self, on: bool) {
            self.state().webhook = on;
            self.touch();
        }

        fn last_query(&self) -> HashMap<String, String> {
            self.state().queries.last().cloned().unwrap_or_default()
        }

        /// Wait for a condition on the fake's state, woken by each change (no sleeping).
        async fn until(&self, what: &str, cond: impl Fn(&State) -> bool) {
            let wait = async {
                loop {
                    let changed = self.changed.notified();
                    if cond(&self.state()) {
                        return;
                    }
                    changed.await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
        }

        async fn connection(&self, mut sock: TcpStream) -> std::io::Result<()> {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let answer = self.answer(&target).await;
            let reason = match answer.status {
                200 => "OK",
                401 => "Unauthorized",
                404 => "Not Found",
                409 => "Conflict",
                429 => "Too Many Requests",
                502 => "Bad Gateway",
                _ => "Whatever",
            };
            let mut out = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                answer.status,
                answer.body.len()
            );
            for (name, value) in &answer.headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&answer.body);
            sock.write_all(out.as_bytes()).await?;
            sock.shutdown().await
        }

        fn refusal(status: u16, description: &str) -> Canned {
            Canned {
                status,
                headers: Vec::new(),
                body: json!({"ok": false, "error_code": status, "description": description})
                    .to_string(),
            }
        }

        async fn answer(&self, target: &str) -> Canned {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            match self.accept(path, params) {
                Ok((limit, timeout)) => self.long_poll(limit, timeout).await,
                Err(refused) => refused,
            }
        }

        /// The request checked as the Bot API checks it (a scripted answer goes first), its
        /// `offset` confirming the updates below it: its `(limit, timeout)`, or the answer.
        fn accept(
            &self,
            path: &str,
            params: HashMap<String, String>,
        ) -> Result<(usize, u64), Canned> {
            let mut st = self.state();
            st.queries.push(params.clone());
            if let Some(canned) = st.canned.pop_front() {
                return Err(canned);
            }
            let Some((token, method)) = path.strip_prefix("/bot").and_then(|p| p.rsplit_once('/'))
            else {
                return Err(Self::refusal(404, "Not Found"));
            };
            if token != self.token {
                return Err(Self::refusal(401, "Unauthorized"));
            }
            if method != "getUpdates" {
                return Err(Self::refusal(404, "Not Found"));
            }
            if st.webhook {
                return Err(Self::refusal(409, WEBHOOK_ACTIVE));
            }
            let num = |k: &str| params.get(k).and_then(|v| v.parse::<i64>().ok());
            let limit = num("limit").unwrap_or(100).clamp(1, 100) as usize;
            let timeout = num("timeout").unwrap_or(0).max(0) as u64;
            if let Some(offset) = num("offset") {
                // Confirmation: everything below the offset is forgotten.
                st.pending.retain(|(id, _)| *id >= offset);
            }
            Ok((limit, timeout))
        }

        /// The pending updates, at once or (with a `timeout`) as soon as there are some; a
        /// newer getUpdates or a webhook set meanwhile ends it with 409.
        async fn long_poll(&self, limit: usize, timeout: u64) -> Canned {
            // This request supersedes any pending one.
            let mine = {
                let mut st = self.state();
                st.generation += 1;
                if timeout > 0 {
                    st.waiting += 1;
                }
                st.generation
            };
            self.touch();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let answer = loop {
                let changed = self.changed.notified();
                if let Some(answer) = self.ready(mine, limit, timeout) {
                    break answer;
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    break Canned {
                        status: 200,
                        headers: Vec::new(),
                        body: r#"{"ok":true,"result":[]}"#.into(),
                    };
                }
            };
            if timeout > 0 {
                self.state().waiting -= 1;
                self.touch();
            }
            answer
        }

        /// The answer of long-poll `mine` if it has one now.
        fn ready(&self, mine: u64, limit: usize, timeout: u64) -> Option<Canned> {
            let st = self.state();
            if st.generation != mine {
                return Some(Self::refusal(409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"));
            }
            if st.webhook {
                return Some(Self::refusal(409, WEBHOOK_ACTIVE));
            }
            if st.pending.is_empty() && timeout > 0 {
                return None;
            }
            let page: Vec<&str> = st
                .pending
                .iter()
                .take(limit)
                .map(|(_, text)| text.as_str())
                .collect();
            Some(Canned {
                status: 200,
                headers: Vec::new(),
                body: format!("{{\"ok\":true,\"result\":[{}]}}", page.join(",")),
            })
        }
    }

    const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

    // ---- helpers --------------------------------------------------------------------

    fn kind(options: Value) -> TelegramUpdates {
        TelegramUpdates::from_options(&options).unwrap()
    }

    fn http() -> ReqwestHttp {
        ReqwestHttp::new(4 << 20).unwrap()
    }

    fn creds(token: &str) -> Vec<Secret> {
        vec![Secret::new("bot", token.as_bytes(), None)]
    }

    fn ctx<'a>(http: &'a ReqwestHttp, credentials: &'a [Secret]) -> FetchContext<'a> {
        FetchContext {
            http,
            credentials,
            now_ms: 1_767_225_600_000,
            timeout: Duration::from_secs(30),
        }
    }

    fn ids(items: &[Vec<u8>]) -> Vec<i64> {
        items
            .iter()
            .map(|i| serde_json::from_slice::<UpdateId>(i).unwrap().update_id)
            .collect()
    }

    fn texts(updates: &[(i64, String)]) -> Vec<Vec<u8>> {
        updates.iter().map(|(_, t)| t.as_bytes().to_vec()).collect()
    }

    /// The runner's way: fetch, take the items, store the cursor, fetch again until `more`
    /// is false. `between` runs after every page (new updates arriving meanwhile).
    async fn drain(
        kind: &TelegramUpdates,
        ctx: &FetchContext<'_>,
        mut cursor: Option<Value>,
        mut between: impl FnMut(usize),
    ) -> (Vec<Vec<u8>>, Option<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        loop {
            let page = kind.fetch(ctx, cursor.as_ref()).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= kind.limit as usize);
            items.extend(page.items);
            cursor = Some(page.cursor);
            between(pages);
            if !page.more {
                return (items, cursor, pages);
            }
        }
    }

    fn leaks(e: &FetchError) -> bool {
        let shown = format!("{e} {e:?}");
        shown.contains(TOKEN) || shown.contains(SECRET_HALF)
    }

    // ---- paging and confirmation ----------------------------------------------------------

    #[tokio::test]
    async fn over_a_thousand_updates_arrive_each_exactly_once_in_order_with_new_ones_added_between_fetches(
    ) {
        let (bot, base) = FakeBot::start().await;
        bot.add(1_000);
        let kind = kind(json!({"api_base": base, "limit": 37}));
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);

        let mut added = 0;
        let (mut items, cursor, pages) = drain(&kind, &ctx, None, |page| {
            // New updates land while the runner is enqueueing: some pages get 0, some 1, 2 …
            if added < 250 {
                bot.add(page % 5);
                added += page % 5;
            }
        })
        .await;
        assert!(pages > 27, "{pages} pages");
        // Whatever arrives after the last page is picked up by the next run.
        bot.add(3);
        let (rest, cursor, _) = drain(&kind, &ctx, cursor, |_| {}).await;
        items.extend(rest);

        let all = bot.state().all.clone();
        assert!(all.len() > 1_000);
        assert_eq!(
            ids(&items),
            all.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        assert_eq!(
            items,
            texts(&all),
            "items are Telegram's bytes, not re-serialised"
        );

        // The last page stays on Telegram until a fetch with its cursor confirms it.
        assert!(!bot.state().pending.is_empty());
        let page = kind.fetch(&ctx, cursor.as_ref()).await.unwrap();
        assert!(page.items.is_empty() && !page.more);
        assert_eq!(
            page.cursor,
            cursor.unwrap(),
            "an empty page keeps the cursor"
        );
        assert!(bot.state().pending.is_empty());
    }

    #[tokio::test]
    async fn a_refetch_from_the_older_stored_offset_returns_exactly_the_unconfirmed_page() {
        let (bot, base) = FakeBot::start().await;
        let first = bot.add(250)[0];
        let kind = kind(json!({"api_base": base}));
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);

        // First run: no cursor yet; Telegram starts at its earliest unconfirmed update.
        let p1 = kind.fetch(&ctx, None).await.unwrap();
        assert!(!bot.last_query().contains_key("offset"));
        assert_eq!(ids(&p1.items), (first..first + 100).collect::<Vec<_>>());
        assert_eq!(p1.cursor, json!({"offset": first + 100}));
        assert!(p1.more);
        // Crash before the first cursor write: nothing was confirmed, the page comes back.
        assert_eq!(kind.fetch(&ctx, None).await.unwrap(), p1);

        let p2 = kind.fetch(&ctx, Some(&p1.cursor)).await.unwrap();
        assert_eq!(bot.last_query()["offset"], (first + 100).to_string());
        assert_eq!(
            ids(&p2.items),
            (first + 100..first + 200).collect::<Vec<_>>()
        );
        // Crash after enqueueing page 2, before storing its cursor: the restart asks with the
        // stored (older) offset and gets exactly page 2 again — not page 1 (confirmed), and
        // no gap.
        let again = kind.fetch(&ctx, Some(&p1.cursor)).await.unwrap();
        assert_eq!(again, p2);

        let p3 = kind.fetch(&ctx, Some(&p2.cursor)).await.unwrap();
        assert_eq!(
            ids(&p3.items),
            (first + 200..first + 250).collect::<Vec<_>>()
        );
        assert!(!p3.more);
        assert_eq!(p3.cursor, json!({"offset": first + 250}));
        // Page 3 is still held by Telegram until the next run's first fetch confirms it.
        assert_eq!(bot.state().pending.len(), 50);
    }

    #[tokio::test]
    async fn a_long_poll_returns_as_soon_as_an_update_arrives() {
        let (bot, base) = FakeBot::start().await;
        let kind = Arc::new(kind(json!({"api_base": base, "timeout_seconds": 40})));
        let poller = {
            let kind = kind.clone();
            tokio::spawn(async move {
                let (http, creds) = (http(), creds(TOKEN));
                let mut ctx = ctx(&http, &creds);
                ctx.timeout = Duration::from_secs(60);
                kind.fetch(&ctx, None).await
            })
        };
        bot.until("the long-poll is waiting", |s| s.waiting == 1)
            .await;
        assert_eq!(bot.last_query()["timeout"], "40");
        let added = bot.add(1);
        let page = tokio::time::timeout(Duration::from_secs(10), poller)
            .await
            .expect("answered at once, not after 40 s")
            .unwrap()
            .unwrap();
        assert_eq!(ids(&page.items), added);
        assert!(!page.more);
    }

    #[tokio::test]
    async fn the_long_poll_is_shortened_to_end_inside_the_request_timeout() {
        let (bot, base) = FakeBot::start().await;
        bot.add(1);
        let (http, creds) = (http(), creds(TOKEN));
        let mut ctx = ctx(&http, &creds);
        let kind = kind(json!({"api_base": base, "timeout_seconds": 50}));

        ctx.timeout = Duration::from_secs(20);
        kind.fetch(&ctx, None).await.unwrap();
        assert_eq!(bot.last_query()["timeout"], "15");
        ctx.timeout = Duration::from_secs(3);
        kind.fetch(&ctx, None).await.unwrap();
        assert_eq!(bot.last_query()["timeout"], "0", "no room: a short poll");
    }

    #[tokio::test]
    async fn the_request_carries_limit_timeout_and_allowed_updates_and_the_token_in_the_path() {
        let (bot, base) = FakeBot::start().await;
        bot.add(3);
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);

        let with_types = kind(json!({
            "api_base": format!("{base}/"),
            "limit": 2,
            "allowed_updates": ["message", "callback_query"],
        }));
        let page = with_types.fetch(&ctx, None).await.unwrap();
        assert_eq!(page.items.len(), 2);
        assert!(page.more, "a full page says there may be more");
        let q = bot.last_query();
        assert_eq!(q["limit"], "2");
        assert_eq!(q["timeout"], "0");
        assert_eq!(q["allowed_updates"], r#"["message","callback_query"]"#);

        kind(json!({"api_base": base, "allowed_updates": []}))
            .fetch(&ctx, None)
            .await
            .unwrap();
        assert_eq!(bot.last_query()["allowed_updates"], "[]");
        kind(json!({"api_base": base}))
            .fetch(&ctx, None)
            .await
            .unwrap();
        let q = bot.last_query();
        assert!(
            !q.contains_key("allowed_updates"),
            "absent: Telegram keeps the last setting"
        );
        assert_eq!(q["limit"], "100");
    }

    #[tokio::test]
    async fn items_extract_as_webhook_deliveries_with_the_update_id_as_dedupe_key() {
        let (bot, base) = FakeBot::start().await;
        let added = bot.add(3);
        let (http, bot_token) = (http(), creds(TOKEN));
        let page = kind(json!({"api_base": base}))
            .fetch(&ctx(&http, &bot_token), None)
            .await
            .unwrap();
        let provider = Telegram::from_config(&Value::Null, creds("webhook_secret")).unwrap();
        let headers = Headers::new();
        for (item, id) in page.items.iter().zip(added) {
            let req = InboundRequest {
                method: "POST",
                headers: &headers,
                query: &[],
                body: item,
            };
            let got = provider.extract(&req).unwrap();
            assert_eq!(got[0].event_id, Some(id.to_string()));
        }
    }

    // ---- refusals ---------------------------------------------------------------------

    #[tokio::test]
    async fn a_second_concurrent_poller_ends_the_first_with_a_fatal_conflict_naming_it() {
        let (bot, base) = FakeBot::start().await;
        let first = {
            let kind = kind(json!({"api_base": base, "timeout_seconds": 30}));
            tokio::spawn(async move {
                let (http, creds) = (http(), creds(TOKEN));
                kind.fetch(&ctx(&http, &creds), None).await
            })
        };
        bot.until("the first poller is waiting", |s| s.waiting == 1)
            .await;
        let (http, creds) = (http(), creds(TOKEN));
        let second = kind(json!({"api_base": base}))
            .fetch(&ctx(&http, &creds), None)
            .await;
        assert!(second.is_ok(), "{second:?}");
        let Err(FetchError::Fatal(m)) = first.await.unwrap() else {
            panic!("the superseded long-poll must fail fatally");
        };
        assert!(m.starts_with("HTTP 409"), "{m}");
        assert!(m.contains("another getUpdates poller"), "{m}");
        assert!(m.contains("terminated by other getUpdates request"), "{m}");
        assert!(!m.contains(SECRET_HALF));
    }

    #[tokio::test]
    async fn a_webhook_on_the_bot_is_a_fatal_conflict_saying_to_delete_it_or_use_it() {
        let (bot, base) = FakeBot::start().await;
        bot.add(2);
        bot.set_webhook(true);
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);
        let kind = kind(json!({"api_base": base}));
        let Err(FetchError::Fatal(m)) = kind.fetch(&ctx, None).await else {
            panic!("a webhook refuses getUpdates");
        };
        assert!(m.starts_with("HTTP 409"), "{m}");
        assert!(
            m.contains("webhook set") && m.contains("deleteWebhook"),
            "{m}"
        );
        assert!(!m.contains("another getUpdates poller"), "{m}");

        bot.set_webhook(false);
        assert_eq!(kind.fetch(&ctx, None).await.unwrap().items.len(), 2);
    }

    #[tokio::test]
    async fn flood_control_is_throttled_for_the_retry_after_in_the_body_or_the_longer_header() {
        let (bot, base) = FakeBot::start().await;
        let body = json!({"ok": false, "error_code": 429,
            "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}})
        .to_string();
        bot.script(429, &[], &body);
        bot.script(429, &[("Retry-After", "12")], &body);
        bot.script(429, &[("Retry-After", "3")], &body);
        bot.script(429, &[], "slow down");
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);
        let kind = kind(json!({"api_base": base}));
        for expected in [Some(7), Some(12), Some(7), None] {
            match kind.fetch(&ctx, None).await {
                Err(FetchError::Throttled {
                    retry_after,
                    detail,
                }) => {
                    assert_eq!(retry_after, expected.map(Duration::from_secs));
                    assert!(detail.starts_with("HTTP 429"), "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_bad_gateway_is_transient() {
        let (bot, base) = FakeBot::start().await;
        bot.script(502, &[], "<html><body>502 Bad Gateway</body></html>");
        let (http, creds) = (http(), creds(TOKEN));
        let got = kind(json!({"api_base": base}))
            .fetch(&ctx(&http, &creds), None)
            .await;
        assert!(
            matches!(&got, Err(FetchError::Transient(m)) if m.starts_with("HTTP 502")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_wrong_token_is_fatal_401_without_quoting_it() {
        let (_bot, base) = FakeBot::start().await;
        let wrong = "123456789:AAH-wrong_Tok3n";
        let (http, creds) = (http(), creds(wrong));
        let got = kind(json!({"api_base": base}))
            .fetch(&ctx(&http, &creds), None)
            .await;
        let Err(FetchError::Fatal(m)) = got else {
            panic!("{got:?}")
        };
        assert!(m.starts_with("HTTP 401") && m.contains("@BotFather"), "{m}");
        assert!(!m.contains("AAH-wrong_Tok3n"), "{m}");
    }

    #[tokio::test]
    async fn the_token_never_appears_in_any_error() {
        let (bot, base) = FakeBot::start().await;
        let (http, creds) = (http(), creds(TOKEN));
        let mut ctx = ctx(&http, &creds);
        let kind = kind(json!({"api_base": base}));
        let mut errors = Vec::new();

        // Bodies that quote the URL back, as proxies and error pages do.
        let echo = format!("{base}/bot{TOKEN}/getUpdates");
        bot.script(404, &[], &format!("no route {echo}"));
        bot.script(502, &[], &format!("upstream failed for {echo}"));
        bot.script(429, &[], &format!("{{\"url\":\"{echo}\"}}"));
        bot.script(200, &[], &format!("not json {echo}"));
        bot.script(
            200,
            &[],
            &json!({"ok": false, "description": format!("bad {TOKEN}")}).to_string(),
        );
        for _ in 0..5 {
            errors.push(kind.fetch(&ctx, None).await.unwrap_err());
        }
        bot.set_webhook(true);
        errors.push(kind.fetch(&ctx, None).await.unwrap_err());

        // The HTTP client quotes the URL in network errors and timeouts.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let unreachable = TelegramUpdates::from_options(&json!({"api_base": gone})).unwrap();
        errors.push(unreachable.fetch(&ctx, None).await.unwrap_err());
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung = TelegramUpdates::from_options(
            &json!({"api_base": format!("http://{}", silent.local_addr().unwrap())}),
        )
        .unwrap();
        ctx.timeout = Duration::from_millis(300);
        errors.push(hung.fetch(&ctx, None).await.unwrap_err());

        assert!(
            matches!(errors[6], FetchError::Transient(_)),
            "{:?}",
            errors[6]
        );
        assert!(
            matches!(errors[7], FetchError::Transient(_)),
            "{:?}",
            errors[7]
        );
        for e in &errors {
            assert!(!leaks(e), "token leaked: {e:?}");
        }
        assert!(
            errors.iter().any(|e| e.to_string().contains("<token>")),
            "redacted, not dropped: {errors:?}"
        );
    }

    #[tokio::test]
    async fn bodies_that_are_not_documented_updates_are_fatal() {
        let (bot, base) = FakeBot::start().await;
        let cases = [
            ("<html>maintenance</html>", "not a Telegram response"),
            (r#"{"ok":true}"#, "no \"result\""),
            (r#"{"ok":true,"result":{"update_id":1}}"#, "not an array"),
            (r#"{"ok":true,"result":[{"message":{}}]}"#, "update 0"),
            (r#"{"ok":true,"result":[{"update_id":"7"}]}"#, "update 0"),
            (
                r#"{"ok":true,"result":[{"update_id":5},{"update_id":4}]}"#,
                "must ascend",
            ),
            (
                r#"{"ok":true,"result":[{"update_id":9223372036854775807}]}"#,
                "no next offset",
            ),
            (
                r#"{"ok":false,"description":"odd"}"#,
                "\"ok\" is false: odd",
            ),
            ("", "not a Telegram response"),
        ];
        for (body, _) in &cases {
            bot.script(200, &[], body);
        }
        let (http, creds) = (http(), creds(TOKEN));
        let ctx = ctx(&http, &creds);
        let kind = kind(json!({"api_base": base}));
        for (body, why) in cases {
            match kind.fetch(&ctx, None).await {
                Err(FetchError::Fatal(m)) => assert!(m.contains(why), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_cursor_or_credential_it_cannot_use_is_fatal_before_any_request() {
        let (bot, base) = FakeBot::start().await;
        let (http, good) = (http(), creds(TOKEN));
        let kind = kind(json!({"api_base": base}));
        for cursor in [
            json!({"offset": "12"}),
            json!(12),
            json!({"offset": 1, "x": 2}),
            json!({"offset": 1.5}),
        ] {
            let got = kind.fetch(&ctx(&http, &good), Some(&cursor)).await;
            assert!(
                matches!(&got, Err(FetchError::Fatal(m)) if m.contains("cursor")),
                "{cursor}: {got:?}"
            );
        }
        for cursor in [json!({}), Value::Null] {
            kind.fetch(&ctx(&http, &good), Some(&cursor)).await.unwrap();
            assert!(!bot.last_query().contains_key("offset"));
        }

        let malformed = creds("123:abc/../getMe?x=");
        let got = kind.fetch(&ctx(&http, &malformed), None).await;
        assert!(
            matches!(&got, Err(FetchError::Fatal(m)) if m.contains("not a Telegram bot token") && !m.contains("abc")),
            "{got:?}"
        );
        let expired = vec![Secret::new("bot", TOKEN.as_bytes(), Some(0))];
        let got = kind.fetch(&ctx(&http, &expired), None).await;
        assert!(
            matches!(&got, Err(FetchError::Fatal(m)) if m.contains("no live poll credential")),
            "{got:?}"
        );
        assert_eq!(
            bot.state().queries.len(),
            2,
            "only the two good fetches went out"
        );
    }

    // ---- options ----------------------------------------------------------------------

    #[test]
    fn options_have_defaults_and_every_error_names_its_field() {
        let built = super::super::build("telegram_updates", &Value::Null).unwrap();
        assert_eq!(built.name(), "telegram_updates");
        assert!(super::super::KINDS.contains(&"telegram_updates"));
        assert_eq!(
            TelegramUpdates::from_options(&json!({})).unwrap(),
            TelegramUpdates {
                api_base: DEFAULT_API_BASE.into(),
                limit: 100,
                timeout_seconds: 0,
                allowed_updates: None,
            }
        );
        let cases = [
            (json!({"limt": 5}), "limt"),
            (json!({"limit": 0}), "limit"),
            (json!({"limit": 101}), "limit"),
            (json!({"limit": "10"}), "limit"),
            (json!({"timeout_seconds": 51}), "timeout_seconds"),
            (json!({"timeout_seconds": -1}), "timeout_seconds"),
            (json!({"allowed_updates": "message"}), "allowed_updates"),
            (json!({"allowed_updates": ["Message"]}), "allowed_updates"),
            (json!({"api_base": "api.telegram.org"}), "api_base"),
            (json!({"api_base": "https://x/?a=1"}), "api_base"),
            (json!({"api_base": 5}), "api_base"),
        ];
        for (options, named) in cases {
            let err = TelegramUpdates::from_options(&options)
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{options}: {err}");
        }
    }
}
