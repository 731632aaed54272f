//! `firerunner actions pull` end to end: a mirror of action repositories
//! served over `file://` fills an action cache from a workflow folder (nested
//! composite actions, `./` actions of the repository, remote reusable
//! workflows and their jobs' actions) or from a list.

use std::path::Path;
use std::process::{Command, Output};

use firerunner_engine::testing::ActionMirror;

fn composite(steps: &str) -> String {
    format!("runs:\n  using: composite\n  steps:\n{steps}")
}

fn uses(action: &str) -> String {
    format!("    - uses: {action}\n")
}

const ECHO: &str = "    - shell: sh\n      run: echo hi\n";

fn firerunner(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The mirror the tests pull from, with the commit of each repository.
fn mirror() -> (ActionMirror, Vec<(&'static str, String)>) {
    let mirror = ActionMirror::new();
    let mut shas = Vec::new();
    for (repo, action) in [
        ("octo/inner", composite(ECHO)),
        ("octo/hello", composite(&uses("octo/inner@v1"))),
        ("octo/local-dep", composite(ECHO)),
        ("octo/deep", composite(ECHO)),
        ("octo/listed", composite(&uses("octo/inner@v1"))),
    ] {
        shas.push((repo, mirror.publish(repo, "v1", &[("action.yml", &action)])));
    }
    let called = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: octo/deep@v1\n";
    let sha = mirror.publish("octo/reuse", "v1", &[(".github/workflows/w.yml", called)]);
    shas.push(("octo/reuse", sha));
    (mirror, shas)
}

/// A repository whose workflow uses a remote action, a `./` action and a
/// remote reusable workflow.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let workflow = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: octo/hello@v1\n      - uses: ./.github/actions/local\n  call:\n    uses: octo/reuse/.github/workflows/w.yml@v1\n";
    std::fs::create_dir_all(repo.path().join(".github/workflows")).unwrap();
    std::fs::write(repo.path().join(".github/workflows/ci.yml"), workflow).unwrap();
    let local = repo.path().join(".github/actions/local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        local.join("action.yml"),
        composite(&uses("octo/local-dep@v1")),
    )
    .unwrap();
    repo
}

#[test]
fn pull_fills_the_cache_with_every_action_a_workflow_folder_uses() {
    let (mirror, shas) = mirror();
    let repo = repository();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let args = [
        "actions",
        "pull",
        "--actions-url",
        &mirror.url(),
        "--actions-cache",
        &cache_arg,
    ];
    let pulled = firerunner(repo.path(), &args);
    let all = text(&pulled);
    assert_eq!(pulled.status.code(), Some(0), "{all}");
    for (repo_name, sha) in &shas {
        if *repo_name == "octo/listed" {
            assert!(
                !cache.path().join(repo_name).exists(),
                "not used by the workflow"
            );
            continue;
        }
        let line = format!("Download action repository '{repo_name}@v1' (SHA:{sha})");
        assert!(all.contains(&line), "{all}");
        assert!(
            cache.path().join(repo_name).join(sha).is_dir(),
            "{repo_name}"
        );
        let named = std::fs::read_to_string(cache.path().join(repo_name).join("refs/v1")).unwrap();
        assert_eq!(named.trim(), sha);
    }
    assert!(all.contains("Action 'actions/checkout@v4' is served by firerunner itself"));

    let again = firerunner(repo.path(), &args);
    assert_eq!(again.status.code(), Some(0));
    let again = text(&again);
    assert!(
        again.contains("Use action repository 'octo/hello@v1'"),
        "{again}"
    );
    assert!(!again.contains("Download action repository"), "{again}");
}

#[test]
fn pull_takes_a_list_and_names_what_cannot_be_had() {
    let (mirror, shas) = mirror();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let list = dir.path().join("actions.txt");
    std::fs::write(&list, "# what the offline hosts need\nocto/listed@v1\nuses: octo/reuse/.github/workflows/w.yml@v1  # a workflow\n\n").unwrap();
    let list_arg = list.display().to_string();
    let args = [
        "actions",
        "pull",
        "--list",
        &list_arg,
        "--actions-url",
        &mirror.url(),
        "--actions-cache",
        &cache_arg,
    ];
    let pulled = firerunner(dir.path(), &args);
    let all = text(&pulled);
    assert_eq!(pulled.status.code(), Some(0), "{all}");
    for name in ["octo/listed", "octo/inner", "octo/reuse", "octo/deep"] {
        let sha = &shas.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(cache.path().join(name).join(sha).is_dir(), "{name}: {all}");
    }

    std::fs::write(&list, "octo/listed@v1\nocto/absent@v1\n").unwrap();
    let missing = firerunner(dir.path(), &args);
    let all = text(&missing);
    assert_eq!(missing.status.code(), Some(1), "{all}");
    assert!(
        all.contains("error: octo/absent@v1: cannot fetch file://"),
        "{all}"
    );
    assert!(all.contains("--actions-url"), "{all}");

    std::fs::write(&list, "octo/listed@v1\n\nnot a reference\n").unwrap();
    let bad = firerunner(dir.path(), &args);
    let all = text(&bad);
    assert_eq!(bad.status.code(), Some(2), "{all}");
    assert!(
        all.contains("line 3: 'not a reference' is not OWNER/REPO[/PATH]@REF"),
        "{all}"
    );
}
