//! `firerunner learn` against a database filled through the learning library.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use firerunner_learning::{
    Conclusion, LearningConfig, LearningCoordinator, LearningStore, StepRecord,
};

fn step(
    run: &str,
    commit: &str,
    job: &str,
    name: &str,
    command: &str,
    log: Option<&str>,
) -> StepRecord {
    StepRecord {
        run_id: run.into(),
        repository: "octo/app".into(),
        commit_sha: commit.into(),
        workflow: "CI".into(),
        job: job.into(),
        step_name: name.into(),
        command: command.into(),
        outcome: if log.is_some() {
            Conclusion::Failure
        } else {
            Conclusion::Success
        },
        exit_code: Some(i32::from(log.is_some())),
        duration: Duration::from_secs(2),
        log_tail: log.unwrap_or_default().into(),
        timestamp: UNIX_EPOCH + Duration::from_secs(1_770_000_000),
    }
}

/// 12 steps: `npm test` fails three times with one error, then is fixed at c4;
/// `npx playwright test` both fails and passes at c5.
fn fill(url: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = LearningStore::connect(url).await.unwrap();
        let learning = LearningCoordinator::open(store, LearningConfig::default())
            .await
            .unwrap();
        let missing = "> jest\nError: Cannot find module 'left-pad' from 'src/index.js'\n";
        for (index, commit) in ["c1", "c2", "c3", "c4fixed", "c5"].iter().enumerate() {
            let run = format!("run-{index}");
            learning
                .record_step(step(&run, commit, "test", "install", "npm ci", None))
                .await
                .unwrap();
            let log = (index < 3).then_some(missing);
            learning
                .record_step(step(&run, commit, "test", "unit", "npm test", log))
                .await
                .unwrap();
        }
        let timeout = "Error: Timed out 5000ms waiting for expect(locator).toBeVisible()";
        for (run, log) in [("run-4", Some(timeout)), ("run-4-rerun", None)] {
            learning
                .record_step(step(
                    run,
                    "c5",
                    "e2e",
                    "playwright",
                    "npx playwright test",
                    log,
                ))
                .await
                .unwrap();
        }
        learning.close().await.unwrap();
    });
}

fn firerunner(data_dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(args)
        .env("FIRERUNNER_DATA_DIR", data_dir)
        .env_remove("FIRERUNNER_LEARNING_DATABASE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "firerunner {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(data_dir: &Path, args: &[&str]) -> String {
    String::from_utf8(firerunner(data_dir, args).stdout).unwrap()
}

fn json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&firerunner(data_dir, args).stdout).unwrap()
}

#[test]
fn learn_answers_from_the_recorded_steps() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("learn.db").display()
    );
    fill(&url);
    let data = dir.path().join("unused-data-dir");
    let ask = |args: &[&str]| {
        let mut all = vec!["learn", "--database", url.as_str()];
        all.extend_from_slice(args);
        text(&data, &all)
    };
    let ask_json = |args: &[&str]| {
        let mut all = vec!["learn", "--database", url.as_str(), "--json"];
        all.extend_from_slice(args);
        json(&data, &all)
    };

    let stats = ask(&["stats"]);
    assert!(stats.starts_with("WHAT"), "{stats}");
    assert!(stats.contains("steps recorded     12"), "{stats}");
    assert!(stats.contains("lessons            1"), "{stats}");
    let stats = ask_json(&["stats"]);
    assert_eq!(stats["successes"], 8);
    assert_eq!(stats["failures"], 4);
    assert_eq!(stats["flaky_steps"], 1);

    let lessons = ask(&["lessons"]);
    let row = lessons
        .lines()
        .find(|line| line.contains("left-pad"))
        .unwrap_or_else(|| panic!("no lesson row:\n{lessons}"));
    assert!(row.starts_with("3 "), "{row}");
    assert!(row.contains("fixed in c4fixed"), "{row}");
    assert!(row.contains("octo/app CI/test/unit"), "{row}");
    let lessons = ask_json(&["lessons"]);
    assert_eq!(lessons.as_array().unwrap().len(), 1);
    assert_eq!(lessons[0]["count"], 3);
    assert_eq!(lessons[0]["still_failing"], false);
    assert_eq!(lessons[0]["fixed_by"]["commit"], "c4fixed");
    assert_eq!(lessons[0]["location"]["step"], "unit");

    let flaky = ask(&["flaky"]);
    assert!(flaky.contains("octo/app CI/e2e/playwright"), "{flaky}");
    assert!(flaky.contains("npx playwright test"), "{flaky}");
    assert_eq!(ask_json(&["flaky"])[0]["flaky_commits"], 1);

    let predict = ask(&["predict", "npm test", "--repository", "octo/app"]);
    assert!(predict.contains("P(success) = 0.43"), "{predict}");
    assert!(
        predict.contains("2 success(es), 3 failure(s) of this command in octo/app"),
        "{predict}"
    );
    assert!(
        predict.contains("left-pad"),
        "failures are evidence too:\n{predict}"
    );
    let predicted = ask_json(&["predict", "npm test"]);
    assert!((predicted["probability"].as_f64().unwrap() - 3.0 / 7.0).abs() < 1e-9);
    assert_eq!(predicted["evidence"]["level"], "command");
    let unknown = ask_json(&["predict", "cargo test --release"]);
    assert_eq!(unknown["evidence"]["level"], "concept", "{unknown}");
    assert_eq!(
        unknown["evidence"]["successes"], 2,
        "npm test is the only test command"
    );
    assert_eq!(unknown["evidence"]["failures"], 3);

    let next = ask(&["next", "npm ci"]);
    assert_eq!(
        next,
        "after `npm ci`: `npm test` (2 time(s) run next, both succeeding)\n"
    );
    assert_eq!(
        ask_json(&["next", "npm test"])["next"],
        serde_json::Value::Null
    );

    let related = ask(&["related", "npm ci"]);
    assert!(
        related
            .lines()
            .nth(2)
            .is_some_and(|row| row.ends_with("npm test")),
        "{related}"
    );
}

#[test]
fn the_default_database_lives_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let stats = json(&data, &["learn", "stats", "--json"]);
    assert_eq!(stats["steps"], 0);
    assert!(data.join("firerunner.db").is_file());
}

#[test]
fn learn_new_writes_a_valid_workflow_without_an_llm() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args([
            "learn",
            "new",
            "run cargo test and if it passes build the release on push to main",
        ])
        .env("FIRERUNNER_DATA_DIR", dir.path())
        .env_remove("FIRERUNNER_LLM_URL")
        .env_remove("FIRERUNNER_LLM_MODEL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).unwrap();
    firerunner_workflow::load::parse_workflow("new.yml", &yaml)
        .unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert!(yaml.contains("run: cargo test\n"), "{yaml}");
    assert!(yaml.contains("run: cargo build --release\n"), "{yaml}");
    assert!(yaml.contains("branches: ['main']"), "{yaml}");
    assert!(
        !dir.path().join("firerunner.db").exists(),
        "writing a workflow needs no database"
    );
}

#[test]
fn learn_new_falls_back_to_the_parser_when_the_llm_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let output = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(["learn", "new", "--json", "every night run `make soak`"])
        .env("FIRERUNNER_DATA_DIR", dir.path())
        .env("FIRERUNNER_LLM_URL", format!("http://{address}/v1"))
        .env("FIRERUNNER_LLM_MODEL", "none")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("using the built-in phrase parser"),
        "{stderr}"
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["source"], "patterns");
    assert!(answer["llm_error"].as_str().unwrap().contains("failed"));
    assert!(answer["yaml"]
        .as_str()
        .unwrap()
        .contains("cron: '0 3 * * *'"));
}

#[test]
fn learn_new_reports_what_it_cannot_parse() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(["learn", "new", "deploy to the moon"])
        .env("FIRERUNNER_DATA_DIR", dir.path())
        .env_remove("FIRERUNNER_LLM_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"deploy to the moon\""), "{stderr}");
}
