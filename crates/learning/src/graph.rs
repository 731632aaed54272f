//! The in-memory command knowledge graph.
//!
//! Nodes are normalised commands ([`crate::normalize_command`]) with success/failure counts, concept
//! tags and failure signatures; an edge A → B counts how often B ran right after A succeeded in the
//! same job and both succeeded.

use crate::concepts::{concepts_of, Concept};
use crate::normalize::normalize_command;
use crate::signature::ErrorSignature;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;
use std::collections::HashMap;

/// Statistics of one failure signature on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCount {
    /// The signature.
    pub signature: ErrorSignature,
    /// How many failures carried it.
    pub count: u64,
}

/// One node: a normalised command and what happened when it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// The normalised command (the node key).
    pub command: String,
    /// Concepts found in the command.
    pub concepts: Vec<Concept>,
    /// Successful runs.
    pub successes: u64,
    /// Failed runs.
    pub failures: u64,
    /// Failure signatures by hash.
    pub signatures: HashMap<String, SignatureCount>,
    /// Success/failure counts per repository.
    pub by_repository: HashMap<String, (u64, u64)>,
}

/// What a prediction is asked about besides the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PredictionContext {
    /// Repository (e.g. `owner/name`) the command would run in, when known.
    pub repository: Option<String>,
}

/// Which evidence a [`Prediction`] rests on, from most to least specific
/// (serialized in snake case, e.g. `command_in_repository`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceLevel {
    /// This command in this repository.
    CommandInRepository,
    /// This command anywhere.
    Command,
    /// Commands sharing a concept with this one (the command itself is new).
    Concept,
    /// Nothing known: the uniform prior.
    Prior,
}

/// A calibrated success probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Posterior mean of a Beta(1, 1) prior updated with the evidence: `(s + 1) / (s + f + 2)`.
    pub probability: f64,
    /// Successes counted as evidence.
    pub successes: u64,
    /// Failures counted as evidence.
    pub failures: u64,
    /// The level the evidence comes from.
    pub level: EvidenceLevel,
}

impl Prediction {
    fn from_counts(successes: u64, failures: u64, level: EvidenceLevel) -> Self {
        Prediction {
            probability: (successes as f64 + 1.0) / ((successes + failures) as f64 + 2.0),
            successes,
            failures,
            level,
        }
    }

    /// Number of observations the prediction rests on.
    pub fn evidence(&self) -> u64 {
        self.successes + self.failures
    }
}

/// A command related to the one asked about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelatedCommand {
    /// The related normalised command.
    pub command: String,
    /// Ranking score: share of sequence edges between the two plus the Jaccard index of concepts.
    pub score: f64,
    /// Observed sequences between the two commands (both directions).
    #[serde(rename = "sequences")]
    pub sequence_count: u64,
    /// Concepts both commands have.
    pub shared_concepts: Vec<Concept>,
}

/// A command failing with a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingSignature {
    /// The normalised command.
    pub command: String,
    /// The signature.
    pub signature: ErrorSignature,
    /// How often the command failed with it.
    pub count: u64,
}

/// The command knowledge graph (see the module docs).
#[derive(Debug, Default)]
pub struct CommandKnowledgeGraph {
    graph: StableDiGraph<NodeStats, u64>,
    index: HashMap<String, NodeIndex>,
    concept_counts: HashMap<Concept, (u64, u64)>,
}

impl CommandKnowledgeGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Number of sequence edges.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    fn ensure_node(&mut self, key: &str) -> NodeIndex {
        if let Some(index) = self.index.get(key) {
            return *index;
        }
        let index = self.graph.add_node(NodeStats {
            command: key.to_string(),
            concepts: concepts_of(key),
            successes: 0,
            failures: 0,
            signatures: HashMap::new(),
            by_repository: HashMap::new(),
        });
        self.index.insert(key.to_string(), index);
        index
    }

    /// Records one run of the normalised command `key` in `repository`.
    pub fn observe(
        &mut self,
        key: &str,
        repository: &str,
        success: bool,
        signature: Option<&ErrorSignature>,
    ) {
        self.add_counts(key, repository, u64::from(success), u64::from(!success));
        if let (false, Some(signature)) = (success, signature) {
            self.add_signature(key, signature, 1);
        }
    }

    /// Adds success/failure counts to a node (used when loading from the store).
    pub fn add_counts(&mut self, key: &str, repository: &str, successes: u64, failures: u64) {
        let index = self.ensure_node(key);
        let node = &mut self.graph[index];
        node.successes += successes;
        node.failures += failures;
        let per_repo = node
            .by_repository
            .entry(repository.to_string())
            .or_default();
        per_repo.0 += successes;
        per_repo.1 += failures;
        for concept in node.concepts.clone() {
            let counts = self.concept_counts.entry(concept).or_default();
            counts.0 += successes;
            counts.1 += failures;
        }
    }

    /// Adds `count` failures with `signature` to a node's signature table.
    pub fn add_signature(&mut self, key: &str, signature: &ErrorSignature, count: u64) {
        let index = self.ensure_node(key);
        self.graph[index]
            .signatures
            .entry(signature.hash.clone())
            .or_insert_with(|| SignatureCount {
                signature: signature.clone(),
                count: 0,
            })
            .count += count;
    }

    /// Adds `count` observations of `to` following `from` successfully.
    pub fn add_sequence(&mut self, from: &str, to: &str, count: u64) {
        let source = self.ensure_node(from);
        let target = self.ensure_node(to);
        match self.graph.find_edge(source, target) {
            Some(edge) => self.graph[edge] += count,
            None => {
                self.graph.add_edge(source, target, count);
            }
        }
    }

    /// The node of a command, raw or normalised.
    pub fn node(&self, command: &str) -> Option<&NodeStats> {
        self.lookup(command).map(|index| &self.graph[index])
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeStats> {
        self.graph.node_weights()
    }

    fn lookup(&self, command: &str) -> Option<NodeIndex> {
        self.index
            .get(command)
            .or_else(|| self.index.get(&normalize_command(command)))
            .copied()
    }

    /// Probability that `command` succeeds, using the most specific evidence available:
    /// the command in the context's repository, the command anywhere, then its concepts.
    pub fn predict_success(&self, command: &str, context: &PredictionContext) -> Prediction {
        if let Some(node) = self.node(command) {
            if let Some(&(successes, failures)) = context
                .repository
                .as_ref()
                .and_then(|repository| node.by_repository.get(repository))
            {
                if successes + failures > 0 {
                    return Prediction::from_counts(
                        successes,
                        failures,
                        EvidenceLevel::CommandInRepository,
                    );
                }
            }
            if node.successes + node.failures > 0 {
                return Prediction::from_counts(
                    node.successes,
                    node.failures,
                    EvidenceLevel::Command,
                );
            }
        }
        let (successes, failures) = concepts_of(command)
            .iter()
            .filter_map(|concept| self.concept_counts.get(concept))
            .fold((0, 0), |acc, counts| (acc.0 + counts.0, acc.1 + counts.1));
        if successes + failures > 0 {
            Prediction::from_counts(successes, failures, EvidenceLevel::Concept)
        } else {
            Prediction::from_counts(0, 0, EvidenceLevel::Prior)
        }
    }

    /// Commands related to `command` through observed sequences or shared concepts, best first.
    pub fn find_related_commands(&self, command: &str, limit: usize) -> Vec<RelatedCommand> {
        let concepts = match self.node(command) {
            Some(node) => node.concepts.clone(),
            None => concepts_of(command),
        };
        let own = self.lookup(command);
        let sequences = own.map(|index| self.neighbours(index)).unwrap_or_default();
        let total_sequences: u64 = sequences.values().sum();
        let mut related: Vec<RelatedCommand> = self
            .graph
            .node_indices()
            .filter(|index| Some(*index) != own)
            .filter_map(|index| {
                let sequence_count = sequences.get(&index).copied().unwrap_or(0);
                let sequence_share = if total_sequences == 0 {
                    0.0
                } else {
                    sequence_count as f64 / total_sequences as f64
                };
                related_command(
                    &self.graph[index],
                    &concepts,
                    sequence_count,
                    sequence_share,
                )
            })
            .collect();
        related.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.command.cmp(&b.command))
        });
        related.truncate(limit);
        related
    }

    /// The commands run right before or after the one at `index`, with how
    /// often.
    fn neighbours(&self, index: NodeIndex) -> HashMap<NodeIndex, u64> {
        let mut sequences: HashMap<NodeIndex, u64> = HashMap::new();
        for direction in [Direction::Outgoing, Direction::Incoming] {
            for edge in self.graph.edges_directed(index, direction) {
                let other = if direction == Direction::Outgoing {
                    edge.target()
                } else {
                    edge.source()
                };
                if other != index {
                    *sequences.entry(other).or_default() += *edge.weight();
                }
            }
        }
        sequences
    }

    /// The command most often run successfully right after `command`, with its count.
    pub fn next_command(&self, command: &str) -> Option<(String, u64)> {
        let index = self.lookup(command)?;
        self.graph
            .edges_directed(index, Direction::Outgoing)
            .map(|edge| (self.graph[edge.target()].command.clone(), *edge.weight()))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
    }

    /// Every observed sequence (command, the command run successfully right
    /// after it, how often), most frequent first.
    pub fn sequences(&self) -> Vec<(String, String, u64)> {
        let mut sequences: Vec<(String, String, u64)> = self
            .graph
            .edge_indices()
            .filter_map(|edge| {
                let (from, to) = self.graph.edge_endpoints(edge)?;
                Some((
                    self.graph[from].command.clone(),
                    self.graph[to].command.clone(),
                    self.graph[edge],
                ))
            })
            .collect();
        sequences.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        sequences
    }

    /// Every (command, signature) failure pair, most frequent first.
    pub fn failing_signatures(&self) -> Vec<FailingSignature> {
        let mut failing: Vec<FailingSignature> = self
            .graph
            .node_weights()
            .flat_map(|node| {
                node.signatures.values().map(|entry| FailingSignature {
                    command: node.command.clone(),
                    signature: entry.signature.clone(),
                    count: entry.count,
                })
            })
            .collect();
        failing.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.command.cmp(&b.command))
                .then_with(|| a.signature.text.cmp(&b.signature.text))
        });
        failing
    }
}

/// `node` as related to a command with `concepts`: scored by the share of
/// that command's sequences it is in plus the Jaccard index of their
/// concepts; `None` when it shares neither.
fn related_command(
    node: &NodeStats,
    concepts: &[Concept],
    sequence_count: u64,
    sequence_share: f64,
) -> Option<RelatedCommand> {
    let shared: Vec<Concept> = node
        .concepts
        .iter()
        .filter(|concept| concepts.contains(concept))
        .copied()
        .collect();
    if shared.is_empty() && sequence_count == 0 {
        return None;
    }
    let union = concepts.len() + node.concepts.len() - shared.len();
    let jaccard = if union == 0 {
        0.0
    } else {
        shared.len() as f64 / union as f64
    };
    Some(RelatedCommand {
        command: node.command.clone(),
        score: sequence_share + jaccard,
        sequence_count,
        shared_concepts: shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(repository: &str) -> PredictionContext {
        PredictionContext {
            repository: Some(repository.to_string()),
        }
    }

    #[test]
    fn prediction_is_smoothed_and_uses_the_most_specific_level() {
        let mut graph = CommandKnowledgeGraph::new();
        let key = normalize_command("cargo test");
        for _ in 0..8 {
            graph.observe(&key, "a/one", true, None);
        }
        let error = ErrorSignature::from_text("error: boom");
        for _ in 0..2 {
            graph.observe(&key, "a/two", false, Some(&error));
        }
        let in_repo = graph.predict_success("cargo test", &context("a/two"));
        assert_eq!(in_repo.level, EvidenceLevel::CommandInRepository);
        assert!((in_repo.probability - 0.25).abs() < 1e-9);
        let anywhere = graph.predict_success("cargo  test", &context("b/new"));
        assert_eq!(anywhere.level, EvidenceLevel::Command);
        assert_eq!(anywhere.evidence(), 10);
        assert!((anywhere.probability - 9.0 / 12.0).abs() < 1e-9);
    }

    #[test]
    fn new_commands_fall_back_to_concepts_then_prior() {
        let mut graph = CommandKnowledgeGraph::new();
        graph.observe("pytest", "r", true, None);
        graph.observe("pytest", "r", true, None);
        graph.observe("go test", "r", false, None);
        let concept = graph.predict_success("cargo test --release", &PredictionContext::default());
        assert_eq!(concept.level, EvidenceLevel::Concept);
        assert_eq!((concept.successes, concept.failures), (2, 1));
        let prior = graph.predict_success("frobnicate", &PredictionContext::default());
        assert_eq!(prior.level, EvidenceLevel::Prior);
        assert!((prior.probability - 0.5).abs() < 1e-9);
    }

    #[test]
    fn next_and_related_commands_follow_sequences_and_concepts() {
        let mut graph = CommandKnowledgeGraph::new();
        graph.add_sequence("npm ci", "npm test", 5);
        graph.add_sequence("npm ci", "npm run lint", 2);
        graph.add_sequence("git fetch", "npm ci", 1);
        graph.observe("pnpm install", "r", true, None);
        assert_eq!(
            graph.next_command("npm ci"),
            Some(("npm test".to_string(), 5))
        );
        assert_eq!(graph.next_command("npm test"), None);
        let related = graph.find_related_commands("npm ci", 10);
        let names: Vec<&str> = related.iter().map(|r| r.command.as_str()).collect();
        assert_eq!(
            names,
            vec!["pnpm install", "npm test", "npm run lint", "git fetch"]
        );
        assert_eq!(related[1].sequence_count, 5);
        assert_eq!(related[0].shared_concepts, vec![Concept::Install]);
    }

    #[test]
    fn failing_signatures_are_counted_per_command() {
        let mut graph = CommandKnowledgeGraph::new();
        let a = ErrorSignature::from_text("error: a");
        let b = ErrorSignature::from_text("error: b");
        graph.observe("make", "r", false, Some(&a));
        graph.observe("make", "r", false, Some(&a));
        graph.observe("make", "r", false, Some(&b));
        graph.observe("make", "r", true, Some(&b));
        let failing = graph.failing_signatures();
        assert_eq!(failing.len(), 2);
        assert_eq!(
            (failing[0].signature.text.as_str(), failing[0].count),
            ("error: a", 2)
        );
        assert_eq!(failing[1].count, 1);
        let node = graph.node("make").expect("node");
        assert_eq!((node.successes, node.failures), (1, 3));
    }
}
