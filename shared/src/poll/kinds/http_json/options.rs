//! `poll.options` read field by field, so that every error names the field it is about.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::items::TimeUnit;
use super::url::{parse_template, template_origin, Seg};
use super::{HttpJson, Mode, DEFAULT_LOOKBACK_SECONDS, MAX_LOOKBACK_SECONDS};
use crate::poll::kinds::OptionsError;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

fn field<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, OptionsError> {
    serde_json::from_value(value).map_err(|e| OptionsError::field(name, e))
}

fn pointer_field(name: &str, value: Option<Value>) -> Result<Option<String>, OptionsError> {
    let Some(value) = value else { return Ok(None) };
    let p: String = field(name, value)?;
    check_pointer(name, &p)?;
    Ok(Some(p))
}

fn check_pointer(name: &str, p: &str) -> Result<(), OptionsError> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(OptionsError::field(
            name,
            format!("{p:?} is not a JSON pointer (\"\" or starting with /)"),
        ))
    }
}

impl HttpJson {
    /// Build from `poll.options`; every error names the offending field.
    pub(crate) fn from_options(options: &Value) -> Result<Self, OptionsError> {
        let doc: OptionsDoc = serde_json::from_value(options.clone())
            .map_err(|e| OptionsError::field("options", e))?;
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

        let template = parse_template(&url).map_err(|e| OptionsError::field("url", e))?;
        let origin = template_origin(&template).map_err(|e| OptionsError::field("url", e))?;
        check_auth(&auth)?;
        let time = time_option(time_pointer, time_unit)?;
        let mode = mode_option(cursor, id_pointer.as_ref(), time.is_some())?;
        check_placeholders(&template, &mode)?;
        check_order(order, &mode)?;
        Ok(Self {
            template,
            origin,
            auth,
            items_pointer,
            id_pointer,
            time,
            mode,
            newest_first: order == Order::NewestFirst,
        })
    }
}

fn check_auth(auth: &Auth) -> Result<(), OptionsError> {
    match auth {
        Auth::Header { name } if !is_token(name) => Err(OptionsError::field(
            "auth.name",
            format!("{name:?} is not an HTTP header name"),
        )),
        Auth::Query { name } if name.is_empty() => Err(OptionsError::field(
            "auth.name",
            "the query parameter name is empty",
        )),
        _ => Ok(()),
    }
}

/// `time_pointer` and `time_unit` go together.
fn time_option(
    pointer: Option<String>,
    unit: Option<TimeUnit>,
) -> Result<Option<(String, TimeUnit)>, OptionsError> {
    match (pointer, unit) {
        (Some(p), Some(u)) => Ok(Some((p, u))),
        (Some(_), None) => Err(OptionsError::field(
            "time_unit",
            "required with time_pointer (seconds, milliseconds or rfc3339)",
        )),
        (None, Some(_)) => Err(OptionsError::field("time_unit", "set without time_pointer")),
        (None, None) => Ok(None),
    }
}

/// The cursor kind, with what it needs from the other options.
fn mode_option(
    cursor: CursorDoc,
    id_pointer: Option<&String>,
    has_time: bool,
) -> Result<Mode, OptionsError> {
    Ok(match cursor {
        CursorDoc::ItemField { pointer } => {
            let Some(pointer) = pointer.or_else(|| id_pointer.cloned()) else {
                return Err(OptionsError::field(
                    "cursor.pointer",
                    "item_field needs a pointer (or id_pointer)",
                ));
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
                return Err(OptionsError::field(
                    "cursor.lookback_seconds",
                    format!(
                        "must be between 1 and {MAX_LOOKBACK_SECONDS} (the overlap is what keeps \
                         items sharing a timestamp at a page boundary)"
                    ),
                ));
            }
            if !has_time {
                return Err(OptionsError::field(
                    "time_pointer",
                    "required with cursor kind \"since\" (with time_unit)",
                ));
            }
            Mode::Since { lookback }
        }
    })
}

/// The placeholders the cursor kind fills, and no others.
fn check_placeholders(template: &[Seg], mode: &Mode) -> Result<(), OptionsError> {
    let has = |s: &Seg| template.contains(s);
    let since_placeholder = has(&Seg::Since) || has(&Seg::SinceRfc3339);
    let wrong = match mode {
        Mode::ItemField { .. } | Mode::ResponseToken { .. } if !has(&Seg::Cursor) => {
            "this cursor kind needs a {cursor} placeholder"
        }
        Mode::ItemField { .. } | Mode::ResponseToken { .. } if since_placeholder => {
            "{since} and {since_rfc3339} need cursor kind \"since\""
        }
        Mode::LinkNext if template.iter().any(|s| !matches!(s, Seg::Lit(_))) => {
            "with cursor kind \"link_next\" the URL has no placeholders (the next page's URL \
             comes from the Link header)"
        }
        Mode::Since { .. } if !since_placeholder => {
            "cursor kind \"since\" needs {since} or {since_rfc3339}"
        }
        Mode::Since { .. } if has(&Seg::Cursor) => {
            "{cursor} needs cursor kind item_field or response_token"
        }
        _ => return Ok(()),
    };
    Err(OptionsError::field("url", wrong))
}

fn check_order(order: Order, mode: &Mode) -> Result<(), OptionsError> {
    if order == Order::NewestFirst && matches!(mode, Mode::ResponseToken { .. } | Mode::LinkNext) {
        return Err(OptionsError::field(
            "order",
            "newest_first pages followed by token or link walk back in time and never reach new \
             items; use cursor kind item_field or since",
        ));
    }
    Ok(())
}

/// RFC 7230 `token` (a header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
