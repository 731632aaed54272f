//! A reusable-workflow call checked against the workflow it calls.

use firerunner_workflow::load::{check_call, parse_workflow};

const CALLEE: &str = r#"
on:
  workflow_call:
    inputs:
      version: {type: string, required: true}
      dry-run: {type: boolean, default: false}
      retries: {type: number, required: true, default: 3}
    secrets:
      token: {required: true}
jobs:
  build:
    runs-on: x
    steps: [{run: "true"}]
"#;

fn messages(caller: &str, callee: &str) -> Vec<String> {
    let caller = parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}"));
    let callee = parse_workflow("callee.yml", callee).unwrap_or_else(|d| panic!("{d}"));
    caller
        .jobs
        .values()
        .flat_map(|job| check_call("caller.yml", job, &callee))
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn a_correct_call_passes() {
    let caller = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/callee.yml\n    with:\n      version: '1.0'\n      dry-run: ${{ github.event_name == 'push' }}\n    secrets:\n      token: ${{ secrets.T }}\n";
    assert!(messages(caller, CALLEE).is_empty());
    let inherit = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/callee.yml\n    with: {version: v}\n    secrets: inherit\n";
    assert!(messages(inherit, CALLEE).is_empty());
}

#[test]
fn every_mistake_is_reported() {
    let caller = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/callee.yml\n    with:\n      dry-run: yes-please\n      retries: many\n      verison: '1'\n";
    assert_eq!(
        messages(caller, CALLEE),
        [
            "caller.yml:6:16: jobs.call.with.dry-run: input 'dry-run' expects a boolean",
            "caller.yml:7:16: jobs.call.with.retries: input 'retries' expects a number",
            "caller.yml:8:16: jobs.call.with.verison: ./.github/workflows/callee.yml has no input 'verison' (did you mean 'version'?)",
            "caller.yml:3:3: jobs.call: required input 'version' of ./.github/workflows/callee.yml is not given in 'with'",
            "caller.yml:3:3: jobs.call: required secret 'token' of ./.github/workflows/callee.yml is not given (add 'secrets:' or 'secrets: inherit')",
        ]
    );
}

#[test]
fn the_callee_must_declare_workflow_call() {
    let caller = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/other.yml\n";
    let callee = "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: \"true\"}]\n";
    assert_eq!(
        messages(caller, callee),
        ["caller.yml:4:11: jobs.call.uses: ./.github/workflows/other.yml does not declare 'on: workflow_call', so it cannot be called"]
    );
}
