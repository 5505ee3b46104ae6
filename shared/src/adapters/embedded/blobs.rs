//! `BlobStore` on files: `<dir>/<kind>/<sha256>`, beside the SQLite store. A blob is
//! written to a temporary file in the same folder, synced, then renamed into place and the
//! folder synced: a reader (or a crash) sees the whole blob or none, as with S3's PutObject.
//! Keys are checked before they become paths.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::ports::blobs::valid_key;
use crate::ports::{BlobError, BlobStore};

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
