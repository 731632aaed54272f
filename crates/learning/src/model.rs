//! The values the coordinator and the store share: the steps recorded, where a step runs,
//! lessons, their fixes and flaky steps. The answers serialize to the JSON that
//! `firerunner learn --json` prints.

use crate::signature::ErrorSignature;
use firerunner_workflow::Conclusion;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One executed step, as reported by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// Identifier of the workflow run.
    pub run_id: String,
    /// Repository (`owner/name`).
    pub repository: String,
    /// Commit the run built.
    pub commit_sha: String,
    /// Workflow name or file.
    pub workflow: String,
    /// Job id (with its matrix values when it has some).
    pub job: String,
    /// Step name.
    pub step_name: String,
    /// The step's command or script.
    pub command: String,
    /// Outcome.
    pub outcome: Conclusion,
    /// Exit code when the step was a process.
    pub exit_code: Option<i32>,
    /// How long the step took.
    pub duration: Duration,
    /// The end of the step's log.
    pub log_tail: String,
    /// When the step finished.
    pub timestamp: SystemTime,
}

impl StepRecord {
    pub(crate) fn location(&self) -> StepLocation {
        StepLocation {
            repository: self.repository.clone(),
            workflow: self.workflow.clone(),
            job: self.job.clone(),
            step_name: self.step_name.clone(),
        }
    }
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct StepLocation {
    /// Repository.
    pub repository: String,
    /// Workflow.
    pub workflow: String,
    /// Job.
    pub job: String,
    /// Step name.
    #[serde(rename = "step")]
    pub step_name: String,
}

impl std::fmt::Display for StepLocation {
    /// `repository workflow/job/step`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}/{}",
            self.repository, self.workflow, self.job, self.step_name
        )
    }
}

/// The change after which a failing step passed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixedBy {
    /// The first commit at which the step passed after failing.
    #[serde(rename = "commit")]
    pub commit_sha: String,
    /// The step's new normalised command, when the command changed too.
    pub command: Option<String>,
}

/// A repeated failure: one signature at one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lesson {
    /// How many failures carried the signature there.
    pub count: u64,
    /// The error signature.
    #[serde(flatten, serialize_with = "signature_fields")]
    pub signature: ErrorSignature,
    /// Where it failed.
    pub location: StepLocation,
    /// Normalised command of the latest failure.
    pub command: String,
    /// First failure.
    #[serde(rename = "first_seen_ms", serialize_with = "unix_millis")]
    pub first_seen: SystemTime,
    /// Latest failure.
    #[serde(rename = "last_seen_ms", serialize_with = "unix_millis")]
    pub last_seen: SystemTime,
    /// Commit of the latest failure.
    #[serde(rename = "last_commit")]
    pub last_commit_sha: String,
    /// True until the step passes at a later commit.
    pub still_failing: bool,
    /// What fixed it last, when known.
    pub fixed_by: Option<FixedBy>,
}

impl Lesson {
    /// Where the lesson stands: failing while the step still fails, even when an
    /// earlier commit had fixed it.
    pub fn status(&self) -> LessonStatus {
        match (self.still_failing, &self.fixed_by) {
            (true, _) => LessonStatus::Failing,
            (false, Some(fixed)) => LessonStatus::FixedIn(fixed.commit_sha.clone()),
            (false, None) => LessonStatus::Fixed,
        }
    }
}

/// Where a [`Lesson`] stands; shown as `failing`, `fixed in <short sha>` or `fixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LessonStatus {
    /// The step's latest run failed with the signature.
    Failing,
    /// The step passed again from this commit on.
    FixedIn(String),
    /// The step passed again; the commit is not known.
    Fixed,
}

impl std::fmt::Display for LessonStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LessonStatus::Failing => f.write_str("failing"),
            LessonStatus::FixedIn(commit) => write!(f, "fixed in {}", short_sha(commit)),
            LessonStatus::Fixed => f.write_str("fixed"),
        }
    }
}

/// A step that both passed and failed at the same commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlakyStep {
    /// Commits at which it both passed and failed.
    pub flaky_commits: u64,
    /// Where (the step name is the latest seen).
    pub location: StepLocation,
    /// Normalised command.
    pub command: String,
    /// The latest such commit.
    #[serde(rename = "last_commit")]
    pub last_commit_sha: String,
    /// When it was first seen flaky.
    #[serde(rename = "first_detected_ms", serialize_with = "unix_millis")]
    pub first_detected: SystemTime,
    /// When it was last seen flaky.
    #[serde(rename = "last_detected_ms", serialize_with = "unix_millis")]
    pub last_detected: SystemTime,
}

/// Totals and pattern counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LearningStats {
    /// Successful steps recorded.
    pub successes: u64,
    /// Failed steps recorded.
    pub failures: u64,
    /// Distinct normalised commands that succeeded at least once.
    pub unique_success_patterns: u64,
    /// Distinct (normalised command, error signature) failure pairs.
    pub unique_failure_patterns: u64,
    /// Lessons reported by [`crate::LearningCoordinator::lessons`].
    pub lessons: u64,
    /// Flaky steps.
    pub flaky_steps: u64,
}

/// The first seven characters of a commit id.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// `text` on one line (newlines shown as ⏎), cut to `max` characters with an ellipsis.
pub fn one_line(text: &str, max: usize) -> String {
    let single = text.replace('\n', " ⏎ ");
    if single.chars().count() <= max {
        single
    } else {
        let mut cut: String = single.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn unix_millis<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(to_millis(*time)).unwrap_or(0))
}

/// A lesson's signature as two fields of the lesson: `signature` (its text) and `signature_hash`.
fn signature_fields<S: Serializer>(
    signature: &ErrorSignature,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(2))?;
    map.serialize_entry("signature", &signature.text)?;
    map.serialize_entry("signature_hash", &signature.hash)?;
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesson(still_failing: bool, fixed_in: Option<&str>) -> Lesson {
        Lesson {
            count: 3,
            signature: ErrorSignature::from_text("error: boom"),
            location: StepLocation {
                repository: "octo/app".into(),
                workflow: "CI".into(),
                job: "test".into(),
                step_name: "unit".into(),
            },
            command: "npm test".into(),
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            last_commit_sha: "c5".into(),
            still_failing,
            fixed_by: fixed_in.map(|commit| FixedBy {
                commit_sha: commit.into(),
                command: None,
            }),
        }
    }

    #[test]
    fn a_failing_lesson_is_failing_whatever_fixed_it_before() {
        let again = lesson(true, Some("0123456789abcdef"));
        assert_eq!(again.status(), LessonStatus::Failing);
        assert_eq!(again.status().to_string(), "failing");
        assert_eq!(lesson(true, None).status().to_string(), "failing");
        let fixed = lesson(false, Some("0123456789abcdef"));
        assert_eq!(fixed.status().to_string(), "fixed in 0123456");
        assert_eq!(lesson(false, None).status().to_string(), "fixed");
    }
}
