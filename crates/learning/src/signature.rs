//! Error signatures: a failing step's log tail reduced to one stable line and a short hash.
//!
//! The last `max_lines` lines are cleaned (ANSI colours, leading timestamps), volatile parts are
//! abstracted (paths, `:line:col`, hex, durations, numbers — see [`crate::normalize`]), and the most
//! error-like line is kept: each line is scored by the markers it contains (`panicked`,
//! `error[`, `error:`, `fatal`, `FAILED`, `failed`, `exception`, `exit code`, ...); the best
//! score wins and ties go to the earliest line, the first error usually being the cause.

use crate::normalize::abstract_volatile;
use regex::Regex;
use std::sync::LazyLock;

/// Default number of log lines looked at.
pub const DEFAULT_TAIL_LINES: usize = 50;
const MAX_SIGNATURE_CHARS: usize = 200;

/// A normalised error signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorSignature {
    /// The normalised error line.
    pub text: String,
    /// 16 hex digits of a stable 64-bit FNV-1a hash of `text`.
    pub hash: String,
}

impl ErrorSignature {
    /// Builds a signature from already-normalised text.
    pub fn from_text(text: impl Into<String>) -> Self {
        let text = text.into();
        let hash = format!("{:016x}", fnv1a(text.as_bytes()));
        ErrorSignature { text, hash }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

static ANSI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("valid regex"));
static LEADING_TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?\s*|^\s*\[?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]?\s+")
        .expect("valid regex")
});
static LINE_COL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r":\d+(?::\d+)?\b").expect("valid regex"));
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d+(?:\.\d+)?\s?(?:ms|us|µs|ns|s|sec|secs|seconds|m|min|minutes|h)\b")
        .expect("valid regex")
});
static WHITESPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid regex"));

const MARKERS: &[(&str, u32)] = &[
    ("panicked", 8),
    ("error[", 6),
    ("fatal", 5),
    ("err!", 4),
    ("error:", 5),
    ("exception", 4),
    ("traceback", 2),
    ("assertion", 4),
    ("failed", 3),
    ("failure", 3),
    ("error", 3),
    ("cannot", 2),
    ("not found", 2),
    ("no such", 2),
    ("denied", 2),
    ("timed out", 3),
    ("timeout", 3),
    ("exit code", 1),
    ("exited with", 1),
];

/// Lines every failure of a kind ends with; they say nothing about the cause.
const GENERIC: &[&str] = &[
    "process completed with exit code",
    "could not compile",
    "test result:",
    "error: test failed",
    "a complete log of this run",
    "exited with code",
];

fn score(line: &str) -> u32 {
    let lower = line.to_ascii_lowercase();
    if GENERIC.iter().any(|generic| lower.contains(generic)) {
        return 1;
    }
    let mut total: u32 = MARKERS
        .iter()
        .filter(|(marker, _)| lower.contains(marker))
        .map(|(_, weight)| weight)
        .sum();
    if line.contains("FAILED") || line.contains("ERROR") {
        total += 1;
    }
    total
}

/// Cleans one log line: no colours, no leading timestamp, volatile parts abstracted.
pub fn clean_log_line(line: &str) -> String {
    let line = ANSI.replace_all(line, "");
    let line = LEADING_TIMESTAMP.replace(&line, "");
    let line = DURATION.replace_all(&line, "<dur>");
    let line = LINE_COL.replace_all(&line, ":<line>");
    let line = abstract_volatile(&line, false);
    WHITESPACE.replace_all(line.trim(), " ").into_owned()
}

/// The signature of a failing step's log, looking at its last `max_lines` lines.
///
/// Returns `None` when the tail has no non-empty line. When no line looks like an error, the last
/// non-empty line is used.
pub fn signature_from_log(log_tail: &str, max_lines: usize) -> Option<ErrorSignature> {
    let lines: Vec<&str> = log_tail.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut best: Option<(u32, String)> = None;
    let mut last_non_empty: Option<String> = None;
    for raw in &lines[start..] {
        let plain = ANSI.replace_all(raw, "");
        if plain.trim().is_empty() {
            continue;
        }
        let line_score = score(&plain);
        if line_score > 0
            && best
                .as_ref()
                .is_none_or(|(best_score, _)| line_score > *best_score)
        {
            best = Some((line_score, clean_log_line(raw)));
        }
        last_non_empty = Some(raw.to_string());
    }
    let text = match best {
        Some((_, text)) => text,
        None => clean_log_line(&last_non_empty?),
    };
    let text: String = text.chars().take(MAX_SIGNATURE_CHARS).collect();
    Some(ErrorSignature::from_text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(log: &str) -> String {
        signature_from_log(log, DEFAULT_TAIL_LINES)
            .expect("signature")
            .text
    }

    #[test]
    fn rust_compile_errors_keep_the_code_and_drop_locations() {
        let log = "   Compiling app v0.1.0 (/home/runner/work/app)\nerror[E0425]: cannot find value `x` in this scope\n  --> src/lib.rs:12:5\nerror: could not compile `app` (lib) due to 1 previous error";
        assert_eq!(
            sig(log),
            "error[E0425]: cannot find value `x` in this scope"
        );
    }

    #[test]
    fn panics_are_stable_across_line_numbers_and_threads() {
        let a = "running 3 tests\nthread 'tests::parse' panicked at src/parser.rs:41:9:\nassertion failed: ok\ntest result: FAILED. 2 passed; 1 failed; finished in 0.52s";
        let b = "running 3 tests\nthread 'tests::parse' panicked at src/parser.rs:97:13:\nassertion failed: ok\ntest result: FAILED. 5 passed; 1 failed; finished in 1.7s";
        assert_eq!(sig(a), sig(b));
        assert_eq!(sig(a), "thread 'tests::parse' panicked at <path>:<line>:");
    }

    #[test]
    fn timestamps_colours_and_hashes_are_removed() {
        let a = "2024-05-01T10:20:30.123Z \x1b[31mError: connect ETIMEDOUT 10.0.3.7:443\x1b[0m";
        let b = "2024-06-11T01:02:03.999Z \x1b[31mError: connect ETIMEDOUT 10.0.9.1:443\x1b[0m";
        assert_eq!(sig(a), sig(b));
        assert_eq!(sig(a), "Error: connect ETIMEDOUT <ver>:<line>");
        let c = "fatal: reference is not a tree: 4f9a2c1b7d3e";
        assert_eq!(sig(c), "fatal: reference is not a tree: <hash>");
    }

    #[test]
    fn python_and_node_failures() {
        let py = "FAILED tests/test_api.py::test_login - AssertionError: assert 401 == 200\n==== 1 failed, 12 passed in 3.21s ====";
        assert_eq!(
            sig(py),
            "FAILED <path>::test_login - AssertionError: assert <num> == <num>"
        );
        let npm = "npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree\nnpm ERR! A complete log of this run can be found in: /home/runner/.npm/_logs/2024-01-01-debug-0.log";
        assert_eq!(sig(npm), "npm ERR! code ERESOLVE");
    }

    #[test]
    fn generic_runner_lines_lose_to_the_cause() {
        let log = "thread 'main' panicked at src/main.rs:3:5:\nboom\nerror: test failed, to rerun pass `--lib`\nError: Process completed with exit code 101.";
        assert_eq!(sig(log), "thread 'main' panicked at <path>:<line>:");
        assert_eq!(
            sig("doing\nError: Process completed with exit code 2."),
            "Error: Process completed with exit code <num>."
        );
    }

    #[test]
    fn the_earliest_most_error_like_line_wins() {
        let log = "step 1 ok\nerror: first problem\nerror: second problem\nProcess completed with exit code 1.";
        assert_eq!(sig(log), "error: first problem");
    }

    #[test]
    fn logs_without_errors_use_the_last_line_and_empty_logs_have_none() {
        assert_eq!(sig("doing things\nKilled"), "Killed");
        assert!(signature_from_log("\n  \n", 10).is_none());
    }

    #[test]
    fn only_the_tail_is_considered() {
        let log = "error: old problem\nline\nline\nsegmentation fault";
        assert_eq!(sig(log), "error: old problem");
        assert_eq!(
            signature_from_log(log, 2).expect("signature").text,
            "segmentation fault"
        );
    }

    #[test]
    fn hashes_are_stable_and_short() {
        let a = ErrorSignature::from_text("error: x");
        assert_eq!(a.hash.len(), 16);
        assert_eq!(a, ErrorSignature::from_text("error: x"));
        assert_ne!(a.hash, ErrorSignature::from_text("error: y").hash);
    }
}
