//! What goes back to GitHub: a commit status per job and one pull request
//! comment per pull request, rendered from the store and edited in place.

use std::time::Duration;

use firerunner_github::api::{CommitStatus, RepoRef, StatusState};
use serde::Deserialize;

use crate::state::AppState;
use crate::store::{JobRecord, JobState, RunRecord, RunState};

/// The hidden marker that identifies firerunner's comment on a pull request.
pub const COMMENT_MARKER: &str = "<!-- firerunner:pull-request-report -->";

/// GitHub refuses comments longer than this (characters).
const MAX_COMMENT: usize = 65_000;

/// A step as stored in a job's `steps` JSON.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct StepRecord {
    /// The step's display name.
    pub name: String,
    /// `success`, `failure`, `skipped` or `cancelled`.
    pub conclusion: String,
    /// How long it ran.
    pub duration_ms: u64,
}

/// The commit status context of a job: `firerunner/CI/build (linux)`.
pub fn status_context(prefix: &str, workflow: &str, job: &str) -> String {
    format!("{prefix}/{workflow}/{job}")
}

/// The dashboard page of a job's log.
pub fn job_url(public_url: &str, run_id: &str, job: &str) -> String {
    format!(
        "{}/runs/{}/jobs/{}",
        public_url.trim_end_matches('/'),
        run_id,
        percent_encode(job)
    )
}

/// Encodes everything but unreserved URL characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A status for a job in a given state (`pending` while it runs or waits).
pub fn job_status(
    prefix: &str,
    public_url: &str,
    run: &RunRecord,
    job: &str,
    conclusion: Option<&str>,
    duration: Option<Duration>,
) -> CommitStatus {
    let (state, description) = match conclusion {
        None => (StatusState::Pending, "Waiting for a microVM".to_string()),
        Some("success") => (
            StatusState::Success,
            format!("Passed in {}", duration.map_or("-".into(), human_duration)),
        ),
        Some("skipped") => (StatusState::Success, "Skipped".to_string()),
        Some("cancelled") => (StatusState::Error, "Cancelled".to_string()),
        Some(other) => (
            StatusState::Failure,
            format!(
                "{} after {}",
                capitalized(other),
                duration.map_or("-".into(), human_duration)
            ),
        ),
    };
    CommitStatus {
        state,
        context: status_context(prefix, &run.run.workflow_name, job),
        description: truncate(&description, 140),
        target_url: Some(job_url(public_url, &run.run.id, job)),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `1m 12s`, `34s`, `0.4s`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else if secs >= 10 {
        format!("{secs}s")
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn icon(conclusion: Option<&str>, running: bool) -> &'static str {
    match (conclusion, running) {
        (Some("success"), _) => "✅",
        (Some("failure"), _) => "❌",
        (Some("cancelled"), _) => "🚫",
        (Some("skipped"), _) => "⏭️",
        (Some(_), _) => "⚠️",
        (None, true) => "⏳",
        (None, _) => "🕒",
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A fenced block whose fence is longer than any backtick run inside.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}", text.trim_end())
}

/// What the comment is made of.
#[derive(Debug, Clone, Copy)]
pub struct CommentInput<'a> {
    /// The pull request's head commit.
    pub sha: &'a str,
    /// Its runs with their jobs, oldest first.
    pub runs: &'a [(RunRecord, Vec<JobRecord>)],
    /// Base of links to the dashboard.
    pub public_url: &'a str,
}

/// Renders the pull request comment: a headline, a table of jobs, the
/// failing steps' last log lines, hints, and the step summaries.
pub fn render_comment(input: CommentInput<'_>) -> String {
    let short_sha = &input.sha[..input.sha.len().min(7)];
    let mut comment = Comment {
        public_url: input.public_url,
        out: format!(
            "{COMMENT_MARKER}\n## firerunner: {} · `{short_sha}`\n\n| Workflow | Job | Result | Duration |\n| --- | --- | --- | --- |\n",
            headline(input.runs)
        ),
        failures: String::new(),
        summaries: String::new(),
    };
    for (run, jobs) in input.runs {
        if jobs.is_empty() {
            comment.run_without_jobs(run);
        }
        for job in jobs {
            comment.job(run, job);
        }
    }
    comment.finish()
}

/// The comment's counts of failed, passed and pending jobs.
fn headline(runs: &[(RunRecord, Vec<JobRecord>)]) -> String {
    let (mut passed, mut failed, mut pending) = (0, 0, 0);
    for (run, jobs) in runs {
        if jobs.is_empty() && run.state != RunState::Completed {
            pending += 1;
        }
        for job in jobs {
            match job.conclusion.as_deref() {
                Some("success") | Some("skipped") => passed += 1,
                Some(_) => failed += 1,
                None => pending += 1,
            }
        }
    }
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!("❌ {failed} failed"));
    }
    if passed > 0 {
        parts.push(format!("✅ {passed} passed"));
    }
    if pending > 0 {
        parts.push(format!("⏳ {pending} in progress"));
    }
    if parts.is_empty() {
        parts.push("nothing ran".into());
    }
    parts.join(", ")
}

/// The comment as it is written: its table, then its failures and summaries.
struct Comment<'a> {
    public_url: &'a str,
    /// The headline and the table so far.
    out: String,
    failures: String,
    summaries: String,
}

impl Comment<'_> {
    /// A table row for a run with no jobs yet (or none that ran).
    fn run_without_jobs(&mut self, run: &RunRecord) {
        let workflow = cell(&run.run.workflow_name);
        let running = run.state == RunState::Running;
        let result = match run.conclusion.as_deref() {
            Some(conclusion) => format!("{} {conclusion}", icon(Some(conclusion), running)),
            None => format!("{} {}", icon(None, running), run.state),
        };
        let note = run
            .note
            .as_deref()
            .map(|n| format!(" ({})", cell(n)))
            .unwrap_or_default();
        self.out
            .push_str(&format!("| {workflow} | –{note} | {result} | – |\n"));
    }

    /// A job's row, its failure and its summary.
    fn job(&mut self, run: &RunRecord, job: &JobRecord) {
        let url = job_url(self.public_url, &run.run.id, &job.name);
        let duration = match (job.started_at, job.finished_at) {
            (Some(start), Some(end)) if end >= start => {
                human_duration(Duration::from_millis((end - start) as u64))
            }
            _ => "–".into(),
        };
        let running = job.state == JobState::Running;
        let result = match job.conclusion.as_deref() {
            Some(conclusion) => format!("{} {conclusion}", icon(Some(conclusion), running)),
            None => format!("{} {}", icon(None, running), job.state),
        };
        self.out.push_str(&format!(
            "| {} | [{}]({url}) | {result} | {duration} |\n",
            cell(&run.run.workflow_name),
            cell(&job.name)
        ));
        if matches!(job.conclusion.as_deref(), Some("failure")) {
            self.failure(run, job);
        }
        if !job.summary.trim().is_empty() {
            self.summaries.push_str(&format!(
                "<details><summary>{} / {}</summary>\n\n{}\n\n</details>\n",
                run.run.workflow_name,
                job.name,
                job.summary.trim_end()
            ));
        }
    }

    /// A failed job's failing step, last log lines and hints.
    fn failure(&mut self, run: &RunRecord, job: &JobRecord) {
        let failures = &mut self.failures;
        let steps: Vec<StepRecord> = serde_json::from_str(&job.steps).unwrap_or_default();
        let failing = steps.iter().find(|s| s.conclusion == "failure");
        failures.push_str(&format!(
            "\n### ❌ {} / {}\n",
            run.run.workflow_name, job.name
        ));
        if let Some(step) = failing {
            failures.push_str(&format!("Failing step: **{}**\n", step.name));
        }
        if !job.log_tail.trim().is_empty() {
            failures.push_str(&format!(
                "<details><summary>Last log lines</summary>\n\n{}\n\n</details>\n",
                fenced(&job.log_tail)
            ));
        }
        let hints: Vec<&str> = job.hints.lines().filter(|h| !h.trim().is_empty()).collect();
        if !hints.is_empty() {
            failures.push_str("\n💡 What firerunner has seen before:\n");
            for hint in hints {
                failures.push_str(&format!("- {hint}\n"));
            }
        }
    }

    /// The whole comment, cut to GitHub's size.
    fn finish(self) -> String {
        let mut out = self.out;
        out.push_str(&self.failures);
        if !self.summaries.is_empty() {
            out.push_str("\n### Step summaries\n");
            out.push_str(&self.summaries);
        }
        if out.chars().count() > MAX_COMMENT {
            out = truncate(&out, MAX_COMMENT - 200);
            out.push_str(
                "\n\n(cut to fit GitHub's comment size; the full logs are on the dashboard)\n",
            );
        }
        out
    }
}

/// The repository reference of a run, for API calls.
pub fn repo_of(run: &RunRecord, installation_id: Option<i64>) -> Option<RepoRef> {
    RepoRef::parse(&run.run.repository, installation_id.map(|id| id as u64))
}

/// Posts a job's status; failures are recorded, never fatal.
pub async fn post_job_status(
    state: &AppState,
    run: &RunRecord,
    installation_id: Option<i64>,
    job: &str,
    conclusion: Option<&str>,
    duration: Option<Duration>,
) {
    let Some(github) = &state.github else { return };
    let Some(repo) = repo_of(run, installation_id) else {
        return;
    };
    let status = job_status(
        &state.config.github.status_context,
        &state.config.public_url,
        run,
        job,
        conclusion,
        duration,
    );
    if let Err(err) = github
        .create_commit_status(&repo, &run.run.sha, &status)
        .await
    {
        state
            .report_error(
                "status",
                &format!("{} {}: {err}", run.run.repository, status.context),
            )
            .await;
    }
}

/// Re-renders and writes the pull request comment of `run`'s pull request.
pub async fn update_pull_request_comment(
    state: &AppState,
    run: &RunRecord,
    installation_id: Option<i64>,
) {
    let (Some(github), Some(number)) = (&state.github, run.run.pr_number) else {
        return;
    };
    let Some(repo) = repo_of(run, installation_id) else {
        return;
    };
    let runs = match state
        .store
        .runs_of_pull_request(&run.run.repository, number, &run.run.sha)
        .await
    {
        Ok(runs) => runs,
        Err(err) => {
            state.report_error("comment", &err.to_string()).await;
            return;
        }
    };
    let mut with_jobs = Vec::with_capacity(runs.len());
    for run in runs {
        let jobs = state.store.jobs(&run.run.id).await.unwrap_or_default();
        with_jobs.push((run, jobs));
    }
    let body = render_comment(CommentInput {
        sha: &run.run.sha,
        runs: &with_jobs,
        public_url: &state.config.public_url,
    });
    if let Err(err) = github
        .upsert_pull_request_comment(&repo, number as u64, COMMENT_MARKER, &body)
        .await
    {
        state
            .report_error(
                "comment",
                &format!("{}#{number}: {err}", run.run.repository),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewRun;

    fn run(id: &str, workflow: &str) -> RunRecord {
        RunRecord {
            run: NewRun {
                id: id.into(),
                delivery_id: "d".into(),
                repository: "octo/app".into(),
                sha: "0123456789abcdef".into(),
                git_ref: "refs/pull/7/merge".into(),
                workflow_file: ".github/workflows/ci.yml".into(),
                workflow_name: workflow.into(),
                event: "pull_request".into(),
                pr_number: Some(7),
                ..NewRun::default()
            },
            state: RunState::Running,
            conclusion: None,
            attempts: 1,
            lease_owner: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            note: None,
        }
    }

    fn job(
        name: &str,
        conclusion: Option<&str>,
        steps: &str,
        tail: &str,
        summary: &str,
    ) -> JobRecord {
        JobRecord {
            run_id: "r1".into(),
            name: name.into(),
            state: if conclusion.is_some() {
                JobState::Completed
            } else {
                JobState::Running
            },
            conclusion: conclusion.map(str::to_string),
            worker: None,
            started_at: Some(1_000),
            finished_at: conclusion.map(|_| 73_000),
            steps: steps.into(),
            summary: summary.into(),
            log_tail: tail.into(),
            hints: String::new(),
            environment: None,
            environment_url: None,
        }
    }

    #[test]
    fn the_comment_has_a_table_the_failing_step_its_log_hints_and_summaries() {
        let runs = vec![
            (
                run("r1", "CI"),
                vec![
                    job(
                        "build (linux)",
                        Some("success"),
                        "[]",
                        "",
                        "### Coverage 91%",
                    ),
                    JobRecord {
                        hints: "Run tests: known failure, seen 3 time(s) here: test a failed"
                            .into(),
                        ..job(
                            "test | unit",
                            Some("failure"),
                            r#"[{"name":"Set up","conclusion":"success","duration_ms":5},{"name":"Run tests","conclusion":"failure","duration_ms":900}]"#,
                            "test a ... FAILED\n```oops```",
                            "",
                        )
                    },
                    job("lint", None, "[]", "", ""),
                ],
            ),
            (
                RunRecord {
                    state: RunState::Queued,
                    ..run("r2", "Docs")
                },
                vec![],
            ),
        ];
        let body = render_comment(CommentInput {
            sha: "0123456789abcdef",
            runs: &runs,
            public_url: "https://ci.example.com/",
        });
        assert!(body.starts_with(COMMENT_MARKER));
        assert!(
            body.contains("## firerunner: ❌ 1 failed, ✅ 1 passed, ⏳ 2 in progress · `0123456`"),
            "{body}"
        );
        assert!(body.contains("| CI | [build (linux)](https://ci.example.com/runs/r1/jobs/build%20%28linux%29) | ✅ success | 1m 12s |"), "{body}");
        assert!(
            body.contains("[test \\| unit]"),
            "pipes are escaped: {body}"
        );
        assert!(
            body.contains(
                "| CI | [lint](https://ci.example.com/runs/r1/jobs/lint) | ⏳ running | – |"
            ),
            "{body}"
        );
        assert!(body.contains("| Docs | – | 🕒 queued | – |"), "{body}");
        assert!(body.contains("Failing step: **Run tests**"));
        assert!(
            body.contains("````text\ntest a ... FAILED\n```oops```\n````"),
            "{body}"
        );
        assert!(body.contains(
            "💡 What firerunner has seen before:\n- Run tests: known failure, seen 3 time(s) here: test a failed"
        ));
        assert!(body.contains("<details><summary>CI / build (linux)</summary>\n\n### Coverage 91%"));
    }

    #[test]
    fn statuses_say_what_happened_within_githubs_limits() {
        let record = run("r1", "CI");
        let status = job_status(
            "firerunner",
            "http://h",
            &record,
            "build",
            Some("failure"),
            Some(Duration::from_secs(75)),
        );
        assert_eq!(status.context, "firerunner/CI/build");
        assert_eq!(status.description, "Failure after 1m 15s");
        assert_eq!(
            status.target_url.as_deref(),
            Some("http://h/runs/r1/jobs/build")
        );
        assert!(matches!(status.state, StatusState::Failure));
        let pending = job_status(
            "firerunner",
            "http://h",
            &record,
            &"x".repeat(300),
            None,
            None,
        );
        assert!(matches!(pending.state, StatusState::Pending));
        let long = job_status("p", "h", &record, "j", Some(&"y".repeat(300)), None);
        assert_eq!(long.description.chars().count(), 140);
    }

    #[test]
    fn a_huge_comment_is_cut_to_fit() {
        let runs = vec![(
            run("r1", "CI"),
            vec![job("j", Some("success"), "[]", "", &"x".repeat(100_000))],
        )];
        let body = render_comment(CommentInput {
            sha: "abc",
            runs: &runs,
            public_url: "h",
        });
        assert!(body.chars().count() <= MAX_COMMENT);
        assert!(body
            .ends_with("(cut to fit GitHub's comment size; the full logs are on the dashboard)\n"));
    }
}
