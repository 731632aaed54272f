//! Planning workflows loaded from YAML: order, matrices and their errors.

use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, IfDecision, MatrixState, PlanContext, PlanError};
use firerunner_workflow::{Object, Value};

fn plan(
    yaml: &str,
    ctx: &PlanContext,
) -> Result<firerunner_workflow::plan::WorkflowPlan, PlanError> {
    let wf = parse_workflow("p.yml", yaml).unwrap_or_else(|d| panic!("{d}"));
    plan_workflow(&wf, ctx)
}

const ORDER: &str = r#"
on: push
jobs:
  deploy:
    needs: [test, lint]
    runs-on: x
    steps: [{run: "true"}]
  test:
    needs: build
    runs-on: x
    steps: [{run: "true"}]
  lint:
    runs-on: x
    steps: [{run: "true"}]
  build:
    runs-on: x
    steps: [{run: "true"}]
"#;

#[test]
fn jobs_come_after_their_needs_and_otherwise_in_declaration_order() {
    let p = plan(ORDER, &PlanContext::default()).unwrap();
    let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["lint", "build", "test", "deploy"]);
}

#[test]
fn matrix_jobs_get_display_names() {
    let yaml = r#"
on: push
jobs:
  test:
    runs-on: ${{ matrix.os }}
    strategy:
      max-parallel: 2
      matrix:
        os: [ubuntu, windows]
        node: [18, 20]
        exclude: [{os: windows, node: 18}]
        include: [{os: ubuntu, experimental: true}]
    steps: [{run: "true"}]
  named:
    name: Build on ${{ matrix.os }}
    runs-on: x
    strategy:
      matrix: {os: [a, b]}
    steps: [{run: "true"}]
"#;
    let p = plan(yaml, &PlanContext::default()).unwrap();
    assert_eq!(
        p.jobs[0].instance_names(),
        [
            "test (ubuntu, 18, true)",
            "test (ubuntu, 20, true)",
            "test (windows, 20)"
        ]
    );
    assert_eq!(p.jobs[0].max_parallel, Some(2));
    assert_eq!(p.jobs[0].fail_fast, Some(true));
    assert_eq!(
        p.jobs[1].instance_names(),
        ["Build on a", "Build on b"],
        "names are evaluated with each instance's matrix"
    );
}

#[test]
fn matrices_from_expressions() {
    let yaml = r#"
on: workflow_dispatch
jobs:
  from-inputs:
    runs-on: x
    strategy:
      matrix:
        version: ${{ fromJSON(inputs.versions) }}
    steps: [{run: "true"}]
  from-needs:
    needs: from-inputs
    runs-on: x
    strategy:
      matrix: ${{ fromJSON(needs.from-inputs.outputs.matrix) }}
    steps: [{run: "true"}]
"#;
    let mut inputs = Object::new();
    inputs.insert("versions", Value::from("[\"1.0\", \"2.0\"]"));
    let mut contexts = Object::new();
    contexts.insert("inputs", Value::Object(inputs));
    let p = plan(yaml, &PlanContext { contexts }).unwrap();
    assert_eq!(
        p.jobs[0].instance_names(),
        ["from-inputs (1.0)", "from-inputs (2.0)"]
    );
    assert_eq!(p.jobs[1].matrix, MatrixState::Deferred);
}

#[test]
fn oversized_matrices_fail_with_the_position() {
    let values: Vec<String> = (0..17).map(|i| i.to_string()).collect();
    let list = values.join(", ");
    let yaml = format!("on: push\njobs:\n  big:\n    runs-on: x\n    strategy:\n      matrix:\n        a: [{list}]\n        b: [{list}]\n    steps: [{{run: \"true\"}}]\n");
    let err = plan(&yaml, &PlanContext::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yml:7:9: jobs.big.strategy.matrix: the matrix expands to 289 jobs; GitHub allows at most 256"
    );
}

#[test]
fn reusable_workflow_calls_are_marked() {
    let yaml = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/r.yml\n";
    let p = plan(yaml, &PlanContext::default()).unwrap();
    assert_eq!(
        p.jobs[0].calls.as_deref(),
        Some("./.github/workflows/r.yml")
    );
}

#[test]
fn the_event_decides_if_conditions_and_names_it_can() {
    let yaml = "on: [push, pull_request]\njobs:\n  build:\n    name: build ${{ matrix.os }} on ${{ github.event_name }}\n    strategy:\n      matrix:\n        os: [linux, mac]\n    runs-on: x\n    steps: [{run: 'true'}]\n  deploy:\n    if: github.event_name == 'push'\n    runs-on: x\n    steps: [{run: 'true'}]\n  notify:\n    needs: build\n    if: failure()\n    name: ${{ needs.build.result }}\n    runs-on: x\n    steps: [{run: 'true'}]\n  plain:\n    runs-on: x\n    steps: [{run: 'true'}]\n";
    let Value::Object(contexts) =
        Value::from(serde_json::json!({"github": {"event_name": "pull_request"}}))
    else {
        panic!()
    };
    let p = plan(yaml, &PlanContext { contexts }).unwrap();
    let job = |id: &str| p.jobs.iter().find(|j| j.id == id).unwrap();
    assert_eq!(
        job("build").instance_names(),
        ["build linux on pull_request", "build mac on pull_request"]
    );
    assert_eq!(job("deploy").condition, IfDecision::False);
    assert_eq!(job("notify").condition, IfDecision::AtRunTime);
    assert_eq!(
        job("notify").instance_names(),
        ["${{ needs.build.result }}"]
    );
    assert_eq!(job("plain").condition, IfDecision::NoCondition);
}
