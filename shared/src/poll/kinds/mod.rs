//! Poll kinds: one file each behind [`PollKind`]. The registry in [`build`] is the only line
//! a new kind adds outside its own file.

use std::sync::Arc;

use super::PollKind;

pub mod http_json;
pub mod stripe_events;
pub mod telegram_updates;

/// The names `build` accepts, for error messages and `inlet check`.
pub(crate) const KINDS: &[&str] = &[stripe_events::NAME, "telegram_updates", "http_json"];

/// Why `poll.kind` or `poll.options` is refused; the config reports it as a field error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown poll kind {kind:?}; known: {known}", known = KINDS.join(", "))]
    UnknownKind { kind: String },
    /// An option of `http_json`, named as written in `poll.options` (`options` for the table).
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    /// The API kinds' messages start with the kind's name.
    #[error("{kind} options: {reason}")]
    Kind { kind: &'static str, reason: String },
}

impl OptionsError {
    pub(crate) fn field(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Field {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn kind(kind: &'static str, reason: impl ToString) -> Self {
        Self::Kind {
            kind,
            reason: reason.to_string(),
        }
    }
}

/// Build a poll kind from its name and its `poll.options` table (kind-specific, unknown
/// fields refused).
pub fn build(kind: &str, options: &serde_json::Value) -> Result<Arc<dyn PollKind>, OptionsError> {
    match kind {
        stripe_events::NAME => Ok(Arc::new(stripe_events::StripeEvents::from_options(
            options,
        )?)),
        "telegram_updates" => Ok(Arc::new(telegram_updates::TelegramUpdates::from_options(
            options,
        )?)),
        "http_json" => Ok(Arc::new(http_json::HttpJson::from_options(options)?)),
        _ => Err(OptionsError::UnknownKind {
            kind: kind.to_owned(),
        }),
    }
}
