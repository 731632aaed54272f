//! Where a secret or variable lives (an organization, a repository, or one
//! of its environments) and GitHub's rules for their names, sizes and
//! counts.

use std::fmt;

/// A secret's or variable's scope. Owners, repositories and environment
/// names are case-insensitive on GitHub, so the stored key is lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every repository of an owner (`org:octo`).
    Organization(String),
    /// One repository (`repo:octo/app`).
    Repository(String),
    /// One environment of a repository (`env:octo/app:production`).
    Environment {
        /// `owner/name`.
        repository: String,
        /// The environment's name.
        name: String,
    },
}

/// Why a scope is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Neither or both of organization and repository.
    #[error("name exactly one of organization or repository (environment needs repository)")]
    Ambiguous,
    /// An owner that GitHub would not allow.
    #[error("organization {0:?}: an owner is 1 to 39 letters, digits or hyphens")]
    Owner(String),
    /// Not `owner/name`.
    #[error("repository {0:?}: expected owner/name")]
    Repository(String),
    /// An empty, overlong or control-character environment name.
    #[error("environment {0:?}: a name is 1 to 255 characters, without control characters")]
    Environment(String),
    /// A stored key this version does not read.
    #[error("unknown scope {0:?}")]
    Unknown(String),
}

fn check_owner(owner: &str) -> Result<String, ScopeError> {
    let ok = (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| owner.to_ascii_lowercase())
        .ok_or_else(|| ScopeError::Owner(owner.into()))
}

fn check_repository(full_name: &str) -> Result<String, ScopeError> {
    let bad = || ScopeError::Repository(full_name.into());
    let (owner, name) = full_name.split_once('/').ok_or_else(bad)?;
    let owner = check_owner(owner).map_err(|_| bad())?;
    let name_ok = (1..=100).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    name_ok
        .then(|| format!("{owner}/{}", name.to_ascii_lowercase()))
        .ok_or_else(bad)
}

fn check_environment(name: &str) -> Result<String, ScopeError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 255
        && !name.chars().any(char::is_control);
    ok.then(|| name.to_lowercase())
        .ok_or_else(|| ScopeError::Environment(name.into()))
}

impl Scope {
    /// The scope named by an API query or the CLI's flags: an organization,
    /// or a repository with or without an environment.
    pub fn from_parts(
        organization: Option<&str>,
        repository: Option<&str>,
        environment: Option<&str>,
    ) -> Result<Scope, ScopeError> {
        match (organization, repository, environment) {
            (Some(org), None, None) => Ok(Scope::Organization(check_owner(org)?)),
            (None, Some(repo), None) => Ok(Scope::Repository(check_repository(repo)?)),
            (None, Some(repo), Some(env)) => Ok(Scope::Environment {
                repository: check_repository(repo)?,
                name: check_environment(env)?,
            }),
            _ => Err(ScopeError::Ambiguous),
        }
    }

    /// The scope of a stored key (see [`Scope::key`]).
    pub fn parse_key(key: &str) -> Result<Scope, ScopeError> {
        let unknown = || ScopeError::Unknown(key.into());
        if let Some(org) = key.strip_prefix("org:") {
            return Scope::from_parts(Some(org), None, None).map_err(|_| unknown());
        }
        if let Some(repo) = key.strip_prefix("repo:") {
            return Scope::from_parts(None, Some(repo), None).map_err(|_| unknown());
        }
        let rest = key.strip_prefix("env:").ok_or_else(unknown)?;
        let (repo, env) = rest.split_once(':').ok_or_else(unknown)?;
        Scope::from_parts(None, Some(repo), Some(env)).map_err(|_| unknown())
    }

    /// The stored key: `org:octo`, `repo:octo/app`, `env:octo/app:production`.
    pub fn key(&self) -> String {
        match self {
            Scope::Organization(owner) => format!("org:{owner}"),
            Scope::Repository(repo) => format!("repo:{repo}"),
            Scope::Environment { repository, name } => format!("env:{repository}:{name}"),
        }
    }

    /// `organization`, `repository` or `environment`.
    pub fn level(&self) -> &'static str {
        match self {
            Scope::Organization(_) => "organization",
            Scope::Repository(_) => "repository",
            Scope::Environment { .. } => "environment",
        }
    }

    /// The scopes a run of `repository` reads, widest first (later ones win):
    /// its owner's, its own.
    pub fn of_run(repository: &str) -> Result<Vec<Scope>, ScopeError> {
        let repository = check_repository(repository)?;
        let owner = repository.split('/').next().unwrap_or_default().to_string();
        Ok(vec![
            Scope::Organization(owner),
            Scope::Repository(repository),
        ])
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Organization(owner) => write!(f, "organization {owner}"),
            Scope::Repository(repo) => write!(f, "repository {repo}"),
            Scope::Environment { repository, name } => {
                write!(f, "environment {name} of {repository}")
            }
        }
    }
}

/// Secrets or variables: the same names and scopes, different limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// Encrypted, never shown again.
    Secret,
    /// Plain configuration (`vars`).
    Variable,
}

/// Why a name is not a valid secret or variable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No name at all.
    #[error("a name is required")]
    Empty,
    /// A character other than a letter, digit or underscore.
    #[error("{name:?}: only letters, digits and underscores are allowed (not {character:?})")]
    Character {
        /// The name.
        name: String,
        /// The first character refused.
        character: char,
    },
    /// Starts with a digit.
    #[error("{0:?}: a name must not start with a digit")]
    Digit(String),
    /// Starts with `GITHUB_`.
    #[error("{0:?}: names starting with GITHUB_ are reserved")]
    Reserved(String),
    /// Longer than [`MAX_NAME_LEN`].
    #[error("{0:?}: a name is at most 255 characters")]
    TooLong(String),
}

/// Longest name accepted (GitHub documents none; this bounds the input).
pub const MAX_NAME_LEN: usize = 255;

impl SettingKind {
    /// `secret` or `variable`.
    pub fn noun(self) -> &'static str {
        match self {
            SettingKind::Secret => "secret",
            SettingKind::Variable => "variable",
        }
    }

    /// GitHub's limit on one value: 48 KB.
    pub fn max_value_bytes(self) -> usize {
        48 * 1024
    }

    /// GitHub's limit on how many a scope holds.
    pub fn max_count(self, scope: &Scope) -> usize {
        match (self, scope) {
            (_, Scope::Organization(_)) => 1000,
            (SettingKind::Secret, Scope::Repository(_)) => 100,
            (SettingKind::Variable, Scope::Repository(_)) => 500,
            (_, Scope::Environment { .. }) => 100,
        }
    }

    /// `name` upper-cased when it follows GitHub's rules: letters, digits
    /// and underscores, not starting with a digit or `GITHUB_`
    /// (case-insensitive).
    pub fn check_name(self, name: &str) -> Result<String, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(character) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(NameError::Character {
                name: name.into(),
                character,
            });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.into()));
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(NameError::Digit(name.into()));
        }
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("GITHUB_") {
            return Err(NameError::Reserved(name.into()));
        }
        Ok(upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_githubs_rules_and_are_upper_cased() {
        let kind = SettingKind::Secret;
        assert_eq!(
            kind.check_name("docker_Password2").unwrap(),
            "DOCKER_PASSWORD2"
        );
        assert_eq!(kind.check_name("_x").unwrap(), "_X");
        assert!(matches!(kind.check_name(""), Err(NameError::Empty)));
        assert!(matches!(
            kind.check_name("a-b"),
            Err(NameError::Character { character: '-', .. })
        ));
        assert!(matches!(
            kind.check_name("a b"),
            Err(NameError::Character { .. })
        ));
        assert!(matches!(
            kind.check_name("é"),
            Err(NameError::Character { .. })
        ));
        assert!(matches!(kind.check_name("1ST"), Err(NameError::Digit(_))));
        assert!(matches!(
            kind.check_name("github_token"),
            Err(NameError::Reserved(_))
        ));
        assert!(kind.check_name("GITHUBTOKEN").is_ok());
        assert!(matches!(
            kind.check_name(&"A".repeat(256)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn scopes_round_trip_through_their_keys_in_lower_case() {
        let env = Scope::from_parts(None, Some("Octo/App"), Some("Production")).unwrap();
        assert_eq!(env.key(), "env:octo/app:production");
        assert_eq!(Scope::parse_key(&env.key()).unwrap(), env);
        let org = Scope::from_parts(Some("octo-org"), None, None).unwrap();
        assert_eq!(Scope::parse_key("org:octo-org").unwrap(), org);
        assert_eq!(
            Scope::from_parts(Some("o"), Some("o/r"), None),
            Err(ScopeError::Ambiguous)
        );
        assert_eq!(
            Scope::from_parts(None, None, Some("e")),
            Err(ScopeError::Ambiguous)
        );
        assert!(Scope::from_parts(None, Some("octo"), None).is_err());
        assert!(Scope::from_parts(None, Some("octo/.."), None).is_err());
        assert!(Scope::from_parts(Some("bad owner"), None, None).is_err());
        assert!(Scope::from_parts(None, Some("o/r"), Some("a\nb")).is_err());
        assert_eq!(
            Scope::of_run("Octo/App").unwrap(),
            [
                Scope::Organization("octo".into()),
                Scope::Repository("octo/app".into())
            ]
        );
    }

    #[test]
    fn limits_are_githubs() {
        let repo = Scope::Repository("o/r".into());
        assert_eq!(SettingKind::Secret.max_count(&repo), 100);
        assert_eq!(SettingKind::Variable.max_count(&repo), 500);
        assert_eq!(
            SettingKind::Secret.max_count(&Scope::Organization("o".into())),
            1000
        );
        assert_eq!(SettingKind::Secret.max_value_bytes(), 49152);
    }
}
