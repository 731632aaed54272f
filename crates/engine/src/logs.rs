//! Step output as log lines: split from byte streams, stamped, stored per
//! job instance and streamed live to subscribers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Longest line kept whole; longer output is cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Stored log bytes per job instance; past it one line says so and the rest is dropped.
pub const MAX_JOB_LOG_BYTES: u64 = 64 << 20;

/// Splits a byte stream into lines (`\n`, `\r\n`), keeping a partial line
/// until more bytes or [`LineSplitter::finish`] complete it.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes and returns the lines they complete, without line endings
    /// (invalid UTF-8 is replaced).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(self.take());
            } else {
                self.partial.push(byte);
                if self.partial.len() >= MAX_LINE_BYTES {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        line
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Written by the runner itself (step headers, errors, annotations).
    Runner,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The run.
    pub run_id: String,
    /// The job instance's display name.
    pub job: String,
    /// The step's index within the job (0 for set-up lines).
    pub step: usize,
    /// Where it came from.
    pub stream: LogStream,
    /// Milliseconds since the epoch.
    pub timestamp_ms: u64,
    /// The text, secrets already masked.
    pub text: String,
}

impl LogLine {
    /// A line stamped now.
    pub fn now(run_id: &str, job: &str, step: usize, stream: LogStream, text: String) -> Self {
        Self {
            run_id: run_id.to_string(),
            job: job.to_string(),
            step,
            stream,
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
            text,
        }
    }
}

/// Keeps every job's log in `<root>/<run>/<job>.jsonl` and broadcasts each
/// line to live subscribers (a slow subscriber misses lines, never blocks a job).
#[derive(Debug)]
pub struct LogHub {
    root: PathBuf,
    live: broadcast::Sender<LogLine>,
}

impl LogHub {
    /// A hub storing under `root`.
    pub fn new(root: &Path) -> Self {
        let (live, _) = broadcast::channel(4096);
        Self {
            root: root.to_path_buf(),
            live,
        }
    }

    /// Receives every line published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    /// Opens the writer for one job instance's log.
    pub fn job_writer(&self, run_id: &str, job: &str) -> io::Result<JobLogWriter> {
        let path = self.job_log_path(run_id, job);
        fs::create_dir_all(path.parent().expect("log files have a parent"))?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JobLogWriter {
            file,
            live: self.live.clone(),
            written: 0,
            limit: MAX_JOB_LOG_BYTES,
        })
    }

    /// Where one job instance's log is stored.
    pub fn job_log_path(&self, run_id: &str, job: &str) -> PathBuf {
        self.root
            .join(slug(run_id))
            .join(format!("{}.jsonl", slug(job)))
    }

    /// Reads a stored job log.
    pub fn read(&self, run_id: &str, job: &str) -> io::Result<Vec<LogLine>> {
        parse_log(&fs::read_to_string(self.job_log_path(run_id, job))?)
    }
}

/// The lines of a job log in its stored form (one JSON object a line), as
/// [`LogHub::read`] gives them.
pub fn parse_log(text: &str) -> io::Result<Vec<LogLine>> {
    text.lines()
        .map(|line| serde_json::from_str(line).map_err(io::Error::other))
        .collect()
}

/// Appends one job instance's lines to its file and to the live stream.
#[derive(Debug)]
pub struct JobLogWriter {
    file: File,
    live: broadcast::Sender<LogLine>,
    written: u64,
    limit: u64,
}

impl JobLogWriter {
    /// Stores and broadcasts a line; past the job's limit ([`MAX_JOB_LOG_BYTES`]) one
    /// runner line says so and later lines are dropped.
    pub fn write(&mut self, line: LogLine) -> io::Result<()> {
        if self.truncated() {
            return Ok(());
        }
        let text_len = line.text.len() as u64;
        if self.written + text_len > self.limit {
            self.written = self.limit + 1;
            let text = format!(
                "error: the job's log exceeded its limit of {} bytes; later output is dropped",
                self.limit
            );
            return self.store(LogLine {
                text,
                stream: LogStream::Runner,
                ..line
            });
        }
        self.written += text_len;
        self.store(line)
    }

    /// Whether the log reached its limit.
    pub fn truncated(&self) -> bool {
        self.written > self.limit
    }

    /// Uses another limit (tests).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn store(&mut self, line: LogLine) -> io::Result<()> {
        let mut json = serde_json::to_vec(&line).map_err(io::Error::other)?;
        json.push(b'\n');
        self.file.write_all(&json)?;
        let _ = self.live.send(line);
        Ok(())
    }
}

/// A file-name-safe form of a run id or job name.
fn slug(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_and_crlf_is_trimmed() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"one\r\ntw"), vec!["one"]);
        assert_eq!(splitter.push(b"o\n\nthree"), vec!["two", ""]);
        assert_eq!(splitter.finish().as_deref(), Some("three"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn overlong_lines_are_cut_and_bad_utf8_is_replaced() {
        let mut splitter = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let lines = splitter.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(splitter.finish().unwrap().len(), 10);
        assert_eq!(splitter.push(b"\xff\xfeok\n"), vec!["\u{fffd}\u{fffd}ok"]);
    }

    #[test]
    fn a_job_log_stops_at_its_limit_with_one_line_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::new(dir.path());
        let mut writer = hub.job_writer("run", "job").unwrap().with_limit(100);
        for i in 0..50 {
            let line = LogLine::now("run", "job", 1, LogStream::Stdout, format!("line {i:04}"));
            writer.write(line).unwrap();
        }
        assert!(writer.truncated());
        let lines = hub.read("run", "job").unwrap();
        assert_eq!(lines.len(), 12);
        assert!(lines[11].text.contains("exceeded its limit of 100 bytes"));
        assert_eq!(lines[11].stream, LogStream::Runner);
    }

    #[tokio::test]
    async fn lines_are_stored_and_streamed_live() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::new(dir.path());
        let mut live = hub.subscribe();
        let mut writer = hub.job_writer("run 1", "build (linux, 1)").unwrap();
        let line = LogLine::now(
            "run 1",
            "build (linux, 1)",
            2,
            LogStream::Stdout,
            "hello".into(),
        );
        writer.write(line.clone()).unwrap();
        assert_eq!(live.recv().await.unwrap(), line);
        assert_eq!(hub.read("run 1", "build (linux, 1)").unwrap(), vec![line]);
        assert!(
            hub.job_log_path("../x", "a/b").starts_with(dir.path()),
            "names cannot escape the log root"
        );
    }
}
