//! `firerunner learn`: ask what firerunner learned from the steps it ran, and
//! the recorder `firerunner run` feeds every finished job to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use firerunner_learning::{
    one_line, short_sha, workflow_from_text, Concept, Conclusion, EvidenceLevel, FlakyStep, Hint,
    LearningConfig, LearningCoordinator, LearningStats, LearningStore, Lesson, LlmClient,
    LlmConfig, Prediction, PredictionContext, StepRecord,
};
use serde::Serialize;

/// Arguments of `firerunner learn`.
#[derive(clap::Args)]
pub struct Args {
    /// The learning database (default: `sqlite://<data dir>/firerunner.db`,
    /// the data dir being $FIRERUNNER_DATA_DIR, else $XDG_DATA_HOME/firerunner,
    /// else ~/.local/share/firerunner).
    #[arg(long, global = true, env = "FIRERUNNER_LEARNING_DATABASE")]
    database: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    query: Query,
}

#[derive(clap::Subcommand)]
enum Query {
    /// Steps recorded, distinct success and failure patterns, lessons, flaky steps.
    Stats,
    /// Repeated failures: one error signature failing again and again at one step.
    Lessons,
    /// Steps that both passed and failed at one commit.
    Flaky,
    /// The probability that a command succeeds, and the evidence it rests on.
    Predict {
        /// The command (as in a `run:` step).
        command: String,
        /// The repository (`owner/name`) it would run in.
        #[arg(long)]
        repository: Option<String>,
    },
    /// Commands related to one: run right before or after it, or doing the same kind of work.
    Related {
        /// The command.
        command: String,
        /// Most commands shown.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The command most often run successfully right after one.
    Next {
        /// The command.
        command: String,
    },
    /// Write a workflow from a plain-English request, e.g. "run cargo test and if it
    /// passes build the release on push to main". Uses the LLM when one is configured
    /// (falling back to the built-in phrase parser if it fails), else the parser.
    New {
        /// What the workflow should do.
        request: String,
        /// Base URL of an OpenAI-compatible API (e.g. http://localhost:11434/v1 for Ollama,
        /// https://openrouter.ai/api/v1).
        #[arg(long, env = "FIRERUNNER_LLM_URL")]
        llm_url: Option<String>,
        /// The model to ask.
        #[arg(long, env = "FIRERUNNER_LLM_MODEL")]
        llm_model: Option<String>,
        /// API key for the LLM, when it needs one.
        #[arg(long, env = "FIRERUNNER_LLM_API_KEY", hide_env_values = true)]
        llm_api_key: Option<String>,
        /// Seconds to wait for each LLM answer.
        #[arg(long, default_value_t = 60)]
        llm_timeout: u64,
    },
}

/// The default learning database: the service's SQLite file in the data dir
/// (created when missing).
pub fn default_database_url() -> Result<String> {
    let dir: PathBuf = firerunner_server::config::default_data_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        dir.join("firerunner.db").display()
    ))
}

async fn open(url: &str) -> Result<LearningCoordinator> {
    let store = LearningStore::connect(url)
        .await
        .with_context(|| format!("cannot open the learning database {url}"))?;
    Ok(LearningCoordinator::open(store, LearningConfig::default()).await?)
}

/// Runs `firerunner learn`.
pub fn run(args: Args) -> Result<ExitCode> {
    if let Query::New {
        request,
        llm_url,
        llm_model,
        llm_api_key,
        llm_timeout,
    } = &args.query
    {
        let llm = match (llm_url, llm_model) {
            (Some(url), Some(model)) if !url.is_empty() && !model.is_empty() => {
                let mut config = LlmConfig::new(url.clone(), model.clone());
                config.api_key = llm_api_key.clone().filter(|key| !key.is_empty());
                config.timeout = Duration::from_secs((*llm_timeout).max(1));
                Some(config)
            }
            _ => None,
        };
        let output = new_workflow(request, llm, args.json)?;
        print!("{output}");
        return Ok(ExitCode::SUCCESS);
    }
    let url = match &args.database {
        Some(url) => url.clone(),
        None => default_database_url()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let learning = open(&url).await?;
        let output = answer(&learning, &args.query, args.json);
        learning.close().await?;
        print!("{output}");
        Ok(ExitCode::SUCCESS)
    })
}

/// The text (a table or JSON) answering `query`.
fn answer(learning: &LearningCoordinator, query: &Query, as_json: bool) -> String {
    match query {
        Query::Stats => stats(learning, as_json),
        Query::Lessons => lessons(&learning.lessons(), as_json),
        Query::Flaky => flaky(&learning.flaky_steps(), as_json),
        Query::Predict {
            command,
            repository,
        } => predict(learning, command, repository.clone(), as_json),
        Query::Related { command, limit } => related(learning, command, *limit, as_json),
        Query::Next { command } => next(learning, command, as_json),
        Query::New { .. } => unreachable!("`learn new` needs no database and is answered first"),
    }
}

/// A workflow for `request`: from the LLM when configured and it succeeds, else from the
/// built-in phrase parser.
fn new_workflow(request: &str, llm: Option<LlmConfig>, as_json: bool) -> Result<String> {
    let mut llm_error = None;
    if let Some(config) = llm {
        let model = config.model.clone();
        let generated = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async { LlmClient::new(config)?.workflow_from_request(request).await });
        match generated {
            Ok(generated) => {
                return Ok(if as_json {
                    to_json(&NewWorkflow::Llm {
                        model,
                        attempts: generated.attempts,
                        yaml: generated.yaml,
                    })
                } else {
                    generated.yaml
                });
            }
            Err(error) => {
                eprintln!("firerunner: warning: {error}; using the built-in phrase parser");
                llm_error = Some(error.to_string());
            }
        }
    }
    let yaml = workflow_from_text(request).context("the built-in phrase parser failed")?;
    Ok(if as_json {
        to_json(&NewWorkflow::Patterns { llm_error, yaml })
    } else {
        yaml
    })
}

/// The JSON answer of `learn new`: where the workflow came from, and its YAML.
#[derive(Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
enum NewWorkflow {
    /// Written by the language model.
    Llm {
        model: String,
        attempts: u32,
        yaml: String,
    },
    /// Written by the built-in phrase parser.
    Patterns {
        llm_error: Option<String>,
        yaml: String,
    },
}

fn to_json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A plain-text table: a header, a rule, then left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(rule.iter().map(String::as_str).collect()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The JSON answer of `learn stats`: the totals and the graph's size.
#[derive(Serialize)]
struct StatsAnswer {
    steps: u64,
    #[serde(flatten)]
    stats: LearningStats,
    commands: usize,
    sequences: usize,
}

fn stats(learning: &LearningCoordinator, as_json: bool) -> String {
    let stats = learning.stats();
    let (nodes, edges) = learning.with_graph(|graph| (graph.node_count(), graph.edge_count()));
    if as_json {
        return to_json(&StatsAnswer {
            steps: stats.successes + stats.failures,
            stats,
            commands: nodes,
            sequences: edges,
        });
    }
    let rows = [
        ("steps recorded", stats.successes + stats.failures),
        ("  succeeded", stats.successes),
        ("  failed", stats.failures),
        ("distinct commands", nodes as u64),
        ("command sequences", edges as u64),
        ("success patterns", stats.unique_success_patterns),
        ("failure patterns", stats.unique_failure_patterns),
        ("lessons", stats.lessons),
        ("flaky steps", stats.flaky_steps),
    ];
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, value)| vec![name.to_string(), value.to_string()])
        .collect();
    table(&["WHAT", "COUNT"], &rows)
}

fn lessons(lessons: &[Lesson], as_json: bool) -> String {
    let empty = "no lessons yet: no error has repeated at one step often enough\n";
    listing(
        lessons,
        as_json,
        empty,
        &["COUNT", "STATUS", "STEP", "ERROR"],
        |lesson| {
            vec![
                lesson.count.to_string(),
                lesson.status().to_string(),
                lesson.location.to_string(),
                one_line(&lesson.signature.text, 90),
            ]
        },
    )
}

fn flaky(steps: &[FlakyStep], as_json: bool) -> String {
    let empty = "no flaky steps: no step both passed and failed at one commit\n";
    listing(
        steps,
        as_json,
        empty,
        &["COMMITS", "LAST", "STEP", "COMMAND"],
        |step| {
            vec![
                step.flaky_commits.to_string(),
                short_sha(&step.last_commit_sha).to_string(),
                step.location.to_string(),
                one_line(&step.command, 60),
            ]
        },
    )
}

/// `items` as JSON, as the `empty` message when there are none, else as a
/// table with `headers` and a `row` per item.
fn listing<T: Serialize>(
    items: &[T],
    as_json: bool,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> String {
    if as_json {
        return to_json(&items);
    }
    if items.is_empty() {
        return empty.into();
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

/// The JSON answer of `learn predict`.
#[derive(Serialize)]
struct PredictAnswer<'a> {
    command: &'a str,
    normalized: String,
    repository: Option<String>,
    probability: f64,
    evidence: Evidence<'a>,
}

/// What a prediction rests on.
#[derive(Serialize)]
struct Evidence<'a> {
    level: EvidenceLevel,
    successes: u64,
    failures: u64,
    concepts: &'a [Concept],
    failure_signatures: Vec<SignatureCount>,
}

/// How often a command failed with one error.
#[derive(Serialize)]
struct SignatureCount {
    count: u64,
    signature: String,
}

fn predict(
    learning: &LearningCoordinator,
    command: &str,
    repository: Option<String>,
    as_json: bool,
) -> String {
    let context = PredictionContext {
        repository: repository.clone(),
    };
    let prediction = learning.predict_success(command, &context);
    let (concepts, signatures) = failure_signatures(learning, command);
    if !as_json {
        return prediction_text(&prediction, command, repository, &concepts, &signatures);
    }
    let failure_signatures = signatures
        .into_iter()
        .map(|(count, signature)| SignatureCount { count, signature })
        .collect();
    to_json(&PredictAnswer {
        command,
        normalized: firerunner_learning::normalize_command(command),
        repository,
        probability: prediction.probability,
        evidence: Evidence {
            level: prediction.level,
            successes: prediction.successes,
            failures: prediction.failures,
            concepts: &concepts,
            failure_signatures,
        },
    })
}

/// The command's concepts and its five most frequent failure signatures
/// (with their counts).
fn failure_signatures(
    learning: &LearningCoordinator,
    command: &str,
) -> (Vec<Concept>, Vec<(u64, String)>) {
    let (concepts, mut signatures) = learning.with_graph(|graph| match graph.node(command) {
        Some(node) => (
            node.concepts.clone(),
            node.signatures
                .values()
                .map(|entry| (entry.count, entry.signature.text.clone()))
                .collect::<Vec<_>>(),
        ),
        None => (firerunner_learning::concepts_of(command), Vec::new()),
    });
    signatures.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    signatures.truncate(5);
    (concepts, signatures)
}

/// A prediction for a person: the probability, what it rests on and the
/// command's failures.
fn prediction_text(
    prediction: &Prediction,
    command: &str,
    repository: Option<String>,
    concepts: &[Concept],
    signatures: &[(u64, String)],
) -> String {
    let concept_names: Vec<&str> = concepts.iter().map(|c| c.as_str()).collect();
    let basis = match prediction.level {
        EvidenceLevel::CommandInRepository => format!(
            "this command in {}",
            repository.as_deref().unwrap_or("the repository")
        ),
        EvidenceLevel::Command => "this command in every repository".to_string(),
        EvidenceLevel::Concept => format!(
            "commands doing the same work ({}); this command was never seen",
            concept_names.join(", ")
        ),
        EvidenceLevel::Prior => "nothing: the command and its kind were never seen".to_string(),
    };
    let mut out = format!(
        "P(success) = {:.2}  for `{}`\n",
        prediction.probability,
        one_line(command, 80)
    );
    out.push_str(&format!(
        "evidence: {} success(es), {} failure(s) of {basis}\n",
        prediction.successes, prediction.failures
    ));
    out.push_str("method: (successes + 1) / (runs + 2), a Beta(1, 1) prior\n");
    if !signatures.is_empty() {
        out.push_str("its failures:\n");
        let rows: Vec<Vec<String>> = signatures
            .iter()
            .map(|(count, text)| vec![count.to_string(), one_line(text, 90)])
            .collect();
        out.push_str(&table(&["COUNT", "ERROR"], &rows));
    }
    out
}

fn related(learning: &LearningCoordinator, command: &str, limit: usize, as_json: bool) -> String {
    let related = learning.with_graph(|graph| graph.find_related_commands(command, limit));
    if as_json {
        return to_json(&related);
    }
    if related.is_empty() {
        return format!(
            "nothing known to be related to `{}`\n",
            one_line(command, 80)
        );
    }
    let rows: Vec<Vec<String>> = related
        .iter()
        .map(|r| {
            let concepts: Vec<&str> = r.shared_concepts.iter().map(|c| c.as_str()).collect();
            vec![
                format!("{:.2}", r.score),
                r.sequence_count.to_string(),
                if concepts.is_empty() {
                    "-".into()
                } else {
                    concepts.join(",")
                },
                one_line(&r.command, 70),
            ]
        })
        .collect();
    table(&["SCORE", "SEQUENCES", "SHARED", "COMMAND"], &rows)
}

/// The JSON answer of `learn next`.
#[derive(Serialize)]
struct NextAnswer<'a> {
    command: &'a str,
    next: Option<&'a str>,
    count: u64,
}

fn next(learning: &LearningCoordinator, command: &str, as_json: bool) -> String {
    let next = learning.with_graph(|graph| graph.next_command(command));
    if as_json {
        let (next, count) = match &next {
            Some((next, count)) => (Some(next.as_str()), *count),
            None => (None, 0),
        };
        return to_json(&NextAnswer {
            command,
            next,
            count,
        });
    }
    match next {
        Some((next, count)) => format!(
            "after `{}`: `{}` ({count} time(s) run next, both succeeding)\n",
            one_line(command, 60),
            one_line(&next, 70)
        ),
        None => format!(
            "nothing is known to run after `{}`\n",
            one_line(command, 80)
        ),
    }
}

/// One line per hint, for the summary of `firerunner run`.
pub fn hint_lines(hints: &[Hint]) -> Vec<String> {
    hints.iter().map(|hint| format!("hint: {hint}")).collect()
}

/// Hint lines by (job instance name, step index).
pub type StepHints = HashMap<(String, usize), Vec<String>>;

/// A finished job instance's name and its steps as learning records, each
/// with its index in the job's steps (as the engine makes them).
pub type LearnedJob = (String, Vec<(usize, StepRecord)>);

/// Records the steps of `firerunner run` into the learning store. Failures
/// are reported as warnings and never fail the run.
pub struct Recorder {
    learning: LearningCoordinator,
}

impl Recorder {
    /// Opens the store at `url`, or warns and returns `None`.
    pub async fn open(url: Option<&str>) -> Option<Self> {
        let url = match url {
            Some(url) => url.to_string(),
            None => match default_database_url() {
                Ok(url) => url,
                Err(error) => {
                    eprintln!("firerunner: warning: not learning from this run: {error:#}");
                    return None;
                }
            },
        };
        match open(&url).await {
            Ok(learning) => Some(Self { learning }),
            Err(error) => {
                eprintln!("firerunner: warning: not learning from this run: {error:#}");
                None
            }
        }
    }

    /// Records every step of the finished jobs and returns the hints the
    /// store had for each failed step (looked up before the step is recorded).
    pub async fn record_jobs(&self, jobs: &[LearnedJob]) -> StepHints {
        let mut hints = StepHints::new();
        let mut failed_records = 0usize;
        for (name, records) in jobs {
            for (index, record) in records {
                if record.outcome == Conclusion::Failure {
                    let lines = hint_lines(&self.learning.hints_for_failure(record));
                    if !lines.is_empty() {
                        hints.insert((name.clone(), *index), lines);
                    }
                }
                if let Err(error) = self.learning.record_step(record.clone()).await {
                    failed_records += 1;
                    if failed_records == 1 {
                        eprintln!("firerunner: warning: recording a step for learning: {error}");
                    }
                }
            }
        }
        if let Err(error) = self.learning.flush().await {
            eprintln!("firerunner: warning: saving what this run taught: {error}");
        }
        hints
    }

    /// Flushes and closes the store (warning on failure).
    pub async fn close(self) {
        if let Err(error) = self.learning.close().await {
            eprintln!("firerunner: warning: closing the learning store: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firerunner_learning::StepRecord;
    use std::time::{Duration, UNIX_EPOCH};

    fn failure(commit: &str, log: &str) -> StepRecord {
        StepRecord {
            run_id: format!("run-{commit}"),
            repository: "octo/app".into(),
            commit_sha: commit.into(),
            workflow: "CI".into(),
            job: "test".into(),
            step_name: "unit".into(),
            command: "npm test".into(),
            outcome: Conclusion::Failure,
            exit_code: Some(1),
            duration: Duration::from_secs(3),
            log_tail: log.into(),
            timestamp: UNIX_EPOCH + Duration::from_secs(1_000),
        }
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["A", "LONG HEADER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(
            text,
            "A          LONG HEADER\n---------  -----------\nwide cell  x\nb          y\n"
        );
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("two\nlines", 40), "two ⏎ lines");
    }

    #[tokio::test]
    async fn a_lesson_that_failed_again_after_its_fix_reads_failing() {
        let store = LearningStore::connect("sqlite::memory:").await.unwrap();
        let learning = LearningCoordinator::open(store, LearningConfig::default())
            .await
            .unwrap();
        let log = "Error: Cannot find module 'left-pad'";
        for commit in ["c1", "c2", "c3"] {
            learning.record_step(failure(commit, log)).await.unwrap();
        }
        let mut fixed = failure("c4fixed", "");
        fixed.outcome = Conclusion::Success;
        learning.record_step(fixed).await.unwrap();
        learning.record_step(failure("c5", log)).await.unwrap();
        let text = lessons(&learning.lessons(), false);
        let row = text.lines().nth(2).expect("one lesson row");
        assert!(
            row.starts_with("4      failing  octo/app CI/test/unit"),
            "{text}"
        );
        learning.close().await.unwrap();
    }

    #[tokio::test]
    async fn hints_name_known_failures_and_their_fix() {
        let store = LearningStore::connect("sqlite::memory:").await.unwrap();
        let learning = LearningCoordinator::open(store, LearningConfig::default())
            .await
            .unwrap();
        let log = "Error: Cannot find module 'left-pad'";
        for commit in ["c1", "c2", "c3"] {
            learning.record_step(failure(commit, log)).await.unwrap();
        }
        let mut fixed = failure("c4fixed", "");
        fixed.outcome = Conclusion::Success;
        fixed.command = "npm ci && npm test".into();
        learning.record_step(fixed).await.unwrap();
        let lines = hint_lines(&learning.hints_for_failure(&failure("c5", log)));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("hint: known failure, seen 3 time(s) here: "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("left-pad"), "{}", lines[0]);
        assert!(
            lines[0].contains(
                "last fixed in commit c4fixed by changing the command to `npm ci && npm test`"
            ),
            "{}",
            lines[0]
        );
        learning.close().await.unwrap();
    }
}
