//! Poll cursors and leases: one row per poll source, beside the dedupe records. A poll run
//! takes the source's lease with a conditional write (so two runs never poll one cursor at
//! once — Telegram answers 409 to a second `getUpdates`), and moves the cursor only with a
//! conditional update naming the version it read, while its lease is live, after the
//! fetched items are durably on the queue. A crash between "enqueued" and "cursor stored"
//! re-sends that page on the next run, and dedupe absorbs it.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum PollStoreError {
    #[error("poll store backend: {0}")]
    Backend(String),
    /// The lease lapsed or was taken over, or the cursor moved under us: this run must stop
    /// without writing (the holder of the lease carries on from the stored cursor).
    #[error("poll lease on {source_id} lost: {why}")]
    LeaseLost { source_id: String, why: String },
    #[error("corrupt poll state: {0}")]
    Corrupt(String),
    /// An operator's reset found the source other than as they saw it: a run holds the
    /// lease, or the cursor moved since they read it.
    #[error("the poll cursor of {source_id} was not reset: {why}")]
    NotReset { source_id: String, why: String },
}

/// Why `holder`'s advance from `expected_version` is refused, given the state as stored
/// (`None`: never acquired): the lease is another's, it lapsed, or the cursor moved.
pub fn advance_refusal(
    state: Option<&PollState>,
    holder: &str,
    expected_version: u64,
    now_ms: i64,
) -> Option<String> {
    let Some(s) = state else {
        return Some("no poll state (never acquired)".to_owned());
    };
    if s.lease_holder.as_deref() != Some(holder) {
        return Some(format!(
            "held by {}",
            s.lease_holder.as_deref().unwrap_or("nobody")
        ));
    }
    if s.lease_until_ms < now_ms {
        return Some(format!("lease lapsed at {}", s.lease_until_ms));
    }
    (s.version != expected_version)
        .then(|| format!("cursor is at version {}, not {expected_version}", s.version))
}

/// Why a reset is refused, given the state as stored (`None`: never polled).
pub fn reset_refusal(
    state: Option<&PollState>,
    expected_version: u64,
    now_ms: i64,
) -> Option<String> {
    let Some(s) = state else {
        return Some("it has never been polled (there is no cursor)".to_owned());
    };
    if s.lease_until_ms >= now_ms {
        return Some(format!(
            "a run ({}) holds its lease until {}; try again after it",
            s.lease_holder.as_deref().unwrap_or("unknown"),
            crate::time::format_rfc3339_ms(s.lease_until_ms)
        ));
    }
    (s.version != expected_version).then(|| {
        format!(
            "the cursor moved to version {} since version {expected_version} was read",
            s.version
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollState {
    pub source: String,
    /// The poll kind's own cursor, opaque to the store (JSON text); `None` before the first
    /// advance.
    pub cursor: Option<String>,
    /// Bumped by every advance; an advance names the version it read.
    pub version: u64,
    pub lease_holder: Option<String>,
    pub lease_until_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours until the requested time; the state as it stands.
    Acquired(PollState),
    /// Someone else holds a live lease: this run exits at once and says so.
    Held { holder: String, until_ms: i64 },
}

#[async_trait]
pub trait PollStore: Send + Sync {
    /// Take `source`'s lease for `holder` until `until_ms` when there is no row yet, the lease
    /// lapsed (`lease_until_ms < now_ms`), or `holder` already holds it (a renewal).
    async fn acquire(
        &self,
        source: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Acquire, PollStoreError>;

    /// Store `cursor` as version `expected_version + 1` and extend the lease to `until_ms`,
    /// only if `holder` holds a live lease and the stored version is `expected_version`;
    /// otherwise `LeaseLost`. Returns the new version.
    async fn advance(
        &self,
        source: &str,
        holder: &str,
        expected_version: u64,
        cursor: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, PollStoreError>;

    /// Give the lease up (only `holder`'s own; anyone else's is left alone), so the next
    /// scheduled run need not wait for it to lapse.
    async fn release(&self, source: &str, holder: &str) -> Result<(), PollStoreError>;

    async fn state(&self, source: &str) -> Result<Option<PollState>, PollStoreError>;

    /// Forget `source`'s cursor, as version `expected_version + 1`, so its next run starts
    /// where a new source's does (dedupe absorbs what it sees again). Only while no run
    /// holds a live lease and the stored version is `expected_version`, the one the operator
    /// was shown: otherwise `NotReset`, with [`reset_refusal`]'s reason. Returns the new version.
    async fn reset(
        &self,
        source: &str,
        expected_version: u64,
        now_ms: i64,
    ) -> Result<u64, PollStoreError>;
}
