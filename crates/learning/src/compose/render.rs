//! Writing the workflow YAML of a read request.

use super::request::{Condition, Matrix, Step, Triggers};

/// A YAML scalar: plain when that is safe, else single-quoted.
fn scalar(text: &str) -> String {
    let plain_safe = !text.is_empty()
        && !text.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.contains('\n')
        && !text.contains("${{")
        && !["true", "false", "null", "yes", "no", "on", "off", "~"]
            .contains(&text.to_ascii_lowercase().as_str())
        && text.parse::<f64>().is_err();
    if plain_safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

fn list(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|value| format!("'{}'", value.replace('\'', "''")))
        .collect();
    format!("[{}]", items.join(", "))
}

pub(super) fn render(triggers: &Triggers, matrices: &[Matrix], steps: &[Step]) -> String {
    let mut yaml = String::from("name: CI\non:\n");
    write_triggers(&mut yaml, triggers);
    yaml.push_str("jobs:\n  ci:\n");
    write_strategy(&mut yaml, matrices);
    yaml.push_str("    steps:\n      - uses: actions/checkout@v4\n");
    for matrix in matrices {
        write_setup(&mut yaml, matrix);
    }
    for step in steps {
        write_step(&mut yaml, step);
    }
    yaml
}

/// The events under `on:`.
fn write_triggers(yaml: &mut String, triggers: &Triggers) {
    if triggers.push.is_some() || triggers.tags {
        yaml.push_str("  push:\n");
        if let Some(branches) = triggers.push.as_ref().filter(|b| !b.is_empty()) {
            yaml.push_str(&format!("    branches: {}\n", list(branches)));
        } else if triggers.tags && triggers.push.is_none() {
            yaml.push_str("    tags: ['*']\n");
        }
        if triggers.tags && triggers.push.is_some() {
            yaml.push_str("    tags: ['*']\n");
        }
    }
    if let Some(branches) = &triggers.pull_request {
        yaml.push_str("  pull_request:\n");
        if !branches.is_empty() {
            yaml.push_str(&format!("    branches: {}\n", list(branches)));
        }
    }
    if !triggers.schedule.is_empty() {
        yaml.push_str("  schedule:\n");
        for cron in &triggers.schedule {
            yaml.push_str(&format!("    - cron: '{}'\n", cron.replace('\'', "''")));
        }
    }
    if triggers.dispatch {
        yaml.push_str("  workflow_dispatch:\n");
    }
}

/// The job's `runs-on` and its matrix.
fn write_strategy(yaml: &mut String, matrices: &[Matrix]) {
    if matrices.iter().any(|matrix| matrix.key == "os") {
        yaml.push_str("    runs-on: ${{ matrix.os }}\n");
    } else {
        yaml.push_str("    runs-on: ubuntu-latest\n");
    }
    if !matrices.is_empty() {
        yaml.push_str("    strategy:\n      fail-fast: false\n      matrix:\n");
        for matrix in matrices {
            yaml.push_str(&format!(
                "        {}: {}\n",
                matrix.key,
                list(&matrix.values)
            ));
        }
    }
}

/// The setup action (action, version input, Java distribution) of each
/// toolchain a matrix may vary.
const SETUP_ACTIONS: &[(&str, &str, &str, Option<&str>)] = &[
    ("node", "actions/setup-node@v4", "node-version", None),
    ("python", "actions/setup-python@v5", "python-version", None),
    ("go", "actions/setup-go@v5", "go-version", None),
    (
        "java",
        "actions/setup-java@v4",
        "java-version",
        Some("temurin"),
    ),
    ("ruby", "ruby/setup-ruby@v1", "ruby-version", None),
];

/// The step that installs the version `matrix` varies, if it is a toolchain.
fn write_setup(yaml: &mut String, matrix: &Matrix) {
    let setup = SETUP_ACTIONS.iter().find(|(key, ..)| *key == matrix.key);
    if let Some((_, action, input, distribution)) = setup {
        yaml.push_str(&format!("      - uses: {action}\n        with:\n"));
        if let Some(distribution) = distribution {
            yaml.push_str(&format!("          distribution: {distribution}\n"));
        }
        yaml.push_str(&format!(
            "          {input}: ${{{{ matrix.{} }}}}\n",
            matrix.key
        ));
    } else if matrix.key == "rust" {
        yaml.push_str(
            "      - run: rustup toolchain install ${{ matrix.rust }} --profile minimal && rustup default ${{ matrix.rust }}\n",
        );
    }
}

/// One `run` step, with its name and condition.
fn write_step(yaml: &mut String, step: &Step) {
    let mut first = true;
    let mut line = |key: &str, value: String| {
        let lead = if first { "      - " } else { "        " };
        first = false;
        yaml.push_str(&format!("{lead}{key}: {value}\n"));
    };
    if let Some(name) = &step.name {
        line("name", scalar(name));
    }
    match step.condition {
        Condition::Success => {}
        Condition::Failure => line("if", "failure()".into()),
        Condition::Always => line("if", "always()".into()),
    }
    line("run", scalar(&step.run));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        assert_eq!(scalar("cargo test"), "cargo test");
        assert_eq!(scalar("echo a: b"), "'echo a: b'");
        assert_eq!(scalar("it's"), "it's");
        assert_eq!(scalar("'x'"), "'''x'''");
        assert_eq!(scalar("3.10"), "'3.10'");
        assert_eq!(scalar("yes"), "'yes'");
    }
}
