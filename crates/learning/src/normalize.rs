//! Command normalisation: a step's `run` script becomes a stable key.
//!
//! Decision on multi-line scripts: a step is the unit that passes or fails (only its exit code is
//! known), so a whole script is **one node**. Its key is the list of its meaningful lines, each
//! normalised, joined with `"\n"`. A meaningful line is what remains after joining `\`
//! continuations, dropping blank lines and `#` comments (whole-line and trailing ones), and removing
//! leading `NAME=value` environment assignments.
//!
//! Volatile parts become placeholders, in this order (earlier ones win):
//! `"…"`/`'…'` → `<str>`, UUIDs → `<uuid>`, ISO dates/times → `<time>`, URLs → `<url>`,
//! temp dirs (`/tmp/…`, `$RUNNER_TEMP…`, `${{ runner.temp }}…`) → `<tmp>`,
//! paths (any token with a `/`, or starting with `~` or `.`+`/`) → `<path>`,
//! hex hashes of 7–64 characters containing a digit → `<hash>`, semver-like versions
//! (`1.2`, `v1.2.3-rc.1`) → `<ver>`, other numbers → `<num>`. Whitespace is collapsed.

use regex::Regex;
use std::sync::LazyLock;

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

fn rule(pattern: &str, replacement: &'static str) -> Rule {
    Rule {
        pattern: Regex::new(pattern).expect("valid normalisation regex"),
        replacement,
    }
}

static ENV_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?:[A-Za-z_][A-Za-z0-9_]*=(?:"[^"]*"|'[^']*'|\S*)\s+)+"#).expect("valid regex")
});
static TRAILING_COMMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+#[^'\x22]*$").expect("valid regex"));
static WHITESPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid regex"));

static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|'[^']*'"#).expect("valid regex"));

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "<uuid>",
        ),
        rule(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
            "<time>",
        ),
        rule(r"\b[a-z][a-z0-9+.-]*://\S+", "<url>"),
        rule(
            r"(?:/tmp|/var/tmp|\$\{?RUNNER_TEMP\}?|\$TMPDIR|\$\{\{\s*runner\.temp\s*\}\})(?:/[^\s;&|)]*)?",
            "<tmp>",
        ),
        rule(
            r"(?:~|\.{1,2})?(?:/[^\s/;&|<>)]+)+/?|\b[\w.-]+(?:/[\w.-]+)+/?",
            "<path>",
        ),
    ]
});

static RULES_AFTER_HEX: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(r"\bv?\d+\.\d+(?:\.\d+)*(?:[-+][0-9A-Za-z.-]+)?\b", "<ver>"),
        rule(r"\b\d+\b", "<num>"),
        rule(r"[ \t]+", " "),
    ]
});

/// Hex candidates shorter than 7 characters (e.g. `a1`) are words, not hashes.
static HEX_CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*|[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*)\b",
    )
    .expect("valid regex")
});

/// Applies the placeholder rules to one piece of text (a command line or a log line).
///
/// Quoted strings become `<str>` only when `abstract_quoted` is set: in commands they are
/// arguments (messages, expressions), in logs they usually name the failing thing (a test, a module).
pub(crate) fn abstract_volatile(text: &str, abstract_quoted: bool) -> String {
    let text = if abstract_quoted {
        QUOTED.replace_all(text, "<str>")
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let mut current = apply_rules(&RULES, text.into_owned());
    if HEX_CANDIDATE.is_match(&current) {
        current = HEX_CANDIDATE
            .replace_all(&current, |caps: &regex::Captures<'_>| {
                let word = &caps[0];
                if (7..=64).contains(&word.len()) {
                    "<hash>".to_string()
                } else {
                    word.to_string()
                }
            })
            .into_owned();
    }
    apply_rules(&RULES_AFTER_HEX, current)
}

fn apply_rules(rules: &[Rule], mut current: String) -> String {
    for rule in rules {
        if rule.pattern.is_match(&current) {
            current = rule
                .pattern
                .replace_all(&current, rule.replacement)
                .into_owned();
        }
    }
    current
}

/// Meaningful lines of a script: continuations joined, blanks, comments and env prefixes removed.
pub fn meaningful_lines(script: &str) -> Vec<String> {
    let mut joined: Vec<String> = Vec::new();
    let mut pending = String::new();
    for raw in script.lines() {
        let line = raw.trim_end();
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        joined.push(std::mem::take(&mut pending));
    }
    if !pending.trim().is_empty() {
        joined.push(pending);
    }
    joined
        .into_iter()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = TRAILING_COMMENT.replace(line, "");
            let line = ENV_PREFIX.replace(&line, "");
            let line = WHITESPACE.replace_all(line.trim(), " ").into_owned();
            (!line.is_empty()).then_some(line)
        })
        .collect()
}

/// Normalises a step's command (possibly a multi-line script) into its knowledge-graph key.
///
/// Returns an empty string for a script without meaningful lines.
pub fn normalize_command(script: &str) -> String {
    meaningful_lines(script)
        .iter()
        .map(|line| abstract_volatile(line, true).trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::normalize_command as n;

    #[test]
    fn plain_commands_are_kept() {
        assert_eq!(n("cargo test"), "cargo test");
        assert_eq!(n("  npm   ci  "), "npm ci");
        assert_eq!(n("pytest -k x"), "pytest -k x");
    }

    #[test]
    fn comments_blank_lines_and_env_prefixes_are_dropped() {
        let script = "# build everything\n\nRUST_LOG=debug CI=1 cargo build --release # fast\n";
        assert_eq!(n(script), "cargo build --release");
        assert_eq!(n("FOO=\"a b\" make test"), "make test");
        assert_eq!(n("# only a comment\n"), "");
    }

    #[test]
    fn multi_line_scripts_are_one_key_with_one_line_each() {
        assert_eq!(n("npm ci\nnpm test\n"), "npm ci\nnpm test");
        assert_eq!(n("cargo test \\\n  --workspace"), "cargo test --workspace");
    }

    #[test]
    fn paths_are_abstracted() {
        assert_eq!(n("cat /home/runner/work/app/Cargo.toml"), "cat <path>");
        assert_eq!(n("./scripts/ci.sh --fast"), "<path> --fast");
        assert_eq!(n("cd ../other && make"), "cd <path> && make");
        assert_eq!(n("python tools/gen.py"), "python <path>");
        assert_eq!(n("ls ~/.cargo/bin"), "ls <path>");
    }

    #[test]
    fn temp_dirs_urls_and_strings_are_abstracted() {
        assert_eq!(n("rm -rf /tmp/tmp.XyZ123/out"), "rm -rf <tmp>");
        assert_eq!(n("cp a $RUNNER_TEMP/x"), "cp a <tmp>");
        assert_eq!(
            n("curl -sSf https://example.com/install.sh | sh"),
            "curl -sSf <url> | sh"
        );
        assert_eq!(n("echo \"hello world\""), "echo <str>");
        assert_eq!(n("git commit -m 'fix: thing'"), "git commit -m <str>");
    }

    #[test]
    fn hashes_versions_numbers_uuids_and_times_are_abstracted() {
        assert_eq!(n("git checkout 3f2a9c1d"), "git checkout <hash>");
        assert_eq!(
            n("git checkout 0123456789abcdef0123456789abcdef01234567"),
            "git checkout <hash>"
        );
        assert_eq!(n("npm install lodash@4.17.21"), "npm install lodash@<ver>");
        assert_eq!(
            n("rustup toolchain install v1.85.0-beta.2"),
            "rustup toolchain install <ver>"
        );
        assert_eq!(n("sleep 30"), "sleep <num>");
        assert_eq!(
            n("pytest -n 4 --timeout=600"),
            "pytest -n <num> --timeout=<num>"
        );
        assert_eq!(
            n("run --id 123e4567-e89b-12d3-a456-426614174000"),
            "run --id <uuid>"
        );
        assert_eq!(n("echo 2024-05-01T10:20:30Z"), "echo <time>");
    }

    #[test]
    fn short_hex_words_and_names_with_digits_stay() {
        assert_eq!(n("echo cafe"), "echo cafe");
        assert_eq!(n("nvm use node18"), "nvm use node18");
        assert_eq!(n("make a1"), "make a1");
    }

    #[test]
    fn same_command_with_different_volatile_parts_has_one_key() {
        assert_eq!(
            n("cargo test --target-dir /tmp/t1 -j 2"),
            n("cargo test --target-dir /tmp/zz9 -j 8")
        );
        assert_eq!(n("npm i react@18.2.0"), n("npm i react@18.3.1"));
    }
}
