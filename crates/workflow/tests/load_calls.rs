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

mod resolved {
    //! Calls followed through workflow texts supplied in memory.

    use std::collections::HashMap;

    use firerunner_workflow::load::{check_calls, parse_workflow};

    const REMOTE: &str = "octo/shared/.github/workflows/deploy.yml@v2";

    fn check(caller: &str, files: &[(&str, &str)]) -> Vec<String> {
        let caller = parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}"));
        let source: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check_calls(&caller, &source)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn callee(permissions: &str, job_permissions: &str) -> String {
        format!(
            "on:\n  workflow_call:\n    inputs:\n      env: {{type: string, required: true}}\n    outputs:\n      url: {{value: x}}\n{permissions}jobs:\n  deploy:\n    runs-on: x\n{job_permissions}    steps: [{{run: 'true'}}]\n"
        )
    }

    #[test]
    fn a_remote_workflow_is_checked_like_a_local_one() {
        let caller =
            format!("on: push\njobs:\n  go:\n    uses: {REMOTE}\n    with: {{envv: prod}}\n");
        let got = check(&caller, &[(REMOTE, &callee("", ""))]);
        assert_eq!(
            got,
            [
                format!("caller.yml:5:18: jobs.go.with.envv: {REMOTE} has no input 'envv' (did you mean 'env'?)"),
                format!("caller.yml:3:3: jobs.go: required input 'env' of {REMOTE} is not given in 'with'"),
            ]
        );
        let unknown = format!("on: push\njobs:\n  go:\n    uses: {REMOTE}\n");
        assert!(
            check(&unknown, &[]).is_empty(),
            "an unknown callee is not checked"
        );
    }

    #[test]
    fn a_called_workflow_may_not_ask_for_more_permissions_than_granted() {
        let caller = |permissions: &str| {
            format!("on: push\n{permissions}jobs:\n  go:\n    uses: {REMOTE}\n    with: {{env: prod}}\n")
        };
        let wants_write = callee("permissions:\n  contents: write\n", "");
        let got = check(
            &caller("permissions:\n  contents: read\n"),
            &[(REMOTE, &wants_write)],
        );
        assert_eq!(got, [format!("caller.yml:5:3: jobs.go: error calling workflow '{REMOTE}': the workflow is requesting 'contents: write', but is only allowed 'contents: read'")]);
        let job_wants = callee("", "    permissions:\n      id-token: write\n");
        let got = check(&caller("permissions: read-all\n"), &[(REMOTE, &job_wants)]);
        assert_eq!(got, [format!("caller.yml:4:3: jobs.go: error calling workflow '{REMOTE}': the nested job 'deploy' is requesting 'id-token: write', but is only allowed 'id-token: read'")]);
        assert!(check(
            &caller("permissions: write-all\n"),
            &[(REMOTE, &wants_write)]
        )
        .is_empty());
        assert!(
            check(&caller(""), &[(REMOTE, &wants_write)]).is_empty(),
            "without permissions in the caller the repository's default applies, unknown here"
        );
    }

    #[test]
    fn nested_calls_are_followed_in_the_called_repository() {
        let middle = "on:\n  workflow_call:\npermissions:\n  contents: read\njobs:\n  inner:\n    uses: ./.github/workflows/inner.yml\n    with: {nope: 1}\n";
        let inner = "on:\n  workflow_call:\npermissions:\n  issues: write\njobs:\n  j:\n    runs-on: x\n    steps: [{run: 'true'}]\n";
        let caller = format!(
            "on: push\npermissions:\n  contents: write\njobs:\n  go:\n    uses: {REMOTE}\n"
        );
        let got = check(
            &caller,
            &[
                (REMOTE, middle),
                ("octo/shared/.github/workflows/inner.yml@v2", inner),
            ],
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].contains("in a nested call") && got[0].contains("has no input 'nope'"),
            "{got:?}"
        );
        assert!(
            got[1].contains("requesting 'issues: write', but is only allowed 'issues: none'"),
            "{got:?}"
        );
    }

    #[test]
    fn a_workflow_calling_itself_stops_at_githubs_depth() {
        let own = "./.github/workflows/loop.yml";
        let looping = format!("on:\n  workflow_call:\njobs:\n  again:\n    uses: {own}\n");
        let caller = format!("on: push\njobs:\n  go:\n    uses: {own}\n");
        let got = check(&caller, &[(own, &looping)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("deeper than GitHub's 10 levels"), "{got:?}");
    }
}

mod outputs {
    use std::collections::HashMap;

    use firerunner_workflow::load::{check_calls, parse_workflow};

    #[test]
    fn the_caller_may_read_only_outputs_the_callee_declares() {
        let callee = "on:\n  workflow_call:\n    outputs:\n      url: {value: '${{ jobs.d.outputs.url }}'}\njobs:\n  d:\n    runs-on: x\n    steps: [{run: 'true'}]\n";
        let caller = "on: push\njobs:\n  deploy:\n    uses: ./.github/workflows/d.yml\n  report:\n    needs: deploy\n    if: needs.deploy.outputs.URL != ''\n    runs-on: x\n    steps:\n      - run: echo ${{ needs.deploy.outputs.adress }} needs.deploy.outputs.plain-text\n";
        let caller = parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}"));
        let files = HashMap::from([("./.github/workflows/d.yml".to_string(), callee.to_string())]);
        let got: Vec<String> = check_calls(&caller, &files)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["caller.yml:10:14: needs.deploy.outputs.adress: ./.github/workflows/d.yml declares no output 'adress'"]
        );
    }
}
