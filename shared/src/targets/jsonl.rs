use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DispatchError, Outgoing, Target};

/// Appends one envelope per line and fsyncs per batch. It remembers the dedupe keys it has
/// written (read back from the file at open), so redelivering an envelope after a crash
/// between "written" and "completed" does not write it twice: the file is exactly-once.
pub struct JsonlTarget {
    id: String,
    path: PathBuf,
    state: Mutex<State>,
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
            state: Mutex::new(State { file, written }),
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
        let fail_all = |msg: String| {
            events
                .iter()
                .map(|_| Err(DispatchError::Retryable(msg.clone())))
                .collect()
        };
        let Ok(mut st) = self.state.lock() else {
            return fail_all("jsonl target lock poisoned".into());
        };
        let mut buf = String::new();
        let mut new_keys = Vec::new();
        for o in events {
            let e = o.envelope;
            if st.written.contains(&e.dedupe_key) || new_keys.contains(&&e.dedupe_key) {
                continue;
            }
            buf.push_str(o.json);
            buf.push('\n');
            new_keys.push(&e.dedupe_key);
        }
        if !buf.is_empty() {
            if let Err(e) = st
                .file
                .write_all(buf.as_bytes())
                .and_then(|_| st.file.sync_data())
            {
                return fail_all(format!("{}: {e}", self.path.display()));
            }
            for k in new_keys {
                st.written.insert(k.clone());
            }
        }
        events.iter().map(|_| Ok(())).collect()
    }
}
