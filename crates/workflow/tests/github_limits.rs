//! GitHub's size limits: expressions, nesting and file length.

use firerunner_workflow::load::{parse_workflow, MAX_FILE_CHARS};

fn workflow_running(script: &str) -> String {
    format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: \"{script}\"\n")
}

fn errors(source: &str) -> Vec<String> {
    match parse_workflow("w.yml", source) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_expression_longer_than_21000_characters_is_refused() {
    let long = |n: usize| format!("${{{{ '{}' }}}}", "x".repeat(n));
    // The expression between ${{ and }} is the quoted text plus two spaces.
    assert!(errors(&workflow_running(&long(20_996))).is_empty());
    let got = errors(&workflow_running(&long(20_997)));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("Exceeded max expression length 21000"),
        "{got:?}"
    );
}

#[test]
fn a_file_over_a_mebibyte_of_characters_is_refused() {
    let base = workflow_running("echo");
    let padded = |total: usize| format!("{base}{}", "#".repeat(total - base.len()));
    assert!(errors(&padded(MAX_FILE_CHARS)).is_empty());
    let got = errors(&padded(MAX_FILE_CHARS + 1));
    assert_eq!(
        got,
        ["w.yml:1:1: the file is larger than GitHub's limit of 1048576 characters"]
    );
}

#[test]
fn mappings_nest_at_most_fifty_deep() {
    // The root, jobs, a job, steps, a step and `with` make six levels.
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let with = |n: usize| {
        format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: o/r@v1\n        with:\n          k: {}\n", nested(n))
    };
    let got = errors(&with(44));
    assert!(got.iter().all(|e| !e.contains("nesting")), "{got:?}");
    let got = errors(&with(45));
    assert!(
        got.iter().any(|e| e.contains("nesting deeper than 50")),
        "{got:?}"
    );
}
