//! What operators set for runs: sealed secrets, variables, environments'
//! protection rules, and the approvals runs wait for. The store keeps a
//! secret only sealed; sealing and opening are [`crate::vault`]'s.

use sqlx::Row;

use super::{now_ms, ApprovalState, Store, StoreError};
use crate::vault::{Scope, Sealed};

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// `organization`, `repository` or `environment`.
    pub level: &'static str,
    /// The scope's key (`repo:octo/app`).
    pub scope: String,
    /// The name, upper case.
    pub name: String,
    /// The id of the key it is sealed with.
    pub key_id: String,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// A secret as stored, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Where it lives.
    pub scope: Scope,
    /// Its name.
    pub name: String,
    /// Its sealed value.
    pub sealed: Sealed,
}

/// A variable as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredVariable {
    /// `organization`, `repository` or `environment`.
    pub level: &'static str,
    /// The scope's key.
    pub scope: String,
    /// The name, upper case.
    pub name: String,
    /// The value.
    pub value: String,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// An environment's protection rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvironmentRules {
    /// `owner/name`, lower case.
    #[serde(default)]
    pub repository: String,
    /// The environment's name, lower case.
    #[serde(default)]
    pub name: String,
    /// Branch name patterns that may deploy (empty with `tags` empty: every ref).
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tag name patterns that may deploy.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Logins of which one must approve each run's jobs before they start.
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub updated_at: i64,
}

/// A run's request to deploy to a protected environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approval {
    /// The run.
    pub run_id: String,
    /// The environment, lower case.
    pub environment: String,
    /// The run's repository.
    pub repository: String,
    /// The jobs waiting on it.
    pub jobs: Vec<String>,
    /// Who may decide.
    pub reviewers: Vec<String>,
    /// Where it is.
    pub state: ApprovalState,
    /// Milliseconds since the epoch.
    pub requested_at: i64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<i64>,
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn json_text(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn level_of(scope: &str) -> &'static str {
    Scope::parse_key(scope).map_or("unknown", |scope| scope.level())
}

const APPROVAL_COLUMNS: &str = "run_id, environment, repository, jobs, reviewers, state, \
     requested_at, decided_by, decided_at";

fn approval(row: &sqlx::any::AnyRow) -> Result<Approval, StoreError> {
    Ok(Approval {
        run_id: row.get(0),
        environment: row.get(1),
        repository: row.get(2),
        jobs: json_list(&row.get::<String, _>(3)),
        reviewers: json_list(&row.get::<String, _>(4)),
        state: ApprovalState::parse(&row.get::<String, _>(5))?,
        requested_at: row.get(6),
        decided_by: row.get(7),
        decided_at: row.get(8),
    })
}

impl Store {
    /// Stores a sealed secret (replacing one of the same scope and name).
    pub async fn put_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (scope, name, key_id, nonce, ciphertext, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, name) DO UPDATE SET \
             key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at",
        )
        .bind(secret.scope.key())
        .bind(&secret.name)
        .bind(&secret.sealed.key_id)
        .bind(&secret.sealed.nonce)
        .bind(&secret.sealed.ciphertext)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces a secret's sealed value with the same value sealed again
    /// under another key (a rotation: its date stays).
    pub async fn reseal_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE secrets SET key_id = $1, nonce = $2, ciphertext = $3 WHERE scope = $4 AND name = $5",
        )
        .bind(&secret.sealed.key_id)
        .bind(&secret.sealed.nonce)
        .bind(&secret.sealed.ciphertext)
        .bind(secret.scope.key())
        .bind(&secret.name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sealed secrets of `scopes` (every scope when `None`).
    pub async fn sealed_secrets(
        &self,
        scopes: Option<&[Scope]>,
    ) -> Result<Vec<SealedSecret>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, name, key_id, nonce, ciphertext FROM secrets ORDER BY scope, name",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys: Option<Vec<String>> = scopes.map(|s| s.iter().map(Scope::key).collect());
        let mut found = Vec::new();
        for row in &rows {
            let key: String = row.get(0);
            if keys.as_ref().is_some_and(|keys| !keys.contains(&key)) {
                continue;
            }
            let Ok(scope) = Scope::parse_key(&key) else {
                continue;
            };
            found.push(SealedSecret {
                scope,
                name: row.get(1),
                sealed: Sealed {
                    key_id: row.get(2),
                    nonce: row.get(3),
                    ciphertext: row.get(4),
                },
            });
        }
        Ok(found)
    }

    /// Every secret's name, scope and date (never a value).
    pub async fn secret_infos(&self) -> Result<Vec<SecretInfo>, StoreError> {
        let rows =
            sqlx::query("SELECT scope, name, key_id, updated_at FROM secrets ORDER BY scope, name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let scope: String = row.get(0);
                SecretInfo {
                    level: level_of(&scope),
                    scope,
                    name: row.get(1),
                    key_id: row.get(2),
                    updated_at: row.get(3),
                }
            })
            .collect())
    }

    /// How many secrets (`table` = `secrets`) or variables a scope holds.
    pub async fn count_in_scope(&self, table: Table, scope: &Scope) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE scope = $1", table.name());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.key())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Whether a secret or variable exists.
    pub async fn setting_exists(
        &self,
        table: Table,
        scope: &Scope,
        name: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE scope = $1 AND name = $2",
            table.name()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.key())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Removes a secret or variable; `false` when there was none.
    pub async fn delete_setting(
        &self,
        table: Table,
        scope: &Scope,
        name: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE scope = $1 AND name = $2",
            table.name()
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.key())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a variable.
    pub async fn put_variable(
        &self,
        scope: &Scope,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO variables (scope, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(scope.key())
        .bind(name)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Variables of `scopes` (every scope when `None`).
    pub async fn variables(
        &self,
        scopes: Option<&[Scope]>,
    ) -> Result<Vec<StoredVariable>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, name, value, updated_at FROM variables ORDER BY scope, name",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys: Option<Vec<String>> = scopes.map(|s| s.iter().map(Scope::key).collect());
        Ok(rows
            .iter()
            .filter_map(|row| {
                let scope: String = row.get(0);
                if keys.as_ref().is_some_and(|keys| !keys.contains(&scope)) {
                    return None;
                }
                Some(StoredVariable {
                    level: level_of(&scope),
                    scope,
                    name: row.get(1),
                    value: row.get(2),
                    updated_at: row.get(3),
                })
            })
            .collect())
    }

    /// Stores an environment's rules (repository and name lower case).
    pub async fn put_environment(&self, rules: &EnvironmentRules) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO environments (repository, name, branches, tags, reviewers, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repository, name) DO UPDATE SET \
             branches = excluded.branches, tags = excluded.tags, reviewers = excluded.reviewers, \
             updated_at = excluded.updated_at",
        )
        .bind(&rules.repository)
        .bind(&rules.name)
        .bind(json_text(&rules.branches))
        .bind(json_text(&rules.tags))
        .bind(json_text(&rules.reviewers))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The rules of every environment, or of one repository's.
    pub async fn environments(
        &self,
        repository: Option<&str>,
    ) -> Result<Vec<EnvironmentRules>, StoreError> {
        let rows = sqlx::query(
            "SELECT repository, name, branches, tags, reviewers, updated_at FROM environments \
             ORDER BY repository, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| EnvironmentRules {
                repository: row.get(0),
                name: row.get(1),
                branches: json_list(&row.get::<String, _>(2)),
                tags: json_list(&row.get::<String, _>(3)),
                reviewers: json_list(&row.get::<String, _>(4)),
                updated_at: row.get(5),
            })
            .filter(|rules| repository.is_none_or(|r| rules.repository == r))
            .collect())
    }

    /// Removes an environment's rules; `false` when it had none.
    pub async fn delete_environment(
        &self,
        repository: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM environments WHERE repository = $1 AND name = $2")
            .bind(repository)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records that `job` of a run waits for a reviewer of `environment`
    /// (a request of the run that exists already keeps its decision and
    /// gains the job); returns the request as it now stands.
    pub async fn request_approval(
        &self,
        run_id: &str,
        environment: &str,
        repository: &str,
        job: &str,
        reviewers: &[String],
    ) -> Result<Approval, StoreError> {
        sqlx::query(
            "INSERT INTO approvals (run_id, environment, repository, jobs, reviewers, state, requested_at) \
             VALUES ($1, $2, $3, '[]', $4, $5, $6) ON CONFLICT (run_id, environment) DO NOTHING",
        )
        .bind(run_id)
        .bind(environment)
        .bind(repository)
        .bind(json_text(reviewers))
        .bind(ApprovalState::Waiting.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let mut current = self
            .approval(run_id, environment)
            .await?
            .expect("the request was just stored");
        if !current.jobs.iter().any(|j| j == job) {
            current.jobs.push(job.to_string());
            sqlx::query("UPDATE approvals SET jobs = $1 WHERE run_id = $2 AND environment = $3")
                .bind(json_text(&current.jobs))
                .bind(run_id)
                .bind(environment)
                .execute(&self.pool)
                .await?;
        }
        Ok(current)
    }

    /// One run's request for one environment.
    pub async fn approval(
        &self,
        run_id: &str,
        environment: &str,
    ) -> Result<Option<Approval>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1 AND environment = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval).transpose()
    }

    /// A run's requests, or every waiting request (`run_id` `None`), oldest first.
    pub async fn approvals(&self, run_id: Option<&str>) -> Result<Vec<Approval>, StoreError> {
        let sql = match run_id {
            Some(_) => format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1 ORDER BY requested_at"
            ),
            None => format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE state = $1 ORDER BY requested_at"
            ),
        };
        let bound = run_id.unwrap_or(ApprovalState::Waiting.as_str());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bound)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(approval).collect()
    }

    /// Decides a waiting request once; `false` when it was not waiting.
    pub async fn decide_approval(
        &self,
        run_id: &str,
        environment: &str,
        decision: ApprovalState,
        by: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3 \
             WHERE run_id = $4 AND environment = $5 AND state = $6",
        )
        .bind(decision.as_str())
        .bind(by)
        .bind(now_ms())
        .bind(run_id)
        .bind(environment)
        .bind(ApprovalState::Waiting.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Which settings table: secrets or variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `secrets`.
    Secrets,
    /// `variables`.
    Variables,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Secrets => "secrets",
            Table::Variables => "variables",
        }
    }
}
