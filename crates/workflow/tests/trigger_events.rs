//! Trigger decisions for workflows loaded from YAML and payloads shaped like
//! GitHub's documented webhook examples.

use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::trigger::{decide, Event, TriggerDecision};
use firerunner_workflow::ParsedWorkflow;
use serde_json::json;

fn workflow(on: &str) -> ParsedWorkflow {
    let source = format!(
        "on:\n{on}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n"
    );
    parse_workflow("t.yml", &source).unwrap_or_else(|d| panic!("{d}\n{source}"))
}

fn push(git_ref: &str, files: &[&str]) -> Event {
    Event::new(
        "push",
        json!({
            "ref": git_ref,
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0000000000000000000000000000000000000001",
            "created": false,
            "deleted": false,
            "commits": [{
                "id": "0000000000000000000000000000000000000001",
                "message": "change",
                "added": files.iter().take(1).collect::<Vec<_>>(),
                "removed": [],
                "modified": files.iter().skip(1).collect::<Vec<_>>()
            }],
            "head_commit": { "id": "0000000000000000000000000000000000000001" },
            "repository": { "full_name": "octo-org/octo-repo", "default_branch": "main" }
        }),
    )
}

fn pull_request(action: &str, base: &str) -> Event {
    Event::new(
        "pull_request",
        json!({
            "action": action,
            "number": 2,
            "pull_request": {
                "number": 2,
                "head": { "ref": "feature/x", "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821" },
                "base": { "ref": base, "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e" }
            },
            "repository": { "full_name": "octo-org/octo-repo" }
        }),
    )
}

fn runs(d: TriggerDecision) -> bool {
    match d {
        TriggerDecision::Run => true,
        TriggerDecision::Skip { .. } => false,
        TriggerDecision::NeedsChangedFiles => panic!("unexpected NeedsChangedFiles"),
    }
}

#[test]
fn events_not_listed_do_not_run() {
    let wf = workflow("  push:");
    let d = decide(&wf, &pull_request("opened", "main"));
    assert_eq!(
        d,
        TriggerDecision::Skip {
            reason: "the workflow does not run on 'pull_request'".into()
        }
    );
}

#[test]
fn branch_filters_with_ordered_negation() {
    let wf = workflow("  push:\n    branches: ['releases/**', '!releases/**-alpha']");
    assert!(runs(decide(&wf, &push("refs/heads/releases/10", &[]))));
    assert!(!runs(decide(
        &wf,
        &push("refs/heads/releases/10-alpha", &[])
    )));
    assert!(!runs(decide(&wf, &push("refs/heads/main", &[]))));
    match decide(&wf, &push("refs/heads/main", &[])) {
        TriggerDecision::Skip { reason } => assert_eq!(
            reason,
            "branch 'main' matches no pattern in on.push.branches"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn branches_ignore() {
    let wf = workflow("  push:\n    branches-ignore: ['mona/octocat', 'releases/**-alpha']");
    assert!(!runs(decide(&wf, &push("refs/heads/mona/octocat", &[]))));
    assert!(!runs(decide(
        &wf,
        &push("refs/heads/releases/beta/3-alpha", &[])
    )));
    assert!(runs(decide(&wf, &push("refs/heads/main", &[]))));
}

#[test]
fn tags_versus_branches() {
    let only_branches = workflow("  push:\n    branches: [main]");
    assert!(!runs(decide(
        &only_branches,
        &push("refs/tags/v1.0.0", &[])
    )));
    let only_tags = workflow("  push:\n    tags: ['v[0-9]+.*']");
    assert!(runs(decide(&only_tags, &push("refs/tags/v1.0.0", &[]))));
    assert!(!runs(decide(&only_tags, &push("refs/tags/beta", &[]))));
    assert!(!runs(decide(&only_tags, &push("refs/heads/main", &[]))));
    let both = workflow("  push:\n    branches: [main]\n    tags: ['v*']");
    assert!(runs(decide(&both, &push("refs/heads/main", &[]))));
    assert!(runs(decide(&both, &push("refs/tags/v2", &[]))));
    let none = workflow("  push:");
    assert!(runs(decide(&none, &push("refs/tags/anything", &[]))));
}

#[test]
fn path_filters_use_the_pushed_commits() {
    let wf = workflow("  push:\n    paths: ['**.js', '!docs/**']");
    assert!(runs(decide(&wf, &push("refs/heads/main", &["src/app.js"]))));
    assert!(!runs(decide(
        &wf,
        &push("refs/heads/main", &["docs/app.js"])
    )));
    assert!(!runs(decide(&wf, &push("refs/heads/main", &["README.md"]))));
    let ignore = workflow("  push:\n    paths-ignore: ['docs/**']");
    assert!(!runs(decide(
        &ignore,
        &push("refs/heads/main", &["docs/a.md", "docs/b.md"])
    )));
    assert!(runs(decide(
        &ignore,
        &push("refs/heads/main", &["docs/a.md", "src/b.rs"])
    )));
}

#[test]
fn paths_are_not_checked_for_tag_pushes() {
    let wf = workflow("  push:\n    tags: ['v*']\n    paths: ['src/**']");
    assert!(runs(decide(&wf, &push("refs/tags/v1", &["README.md"]))));
}

#[test]
fn branch_and_path_filters_must_both_match() {
    let wf = workflow("  push:\n    branches: [main]\n    paths: ['src/**']");
    assert!(runs(decide(&wf, &push("refs/heads/main", &["src/a.rs"]))));
    assert!(!runs(decide(&wf, &push("refs/heads/dev", &["src/a.rs"]))));
    assert!(!runs(decide(&wf, &push("refs/heads/main", &["README.md"]))));
}

#[test]
fn pull_requests_filter_on_base_branch_and_default_types() {
    let wf = workflow("  pull_request:\n    branches: [main, 'releases/**']");
    assert!(runs(decide(&wf, &pull_request("opened", "main"))));
    assert!(runs(decide(
        &wf,
        &pull_request("synchronize", "releases/1.0")
    )));
    assert!(!runs(decide(&wf, &pull_request("opened", "dev"))));
    assert!(
        !runs(decide(&wf, &pull_request("closed", "main"))),
        "closed is not a default type"
    );
    assert!(!runs(decide(&wf, &pull_request("labeled", "main"))));
    let typed = workflow("  pull_request:\n    types: [closed, labeled]");
    assert!(runs(decide(&typed, &pull_request("closed", "main"))));
    assert!(!runs(decide(&typed, &pull_request("opened", "main"))));
}

#[test]
fn pull_request_paths_need_the_file_list() {
    let wf = workflow("  pull_request:\n    paths: ['src/**']");
    assert_eq!(
        decide(&wf, &pull_request("opened", "main")),
        TriggerDecision::NeedsChangedFiles
    );
    let with_files = pull_request("opened", "main").with_changed_files(vec!["src/lib.rs".into()]);
    assert!(runs(decide(&wf, &with_files)));
    let other_files = pull_request("opened", "main").with_changed_files(vec!["docs/x.md".into()]);
    assert!(!runs(decide(&wf, &other_files)));
}

#[test]
fn only_the_first_300_files_count() {
    let wf = workflow("  push:\n    paths: ['late/**']");
    let mut files: Vec<String> = (0..300).map(|i| format!("early/{i}.txt")).collect();
    files.push("late/x.txt".into());
    let event = push("refs/heads/main", &[]).with_changed_files(files);
    assert!(!runs(decide(&wf, &event)));
}

#[test]
fn activity_types_of_other_events() {
    let wf =
        workflow("  issues:\n    types: [opened, labeled]\n  release:\n    types: [published]");
    assert!(runs(decide(
        &wf,
        &Event::new("issues", json!({"action": "opened"}))
    )));
    assert!(!runs(decide(
        &wf,
        &Event::new("issues", json!({"action": "closed"}))
    )));
    assert!(runs(decide(
        &wf,
        &Event::new("release", json!({"action": "published"}))
    )));
    let any = workflow("  issues:");
    assert!(runs(decide(
        &any,
        &Event::new("issues", json!({"action": "deleted"}))
    )));
}

#[test]
fn workflow_run_names_and_branches() {
    let wf = workflow(
        "  workflow_run:\n    workflows: [Build]\n    types: [completed]\n    branches: [main]",
    );
    let ev = |name: &str, action: &str, branch: &str| {
        Event::new(
            "workflow_run",
            json!({"action": action, "workflow_run": {"name": name, "head_branch": branch}}),
        )
    };
    assert!(runs(decide(&wf, &ev("Build", "completed", "main"))));
    assert!(!runs(decide(&wf, &ev("Test", "completed", "main"))));
    assert!(!runs(decide(&wf, &ev("Build", "requested", "main"))));
    assert!(!runs(decide(&wf, &ev("Build", "completed", "dev"))));
}

#[test]
fn bad_patterns_are_reported_by_the_loader() {
    let source = "on:\n  push:\n    branches: ['[main']\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";
    let errors = parse_workflow("t.yml", source).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "t.yml:3:16: on.push.branches: invalid pattern '[main': '[' is never closed (at character 1)"
    );
}

#[test]
fn deleted_branches_and_empty_pushes_change_no_paths() {
    let wf = workflow("  push:\n    paths-ignore: ['docs/**']");
    let mut deletion = push("refs/heads/old", &[]);
    deletion.payload["deleted"] = json!(true);
    deletion.payload["commits"] = json!([]);
    assert!(!runs(decide(&wf, &deletion)));
    let empty = push("refs/heads/main", &[]).with_changed_files(Vec::new());
    assert_eq!(
        decide(&wf, &empty),
        TriggerDecision::Skip {
            reason: "no file changed, so on.push path filters match nothing".into()
        }
    );
    let no_filters = workflow("  push:");
    assert!(runs(decide(&no_filters, &deletion)));
}

#[test]
fn workflow_run_names_are_patterns() {
    let wf = workflow("  workflow_run:\n    workflows: ['Build*', '!Build docs']");
    let ev = |name: &str| {
        Event::new(
            "workflow_run",
            json!({"action": "completed", "workflow_run": {"name": name, "head_branch": "main"}}),
        )
    };
    assert!(runs(decide(&wf, &ev("Build linux"))));
    assert!(!runs(decide(&wf, &ev("Build docs"))));
    assert!(!runs(decide(&wf, &ev("Test"))));
}

#[test]
fn a_schedule_event_runs_only_the_workflows_with_its_cron() {
    let wf = workflow("  schedule:\n    - cron: '0 3 * * *'");
    assert!(runs(decide(
        &wf,
        &Event::new("schedule", json!({"schedule": "0 3 * * *"}))
    )));
    assert!(!runs(decide(
        &wf,
        &Event::new("schedule", json!({"schedule": "*/5 * * * *"}))
    )));
}
