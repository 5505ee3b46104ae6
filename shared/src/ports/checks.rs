//! Delayed checks: one row per (source, check, entity), beside the dedupe records. An `on`
//! event schedules the row with a conditional put (so a repeated `on` event for the same
//! entity does not schedule twice); an `expect` event satisfies it with a conditional
//! update (only while it is pending); the check's firing finishes it (only while it is
//! pending), so a check fires at most once whichever message or retry reaches it.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum CheckStoreError {
    #[error("check store backend: {0}")]
    Backend(String),
    #[error("corrupt check: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Scheduled; neither satisfied nor fired yet.
    Pending,
    /// An `expect` event for the entity arrived before the check fired.
    Satisfied,
    /// The check came due and ran its poll (`outcome` says how it went).
    Fired,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pending => "PENDING",
            CheckStatus::Satisfied => "SATISFIED",
            CheckStatus::Fired => "FIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(CheckStatus::Pending),
            "SATISFIED" => Some(CheckStatus::Satisfied),
            "FIRED" => Some(CheckStatus::Fired),
            _ => None,
        }
    }
}

/// `check#<source>#<name>#<entity>`: one check per entity, whatever number of `on` events.
pub fn check_key(source: &str, name: &str, entity: &str) -> String {
    format!("check#{source}#{name}#{entity}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// [`check_key`].
    pub key: String,
    pub source: String,
    /// The check's name in the source's config.
    pub name: String,
    pub entity: String,
    /// The poll source to run when due.
    pub poll_source: String,
    /// The dedupe key of the `on` event that scheduled it.
    pub on_event: String,
    pub created_at_ms: i64,
    pub due_at_ms: i64,
    /// After this instant the row no longer blocks a new schedule for the same key
    /// (DynamoDB TTL deletes it lazily; readers compare it themselves).
    pub expires_at_ms: i64,
    pub status: CheckStatus,
    /// The dedupe key of the `expect` event that satisfied it.
    pub satisfied_by: Option<String>,
    /// When it was satisfied or fired.
    pub closed_at_ms: Option<i64>,
    /// How the firing went (the poll's outcome and what it found).
    pub outcome: Option<String>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduled {
    /// The row is new (or replaced an expired one): the caller sends the check message.
    Created,
    /// A live row holds the key (read in the same call).
    Exists(CheckRecord),
}

#[async_trait]
pub trait CheckStore: Send + Sync {
    /// Put `check` (status PENDING) when no row holds its key or the row expired
    /// (`expires_at_ms < now_ms`); otherwise return the holding row.
    async fn schedule(
        &self,
        check: &CheckRecord,
        now_ms: i64,
    ) -> Result<Scheduled, CheckStoreError>;

    /// PENDING → SATISFIED by `by_event`. False (and no write) when the row is missing or
    /// not pending.
    async fn satisfy(
        &self,
        key: &str,
        by_event: &str,
        now_ms: i64,
    ) -> Result<bool, CheckStoreError>;

    /// Named apart from `Ledger::get`: both traits are implemented by the same adapters.
    async fn get_check(&self, key: &str) -> Result<Option<CheckRecord>, CheckStoreError>;

    /// PENDING → FIRED with `outcome`. False (and no write) when the row is missing or not
    /// pending (another copy of the message fired it, or it was satisfied meanwhile).
    async fn finish(&self, key: &str, outcome: &str, now_ms: i64) -> Result<bool, CheckStoreError>;
}
