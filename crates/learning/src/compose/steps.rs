//! The steps of a request: cut at sequence words, each a quoted command, a program's command
//! line or a kind of work turned into its ecosystem's command.

use super::error::ComposeError;
use super::phrases::{
    ALWAYS, AND, CONDITION, KNOWN_PROGRAMS, LEADING_FILLER, SEQUENCE, TRAILING_FILLER,
    WORK_PATTERNS,
};
use super::request::{Condition, Ecosystem, Step};
use regex::Captures;

/// Splits the request (triggers and matrices removed) into steps with their conditions.
pub(super) fn steps_of(
    text: &str,
    quoted: &[String],
    ecosystem: Option<Ecosystem>,
) -> Result<Vec<Step>, ComposeError> {
    // Conditions become markers, then the text is cut at sequence words and markers.
    let marked = CONDITION.replace_all(text, |captures: &Captures<'_>| {
        let verb = captures[1].to_ascii_lowercase();
        if ["fails", "fail", "failed", "breaks", "is red"].contains(&verb.as_str()) {
            "\x01F\x01".to_string()
        } else {
            "\x01S\x01".to_string()
        }
    });
    let marked = ALWAYS.replace_all(&marked, "\x01A\x01");
    let mut steps = Vec::new();
    let mut condition = Condition::Success;
    for part in marked.split('\x01') {
        match part {
            "S" => {
                condition = Condition::Success;
                continue;
            }
            "F" => {
                condition = Condition::Failure;
                continue;
            }
            "A" => {
                condition = Condition::Always;
                continue;
            }
            _ => {}
        }
        for chunk in SEQUENCE.split(part) {
            for phrase in split_on_and(chunk, quoted) {
                if let Some(step) = step_of(&phrase, quoted, ecosystem, condition)? {
                    steps.push(step);
                    // A condition applies to the step right after it.
                    condition = Condition::Success;
                }
            }
        }
    }
    Ok(steps)
}

/// Splits `a and b` when `b` starts like a step of its own.
fn split_on_and(chunk: &str, quoted: &[String]) -> Vec<String> {
    let mut phrases: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut last = 0;
    for found in AND.find_iter(chunk) {
        let rest = chunk[found.end()..].trim_start();
        current.push_str(&chunk[last..found.start()]);
        if starts_a_step(rest, quoted) {
            phrases.push(std::mem::take(&mut current));
        } else {
            current.push_str(found.as_str());
        }
        last = found.end();
    }
    current.push_str(&chunk[last..]);
    phrases.push(current);
    phrases
}

fn starts_a_step(text: &str, quoted: &[String]) -> bool {
    let cleaned = LEADING_FILLER.replace(text, "");
    let first = cleaned.split_whitespace().next().unwrap_or_default();
    first.starts_with('\x00') && !quoted.is_empty()
        || is_program(first)
        || WORK_PATTERNS.iter().any(|(pattern, _)| {
            // Only the first words matter: "build the release and ..." starts a step.
            (1..=4).any(|words| {
                let prefix: Vec<&str> = cleaned.split_whitespace().take(words).collect();
                pattern.is_match(&prefix.join(" "))
            })
        })
}

pub(super) fn is_program(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    KNOWN_PROGRAMS.contains(&lower.as_str()) || word.starts_with("./") || word.contains('/')
}

fn step_of(
    phrase: &str,
    quoted: &[String],
    ecosystem: Option<Ecosystem>,
    condition: Condition,
) -> Result<Option<Step>, ComposeError> {
    let phrase = clean_phrase(phrase);
    if phrase.is_empty() {
        return Ok(None);
    }
    let run = |run: String| {
        Some(Step {
            name: None,
            run,
            condition,
        })
    };
    if let Some(command) = quoted_command(&phrase, quoted) {
        return Ok(run(command.clone()));
    }
    let first = phrase.split_whitespace().next().unwrap_or_default();
    if is_program(first) {
        return Ok(run(phrase.to_string()));
    }
    let column = match ecosystem {
        Some(Ecosystem::Rust) => Some(0),
        Some(Ecosystem::Node) => Some(1),
        Some(Ecosystem::Python) => Some(2),
        Some(Ecosystem::Go) => Some(3),
        None => None,
    };
    let lower = phrase.to_ascii_lowercase();
    let unknown = || ComposeError::UnknownStep {
        phrase: phrase.to_string(),
    };
    let (_, commands) = WORK_PATTERNS
        .iter()
        .find(|(pattern, _)| pattern.is_match(&lower))
        .ok_or_else(unknown)?;
    Ok(Some(Step {
        name: Some(lower.trim_start_matches("the ").to_string()),
        run: commands[column.ok_or_else(unknown)?].to_string(),
        condition,
    }))
}

/// The phrase without punctuation around it, a sentence's full stop or
/// filler words.
fn clean_phrase(phrase: &str) -> String {
    let mut phrase = phrase
        .trim()
        .trim_matches(|c: char| c == ',' || c == ';' || c == ':' || c == '!' || c.is_whitespace());
    // A sentence's full stop, not the `.` of `ruff check .` or `./...`.
    if let Some(stripped) = phrase.strip_suffix('.') {
        if stripped.ends_with(|c: char| c.is_alphanumeric() || c == ')') {
            phrase = stripped;
        }
    }
    let phrase = LEADING_FILLER.replace(phrase, "");
    let phrase = TRAILING_FILLER.replace(phrase.trim(), "");
    phrase
        .trim()
        .trim_matches(|c: char| c == ',' || c == ';' || c == ':' || c.is_whitespace())
        .to_string()
}

/// The quoted command a phrase refers to by its `\0<index>\0` placeholder.
fn quoted_command<'q>(phrase: &str, quoted: &'q [String]) -> Option<&'q String> {
    let start = phrase.find('\x00')?;
    let index: usize = phrase[start + 1..]
        .split('\x00')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or(usize::MAX);
    quoted.get(index)
}
