//! Configuration variables (`vars`) as GitHub keeps them: a repository's,
//! the organization's shared with a repository, and an environment's.
//! Reading them needs the App's (or token's) *Variables: read* permission;
//! GitHub answers 403 or 404 without it.

use reqwest::Method;
use serde::Deserialize;

use super::{encode_component, ApiError, GitHubClient, RepoRef, MAX_PAGES};

/// One configuration variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Variable {
    /// Its name (GitHub keeps names upper-cased).
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A page of GitHub's variable listings (`{"total_count", "variables"}`).
#[derive(Deserialize)]
struct VariablesPage {
    variables: Vec<Variable>,
}

impl GitHubClient {
    /// The repository's variables (`GET /repos/{owner}/{repo}/actions/variables`).
    pub async fn repository_variables(&self, repo: &RepoRef) -> Result<Vec<Variable>, ApiError> {
        let path = format!("{}/actions/variables", repo.api_path());
        self.variables(repo, &path).await
    }

    /// The organization's variables shared with the repository
    /// (`GET /repos/{owner}/{repo}/actions/organization-variables`).
    pub async fn organization_variables(&self, repo: &RepoRef) -> Result<Vec<Variable>, ApiError> {
        let path = format!("{}/actions/organization-variables", repo.api_path());
        self.variables(repo, &path).await
    }

    /// An environment's variables
    /// (`GET /repos/{owner}/{repo}/environments/{name}/variables`).
    pub async fn environment_variables(
        &self,
        repo: &RepoRef,
        environment: &str,
    ) -> Result<Vec<Variable>, ApiError> {
        let path = format!(
            "{}/environments/{}/variables",
            repo.api_path(),
            encode_component(environment)
        );
        self.variables(repo, &path).await
    }

    /// Every variable of a listing, all pages (30 a page, GitHub's most).
    async fn variables(&self, repo: &RepoRef, path: &str) -> Result<Vec<Variable>, ApiError> {
        let mut found = Vec::new();
        let mut next = Some(format!("{path}?per_page=30"));
        for _ in 0..MAX_PAGES {
            let Some(current) = next.take() else {
                break;
            };
            let reply = self.repo_call(repo, Method::GET, &current, None).await?;
            let page: VariablesPage = reply.json()?;
            found.extend(page.variables);
            next = self.next_page(&reply, &current)?;
        }
        Ok(found)
    }
}
