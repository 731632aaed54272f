//! Plain-English requests → workflows, without an LLM. Every output must pass firerunner's own
//! workflow validation, and the parts the request asked for must be in it.

use firerunner_learning::{workflow_from_text, ComposeError};
use firerunner_workflow::load::parse_workflow;

fn compose(request: &str) -> String {
    let yaml = workflow_from_text(request).unwrap_or_else(|error| panic!("{request}: {error}"));
    if let Err(diagnostics) = parse_workflow("composed.yml", &yaml) {
        panic!("{request}: invalid workflow:\n{diagnostics}\n{yaml}");
    }
    yaml
}

/// The `run:` values in order, with the `if:` of their step.
fn runs(yaml: &str) -> Vec<(String, Option<String>)> {
    let mut runs = Vec::new();
    let mut condition = None;
    for line in yaml.lines() {
        let item = line.trim_start().trim_start_matches("- ");
        if line.trim_start().starts_with("- ") {
            condition = None;
        }
        if let Some(value) = item.strip_prefix("if: ") {
            condition = Some(value.to_string());
        }
        if let Some(value) = item.strip_prefix("run: ") {
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"))
                .unwrap_or_else(|| value.to_string());
            runs.push((value, condition.take()));
        }
    }
    runs
}

fn plain(commands: &[&str]) -> Vec<(String, Option<String>)> {
    commands.iter().map(|c| (c.to_string(), None)).collect()
}

#[test]
fn the_issue_example_runs_tests_then_builds_the_release() {
    let yaml = compose("run cargo test and if it passes build the release");
    assert_eq!(runs(&yaml), plain(&["cargo test", "cargo build --release"]));
    assert!(yaml.contains("  push:\n  pull_request:\n"), "{yaml}");
    assert!(yaml.contains("- uses: actions/checkout@v4"), "{yaml}");
    assert!(yaml.contains("name: build the release"), "{yaml}");
}

#[test]
fn sequences_with_then() {
    let yaml = compose("run `npm ci` then `npm test`, then npm run build");
    assert_eq!(runs(&yaml), plain(&["npm ci", "npm test", "npm run build"]));
}

#[test]
fn push_to_main_only() {
    let yaml = compose("on push to main run make test");
    assert!(yaml.contains("  push:\n    branches: ['main']\n"), "{yaml}");
    assert!(!yaml.contains("pull_request"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["make test"]));
}

#[test]
fn pull_requests_to_two_branches_and_pushes() {
    let yaml = compose(
        "run the tests on pull requests to main and develop and on push to main for a go project",
    );
    assert!(
        yaml.contains("  pull_request:\n    branches: ['main', 'develop']\n"),
        "{yaml}"
    );
    assert!(yaml.contains("  push:\n    branches: ['main']\n"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["go test ./..."]));
}

#[test]
fn every_night_is_a_schedule() {
    let yaml = compose("every night run `./scripts/soak.sh --long`");
    assert!(
        yaml.contains("  schedule:\n    - cron: '0 3 * * *'\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("push"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["./scripts/soak.sh --long"]));
}

#[test]
fn a_time_and_a_weekday_and_manual_runs() {
    let yaml = compose("every monday at 6:30pm and manually: run pytest");
    assert!(yaml.contains("- cron: '30 18 * * 1'"), "{yaml}");
    assert!(yaml.contains("  workflow_dispatch:\n"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["pytest"]));
}

#[test]
fn an_explicit_cron() {
    let yaml = compose("on cron '*/15 * * * *' run `curl -fsS https://example.com/health`");
    assert!(yaml.contains("- cron: '*/15 * * * *'"), "{yaml}");
    assert_eq!(
        runs(&yaml),
        plain(&["curl -fsS https://example.com/health"])
    );
}

#[test]
fn a_node_matrix_sets_up_each_version() {
    let yaml = compose("install dependencies and run the tests on node 18 and 20");
    assert!(yaml.contains("        node: ['18', '20']\n"), "{yaml}");
    assert!(yaml.contains("uses: actions/setup-node@v4"), "{yaml}");
    assert!(yaml.contains("node-version: ${{ matrix.node }}"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["npm ci", "npm test"]));
}

#[test]
fn a_python_matrix_keeps_versions_as_strings() {
    let yaml = compose("with python 3.10, 3.11 and 3.12 run pytest -q then lint");
    assert!(yaml.contains("python: ['3.10', '3.11', '3.12']"), "{yaml}");
    assert!(yaml.contains("uses: actions/setup-python@v5"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["pytest -q", "ruff check ."]));
}

#[test]
fn an_os_and_rust_toolchain_matrix() {
    let yaml = compose(
        "check formatting, clippy and the tests on ubuntu and macos with rust stable and nightly",
    );
    assert!(yaml.contains("runs-on: ${{ matrix.os }}"), "{yaml}");
    assert!(
        yaml.contains("os: ['ubuntu-latest', 'macos-latest']"),
        "{yaml}"
    );
    assert!(yaml.contains("rust: ['stable', 'nightly']"), "{yaml}");
    let commands: Vec<String> = runs(&yaml).into_iter().map(|(run, _)| run).collect();
    assert_eq!(
        commands,
        [
            "rustup toolchain install ${{ matrix.rust }} --profile minimal && rustup default ${{ matrix.rust }}",
            "cargo fmt --all --check",
            "cargo clippy --all-targets -- -D warnings",
            "cargo test",
        ]
    );
}

#[test]
fn failure_and_always_conditions() {
    let yaml = compose(
        "run `make test`; if it fails run `./collect-logs.sh`, then always run `make clean`",
    );
    assert_eq!(
        runs(&yaml),
        vec![
            ("make test".to_string(), None),
            (
                "./collect-logs.sh".to_string(),
                Some("failure()".to_string())
            ),
            ("make clean".to_string(), Some("always()".to_string())),
        ]
    );
}

#[test]
fn tags_trigger_a_release_build() {
    let yaml = compose(
        "On version tags: `cargo build --release`. Then run `gh release upload $TAG target/release/app`.",
    );
    assert!(yaml.contains("  push:\n    tags: ['*']\n"), "{yaml}");
    assert_eq!(
        runs(&yaml),
        plain(&[
            "cargo build --release",
            "gh release upload $TAG target/release/app"
        ])
    );
}

#[test]
fn commands_with_dots_and_colons_survive() {
    let yaml = compose("on prs run go vet ./... then `echo done: ok`");
    assert!(yaml.contains("  pull_request:\n"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["go vet ./...", "echo done: ok"]));
    assert!(yaml.contains("run: 'echo done: ok'"), "{yaml}");
}

#[test]
fn unknown_work_without_an_ecosystem_is_an_error() {
    assert_eq!(
        workflow_from_text("build the release every night"),
        Err(ComposeError::UnknownStep {
            phrase: "build the release".into()
        })
    );
    assert_eq!(
        workflow_from_text("deploy to the moon on push"),
        Err(ComposeError::UnknownStep {
            phrase: "deploy to the moon".into()
        })
    );
    assert_eq!(
        workflow_from_text("on push to main"),
        Err(ComposeError::NoSteps)
    );
}

#[test]
fn a_matrix_stops_at_the_next_clause() {
    let yaml = compose("lint and test on node 20, every night");
    assert!(yaml.contains("node: ['20']"), "{yaml}");
    assert!(yaml.contains("- cron: '0 3 * * *'"), "{yaml}");
    assert_eq!(runs(&yaml), plain(&["npm run lint", "npm test"]));
}
