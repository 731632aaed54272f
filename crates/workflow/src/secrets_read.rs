//! Which secrets a job names: `secrets.NAME` or `secrets['NAME']` inside the
//! `${{ }}` expressions of its `env`, its steps (`name`, `run`, `with`,
//! `env`, `shell`, `working-directory`), its `environment` and the
//! workflow's `env`. The runner warns about the names it was not given
//! (GitHub's empty string), so a name is read from the text without
//! evaluating anything.

use std::collections::BTreeSet;

use crate::model::{ControlStep, Job, JobBody, ParsedWorkflow, Step, StepAction};
use crate::value::Value;

/// The secret names `job` of `workflow` reads, upper-cased (secret names
/// are case-insensitive), `GITHUB_TOKEN` included when it is named.
pub fn secrets_read(workflow: &ParsedWorkflow, job: &Job) -> BTreeSet<String> {
    let mut texts: Vec<&str> = Vec::new();
    texts.extend(workflow.env.values().map(|t| t.value.as_str()));
    texts.extend(job.env.values().map(|t| t.value.as_str()));
    if let Some(environment) = &job.environment {
        value_texts(&environment.value, &mut texts);
    }
    if let JobBody::Steps(steps) = &job.body {
        for step in steps {
            step_texts(step, &mut texts);
        }
    }
    let mut names = BTreeSet::new();
    for text in texts {
        names_in(text, &mut names);
    }
    names
}

fn step_texts<'a>(step: &'a Step, out: &mut Vec<&'a str>) {
    out.extend(step.name.iter().map(|t| t.value.as_str()));
    out.extend(step.env.values().map(|t| t.value.as_str()));
    match &step.action {
        StepAction::Run {
            script,
            shell,
            working_directory,
        } => {
            out.push(&script.value);
            out.extend(
                shell
                    .iter()
                    .chain(working_directory)
                    .map(|t| t.value.as_str()),
            );
        }
        StepAction::Uses { with, .. } => {
            for value in with.values() {
                value_texts(&value.value, out);
            }
        }
        StepAction::Control(ControlStep::Parallel(steps)) => {
            for step in steps {
                step_texts(step, out);
            }
        }
        StepAction::Control(_) => {}
    }
}

fn value_texts<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| value_texts(item, out)),
        Value::Object(map) => map.iter().for_each(|(_, item)| value_texts(item, out)),
        _ => {}
    }
}

/// Adds the names after `secrets.` or inside `secrets['...']` within the
/// `${{ }}` parts of `text`.
fn names_in(text: &str, names: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let inside = &rest[start + 3..];
        let end = inside.find("}}").unwrap_or(inside.len());
        names_in_expression(&inside[..end], names);
        rest = &inside[end..];
    }
}

fn names_in_expression(expression: &str, names: &mut BTreeSet<String>) {
    let bytes = expression.as_bytes();
    let lower = expression.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("secrets") {
        let at = from + found;
        from = at + "secrets".len();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            continue;
        }
        let after = expression[from..].trim_start();
        let name = if let Some(member) = after.strip_prefix('.') {
            identifier(member.trim_start())
        } else if let Some(index) = after.strip_prefix('[') {
            quoted(index.trim_start())
        } else {
            None
        };
        if let Some(name) = name {
            names.insert(name.to_ascii_uppercase());
        }
    }
}

fn identifier(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

fn quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = &text[1..];
    let end = inner.find(quote)?;
    (end > 0).then(|| &inner[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_workflow;

    fn read(yaml: &str) -> Vec<String> {
        let workflow = parse_workflow("ci.yml", yaml).unwrap();
        let job = workflow.jobs.values().next().unwrap();
        secrets_read(&workflow, job).into_iter().collect()
    }

    #[test]
    fn member_and_index_forms_in_every_place_are_found() {
        let yaml = "on: push
env:
  TOP: ${{ secrets.top_level }}
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment:
      name: production
      url: ${{ secrets.URL_SECRET }}
    env:
      A: ${{ secrets['Docker_User'] }}
    steps:
      - name: login ${{ secrets.NAME_IN_NAME }}
        run: echo ${{ secrets.DOCKER_PASSWORD }} && echo ${{secrets . SPACED}}
        env:
          B: ${{ format('{0}', secrets['QUOTED']) }}
      - uses: actions/checkout@v4
        with:
          token: ${{ secrets.GITHUB_TOKEN || secrets.FALLBACK }}
";
        assert_eq!(
            read(yaml),
            [
                "DOCKER_PASSWORD",
                "DOCKER_USER",
                "FALLBACK",
                "GITHUB_TOKEN",
                "NAME_IN_NAME",
                "QUOTED",
                "SPACED",
                "TOP_LEVEL",
                "URL_SECRET"
            ]
        );
    }

    #[test]
    fn text_outside_expressions_and_other_words_are_not_names() {
        let yaml = "on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo secrets.NOT_AN_EXPRESSION ${{ github.event.mysecrets.X }} ${{ env.secrets }}
";
        assert!(read(yaml).is_empty());
    }
}
