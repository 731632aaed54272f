//! A deterministic parser that turns common plain-English CI requests into a workflow, for use
//! without an LLM.
//!
//! What it understands:
//! - steps in order: "run X then Y", "X, then Y and finally Z", "X; Y", "first X, after that Y";
//!   commands in backticks or quotes are taken verbatim, so are phrases that start with a known
//!   program (`cargo`, `npm`, `make`, `./script.sh`...); phrases such as "build the release",
//!   "run the tests", "lint", "check formatting", "install dependencies" become the command of
//!   the project's ecosystem (Rust, Node, Python, Go), told by the other commands or words;
//! - conditions: "if it passes" (the default: later steps run only when earlier ones passed),
//!   "if it fails" (`if: failure()`), "always" / "even if it fails" (`if: always()`);
//! - triggers: "on push (to main)", "on pull requests (to main)", "on tags", "manually",
//!   "every night / day / hour / week / monday (at 2am)", `cron '…'`; without any, push and
//!   pull requests;
//! - matrices: "on node 18 and 20", "with python 3.11, 3.12", "for go 1.22 and 1.23", "java 17
//!   and 21", "rust stable and nightly", "on ubuntu and macos".
//!
//! The result is checked with [`firerunner_workflow::load::parse_workflow`] before it is returned.

mod error;
mod phrases;
mod render;
mod request;
mod schedule;
mod steps;

pub use error::ComposeError;
use phrases::{
    BRANCH, BRANCH_SUFFIX, CRON, DISPATCH, KNOWN_PROGRAMS, LIST_SEPARATOR, MATRIX, OS_MATRIX,
    PROJECT, PULL_REQUEST, PUSH, QUOTED, SCHEDULE, SENTENCE, TAGS,
};
use regex::{Captures, Regex};
use render::render;
use request::{Ecosystem, Matrix, Triggers};
use schedule::cron_of;
use steps::steps_of;

/// Turns a plain-English request into a validated workflow YAML (see the module docs).
pub fn workflow_from_text(request: &str) -> Result<String, ComposeError> {
    let (text, quoted) = set_quotes_aside(request);
    // Matrices first: "rust stable and nightly" is no schedule.
    let (text, matrices) = take_matrices(&text)?;
    let (text, mut triggers) = take_triggers(&text, &quoted)?;
    let text = PROJECT.replace_all(&text, " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let ecosystem = ecosystem_of(request, &matrices);
    let steps = steps_of(&text, &quoted, ecosystem)?;
    if steps.is_empty() {
        return Err(ComposeError::NoSteps);
    }
    if triggers.is_empty() {
        triggers.push = Some(Vec::new());
        triggers.pull_request = Some(Vec::new());
    }
    let yaml = render(&triggers, &matrices, &steps);
    crate::llm::validate_workflow(&yaml).map_err(ComposeError::Invalid)?;
    Ok(yaml)
}

/// Sets the commands in quotes aside first, so that nothing else splits or reads them: each
/// becomes `\0<index>\0` in the text. Whitespace is collapsed, and a full stop before a
/// capital ("X. Then Y", "X. Build it") ends a step.
fn set_quotes_aside(request: &str) -> (String, Vec<String>) {
    let mut quoted: Vec<String> = Vec::new();
    let text = QUOTED
        .replace_all(request, |captures: &Captures<'_>| {
            let command = (1..=3)
                .find_map(|group| captures.get(group))
                .map(|m| m.as_str().trim().to_string())
                .unwrap_or_default();
            quoted.push(command);
            format!("\x00{}\x00", quoted.len() - 1)
        })
        .into_owned();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (SENTENCE.replace_all(&text, "; $1").into_owned(), quoted)
}

/// Takes the operating-system and tool-version matrices out of `text`.
fn take_matrices(text: &str) -> Result<(String, Vec<Matrix>), ComposeError> {
    let mut matrices: Vec<Matrix> = Vec::new();
    let text = take(&OS_MATRIX, text, |_, captures| {
        let mut values: Vec<String> = Vec::new();
        for os in split_list(&captures[1]) {
            let runner = match os.to_ascii_lowercase().as_str() {
                "macos" | "mac" | "osx" => "macos-latest",
                "windows" => "windows-latest",
                _ => "ubuntu-latest",
            };
            if !values.iter().any(|value| value == runner) {
                values.push(runner.to_string());
            }
        }
        matrices.push(Matrix { key: "os", values });
        Ok(None)
    })?;
    let text = take(&MATRIX, &text, |_, captures| {
        let key = match captures[1].to_ascii_lowercase().as_str() {
            tool if tool.starts_with("node") => "node",
            "python" => "python",
            "go" | "golang" => "go",
            "java" | "jdk" => "java",
            "ruby" => "ruby",
            _ => "rust",
        };
        matrices.push(Matrix {
            key,
            values: split_list(&captures[2]),
        });
        Ok(None)
    })?;
    Ok((text, matrices))
}

/// Takes the triggers (schedules, tags, pull requests, pushes, manual runs) out of `text`.
fn take_triggers(text: &str, quoted: &[String]) -> Result<(String, Triggers), ComposeError> {
    let mut triggers = Triggers::default();
    let text = take(&CRON, text, |_, captures| {
        let index: usize = captures[1].parse().unwrap_or(usize::MAX);
        if let Some(cron) = quoted.get(index) {
            triggers.schedule.push(cron.clone());
        }
        Ok(None)
    })?;
    let text = take(&SCHEDULE, &text, |_, captures| {
        triggers.schedule.push(cron_of(captures)?);
        Ok(None)
    })?;
    let text = take(&TAGS, &text, |_, _| {
        triggers.tags = true;
        Ok(None)
    })?;
    let text = take(&PULL_REQUEST, &text, |text, captures| {
        let (branches, end) = branches_after(text, captures);
        triggers
            .pull_request
            .get_or_insert_with(Vec::new)
            .extend(branches);
        Ok(end)
    })?;
    let text = take(&PUSH, &text, |text, captures| {
        let (branches, end) = branches_after(text, captures);
        triggers.push.get_or_insert_with(Vec::new).extend(branches);
        Ok(end)
    })?;
    let text = take(&DISPATCH, &text, |_, _| {
        triggers.dispatch = true;
        Ok(None)
    })?;
    Ok((text, triggers))
}

/// Removes every match of `pattern` from `text`, handing each to `found`, which may consume
/// more of the text than the match by returning where its part ends.
fn take(
    pattern: &Regex,
    text: &str,
    mut found: impl FnMut(&str, &Captures<'_>) -> Result<Option<usize>, ComposeError>,
) -> Result<String, ComposeError> {
    let mut result = String::new();
    let mut last = 0;
    while let Some(captures) = pattern.captures_at(text, last) {
        let whole = captures.get(0).expect("group 0 always matches");
        let end = found(text, &captures)?
            .unwrap_or(whole.end())
            .max(whole.end());
        result.push_str(&text[last..whole.start()]);
        result.push(' ');
        last = end;
        if whole.end() == whole.start() {
            break;
        }
    }
    result.push_str(&text[last..]);
    Ok(result)
}

/// The branches named after a trigger's "to" (group 1), stopping at the first word that cannot
/// be a branch ("and pull requests"), and where they end.
fn branches_after(text: &str, captures: &Captures<'_>) -> (Vec<String>, Option<usize>) {
    const NOT_BRANCHES: &[&str] = &[
        "pull", "pr", "prs", "push", "pushes", "on", "every", "nightly", "daily", "then", "run",
        "tags", "tag", "manually", "if", "and", "or", "with", "for", "build", "test", "lint",
    ];
    let Some(to) = captures.get(1) else {
        return (Vec::new(), None);
    };
    let mut branches = Vec::new();
    let mut end = to.end();
    while let Some(found) = BRANCH.captures(&text[end..]) {
        let name = &found[1];
        let is_program = KNOWN_PROGRAMS.contains(&name.to_ascii_lowercase().as_str());
        if NOT_BRANCHES.contains(&name.to_ascii_lowercase().as_str())
            || is_program
            || name.contains('\x00')
        {
            break;
        }
        branches.push(name.to_string());
        end += found.get(0).expect("group 0 always matches").end();
    }
    if branches.is_empty() {
        // "to" began something else: give it back.
        return (branches, Some(to.start()));
    }
    if let Some(suffix) = BRANCH_SUFFIX.find(&text[end..]) {
        end += suffix.end();
    }
    (branches, Some(end))
}

fn split_list(list: &str) -> Vec<String> {
    LIST_SEPARATOR
        .split(list.trim())
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn ecosystem_of(request: &str, matrices: &[Matrix]) -> Option<Ecosystem> {
    for matrix in matrices {
        match matrix.key {
            "rust" => return Some(Ecosystem::Rust),
            "node" => return Some(Ecosystem::Node),
            "python" => return Some(Ecosystem::Python),
            "go" => return Some(Ecosystem::Go),
            _ => {}
        }
    }
    let lower = request.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .filter(|word| !word.is_empty())
        .collect();
    let has = |names: &[&str]| words.iter().any(|word| names.contains(word));
    if has(&["cargo", "rust", "rustc", "clippy", "crate", "crates"]) {
        Some(Ecosystem::Rust)
    } else if has(&[
        "npm",
        "npx",
        "yarn",
        "pnpm",
        "node",
        "nodejs",
        "javascript",
        "typescript",
        "jest",
    ]) {
        Some(Ecosystem::Node)
    } else if has(&["python", "pytest", "pip", "tox", "poetry", "django", "ruff"]) {
        Some(Ecosystem::Python)
    } else if has(&["go", "golang"]) {
        Some(Ecosystem::Go)
    } else {
        None
    }
}
