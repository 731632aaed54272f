//! The functions GitHub documents, resolved at parse time.

use crate::value::same_exact;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `contains(search, item)`.
    Contains,
    /// `startsWith(text, prefix)`.
    StartsWith,
    /// `endsWith(text, suffix)`.
    EndsWith,
    /// `format(fmt, args...)`.
    Format,
    /// `join(array, separator?)`.
    Join,
    /// `toJSON(value)`.
    ToJson,
    /// `fromJSON(text)`.
    FromJson,
    /// `hashFiles(patterns...)`.
    HashFiles,
    /// `case(pred, value, ..., default)`.
    Case,
    /// `success()`.
    Success,
    /// `always()`.
    Always,
    /// `cancelled()`.
    Cancelled,
    /// `failure()`.
    Failure,
}

const ALL: [(&str, Function); 13] = [
    ("contains", Function::Contains),
    ("startsWith", Function::StartsWith),
    ("endsWith", Function::EndsWith),
    ("format", Function::Format),
    ("join", Function::Join),
    ("toJSON", Function::ToJson),
    ("fromJSON", Function::FromJson),
    ("hashFiles", Function::HashFiles),
    ("case", Function::Case),
    ("success", Function::Success),
    ("always", Function::Always),
    ("cancelled", Function::Cancelled),
    ("failure", Function::Failure),
];

impl Function {
    /// Finds a function by name, ignoring ASCII case.
    pub fn lookup(name: &str) -> Option<Function> {
        // The documented spelling is the usual one: try it first.
        ALL.iter()
            .find(|(n, _)| same_exact(n, name))
            .or_else(|| ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, f)| *f)
    }

    /// The documented spelling of the name.
    pub fn name(self) -> &'static str {
        ALL.iter().find(|(_, f)| *f == self).map_or("", |(n, _)| n)
    }

    /// Minimum and maximum number of arguments.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Function::Contains | Function::StartsWith | Function::EndsWith => (2, 2),
            Function::Format | Function::HashFiles => (1, usize::MAX),
            Function::Join => (1, 2),
            Function::ToJson | Function::FromJson => (1, 1),
            Function::Case => (3, usize::MAX),
            Function::Success | Function::Always | Function::Cancelled | Function::Failure => {
                (0, 0)
            }
        }
    }

    /// True for the job-status functions, which only `if:` conditions may use.
    pub fn is_status(self) -> bool {
        matches!(
            self,
            Function::Success | Function::Always | Function::Cancelled | Function::Failure
        )
    }
}
