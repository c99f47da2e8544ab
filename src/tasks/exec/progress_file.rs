//! Progress from processes: a `command` or `python` task appends JSON lines
//! (`{"fraction": 0.5, "message": "...", "metrics": {"loss": 0.3}}`) to the
//! file named in `TASKDECK_PROGRESS`; the attempt reads what was added a few
//! times a second and reports each line through its context.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::ProgressReport;
use crate::tasks::TaskContext;

/// The environment variable that names the file.
pub const PROGRESS_ENV: &str = "TASKDECK_PROGRESS";

/// How often the file is read while the process runs.
const READ_EVERY: Duration = Duration::from_millis(100);

/// A line longer than this is dropped unread (it is not a progress report).
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most bytes taken per read, so a process that writes without pause does
/// not keep the attempt's loop from its other work.
const MAX_READ_BYTES: u64 = 1024 * 1024;

/// The progress file of one attempt and how far it was read.
pub(super) struct ProgressFile {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Skipping the rest of an overlong line.
    skipping: bool,
    next_read: Instant,
    bad_lines: u64,
}

impl ProgressFile {
    /// Creates the attempt's empty progress file in `dir`.
    pub(super) fn create(dir: &Path, ctx: &TaskContext) -> io::Result<Self> {
        let path = dir.join(format!(
            "task-{}-attempt-{}.progress",
            ctx.task_id, ctx.attempt
        ));
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        Ok(Self {
            path,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            next_read: Instant::now(),
            bad_lines: 0,
        })
    }

    /// The file's path, for the process's environment.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was added, when it is time to.
    pub(super) fn poll(&mut self, ctx: &TaskContext) {
        if Instant::now() >= self.next_read {
            self.next_read = Instant::now() + READ_EVERY;
            self.read(ctx);
            ctx.tick_progress();
        }
    }

    /// Reads the rest after the process ended; the file goes when this is
    /// dropped.
    pub(super) fn finish(mut self, ctx: &TaskContext) {
        self.read(ctx);
        if self.bad_lines > 0 {
            tracing::warn!(
                task = %ctx.task_id,
                attempt = ctx.attempt,
                lines = self.bad_lines,
                "progress lines that were not valid reports were ignored"
            );
        }
    }

    fn read(&mut self, ctx: &TaskContext) {
        let mut added = Vec::new();
        let read = File::open(&self.path).and_then(|mut file| {
            file.seek(SeekFrom::Start(self.offset))?;
            file.take(MAX_READ_BYTES).read_to_end(&mut added)
        });
        if read.is_err() || added.is_empty() {
            return;
        }
        self.offset += added.len() as u64;
        let mut rest = added.as_slice();
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            if std::mem::take(&mut self.skipping) {
                self.partial.clear();
                continue;
            }
            self.partial.extend_from_slice(line);
            let text = std::mem::take(&mut self.partial);
            self.line(ctx, &text);
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE_BYTES {
                self.partial.clear();
                self.skipping = true;
                self.bad_lines += 1;
            }
        }
    }

    fn line(&mut self, ctx: &TaskContext, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            self.bad_lines += 1;
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match ProgressReport::parse_line(text) {
            Ok(report) => ctx.report_progress(report),
            Err(_) => self.bad_lines += 1,
        }
    }
}

impl Drop for ProgressFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
