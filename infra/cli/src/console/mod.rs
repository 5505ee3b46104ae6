//! `inlet console`: a web console on loopback over the local store or a deployed stack — the
//! trail with filters and a chart, one event's story, the dead-letter queue with replay, and
//! the poll cursors. It runs with the operator's own credentials and has no login, so it only
//! listens on a loopback address, answers only requests whose `Host` names that address (a
//! DNS-rebound name is refused), and takes a replay only as a POST carrying this process's
//! random token from a same-origin form.

mod pages;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, RawForm, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use inlet::ports::{Clock, SystemClock};

use crate::dlq::{Stack, Where};
use crate::events::{self, Filters, Query};

/// The default address: beside `inlet dev`'s 8787.
const DEFAULT_LISTEN: &str = "127.0.0.1:8788";
/// Rows one events page shows at most, whatever `limit` asks.
pub(crate) const MAX_ROWS: usize = 500;
/// Rows the chart counts at most (the newest of the filtered trail).
pub(crate) const CHART_ROWS: usize = 2_000;
/// The events page's window when `since` is not given: a live page that refreshes every few
/// seconds must not list a source's whole history each time.
const DEFAULT_SINCE: &str = "24h";
/// Dead letters one DLQ page lists, and ids one replay takes, at most.
pub(crate) const MAX_DEAD_LETTERS: usize = 200;
/// A query string or form longer than this is refused: every field is an id or a time.
const MAX_QUERY_BYTES: usize = 8 * 1024;
/// One field's value, at most.
const MAX_FIELD_BYTES: usize = 512;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

#[derive(clap::Args)]
pub struct Args {
    /// The loopback address to serve on (127.0.0.1 or ::1; port 0: any free one, printed).
    /// The console has no login, so any other address is refused.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Show everything and change nothing: no replay controls, and the server refuses a
    /// replay request (403).
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    at: Where,
}

/// What every handler shares.
pub(crate) struct App {
    stack: Stack,
    read_only: bool,
    /// A per-process random token every replay form carries.
    csrf: String,
    /// The `Host` values this console answers to: its own address, and `localhost:PORT` on
    /// 127.0.0.1.
    hosts: Vec<String>,
}

/// `--listen`, checked to be a loopback address.
fn loopback(listen: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = match listen.strip_prefix("localhost:") {
        Some(port) => SocketAddr::new(
            IpAddr::from([127, 0, 0, 1]),
            port.parse()
                .map_err(|_| format!("--listen {listen:?}: bad port"))?,
        ),
        None => listen.parse().map_err(|_| {
            format!("--listen {listen:?}: not an IP:PORT address (e.g. {DEFAULT_LISTEN})")
        })?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: not a loopback address. The console has no login and acts with \
             your credentials, so it only listens on 127.0.0.1 or [::1]; to reach it from \
             another machine use an SSH tunnel (ssh -L 8788:127.0.0.1:8788 HOST)"
        ));
    }
    Ok(addr)
}

fn hosts_for(addr: SocketAddr) -> Vec<String> {
    let mut hosts = vec![addr.to_string()];
    if addr.ip() == IpAddr::from([127, 0, 0, 1]) {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    hosts
}

/// A random token: two v4 UUIDs (244 random bits from the OS).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub async fn run(args: Args) -> Result<(), String> {
    let addr = loopback(&args.listen)?;
    inlet::telemetry::init_cli_logs(if std::io::stderr().is_terminal() {
        inlet::telemetry::LogFormat::Text
    } else {
        inlet::telemetry::LogFormat::Json
    });
    let stack = Stack::open(args.at).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(App {
        stack,
        read_only: args.read_only,
        csrf: random_token(),
        hosts: hosts_for(bound),
    });
    let mode = if args.read_only { " (read-only)" } else { "" };
    // The first line names the URL: scripts and tests read it to find a port-0 console.
    println!("inlet console: http://{bound}/{mode}");
    let _ = std::io::stdout().flush();
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(events_page))
        .route("/event", get(story_page))
        .route("/event/request", get(archived_body))
        .route("/dlq", get(dlq_page))
        .route("/dlq/confirm", get(confirm_page))
        .route("/dlq/replay", post(replay))
        .route("/polls", get(polls_page))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_QUERY_BYTES))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Whether a state-changing request comes from another site, by what the browser says of
/// it: its `Origin` (when sent) is not this console's, or its `Sec-Fetch-Site` is neither
/// `same-origin` nor `none` (typed into the address bar).
fn cross_site(app: &App, headers: &HeaderMap) -> bool {
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|o| {
        !app.hosts
            .iter()
            .any(|h| o.as_bytes() == format!("http://{h}").as_bytes())
    });
    let foreign_fetch = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v != "same-origin" && v != "none");
    foreign_origin || foreign_fetch
}

/// Every request: its `Host` must be this console's own address (a page of another site
/// whose name was rebound to 127.0.0.1 sends its own name), and anything but GET must come
/// from this console's own pages. Every answer carries the security headers.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    let mut response = if !host.is_some_and(|h| app.hosts.iter().any(|ok| ok == h)) {
        refuse(
            StatusCode::FORBIDDEN,
            "this console answers only to its own loopback address (Host header)",
        )
    } else if changes && cross_site(&app, headers) {
        refuse(StatusCode::FORBIDDEN, "cross-origin request refused")
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the console's own forms.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

fn html(status: StatusCode, page: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found(State(app): State<Arc<App>>) -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::error_page(&app.view(), "Not found", "No such page."),
    )
}

/// The name/value pairs of a query string or form, each bounded.
fn fields(raw: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(_, v)| v.len() > MAX_FIELD_BYTES) {
        return Err(format!("{k}: longer than {MAX_FIELD_BYTES} bytes"));
    }
    Ok(pairs)
}

fn field(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// Every non-empty value of a repeated field (the DLQ's checkboxes), at most
/// `MAX_DEAD_LETTERS`.
fn all(pairs: &[(String, String)], name: &str) -> Result<Vec<String>, String> {
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    if ids.len() > MAX_DEAD_LETTERS {
        return Err(format!("at most {MAX_DEAD_LETTERS} ids at once"));
    }
    Ok(ids)
}

/// What a page needs to know of the console itself.
pub(crate) struct View<'a> {
    pub(crate) read_only: bool,
    pub(crate) aws: bool,
    pub(crate) sources: Vec<&'a str>,
}

impl App {
    fn view(&self) -> View<'_> {
        View {
            read_only: self.read_only,
            aws: matches!(self.stack, Stack::Aws { .. }),
            sources: self
                .stack
                .config()
                .map(|c| c.sources.keys().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    }

    fn bad_request(&self, why: &str) -> Response {
        html(
            StatusCode::BAD_REQUEST,
            pages::error_page(&self.view(), "Bad request", why),
        )
    }

    fn failed(&self, why: &str) -> Response {
        html(
            StatusCode::BAD_GATEWAY,
            pages::error_page(&self.view(), "The store did not answer", why),
        )
    }
}

/// The filters of the events page, as typed (kept to fill the form again).
#[derive(Default)]
pub(crate) struct Form {
    pub(crate) source: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) event_type: Option<String>,
    pub(crate) entity: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) limit: usize,
}

impl Form {
    fn read(pairs: &[(String, String)]) -> Result<Self, String> {
        let limit = match field(pairs, "limit") {
            None => 100,
            Some(text) => text
                .parse::<usize>()
                .map_err(|_| format!("limit {text:?} is not a number"))?
                .clamp(1, MAX_ROWS),
        };
        Ok(Self {
            source: field(pairs, "source"),
            status: field(pairs, "status"),
            event_type: field(pairs, "type"),
            entity: field(pairs, "entity"),
            id: field(pairs, "id"),
            since: field(pairs, "since").or_else(|| Some(DEFAULT_SINCE.to_owned())),
            until: field(pairs, "until"),
            limit,
        })
    }

    /// The trail filters, reading up to the chart's worth of rows.
    fn filters(&self) -> Filters {
        Filters {
            source: self.source.clone(),
            status: self.status.clone(),
            event_type: self.event_type.clone(),
            entity: self.entity.clone(),
            id: self.id.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: CHART_ROWS,
            ..Filters::default()
        }
    }
}

async fn events_page(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let form = match fields(raw.as_deref()).and_then(|p| Form::read(&p)) {
        Ok(f) => f,
        Err(e) => return app.bad_request(&e),
    };
    if let Err(e) = events::check_source(&app.stack, form.source.as_deref()) {
        return app.bad_request(&e);
    }
    let now_ms = SystemClock.now_ms();
    let query = match Query::new(form.filters(), now_ms) {
        Ok(q) => q.for_stack(&app.stack),
        Err(e) => return app.bad_request(&e),
    };
    let (_, _, ledger) = app.stack.parts();
    let lines = match events::rows(ledger, &query, now_ms).await {
        Ok(l) => l,
        Err(e) => return app.failed(&e),
    };
    let window = pages::Window::of(&form, &lines, now_ms);
    html(
        StatusCode::OK,
        pages::events_page(&app.view(), &form, &lines, &window),
    )
}

async fn story_page(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let id = match fields(raw.as_deref()) {
        Ok(p) => field(&p, "id"),
        Err(e) => return app.bad_request(&e),
    };
    let Some(id) = id else {
        return app.bad_request("which event? (?id=…: a dedupe key or provider event id)");
    };
    match events::story(&app.stack, &id, SystemClock.now_ms()).await {
        Ok(story) => {
            let archived = match &story.request_key {
                Some(_) => Some(events::archived(&app.stack, &story).await),
                None => None,
            };
            html(
                StatusCode::OK,
                pages::story_page(&app.view(), &story, archived.as_ref()),
            )
        }
        Err(e) => html(
            StatusCode::NOT_FOUND,
            pages::error_page(&app.view(), "No such event", &e),
        ),
    }
}

/// The archived request's body, byte-exact, as a download (never rendered: it is the
/// sender's bytes).
async fn archived_body(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let id = match fields(raw.as_deref()) {
        Ok(p) => field(&p, "id"),
        Err(e) => return app.bad_request(&e),
    };
    let Some(id) = id else {
        return app.bad_request("which event? (?id=…)");
    };
    let found = match events::story(&app.stack, &id, SystemClock.now_ms()).await {
        Ok(story) => events::archived(&app.stack, &story)
            .await
            .and_then(|doc| Ok((doc.body_bytes()?, doc.body_sha256))),
        Err(e) => Err(e),
    };
    match found {
        Ok((body, sha256)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"request-{}.bin\"", &sha256[..16]),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => html(
            StatusCode::NOT_FOUND,
            pages::error_page(&app.view(), "No archived request", &e),
        ),
    }
}

async fn dlq_page(State(app): State<Arc<App>>) -> Response {
    let (_, dlq, ledger) = app.stack.parts();
    match inlet::dlq::list(dlq, ledger, MAX_DEAD_LETTERS).await {
        Ok(letters) => html(StatusCode::OK, pages::dlq_page(&app.view(), &letters)),
        Err(e) => app.failed(&e.to_string()),
    }
}

fn read_only_refusal() -> Response {
    refuse(
        StatusCode::FORBIDDEN,
        "this console is read-only (--read-only): it replays nothing",
    )
}

/// "Replay these?": no change yet, so a GET; the form it shows carries the token.
async fn confirm_page(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    if app.read_only {
        return read_only_refusal();
    }
    let ids = match fields(raw.as_deref()).and_then(|p| all(&p, "id")) {
        Ok(ids) => ids,
        Err(e) => return app.bad_request(&e),
    };
    if ids.is_empty() {
        return app.bad_request("select at least one dead letter to replay");
    }
    html(
        StatusCode::OK,
        pages::confirm_page(&app.view(), &ids, &app.csrf),
    )
}

/// The ids a replay form names, once it is a form carrying this console's token; else the
/// status and the reason to answer with.
fn replay_ids(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, (StatusCode, String)> {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_owned());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Some(text) = std::str::from_utf8(body).ok().filter(|_| is_form) else {
        return Err(bad(
            "a replay is a form (application/x-www-form-urlencoded)",
        ));
    };
    let pairs = fields(Some(text)).map_err(|e| bad(&e))?;
    // Compared in constant time, as every secret is: a local page that could time the
    // comparison must learn nothing of the token from it.
    let given = field(&pairs, "csrf").unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        app.csrf.as_bytes(),
    )) {
        return Err((
            StatusCode::FORBIDDEN,
            "missing or wrong form token: replay from the console's own confirmation page".into(),
        ));
    }
    match all(&pairs, "id") {
        Ok(ids) if !ids.is_empty() => Ok(ids),
        Ok(_) => Err(bad("select at least one dead letter to replay")),
        Err(e) => Err(bad(&e)),
    }
}

/// Move the selected dead letters back to the main queue (as `inlet replay --ids`).
async fn replay(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    if app.read_only {
        return read_only_refusal();
    }
    let ids = match replay_ids(&app, &headers, &body) {
        Ok(ids) => ids,
        Err((StatusCode::BAD_REQUEST, why)) => return app.bad_request(&why),
        Err((status, why)) => return (status, why).into_response(),
    };
    let (main, dlq, _) = app.stack.parts();
    let filter = inlet::dlq::Filter {
        ids: ids.clone(),
        ..Default::default()
    };
    let options = inlet::dlq::ReplayOptions {
        dry_run: false,
        force: false,
        now_ms: SystemClock.now_ms(),
    };
    match inlet::dlq::replay(dlq, main, &filter, options, &mut |_| {}).await {
        Ok(done) => {
            tracing::info!(
                asked = ids.len(),
                scanned = done.scanned,
                moved = done.moved,
                "console replay"
            );
            html(
                StatusCode::OK,
                pages::replayed_page(&app.view(), &ids, &done),
            )
        }
        Err(e) => app.failed(&format!(
            "{e} (safe to retry: a message sent twice is deduplicated)"
        )),
    }
}

async fn polls_page(State(app): State<Arc<App>>) -> Response {
    let now_ms = SystemClock.now_ms();
    let Some(cfg) = app.stack.config() else {
        return html(StatusCode::OK, pages::polls_page(&app.view(), &[], now_ms));
    };
    let mut polls = Vec::new();
    for (id, source) in &cfg.sources {
        let Some(poll) = &source.poll else { continue };
        let state = match app.stack.polls().state(id).await {
            Ok(s) => s,
            Err(e) => return app.failed(&e.to_string()),
        };
        let runs = match crate::cursor::last_runs(&app.stack, id, now_ms).await {
            Ok(r) => r,
            Err(e) => return app.failed(&e),
        };
        polls.push(pages::Poll {
            source: id.clone(),
            kind: poll.kind.name().to_string(),
            every_ms: poll.every.as_millis() as i64,
            state,
            runs,
        });
    }
    html(
        StatusCode::OK,
        pages::polls_page(&app.view(), &polls, now_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served() {
        assert!(loopback("127.0.0.1:0").is_ok());
        assert!(loopback("[::1]:8788").is_ok());
        assert_eq!(
            loopback("localhost:9000").map(|a| a.to_string()),
            Ok("127.0.0.1:9000".to_string())
        );
        for far in ["0.0.0.0:8788", "192.168.1.5:8788", "[::]:8788"] {
            let err = loopback(far).expect_err(far);
            assert!(err.contains("not a loopback address"), "{err}");
        }
        assert!(loopback("example.com:80").is_err());
    }

    #[test]
    fn fields_are_bounded() {
        let long = format!("id={}", "a".repeat(MAX_FIELD_BYTES + 1));
        assert!(fields(Some(&long)).is_err());
        let many = "id=x&".repeat(MAX_DEAD_LETTERS + 1);
        let pairs = fields(Some(&many)).expect("short enough");
        assert!(all(&pairs, "id").is_err());
        let form = Form::read(&fields(Some("limit=100000")).expect("pairs")).expect("form");
        assert_eq!(form.limit, MAX_ROWS);
        // No since: the last day, not the whole history.
        assert_eq!(form.since.as_deref(), Some(DEFAULT_SINCE));
        let form = Form::read(&fields(Some("since=2h")).expect("pairs")).expect("form");
        assert_eq!(form.since.as_deref(), Some("2h"));
    }
}
