//! The store: deliveries, the run queue with leases, jobs, worker hosts and
//! recent errors.
//!
//! One schema and one set of queries serve SQLite (`sqlite://path?mode=rwc`)
//! and PostgreSQL (`postgres://...`) through sqlx's `Any` driver. A worker
//! claims the oldest queued run (or one whose lease expired) in a single
//! `UPDATE ... RETURNING`, renews its lease while it works, and finishes the
//! run only while it still holds the lease, so a result is written once even
//! when two workers race for the same run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

mod settings;
mod states;

pub use settings::{Approval, EnvironmentRules, SealedSecret, SecretInfo, StoredVariable, Table};
pub use states::{ApprovalState, DeliveryState, JobState, RunState, UnknownState};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A state column holds a word this version does not know.
    #[error("store: {0}")]
    UnknownState(#[from] UnknownState),
}

/// A workflow's `concurrency:` as evaluated for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// The group; runs of one group run one at a time.
    pub group: String,
    /// Whether a new run cancels the group's running one.
    pub cancel_in_progress: bool,
}

/// A run to put in the queue: what a run is, whatever became of it.
///
/// Serialized (inside [`RunRecord`]) without its installation and
/// concurrency group, which the API does not show.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NewRun {
    /// Unique id of the run.
    pub id: String,
    /// The delivery it came from.
    pub delivery_id: String,
    /// `owner/name`.
    pub repository: String,
    /// The commit.
    pub sha: String,
    /// The ref.
    pub git_ref: String,
    /// The workflow file, e.g. `.github/workflows/ci.yml`.
    pub workflow_file: String,
    /// The workflow's `name:` (or its file name).
    pub workflow_name: String,
    /// The event that triggered it.
    pub event: String,
    /// The pull request it belongs to, if any.
    pub pr_number: Option<i64>,
    /// The GitHub App installation that sent the event, if any.
    #[serde(skip)]
    pub installation_id: Option<i64>,
    /// Its concurrency group, if the workflow has one.
    #[serde(skip)]
    pub concurrency: Option<Concurrency>,
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// `false` when a run with this id already existed (nothing changed).
    pub inserted: bool,
    /// Queued runs of the same concurrency group that this run superseded
    /// (now completed as `cancelled`).
    pub superseded: Vec<String>,
    /// Running runs of the group asked to cancel (`cancel-in-progress`).
    pub cancel_requested: Vec<String>,
}

/// A run a worker holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRun {
    /// What was queued.
    pub run: NewRun,
    /// How many times it has been claimed, this time included.
    pub attempt: i64,
}

/// A run as stored: what was queued and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    /// What was queued (its concurrency group without `cancel_in_progress`,
    /// which is not stored).
    #[serde(flatten)]
    pub run: NewRun,
    /// Where it is in the queue.
    pub state: RunState,
    /// `success`, `failure`, `cancelled`, ... once completed.
    pub conclusion: Option<String>,
    /// Claims so far.
    pub attempts: i64,
    /// The worker holding it.
    pub lease_owner: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When first claimed.
    pub started_at: Option<i64>,
    /// When completed.
    pub finished_at: Option<i64>,
    /// Why it was re-queued, cancelled or failed, when there is a reason.
    pub note: Option<String>,
}

/// A job of a run as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRecord {
    /// The run.
    pub run_id: String,
    /// The job instance's display name (`build (linux)`).
    pub name: String,
    /// Running or completed.
    pub state: JobState,
    /// Its result once completed.
    pub conclusion: Option<String>,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// Milliseconds since the epoch.
    pub started_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub finished_at: Option<i64>,
    /// Its steps as JSON (`[{"name", "conclusion", "duration_ms"}]`).
    pub steps: String,
    /// The joined step summaries (Markdown).
    pub summary: String,
    /// The last lines of the failing step's log.
    pub log_tail: String,
    /// What the learning store knew about its failure, one hint a line.
    pub hints: String,
    /// The environment it deploys to (`environment:`), when it names one.
    pub environment: Option<String>,
    /// The URL its `environment.url` gave, once it ran.
    pub environment_url: Option<String>,
}

/// A delivery as stored (without its payload).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRecord {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// `owner/name`, when the payload names one.
    pub repository: Option<String>,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    /// Where it is on its way to runs.
    pub state: DeliveryState,
    /// What became of it.
    pub note: Option<String>,
    /// Dispatch attempts so far.
    pub attempts: i64,
}

/// A delivery waiting to be turned into runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The body GitHub sent.
    pub payload: String,
    /// Dispatch attempts before this one.
    pub attempts: i64,
}

/// A worker host as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerRecord {
    /// Its id.
    pub id: String,
    /// Its host name.
    pub host: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// Last heartbeat, milliseconds since the epoch.
    pub heartbeat_at: i64,
    /// Runs it takes at once.
    pub max_runs: i64,
    /// VMs it may run at once.
    pub max_vms: i64,
    /// Runs it is running.
    pub running: i64,
}

/// An error the service met, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRecord {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Which part of the service.
    pub source: String,
    /// What happened.
    pub message: String,
}

/// Run counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    /// Waiting for a worker.
    pub queued: i64,
    /// Being worked on.
    pub running: i64,
    /// Done.
    pub completed: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

const RUN_COLUMNS: &str = "id, delivery_id, repository, sha, git_ref, workflow_file, workflow_name, \
     event, pr_number, installation_id, concurrency_group, state, conclusion, attempts, lease_owner, \
     created_at, started_at, finished_at, note";

/// The run in a row's first 11 columns (as [`RUN_COLUMNS`] start).
fn new_run(row: &sqlx::any::AnyRow) -> NewRun {
    NewRun {
        id: row.get(0),
        delivery_id: row.get(1),
        repository: row.get(2),
        sha: row.get(3),
        git_ref: row.get(4),
        workflow_file: row.get(5),
        workflow_name: row.get(6),
        event: row.get(7),
        pr_number: row.get(8),
        installation_id: row.get(9),
        concurrency: row.get::<Option<String>, _>(10).map(|group| Concurrency {
            group,
            cancel_in_progress: false,
        }),
    }
}

fn run_record(row: &sqlx::any::AnyRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        run: new_run(row),
        state: RunState::parse(&row.get::<String, _>(11))?,
        conclusion: row.get(12),
        attempts: row.get(13),
        lease_owner: row.get(14),
        created_at: row.get(15),
        started_at: row.get(16),
        finished_at: row.get(17),
        note: row.get(18),
    })
}

const JOB_COLUMNS: &str =
    "run_id, name, state, conclusion, worker, started_at, finished_at, steps, summary, log_tail, hints, \
     environment, environment_url";

fn job_record(row: &sqlx::any::AnyRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        run_id: row.get(0),
        name: row.get(1),
        state: JobState::parse(&row.get::<String, _>(2))?,
        conclusion: row.get(3),
        worker: row.get(4),
        started_at: row.get(5),
        finished_at: row.get(6),
        steps: row.get(7),
        summary: row.get(8),
        log_tail: row.get(9),
        hints: row.get(10),
        environment: row.get(11),
        environment_url: row.get(12),
    })
}

/// The database behind deliveries and runs.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
}

/// What became of a delivery offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored: it will be dispatched.
    New,
    /// This delivery id was stored before (a redelivery).
    Duplicate,
    /// The same signed body was stored under another delivery id.
    Replay,
}

impl Store {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// SQLite runs in WAL mode with `synchronous=NORMAL` (a committed
    /// delivery survives the process being killed) and waits up to 10 s for
    /// a busy database instead of failing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let postgres = url.starts_with("postgres");
        let mut options = AnyPoolOptions::new().max_connections(if postgres { 16 } else { 4 });
        if !postgres {
            options = options.after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, postgres })
    }

    /// Whether this store is PostgreSQL (shared by several hosts).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Closes every connection (SQLite then checkpoints its write-ahead log).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Records a delivery; `false` when this delivery id was already recorded.
    pub async fn record_delivery(
        &self,
        delivery_id: &str,
        event: &str,
        repository: Option<&str>,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let recorded = self
            .record_signed_delivery(delivery_id, event, repository, payload, None)
            .await?;
        Ok(recorded == Recorded::New)
    }

    /// Records a delivery with the SHA-256 of its signed body: a body seen
    /// before under another delivery id is a [`Recorded::Replay`].
    pub async fn record_signed_delivery(
        &self,
        delivery_id: &str,
        event: &str,
        repository: Option<&str>,
        payload: &str,
        body_sha256: Option<&str>,
    ) -> Result<Recorded, StoreError> {
        let done = sqlx::query(
            "INSERT INTO deliveries \
             (delivery_id, event, repository, payload, received_at, state, body_sha256) \
             VALUES ($1, $2, $3, $4, $5, $7, $6) ON CONFLICT DO NOTHING",
        )
        .bind(delivery_id)
        .bind(event)
        .bind(repository)
        .bind(payload)
        .bind(now_ms())
        .bind(body_sha256)
        .bind(DeliveryState::Received.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Recorded::New);
        }
        let known = sqlx::query("SELECT 1 FROM deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(if known.is_some() {
            Recorded::Duplicate
        } else {
            Recorded::Replay
        })
    }

    /// Deliveries waiting to be dispatched whose retry time has come, oldest first.
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT delivery_id, event, payload, attempts FROM deliveries \
             WHERE state IN ($3, $4) AND next_attempt_at <= $1 \
             ORDER BY received_at, delivery_id LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .bind(DeliveryState::Received.as_str())
        .bind(DeliveryState::Dispatching.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| PendingDelivery {
                delivery_id: row.get(0),
                event: row.get(1),
                payload: row.get(2),
                attempts: row.get(3),
            })
            .collect())
    }

    /// Takes a pending delivery for dispatch until `lease` from now; `false`
    /// when another dispatcher has it (several `serve` processes may run).
    pub async fn claim_delivery(
        &self,
        delivery_id: &str,
        dispatcher: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE deliveries SET state = $6, next_attempt_at = $1, dispatcher = $2 \
             WHERE delivery_id = $3 AND state IN ($5, $6) AND next_attempt_at <= $4",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(dispatcher)
        .bind(delivery_id)
        .bind(now)
        .bind(DeliveryState::Received.as_str())
        .bind(DeliveryState::Dispatching.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes back the deliveries `dispatcher` was dispatching when it
    /// stopped (a restart), so they are dispatched again at once.
    pub async fn release_dispatching(&self, dispatcher: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = $2, next_attempt_at = 0 \
             WHERE state = $3 AND dispatcher = $1",
        )
        .bind(dispatcher)
        .bind(DeliveryState::Received.as_str())
        .bind(DeliveryState::Dispatching.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Settles a delivery: `dispatched`, `ignored` or `failed`, with a note.
    pub async fn settle_delivery(
        &self,
        delivery_id: &str,
        state: DeliveryState,
        note: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = $1, note = $2, processed_at = $3, attempts = attempts + 1 \
             WHERE delivery_id = $4",
        )
        .bind(state.as_str())
        .bind(note)
        .bind(now_ms())
        .bind(delivery_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leaves a delivery for later (a transient error), to be tried after `delay`.
    pub async fn retry_delivery(
        &self,
        delivery_id: &str,
        delay: Duration,
        note: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = $4, attempts = attempts + 1, next_attempt_at = $1, \
             note = $2 WHERE delivery_id = $3",
        )
        .bind(now_ms() + delay.as_millis() as i64)
        .bind(note)
        .bind(delivery_id)
        .bind(DeliveryState::Received.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most recent deliveries, newest first.
    pub async fn recent_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT delivery_id, event, repository, received_at, state, note, attempts \
             FROM deliveries ORDER BY received_at DESC, delivery_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_record).collect()
    }

    /// One delivery, without its payload.
    pub async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT delivery_id, event, repository, received_at, state, note, attempts \
             FROM deliveries WHERE delivery_id = $1",
        )
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_record).transpose()
    }

    /// Deliveries by state.
    pub async fn delivery_counts(&self) -> Result<Vec<(DeliveryState, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM deliveries GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| Ok((DeliveryState::parse(&row.get::<String, _>(0))?, row.get(1))))
            .collect()
    }

    /// Puts a run in the queue (once: a run id already there changes nothing).
    ///
    /// With a concurrency group, the group's queued runs are superseded
    /// (completed as `cancelled`) as GitHub keeps only the newest pending
    /// run of a group; with `cancel-in-progress` its running runs are also
    /// asked to cancel.
    pub async fn enqueue(&self, run: &NewRun) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO runs (id, delivery_id, repository, sha, git_ref, workflow_file, workflow_name, \
             event, pr_number, installation_id, concurrency_group, state, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, 0, $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&run.id)
        .bind(&run.delivery_id)
        .bind(&run.repository)
        .bind(&run.sha)
        .bind(&run.git_ref)
        .bind(&run.workflow_file)
        .bind(&run.workflow_name)
        .bind(&run.event)
        .bind(run.pr_number)
        .bind(run.installation_id)
        .bind(run.concurrency.as_ref().map(|c| c.group.clone()))
        .bind(now)
        .bind(RunState::Queued.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let mut outcome = Enqueued {
            inserted,
            ..Enqueued::default()
        };
        if let (true, Some(concurrency)) = (inserted, &run.concurrency) {
            (outcome.superseded, outcome.cancel_requested) =
                supersede(&mut tx, &run.id, concurrency, now).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Claims the oldest queued run, or a running one whose lease expired,
    /// for `worker` until `lease` from now. A run waits while another run of
    /// its concurrency group is running.
    pub async fn claim(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        let now = now_ms();
        let lock = if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let claimable = "(state = $4 OR (state = $5 AND lease_until < $3))";
        let sql = format!(
            "UPDATE runs SET state = $5, lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
             WHERE id = (SELECT id FROM runs r WHERE {claimable} \
                           AND (r.concurrency_group IS NULL OR NOT EXISTS ( \
                                SELECT 1 FROM runs o WHERE o.concurrency_group = r.concurrency_group \
                                AND o.state = $5 AND o.lease_until >= $3 AND o.id <> r.id)) \
                         ORDER BY created_at, id LIMIT 1{lock}) \
               AND {claimable} \
             RETURNING id, delivery_id, repository, sha, git_ref, workflow_file, workflow_name, event, \
                       pr_number, installation_id, concurrency_group, attempts"
        );
        // Only the constant clauses vary; every value is bound.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(RunState::Queued.as_str())
            .bind(RunState::Running.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| ClaimedRun {
            run: new_run(&row),
            attempt: row.get(11),
        }))
    }

    /// Renews `worker`'s lease on a run; `false` when the lease was lost.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND state = $4",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(run_id)
        .bind(worker)
        .bind(RunState::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether someone asked to cancel a run (superseded by a newer run).
    pub async fn cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some_and(|row| row.get::<i64, _>(0) != 0))
    }

    /// Writes a run's conclusion if `worker` still holds it; `false` otherwise
    /// (another worker took it over: its result is the one kept).
    pub async fn finish(
        &self,
        run_id: &str,
        worker: &str,
        conclusion: &str,
    ) -> Result<bool, StoreError> {
        self.finish_with_note(run_id, worker, conclusion, None)
            .await
    }

    /// [`Store::finish`] with a note saying why (errors that ended the run).
    pub async fn finish_with_note(
        &self,
        run_id: &str,
        worker: &str,
        conclusion: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET state = $6, conclusion = $1, finished_at = $2, lease_owner = NULL, \
             note = COALESCE($5, note) WHERE id = $3 AND lease_owner = $4 AND state = $7",
        )
        .bind(conclusion)
        .bind(now_ms())
        .bind(run_id)
        .bind(worker)
        .bind(note)
        .bind(RunState::Completed.as_str())
        .bind(RunState::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts back in the queue the runs `worker` held when it stopped (a
    /// restart of the same host): they are marked and run again.
    pub async fn requeue_interrupted(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE runs SET state = $2, lease_owner = NULL, lease_until = NULL, \
             note = 'interrupted when its worker stopped; queued again' \
             WHERE state = $3 AND lease_owner = $1 RETURNING id",
        )
        .bind(worker)
        .bind(RunState::Queued.as_str())
        .bind(RunState::Running.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Runs by state.
    pub async fn counts(&self) -> Result<RunCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = RunCounts::default();
        for row in &rows {
            let count: i64 = row.get(1);
            match RunState::parse(&row.get::<String, _>(0))? {
                RunState::Queued => counts.queued = count,
                RunState::Running => counts.running = count,
                RunState::Completed => counts.completed = count,
            }
        }
        Ok(counts)
    }

    /// A run's conclusion, once completed.
    pub async fn conclusion(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT conclusion FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|row| row.get::<Option<String>, _>(0)))
    }

    /// One run.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_record).transpose()
    }

    /// The most recent runs, newest first.
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_record).collect()
    }

    /// The runs of one pull request's head commit, oldest first (what its
    /// comment shows).
    pub async fn runs_of_pull_request(
        &self,
        repository: &str,
        pr_number: i64,
        sha: &str,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE repository = $1 AND pr_number = $2 AND sha = $3 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repository)
            .bind(pr_number)
            .bind(sha)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_record).collect()
    }

    /// Forgets a run's jobs (before it runs again).
    pub async fn clear_jobs(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM jobs WHERE run_id = $1")
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a job's state, replacing what was there.
    pub async fn save_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (run_id, name, state, conclusion, worker, started_at, finished_at, steps, summary, log_tail, hints, \
             environment, environment_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state, conclusion = excluded.conclusion, \
             worker = excluded.worker, started_at = excluded.started_at, finished_at = excluded.finished_at, \
             steps = excluded.steps, summary = excluded.summary, log_tail = excluded.log_tail, hints = excluded.hints, \
             environment = COALESCE(excluded.environment, jobs.environment), \
             environment_url = COALESCE(excluded.environment_url, jobs.environment_url)",
        )
        .bind(&job.run_id)
        .bind(&job.name)
        .bind(job.state.as_str())
        .bind(&job.conclusion)
        .bind(&job.worker)
        .bind(job.started_at)
        .bind(job.finished_at)
        .bind(&job.steps)
        .bind(&job.summary)
        .bind(&job.log_tail)
        .bind(&job.hints)
        .bind(&job.environment)
        .bind(&job.environment_url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A run's jobs, in the order they started.
    pub async fn jobs(&self, run_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1 ORDER BY started_at, name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_record).collect()
    }

    /// Jobs running now (across every worker).
    pub async fn running_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 ORDER BY started_at, name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(JobState::Running.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_record).collect()
    }

    /// Records that a worker host is alive, with its capacity and load.
    pub async fn worker_heartbeat(&self, worker: &WorkerRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workers (id, host, started_at, heartbeat_at, max_runs, max_vms, running) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, max_runs = excluded.max_runs, \
             max_vms = excluded.max_vms, running = excluded.running",
        )
        .bind(&worker.id)
        .bind(&worker.host)
        .bind(worker.started_at)
        .bind(worker.heartbeat_at)
        .bind(worker.max_runs)
        .bind(worker.max_vms)
        .bind(worker.running)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every worker host that ever reported, most recent heartbeat first.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, started_at, heartbeat_at, max_runs, max_vms, running FROM workers \
             ORDER BY heartbeat_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| WorkerRecord {
                id: row.get(0),
                host: row.get(1),
                started_at: row.get(2),
                heartbeat_at: row.get(3),
                max_runs: row.get(4),
                max_vms: row.get(5),
                running: row.get(6),
            })
            .collect())
    }

    /// Records an error for the dashboard.
    pub async fn record_error(&self, source: &str, message: &str) -> Result<(), StoreError> {
        let at = now_ms();
        sqlx::query("INSERT INTO service_errors (id, at, source, message) VALUES ($1, $2, $3, $4)")
            .bind(format!("{at}-{:016x}", fastrand::u64(..)))
            .bind(at)
            .bind(source)
            .bind(message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The most recent errors, newest first.
    pub async fn recent_errors(&self, limit: i64) -> Result<Vec<ErrorRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, source, message FROM service_errors ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| ErrorRecord {
                at: row.get(0),
                source: row.get(1),
                message: row.get(2),
            })
            .collect())
    }

    /// Keeps a finished job's whole log (JSON lines) for every host to read.
    pub async fn save_job_log(
        &self,
        run_id: &str,
        job: &str,
        lines: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_logs (run_id, job, lines) VALUES ($1, $2, $3) \
             ON CONFLICT (run_id, job) DO UPDATE SET lines = excluded.lines",
        )
        .bind(run_id)
        .bind(job)
        .bind(lines)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A finished job's log as saved by [`Store::save_job_log`].
    pub async fn job_log(&self, run_id: &str, job: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT lines FROM job_logs WHERE run_id = $1 AND job = $2")
            .bind(run_id)
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The stored payload of a delivery.
    pub async fn delivery_payload(&self, delivery_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT payload FROM deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}

/// Completes as `cancelled` the queued runs of `run_id`'s concurrency group
/// and, with `cancel-in-progress`, asks its running ones to cancel; returns
/// the ids of both.
async fn supersede(
    connection: &mut sqlx::AnyConnection,
    run_id: &str,
    concurrency: &Concurrency,
    now: i64,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let rows = sqlx::query(
        "UPDATE runs SET state = $5, conclusion = 'cancelled', finished_at = $1, note = $2 \
         WHERE concurrency_group = $3 AND state = $6 AND id <> $4 RETURNING id",
    )
    .bind(now)
    .bind(format!("superseded by run {run_id}"))
    .bind(&concurrency.group)
    .bind(run_id)
    .bind(RunState::Completed.as_str())
    .bind(RunState::Queued.as_str())
    .fetch_all(&mut *connection)
    .await?;
    let superseded = rows.iter().map(|row| row.get(0)).collect();
    if !concurrency.cancel_in_progress {
        return Ok((superseded, Vec::new()));
    }
    let rows = sqlx::query(
        "UPDATE runs SET cancel_requested = 1, note = $1 \
         WHERE concurrency_group = $2 AND state = $4 AND id <> $3 RETURNING id",
    )
    .bind(format!("cancelled in progress by run {run_id}"))
    .bind(&concurrency.group)
    .bind(run_id)
    .bind(RunState::Running.as_str())
    .fetch_all(&mut *connection)
    .await?;
    Ok((superseded, rows.iter().map(|row| row.get(0)).collect()))
}

fn delivery_record(row: &sqlx::any::AnyRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        delivery_id: row.get(0),
        event: row.get(1),
        repository: row.get(2),
        received_at: row.get(3),
        state: DeliveryState::parse(&row.get::<String, _>(4))?,
        note: row.get(5),
        attempts: row.get(6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_stored_state_is_an_error_naming_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        store
            .record_delivery("d1", "push", None, "{}")
            .await
            .unwrap();
        sqlx::query("UPDATE deliveries SET state = 'paused'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.recent_deliveries(10).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "store: deliveries.state holds an unknown state \"paused\""
        );
        assert!(store.delivery_counts().await.is_err());
    }

    #[test]
    fn a_run_record_serializes_flat_without_installation_or_group() {
        let record = RunRecord {
            run: NewRun {
                id: "r1".into(),
                installation_id: Some(7),
                concurrency: Some(Concurrency {
                    group: "g".into(),
                    cancel_in_progress: true,
                }),
                ..NewRun::default()
            },
            state: RunState::Queued,
            conclusion: None,
            attempts: 0,
            lease_owner: None,
            created_at: 1,
            started_at: None,
            finished_at: None,
            note: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            "{\"id\":\"r1\",\"delivery_id\":\"\",\"repository\":\"\",\"sha\":\"\",\"git_ref\":\"\",\
             \"workflow_file\":\"\",\"workflow_name\":\"\",\"event\":\"\",\"pr_number\":null,\
             \"state\":\"queued\",\"conclusion\":null,\"attempts\":0,\"lease_owner\":null,\
             \"created_at\":1,\"started_at\":null,\"finished_at\":null,\"note\":null}"
        );
    }
}
