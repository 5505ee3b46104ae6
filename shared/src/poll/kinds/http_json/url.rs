//! URLs: the template and its placeholders, origins, relative references, the query
//! credential.

use std::time::{Duration, UNIX_EPOCH};

use ::url::{Origin, ParseError, Url};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{fatal, HttpJson};
use crate::poll::FetchError;

/// Why a URL (the configured template, a request URL, a `Link` target) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("a `}}` without `{{`")]
    UnopenedBrace,
    #[error("a `{{` without `}}`")]
    UnclosedBrace,
    #[error("unknown placeholder {{{0}}}; known: {{cursor}}, {{since}}, {{since_rfc3339}}")]
    UnknownPlaceholder(String),
    #[error("the byte {0:#04x} is not allowed in a URL here")]
    Byte(u8),
    #[error("the byte {0:#04x} in a link target")]
    LinkByte(u8),
    #[error("not an absolute URL (scheme://host/…)")]
    NotAbsolute,
    #[error("{0}")]
    Parse(ParseError),
    #[error("scheme {0:?}: only http and https")]
    Scheme(String),
    #[error("credentials in the URL (user@host) are not allowed; use poll.secrets")]
    Credentials,
    #[error("placeholders are allowed only in the path and the query")]
    PlaceholderInOrigin,
    #[error("a fragment (#…) is never sent to the server; remove it")]
    Fragment,
}

/// A piece of the URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Lit(String),
    Cursor,
    Since,
    SinceRfc3339,
}

impl HttpJson {
    pub(super) fn fill(&self, value: &str, since_s: i64) -> String {
        render(&self.template, value, since_s)
    }

    pub(super) fn check_origin(&self, url: &str, what: &str) -> Result<(), FetchError> {
        let origin = parse_url(url)
            .map_err(|e| fatal(format!("{what} {url}: {e}")))?
            .origin();
        if origin != self.origin {
            return Err(fatal(format!(
                "{what} {url} is on {}, not on {} (the configured url): refusing to send the \
                 credential elsewhere",
                origin.ascii_serialization(),
                self.origin.ascii_serialization()
            )));
        }
        Ok(())
    }
}

/// The template with `{cursor}` = `value` (percent-encoded) and the `since` placeholders at
/// `since_s`.
fn render(template: &[Seg], value: &str, since_s: i64) -> String {
    let mut out = String::new();
    for seg in template {
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

pub(super) fn parse_template(url: &str) -> Result<Vec<Seg>, UrlError> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut rest = url;
    while let Some(i) = rest.find(['{', '}']) {
        let (before, from) = rest.split_at(i);
        lit.push_str(before);
        let Some(after) = from.strip_prefix('{') else {
            return Err(UrlError::UnopenedBrace);
        };
        let end = after.find('}').ok_or(UrlError::UnclosedBrace)?;
        let (name, tail) = after.split_at(end);
        let seg = match name {
            "cursor" => Seg::Cursor,
            "since" => Seg::Since,
            "since_rfc3339" => Seg::SinceRfc3339,
            other => return Err(UrlError::UnknownPlaceholder(other.to_owned())),
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

/// RFC 3986 unreserved characters: the only ones a placeholder or the query credential keeps
/// as they are.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode everything but RFC 3986 unreserved characters.
pub(super) fn pct(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// An absolute http(s) URL, read by the WHATWG parser the HTTP client uses, so the origin seen
/// here is the one the request goes to. Refused besides: non-printable or non-ASCII bytes and
/// backslashes (which a reader of the config would take for something else than the parser
/// does), and credentials in the URL.
pub(super) fn parse_url(text: &str) -> Result<Url, UrlError> {
    if let Some(bad) = text.bytes().find(|b| !b.is_ascii_graphic() || *b == b'\\') {
        return Err(UrlError::Byte(bad));
    }
    let url = Url::parse(text).map_err(|e| match e {
        ParseError::RelativeUrlWithoutBase => UrlError::NotAbsolute,
        other => UrlError::Parse(other),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// The origin every request of `template` goes to. A placeholder in the scheme, host or port
/// would let a cursor choose where the credential goes: filled with two different values, the
/// template must name one origin.
pub(super) fn template_origin(template: &[Seg]) -> Result<Origin, UrlError> {
    let first = parse_url(&render(template, "0", 0))?;
    let second = parse_url(&render(template, "1", 1))?;
    if first.origin() != second.origin() {
        return Err(UrlError::PlaceholderInOrigin);
    }
    if first.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    Ok(first.origin())
}

/// Resolve a `Link` target (absolute, `//host…`, `/path`, `?query` or a relative path) against
/// the URL of the request it answered; the fragment is dropped.
pub(super) fn resolve(base: &str, reference: &str) -> Result<String, UrlError> {
    if let Some(bad) = reference
        .bytes()
        .find(|b| !b.is_ascii_graphic() || *b == b'\\')
    {
        return Err(UrlError::LinkByte(bad));
    }
    let mut resolved = parse_url(base)?.join(reference).map_err(UrlError::Parse)?;
    resolved.set_fragment(None);
    Ok(resolved.into())
}

/// `url` without any query parameter named `name` (a server echoing our query credential into
/// its next link must not get it stored in the cursor). The other parameters keep their bytes.
pub(super) fn strip_param(url: &str, name: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_string();
    };
    let Some(query) = parsed.query() else {
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
    let kept = kept.join("&");
    parsed.set_query((!kept.is_empty()).then_some(kept.as_str()));
    parsed.into()
}

/// `url` with `name=value` appended to its query, both percent-encoded.
pub(super) fn with_query_param(url: &str, name: &str, value: &str) -> Result<String, UrlError> {
    let mut parsed = parse_url(url)?;
    let pair = format!("{}={}", pct(name), pct(value));
    let query = match parsed.query() {
        Some(q) if !q.is_empty() => format!("{q}&{pair}"),
        _ => pair,
    };
    parsed.set_query(Some(&query));
    Ok(parsed.into())
}
