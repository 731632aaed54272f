//! The learning coordinator: records steps, keeps totals, finds lessons and flaky steps.
//!
//! # Durability
//! [`LearningCoordinator::record_step`] updates the in-memory state at once and queues the step's
//! rows on a bounded channel; a background writer task drains the queue and writes up to
//! [`LearningConfig::batch_size`] steps per transaction (each step's rows always land together).
//! When the queue is full, `record_step` waits for the writer (back-pressure). A crash loses at
//! most the queued steps; [`LearningCoordinator::flush`] waits until everything recorded before it
//! is committed and reports a writer failure, and [`LearningCoordinator::close`] flushes and stops.

use crate::graph::{CommandKnowledgeGraph, Prediction, PredictionContext};
use crate::model::{
    one_line, short_sha, FixedBy, FlakyStep, LearningStats, Lesson, StepLocation, StepRecord,
};
use crate::normalize::normalize_command;
use crate::signature::{signature_from_log, ErrorSignature, DEFAULT_TAIL_LINES};
use crate::store::{LearningStore, Snapshot, StepRow, StepWrite};
use crate::LearningError;
use firerunner_workflow::Conclusion;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Tuning of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearningConfig {
    /// Failures with the same signature at the same step before a lesson is reported (default 3).
    pub lesson_threshold: u64,
    /// Log lines looked at for a failure signature (default 50).
    pub log_tail_lines: usize,
    /// Capacity of the write-behind queue, in steps (default 4096).
    pub queue_capacity: usize,
    /// Most steps written per transaction (default 256).
    pub batch_size: usize,
    /// Jobs whose last step is remembered to link sequences (default 4096, oldest forgotten first).
    pub tracked_jobs: usize,
    /// Whose lessons a failure's hints may name (default: its own repository's only).
    pub hint_scope: HintScope,
}

/// How far hints reach: what is learned in one repository is never shown for
/// another unless the operator allows its owner's other repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HintScope {
    /// Lessons of the failing step's own repository.
    #[default]
    Repository,
    /// Lessons of every repository of the same owner (`owner/*`).
    Owner,
}

impl HintScope {
    /// Whether a lesson learned in `learned_in` may be shown for `repository`.
    pub fn covers(self, learned_in: &str, repository: &str) -> bool {
        let owner = |name: &str| name.split('/').next().unwrap_or_default().to_string();
        match self {
            HintScope::Repository => learned_in == repository,
            HintScope::Owner => owner(learned_in) == owner(repository),
        }
    }
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            lesson_threshold: 3,
            log_tail_lines: DEFAULT_TAIL_LINES,
            queue_capacity: 4096,
            batch_size: 256,
            tracked_jobs: 4096,
            hint_scope: HintScope::Repository,
        }
    }
}

/// A hint for a failing step (for a PR comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// The failure matches a lesson (same signature; at this step or elsewhere).
    KnownFailure {
        /// The lesson.
        lesson: Lesson,
        /// Whether the lesson was learnt at this very step.
        same_step: bool,
    },
    /// The step is known to be flaky.
    Flaky(FlakyStep),
}

impl std::fmt::Display for Hint {
    /// One line for a person: what the store knows about this failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hint::Flaky(step) => write!(
                f,
                "this step is flaky: it both passed and failed at {} commit(s), latest {}",
                step.flaky_commits,
                short_sha(&step.last_commit_sha)
            ),
            Hint::KnownFailure { lesson, same_step } => {
                let place = if *same_step {
                    "here".to_string()
                } else {
                    format!("at {}", lesson.location)
                };
                write!(
                    f,
                    "known failure, seen {} time(s) {place}: {}",
                    lesson.count,
                    one_line(&lesson.signature.text, 100)
                )?;
                if let Some(fixed) = &lesson.fixed_by {
                    write!(f, "; last fixed in commit {}", short_sha(&fixed.commit_sha))?;
                    if let Some(command) = &fixed.command {
                        write!(f, " by changing the command to `{}`", one_line(command, 60))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// What recording a step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStep {
    /// The normalised command.
    pub command_key: String,
    /// The failure signature, for a failed step with a log.
    pub signature: Option<ErrorSignature>,
    /// The step's lesson reached the threshold with this failure.
    pub new_lesson: bool,
    /// This step made its commit a flaky one.
    pub became_flaky: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OutcomeKey {
    repository: String,
    workflow: String,
    job: String,
    command: String,
    commit_sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlakyKey {
    repository: String,
    workflow: String,
    job: String,
    command: String,
}

#[derive(Debug, Default)]
struct State {
    graph: CommandKnowledgeGraph,
    successes: u64,
    failures: u64,
    outcomes: HashMap<OutcomeKey, (u64, u64)>,
    flaky: HashMap<FlakyKey, FlakyStep>,
    lessons: HashMap<(String, StepLocation), Lesson>,
    lessons_by_location: HashMap<StepLocation, HashSet<String>>,
    last_in_job: HashMap<(String, String), (String, bool)>,
    job_order: VecDeque<(String, String)>,
}

impl State {
    /// The state the store's `snapshot` holds.
    fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut state = State::default();
        for (key, repository, successes, failures) in snapshot.node_stats {
            state
                .graph
                .add_counts(&key, &repository, successes, failures);
            state.successes += successes;
            state.failures += failures;
        }
        for (from, to, count) in snapshot.edges {
            state.graph.add_sequence(&from, &to, count);
        }
        for (key, signature, count) in snapshot.signatures {
            state.graph.add_signature(&key, &signature, count);
        }
        for (location, command, commit_sha, passes, failures) in snapshot.outcomes {
            state.outcomes.insert(
                OutcomeKey {
                    repository: location.repository,
                    workflow: location.workflow,
                    job: location.job,
                    command,
                    commit_sha,
                },
                (passes, failures),
            );
        }
        for lesson in snapshot.lessons {
            state.insert_lesson(lesson);
        }
        for flaky in snapshot.flaky {
            state.flaky.insert(
                FlakyKey {
                    repository: flaky.location.repository.clone(),
                    workflow: flaky.location.workflow.clone(),
                    job: flaky.location.job.clone(),
                    command: flaky.command.clone(),
                },
                flaky,
            );
        }
        state
    }

    fn is_flaky(&self, location: &StepLocation, command: &str) -> bool {
        self.flaky.contains_key(&FlakyKey {
            repository: location.repository.clone(),
            workflow: location.workflow.clone(),
            job: location.job.clone(),
            command: command.to_string(),
        })
    }

    fn insert_lesson(&mut self, lesson: Lesson) {
        self.lessons_by_location
            .entry(lesson.location.clone())
            .or_default()
            .insert(lesson.signature.hash.clone());
        self.lessons.insert(
            (lesson.signature.hash.clone(), lesson.location.clone()),
            lesson,
        );
    }

    /// Counts a step in the graph and the totals.
    fn count(
        &mut self,
        key: &str,
        repository: &str,
        success: bool,
        signature: Option<&ErrorSignature>,
    ) {
        self.graph.observe(key, repository, success, signature);
        if success {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
    }

    /// Remembers `key` as the latest step of its job (forgetting the oldest jobs past
    /// `tracked_jobs`); returns the previous step's command when both succeeded, after
    /// counting that sequence in the graph.
    fn follow_job(
        &mut self,
        step: &StepRecord,
        key: &str,
        success: bool,
        tracked_jobs: usize,
    ) -> Option<String> {
        let job_key = (step.run_id.clone(), step.job.clone());
        let previous = self
            .last_in_job
            .insert(job_key.clone(), (key.to_string(), success));
        if previous.is_none() {
            self.job_order.push_back(job_key);
            while self.job_order.len() > tracked_jobs.max(1) {
                if let Some(oldest) = self.job_order.pop_front() {
                    self.last_in_job.remove(&oldest);
                }
            }
        }
        match previous {
            Some((previous_key, true)) if success => {
                self.graph.add_sequence(&previous_key, key, 1);
                Some(previous_key)
            }
            _ => None,
        }
    }

    /// Counts the step's outcome at its commit; returns the flaky step when this outcome
    /// made the commit a flaky one (it both passed and failed there).
    fn count_outcome(
        &mut self,
        step: &StepRecord,
        location: &StepLocation,
        key: &str,
        success: bool,
    ) -> Option<FlakyStep> {
        let outcome = self
            .outcomes
            .entry(OutcomeKey {
                repository: step.repository.clone(),
                workflow: step.workflow.clone(),
                job: step.job.clone(),
                command: key.to_string(),
                commit_sha: step.commit_sha.clone(),
            })
            .or_default();
        let was_flaky_commit = outcome.0 > 0 && outcome.1 > 0;
        if success {
            outcome.0 += 1;
        } else {
            outcome.1 += 1;
        }
        let became_flaky = !was_flaky_commit && outcome.0 > 0 && outcome.1 > 0;
        became_flaky.then(|| self.mark_flaky(step, location, key))
    }

    fn mark_flaky(&mut self, step: &StepRecord, location: &StepLocation, key: &str) -> FlakyStep {
        let flaky = self
            .flaky
            .entry(FlakyKey {
                repository: step.repository.clone(),
                workflow: step.workflow.clone(),
                job: step.job.clone(),
                command: key.to_string(),
            })
            .or_insert_with(|| FlakyStep {
                location: location.clone(),
                command: key.to_string(),
                flaky_commits: 0,
                last_commit_sha: String::new(),
                first_detected: step.timestamp,
                last_detected: step.timestamp,
            });
        flaky.flaky_commits += 1;
        flaky.location = location.clone();
        flaky.last_commit_sha = step.commit_sha.clone();
        flaky.last_detected = step.timestamp;
        flaky.clone()
    }

    /// Counts a failure with `signature` at `location` in its lesson (a new one at first);
    /// returns the lesson as it is now.
    fn lesson_failed(
        &mut self,
        signature: &ErrorSignature,
        location: &StepLocation,
        key: &str,
        step: &StepRecord,
    ) -> Lesson {
        let lesson_key = (signature.hash.clone(), location.clone());
        if let Some(lesson) = self.lessons.get_mut(&lesson_key) {
            lesson.count += 1;
            lesson.command = key.to_string();
            lesson.last_seen = step.timestamp;
            lesson.last_commit_sha = step.commit_sha.clone();
            lesson.still_failing = true;
            lesson.fixed_by = None;
            return lesson.clone();
        }
        let lesson = Lesson {
            signature: signature.clone(),
            location: location.clone(),
            command: key.to_string(),
            count: 1,
            first_seen: step.timestamp,
            last_seen: step.timestamp,
            last_commit_sha: step.commit_sha.clone(),
            still_failing: true,
            fixed_by: None,
        };
        self.insert_lesson(lesson.clone());
        lesson
    }

    /// Marks the failing lessons of `location` fixed by a pass at a later commit; returns them.
    fn lessons_fixed(
        &mut self,
        location: &StepLocation,
        key: &str,
        commit_sha: &str,
    ) -> Vec<Lesson> {
        let mut fixed = Vec::new();
        let Some(hashes) = self.lessons_by_location.get(location) else {
            return fixed;
        };
        for hash in hashes {
            let Some(lesson) = self.lessons.get_mut(&(hash.clone(), location.clone())) else {
                continue;
            };
            if lesson.still_failing && lesson.last_commit_sha != commit_sha {
                lesson.still_failing = false;
                lesson.fixed_by = Some(FixedBy {
                    commit_sha: commit_sha.to_string(),
                    command: (lesson.command != key).then(|| key.to_string()),
                });
                fixed.push(lesson.clone());
            }
        }
        fixed
    }
}

enum WriterMessage {
    Step(Box<StepWrite>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Records steps and answers questions about them (see the module docs for durability).
#[derive(Debug)]
pub struct LearningCoordinator {
    config: LearningConfig,
    state: Arc<Mutex<State>>,
    sender: mpsc::Sender<WriterMessage>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for WriterMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMessage::Step(_) => formatter.write_str("Step"),
            WriterMessage::Flush(_) => formatter.write_str("Flush"),
        }
    }
}

impl LearningCoordinator {
    /// Loads the state from `store` and starts the background writer (needs a tokio runtime).
    pub async fn open(store: LearningStore, config: LearningConfig) -> Result<Self, LearningError> {
        let state = State::from_snapshot(store.load().await?);
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let writer = tokio::spawn(run_writer(store, receiver, config.batch_size.max(1)));
        Ok(LearningCoordinator {
            config,
            state: Arc::new(Mutex::new(state)),
            sender,
            writer,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one step: updates the graph, totals, lessons and flaky steps in memory, then queues
    /// its rows for the store.
    pub async fn record_step(&self, step: StepRecord) -> Result<RecordedStep, LearningError> {
        let (recorded, write) = self.apply(step);
        self.sender
            .send(WriterMessage::Step(Box::new(write)))
            .await
            .map_err(|_| LearningError::WriterStopped)?;
        Ok(recorded)
    }

    /// Updates the in-memory state with `step` and returns what it found and what to store.
    fn apply(&self, step: StepRecord) -> (RecordedStep, StepWrite) {
        let key = normalize_command(&step.command);
        let success = step.outcome == Conclusion::Success;
        let signature = if success {
            None
        } else {
            signature_from_log(&step.log_tail, self.config.log_tail_lines)
        };
        let location = step.location();
        let mut state = self.state();
        state.count(&key, &step.repository, success, signature.as_ref());
        let sequence_from = state.follow_job(&step, &key, success, self.config.tracked_jobs);
        let flaky = state.count_outcome(&step, &location, &key, success);
        let mut new_lesson = false;
        let lessons = match signature.as_ref() {
            Some(signature) => {
                let lesson = state.lesson_failed(signature, &location, &key, &step);
                new_lesson = lesson.count == self.config.lesson_threshold;
                vec![lesson]
            }
            None if success => state.lessons_fixed(&location, &key, &step.commit_sha),
            None => Vec::new(),
        };
        drop(state);
        let recorded = RecordedStep {
            command_key: key.clone(),
            signature: signature.clone(),
            new_lesson,
            became_flaky: flaky.is_some(),
        };
        let write = StepWrite {
            row: StepRow::new(step, key, success, signature),
            sequence_from,
            lessons,
            flaky,
        };
        (recorded, write)
    }

    /// Totals and pattern counts.
    pub fn stats(&self) -> LearningStats {
        let state = self.state();
        let unique_success_patterns = state
            .graph
            .nodes()
            .filter(|node| node.successes > 0)
            .count() as u64;
        let unique_failure_patterns = state
            .graph
            .nodes()
            .map(|node| node.signatures.len() as u64)
            .sum();
        let lessons = self.lessons_in(&state).len() as u64;
        LearningStats {
            successes: state.successes,
            failures: state.failures,
            unique_success_patterns,
            unique_failure_patterns,
            lessons,
            flaky_steps: state.flaky.len() as u64,
        }
    }

    fn lessons_in(&self, state: &State) -> Vec<Lesson> {
        let mut lessons: Vec<Lesson> = state
            .lessons
            .values()
            .filter(|lesson| lesson.count >= self.config.lesson_threshold)
            .filter(|lesson| !state.is_flaky(&lesson.location, &lesson.command))
            .cloned()
            .collect();
        lessons.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.location.cmp(&b.location))
                .then_with(|| a.signature.text.cmp(&b.signature.text))
        });
        lessons
    }

    /// Lessons: signatures that failed at least `lesson_threshold` times at one step, most frequent
    /// first. Failures of a step known to be flaky are explained by the flakiness and are left out.
    pub fn lessons(&self) -> Vec<Lesson> {
        self.lessons_in(&self.state())
    }

    /// Steps that both passed and failed at one commit.
    pub fn flaky_steps(&self) -> Vec<FlakyStep> {
        let mut flaky: Vec<FlakyStep> = self.state().flaky.values().cloned().collect();
        flaky.sort_by(|a, b| {
            b.flaky_commits
                .cmp(&a.flaky_commits)
                .then_with(|| a.location.cmp(&b.location))
                .then_with(|| a.command.cmp(&b.command))
        });
        flaky
    }

    /// Hints for a failed step: the step is flaky, and lessons with the same signature (those of
    /// this very step first), from the repositories [`LearningConfig::hint_scope`] covers.
    pub fn hints_for_failure(&self, step: &StepRecord) -> Vec<Hint> {
        let key = normalize_command(&step.command);
        let location = step.location();
        let state = self.state();
        let mut hints = Vec::new();
        if let Some(flaky) = state.flaky.get(&FlakyKey {
            repository: step.repository.clone(),
            workflow: step.workflow.clone(),
            job: step.job.clone(),
            command: key,
        }) {
            hints.push(Hint::Flaky(flaky.clone()));
        }
        if let Some(signature) = signature_from_log(&step.log_tail, self.config.log_tail_lines) {
            let mut matching: Vec<(bool, Lesson)> = self
                .lessons_in(&state)
                .into_iter()
                .filter(|lesson| lesson.signature.hash == signature.hash)
                .filter(|lesson| {
                    self.config
                        .hint_scope
                        .covers(&lesson.location.repository, &step.repository)
                })
                .map(|lesson| (lesson.location == location, lesson))
                .collect();
            matching.sort_by_key(|(same_step, _)| !*same_step);
            hints.extend(
                matching
                    .into_iter()
                    .map(|(same_step, lesson)| Hint::KnownFailure { lesson, same_step }),
            );
        }
        hints
    }

    /// Success probability of `command` (see [`CommandKnowledgeGraph::predict_success`]).
    pub fn predict_success(&self, command: &str, context: &PredictionContext) -> Prediction {
        self.state().graph.predict_success(command, context)
    }

    /// Runs `query` on the knowledge graph.
    pub fn with_graph<T>(&self, query: impl FnOnce(&CommandKnowledgeGraph) -> T) -> T {
        query(&self.state().graph)
    }

    /// Waits until every step recorded before this call is committed; reports a writer failure
    /// that happened since the previous flush.
    pub async fn flush(&self) -> Result<(), LearningError> {
        let (reply, done) = oneshot::channel();
        self.sender
            .send(WriterMessage::Flush(reply))
            .await
            .map_err(|_| LearningError::WriterStopped)?;
        done.await
            .map_err(|_| LearningError::WriterStopped)?
            .map_err(LearningError::WriterFailed)
    }

    /// Flushes and stops the writer.
    pub async fn close(self) -> Result<(), LearningError> {
        let flushed = self.flush().await;
        drop(self.sender);
        self.writer
            .await
            .map_err(|error| LearningError::WriterFailed(error.to_string()))?;
        flushed
    }
}

async fn run_writer(
    store: LearningStore,
    mut receiver: mpsc::Receiver<WriterMessage>,
    batch_size: usize,
) {
    let mut failure: Option<String> = None;
    let mut batch: Vec<StepWrite> = Vec::with_capacity(batch_size);
    while let Some(first) = receiver.recv().await {
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Step(write) => batch.push(*write),
                WriterMessage::Flush(reply) => {
                    flushes.push(reply);
                    break;
                }
            }
            if batch.len() >= batch_size {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if !batch.is_empty() {
            if let Err(error) = store.write_batch(&batch).await {
                failure.get_or_insert_with(|| error.to_string());
            }
            batch.clear();
        }
        for reply in flushes {
            let _ = reply.send(match failure.take() {
                Some(error) => Err(error),
                None => Ok(()),
            });
        }
    }
}
