//! Poll kinds: one file each behind [`PollKind`]. The registry in [`build`] is the only line
//! a new kind adds outside its own file.

use std::sync::Arc;

use super::PollKind;

pub mod http_json;
pub mod stripe_events;
pub mod telegram_updates;

/// The names `build` accepts, for error messages and `inlet check`.
pub(crate) const KINDS: &[&str] = &[stripe_events::NAME, "telegram_updates", "http_json"];

/// Build a poll kind from its name and its `poll.options` table (kind-specific, unknown
/// fields refused).
pub fn build(kind: &str, options: &serde_json::Value) -> Result<Arc<dyn PollKind>, String> {
    match kind {
        stripe_events::NAME => Ok(Arc::new(stripe_events::StripeEvents::from_options(
            options,
        )?)),
        "telegram_updates" => Ok(Arc::new(telegram_updates::TelegramUpdates::from_options(
            options,
        )?)),
        "http_json" => Ok(Arc::new(http_json::HttpJson::from_options(options)?)),
        _ => Err(format!(
            "unknown poll kind {kind:?}; known: {}",
            KINDS.join(", ")
        )),
    }
}
