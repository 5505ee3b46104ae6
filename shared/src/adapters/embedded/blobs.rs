//! `BlobStore` on files: `<dir>/<kind>/<sha256>`, beside the SQLite store. A blob is
//! written to a temporary file in the same folder, synced, then renamed into place and the
//! folder synced: a reader (or a crash) sees the whole blob or none, as with S3's PutObject.
//! Keys are checked before they become paths.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::ports::blobs::valid_key;
use crate::ports::{BlobError, BlobKind, BlobStore};

#[derive(Debug, Clone)]
pub struct FileBlobs {
    dir: PathBuf,
}

impl FileBlobs {
    /// Blobs under `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey(key.to_owned()));
        }
        Ok(self.dir.join(key))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Backend(format!("{what} {}: {e}", path.display()))
}

/// Write `bytes` to `path` whole: a synced temporary file renamed over it, then the folder
/// synced so the rename itself survives a power cut.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    let folder = path
        .parent()
        .ok_or_else(|| BlobError::Backend(format!("{} has no folder", path.display())))?;
    std::fs::create_dir_all(folder).map_err(|e| io("create", folder, e))?;
    let tmp = folder.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(folder)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", path, e));
    }
    Ok(())
}

/// A temporary file older than this is a writer that died mid-blob: swept.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

impl FileBlobs {
    /// Remove the blobs of `kind` last written before `cutoff`, and temporary files a dead
    /// writer left: the retention S3's lifecycle gives the bucket. A blob written again (a
    /// provider's retry) is younger for it, as an S3 object overwritten is. The number
    /// removed.
    pub fn sweep(&self, kind: BlobKind, cutoff: SystemTime) -> Result<usize, BlobError> {
        let folder = self.dir.join(kind.prefix());
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("read", &folder, e)),
        };
        let stale_temp = SystemTime::now()
            .checked_sub(STALE_TEMP)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io("read", &folder, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let limit = if name.starts_with(".tmp-") {
                stale_temp
            } else if valid_key(&format!("{}/{name}", kind.prefix())) {
                cutoff
            } else {
                continue;
            };
            let path = entry.path();
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| io("stat", &path, e))?;
            if modified < limit {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove", &path, e)),
                }
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl BlobStore for FileBlobs {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || write_whole(&path, &bytes))
            .await
            .map_err(|e| BlobError::Backend(format!("blob writer: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(key)),
            Err(e) => Err(io("read", &path, e)),
        })
        .await
        .map_err(|e| BlobError::Backend(format!("blob reader: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::put_blob;

    #[tokio::test]
    async fn a_sweep_removes_what_is_older_than_its_cutoff_and_dead_writers_temporary_files() {
        let root =
            std::env::temp_dir().join(format!("inlet-blobs-{}", uuid::Uuid::new_v4().simple()));
        let blobs = FileBlobs::new(&root);
        let old = put_blob(&blobs, BlobKind::Body, b"old").await.expect("put");
        let young = put_blob(&blobs, BlobKind::Body, b"young")
            .await
            .expect("put");
        let archived = put_blob(&blobs, BlobKind::Request, b"req")
            .await
            .expect("put");
        let day = std::time::Duration::from_secs(86_400);
        let age = |key: &str, by: std::time::Duration| {
            let f = std::fs::File::options()
                .write(true)
                .open(root.join(key))
                .expect("open");
            f.set_modified(SystemTime::now() - by).expect("set mtime");
        };
        age(&old.key, 20 * day);
        age(&archived.key, 20 * day);
        let tmp = root.join("bodies/.tmp-dead");
        std::fs::write(&tmp, b"half").expect("tmp");
        age("bodies/.tmp-dead", 2 * STALE_TEMP);
        let stranger = root.join("bodies/notes.txt");
        std::fs::write(&stranger, b"not ours").expect("stranger");
        age("bodies/notes.txt", 20 * day);

        let removed = blobs
            .sweep(BlobKind::Body, SystemTime::now() - 15 * day)
            .expect("sweep");
        assert_eq!(removed, 2, "the old body and the dead writer's file");
        assert!(matches!(
            blobs.get(&old.key).await,
            Err(BlobError::NotFound(_))
        ));
        assert_eq!(blobs.get(&young.key).await.expect("young"), b"young");
        // Another kind keeps its own retention; files not ours are left alone.
        assert_eq!(blobs.get(&archived.key).await.expect("archived"), b"req");
        assert!(stranger.exists() && !tmp.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
