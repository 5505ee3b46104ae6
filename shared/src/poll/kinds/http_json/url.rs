//! URLs: the template and its placeholders, origins, relative references, the query
//! credential.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use super::{fatal, HttpJson};
use crate::poll::FetchError;

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

    pub(super) fn check_origin(&self, url: &str, what: &str) -> Result<(), FetchError> {
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
}

pub(super) fn parse_template(url: &str) -> Result<Vec<Seg>, String> {
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

/// Percent-encode everything but RFC 3986 unreserved characters.
pub(super) fn pct(s: &str) -> String {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

pub(super) struct UrlParts<'a> {
    pub(super) origin: Origin,
    /// `scheme://authority`.
    prefix: &'a str,
    /// Path, query and fragment.
    rest: &'a str,
}

/// A strict split of an absolute http(s) URL. Anything a WHATWG parser (reqwest's) could read
/// differently is refused: non-printable or non-ASCII bytes, backslashes, userinfo, percent
/// signs or odd characters in the host. So the origin seen here is the one the request goes to.
pub(super) fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
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
pub(super) fn resolve(base: &str, reference: &str) -> Result<String, String> {
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
pub(super) fn strip_param(url: &str, name: &str) -> String {
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
