//! The `vars` context of a run: GitHub's configuration variables (read
//! through the API where the App may, kept for `variables.ttl_seconds`)
//! under firerunner's own store. At each scope, firerunner's value wins over
//! GitHub's; a narrower scope wins over a wider one (environment over
//! repository over organization), as on GitHub.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_github::api::{ApiError, GitHubClient, RepoRef};

use crate::secrets::{SettingError, Settings};
use crate::vault::Scope;

/// Which of GitHub's listings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Listing {
    /// The organization's variables shared with the repository.
    Organization,
    /// The repository's.
    Repository,
    /// One environment's.
    Environment(String),
}

/// A listing's variables and when GitHub gave them.
type Cached = (Instant, Arc<BTreeMap<String, String>>);

/// GitHub's variables by repository and listing, each kept for a while.
#[derive(Debug)]
pub struct GitHubVariables {
    ttl: Duration,
    enabled: bool,
    cache: Mutex<HashMap<(String, Listing), Cached>>,
}

impl GitHubVariables {
    /// A cache keeping answers for `ttl`; `enabled` false asks GitHub nothing.
    pub fn new(enabled: bool, ttl: Duration) -> Self {
        Self {
            ttl,
            enabled,
            cache: Mutex::default(),
        }
    }

    /// One listing of `repo`, from the cache while it is fresh. A listing
    /// GitHub refuses (no *Variables: read* permission, 403/404) counts as
    /// empty and is kept like an answer; a transient failure is not kept.
    async fn listing(
        &self,
        github: &GitHubClient,
        repo: &RepoRef,
        listing: Listing,
    ) -> Arc<BTreeMap<String, String>> {
        if !self.enabled {
            return Arc::default();
        }
        let key = (repo.full_name().to_ascii_lowercase(), listing.clone());
        if let Some((at, found)) = self.cache.lock().expect("variables cache").get(&key) {
            if at.elapsed() < self.ttl {
                return found.clone();
            }
        }
        let answer = match &listing {
            Listing::Organization => github.organization_variables(repo).await,
            Listing::Repository => github.repository_variables(repo).await,
            Listing::Environment(name) => github.environment_variables(repo, name).await,
        };
        let found = match answer {
            Ok(list) => list
                .into_iter()
                .map(|v| (v.name.to_ascii_uppercase(), v.value))
                .collect(),
            Err(err) if refused(&err) => {
                tracing::debug!(repo = %repo.full_name(), "GitHub's variables are not readable: {err}");
                BTreeMap::new()
            }
            Err(err) => {
                tracing::warn!(repo = %repo.full_name(), "reading GitHub's variables: {err}");
                return Arc::default();
            }
        };
        let found = Arc::new(found);
        let mut cache = self.cache.lock().expect("variables cache");
        cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
        cache.insert(key, (Instant::now(), found.clone()));
        found
    }
}

/// A listing GitHub will not give (no permission, or no such environment).
fn refused(err: &ApiError) -> bool {
    matches!(err.status(), Some(403 | 404))
}

/// Where a run's variables come from.
pub struct VariableSources<'a> {
    /// firerunner's own store.
    pub settings: &'a Settings,
    /// GitHub's, when the service has credentials.
    pub github: Option<(&'a GitHubClient, &'a GitHubVariables)>,
}

impl VariableSources<'_> {
    /// The organization's and the repository's variables of a run of `repo`.
    pub async fn of_run(&self, repo: &RepoRef) -> Result<BTreeMap<String, String>, SettingError> {
        let mut merged = BTreeMap::new();
        let scopes = Scope::of_run(&repo.full_name())?;
        for (scope, listing) in scopes
            .iter()
            .zip([Listing::Organization, Listing::Repository])
        {
            self.layer(&mut merged, repo, scope, listing).await?;
        }
        Ok(merged)
    }

    /// An environment's own variables (laid over the run's by the engine).
    pub async fn of_environment(
        &self,
        repo: &RepoRef,
        environment: &str,
    ) -> Result<BTreeMap<String, String>, SettingError> {
        let scope = Scope::from_parts(None, Some(&repo.full_name()), Some(environment))?;
        let mut merged = BTreeMap::new();
        let listing = Listing::Environment(environment.to_string());
        self.layer(&mut merged, repo, &scope, listing).await?;
        Ok(merged)
    }

    /// Lays GitHub's variables of one scope, then firerunner's, over `merged`.
    async fn layer(
        &self,
        merged: &mut BTreeMap<String, String>,
        repo: &RepoRef,
        scope: &Scope,
        listing: Listing,
    ) -> Result<(), SettingError> {
        if let Some((github, cache)) = self.github {
            let from_github = cache.listing(github, repo, listing).await;
            merged.extend(from_github.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        merged.extend(
            self.settings
                .variables_of(std::slice::from_ref(scope))
                .await?,
        );
        Ok(())
    }
}
