//! The scheduler's copies of logs that worker processes ship: each piece
//! written at its offset, so a piece that comes twice (a report published
//! again after a reconnect) changes nothing.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine as _;

use crate::model::TaskId;
use crate::tasks::logfile;

/// Writes one piece of attempt `attempt`'s log into `dir`.
pub(super) fn write_piece(dir: &Path, task: TaskId, attempt: u32, offset: u64, data: &str) {
    let bytes = match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%task, attempt, %error, "a shipped log piece is not base64; dropped");
            return;
        }
    };
    let path = logfile::log_path(dir, task, attempt);
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&bytes)
    });
    if let Err(error) = written {
        tracing::warn!(%task, attempt, %error, path = %path.display(), "cannot write a shipped log piece");
    }
}
