//! Persistence of the learning state in `learning_*` tables through sqlx's `Any` driver.
//!
//! The SQL is portable (`$1` placeholders, TEXT/BIGINT columns, `INSERT … ON CONFLICT … DO UPDATE`
//! with `excluded`), so the same embedded migrations run on SQLite now and PostgreSQL later.
//! Migrations are embedded with `include_str!` and recorded in `learning_migrations`.

use crate::error::LearningError;
use crate::model::{from_millis, to_millis, FixedBy, FlakyStep, Lesson, StepLocation, StepRecord};
use crate::signature::ErrorSignature;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Embedded migrations: (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "learning tables",
    include_str!("../migrations/0001_learning.sql"),
)];

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A connection pool to the learning tables.
#[derive(Debug, Clone)]
pub struct LearningStore {
    pool: AnyPool,
}

/// One step as written to `learning_steps`.
#[derive(Debug, Clone)]
pub(crate) struct StepRow {
    pub run_id: String,
    pub repository: String,
    pub commit_sha: String,
    pub workflow: String,
    pub job: String,
    pub step_name: String,
    pub command: String,
    pub command_key: String,
    pub success: bool,
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    pub signature: Option<ErrorSignature>,
    pub recorded_at_ms: i64,
}

impl StepRow {
    /// The row of `step`, whose command normalises to `command_key`.
    pub(crate) fn new(
        step: StepRecord,
        command_key: String,
        success: bool,
        signature: Option<ErrorSignature>,
    ) -> Self {
        StepRow {
            run_id: step.run_id,
            repository: step.repository,
            commit_sha: step.commit_sha,
            workflow: step.workflow,
            job: step.job,
            step_name: step.step_name,
            command: step.command,
            command_key,
            success,
            exit_code: step.exit_code,
            duration_ms: i64::try_from(step.duration.as_millis()).unwrap_or(i64::MAX),
            signature,
            recorded_at_ms: to_millis(step.timestamp),
        }
    }
}

/// Everything one recorded step changes in the store, written in one transaction with its batch.
#[derive(Debug, Clone)]
pub(crate) struct StepWrite {
    pub row: StepRow,
    pub sequence_from: Option<String>,
    pub lessons: Vec<Lesson>,
    pub flaky: Option<FlakyStep>,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub node_stats: Vec<(String, String, u64, u64)>,
    pub edges: Vec<(String, String, u64)>,
    pub signatures: Vec<(String, ErrorSignature, u64)>,
    pub outcomes: Vec<(StepLocation, String, String, u64, u64)>,
    pub lessons: Vec<Lesson>,
    pub flaky: Vec<FlakyStep>,
}

impl LearningStore {
    /// Connects to `url` (e.g. `sqlite::memory:`, `sqlite:///path/db?mode=rwc`, `postgres://…`)
    /// and applies the embedded migrations.
    ///
    /// SQLite gets a single connection (one writer; an in-memory database must not be split over
    /// several connections).
    pub async fn connect(url: &str) -> Result<Self, LearningError> {
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new();
        if url.starts_with("sqlite:") {
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options.connect(url).await?;
        let store = LearningStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations that are not yet recorded.
    pub async fn migrate(&self) -> Result<(), LearningError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS learning_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, name, sql) in MIGRATIONS {
            let applied: Option<AnyRow> =
                sqlx::query("SELECT version FROM learning_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&self.pool)
                    .await?;
            if applied.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            for statement in strip_sql_comments(sql)
                .split(';')
                .filter(|statement| !statement.trim().is_empty())
            {
                // Embedded migration text, not user input.
                sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO learning_migrations (version, name) VALUES ($1, $2)")
                .bind(*version)
                .bind(*name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Number of rows in `learning_steps`.
    pub async fn step_count(&self) -> Result<u64, LearningError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM learning_steps")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(row.try_get::<i64, _>("n")?))
    }

    /// Writes a batch of recorded steps in one transaction.
    pub(crate) async fn write_batch(&self, batch: &[StepWrite]) -> Result<(), LearningError> {
        let mut tx = self.pool.begin().await?;
        for write in batch {
            insert_step(&mut tx, &write.row).await?;
            count_in_graph(&mut tx, write).await?;
            count_outcome(&mut tx, &write.row).await?;
            for lesson in &write.lessons {
                upsert_lesson(&mut tx, lesson).await?;
            }
            if let Some(flaky) = &write.flaky {
                upsert_flaky(&mut tx, flaky).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Loads the aggregated state.
    pub(crate) async fn load(&self) -> Result<Snapshot, LearningError> {
        let pool = &self.pool;
        Ok(Snapshot {
            node_stats: load_node_stats(pool).await?,
            edges: load_edges(pool).await?,
            signatures: load_signatures(pool).await?,
            outcomes: load_outcomes(pool).await?,
            lessons: load_lessons(pool).await?,
            flaky: load_flaky(pool).await?,
        })
    }
}

/// Success and failure counts per command and repository.
async fn load_node_stats(pool: &AnyPool) -> Result<Vec<(String, String, u64, u64)>, LearningError> {
    let mut out = Vec::new();
    for row in
        sqlx::query("SELECT command_key, repository, successes, failures FROM learning_node_stats")
            .fetch_all(pool)
            .await?
    {
        out.push((
            row.try_get("command_key")?,
            row.try_get("repository")?,
            count(row.try_get("successes")?),
            count(row.try_get("failures")?),
        ));
    }
    Ok(out)
}

/// Sequence counts between commands.
async fn load_edges(pool: &AnyPool) -> Result<Vec<(String, String, u64)>, LearningError> {
    let mut out = Vec::new();
    for row in sqlx::query("SELECT source_key, target_key, count FROM learning_edges")
        .fetch_all(pool)
        .await?
    {
        out.push((
            row.try_get("source_key")?,
            row.try_get("target_key")?,
            count(row.try_get("count")?),
        ));
    }
    Ok(out)
}

/// Failure signature counts per command.
async fn load_signatures(
    pool: &AnyPool,
) -> Result<Vec<(String, ErrorSignature, u64)>, LearningError> {
    let mut out = Vec::new();
    for row in sqlx::query(
        "SELECT command_key, signature_hash, signature_text, count FROM learning_signatures",
    )
    .fetch_all(pool)
    .await?
    {
        out.push((
            row.try_get("command_key")?,
            ErrorSignature {
                hash: row.try_get("signature_hash")?,
                text: row.try_get("signature_text")?,
            },
            count(row.try_get("count")?),
        ));
    }
    Ok(out)
}

/// Passes and failures per step and commit.
async fn load_outcomes(
    pool: &AnyPool,
) -> Result<Vec<(StepLocation, String, String, u64, u64)>, LearningError> {
    let mut out = Vec::new();
    for row in sqlx::query(
        "SELECT repository, workflow, job, command_key, commit_sha, passes, failures FROM learning_outcomes",
    )
    .fetch_all(pool)
    .await?
    {
        out.push((
            location(&row, false)?,
            row.try_get("command_key")?,
            row.try_get("commit_sha")?,
            count(row.try_get("passes")?),
            count(row.try_get("failures")?),
        ));
    }
    Ok(out)
}

/// Every lesson, below the threshold too.
async fn load_lessons(pool: &AnyPool) -> Result<Vec<Lesson>, LearningError> {
    let mut out = Vec::new();
    for row in sqlx::query(
        "SELECT signature_hash, repository, workflow, job, step_name, signature_text, command_key, count, first_seen_ms, last_seen_ms, last_commit_sha, still_failing, fixed_commit_sha, fixed_command_key FROM learning_lessons",
    )
    .fetch_all(pool)
    .await?
    {
        let fixed_commit: Option<String> = row.try_get("fixed_commit_sha")?;
        let fixed_command: Option<String> = row.try_get("fixed_command_key")?;
        out.push(Lesson {
            signature: ErrorSignature {
                hash: row.try_get("signature_hash")?,
                text: row.try_get("signature_text")?,
            },
            location: location(&row, true)?,
            command: row.try_get("command_key")?,
            count: count(row.try_get("count")?),
            first_seen: from_millis(row.try_get("first_seen_ms")?),
            last_seen: from_millis(row.try_get("last_seen_ms")?),
            last_commit_sha: row.try_get("last_commit_sha")?,
            still_failing: row.try_get::<i64, _>("still_failing")? != 0,
            fixed_by: fixed_commit.map(|commit_sha| FixedBy {
                commit_sha,
                command: fixed_command,
            }),
        });
    }
    Ok(out)
}

/// Flaky steps.
async fn load_flaky(pool: &AnyPool) -> Result<Vec<FlakyStep>, LearningError> {
    let mut out = Vec::new();
    for row in sqlx::query(
        "SELECT repository, workflow, job, command_key, step_name, flaky_commits, last_commit_sha, first_detected_ms, last_detected_ms FROM learning_flaky",
    )
    .fetch_all(pool)
    .await?
    {
        out.push(FlakyStep {
            location: location(&row, true)?,
            command: row.try_get("command_key")?,
            flaky_commits: count(row.try_get("flaky_commits")?),
            last_commit_sha: row.try_get("last_commit_sha")?,
            first_detected: from_millis(row.try_get("first_detected_ms")?),
            last_detected: from_millis(row.try_get("last_detected_ms")?),
        });
    }
    Ok(out)
}

type Transaction = sqlx::Transaction<'static, sqlx::Any>;

/// One row of `learning_steps`.
async fn insert_step(tx: &mut Transaction, row: &StepRow) -> Result<(), LearningError> {
    sqlx::query(
        "INSERT INTO learning_steps (run_id, repository, commit_sha, workflow, job, step_name, command, command_key, success, exit_code, duration_ms, signature_hash, signature_text, recorded_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&row.run_id)
    .bind(&row.repository)
    .bind(&row.commit_sha)
    .bind(&row.workflow)
    .bind(&row.job)
    .bind(&row.step_name)
    .bind(&row.command)
    .bind(&row.command_key)
    .bind(i64::from(row.success))
    .bind(row.exit_code.map(i64::from))
    .bind(row.duration_ms)
    .bind(row.signature.as_ref().map(|signature| signature.hash.clone()))
    .bind(row.signature.as_ref().map(|signature| signature.text.clone()))
    .bind(row.recorded_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The step's counts in the graph: its node, the sequence it continues, its signature.
async fn count_in_graph(tx: &mut Transaction, write: &StepWrite) -> Result<(), LearningError> {
    let row = &write.row;
    sqlx::query(
        "INSERT INTO learning_node_stats (command_key, repository, successes, failures) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (command_key, repository) DO UPDATE SET successes = learning_node_stats.successes + excluded.successes, failures = learning_node_stats.failures + excluded.failures",
    )
    .bind(&row.command_key)
    .bind(&row.repository)
    .bind(i64::from(row.success))
    .bind(i64::from(!row.success))
    .execute(&mut **tx)
    .await?;
    if let Some(from) = &write.sequence_from {
        sqlx::query(
            "INSERT INTO learning_edges (source_key, target_key, count) VALUES ($1, $2, 1) \
             ON CONFLICT (source_key, target_key) DO UPDATE SET count = learning_edges.count + 1",
        )
        .bind(from)
        .bind(&row.command_key)
        .execute(&mut **tx)
        .await?;
    }
    if let (false, Some(signature)) = (row.success, &row.signature) {
        sqlx::query(
            "INSERT INTO learning_signatures (command_key, signature_hash, signature_text, count) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (command_key, signature_hash) DO UPDATE SET count = learning_signatures.count + 1",
        )
        .bind(&row.command_key)
        .bind(&signature.hash)
        .bind(&signature.text)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The step's pass or failure at its commit.
async fn count_outcome(tx: &mut Transaction, row: &StepRow) -> Result<(), LearningError> {
    sqlx::query(
        "INSERT INTO learning_outcomes (repository, workflow, job, command_key, commit_sha, passes, failures) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (repository, workflow, job, command_key, commit_sha) DO UPDATE SET passes = learning_outcomes.passes + excluded.passes, failures = learning_outcomes.failures + excluded.failures",
    )
    .bind(&row.repository)
    .bind(&row.workflow)
    .bind(&row.job)
    .bind(&row.command_key)
    .bind(&row.commit_sha)
    .bind(i64::from(row.success))
    .bind(i64::from(!row.success))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_lesson(tx: &mut Transaction, lesson: &Lesson) -> Result<(), LearningError> {
    sqlx::query(
        "INSERT INTO learning_lessons (signature_hash, repository, workflow, job, step_name, signature_text, command_key, count, first_seen_ms, last_seen_ms, last_commit_sha, still_failing, fixed_commit_sha, fixed_command_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (signature_hash, repository, workflow, job, step_name) DO UPDATE SET command_key = excluded.command_key, count = excluded.count, last_seen_ms = excluded.last_seen_ms, last_commit_sha = excluded.last_commit_sha, still_failing = excluded.still_failing, fixed_commit_sha = excluded.fixed_commit_sha, fixed_command_key = excluded.fixed_command_key",
    )
    .bind(&lesson.signature.hash)
    .bind(&lesson.location.repository)
    .bind(&lesson.location.workflow)
    .bind(&lesson.location.job)
    .bind(&lesson.location.step_name)
    .bind(&lesson.signature.text)
    .bind(&lesson.command)
    .bind(signed(lesson.count))
    .bind(to_millis(lesson.first_seen))
    .bind(to_millis(lesson.last_seen))
    .bind(&lesson.last_commit_sha)
    .bind(i64::from(lesson.still_failing))
    .bind(lesson.fixed_by.as_ref().map(|fix| fix.commit_sha.clone()))
    .bind(lesson.fixed_by.as_ref().and_then(|fix| fix.command.clone()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_flaky(tx: &mut Transaction, flaky: &FlakyStep) -> Result<(), LearningError> {
    sqlx::query(
        "INSERT INTO learning_flaky (repository, workflow, job, command_key, step_name, flaky_commits, last_commit_sha, first_detected_ms, last_detected_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (repository, workflow, job, command_key) DO UPDATE SET step_name = excluded.step_name, flaky_commits = excluded.flaky_commits, last_commit_sha = excluded.last_commit_sha, last_detected_ms = excluded.last_detected_ms",
    )
    .bind(&flaky.location.repository)
    .bind(&flaky.location.workflow)
    .bind(&flaky.location.job)
    .bind(&flaky.command)
    .bind(&flaky.location.step_name)
    .bind(signed(flaky.flaky_commits))
    .bind(&flaky.last_commit_sha)
    .bind(to_millis(flaky.first_detected))
    .bind(to_millis(flaky.last_detected))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn location(row: &AnyRow, with_step: bool) -> Result<StepLocation, LearningError> {
    Ok(StepLocation {
        repository: row.try_get("repository")?,
        workflow: row.try_get("workflow")?,
        job: row.try_get("job")?,
        step_name: if with_step {
            row.try_get("step_name")?
        } else {
            String::new()
        },
    })
}

fn strip_sql_comments(statement: &str) -> String {
    statement
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}
