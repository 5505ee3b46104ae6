//! The credential: where each auth kind puts it, and how every error is scrubbed of it.

use base64::Engine;
use serde::Deserialize;

use super::url::{pct, with_query_param};
use super::{fatal, HttpJson};
use crate::poll::FetchError;
use crate::ports::http::HttpRequest;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Auth {
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

impl HttpJson {
    /// `req` with the credential in the header its auth kind names.
    pub(super) fn authorize(
        &self,
        req: HttpRequest,
        credential: Option<&str>,
    ) -> Result<HttpRequest, FetchError> {
        Ok(match (&self.auth, credential) {
            (Auth::Bearer {}, Some(c)) => req.header("authorization", format!("Bearer {c}")),
            (Auth::Basic {}, Some(c)) => {
                if !c.contains(':') {
                    return Err(fatal(
                        "the poll credential for basic auth must be user:pass",
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(c);
                req.header("authorization", format!("Basic {encoded}"))
            }
            (Auth::Header { name }, Some(c)) => req.header(name, c),
            _ => req,
        })
    }

    /// `url` with the credential in its query, for `auth.kind = "query"`.
    pub(super) fn with_credential(
        &self,
        url: &str,
        credential: Option<&str>,
    ) -> Result<String, FetchError> {
        match (&self.auth, credential) {
            (Auth::Query { name }, Some(c)) => {
                with_query_param(url, name, c).map_err(|e| fatal(format!("{url}: {e}")))
            }
            _ => Ok(url.to_string()),
        }
    }
}

/// Scrub the credential (raw, URL-encoded, form-encoded, base64; for `user:pass` also the
/// password alone) from an error.
pub(super) fn redact(err: FetchError, credential: Option<&str>) -> FetchError {
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
