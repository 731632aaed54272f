//! Loading an action's metadata file (`action.yml`), for local composite
//! actions and to tell what other actions need.

use indexmap::IndexMap;

use super::checker::{get, Checker};
use super::{jobs, yaml};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Step, StepAction, Template};

const ACTION_KEYS: &[&str] = &[
    "name",
    "author",
    "description",
    "inputs",
    "outputs",
    "runs",
    "branding",
];
const INPUT_KEYS: &[&str] = &["description", "required", "default", "deprecationMessage"];
const OUTPUT_KEYS: &[&str] = &["description", "value"];

/// One input of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionInput {
    /// Whether the caller must give it.
    pub required: bool,
    /// Its default (may hold expressions).
    pub default: Option<Template>,
}

/// What an action runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionRuns {
    /// `using: composite` with its steps.
    Composite(Vec<Step>),
    /// `using: node20` (or another node version) with its entry point.
    Node {
        /// `using:`.
        using: String,
        /// `main:`.
        main: String,
        /// `pre:`: run before the job's first step.
        pre: Option<String>,
        /// `pre-if:` (default `always()`).
        pre_if: Option<String>,
        /// `post:`: run after the job's steps.
        post: Option<String>,
        /// `post-if:` (default `always()`).
        post_if: Option<String>,
    },
    /// `using: docker`.
    Docker {
        /// `image:`.
        image: String,
    },
}

/// A parsed `action.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedAction {
    /// `name:`.
    pub name: Option<String>,
    /// `inputs:`, in order.
    pub inputs: IndexMap<String, ActionInput>,
    /// `outputs:` with their `value:` (composite actions).
    pub outputs: IndexMap<String, Option<Template>>,
    /// `runs:`.
    pub runs: ActionRuns,
}

/// Parses an action's metadata; every problem is reported with `file:line:col`.
pub fn parse_action(file: &str, source: &str) -> Result<ParsedAction, Diagnostics> {
    let root = super::parse_root(file, source, "the action file is empty: it needs 'runs'")?;
    let mut c = Checker::new(file);
    let action = build(&mut c, &root);
    match (action, c.diagnostics.is_empty()) {
        (Some(action), true) => Ok(action),
        _ => {
            let mut diagnostics = c.diagnostics;
            if diagnostics.is_empty() {
                diagnostics.push(Diagnostic::error(file, root.pos, "action: missing 'runs'"));
            }
            Err(Diagnostics(diagnostics))
        }
    }
}

fn build(c: &mut Checker, root: &yaml::Node) -> Option<ParsedAction> {
    let entries = c.map_with_keys(root, "action", ACTION_KEYS)?;
    c.require(entries, root.pos, "action", &["runs"]);
    let name = get(entries, "name")
        .and_then(|n| c.string(n, "name"))
        .map(|n| n.value);
    let inputs = get(entries, "inputs")
        .map(|node| inputs(c, node))
        .unwrap_or_default();
    let outputs = get(entries, "outputs")
        .map(|node| outputs(c, node))
        .unwrap_or_default();
    let runs = runs(c, get(entries, "runs")?)?;
    Some(ParsedAction {
        name,
        inputs,
        outputs,
        runs,
    })
}

/// The action's `inputs:`.
fn inputs(c: &mut Checker, node: &yaml::Node) -> IndexMap<String, ActionInput> {
    let mut inputs = IndexMap::new();
    for (key, value) in c.map(node, "inputs").unwrap_or_default() {
        let Some(input_name) = key.as_str() else {
            continue;
        };
        let field = format!("inputs.{input_name}");
        let mut input = ActionInput {
            required: false,
            default: None,
        };
        if let Some(props) = c.map_with_keys(value, &field, INPUT_KEYS) {
            if let Some(required) = get(props, "required") {
                input.required = c
                    .bool_or_expr(required, &format!("{field}.required"))
                    .is_some_and(|v| matches!(v.value, crate::Value::Bool(true)));
            }
            if let Some(default) = get(props, "default") {
                input.default = c.string(default, &format!("{field}.default"));
            }
        }
        inputs.insert(input_name.to_string(), input);
    }
    inputs
}

/// The action's `outputs:` with their `value:`.
fn outputs(c: &mut Checker, node: &yaml::Node) -> IndexMap<String, Option<Template>> {
    let mut outputs = IndexMap::new();
    for (key, value) in c.map(node, "outputs").unwrap_or_default() {
        let Some(output_name) = key.as_str() else {
            continue;
        };
        let field = format!("outputs.{output_name}");
        let template = c
            .map_with_keys(value, &field, OUTPUT_KEYS)
            .and_then(|props| get(props, "value"))
            .and_then(|v| c.string(v, &format!("{field}.value")));
        outputs.insert(output_name.to_string(), template);
    }
    outputs
}

/// The action's `runs:`, by its `using:`.
fn runs(c: &mut Checker, runs_node: &yaml::Node) -> Option<ActionRuns> {
    let runs_entries = c.map(runs_node, "runs")?;
    let using = get(runs_entries, "using").and_then(|u| c.string(u, "runs.using"));
    let Some(using) = using else {
        c.error(runs_node.pos, "runs: missing 'using'");
        return None;
    };
    let text = |key: &str, c: &mut Checker| {
        get(runs_entries, key)
            .and_then(|v| c.string(v, &format!("runs.{key}")))
            .map(|v| v.value)
    };
    Some(match using.value.as_str() {
        "composite" => composite_runs(c, runs_node, runs_entries)?,
        "docker" => ActionRuns::Docker {
            image: text("image", c).unwrap_or_default(),
        },
        node if node.starts_with("node") => ActionRuns::Node {
            using: node.to_string(),
            main: text("main", c).unwrap_or_default(),
            pre: text("pre", c),
            pre_if: text("pre-if", c),
            post: text("post", c),
            post_if: text("post-if", c),
        },
        other => {
            c.error(
                using.pos,
                format!("runs.using: unknown value '{other}' (composite, node20, docker)"),
            );
            return None;
        }
    })
}

/// A composite action's `steps`, each `run` step with a `shell`.
fn composite_runs(
    c: &mut Checker,
    runs_node: &yaml::Node,
    runs_entries: &[(yaml::Node, yaml::Node)],
) -> Option<ActionRuns> {
    let Some(steps_node) = get(runs_entries, "steps") else {
        c.error(runs_node.pos, "runs: a composite action needs 'steps'");
        return None;
    };
    let steps = jobs::steps(c, steps_node, "runs.steps");
    for (index, step) in steps.iter().enumerate() {
        if let StepAction::Run { shell: None, .. } = &step.action {
            c.error(
                step.pos,
                format!("runs.steps[{index}]: 'shell' is required for 'run' steps in a composite action"),
            );
        }
    }
    Some(ActionRuns::Composite(steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composite_action_with_inputs_and_outputs() {
        let src = "name: Greet\ninputs:\n  who:\n    required: true\n  greeting:\n    default: hello\noutputs:\n  said:\n    value: ${{ steps.say.outputs.text }}\nruns:\n  using: composite\n  steps:\n    - id: say\n      shell: bash\n      run: echo \"text=${{ inputs.greeting }} ${{ inputs.who }}\" >> $GITHUB_OUTPUT\n";
        let action = parse_action("action.yml", src).unwrap();
        assert_eq!(action.name.as_deref(), Some("Greet"));
        assert!(action.inputs["who"].required);
        assert_eq!(
            action.inputs["greeting"].default.as_ref().unwrap().value,
            "hello"
        );
        assert!(action.outputs["said"]
            .as_ref()
            .unwrap()
            .value
            .contains("steps.say"));
        let ActionRuns::Composite(steps) = action.runs else {
            panic!("composite")
        };
        assert_eq!(steps.len(), 1);
    }

    #[test]
    fn composite_run_steps_need_a_shell_and_errors_have_positions() {
        let src = "runs:\n  using: composite\n  steps:\n    - run: echo hi\n";
        let err = parse_action("a/action.yml", src).unwrap_err();
        assert_eq!(
            err.0[0].to_string(),
            "a/action.yml:4:7: runs.steps[0]: 'shell' is required for 'run' steps in a composite action"
        );
        let err = parse_action("a/action.yml", "name: x\n").unwrap_err();
        assert!(err.0[0].to_string().contains("'runs'"), "{}", err.0[0]);
    }

    #[test]
    fn node_and_docker_actions_are_recognised() {
        let node = parse_action(
            "action.yml",
            "runs:\n  using: node20\n  main: dist/index.js\n",
        )
        .unwrap();
        assert_eq!(
            node.runs,
            ActionRuns::Node {
                using: "node20".into(),
                main: "dist/index.js".into(),
                pre: None,
                pre_if: None,
                post: None,
                post_if: None,
            }
        );
        let with_pre = parse_action(
            "action.yml",
            "runs:\n  using: node20\n  pre: setup.js\n  pre-if: runner.os == 'Linux'\n  main: main.js\n  post: cleanup.js\n  post-if: success()\n",
        )
        .unwrap();
        assert_eq!(
            with_pre.runs,
            ActionRuns::Node {
                using: "node20".into(),
                main: "main.js".into(),
                pre: Some("setup.js".into()),
                pre_if: Some("runner.os == 'Linux'".into()),
                post: Some("cleanup.js".into()),
                post_if: Some("success()".into()),
            }
        );
        let docker = parse_action(
            "action.yml",
            "runs:\n  using: docker\n  image: Dockerfile\n",
        )
        .unwrap();
        assert_eq!(
            docker.runs,
            ActionRuns::Docker {
                image: "Dockerfile".into()
            }
        );
    }
}
