//! The context names GitHub gives steps: a step's `id:`, or for a step
//! without one a generated name (`__run`, `__actions_checkout`, `__self`,
//! with `_2`, `_3`, ... for repeats). A step's name is what `GITHUB_ACTION`
//! and `github.action` hold while it runs.

use std::collections::HashSet;

use crate::model::{ControlStep, Step, StepAction};

/// GitHub's longest generated name.
const MAX_LENGTH: usize = 100;

/// The context name of each of `steps` (a job's, or one composite action's),
/// in order. Explicit ids are kept as written (they cannot start with `__`,
/// so a generated name never equals one).
pub fn step_context_names(steps: &[Step]) -> Vec<String> {
    let mut taken: HashSet<String> = steps
        .iter()
        .filter_map(|step| step.id.as_ref().map(|id| id.value.clone()))
        .collect();
    steps
        .iter()
        .map(|step| match &step.id {
            Some(id) => id.value.clone(),
            None => unique(&segment(&format!("__{}", base_name(step))), &mut taken),
        })
        .collect()
}

/// What a step without an id is named after.
fn base_name(step: &Step) -> String {
    match &step.action {
        StepAction::Run { .. } => "run".into(),
        StepAction::Uses { uses, .. } => action_base(&uses.value).unwrap_or_else(|| "run".into()),
        StepAction::Control(ControlStep::Wait(_)) => "wait".into(),
        StepAction::Control(ControlStep::WaitAll) => "wait-all".into(),
        StepAction::Control(ControlStep::Cancel(_)) => "cancel".into(),
        StepAction::Control(ControlStep::Parallel(_)) => "run".into(),
    }
}

/// `docker://IMAGE` gives the image, `./path` gives `self`, and
/// `owner/repo[/path]@ref` gives `owner/repo`.
fn action_base(uses: &str) -> Option<String> {
    if let Some(image) = uses.strip_prefix("docker://") {
        return Some(image.to_owned());
    }
    if uses.starts_with("./") || uses.starts_with(".\\") {
        return Some("self".into());
    }
    let (target, git_ref) = uses.split_once('@')?;
    if git_ref.is_empty() || git_ref.contains('@') {
        return None;
    }
    let mut parts = target.split(['/', '\\']).filter(|s| !s.is_empty());
    let owner = parts.next()?;
    let repo = parts.next()?;
    Some(format!("{owner}/{repo}"))
}

/// `value` with every character other than ASCII letters, digits, `_` and
/// `-` replaced by `_`, and `_` put first when it starts with a digit or `-`.
fn segment(value: &str) -> String {
    let mut name = String::with_capacity(value.len() + 1);
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        name.push('_');
    }
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            name.push(c);
        } else {
            name.push('_');
        }
    }
    name
}

/// `name`, or `name_2`, `name_3`, ... (cut to [`MAX_LENGTH`]): the first
/// not yet taken, which it then takes.
fn unique(name: &str, taken: &mut HashSet<String>) -> String {
    for attempt in 1.. {
        let suffix = if attempt == 1 {
            String::new()
        } else {
            format!("_{attempt}")
        };
        let keep = name.len().min(MAX_LENGTH - suffix.len());
        let candidate = format!("{}{suffix}", &name[..keep]);
        if taken.insert(candidate.clone()) {
            return candidate;
        }
    }
    unreachable!("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps_yaml: &str) -> Vec<String> {
        let text = format!("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n{steps_yaml}");
        let workflow =
            crate::load::parse_workflow("ci.yml", &text).unwrap_or_else(|d| panic!("{d}"));
        let crate::model::JobBody::Steps(steps) = &workflow.jobs["j"].body else {
            panic!("steps")
        };
        step_context_names(steps)
    }

    #[test]
    fn steps_without_an_id_are_named_as_github_names_them() {
        let got = names(
            "      - run: echo one\n      - uses: actions/checkout@v4\n      - run: echo two\n      - id: build\n        run: make\n      - uses: actions/checkout@v4\n        with:\n          path: other\n      - uses: ./.github/actions/local\n      - uses: docker://alpine:3.20\n      - uses: octo/tools/sub/dir@v1\n      - run: echo three\n",
        );
        assert_eq!(
            got,
            [
                "__run",
                "__actions_checkout",
                "__run_2",
                "build",
                "__actions_checkout_2",
                "__self",
                "__alpine_3_20",
                "__octo_tools",
                "__run_3",
            ]
        );
    }

    #[test]
    fn repeats_take_the_next_free_suffix() {
        let mut taken = HashSet::from(["__run_2".to_string()]);
        assert_eq!(unique("__run", &mut taken), "__run");
        assert_eq!(unique("__run", &mut taken), "__run_3");
        assert_eq!(segment("__9lives"), "__9lives");
        assert_eq!(segment("9lives/x"), "_9lives_x");
    }

    #[test]
    fn long_names_are_cut_to_github_s_limit_with_their_suffix() {
        let mut taken = HashSet::new();
        let long = "a".repeat(150);
        assert_eq!(unique(&long, &mut taken).len(), 100);
        let second = unique(&long, &mut taken);
        assert_eq!(second.len(), 100);
        assert!(second.ends_with("_2"));
    }
}
