//! Actions as GitHub's runner prepares and runs them, checked against the
//! real guest agent on the host (steps run in a temporary runner folder):
//! "Set up job" resolving every action first (a missing one fails the job
//! before any step, naming each and how to provide it), the action cache
//! serving a host without the actions URL, nesting limits and cycles,
//! `pre:`/`pre-if:` with `STATE_`, the `GITHUB_ACTION*` variables, `$/` and
//! `./` actions, and the smaller semantics (`::debug::`, unsecure commands,
//! a composite seeing its caller's env, services without an image).

use firerunner_engine::testing::{ActionMirror, HostJob};
use firerunner_workflow::Conclusion;

fn composite(steps: &str) -> String {
    format!("name: composite\nruns:\n  using: composite\n  steps:\n{steps}")
}

fn echo_step(text: &str) -> String {
    format!("    - shell: sh\n      run: echo \"{text}\"\n")
}

fn uses_step(uses: &str) -> String {
    format!("    - uses: {uses}\n")
}

fn job(steps: &str) -> String {
    format!("on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n{steps}")
}

#[tokio::test]
async fn a_missing_action_fails_the_job_before_any_step_naming_each_and_how_to_provide_it() {
    let mirror = ActionMirror::new();
    let hello = mirror.publish(
        "octo/hello",
        "v1",
        &[("action.yml", &composite(&echo_step("hello")))],
    );
    let outer = composite(&format!(
        "{}{}",
        uses_step("octo/hello@v1"),
        uses_step("octo/gone@v2")
    ));
    mirror.publish("octo/outer", "v1", &[("action.yml", &outer)]);
    let workflow = job("      - run: echo \"this-must-not-run\"\n      - uses: octo/absent@v1\n      - uses: octo/outer@v1\n");
    let done = HostJob::new(&mirror.url()).run(&workflow, "j").await;
    let log = done.text();
    assert_eq!(done.report.result, Conclusion::Failure, "{log}");
    assert!(done.report.steps.is_empty(), "no step ran: {log}");
    assert!(!log.contains("this-must-not-run"), "{log}");
    for needle in [
        "Prepare all required actions",
        &format!("Download action repository 'octo/hello@v1' (SHA:{hello})"),
        "error: 2 actions cannot be had, so none of its steps ran:",
        "error:   octo/absent@v1: cannot fetch file://",
        "error:   octo/gone@v2 (used by octo/outer@v1): cannot fetch file://",
        "--actions-url",
        "firerunner actions pull -W .github/workflows",
    ] {
        assert!(log.contains(needle), "the log lacks {needle:?}:\n{log}");
    }
}

#[tokio::test]
async fn the_action_cache_serves_a_host_that_cannot_reach_the_actions_url() {
    let mirror = ActionMirror::new();
    let sha = mirror.publish(
        "octo/hello",
        "v1",
        &[(
            "action.yml",
            &composite(&echo_step("hello from the action")),
        )],
    );
    let workflow = job("      - uses: octo/hello@v1\n      - uses: octo/hello@v1\n");
    let mut host = HostJob::new(&mirror.url());
    let first = host.run(&workflow, "j").await;
    assert_eq!(first.report.result, Conclusion::Success, "{}", first.text());
    let downloads = first
        .log
        .iter()
        .filter(|l| l.starts_with("Download action repository"))
        .count();
    assert_eq!(
        downloads,
        1,
        "one download per repository: {}",
        first.text()
    );

    host.environment.actions.base_url = "file:///nonexistent/mirror".into();
    let unreachable = host.run(&workflow, "j").await;
    assert_eq!(
        unreachable.report.result,
        Conclusion::Success,
        "{}",
        unreachable.text()
    );
    assert!(unreachable
        .text()
        .contains("warning: 'octo/hello@v1' could not be resolved at file:///nonexistent/mirror"));
    assert!(
        unreachable.text().contains(&format!("using SHA:{sha}")),
        "{}",
        unreachable.text()
    );

    host.environment.actions.offline = true;
    let offline = host.run(&workflow, "j").await;
    assert_eq!(
        offline.report.result,
        Conclusion::Success,
        "{}",
        offline.text()
    );
    let line = format!("Use action repository 'octo/hello@v1' (SHA:{sha}) from the action cache");
    assert!(offline.text().contains(&line), "{}", offline.text());
    assert!(offline.text().contains("hello from the action"));
}

#[tokio::test]
async fn composite_actions_nest_ten_levels_and_a_cycle_is_named() {
    let mirror = ActionMirror::new();
    for level in 0..=10 {
        let inner = if level == 10 {
            echo_step("deepest")
        } else {
            uses_step(&format!("octo/d{}@v1", level + 1))
        };
        mirror.publish(
            &format!("octo/d{level}"),
            "v1",
            &[("action.yml", &composite(&inner))],
        );
    }
    mirror.publish(
        "octo/ping",
        "v1",
        &[("action.yml", &composite(&uses_step("octo/pong@v1")))],
    );
    mirror.publish(
        "octo/pong",
        "v1",
        &[("action.yml", &composite(&uses_step("octo/ping@v1")))],
    );
    let mut host = HostJob::new(&mirror.url());

    let ten = host.run(&job("      - uses: octo/d1@v1\n"), "j").await;
    assert_eq!(ten.report.result, Conclusion::Success, "{}", ten.text());
    assert!(ten.text().contains("deepest"));

    let eleven = host.run(&job("      - uses: octo/d0@v1\n"), "j").await;
    assert!(eleven.report.steps.is_empty(), "{}", eleven.text());
    assert!(
        eleven
            .text()
            .contains("error:   octo/d10@v1 (used by octo/d9@v1 < octo/d8@v1"),
        "{}",
        eleven.text()
    );
    assert!(eleven.text().contains(
        "< octo/d0@v1): composite actions nest it deeper than GitHub's limit of 10 levels"
    ));

    let cycle = host.run(&job("      - uses: octo/ping@v1\n"), "j").await;
    assert!(cycle.report.steps.is_empty(), "{}", cycle.text());
    assert!(
        cycle.text().contains("octo/ping@v1 (used by octo/pong@v1 < octo/ping@v1): it uses itself: octo/ping@v1 -> octo/pong@v1 -> octo/ping@v1"),
        "{}",
        cycle.text()
    );
}

const NODE_ACTION: &str = "name: Setup\ninputs:\n  name:\n    required: true\nruns:\n  using: node20\n  pre: pre.js\n  main: main.js\n  post: post.js\n";

const PRE_JS: &str = r#"const fs = require('fs');
const e = process.env;
console.log(`pre ${e.INPUT_NAME} action=${e.GITHUB_ACTION} repo=${e.GITHUB_ACTION_REPOSITORY}@${e.GITHUB_ACTION_REF}`);
fs.appendFileSync(e.GITHUB_STATE, `phase=pre-${e.INPUT_NAME}\nfrom_pre=yes\n`);
"#;

const MAIN_JS: &str = r#"const fs = require('fs');
const e = process.env;
console.log(`main ${e.INPUT_NAME} state=${e.STATE_phase} from_pre=${e.STATE_from_pre || ''}`);
fs.appendFileSync(e.GITHUB_STATE, `phase=main-${e.INPUT_NAME}\n`);
"#;

const POST_JS: &str = r#"const e = process.env;
console.log(`post ${e.INPUT_NAME} state=${e.STATE_phase} from_pre=${e.STATE_from_pre || ''}`);
"#;

#[tokio::test]
async fn pre_scripts_run_before_the_first_step_in_step_order_and_share_state_with_main_and_post() {
    let mirror = ActionMirror::new();
    let files = [
        ("action.yml", NODE_ACTION),
        ("pre.js", PRE_JS),
        ("main.js", MAIN_JS),
        ("post.js", POST_JS),
    ];
    mirror.publish("octo/setup", "v1", &files);
    let lazy = NODE_ACTION.replace(
        "  pre: pre.js\n",
        "  pre: pre.js\n  pre-if: env.RUN_PRE == 'yes'\n",
    );
    let lazy_files = [
        ("action.yml", lazy.as_str()),
        ("pre.js", PRE_JS),
        ("main.js", MAIN_JS),
        ("post.js", POST_JS),
    ];
    mirror.publish("octo/lazy", "v1", &lazy_files);
    let workflow = job(
        "      - run: echo \"first step\"\n      - uses: octo/setup@v1\n        with:\n          name: a\n      - uses: octo/lazy@v1\n        with:\n          name: b\n      - uses: octo/setup@v1\n        if: false\n        with:\n          name: c\n",
    );
    let done = HostJob::new(&mirror.url()).run(&workflow, "j").await;
    let log = done.text();
    assert_eq!(done.report.result, Conclusion::Success, "{log}");
    let order = [
        "##[step] Pre Run octo/setup@v1",
        "pre a action=__octo_setup repo=octo/setup@v1",
        "pre c action=__octo_setup_2 repo=octo/setup@v1",
        "first step",
        "main a state=pre-a from_pre=yes",
        "main b state=undefined from_pre=",
        "##[step] Post Run octo/lazy@v1",
        "post b state=main-b from_pre=",
        "post c state=pre-c from_pre=yes",
        "post a state=main-a from_pre=yes",
    ];
    let mut last = 0;
    for needle in order {
        let at = done
            .line_of(needle)
            .unwrap_or_else(|| panic!("the log lacks {needle:?}:\n{log}"));
        assert!(at >= last, "{needle:?} came too early:\n{log}");
        last = at;
    }
    assert!(
        !log.contains("pre b"),
        "pre-if kept octo/lazy's pre from running:\n{log}"
    );
    assert!(!log.contains("main c"), "{log}");
}

#[tokio::test]
async fn steps_see_github_s_action_names_and_a_composite_sees_its_caller_s_env() {
    let mirror = ActionMirror::new();
    let inner = "    - shell: sh\n      env:\n        REPO: ${{ github.action_repository }}\n        REF: ${{ github.action_ref }}\n      run: echo \"inner A=$GITHUB_ACTION REPO=$REPO REF=$REF OUTER=$OUTER proc=[$GITHUB_ACTION_REPOSITORY]\"\n";
    mirror.publish("octo/ident", "v1", &[("action.yml", &composite(inner))]);
    let workflow = job(
        "      - run: echo \"A=$GITHUB_ACTION R=[$GITHUB_ACTION_REPOSITORY] F=[$GITHUB_ACTION_REF]\"\n      - id: named\n        run: echo \"A=$GITHUB_ACTION ctx=${{ github.action }}\"\n      - run: echo \"A=$GITHUB_ACTION\"\n      - uses: octo/ident@v1\n        env:\n          OUTER: from-caller\n",
    );
    let done = HostJob::new(&mirror.url()).run(&workflow, "j").await;
    let log = done.text();
    assert_eq!(done.report.result, Conclusion::Success, "{log}");
    for needle in [
        "A=__run R=[] F=[]",
        "A=named ctx=named",
        "A=__run_2",
        "inner A=__octo_ident.__run REPO=octo/ident REF=v1 OUTER=from-caller proc=[]",
    ] {
        assert!(
            done.line_of(needle).is_some(),
            "the log lacks {needle:?}:\n{log}"
        );
    }
}

#[tokio::test]
async fn local_and_self_repository_actions_run_and_their_remote_actions_are_resolved() {
    let mirror = ActionMirror::new();
    mirror.publish(
        "octo/hello",
        "v1",
        &[(
            "action.yml",
            &composite(&echo_step("hello via $GITHUB_ACTION_PATH")),
        )],
    );
    let repo = tempfile::tempdir().unwrap();
    for (name, marker) in [("local", "from-local"), ("self", "from-self")] {
        let dir = repo.path().join(".github/actions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let steps = format!("{}{}", echo_step(marker), uses_step("octo/hello@v1"));
        std::fs::write(dir.join("action.yml"), composite(&steps)).unwrap();
    }
    firerunner_vm::testing::git_repo(repo.path(), "init");
    let workflow = job("      - uses: actions/checkout@v4\n      - uses: ./.github/actions/local\n      - uses: $/.github/actions/self\n");
    let done = HostJob::new(&mirror.url())
        .with_checkout(repo.path())
        .run(&workflow, "j")
        .await;
    let log = done.text();
    assert_eq!(done.report.result, Conclusion::Success, "{log}");
    let download = done
        .line_of("Download action repository 'octo/hello@v1'")
        .expect("downloaded");
    let complete = done.line_of("Complete job name: j").expect("set up");
    assert!(
        download < complete,
        "the $/ action's octo/hello was resolved in set-up:\n{log}"
    );
    assert!(log.contains("Action 'actions/checkout@v4' is served by firerunner itself"));
    for needle in ["from-local", "from-self", "_actions/octo/hello/v1"] {
        assert!(log.contains(needle), "the log lacks {needle:?}:\n{log}");
    }
}

#[tokio::test]
async fn debug_lines_show_only_with_actions_step_debug() {
    let workflow = job("      - run: |\n          echo start\n          echo \"::debug::a quiet note\"\n          echo \"debug=[$RUNNER_DEBUG] [${{ runner.debug }}]\"\n");
    let mut host = HostJob::new("file:///nonexistent");
    let quiet = host.run(&workflow, "j").await;
    assert_eq!(quiet.report.result, Conclusion::Success, "{}", quiet.text());
    assert!(!quiet.text().contains("a quiet note"), "{}", quiet.text());
    assert!(quiet.text().contains("debug=[] []"));

    host.secrets
        .insert("ACTIONS_STEP_DEBUG".into(), "true".into());
    let shown = host.run(&workflow, "j").await;
    assert!(
        shown.line_of("##[debug]a quiet note").is_some(),
        "{}",
        shown.text()
    );
    assert!(shown.text().contains("debug=[1] [1]"), "{}", shown.text());

    host.secrets.clear();
    host.vars.insert("ACTIONS_STEP_DEBUG".into(), "True".into());
    let by_var = host.run(&workflow, "j").await;
    assert!(
        by_var.line_of("##[debug]a quiet note").is_some(),
        "{}",
        by_var.text()
    );
}

#[tokio::test]
async fn set_env_and_add_path_work_only_when_unsecure_commands_are_allowed() {
    let refused = job("      - id: try\n        continue-on-error: true\n        run: echo \"::set-env name=GREETING::hi\"\n      - run: test \"${{ steps.try.outcome }}\" = failure && test -z \"$GREETING\"\n");
    let mut host = HostJob::new("file:///nonexistent");
    let done = host.run(&refused, "j").await;
    assert_eq!(done.report.result, Conclusion::Success, "{}", done.text());
    assert!(done
        .text()
        .contains("error: Unable to process command '::set-env name=GREETING::hi' successfully."));
    assert!(
        done.text().contains("The `set-env` command is disabled."),
        "{}",
        done.text()
    );

    let allowed = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    env:\n      ACTIONS_ALLOW_UNSECURE_COMMANDS: true\n    steps:\n      - run: |\n          mkdir -p \"$RUNNER_TEMP/bin\"\n          printf '#!/bin/sh\\necho tool-ran\\n' > \"$RUNNER_TEMP/bin/mytool\"\n          chmod +x \"$RUNNER_TEMP/bin/mytool\"\n          echo \"::set-env name=GREETING::hi there\"\n          echo \"::add-path::$RUNNER_TEMP/bin\"\n      - run: test \"$GREETING\" = \"hi there\" && mytool\n";
    let done = host.run(allowed, "j").await;
    assert_eq!(done.report.result, Conclusion::Success, "{}", done.text());
    assert!(done.text().contains("tool-ran"));
}

#[tokio::test]
async fn a_service_whose_image_is_empty_is_skipped() {
    let empty = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    services:\n      db:\n        image: ${{ vars.DB_IMAGE }}\n    steps:\n      - run: echo ran-without-services\n";
    let mut host = HostJob::new("file:///nonexistent");
    let done = host.run(empty, "j").await;
    assert_eq!(done.report.result, Conclusion::Success, "{}", done.text());
    assert!(done
        .text()
        .contains("Service 'db' is skipped: its image is empty"));
    assert!(done.text().contains("ran-without-services"));

    host.vars.insert("DB_IMAGE".into(), "postgres:16".into());
    let needs_one = host.run(empty, "j").await;
    assert_eq!(needs_one.report.result, Conclusion::Failure);
    assert!(
        needs_one.text().contains("need a container engine"),
        "{}",
        needs_one.text()
    );
}
