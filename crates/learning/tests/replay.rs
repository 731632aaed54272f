//! Replays a deterministic synthetic history of 550 runs with injected flaky steps and repeated
//! failures, and measures how well the coordinator finds them.

use firerunner_learning::{
    Conclusion, Hint, LearningConfig, LearningCoordinator, LearningStore, StepRecord,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

const REPOSITORIES: usize = 5;
const RUNS: usize = 550;
const WORKFLOW: &str = "ci.yml";

/// (job, [(step name, command template)]). Templates use `{tmp}`, `{n}` and `{ver}`.
fn jobs(rust: bool) -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    if rust {
        vec![
            (
                "build",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("fetch", "cargo fetch --locked"),
                    ("build", "cargo build --release --target-dir {tmp}"),
                    ("test", "cargo test --workspace -- --test-threads {n}"),
                ],
            ),
            (
                "lint",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("fmt", "cargo fmt --all --check"),
                    (
                        "clippy",
                        "RUSTFLAGS=-Dwarnings cargo clippy --all-targets -j {n}",
                    ),
                ],
            ),
            (
                "integration",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("services", "docker compose up -d --wait # db and cache"),
                    (
                        "integration",
                        "cargo test --test integration -- --nocapture",
                    ),
                ],
            ),
        ]
    } else {
        vec![
            (
                "test",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("install", "npm ci"),
                    ("unit", "npm test -- --maxWorkers={n}"),
                ],
            ),
            (
                "lint",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("install", "npm ci"),
                    ("eslint", "npx eslint@{ver} src"),
                ],
            ),
            (
                "e2e",
                vec![
                    ("checkout", "git fetch --depth 1 origin {sha}"),
                    ("install", "npm ci"),
                    (
                        "playwright",
                        "npx playwright test --workers {n} --output {tmp}",
                    ),
                ],
            ),
        ]
    }
}

fn fill(template: &str, sha: &str, rng: &mut fastrand::Rng) -> String {
    template
        .replace("{sha}", sha)
        .replace("{tmp}", &format!("/tmp/tmp.{:08x}", rng.u32(..)))
        .replace("{n}", &rng.u32(1..17).to_string())
        .replace(
            "{ver}",
            &format!("{}.{}.{}", rng.u32(8..10), rng.u32(0..60), rng.u32(0..9)),
        )
}

fn stamp(rng: &mut fastrand::Rng) -> String {
    format!(
        "2026-03-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        rng.u32(1..29),
        rng.u32(0..24),
        rng.u32(0..60),
        rng.u32(0..60),
        rng.u32(0..1000)
    )
}

/// A failure that persists for a range of commits at one step, then is fixed.
#[derive(Debug)]
struct Episode {
    id: usize,
    repository: usize,
    job: usize,
    step: usize,
    first_commit: usize,
    commits: usize,
    kind: usize,
    failures: u64,
    fix_commit: Option<String>,
}

impl Episode {
    fn active(&self, commit: usize) -> bool {
        (self.first_commit..self.first_commit + self.commits).contains(&commit)
    }

    fn log(&self, rng: &mut fastrand::Rng) -> String {
        let id = self.id;
        let cause = match self.kind % 4 {
            0 => format!(
                "\x1b[1m\x1b[31merror[E0425]\x1b[0m: cannot find value `ep{id}_value` in this scope\n  --> src/module_{id}.rs:{}:{}",
                rng.u32(1..400),
                rng.u32(1..80)
            ),
            1 => format!(
                "thread 'tests::ep{id}_case' panicked at src/lib.rs:{}:{}:\nassertion `left == right` failed\n  left: {}\n right: {}",
                rng.u32(1..900),
                rng.u32(1..40),
                rng.u32(0..100),
                rng.u32(100..200)
            ),
            2 => format!(
                "FAILED tests/test_api.py::test_ep{id}_login - AssertionError: assert {} == 200",
                rng.u32(400..500)
            ),
            _ => format!(
                "Error: Cannot find module 'ep{id}-helper' imported from /home/runner/work/app/src/{:x}/index.js",
                rng.u32(..)
            ),
        };
        let mut log = String::new();
        for line in 0..rng.usize(2..8) {
            log.push_str(&format!(
                "{} progress line {line} of work in /home/runner/work/r/{}\n",
                stamp(rng),
                rng.u32(..)
            ));
        }
        for line in cause.lines() {
            log.push_str(&format!("{} {line}\n", stamp(rng)));
        }
        log.push_str(&format!(
            "{} Error: Process completed with exit code {}.\n",
            stamp(rng),
            rng.u32(1..3)
        ));
        log
    }
}

fn transient_log(kind: usize, rng: &mut fastrand::Rng) -> String {
    let cause = match kind % 3 {
        0 => format!(
            "Error: connect ETIMEDOUT 10.0.{}.{}:443",
            rng.u32(0..255),
            rng.u32(0..255)
        ),
        1 => format!(
            "Error: Timed out {}ms waiting for expect(locator).toBeVisible()",
            rng.u32(1000..9000)
        ),
        _ => format!(
            "test result: FAILED. {} passed; 1 failed; finished in {}.{}s\nthread 'net::retry' panicked at tests/net.rs:{}:9:\nconnection reset by peer",
            rng.u32(10..90),
            rng.u32(1..30),
            rng.u32(0..99),
            rng.u32(1..300)
        ),
    };
    format!("{} starting\n{}\n", stamp(rng), cause)
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_history_finds_flaky_steps_and_lessons() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_2026);
    let layouts: Vec<_> = (0..REPOSITORIES)
        .map(|index| jobs(index % 2 == 0))
        .collect();

    let mut flaky: HashMap<(usize, usize, usize), (f64, usize)> = HashMap::new();
    for (repository, layout) in layouts.iter().enumerate() {
        for _ in 0..2 {
            let job = rng.usize(0..layout.len());
            let step = rng.usize(1..layout[job].1.len());
            flaky.insert(
                (repository, job, step),
                (0.2 + rng.f64() * 0.2, rng.usize(..)),
            );
        }
    }
    let mut episodes: Vec<Episode> = Vec::new();
    for (repository, layout) in layouts.iter().enumerate() {
        for _ in 0..7 {
            let job = rng.usize(0..layout.len());
            let step = rng.usize(1..layout[job].1.len());
            let first_commit = rng.usize(2..55);
            let commits = rng.usize(1..6);
            let overlaps = episodes.iter().any(|other| {
                (other.repository, other.job, other.step) == (repository, job, step)
                    && first_commit < other.first_commit + other.commits + 1
                    && other.first_commit < first_commit + commits + 1
            });
            if overlaps || flaky.contains_key(&(repository, job, step)) {
                continue;
            }
            episodes.push(Episode {
                id: episodes.len(),
                repository,
                job,
                step,
                first_commit,
                commits,
                kind: rng.usize(..),
                failures: 0,
                fix_commit: None,
            });
        }
    }

    let store = LearningStore::connect("sqlite::memory:").await.unwrap();
    let learning = LearningCoordinator::open(store, LearningConfig::default())
        .await
        .unwrap();
    let mut commit_index = [0usize; REPOSITORIES];
    let mut commit_sha = vec![String::new(); REPOSITORIES];
    let mut recorded_steps = 0u64;
    let mut hint_checks = (0usize, 0usize);
    for run in 0..RUNS {
        let repository = rng.usize(0..REPOSITORIES);
        if commit_sha[repository].is_empty() || rng.f64() < 0.55 {
            commit_index[repository] += 1;
            commit_sha[repository] = format!("{:016x}{:016x}", rng.u64(..), rng.u64(..));
        }
        let commit = commit_index[repository];
        let sha = commit_sha[repository].clone();
        for (job, (job_name, steps)) in layouts[repository].iter().enumerate() {
            for (step, (step_name, template)) in steps.iter().enumerate() {
                let episode = episodes.iter_mut().find(|episode| {
                    (episode.repository, episode.job, episode.step) == (repository, job, step)
                        && episode.active(commit)
                });
                let log = match (episode, flaky.get(&(repository, job, step))) {
                    (Some(episode), _) => {
                        episode.failures += 1;
                        Some(episode.log(&mut rng))
                    }
                    (None, Some((probability, kind))) if rng.f64() < *probability => {
                        Some(transient_log(*kind, &mut rng))
                    }
                    _ => None,
                };
                if log.is_none() {
                    for episode in episodes.iter_mut().filter(|episode| {
                        (episode.repository, episode.job, episode.step) == (repository, job, step)
                            && episode.failures > 0
                            && episode.fix_commit.is_none()
                            && commit >= episode.first_commit + episode.commits
                    }) {
                        episode.fix_commit = Some(sha.clone());
                    }
                }
                let record = StepRecord {
                    run_id: format!("run-{run}"),
                    repository: format!("org/repo{repository}"),
                    commit_sha: sha.clone(),
                    workflow: WORKFLOW.into(),
                    job: (*job_name).into(),
                    step_name: (*step_name).into(),
                    command: fill(template, &sha, &mut rng),
                    outcome: if log.is_some() {
                        Conclusion::Failure
                    } else {
                        Conclusion::Success
                    },
                    exit_code: Some(i32::from(log.is_some())),
                    duration: Duration::from_millis(rng.u64(100..90_000)),
                    log_tail: log.clone().unwrap_or_else(|| "done".into()),
                    timestamp: UNIX_EPOCH
                        + Duration::from_secs(1_770_000_000 + run as u64 * 600 + step as u64),
                };
                let failed = log.is_some();
                if failed && rng.usize(0..4) == 0 {
                    let hints = learning.hints_for_failure(&record);
                    let in_episode = episodes.iter().any(|episode| {
                        (episode.repository, episode.job, episode.step) == (repository, job, step)
                            && episode.active(commit)
                            && episode.failures > 3
                    });
                    if in_episode {
                        hint_checks.0 += 1;
                        if hints.iter().any(|hint| {
                            matches!(
                                hint,
                                Hint::KnownFailure {
                                    same_step: true,
                                    ..
                                }
                            )
                        }) {
                            hint_checks.1 += 1;
                        }
                    }
                }
                learning.record_step(record).await.unwrap();
                recorded_steps += 1;
                if failed {
                    break;
                }
            }
        }
    }
    learning.flush().await.unwrap();

    let threshold = LearningConfig::default().lesson_threshold;
    let truth_flaky: HashSet<(String, String, String)> = flaky
        .keys()
        .map(|(repository, job, step)| {
            let (job_name, steps) = &layouts[*repository][*job];
            (
                format!("org/repo{repository}"),
                job_name.to_string(),
                steps[*step].0.to_string(),
            )
        })
        .collect();
    let found_flaky: HashSet<(String, String, String)> = learning
        .flaky_steps()
        .into_iter()
        .map(|step| {
            (
                step.location.repository,
                step.location.job,
                step.location.step_name,
            )
        })
        .collect();
    let flaky_hits = found_flaky.intersection(&truth_flaky).count();
    let flaky_precision = ratio(flaky_hits, found_flaky.len());
    let flaky_recall = ratio(flaky_hits, truth_flaky.len());

    let episode_key = |episode: &Episode| {
        let (job_name, steps) = &layouts[episode.repository][episode.job];
        (
            format!("org/repo{}", episode.repository),
            job_name.to_string(),
            steps[episode.step].0.to_string(),
            Some(episode.id),
        )
    };
    let truth_lessons: HashSet<_> = episodes
        .iter()
        .filter(|episode| episode.failures >= threshold)
        .map(episode_key)
        .collect();
    let below_threshold = episodes
        .iter()
        .filter(|episode| (1..threshold).contains(&episode.failures))
        .count();
    let lessons = learning.lessons();
    let found_lessons: HashSet<_> = lessons
        .iter()
        .map(|lesson| {
            let id = episodes.iter().map(|episode| episode.id).find(|id| {
                lesson.signature.text.contains(&format!("ep{id}_"))
                    || lesson.signature.text.contains(&format!("ep{id}-"))
            });
            (
                lesson.location.repository.clone(),
                lesson.location.job.clone(),
                lesson.location.step_name.clone(),
                id,
            )
        })
        .collect();
    let lesson_hits = found_lessons.intersection(&truth_lessons).count();
    let lesson_precision = ratio(lesson_hits, found_lessons.len());
    let lesson_recall = ratio(lesson_hits, truth_lessons.len());

    let mut fixes_known = 0;
    let mut fixes_right = 0;
    for episode in episodes
        .iter()
        .filter(|episode| episode.failures >= threshold)
    {
        let Some(fix) = &episode.fix_commit else {
            continue;
        };
        fixes_known += 1;
        let key = episode_key(episode);
        if lessons.iter().any(|lesson| {
            (
                lesson.location.repository.clone(),
                lesson.location.job.clone(),
                lesson.location.step_name.clone(),
            ) == (key.0.clone(), key.1.clone(), key.2.clone())
                && lesson.fixed_by.as_ref().map(|fixed| &fixed.commit_sha) == Some(fix)
        }) {
            fixes_right += 1;
        }
    }
    let fix_accuracy = ratio(fixes_right, fixes_known);
    let hint_recall = ratio(hint_checks.1, hint_checks.0);

    let stats = learning.stats();
    println!("replayed {RUNS} runs, {recorded_steps} steps: {stats:?}");
    println!(
        "flaky steps: injected {}, found {}, precision {flaky_precision:.3}, recall {flaky_recall:.3}",
        truth_flaky.len(),
        found_flaky.len()
    );
    println!(
        "lessons: expected {} (plus {below_threshold} episodes below the threshold), found {}, precision {lesson_precision:.3}, recall {lesson_recall:.3}",
        truth_lessons.len(),
        found_lessons.len()
    );
    println!(
        "fixed_by right for {fixes_right}/{fixes_known}; hints matched {}/{}",
        hint_checks.1, hint_checks.0
    );

    assert_eq!(stats.successes + stats.failures, recorded_steps);
    assert!(truth_flaky.len() >= 8, "enough injected flaky steps");
    assert!(truth_lessons.len() >= 10, "enough repeated failures");
    assert!(
        below_threshold >= 3,
        "some episodes must stay below the threshold"
    );
    assert!(flaky_precision >= 0.9 && flaky_recall >= 0.9);
    assert!(lesson_precision >= 0.9 && lesson_recall >= 0.9);
    assert!(fix_accuracy >= 0.9);
    assert!(hint_checks.0 >= 5 && hint_recall >= 0.9);
    learning.close().await.unwrap();
}
