//! The `needs` graph: validation and a scheduler that starts each job as soon
//! as the jobs it needs have finished.

use std::collections::BTreeSet;

use indexmap::IndexMap;

use crate::diagnostic::Diagnostic;
use crate::model::{Job, ParsedWorkflow};
use crate::Conclusion;

/// Checks every `needs` entry: unknown jobs, a job needing itself, and cycles
/// (each reported once, at the entry that closes it).
pub fn check_needs(workflow: &ParsedWorkflow) -> Vec<Diagnostic> {
    let file = workflow.file.as_str();
    let jobs = &workflow.jobs;
    let mut out = Vec::new();
    for (id, job) in jobs {
        for need in &job.needs {
            if need.value == *id {
                out.push(Diagnostic::error(
                    file,
                    need.pos,
                    format!("jobs.{id}.needs: a job cannot need itself"),
                ));
            } else if !jobs.contains_key(&need.value) {
                let hint = crate::load::suggest_name(&need.value, jobs.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                out.push(Diagnostic::error(
                    file,
                    need.pos,
                    format!("jobs.{id}.needs: job '{}' does not exist{hint}", need.value),
                ));
            }
        }
    }
    out.extend(find_cycles(jobs).into_iter().map(|(job, entry, path)| {
        let pos = jobs[job].needs[entry].pos;
        Diagnostic::error(
            file,
            pos,
            format!(
                "jobs.{}.needs: dependency cycle: {}",
                jobs.get_index(job).map_or("", |(k, _)| k),
                path.join(" -> ")
            ),
        )
    }));
    out.sort_by_key(|d| d.pos);
    out
}

/// Where a job is in the depth-first search for cycles.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Active,
    Done,
}

/// Each cycle as (job index, needs entry index closing it, path of job ids).
fn find_cycles(jobs: &IndexMap<String, Job>) -> Vec<(usize, usize, Vec<String>)> {
    let edges = needs_edges(jobs);
    let mut marks = vec![Mark::New; jobs.len()];
    let mut cycles = Vec::new();
    for start in 0..jobs.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to try); `path` mirrors the stack.
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&(target, entry)) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::Active;
                    stack.push((target, 0));
                }
                Mark::Active if target != node => {
                    cycles.push((node, entry, cycle_path(jobs, &stack, target)));
                }
                _ => {}
            }
        }
    }
    cycles
}

/// For each job, the jobs it needs as (job index, needs entry index).
fn needs_edges(jobs: &IndexMap<String, Job>) -> Vec<Vec<(usize, usize)>> {
    jobs.values()
        .map(|job| {
            job.needs
                .iter()
                .enumerate()
                .filter_map(|(entry, n)| jobs.get_index_of(&n.value).map(|t| (t, entry)))
                .collect()
        })
        .collect()
}

/// The job ids of the cycle that closes at `target` on the search `stack`,
/// from `target` back to it.
fn cycle_path(
    jobs: &IndexMap<String, Job>,
    stack: &[(usize, usize)],
    target: usize,
) -> Vec<String> {
    let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
    let mut path: Vec<String> = stack[from..]
        .iter()
        .map(|(n, _)| jobs.get_index(*n).map_or(String::new(), |(k, _)| k.clone()))
        .collect();
    path.push(path[0].clone());
    path
}

/// Job ids in a stable topological order: each job after the jobs it needs,
/// and otherwise in declaration order. Jobs on a cycle or needing unknown
/// jobs come last, in declaration order.
pub fn topological_order(jobs: &IndexMap<String, Job>) -> Vec<String> {
    let mut scheduler = Scheduler::new(jobs.iter().map(|(id, job)| {
        (
            id.clone(),
            job.needs.iter().map(|n| n.value.clone()).collect(),
        )
    }));
    let mut order = Vec::with_capacity(jobs.len());
    loop {
        let ready = scheduler.start_ready();
        if ready.is_empty() {
            break;
        }
        for id in ready {
            scheduler.finish(&id, Conclusion::Success);
            order.push(id);
        }
    }
    order.extend(
        jobs.keys()
            .filter(|k| !order.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    order
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Waiting,
    Running,
    Finished(Conclusion),
}

/// Tracks which jobs may start: a job is ready as soon as every job it needs
/// has finished, whatever their results (the job's `if:` decides what to do
/// with failed needs). Pure state machine, no threads.
#[derive(Debug, Clone)]
pub struct Scheduler {
    ids: Vec<String>,
    needs: Vec<Vec<usize>>,
    state: Vec<JobState>,
}

impl Scheduler {
    /// A scheduler over `(job id, ids it needs)` in declaration order. Needs
    /// naming unknown jobs are ignored (validation reports them).
    pub fn new(jobs: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let jobs: Vec<(String, Vec<String>)> = jobs.into_iter().collect();
        let index: std::collections::HashMap<&str, usize> = jobs
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let needs = jobs
            .iter()
            .map(|(_, needs)| {
                needs
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .collect()
            })
            .collect();
        let ids = jobs.iter().map(|(id, _)| id.clone()).collect();
        let state = vec![JobState::Waiting; jobs.len()];
        Self { ids, needs, state }
    }

    /// Marks every waiting job whose needs have all finished as running, and
    /// returns them in declaration order.
    pub fn start_ready(&mut self) -> Vec<String> {
        let ready: BTreeSet<usize> = (0..self.ids.len())
            .filter(|&i| self.state[i] == JobState::Waiting)
            .filter(|&i| {
                self.needs[i]
                    .iter()
                    .all(|&n| matches!(self.state[n], JobState::Finished(_)))
            })
            .collect();
        ready
            .into_iter()
            .map(|i| {
                self.state[i] = JobState::Running;
                self.ids[i].clone()
            })
            .collect()
    }

    /// Records how a job ended. Unknown ids are ignored.
    pub fn finish(&mut self, id: &str, result: Conclusion) {
        if let Some(i) = self.ids.iter().position(|x| x == id) {
            self.state[i] = JobState::Finished(result);
        }
    }

    /// The results of the jobs `id` needs, in the order it lists them.
    pub fn needs_results(&self, id: &str) -> Vec<(String, Option<Conclusion>)> {
        let Some(i) = self.ids.iter().position(|x| x == id) else {
            return Vec::new();
        };
        self.needs[i]
            .iter()
            .map(|&n| {
                let result = match self.state[n] {
                    JobState::Finished(r) => Some(r),
                    _ => None,
                };
                (self.ids[n].clone(), result)
            })
            .collect()
    }

    /// True when no job is waiting or running.
    pub fn is_done(&self) -> bool {
        self.state
            .iter()
            .all(|s| matches!(s, JobState::Finished(_)))
    }

    /// True when nothing runs and nothing can start: the rest wait on a cycle.
    pub fn is_stuck(&self) -> bool {
        !self.is_done()
            && !self.state.contains(&JobState::Running)
            && (0..self.ids.len()).all(|i| {
                self.state[i] != JobState::Waiting
                    || !self.needs[i]
                        .iter()
                        .all(|&n| matches!(self.state[n], JobState::Finished(_)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(spec: &[(&str, &[&str])]) -> Scheduler {
        Scheduler::new(spec.iter().map(|(id, needs)| {
            (
                id.to_string(),
                needs.iter().map(|s| s.to_string()).collect(),
            )
        }))
    }

    #[test]
    fn jobs_start_as_soon_as_their_own_needs_finish() {
        let mut s = sched(&[
            ("a", &[]),
            ("slow", &[]),
            ("b", &["a"]),
            ("c", &["b", "slow"]),
        ]);
        assert_eq!(s.start_ready(), vec!["a", "slow"]);
        s.finish("a", Conclusion::Success);
        assert_eq!(s.start_ready(), vec!["b"], "b must not wait for 'slow'");
        s.finish("b", Conclusion::Failure);
        assert!(s.start_ready().is_empty());
        s.finish("slow", Conclusion::Success);
        assert_eq!(s.start_ready(), vec!["c"]);
        assert_eq!(
            s.needs_results("c"),
            vec![
                ("b".into(), Some(Conclusion::Failure)),
                ("slow".into(), Some(Conclusion::Success))
            ]
        );
        s.finish("c", Conclusion::Skipped);
        assert!(s.is_done());
    }

    #[test]
    fn cycles_get_stuck() {
        let mut s = sched(&[("a", &["b"]), ("b", &["a"])]);
        assert!(s.start_ready().is_empty());
        assert!(s.is_stuck());
    }
}
