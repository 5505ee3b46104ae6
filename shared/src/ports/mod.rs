//! The ports: the only ways the domain touches the world. Each has an AWS adapter
//! (`adapters::aws`) and an embedded SQLite adapter (`adapters::embedded`) with the same
//! semantics; `tests/it/conformance.rs` runs one suite against both.

pub mod blobs;
pub mod bus;
pub(crate) mod certs;
pub mod checks;
pub mod clock;
pub mod http;
pub mod ledger;
pub mod poll;
pub mod queue;
pub mod secrets;

pub use blobs::{get_blob, put_blob, BlobError, BlobKind, BlobRef, BlobStore};
pub use bus::{BusError, BusEvent, EventBus, PublishResult};
pub use certs::{CertFetchError, CertFetcher};
pub use checks::{check_key, CheckRecord, CheckStatus, CheckStore, CheckStoreError, Scheduled};
pub use clock::{Clock, ManualClock, SystemClock};
pub use http::{HttpClient, HttpError, HttpRequest, HttpResponse};
pub use ledger::{
    BeginOutcome, BeginRequest, DedupeRecord, DedupeStatus, EventSummary, Ledger, LedgerError,
    Lookup, TrailEntry, TrailQuery, TrailRow, TrailStatus, LOOKUP_LIMIT,
};
pub use poll::{Acquire, PollState, PollStore, PollStoreError};
pub use queue::{OutboundMessage, Queue, QueueError, ReceivedMessage, WorkerRecord};
pub use secrets::{SecretStore, SecretStoreError};
