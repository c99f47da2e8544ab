//! The bounded tail of an attempt's output that the details show: complete
//! lines plus the unfinished last one, at most [`MAX_LINES`] lines and
//! [`MAX_BYTES`] bytes (older lines are dropped and the view says so), and
//! the lines a search finds, kept up to date as lines come and go. No
//! egui here, and no I/O: the reader hands in bytes.

use std::collections::VecDeque;
use std::ops::Range;

/// Most lines kept in memory.
pub const MAX_LINES: usize = 5_000;
/// Most bytes of text kept in memory (the reader starts this far from the
/// end of a long log).
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Longest unfinished line kept before it is cut into a line of its own
/// (a task that prints without newlines still shows its output).
const MAX_PARTIAL: usize = 64 * 1024;

/// The last lines of a log, and what a search finds in them.
#[derive(Debug, Default)]
pub struct LogTail {
    /// Complete lines, oldest first.
    lines: VecDeque<String>,
    /// Number of the first kept line since the tail began (lines dropped
    /// from the front raise it), so matches survive the drop.
    first: u64,
    /// Bytes held by `lines`.
    bytes: usize,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// `partial` as text, for showing.
    partial_text: String,
    /// Whether earlier output is not shown (dropped here, or never read).
    earlier_dropped: bool,
    /// What the search looks for, ASCII-lowercased; empty: no search.
    needle: String,
    /// Numbers of the complete lines that contain the needle, ascending.
    matches: VecDeque<u64>,
}

impl LogTail {
    /// Adds output read from the log. After a gap (`gap`: the reader
    /// skipped bytes), the text up to the first newline is the end of a
    /// line whose start was not read, and is left out.
    pub fn push(&mut self, bytes: &[u8], gap: bool) {
        let mut bytes = bytes;
        if gap {
            self.earlier_dropped = true;
            self.partial.clear();
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => bytes = bytes.get(end + 1..).unwrap_or_default(),
                None => bytes = &[],
            }
        }
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(end);
            self.partial.extend_from_slice(line);
            let whole = std::mem::take(&mut self.partial);
            self.add_line(&whole);
            rest = after.get(1..).unwrap_or_default();
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() > MAX_PARTIAL {
            let tail = self.partial.split_off(MAX_PARTIAL);
            let head = std::mem::replace(&mut self.partial, tail);
            self.add_line(&head);
        }
        self.partial_text = shown_text(&self.partial);
        self.trim();
    }

    /// Looks for `text` (ignoring ASCII case) in the lines held and those
    /// that come; empty text ends the search.
    pub fn set_search(&mut self, text: &str) {
        let needle = text.to_ascii_lowercase();
        if needle == self.needle {
            return;
        }
        self.needle = needle;
        self.matches.clear();
        if self.needle.is_empty() {
            return;
        }
        for (number, line) in (self.first..).zip(&self.lines) {
            if contains(line, &self.needle) {
                self.matches.push_back(number);
            }
        }
    }

    /// Whether a search is on.
    pub fn searching(&self) -> bool {
        !self.needle.is_empty()
    }

    /// Whether earlier output is not shown.
    pub fn earlier_dropped(&self) -> bool {
        self.earlier_dropped
    }

    /// Whether nothing was read yet (or all of it was empty).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.partial.is_empty()
    }

    /// How many lines show: all of them, or with `only_matching` those
    /// the search found (every line while there is no search); the
    /// unfinished last line counts.
    pub fn shown_len(&self, only_matching: bool) -> usize {
        if only_matching && self.searching() {
            self.matches.len() + usize::from(self.partial_matches())
        } else {
            self.lines.len() + usize::from(!self.partial.is_empty())
        }
    }

    /// The `index`th line shown (see [`LogTail::shown_len`]).
    pub fn shown(&self, index: usize, only_matching: bool) -> Option<&str> {
        let (count, line) = if only_matching && self.searching() {
            let line = self
                .matches
                .get(index)
                .and_then(|number| usize::try_from(number - self.first).ok())
                .and_then(|at| self.lines.get(at));
            (self.matches.len(), line)
        } else {
            (self.lines.len(), self.lines.get(index))
        };
        match line {
            Some(line) => Some(line.as_str()),
            None if index == count && !self.partial.is_empty() => {
                let show = !(only_matching && self.searching()) || self.partial_matches();
                show.then_some(self.partial_text.as_str())
            }
            None => None,
        }
    }

    /// Where the search text is in `line`, as byte ranges (none without a
    /// search).
    pub fn found_in(&self, line: &str) -> Vec<Range<usize>> {
        if self.needle.is_empty() {
            return Vec::new();
        }
        let needle = self.needle.as_bytes();
        let hay = line.as_bytes();
        let mut found = Vec::new();
        let mut at = 0;
        while at + needle.len() <= hay.len() {
            let window = hay.get(at..at + needle.len()).unwrap_or_default();
            if window.eq_ignore_ascii_case(needle) && line.is_char_boundary(at) {
                found.push(at..at + needle.len());
                at += needle.len();
            } else {
                at += 1;
            }
        }
        found
    }

    fn partial_matches(&self) -> bool {
        !self.partial.is_empty() && self.searching() && contains(&self.partial_text, &self.needle)
    }

    fn add_line(&mut self, bytes: &[u8]) {
        let line = shown_text(bytes);
        let number = self.first + self.lines.len() as u64;
        if self.searching() && contains(&line, &self.needle) {
            self.matches.push_back(number);
        }
        self.bytes += line.len();
        self.lines.push_back(line);
    }

    /// Drops the oldest lines beyond the bounds.
    fn trim(&mut self) {
        while self.lines.len() > MAX_LINES || self.bytes > MAX_BYTES {
            let Some(line) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= line.len();
            self.first += 1;
            self.earlier_dropped = true;
            while self.matches.front().is_some_and(|m| *m < self.first) {
                self.matches.pop_front();
            }
        }
    }
}

/// A line's bytes as text: invalid UTF-8 replaced, a carriage return at
/// the end removed, and of a line redrawn with carriage returns (progress
/// bars), only what was drawn last.
fn shown_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    text.rsplit('\r')
        .find(|part| !part.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Whether `line` contains `needle` (already ASCII-lowercased), ignoring
/// ASCII case.
fn contains(line: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || line
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(tail: &LogTail, only_matching: bool) -> Vec<String> {
        (0..tail.shown_len(only_matching))
            .filter_map(|i| tail.shown(i, only_matching).map(str::to_owned))
            .collect()
    }

    #[test]
    fn lines_join_across_reads_and_the_unfinished_one_shows_last() {
        let mut tail = LogTail::default();
        tail.push(b"first li", false);
        assert_eq!(shown(&tail, false), ["first li"]);
        tail.push(b"ne\r\nsecond\nthi", false);
        assert_eq!(shown(&tail, false), ["first line", "second", "thi"]);
        tail.push(b"rd\n", false);
        assert_eq!(shown(&tail, false), ["first line", "second", "third"]);
        assert!(!tail.earlier_dropped());
        tail.push(b"10%\r20%\r30%\n", false);
        assert_eq!(shown(&tail, false).last().map(String::as_str), Some("30%"));
    }

    #[test]
    fn the_oldest_lines_go_beyond_the_bounds_and_the_tail_says_so() {
        let mut tail = LogTail::default();
        let mut text = Vec::new();
        for n in 0..MAX_LINES + 10 {
            text.extend_from_slice(format!("line {n}\n").as_bytes());
        }
        tail.set_search("line 1");
        tail.push(&text, false);
        assert!(tail.earlier_dropped());
        assert_eq!(tail.shown_len(false), MAX_LINES);
        assert_eq!(tail.shown(0, false), Some("line 10"));
        let found = shown(&tail, true);
        assert_eq!(found.first().map(String::as_str), Some("line 10"));
        assert!(found.iter().all(|line| line.contains("line 1")));

        let mut wide = LogTail::default();
        let line = "x".repeat(1023) + "\n";
        for _ in 0..(MAX_BYTES / 1024 + 5) {
            wide.push(line.as_bytes(), false);
        }
        assert!(wide.earlier_dropped());
        assert!(wide.shown_len(false) * 1023 <= MAX_BYTES);
    }

    #[test]
    fn after_a_gap_the_cut_line_is_left_out() {
        let mut tail = LogTail::default();
        tail.push(b"end of a cut line\nwhole\n", true);
        assert_eq!(shown(&tail, false), ["whole"]);
        assert!(tail.earlier_dropped());
    }

    #[test]
    fn a_line_without_newlines_is_cut_rather_than_held_whole() {
        let mut tail = LogTail::default();
        tail.push(&vec![b'y'; MAX_PARTIAL * 2 + 3], false);
        assert_eq!(tail.shown_len(false), 3);
        assert_eq!(tail.shown(2, false), Some("yyy"));
    }

    #[test]
    fn the_search_filters_and_finds_ignoring_case_as_lines_come() {
        let mut tail = LogTail::default();
        tail.push(b"alpha\nBeta\ngamma\nbet", false);
        tail.set_search("BET");
        assert_eq!(shown(&tail, true), ["Beta", "bet"]);
        assert_eq!(shown(&tail, false).len(), 4, "highlighting shows all");
        tail.push(b"a again\nomega\n", false);
        assert_eq!(shown(&tail, true), ["Beta", "beta again"]);
        assert_eq!(tail.found_in("a beta, BETA"), [2..5, 8..11]);
        tail.set_search("");
        assert_eq!(shown(&tail, true).len(), 5, "no search: every line");
        assert!(tail.found_in("beta").is_empty());
    }
}
