//! The console's pages. Every value on them comes from outside senders (ids, types, reasons),
//! so they are maud templates: each value inserted is HTML-escaped, and nothing is inlined
//! (no `style` attributes, no inline script: the Content-Security-Policy forbids both).

use inlet::archive::ArchivedRequest;
use inlet::dlq::{DeadLetter, Progress};
use inlet::ports::{PollState, TrailStatus};
use inlet::time::format_rfc3339_ms;
use maud::{html, Markup, DOCTYPE};

use super::{Form, View, MAX_DEAD_LETTERS, MAX_ROWS};
use crate::events::{what, Line, Story};

/// An event's statuses; the filter offers them and then the trail's.
const EVENT_STATUSES: [&str; 4] = ["dispatched", "in_progress", "failed", "dead"];

/// The chart's bars.
const BUCKETS: usize = 30;
const CHART_W: i64 = 600;
const CHART_H: i64 = 120;

/// The chart's series: a status group, its colour and its legend.
const SERIES: [(&str, &str); 4] = [
    ("dispatched", "#2e7d32"),
    ("failed or dead", "#c62828"),
    ("refused", "#ef6c00"),
    ("other", "#78909c"),
];

fn series_of(status: &str) -> usize {
    match status {
        "dispatched" => 0,
        "failed" | "dead" => 1,
        "refused" => 2,
        _ => 3,
    }
}

fn layout(view: &View<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · inlet console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    nav {
                        a href="/" { "Events" }
                        a href="/dlq" { "Dead letters" }
                        a href="/polls" { "Polls" }
                    }
                    form.search method="get" action="/" {
                        input type="search" name="id" placeholder="event id, dedupe key or payment id"
                            aria-label="Find an event by id";
                        button #search type="submit" { "Find" }
                    }
                    span.mode {
                        @if view.aws { "deployed stack" } @else { "local store" }
                        @if view.read_only { " · read-only" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub(crate) fn error_page(view: &View<'_>, title: &str, why: &str) -> Markup {
    layout(view, title, html! { p.error { (why) } })
}

fn story_link(key: &str, text: &str) -> Markup {
    let href = format!("/event?{}", query(&[("id", key)]));
    html! { a.story href=(href) { (text) } }
}

/// A query string, each value percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn text_input(name: &str, label: &str, value: &Option<String>, hint: &str) -> Markup {
    html! {
        label {
            (label)
            input type="text" name=(name) value=[value.as_deref()] placeholder=(hint);
        }
    }
}

fn filter_form(view: &View<'_>, form: &Form) -> Markup {
    html! {
        form.filters method="get" action="/" {
            label {
                "source"
                @if view.sources.is_empty() {
                    input type="text" name="source" value=[form.source.as_deref()];
                } @else {
                    select name="source" {
                        option value="" { "any" }
                        @for s in &view.sources {
                            option value=(s) selected[form.source.as_deref() == Some(*s)] { (s) }
                        }
                    }
                }
            }
            label {
                "status"
                select name="status" {
                    option value="" { "any" }
                    @for s in EVENT_STATUSES.into_iter().chain(TrailStatus::ALL.iter().map(|t| t.as_str())) {
                        option value=(s) selected[form.status.as_deref() == Some(s)] { (s) }
                    }
                }
            }
            (text_input("type", "type", &form.event_type, "payment.succeeded"))
            (text_input("entity", "entity", &form.entity, "customer or player"))
            (text_input("id", "id", &form.id, "event id or key"))
            (text_input("since", "since", &form.since, "2h or RFC 3339"))
            (text_input("until", "until", &form.until, "RFC 3339"))
            label {
                "rows"
                input type="number" name="limit" min="1" max=(MAX_ROWS) value=(form.limit);
            }
            button #filter type="submit" { "Show" }
        }
    }
}

/// The time span the chart covers and how it is cut.
pub(crate) struct Window {
    from_ms: i64,
    to_ms: i64,
    /// Per bucket, the count of each series.
    counts: Vec<[u32; SERIES.len()]>,
    /// Whether the chart saw every matching row (else only the newest `CHART_ROWS`).
    complete: bool,
}

impl Window {
    /// `since`..`until` when given, else the oldest row read up to now; rows counted by
    /// bucket and status.
    pub(crate) fn of(form: &Form, lines: &[Line], now_ms: i64) -> Self {
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| inlet::dlq::parse_since(t, now_ms).ok())
        };
        let to_ms = parse(&form.until).unwrap_or(now_ms);
        let oldest = lines
            .iter()
            .map(|l| l.at_ms)
            .min()
            .unwrap_or(to_ms - 3_600_000);
        let from_ms = parse(&form.since).unwrap_or(oldest).min(to_ms - 1_000);
        let span = (to_ms - from_ms).max(1);
        let mut counts = vec![[0u32; SERIES.len()]; BUCKETS];
        for l in lines {
            if l.at_ms < from_ms || l.at_ms > to_ms {
                continue;
            }
            let b = (((l.at_ms - from_ms) as i128 * BUCKETS as i128) / span as i128) as usize;
            counts[b.min(BUCKETS - 1)][series_of(&l.status)] += 1;
        }
        Self {
            from_ms,
            to_ms,
            counts,
            complete: lines.len() < super::CHART_ROWS,
        }
    }
}

/// One bar segment of the chart.
struct Bar {
    x: i64,
    y: i64,
    h: i64,
    series: usize,
    count: u32,
    from_ms: i64,
}

/// Rows per bucket, stacked by status: inline SVG, drawn on the server.
fn chart(w: &Window) -> Markup {
    let top = w
        .counts
        .iter()
        .map(|c| c.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar_w = CHART_W / BUCKETS as i64;
    let bucket_ms = (w.to_ms - w.from_ms) / BUCKETS as i64;
    let mut bars = Vec::new();
    for (i, c) in w.counts.iter().enumerate() {
        let mut y = CHART_H;
        for (series, &count) in c.iter().enumerate().filter(|(_, n)| **n > 0) {
            let h = (i64::from(count) * CHART_H / i64::from(top)).max(1);
            y -= h;
            bars.push(Bar {
                x: i as i64 * bar_w,
                y,
                h,
                series,
                count,
                from_ms: w.from_ms + i as i64 * bucket_ms,
            });
        }
    }
    // Whole seconds, or milliseconds for a window shorter than the buckets' count.
    let per = match bucket_ms.max(0) as u64 {
        ms if ms >= 1000 => std::time::Duration::from_secs(ms / 1000),
        ms => std::time::Duration::from_millis(ms),
    };
    html! {
        figure #chart data-live {
            svg xmlns="http://www.w3.org/2000/svg" width=(CHART_W) height=(CHART_H + 20)
                viewBox=(format!("0 0 {CHART_W} {}", CHART_H + 20)) role="img"
                aria-label="rows per time bucket by status" {
                @for b in &bars {
                    rect x=(b.x) y=(b.y) width=(bar_w - 2) height=(b.h) fill=(SERIES[b.series].1) {
                        title { (b.count) " " (SERIES[b.series].0) " from " (format_rfc3339_ms(b.from_ms)) }
                    }
                }
                text x="0" y=(CHART_H + 15) font-size="11" { (format_rfc3339_ms(w.from_ms)) }
                text x=(CHART_W) y=(CHART_H + 15) font-size="11" text-anchor="end" {
                    (format_rfc3339_ms(w.to_ms))
                }
            }
            figcaption {
                "Rows per " (humantime::format_duration(per)) ", highest bar " (top) ": "
                @for (name, colour) in SERIES {
                    span.legend {
                        svg width="10" height="10" { rect width="10" height="10" fill=(colour) {} }
                        " " (name)
                    }
                }
                @if !w.complete { " (the newest " (super::CHART_ROWS) " rows only)" }
            }
        }
    }
}

fn rows_table(lines: &[Line]) -> Markup {
    html! {
        table.rows {
            thead { tr {
                // What support reads first (when, what became of it, which payment) comes
                // first; the long ids last, where they may wrap.
                th { "received" } th { "status" } th { "what" } th { "type" } th { "source" }
                th { "attempts" } th { "delivered to" } th { "dedupe key" } th { "event id" }
            } }
            tbody {
                @for l in lines {
                    tr class=(format!("s-{}", series_of(&l.status))) {
                        td.time { (format_rfc3339_ms(l.at_ms)) }
                        td.status { (l.status_text()) }
                        td { (what(&l.summary)) }
                        td { (l.event_type) }
                        td { (l.source) }
                        td.num { @if let Some(a) = l.attempts { (a) } }
                        td { (l.delivered.join(", ")) }
                        td.id { @if l.key.is_empty() { "—" } @else { (story_link(&l.key, &l.key)) } }
                        td.id { (l.event_id) }
                    }
                }
            }
        }
    }
}

pub(crate) fn events_page(view: &View<'_>, form: &Form, lines: &[Line], window: &Window) -> Markup {
    let shown = &lines[..lines.len().min(form.limit)];
    let limit = form.limit.to_string();
    let given: Vec<(&str, &str)> = [
        ("source", form.source.as_deref()),
        ("status", form.status.as_deref()),
        ("type", form.event_type.as_deref()),
        ("entity", form.entity.as_deref()),
        ("id", form.id.as_deref()),
        ("since", form.since.as_deref()),
        ("until", form.until.as_deref()),
        ("limit", Some(limit.as_str())),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let here = query(&given);
    layout(
        view,
        "Events",
        html! {
            (filter_form(view, form))
            (chart(window))
            section #live data-live {
                p.count {
                    (shown.len()) " row(s), newest first"
                    @if lines.len() > shown.len() { " (more match: raise rows or narrow the filters)" }
                    " · " a href=(format!("/?{here}")) { "refresh" }
                }
                (rows_table(shown))
            }
        },
    )
}

pub(crate) fn story_page(
    view: &View<'_>,
    story: &Story,
    archived: Option<&Result<ArchivedRequest, String>>,
) -> Markup {
    let e = &story.event;
    let key_id = e.summary.key_id.as_deref().unwrap_or("?");
    // Refreshed only while it can change by itself (a dead event reads the whole DLQ each
    // time, and changes only when replayed).
    let settling = matches!(e.status.as_str(), "in_progress" | "failed");
    layout(
        view,
        &format!("Event {}", e.key),
        html! {
            section #live data-live[settling] {
                dl.facts {
                    dt { "source" } dd #source { (e.source) }
                    dt { "provider event id" } dd #event-id { (e.event_id) }
                    dt { "type" } dd #type { (e.event_type) }
                    dt { "what" } dd { (what(&e.summary)) }
                    @if let Some(id) = &e.summary.object_id { dt { "payment / object" } dd #object-id { (id) } }
                    @if let Some(who) = &e.summary.entity { dt { "entity" } dd #entity { (who) } }
                    @if let (Some(a), Some(c)) = (e.summary.amount, &e.summary.currency) {
                        dt { "amount" } dd #amount { (a) " " (c) " (minor units)" }
                    }
                    @if let Some(ip) = &e.summary.caller_ip { dt { "sent from" } dd #caller-ip { (ip) } }
                    dt { "status" } dd #status class=(format!("s-{}", series_of(&e.status))) { (e.status) }
                    @if !e.reason.is_empty() { dt { "reason" } dd #reason { (e.reason) } }
                    dt { "attempts" } dd #attempts { (e.attempts.unwrap_or_default()) }
                    dt { "delivered to" } dd #delivered {
                        @if e.delivered.is_empty() { "no target yet" } @else { (e.delivered.join(", ")) }
                    }
                }
                h2 { "Timeline" }
                ol.timeline {
                    li { time { (format_rfc3339_ms(e.at_ms)) } " received via " (story.via) }
                    li {
                        "verified with key " (key_id) ", via " (story.via)
                        @if let Some(ip) = &e.summary.caller_ip { ", from " (ip) }
                    }
                    li {
                        time { (format_rfc3339_ms(story.updated_at_ms)) }
                        " last change: " (e.status_text()) " after " (e.attempts.unwrap_or_default()) " attempt(s)"
                    }
                    @for l in &story.later {
                        li { time { (format_rfc3339_ms(l.at_ms)) } " " (l.status_text()) }
                    }
                }
                @if !story.others.is_empty() {
                    h2 { "Other events of the same payment" }
                    ul.others { @for k in &story.others { li { (story_link(k, k)) } } }
                }
                @if let Some(key) = &story.request_key {
                    h2 { "Archived request" }
                    @match archived {
                        Some(Ok(doc)) => {
                            dl.facts #archived {
                                dt { "stored as" } dd #archive-key { (key) }
                                dt { "request" } dd { (doc.method) " " (doc.path) }
                                dt { "verified" } dd { (doc.verified.scheme) " key " (doc.verified.key_id.as_deref().unwrap_or("-")) }
                                dt { "headers" } dd { (doc.headers.keys().cloned().collect::<Vec<_>>().join(", ")) }
                                dt { "body" } dd {
                                    "SHA-256 " code { (doc.body_sha256) } " "
                                    a #archive-download href=(format!("/event/request?{}", query(&[("id", &e.key)]))) { "download" }
                                }
                            }
                        }
                        Some(Err(why)) => p #archived.error { "The archived request " code { (key) } " cannot be read: " (why) }
                        None => p #archived { code { (key) } }
                    }
                }
                @match &story.dead_letter {
                    Some(message_id) => {
                        p #dead-letter.error {
                            "In the dead-letter queue as message " code { (message_id) } ". "
                            @if view.read_only {
                                "Replay it with " code { "inlet replay --ids " (e.key) } "."
                            } @else {
                                a href=(format!("/dlq/confirm?{}", query(&[("id", &e.key)]))) { "Replay it…" }
                            }
                        }
                    }
                    None => p #dead-letter { "Not in the dead-letter queue." }
                }
            }
        },
    )
}

pub(crate) fn dlq_page(view: &View<'_>, letters: &[DeadLetter]) -> Markup {
    let table = html! {
        table.rows {
            thead { tr {
                @if !view.read_only { th { "replay" } }
                th { "sent" } th { "source" } th { "dedupe key" } th { "event id" } th { "type" }
                th { "attempts" } th { "delivered to" } th { "reason" }
            } }
            tbody {
                @for l in letters {
                    @let env = l.envelope.as_ref().ok();
                    @let id = l.dedupe_key().unwrap_or(&l.message_id);
                    tr {
                        @if !view.read_only {
                            td { input type="checkbox" name="id" value=(id) aria-label="replay this one"; }
                        }
                        td { (format_rfc3339_ms(l.sent_at_ms)) }
                        td { (env.map(|e| e.source.as_str()).unwrap_or("?")) }
                        td { @match l.dedupe_key() { Some(k) => (story_link(k, k)), None => (l.message_id) } }
                        td { (env.and_then(|e| e.provider_event_id.as_deref()).unwrap_or_default()) }
                        td { (env.and_then(|e| e.event_type.as_deref()).unwrap_or_default()) }
                        td.num { @if let Some(r) = &l.record { (r.attempts) } }
                        td { @if let Some(r) = &l.record { (r.delivered.iter().map(String::as_str).collect::<Vec<_>>().join(", ")) } }
                        td { (l.reason()) }
                    }
                }
            }
        }
    };
    layout(
        view,
        "Dead letters",
        html! {
            p.count {
                (letters.len()) " dead letter(s), oldest first"
                @if letters.len() >= MAX_DEAD_LETTERS { " (the first " (MAX_DEAD_LETTERS) " only)" }
            }
            @if view.read_only {
                p { "Read-only console: replay with " code { "inlet replay" } "." }
                (table)
            } @else {
                form method="get" action="/dlq/confirm" {
                    (table)
                    button #replay-selected type="submit" { "Replay selected…" }
                }
            }
        },
    )
}

pub(crate) fn confirm_page(view: &View<'_>, ids: &[String], token: &str) -> Markup {
    layout(
        view,
        "Replay?",
        html! {
            p { "Move these " (ids.len()) " dead letter(s) back to the main queue? Targets that already have an event do not get it again." }
            ul.ids { @for id in ids { li { code { (id) } } } }
            form method="post" action="/dlq/replay" {
                input type="hidden" name="csrf" value=(token);
                @for id in ids { input type="hidden" name="id" value=(id); }
                button #confirm type="submit" { "Replay " (ids.len()) }
                " " a href="/dlq" { "Cancel" }
            }
        },
    )
}

pub(crate) fn replayed_page(view: &View<'_>, ids: &[String], done: &Progress) -> Markup {
    layout(
        view,
        "Replayed",
        html! {
            p #replayed {
                "Replayed " (done.moved) " of " (done.scanned) " dead letter(s) to the main queue; "
                (done.scanned - done.moved) " left in the dead-letter queue."
            }
            ul.ids { @for id in ids { li { (story_link(id, id)) } } }
            p { a href="/dlq" { "Back to the dead letters" } }
        },
    )
}

/// One poll source's cursor and its last runs.
pub(crate) struct Poll {
    pub(crate) source: String,
    pub(crate) kind: String,
    pub(crate) every_ms: i64,
    pub(crate) state: Option<PollState>,
    /// Its `poll_run` trail entries, newest first.
    pub(crate) runs: Vec<Line>,
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    let secs = ((now_ms - at_ms).max(0) / 1000) as u64;
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(secs))
    )
}

pub(crate) fn polls_page(view: &View<'_>, polls: &[Poll], now_ms: i64) -> Markup {
    layout(
        view,
        "Poll sources",
        html! {
            @if view.sources.is_empty() {
                p { "Give " code { "--config" } " to list the config's poll sources." }
            } @else if polls.is_empty() {
                p { "The config has no poll source." }
            }
            section #live data-live {
                @for poll in polls {
                    article.poll {
                        h2 {
                            (poll.source) " · " (poll.kind) " every "
                            (humantime::format_duration(std::time::Duration::from_millis(poll.every_ms as u64)))
                        }
                        @match &poll.state {
                            None => p { "Never polled: no cursor yet." }
                            Some(s) => dl.facts {
                                dt { "cursor" } dd.cursor { (s.cursor.as_deref().map(crate::cursor::shown).unwrap_or_else(|| "none yet".into())) }
                                dt { "version" } dd { (s.version) }
                                dt { "lease" } dd {
                                    @match &s.lease_holder {
                                        Some(h) if s.lease_until_ms >= now_ms => { "held by " (h) " until " (format_rfc3339_ms(s.lease_until_ms)) }
                                        _ => "free"
                                    }
                                }
                                dt { "updated" } dd { (format_rfc3339_ms(s.updated_at_ms)) " (" (ago(now_ms, s.updated_at_ms)) ")" }
                                dt { "lag" } dd {
                                    @let lag = now_ms - s.updated_at_ms;
                                    (ago(now_ms, s.updated_at_ms))
                                    @if lag > 2 * poll.every_ms { strong.error { " — behind: more than two intervals since the cursor moved" } }
                                }
                            }
                        }
                        h3 { "Last runs" }
                        @if poll.runs.is_empty() { p { "No poll run in the trail." } }
                        ul.runs {
                            @for r in &poll.runs {
                                li { time { (format_rfc3339_ms(r.at_ms)) } " " (r.reason) }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at_ms: i64, status: &str) -> Line {
        Line {
            at_ms,
            source: "stripe".into(),
            key: String::new(),
            event_id: String::new(),
            event_type: String::new(),
            status: status.into(),
            reason: String::new(),
            attempts: None,
            delivered: Vec::new(),
            summary: Default::default(),
        }
    }

    #[test]
    fn a_story_refreshes_only_while_it_can_change_by_itself() {
        let view = View {
            read_only: false,
            aws: false,
            sources: Vec::new(),
        };
        let page = |status: &str| {
            let story = Story {
                event: line(0, status),
                via: "webhook".into(),
                updated_at_ms: 0,
                later: Vec::new(),
                dead_letter: None,
                others: Vec::new(),
                request_key: None,
            };
            story_page(&view, &story, None).into_string()
        };
        for (status, live) in [
            ("in_progress", true),
            ("failed", true),
            ("dead", false),
            ("dispatched", false),
        ] {
            let html = page(status);
            assert_eq!(
                html.contains(r#"<section id="live" data-live>"#),
                live,
                "{status}: {html}"
            );
        }
    }

    #[test]
    fn the_chart_counts_each_row_in_its_bucket_by_status() {
        let now = 10_000_000;
        let lines = [
            line(now - 1, "refused"),
            line(now - 15_000, "duplicate"),
            line(now - 30_000, "dead"),
            line(now - 30_000, "dispatched"),
        ];
        // No since: from the oldest row to now, 30 buckets of a second.
        let w = Window::of(&Form::default(), &lines, now);
        assert_eq!((w.from_ms, w.to_ms), (now - 30_000, now));
        assert_eq!(w.counts[0], [1, 1, 0, 0]);
        assert_eq!(w.counts[15], [0, 0, 0, 1]);
        assert_eq!(w.counts[29], [0, 0, 1, 0]);
        let total: u32 = w.counts.iter().flatten().sum();
        assert_eq!(total, 4);
        let svg = chart(&w).into_string();
        // One bar segment per non-empty count, plus the legend's four swatches.
        assert_eq!(svg.matches("<rect").count(), 4 + 4, "{svg}");
        assert!(svg.contains("<title>1 failed or dead from "), "{svg}");
        // A row outside since..until is not counted.
        let form = Form {
            since: Some("20s".into()),
            ..Form::default()
        };
        let w = Window::of(&form, &lines, now);
        assert_eq!(w.counts.iter().flatten().sum::<u32>(), 2);
    }
}
