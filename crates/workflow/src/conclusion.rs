//! How a step or a job ended.

use std::fmt;

/// How a step or a job ended, with the names GitHub uses in `steps.<id>.outcome`,
/// `steps.<id>.conclusion`, `needs.<job>.result` and `job.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conclusion {
    /// It succeeded (a job: every step passed or failed with continue-on-error).
    Success,
    /// It failed.
    Failure,
    /// It was cancelled before it finished.
    Cancelled,
    /// Its `if:` was false (a job: or a job it needs did not succeed).
    Skipped,
}

impl Conclusion {
    /// `success`, `failure`, `cancelled` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Conclusion;

    #[test]
    fn names_are_the_ones_github_uses() {
        let names: Vec<&str> = [
            Conclusion::Success,
            Conclusion::Failure,
            Conclusion::Cancelled,
            Conclusion::Skipped,
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(names, ["success", "failure", "cancelled", "skipped"]);
        assert_eq!(Conclusion::Failure.to_string(), "failure");
    }
}
