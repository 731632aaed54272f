use firerunner_learning::{
    Conclusion, EvidenceLevel, FixedBy, Hint, HintScope, LearningConfig, LearningCoordinator,
    LearningStore, LessonStatus, PredictionContext, StepRecord,
};
use std::time::{Duration, UNIX_EPOCH};

fn step(run: u32, commit: &str, step_name: &str, command: &str, log: Option<&str>) -> StepRecord {
    StepRecord {
        run_id: format!("run-{run}"),
        repository: "acme/app".into(),
        commit_sha: commit.into(),
        workflow: "ci.yml".into(),
        job: "test".into(),
        step_name: step_name.into(),
        command: command.into(),
        outcome: if log.is_some() {
            Conclusion::Failure
        } else {
            Conclusion::Success
        },
        exit_code: Some(i32::from(log.is_some())),
        duration: Duration::from_millis(1200),
        log_tail: log.unwrap_or("ok").into(),
        timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(run)),
    }
}

async fn memory_coordinator() -> LearningCoordinator {
    let store = LearningStore::connect("sqlite::memory:")
        .await
        .expect("store");
    LearningCoordinator::open(store, LearningConfig::default())
        .await
        .expect("coordinator")
}

const COMPILE_ERROR: &str =
    "error[E0425]: cannot find value `x` in this scope\n --> src/lib.rs:LINE:5";

#[tokio::test]
async fn repeated_failures_become_a_lesson_with_its_fix() {
    let learning = memory_coordinator().await;
    learning
        .record_step(step(1, "c1", "build", "cargo build", None))
        .await
        .unwrap();
    for (run, commit) in [(2, "c2"), (3, "c3")] {
        let log = COMPILE_ERROR.replace("LINE", &run.to_string());
        let recorded = learning
            .record_step(step(run, commit, "build", "cargo build", Some(&log)))
            .await
            .unwrap();
        assert!(!recorded.new_lesson);
    }
    assert!(learning.lessons().is_empty(), "below the threshold of 3");
    let recorded = learning
        .record_step(step(
            4,
            "c4",
            "build",
            "cargo build",
            Some(&COMPILE_ERROR.replace("LINE", "99")),
        ))
        .await
        .unwrap();
    assert!(recorded.new_lesson);
    let lessons = learning.lessons();
    assert_eq!(lessons.len(), 1);
    assert_eq!(lessons[0].count, 3);
    assert!(lessons[0].still_failing);
    assert_eq!(lessons[0].fixed_by, None);
    assert_eq!(
        lessons[0].signature.text,
        "error[E0425]: cannot find value `x` in this scope"
    );

    learning
        .record_step(step(5, "c5", "build", "cargo build --locked", None))
        .await
        .unwrap();
    let lesson = &learning.lessons()[0];
    assert!(!lesson.still_failing);
    assert_eq!(
        lesson.fixed_by,
        Some(FixedBy {
            commit_sha: "c5".into(),
            command: Some("cargo build --locked".into()),
        })
    );
    assert!(learning.flaky_steps().is_empty());
    let stats = learning.stats();
    assert_eq!((stats.successes, stats.failures), (2, 3));
    assert_eq!(stats.unique_success_patterns, 2);
    assert_eq!(stats.unique_failure_patterns, 1);
    assert_eq!(stats.lessons, 1);
    learning.close().await.unwrap();
}

#[tokio::test]
async fn a_lesson_that_fails_again_after_its_fix_is_failing() {
    let learning = memory_coordinator().await;
    let failure = |run: u32, commit: &str| {
        let log = COMPILE_ERROR.replace("LINE", &run.to_string());
        step(run, commit, "build", "cargo build", Some(&log))
    };
    for (run, commit) in [(1, "c1"), (2, "c2"), (3, "c3")] {
        learning.record_step(failure(run, commit)).await.unwrap();
    }
    assert_eq!(learning.lessons()[0].status(), LessonStatus::Failing);
    learning
        .record_step(step(4, "c4fixed1", "build", "cargo build", None))
        .await
        .unwrap();
    let fixed = learning.lessons()[0].status();
    assert_eq!(fixed, LessonStatus::FixedIn("c4fixed1".into()));
    assert_eq!(fixed.to_string(), "fixed in c4fixed");
    learning.record_step(failure(5, "c5")).await.unwrap();
    let lesson = &learning.lessons()[0];
    assert_eq!(lesson.count, 4);
    assert_eq!(lesson.status(), LessonStatus::Failing);
    assert_eq!(lesson.status().to_string(), "failing");
    learning.close().await.unwrap();
}

#[tokio::test]
async fn pass_and_fail_at_one_commit_is_flaky_and_hides_its_lesson() {
    let learning = memory_coordinator().await;
    let timeout = "Error: connect ETIMEDOUT 10.0.0.1:443";
    for run in 0..3 {
        learning
            .record_step(step(run, "same", "e2e", "npm run e2e", Some(timeout)))
            .await
            .unwrap();
    }
    assert_eq!(learning.lessons().len(), 1);
    let recorded = learning
        .record_step(step(9, "same", "e2e", "npm run e2e", None))
        .await
        .unwrap();
    assert!(recorded.became_flaky);
    let flaky = learning.flaky_steps();
    assert_eq!(flaky.len(), 1);
    assert_eq!(flaky[0].command, "npm run e2e");
    assert_eq!(flaky[0].flaky_commits, 1);
    assert!(
        learning.lessons().is_empty(),
        "flakiness explains the failures"
    );

    let hints = learning.hints_for_failure(&step(10, "other", "e2e", "npm run e2e", Some(timeout)));
    assert!(matches!(hints.as_slice(), [Hint::Flaky(found)] if found.command == "npm run e2e"));
}

#[tokio::test]
async fn hints_point_to_lessons_with_the_same_signature() {
    let learning = memory_coordinator().await;
    for run in 0..3 {
        let commit = format!("c{run}");
        learning
            .record_step(step(
                run,
                &commit,
                "build",
                "cargo build",
                Some(&COMPILE_ERROR.replace("LINE", "1")),
            ))
            .await
            .unwrap();
    }
    let mut elsewhere = step(
        7,
        "z",
        "compile",
        "cargo check",
        Some(&COMPILE_ERROR.replace("LINE", "8")),
    );
    elsewhere.job = "lint".into();
    let hints = learning.hints_for_failure(&elsewhere);
    assert!(
        matches!(hints.as_slice(), [Hint::KnownFailure { same_step: false, lesson }] if lesson.count == 3)
    );
    let unrelated = step(
        7,
        "z",
        "build",
        "cargo build",
        Some("error: something else"),
    );
    assert!(learning.hints_for_failure(&unrelated).is_empty());
}

#[tokio::test]
async fn sequences_and_predictions_come_from_recorded_steps() {
    let learning = memory_coordinator().await;
    for run in 0..4 {
        learning
            .record_step(step(run, "c", "install", "npm ci", None))
            .await
            .unwrap();
        let log = (run == 0).then_some("npm ERR! Test failed.");
        learning
            .record_step(step(run, "c", "test", "npm test", log))
            .await
            .unwrap();
    }
    learning.with_graph(|graph| {
        assert_eq!(
            graph.next_command("npm ci"),
            Some(("npm test".to_string(), 3))
        );
    });
    let context = PredictionContext {
        repository: Some("acme/app".into()),
    };
    let prediction = learning.predict_success("npm test", &context);
    assert_eq!(prediction.level, EvidenceLevel::CommandInRepository);
    assert_eq!((prediction.successes, prediction.failures), (3, 1));
    assert!((prediction.probability - 4.0 / 6.0).abs() < 1e-9);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("learning.db").display()
    );
    let learning = LearningCoordinator::open(
        LearningStore::connect(&url).await.unwrap(),
        LearningConfig::default(),
    )
    .await
    .unwrap();
    for run in 0..3 {
        learning
            .record_step(step(run, "c0", "setup", "npm ci", None))
            .await
            .unwrap();
        let commit = format!("c{run}");
        learning
            .record_step(step(
                run,
                &commit,
                "build",
                "cargo build",
                Some(&COMPILE_ERROR.replace("LINE", "3")),
            ))
            .await
            .unwrap();
    }
    learning
        .record_step(step(5, "c0", "setup", "npm ci", Some("npm ERR! network")))
        .await
        .unwrap();
    learning
        .record_step(step(6, "c9", "build", "cargo build", None))
        .await
        .unwrap();
    let stats_before = learning.stats();
    let lessons_before = learning.lessons();
    let flaky_before = learning.flaky_steps();
    let related_before = learning.with_graph(|graph| graph.find_related_commands("npm ci", 5));
    learning.close().await.unwrap();

    let store = LearningStore::connect(&url).await.unwrap();
    assert_eq!(store.step_count().await.unwrap(), 8);
    let reopened = LearningCoordinator::open(store, LearningConfig::default())
        .await
        .unwrap();
    assert_eq!(reopened.stats(), stats_before);
    assert_eq!(reopened.lessons(), lessons_before);
    assert_eq!(reopened.flaky_steps(), flaky_before);
    assert_eq!(lessons_before.len(), 1);
    assert_eq!(flaky_before.len(), 1);
    assert_eq!(
        reopened.with_graph(|graph| graph.find_related_commands("npm ci", 5)),
        related_before
    );
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn hints_stay_in_their_repository_unless_the_owner_scope_is_allowed() {
    let log = COMPILE_ERROR.replace("LINE", "1");
    for (scope, shown_to) in [
        (HintScope::Repository, vec!["acme/app"]),
        (HintScope::Owner, vec!["acme/app", "acme/other"]),
    ] {
        let store = LearningStore::connect("sqlite::memory:").await.unwrap();
        let config = LearningConfig {
            hint_scope: scope,
            ..LearningConfig::default()
        };
        let learning = LearningCoordinator::open(store, config).await.unwrap();
        for run in 0..3 {
            let commit = format!("c{run}");
            let failed = step(run, &commit, "build", "cargo build", Some(&log));
            learning.record_step(failed).await.unwrap();
        }
        for repository in ["acme/app", "acme/other", "evil/app"] {
            let mut failure = step(9, "z", "build", "cargo build", Some(&log));
            failure.repository = repository.into();
            let hints = learning.hints_for_failure(&failure);
            assert_eq!(
                !hints.is_empty(),
                shown_to.contains(&repository),
                "{scope:?} {repository}: {hints:?}"
            );
        }
    }
}
