use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{DispatchError, Outgoing, Target};

/// Appends one envelope per line and fsyncs per batch. It remembers the dedupe keys it has
/// written (read back from the file at open), so redelivering an envelope after a crash
/// between "written" and "completed" does not write it twice: the file is exactly-once.
pub struct JsonlTarget {
    id: String,
    path: PathBuf,
    /// Shared with the blocking task that writes and syncs a batch.
    state: Arc<Mutex<State>>,
}

struct State {
    file: File,
    written: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl JsonlTarget {
    pub fn open(id: String, path: &Path) -> Result<Self, JsonlError> {
        let io = |source| JsonlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut written = HashSet::new();
        let mut complete_len = 0u64;
        {
            let mut reader = BufReader::new(&file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                complete_len += n as u64;
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(k) = v.get("dedupe_key").and_then(|k| k.as_str()) {
                        written.insert(k.to_string());
                    }
                }
            }
        }
        // A crash mid-write leaves a partial last line: drop it, its event is redelivered.
        let len = file.metadata().map_err(io)?.len();
        if len != complete_len {
            file.set_len(complete_len).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Self {
            id,
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(State { file, written })),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Target for JsonlTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        let batch: Vec<(String, String)> = events
            .iter()
            .map(|o| (o.envelope.dedupe_key.clone(), o.json.to_owned()))
            .collect();
        let (state, path) = (self.state.clone(), self.path.clone());
        // fdatasync takes a disk round trip: on a runtime thread it would stall every task
        // queued behind it (in `inlet dev`, the webhooks being answered).
        let written = tokio::task::spawn_blocking(move || append(&state, &path, &batch))
            .await
            .unwrap_or_else(|e| Err(DispatchError::Retryable(format!("jsonl writer task: {e}"))));
        events.iter().map(|_| written.clone()).collect()
    }
}

/// Append the batch's envelopes not written before, one line each, and sync them.
/// Every failure is retryable: the next delivery skips the lines already written.
fn append(
    state: &Mutex<State>,
    path: &Path,
    batch: &[(String, String)],
) -> Result<(), DispatchError> {
    let mut st = state
        .lock()
        .map_err(|_| DispatchError::Retryable("jsonl target lock poisoned".to_owned()))?;
    let mut buf = String::new();
    let mut new_keys: Vec<&String> = Vec::new();
    for (key, json) in batch {
        if st.written.contains(key) || new_keys.contains(&key) {
            continue;
        }
        buf.push_str(json);
        buf.push('\n');
        new_keys.push(key);
    }
    if buf.is_empty() {
        return Ok(());
    }
    st.file
        .write_all(buf.as_bytes())
        .and_then(|_| st.file.sync_data())
        .map_err(|e| DispatchError::Retryable(format!("{}: {e}", path.display())))?;
    st.written.extend(new_keys.into_iter().cloned());
    Ok(())
}
