//! Feeds finished jobs to the learning layer: a [`JobReport`] and the job's
//! log lines become one [`StepRecord`] per step that ran.
//!
//! The engine's run entry ([`crate::run::Engine::run`]) makes these records
//! once per finished job instance, for `firerunner run` and the service
//! alike; they hand them to a [`firerunner_learning::LearningCoordinator`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firerunner_learning::signature::DEFAULT_TAIL_LINES;
use firerunner_learning::StepRecord;
use firerunner_workflow::Conclusion;

use crate::job::{JobReport, StepReport};
use crate::logs::LogLine;

/// The runner's header line that opens every step's log.
const STEP_HEADER: &str = "##[step] ";

/// A finished job instance and where it ran, as [`step_records`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct FinishedJob<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The repository (`owner/name`).
    pub repository: &'a str,
    /// The commit the run built.
    pub commit_sha: &'a str,
    /// The workflow's name (or file when it has none).
    pub workflow: &'a str,
    /// The job instance's display name (with its matrix values).
    pub job: &'a str,
    /// The job's report.
    pub report: &'a JobReport,
    /// The job's log lines, as kept by [`crate::logs::LogHub`].
    pub log: &'a [LogLine],
    /// When the job finished: the timestamp of steps that wrote no line.
    pub finished_at: SystemTime,
}

/// One record per step that ran (skipped and cancelled steps are left out),
/// in step order. A step counts as failed when its outcome (before
/// `continue-on-error`) is a failure; a failed step carries the last
/// [`DEFAULT_TAIL_LINES`] lines of its log (without the step header), a
/// successful one an empty tail. A step's timestamp is that of its last log
/// line, else the job's end.
pub fn step_records(job: &FinishedJob<'_>) -> Vec<StepRecord> {
    indexed_step_records(job)
        .into_iter()
        .map(|(_, record)| record)
        .collect()
}

/// [`step_records`], each with the index of its step in
/// [`JobReport::steps`] (to show hints next to the step they are about).
pub fn indexed_step_records(job: &FinishedJob<'_>) -> Vec<(usize, StepRecord)> {
    job.report
        .steps
        .iter()
        .enumerate()
        .filter_map(|(position, step)| Some((position, job.record(position, step)?)))
        .collect()
}

impl FinishedJob<'_> {
    /// The record of the step at `position`, unless it was skipped or cancelled.
    fn record(&self, position: usize, step: &StepReport) -> Option<StepRecord> {
        let outcome = match step.outcome {
            Conclusion::Success | Conclusion::Failure => step.outcome,
            Conclusion::Skipped | Conclusion::Cancelled => return None,
        };
        // Steps are numbered from 1 in the log; 0 holds the job's set-up lines.
        let lines: Vec<&LogLine> = self
            .log
            .iter()
            .filter(|line| line.step == position + 1)
            .collect();
        let timestamp = lines
            .last()
            .map(|line| UNIX_EPOCH + Duration::from_millis(line.timestamp_ms))
            .unwrap_or(self.finished_at);
        let log_tail = if outcome == Conclusion::Failure {
            log_tail(&lines, DEFAULT_TAIL_LINES)
        } else {
            String::new()
        };
        Some(StepRecord {
            run_id: self.run_id.to_string(),
            repository: self.repository.to_string(),
            commit_sha: self.commit_sha.to_string(),
            workflow: self.workflow.to_string(),
            job: self.job.to_string(),
            step_name: step.name.clone(),
            command: step.command.clone(),
            outcome,
            exit_code: step.exit_code,
            duration: step.duration,
            log_tail,
            timestamp,
        })
    }
}

/// The last `max_lines` lines of a step, one per line, without its header.
fn log_tail(lines: &[&LogLine], max_lines: usize) -> String {
    let kept: Vec<&str> = lines
        .iter()
        .map(|line| line.text.as_str())
        .filter(|text| !text.starts_with(STEP_HEADER))
        .collect();
    let start = kept.len().saturating_sub(max_lines);
    kept[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StepReport;
    use crate::logs::LogStream;
    use firerunner_workflow::Object;

    fn step(
        name: &str,
        command: &str,
        outcome: Conclusion,
        conclusion: Conclusion,
        exit_code: Option<i32>,
    ) -> StepReport {
        StepReport {
            name: name.into(),
            outcome,
            conclusion,
            duration: Duration::from_millis(1500),
            command_duration: Duration::from_millis(1200),
            command: command.into(),
            exit_code,
        }
    }

    fn line(step: usize, stream: LogStream, text: &str, timestamp_ms: u64) -> LogLine {
        LogLine {
            run_id: "42".into(),
            job: "test (18)".into(),
            step,
            stream,
            timestamp_ms,
            text: text.into(),
        }
    }

    fn report() -> JobReport {
        JobReport {
            result: Conclusion::Failure,
            outputs: Object::new(),
            steps: vec![
                step(
                    "Run actions/checkout@v4",
                    "uses: actions/checkout@v4",
                    Conclusion::Success,
                    Conclusion::Success,
                    None,
                ),
                step(
                    "lint",
                    "npm run lint",
                    Conclusion::Failure,
                    Conclusion::Success,
                    Some(2),
                ),
                step(
                    "test",
                    "npm test",
                    Conclusion::Failure,
                    Conclusion::Failure,
                    Some(1),
                ),
                step(
                    "deploy",
                    "./deploy.sh",
                    Conclusion::Skipped,
                    Conclusion::Skipped,
                    None,
                ),
            ],
            summary: String::new(),
            environment_url: None,
        }
    }

    fn finished<'a>(report: &'a JobReport, log: &'a [LogLine]) -> FinishedJob<'a> {
        FinishedJob {
            run_id: "42",
            repository: "octo/app",
            commit_sha: "abc123",
            workflow: "CI",
            job: "test (18)",
            report,
            log,
            finished_at: UNIX_EPOCH + Duration::from_secs(9_000),
        }
    }

    #[test]
    fn steps_that_ran_become_records_with_failing_tails() {
        let report = report();
        let log = vec![
            line(0, LogStream::Runner, "preparing", 1_000),
            line(
                1,
                LogStream::Runner,
                "##[step] Run actions/checkout@v4",
                2_000,
            ),
            line(1, LogStream::Runner, "Checked out", 3_000),
            line(2, LogStream::Runner, "##[step] lint", 4_000),
            line(2, LogStream::Stdout, "src/a.js: 3 problems", 5_000),
            line(3, LogStream::Runner, "##[step] test", 6_000),
            line(3, LogStream::Stdout, "running 12 tests", 7_000),
            line(3, LogStream::Stderr, "Error: Cannot find module 'x'", 8_000),
            line(
                3,
                LogStream::Runner,
                "error: Process completed with exit code 1.",
                8_500,
            ),
        ];
        let records = step_records(&finished(&report, &log));
        let names: Vec<&str> = records.iter().map(|r| r.step_name.as_str()).collect();
        assert_eq!(names, ["Run actions/checkout@v4", "lint", "test"]);
        let indices: Vec<usize> = indexed_step_records(&finished(&report, &log))
            .iter()
            .map(|(index, _)| *index)
            .collect();
        assert_eq!(indices, [0, 1, 2]);

        let checkout = &records[0];
        assert_eq!(checkout.command, "uses: actions/checkout@v4");
        assert_eq!(checkout.outcome, Conclusion::Success);
        assert_eq!(checkout.log_tail, "");
        assert_eq!(checkout.timestamp, UNIX_EPOCH + Duration::from_secs(3));

        let lint = &records[1];
        assert_eq!(
            lint.outcome,
            Conclusion::Failure,
            "continue-on-error does not hide the failure"
        );
        assert_eq!(lint.exit_code, Some(2));
        assert_eq!(lint.log_tail, "src/a.js: 3 problems");

        let test = &records[2];
        assert_eq!(test.command, "npm test");
        assert_eq!(test.exit_code, Some(1));
        assert_eq!(
            test.log_tail,
            "running 12 tests\nError: Cannot find module 'x'\nerror: Process completed with exit code 1."
        );
        assert_eq!(
            (test.run_id.as_str(), test.repository.as_str()),
            ("42", "octo/app")
        );
        assert_eq!(
            (
                test.commit_sha.as_str(),
                test.workflow.as_str(),
                test.job.as_str()
            ),
            ("abc123", "CI", "test (18)")
        );
        assert_eq!(test.duration, Duration::from_millis(1500));
        assert_eq!(test.timestamp, UNIX_EPOCH + Duration::from_millis(8_500));
    }

    #[test]
    fn tails_keep_the_last_lines_and_silent_steps_use_the_job_end() {
        let report = report();
        let mut log: Vec<LogLine> = (0..DEFAULT_TAIL_LINES + 20)
            .map(|n| {
                line(
                    3,
                    LogStream::Stdout,
                    &format!("line {n}"),
                    10_000 + n as u64,
                )
            })
            .collect();
        log.insert(0, line(3, LogStream::Runner, "##[step] test", 9_999));
        let records = step_records(&finished(&report, &log));
        let tail: Vec<&str> = records[2].log_tail.lines().collect();
        assert_eq!(tail.len(), DEFAULT_TAIL_LINES);
        assert_eq!(tail[0], "line 20");
        assert_eq!(
            tail.last().copied(),
            Some(format!("line {}", DEFAULT_TAIL_LINES + 19).as_str())
        );
        assert_eq!(records[1].log_tail, "", "lint wrote nothing");
        assert_eq!(
            records[1].timestamp,
            UNIX_EPOCH + Duration::from_secs(9_000)
        );
    }

    const WORKFLOW: &str = r#"
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - name: soft
        continue-on-error: true
        run: exit 3
      - uses: docker://alpine:3
        continue-on-error: true
      - name: leak
        run: |
          echo "token ${{ secrets.TOKEN }}"
          echo "boom: it broke" >&2
          exit 1
      - run: echo never
      - if: failure()
        run: echo recovered
"#;

    /// A real job run by the guest agent on the host (over a socket pair):
    /// the engine fills each step's command and exit code, and the adapter
    /// turns the report and the stored log into records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_job_run_by_the_agent_becomes_records() {
        use crate::job::{run_job, GuestLayout, JobEnvironment, JobToRun};
        use crate::logs::LogHub;
        use crate::sandbox::Sandbox;
        use std::collections::BTreeMap;
        use std::os::unix::net::UnixStream;
        use std::process::{Command, Stdio};
        use tokio_util::sync::CancellationToken;

        let (host, guest) = UnixStream::pair().unwrap();
        let mut agent = Command::new(firerunner_vm::testing::agent_binary())
            .arg("--stdio")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                guest.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(guest)))
            .spawn()
            .unwrap();
        host.set_nonblocking(true).unwrap();
        let client = firerunner_agent_proto::Client::connect(
            tokio::net::UnixStream::from_std(host).unwrap(),
        )
        .await
        .unwrap();
        let sandbox = Sandbox::new(client);

        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let layout = GuestLayout {
            home: path("home"),
            workspace: path("work/app/app"),
            temp: path("work/_temp"),
            tool_cache: path("tools"),
        };
        let secrets = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let environment = JobEnvironment {
            run_id: "run-7".into(),
            secrets: secrets.clone(),
            default_env: BTreeMap::from([(
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            )]),
            layout,
            checkout: None,
            artifacts: None,
            cache: None,
            actions: crate::actions::remote::ActionSource {
                base_url: "file:///nonexistent".into(),
                cache_dir: dir.path().join("actions"),
                offline: false,
            },
        };
        let workflow = firerunner_workflow::load::parse_workflow("ci.yml", WORKFLOW)
            .unwrap_or_else(|d| panic!("{d}"));
        let hub = LogHub::new(&dir.path().join("logs"));
        let mut writer = hub.job_writer("run-7", "test").unwrap();
        let report = run_job(
            &sandbox,
            &environment,
            JobToRun {
                workflow: &workflow,
                secrets: &secrets,
            },
            "test",
            "test",
            &Object::new(),
            &mut writer,
            &CancellationToken::new(),
        )
        .await;
        drop(sandbox);
        let _ = agent.kill();
        let _ = agent.wait();

        let log = hub.read("run-7", "test").unwrap();
        let dump: Vec<&str> = log.iter().map(|line| line.text.as_str()).collect();
        let steps: Vec<(&str, Conclusion, Option<i32>)> = report
            .steps
            .iter()
            .map(|step| (step.command.as_str(), step.outcome, step.exit_code))
            .collect();
        assert_eq!(
            steps,
            [
                ("exit 3", Conclusion::Failure, Some(3)),
                ("uses: docker://alpine:3", Conclusion::Failure, None),
                (
                    "echo \"token ***\"\necho \"boom: it broke\" >&2\nexit 1\n",
                    Conclusion::Failure,
                    Some(1)
                ),
                ("echo never", Conclusion::Skipped, None),
                ("echo recovered", Conclusion::Success, Some(0)),
            ],
            "{dump:?}"
        );

        let finished = FinishedJob {
            run_id: "run-7",
            repository: "octo/app",
            commit_sha: "abc",
            workflow: "CI",
            job: "test",
            report: &report,
            log: &log,
            finished_at: SystemTime::now(),
        };
        let indices: Vec<usize> = indexed_step_records(&finished)
            .iter()
            .map(|(index, _)| *index)
            .collect();
        assert_eq!(indices, [0, 1, 2, 4], "the skipped step has no record");
        let records = step_records(&finished);
        let outcomes: Vec<(&str, Conclusion)> = records
            .iter()
            .map(|record| (record.step_name.as_str(), record.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("soft", Conclusion::Failure),
                ("Run docker://alpine:3", Conclusion::Failure),
                ("leak", Conclusion::Failure),
                ("Run echo recovered", Conclusion::Success),
            ]
        );
        let leak = &records[2];
        assert!(leak.log_tail.contains("token ***"), "{}", leak.log_tail);
        assert!(
            leak.log_tail.contains("boom: it broke"),
            "{}",
            leak.log_tail
        );
        assert!(!leak.log_tail.contains("s3cret"));
        assert!(!leak.log_tail.contains("##[step]"));
        assert!(records[1]
            .log_tail
            .contains("docker actions are not supported"));
    }

    #[test]
    fn a_job_without_steps_gives_no_records() {
        let report = JobReport {
            result: Conclusion::Failure,
            outputs: Object::new(),
            steps: Vec::new(),
            summary: String::new(),
            environment_url: None,
        };
        assert!(step_records(&finished(&report, &[])).is_empty());
    }
}
