//! The words the parser looks for: known programs, trigger, matrix, condition and sequence
//! phrases, and the kinds of work with their command per ecosystem.

use regex::Regex;
use std::sync::LazyLock;

pub(super) const KNOWN_PROGRAMS: &[&str] = &[
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

pub(super) static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"`([^`]+)`|"([^"]+)"|'([^']+)'"#).expect("valid regex"));
pub(super) static CRON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:on\s+)?(?:a\s+)?cron\s+(?:schedule\s+)?\x00(\d+)\x00")
        .expect("valid regex")
});
pub(super) static SCHEDULE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:run\s+)?(?:once\s+)?(every\s+night|nightly|every\s+day|daily|every\s+morning|every\s+hour|hourly|every\s+week|weekly|every\s+(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|on\s+(?:mondays|tuesdays|wednesdays|thursdays|fridays|saturdays|sundays))(?:\s+at\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)?)?\b",
    )
    .expect("valid regex")
});
pub(super) static PUSH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:on|for|after)\s+(?:every\s+|each\s+|a\s+)?push(?:es)?|and\s+(?:on\s+)?(?:every\s+)?pushes)(\s+(?:to|on)\s+(?:the\s+)?)?",
    )
    .expect("valid regex")
});
pub(super) static PULL_REQUEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:and|on|for)\s+)?(?:every\s+|each\s+)?(?:pull[\s_-]requests?|prs?)\b(\s+(?:to|against|into|targeting)\s+(?:the\s+)?)?",
    )
    .expect("valid regex")
});
pub(super) static BRANCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+|\s*)([\w./*-]+)")
        .expect("valid regex")
});
pub(super) static BRANCH_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s+branch(?:es)?\b").expect("valid regex"));
pub(super) static PROJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:for|in|of)\s+(?:a|an|the|my|our|this)\s+(?:[\w.+-]+\s+)?(?:project|repo|repository|app|codebase|crate|package|library|module)\b")
        .expect("valid regex")
});
pub(super) static TRAILING_FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\s+(?:and|or|then|also|please|too|as\s+well))+$").expect("valid regex")
});
pub(super) static SENTENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\.\s+([A-Z])").expect("valid regex"));
pub(super) static TAGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:on|for)\s+(?:every\s+|each\s+|new\s+|a\s+)*(?:version\s+)?tags?(?:\s+pushes?)?\b")
        .expect("valid regex")
});
pub(super) static DISPATCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:(?:and|or)\s+)?(?:manually|on\s+demand|by\s+hand|(?:on\s+)?workflow_dispatch)\b",
    )
    .expect("valid regex")
});
pub(super) static MATRIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:on|with|for|across|using|against|in)\s+(node(?:\.?js)?|python|go(?:lang)?|java|jdk|ruby|rust)\s+(?:versions?\s+)?((?:[\w.]*\d[\w.]*|stable|beta|nightly|latest|lts)\b(?:(?:\s*,\s*|\s+and\s+|\s+or\s+|\s*,\s*(?:and|or)\s+)(?:[\w.]*\d[\w.]*|stable|beta|nightly|latest|lts)\b)*)",
    )
    .expect("valid regex")
});
pub(super) static OS_MATRIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:on|across|for)\s+((?:ubuntu|linux|macos|mac|osx|windows)(?:(?:\s*,\s*|\s+and\s+|\s*,\s*and\s+)(?:ubuntu|linux|macos|mac|osx|windows))+)\b",
    )
    .expect("valid regex")
});
pub(super) static LIST_SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+").expect("valid regex")
});
pub(super) static CONDITION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\s*[,;]?\s*(?:\band\s+)?(?:\bthen\s+)?(?:\bonly\s+)?\b(?:if|when|once)\s+(?:it|that|this|they|these|those|everything|all|all\s+of\s+them|the\s+(?:tests?|build|checks?|previous\s+steps?)|tests?|the\s+above)\s+(passes|pass|passed|succeeds|succeed|succeeded|is\s+green|are\s+green|works|work|is\s+ok|fails|fail|failed|breaks|is\s+red)\b\s*,?\s*(?:then\s+)?",
    )
    .expect("valid regex")
});
pub(super) static ALWAYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\s*[,;]?\s*(?:\band\s+)?(?:\bthen\s+)?\b(?:always|whatever\s+happens|no\s+matter\s+what|even\s+if\s+(?:it|that|this|they|something)\s+fails?|in\s+any\s+case)\b\s*,?\s*(?:then\s+)?",
    )
    .expect("valid regex")
});
pub(super) static SEQUENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*[,;]\s*(?:and\s+)?(?:then|after\s+that|afterwards|next|finally|and)?\s*|\s+(?:and\s+then|then|after\s+that|afterwards|and\s+finally|finally|followed\s+by)\s+")
        .expect("valid regex")
});
pub(super) static AND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s+and\s+").expect("valid regex"));
pub(super) static LEADING_FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:please|i\s+want\s+(?:to|a\s+workflow\s+(?:that|to))|create\s+a\s+workflow\s+(?:that|to)|make\s+a\s+workflow\s+(?:that|to)|set\s+up\s+ci\s+(?:that|to)|a\s+workflow\s+(?:that|to)|ci\s+(?:that|to)|first|then|and|also|next|finally|run|runs|execute|do|to|it\s+should)\b\s*)+",
    )
    .expect("valid regex")
});

/// Phrases of work, mapped per ecosystem (Rust, Node, Python, Go), first match wins.
pub(super) const WORK: &[(&str, [&str; 4])] = &[
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

pub(super) static WORK_PATTERNS: LazyLock<Vec<(Regex, [&'static str; 4])>> = LazyLock::new(|| {
    WORK.iter()
        .map(|(pattern, commands)| {
            (
                Regex::new(&format!("(?i){pattern}")).expect("valid regex"),
                *commands,
            )
        })
        .collect()
});
