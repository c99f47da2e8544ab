//! Per-attempt output log files: their names, and reading a part of one
//! without loading the whole file (a task may print gigabytes).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::model::TaskId;

/// The folder of the data directory that holds the attempts' logs.
pub const LOGS_FOLDER: &str = "logs";

/// Where the attempts' output logs go: `DATA_DIR/logs`.
pub fn logs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(LOGS_FOLDER)
}

/// Bytes read at a time when looking for line starts from the end.
const TAIL_SCAN_BYTES: usize = 64 * 1024;

/// The file name of attempt `attempt`'s log (`task-{id}-attempt-{n}.log`).
pub fn log_file_name(task: TaskId, attempt: u32) -> String {
    format!("task-{task}-attempt-{attempt}.log")
}

/// The log of attempt `attempt` of `task` in `dir`.
pub fn log_path(dir: &Path, task: TaskId, attempt: u32) -> PathBuf {
    dir.join(log_file_name(task, attempt))
}

/// Part of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPart {
    /// Where `bytes` start in the file.
    pub offset: u64,
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// The file's size when it was read.
    pub size: u64,
}

impl LogPart {
    /// Where the next read starts.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// Reads up to `limit` bytes from `offset` (nothing when the offset is at
/// or past the end).
pub fn read_log(path: &Path, offset: u64, limit: usize) -> io::Result<LogPart> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut bytes = Vec::new();
    if offset < size {
        file.seek(SeekFrom::Start(offset))?;
        let wanted = (size - offset).min(limit as u64);
        file.take(wanted).read_to_end(&mut bytes)?;
    }
    Ok(LogPart {
        offset,
        bytes,
        size,
    })
}

/// Where the last `lines` lines of the file start (a final line without a
/// newline counts); 0 when it holds fewer. Reads backwards in blocks, so
/// it costs what the lines cost, not what the file does.
pub fn tail_offset(path: &Path, lines: usize) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    if lines == 0 {
        return Ok(size);
    }
    // A newline that ends the file closes the last line rather than
    // starting an empty one.
    let mut end = size;
    let mut newlines = 0usize;
    let mut block = vec![0u8; TAIL_SCAN_BYTES];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(TAIL_SCAN_BYTES as u64);
        let len = (end - start) as usize;
        let chunk = block.get_mut(..len).unwrap_or_default();
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            if *byte != b'\n' {
                continue;
            }
            let at = start + i as u64;
            if first && at + 1 == size {
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(at + 1);
            }
        }
        first = false;
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = log_path(dir.path(), TaskId(3), 2);
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn names_follow_the_task_and_attempt() {
        assert_eq!(log_file_name(TaskId(12), 3), "task-12-attempt-3.log");
    }

    #[test]
    fn reads_return_the_asked_range_and_where_to_go_on() {
        let (_dir, path) = file_with(b"0123456789");
        let part = read_log(&path, 2, 3).expect("read");
        assert_eq!(part.bytes, b"234");
        assert_eq!((part.offset, part.next_offset(), part.size), (2, 5, 10));
        let end = read_log(&path, 8, 100).expect("read");
        assert_eq!(end.bytes, b"89");
        let past = read_log(&path, 50, 100).expect("read");
        assert!(past.bytes.is_empty());
        assert_eq!(past.next_offset(), 50, "a reader past the end stays there");
    }

    #[test]
    fn the_tail_starts_at_the_last_lines() {
        let (_dir, path) = file_with(b"a\nbb\nccc\n");
        assert_eq!(tail_offset(&path, 1).expect("tail"), 5);
        assert_eq!(tail_offset(&path, 2).expect("tail"), 2);
        assert_eq!(tail_offset(&path, 3).expect("tail"), 0);
        assert_eq!(tail_offset(&path, 10).expect("tail"), 0);
        assert_eq!(tail_offset(&path, 0).expect("tail"), 9);
        let (_dir, open) = file_with(b"a\nbb\ncc");
        assert_eq!(
            tail_offset(&open, 1).expect("tail"),
            5,
            "an unfinished line counts"
        );
    }

    #[test]
    fn the_tail_of_a_file_larger_than_a_block_crosses_blocks() {
        let mut text = Vec::new();
        for n in 0..20_000 {
            text.extend_from_slice(format!("line {n}\n").as_bytes());
        }
        let (_dir, path) = file_with(&text);
        let offset = tail_offset(&path, 15_000).expect("tail");
        let rest = read_log(&path, offset, usize::MAX).expect("read");
        assert!(rest.bytes.starts_with(b"line 5000\n"));
        assert_eq!(rest.bytes.iter().filter(|b| **b == b'\n').count(), 15_000);
    }
}
