//! Secrets as the domain holds them: resolved bytes that never print.

use std::fmt;

/// One verification key. `id` names it in the trail and logs (which key matched during a
/// rotation); `value` is never logged — `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    value: Vec<u8>,
    /// Unix milliseconds after which the key is no longer accepted (rotation window end).
    pub not_after_ms: Option<i64>,
}

impl Secret {
    pub fn new(
        id: impl Into<String>,
        value: impl Into<Vec<u8>>,
        not_after_ms: Option<i64>,
    ) -> Self {
        Self {
            id: id.into(),
            value: value.into(),
            not_after_ms,
        }
    }

    /// The raw configured bytes (e.g. the full `whsec_…` string). Providers decode them.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.value
    }

    pub(crate) fn is_live(&self, now_ms: i64) -> bool {
        self.not_after_ms.is_none_or(|t| now_ms <= t)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .field("not_after_ms", &self.not_after_ms)
            .finish()
    }
}
