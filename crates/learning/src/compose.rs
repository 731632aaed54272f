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

use regex::{Captures, Regex};
use std::sync::LazyLock;

/// Why a request could not become a workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// The request names no step to run.
    #[error("the request names no command to run (put commands in backticks, e.g. `make test`)")]
    NoSteps,
    /// A phrase is neither a command nor a known kind of work for a known ecosystem.
    #[error("cannot tell which command {phrase:?} means; name it, e.g. in backticks")]
    UnknownStep {
        /// The phrase.
        phrase: String,
    },
    /// A time of day could not be read.
    #[error("cannot read the time {0:?}")]
    BadTime(String),
    /// The generated YAML did not pass validation (a bug in this parser).
    #[error("the generated workflow is invalid:\n{0}")]
    Invalid(String),
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Success,
    Failure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ecosystem {
    Rust,
    Node,
    Python,
    Go,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    name: Option<String>,
    run: String,
    condition: Condition,
}

#[derive(Debug, Default)]
struct Triggers {
    push: Option<Vec<String>>,
    pull_request: Option<Vec<String>>,
    tags: bool,
    schedule: Vec<String>,
    dispatch: bool,
}

impl Triggers {
    fn is_empty(&self) -> bool {
        self.push.is_none()
            && self.pull_request.is_none()
            && !self.tags
            && self.schedule.is_empty()
            && !self.dispatch
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Matrix {
    /// `node`, `python`, `go`, `java`, `ruby`, `rust` or `os`.
    key: &'static str,
    values: Vec<String>,
}

const KNOWN_PROGRAMS: &[&str] = &[
    "bash",
    "bun",
    "bundle",
    "cargo",
    "cmake",
    "ctest",
    "curl",
    "deno",
    "docker",
    "dotnet",
    "echo",
    "git",
    "go",
    "gradle",
    "helm",
    "just",
    "kubectl",
    "make",
    "mvn",
    "ninja",
    "node",
    "npm",
    "npx",
    "pip",
    "pip3",
    "pnpm",
    "poetry",
    "pytest",
    "python",
    "python3",
    "rake",
    "ruby",
    "ruff",
    "rustup",
    "sh",
    "terraform",
    "tox",
    "uv",
    "yarn",
];

static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"`([^`]+)`|"([^"]+)"|'([^']+)'"#).expect("valid regex"));
static CRON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:on\s+)?(?:a\s+)?cron\s+(?:schedule\s+)?\x00(\d+)\x00")
        .expect("valid regex")
});
static SCHEDULE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:run\s+)?(?:once\s+)?(every\s+night|nightly|every\s+day|daily|every\s+morning|every\s+hour|hourly|every\s+week|weekly|every\s+(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|on\s+(?:mondays|tuesdays|wednesdays|thursdays|fridays|saturdays|sundays))(?:\s+at\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)?)?\b",
    )
    .expect("valid regex")
});
static PUSH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:on|for|after)\s+(?:every\s+|each\s+|a\s+)?push(?:es)?|and\s+(?:on\s+)?(?:every\s+)?pushes)(\s+(?:to|on)\s+(?:the\s+)?)?",
    )
    .expect("valid regex")
});
static PULL_REQUEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:and|on|for)\s+)?(?:every\s+|each\s+)?(?:pull[\s_-]requests?|prs?)\b(\s+(?:to|against|into|targeting)\s+(?:the\s+)?)?",
    )
    .expect("valid regex")
});
static BRANCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+|\s*)([\w./*-]+)")
        .expect("valid regex")
});
static BRANCH_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s+branch(?:es)?\b").expect("valid regex"));
static PROJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:for|in|of)\s+(?:a|an|the|my|our|this)\s+(?:[\w.+-]+\s+)?(?:project|repo|repository|app|codebase|crate|package|library|module)\b")
        .expect("valid regex")
});
static TRAILING_FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\s+(?:and|or|then|also|please|too|as\s+well))+$").expect("valid regex")
});
static SENTENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\.\s+([A-Z])").expect("valid regex"));
static TAGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:on|for)\s+(?:every\s+|each\s+|new\s+|a\s+)*(?:version\s+)?tags?(?:\s+pushes?)?\b")
        .expect("valid regex")
});
static DISPATCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:and|or)\s+)?(?:manually|on\s+demand|by\s+hand|(?:on\s+)?workflow_dispatch)\b",
    )
    .expect("valid regex")
});
static MATRIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:on|with|for|across|using|against|in)\s+(node(?:\.?js)?|python|go(?:lang)?|java|jdk|ruby|rust)\s+(?:versions?\s+)?((?:[\w.]*\d[\w.]*|stable|beta|nightly|latest|lts)\b(?:(?:\s*,\s*|\s+and\s+|\s+or\s+|\s*,\s*(?:and|or)\s+)(?:[\w.]*\d[\w.]*|stable|beta|nightly|latest|lts)\b)*)",
    )
    .expect("valid regex")
});
static OS_MATRIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:on|across|for)\s+((?:ubuntu|linux|macos|mac|osx|windows)(?:(?:\s*,\s*|\s+and\s+|\s*,\s*and\s+)(?:ubuntu|linux|macos|mac|osx|windows))+)\b",
    )
    .expect("valid regex")
});
static LIST_SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+").expect("valid regex")
});
static CONDITION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\s*[,;]?\s*(?:\band\s+)?(?:\bthen\s+)?(?:\bonly\s+)?\b(?:if|when|once)\s+(?:it|that|this|they|these|those|everything|all|all\s+of\s+them|the\s+(?:tests?|build|checks?|previous\s+steps?)|tests?|the\s+above)\s+(passes|pass|passed|succeeds|succeed|succeeded|is\s+green|are\s+green|works|work|is\s+ok|fails|fail|failed|breaks|is\s+red)\b\s*,?\s*(?:then\s+)?",
    )
    .expect("valid regex")
});
static ALWAYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\s*[,;]?\s*(?:\band\s+)?(?:\bthen\s+)?\b(?:always|whatever\s+happens|no\s+matter\s+what|even\s+if\s+(?:it|that|this|they|something)\s+fails?|in\s+any\s+case)\b\s*,?\s*(?:then\s+)?",
    )
    .expect("valid regex")
});
static SEQUENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*[,;]\s*(?:and\s+)?(?:then|after\s+that|afterwards|next|finally|and)?\s*|\s+(?:and\s+then|then|after\s+that|afterwards|and\s+finally|finally|followed\s+by)\s+")
        .expect("valid regex")
});
static AND: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\s+and\s+").expect("valid regex"));
static LEADING_FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:please|i\s+want\s+(?:to|a\s+workflow\s+(?:that|to))|create\s+a\s+workflow\s+(?:that|to)|make\s+a\s+workflow\s+(?:that|to)|set\s+up\s+ci\s+(?:that|to)|a\s+workflow\s+(?:that|to)|ci\s+(?:that|to)|first|then|and|also|next|finally|run|runs|execute|do|to|it\s+should)\b\s*)+",
    )
    .expect("valid regex")
});

/// Phrases of work, mapped per ecosystem (Rust, Node, Python, Go), first match wins.
const WORK: &[(&str, [&str; 4])] = &[
    (
        r"^(?:build|compile)\s+(?:the\s+|a\s+)?release(?:\s+build)?$|^release\s+build$|^build\s+for\s+release$",
        [
            "cargo build --release",
            "npm run build",
            "python -m build",
            "go build -trimpath ./...",
        ],
    ),
    (
        r"^(?:the\s+)?(?:unit\s+)?tests?(?:\s+suite)?$|^test(?:\s+it|\s+everything)?$|^(?:the\s+)?test\s+suite$",
        ["cargo test", "npm test", "pytest", "go test ./..."],
    ),
    (
        r"^(?:build|compile)(?:\s+it|\s+the\s+(?:project|code|app))?$|^(?:the\s+)?build$",
        [
            "cargo build",
            "npm run build",
            "python -m build",
            "go build ./...",
        ],
    ),
    (
        r"^(?:lint|clippy|vet)(?:\s+it|\s+the\s+code)?$|^(?:the\s+)?linters?$|^check\s+lints$",
        [
            "cargo clippy --all-targets -- -D warnings",
            "npm run lint",
            "ruff check .",
            "go vet ./...",
        ],
    ),
    (
        r"^check\s+(?:the\s+)?(?:format(?:ting)?|fmt|style)$|^(?:the\s+)?format(?:ting)?\s+check$|^fmt\s+check$",
        [
            "cargo fmt --all --check",
            "npx prettier --check .",
            "ruff format --check .",
            "test -z \"$(gofmt -l .)\"",
        ],
    ),
    (
        r"^install(?:\s+(?:the\s+)?(?:dependencies|deps|packages|requirements))?$",
        [
            "cargo fetch",
            "npm ci",
            "pip install -r requirements.txt",
            "go mod download",
        ],
    ),
    (
        r"^(?:build\s+)?(?:the\s+)?docs?(?:umentation)?$",
        [
            "cargo doc --no-deps",
            "npm run docs",
            "python -m sphinx docs docs/_build",
            "go doc ./...",
        ],
    ),
];

static WORK_PATTERNS: LazyLock<Vec<(Regex, [&'static str; 4])>> = LazyLock::new(|| {
    WORK.iter()
        .map(|(pattern, commands)| {
            (
                Regex::new(&format!("(?i){pattern}")).expect("valid regex"),
                *commands,
            )
        })
        .collect()
});

/// Turns a plain-English request into a validated workflow YAML (see the module docs).
pub fn workflow_from_text(request: &str) -> Result<String, ComposeError> {
    // Commands in quotes are set aside first so that nothing below splits or reads them.
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
    // "X. Then Y" / "X. Build it": a full stop before a capital ends a step.
    let text = SENTENCE.replace_all(&text, "; $1").into_owned();

    let mut triggers = Triggers::default();
    let mut matrices: Vec<Matrix> = Vec::new();
    // Matrices first: "rust stable and nightly" is no schedule.
    let text = take(&OS_MATRIX, &text, |_, captures| {
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

    let text = take(&CRON, &text, |_, captures| {
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

fn cron_of(captures: &Captures<'_>) -> Result<String, ComposeError> {
    let when = captures[1].to_ascii_lowercase();
    let when = when.split_whitespace().collect::<Vec<_>>().join(" ");
    let explicit_hour = captures.get(2).is_some();
    let mut hour: u32 = match captures.get(2) {
        Some(hour) => hour
            .as_str()
            .parse()
            .map_err(|_| ComposeError::BadTime(captures[0].to_string()))?,
        None if when.contains("morning") => 6,
        None => 0,
    };
    let minute: u32 = match captures.get(3) {
        Some(minute) => minute
            .as_str()
            .parse()
            .map_err(|_| ComposeError::BadTime(captures[0].to_string()))?,
        None => 0,
    };
    match captures.get(4).map(|m| m.as_str().to_ascii_lowercase()) {
        Some(suffix) if suffix == "pm" && hour < 12 => hour += 12,
        Some(suffix) if suffix == "am" && hour == 12 => hour = 0,
        _ => {}
    }
    if hour > 23 || minute > 59 {
        return Err(ComposeError::BadTime(captures[0].to_string()));
    }
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let weekday = DAYS
        .iter()
        .position(|day| when.contains(day))
        .map(|day| day.to_string());
    Ok(if when.contains("hour") {
        format!("{minute} * * * *")
    } else if let Some(day) = weekday {
        format!("{minute} {hour} * * {day}")
    } else if when.contains("week") {
        format!("{minute} {hour} * * 1")
    } else if when.contains("night") && !explicit_hour {
        // Nightly: 03:00 UTC unless a time is given.
        format!("{minute} 3 * * *")
    } else {
        format!("{minute} {hour} * * *")
    })
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

/// Splits the request (triggers and matrices removed) into steps with their conditions.
fn steps_of(
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

fn is_program(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    KNOWN_PROGRAMS.contains(&lower.as_str()) || word.starts_with("./") || word.contains('/')
}

fn step_of(
    phrase: &str,
    quoted: &[String],
    ecosystem: Option<Ecosystem>,
    condition: Condition,
) -> Result<Option<Step>, ComposeError> {
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
    let phrase = phrase
        .trim()
        .trim_matches(|c: char| c == ',' || c == ';' || c == ':' || c.is_whitespace());
    if phrase.is_empty() {
        return Ok(None);
    }
    if let Some(start) = phrase.find('\x00') {
        let rest = &phrase[start + 1..];
        let index: usize = rest
            .split('\x00')
            .next()
            .and_then(|number| number.parse().ok())
            .unwrap_or(usize::MAX);
        if let Some(command) = quoted.get(index) {
            return Ok(Some(Step {
                name: None,
                run: command.clone(),
                condition,
            }));
        }
    }
    let first = phrase.split_whitespace().next().unwrap_or_default();
    if is_program(first) {
        return Ok(Some(Step {
            name: None,
            run: phrase.to_string(),
            condition,
        }));
    }
    let column = match ecosystem {
        Some(Ecosystem::Rust) => Some(0),
        Some(Ecosystem::Node) => Some(1),
        Some(Ecosystem::Python) => Some(2),
        Some(Ecosystem::Go) => Some(3),
        None => None,
    };
    let lower = phrase.to_ascii_lowercase();
    for (pattern, commands) in WORK_PATTERNS.iter() {
        if pattern.is_match(&lower) {
            let Some(column) = column else {
                return Err(ComposeError::UnknownStep {
                    phrase: phrase.to_string(),
                });
            };
            return Ok(Some(Step {
                name: Some(lower.trim_start_matches("the ").to_string()),
                run: commands[column].to_string(),
                condition,
            }));
        }
    }
    Err(ComposeError::UnknownStep {
        phrase: phrase.to_string(),
    })
}

/// A YAML scalar: plain when that is safe, else single-quoted.
fn scalar(text: &str) -> String {
    let plain_safe = !text.is_empty()
        && !text.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.contains('\n')
        && !text.contains("${{")
        && !["true", "false", "null", "yes", "no", "on", "off", "~"]
            .contains(&text.to_ascii_lowercase().as_str())
        && text.parse::<f64>().is_err();
    if plain_safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

fn list(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|value| format!("'{}'", value.replace('\'', "''")))
        .collect();
    format!("[{}]", items.join(", "))
}

fn render(triggers: &Triggers, matrices: &[Matrix], steps: &[Step]) -> String {
    let mut yaml = String::from("name: CI\non:\n");
    if triggers.push.is_some() || triggers.tags {
        yaml.push_str("  push:\n");
        if let Some(branches) = triggers.push.as_ref().filter(|b| !b.is_empty()) {
            yaml.push_str(&format!("    branches: {}\n", list(branches)));
        } else if triggers.tags && triggers.push.is_none() {
            yaml.push_str("    tags: ['*']\n");
        }
        if triggers.tags && triggers.push.is_some() {
            yaml.push_str("    tags: ['*']\n");
        }
    }
    if let Some(branches) = &triggers.pull_request {
        yaml.push_str("  pull_request:\n");
        if !branches.is_empty() {
            yaml.push_str(&format!("    branches: {}\n", list(branches)));
        }
    }
    if !triggers.schedule.is_empty() {
        yaml.push_str("  schedule:\n");
        for cron in &triggers.schedule {
            yaml.push_str(&format!("    - cron: '{}'\n", cron.replace('\'', "''")));
        }
    }
    if triggers.dispatch {
        yaml.push_str("  workflow_dispatch:\n");
    }
    yaml.push_str("jobs:\n  ci:\n");
    let os = matrices.iter().find(|matrix| matrix.key == "os");
    if os.is_some() {
        yaml.push_str("    runs-on: ${{ matrix.os }}\n");
    } else {
        yaml.push_str("    runs-on: ubuntu-latest\n");
    }
    if !matrices.is_empty() {
        yaml.push_str("    strategy:\n      fail-fast: false\n      matrix:\n");
        for matrix in matrices {
            yaml.push_str(&format!(
                "        {}: {}\n",
                matrix.key,
                list(&matrix.values)
            ));
        }
    }
    yaml.push_str("    steps:\n      - uses: actions/checkout@v4\n");
    for matrix in matrices {
        let setup = match matrix.key {
            "node" => Some(("actions/setup-node@v4", "node-version", None)),
            "python" => Some(("actions/setup-python@v5", "python-version", None)),
            "go" => Some(("actions/setup-go@v5", "go-version", None)),
            "java" => Some(("actions/setup-java@v4", "java-version", Some("temurin"))),
            "ruby" => Some(("ruby/setup-ruby@v1", "ruby-version", None)),
            _ => None,
        };
        if let Some((action, input, distribution)) = setup {
            yaml.push_str(&format!("      - uses: {action}\n        with:\n"));
            if let Some(distribution) = distribution {
                yaml.push_str(&format!("          distribution: {distribution}\n"));
            }
            yaml.push_str(&format!(
                "          {input}: ${{{{ matrix.{} }}}}\n",
                matrix.key
            ));
        } else if matrix.key == "rust" {
            yaml.push_str(
                "      - run: rustup toolchain install ${{ matrix.rust }} --profile minimal && rustup default ${{ matrix.rust }}\n",
            );
        }
    }
    for step in steps {
        let mut first = true;
        let mut line = |key: &str, value: String| {
            let lead = if first { "      - " } else { "        " };
            first = false;
            yaml.push_str(&format!("{lead}{key}: {value}\n"));
        };
        if let Some(name) = &step.name {
            line("name", scalar(name));
        }
        match step.condition {
            Condition::Success => {}
            Condition::Failure => line("if", "failure()".into()),
            Condition::Always => line("if", "always()".into()),
        }
        line("run", scalar(&step.run));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        assert_eq!(scalar("cargo test"), "cargo test");
        assert_eq!(scalar("echo a: b"), "'echo a: b'");
        assert_eq!(scalar("it's"), "it's");
        assert_eq!(scalar("'x'"), "'''x'''");
        assert_eq!(scalar("3.10"), "'3.10'");
        assert_eq!(scalar("yes"), "'yes'");
    }

    #[test]
    fn times_become_cron() {
        let cron = |text: &str| {
            let captures = SCHEDULE.captures(text).expect("a schedule");
            cron_of(&captures)
        };
        assert_eq!(cron("every night").unwrap(), "0 3 * * *");
        assert_eq!(cron("every night at 1:30am").unwrap(), "30 1 * * *");
        assert_eq!(cron("daily at 6pm").unwrap(), "0 18 * * *");
        assert_eq!(cron("every hour").unwrap(), "0 * * * *");
        assert_eq!(cron("every friday at 17").unwrap(), "0 17 * * 5");
        assert_eq!(cron("weekly").unwrap(), "0 0 * * 1");
        assert!(matches!(cron("daily at 25"), Err(ComposeError::BadTime(_))));
    }
}
