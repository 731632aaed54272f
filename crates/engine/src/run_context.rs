//! The contexts and default variables a run starts from.

use std::collections::BTreeMap;

use firerunner_workflow::{Object, Value};

use crate::job::GuestLayout;

/// The contexts known before a run is planned: `github` with what the event
/// gives (`event_name`, `event`, `ref`, `ref_name`), the given `inputs`, and
/// empty `vars`. `git_ref` is used when the payload has no `ref` (a pull
/// request's is `refs/pull/<n>/merge`).
pub fn event_contexts(
    event: &firerunner_workflow::trigger::Event,
    git_ref: &str,
    inputs: &Object,
) -> Object {
    let mut github = Object::new();
    let event_ref = event
        .payload
        .get("ref")
        .and_then(|r| r.as_str())
        .unwrap_or(git_ref);
    github.insert("event_name", Value::from(event.name.as_str()));
    github.insert("event", Value::from(event.payload.clone()));
    github.insert("ref", Value::from(event_ref));
    let ref_name = ["refs/heads/", "refs/tags/", "refs/pull/"]
        .iter()
        .find_map(|prefix| event_ref.strip_prefix(prefix))
        .unwrap_or(event_ref);
    github.insert("ref_name", Value::from(ref_name));
    let mut contexts = Object::new();
    contexts.insert("github", Value::Object(github));
    contexts.insert("inputs", Value::Object(inputs.clone()));
    contexts.insert("vars", Value::Object(Object::new()));
    contexts
}

/// The `github` context of a run: what the event gives (`event_name`,
/// `event`, `ref`, `ref_name`), plus the repository, commit, run and
/// server fields GitHub fills in.
pub fn github_context(
    contexts: &Object,
    repository: &str,
    sha: &str,
    run_id: &str,
    workflow: &str,
    layout: &GuestLayout,
) -> Object {
    let mut github = match contexts.get("github") {
        Some(Value::Object(github)) => github.clone(),
        _ => Object::new(),
    };
    let owner = repository.split('/').next().unwrap_or_default();
    let actor = std::env::var("USER").unwrap_or_else(|_| "firerunner".into());
    for (key, value) in [
        ("repository", repository),
        ("repository_owner", owner),
        ("sha", sha),
        ("run_id", run_id),
        ("run_number", "1"),
        ("run_attempt", "1"),
        ("actor", actor.as_str()),
        ("triggering_actor", actor.as_str()),
        ("workflow", workflow),
        ("workspace", layout.workspace.as_str()),
        ("server_url", "https://github.com"),
        ("api_url", "https://api.github.com"),
        ("graphql_url", "https://api.github.com/graphql"),
        ("action", "__run"),
        ("token", ""),
    ] {
        github.insert(key, Value::from(value));
    }
    github.insert("ref_type", Value::from(ref_type(&github)));
    let (head_ref, base_ref) = pull_request_refs(&github);
    github.insert("head_ref", Value::from(head_ref.as_str()));
    github.insert("base_ref", Value::from(base_ref.as_str()));
    github
}

/// `github.ref_type`: `tag` for `refs/tags/...`, else `branch`.
fn ref_type(github: &Object) -> &'static str {
    match github.get("ref") {
        Some(Value::String(s)) if s.starts_with("refs/tags/") => "tag",
        _ => "branch",
    }
}

/// `github.head_ref` and `github.base_ref`: set for pull request events only.
fn pull_request_refs(github: &Object) -> (String, String) {
    let is_pr = matches!(github.get("event_name"), Some(Value::String(name)) if name.starts_with("pull_request"));
    if !is_pr {
        return (String::new(), String::new());
    }
    let pr_ref = |side: &str| -> Option<String> {
        let Some(Value::Object(event)) = github.get("event") else {
            return None;
        };
        let Some(Value::Object(pr)) = event.get("pull_request") else {
            return None;
        };
        let Some(Value::Object(end)) = pr.get(side) else {
            return None;
        };
        match end.get("ref") {
            Some(Value::String(name)) => Some(name.clone()),
            _ => None,
        }
    };
    (
        pr_ref("head").unwrap_or_default(),
        pr_ref("base").unwrap_or_default(),
    )
}

/// The default environment variables of every step (`CI`, `GITHUB_*`,
/// `RUNNER_*`, `HOME`, `PATH`), from the `github` context.
pub fn default_env(github: &Object, layout: &GuestLayout) -> BTreeMap<String, String> {
    let text = |key: &str| match github.get(key) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let mut env = BTreeMap::new();
    for (name, value) in [
        ("CI", "true".to_string()),
        ("GITHUB_ACTIONS", "true".to_string()),
        ("GITHUB_WORKSPACE", layout.workspace.clone()),
        ("GITHUB_REPOSITORY", text("repository")),
        ("GITHUB_REPOSITORY_OWNER", text("repository_owner")),
        ("GITHUB_SHA", text("sha")),
        ("GITHUB_REF", text("ref")),
        ("GITHUB_REF_NAME", text("ref_name")),
        ("GITHUB_REF_TYPE", text("ref_type")),
        ("GITHUB_HEAD_REF", text("head_ref")),
        ("GITHUB_BASE_REF", text("base_ref")),
        ("GITHUB_EVENT_NAME", text("event_name")),
        ("GITHUB_RUN_ID", text("run_id")),
        ("GITHUB_RUN_NUMBER", text("run_number")),
        ("GITHUB_RUN_ATTEMPT", text("run_attempt")),
        ("GITHUB_ACTOR", text("actor")),
        ("GITHUB_WORKFLOW", text("workflow")),
        ("GITHUB_SERVER_URL", text("server_url")),
        ("GITHUB_API_URL", text("api_url")),
        ("GITHUB_GRAPHQL_URL", text("graphql_url")),
        ("RUNNER_OS", "Linux".to_string()),
        ("RUNNER_ARCH", "X64".to_string()),
        ("RUNNER_NAME", "firerunner".to_string()),
        ("RUNNER_TEMP", layout.temp.clone()),
        ("RUNNER_TOOL_CACHE", layout.tool_cache.clone()),
        ("HOME", layout.home.clone()),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
    ] {
        env.insert(name.to_string(), value);
    }
    env
}

/// The `workflow_dispatch` inputs of a run: the typed `inputs` context
/// (booleans and numbers as such, declared defaults for what is not given)
/// and the payload's `inputs` object, where GitHub gives every value as a string.
pub fn dispatch_inputs(
    workflow: &firerunner_workflow::ParsedWorkflow,
    given: &[(String, String)],
) -> (Object, serde_json::Map<String, serde_json::Value>) {
    event_inputs(workflow, "workflow_dispatch", given)
}

/// [`dispatch_inputs`] for `event`: the inputs `on.workflow_dispatch`
/// declares, or for `workflow_call` (a reusable workflow run on its own,
/// its inputs from a `-e` payload) those `on.workflow_call` declares.
pub fn event_inputs(
    workflow: &firerunner_workflow::ParsedWorkflow,
    event: &str,
    given: &[(String, String)],
) -> (Object, serde_json::Map<String, serde_json::Value>) {
    use firerunner_workflow::model::InputType;
    let mut typed = Object::new();
    let mut strings = serde_json::Map::new();
    let declared = match event {
        "workflow_call" => workflow.on.workflow_call.as_ref().map(|c| c.inputs.clone()),
        _ => workflow
            .on
            .workflow_dispatch
            .as_ref()
            .map(|d| d.inputs.clone()),
    }
    .unwrap_or_default();
    for (name, input) in &declared {
        let value = match given.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, text)) => match input.kind {
                InputType::Boolean => Value::Bool(text == "true"),
                InputType::Number => text
                    .parse::<f64>()
                    .map(Value::Number)
                    .unwrap_or_else(|_| Value::from(text.as_str())),
                _ => Value::from(text.as_str()),
            },
            None => input.default.clone().unwrap_or_else(|| Value::from("")),
        };
        strings.insert(
            name.clone(),
            serde_json::Value::String(firerunner_workflow::expr::to_string(&value).into_owned()),
        );
        typed.insert(name.clone(), value);
    }
    for (name, text) in given {
        if !declared.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            typed.insert(name.clone(), Value::from(text.as_str()));
            strings.insert(name.clone(), serde_json::Value::String(text.clone()));
        }
    }
    (typed, strings)
}

/// A stand-in for the `GITHUB_TOKEN` secret when none is given: GitHub
/// always provides one, so workflows expect it to be set (and masked). It
/// grants nothing.
pub fn placeholder_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hex = String::from("ghs_");
    for round in 0..3u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hex.push_str(&format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_call_inputs_are_typed_by_their_declaration_like_dispatch_ones() {
        let text = "on:\n  workflow_call:\n    inputs:\n      debug:\n        type: boolean\n        default: false\n      count:\n        type: number\n      name:\n        type: string\n        default: mona\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo\n";
        let workflow = firerunner_workflow::load::parse_workflow("w.yml", text).unwrap();
        let given = [
            ("debug".to_string(), "true".to_string()),
            ("count".to_string(), "3".to_string()),
        ];
        let (typed, strings) = event_inputs(&workflow, "workflow_call", &given);
        assert_eq!(typed.get("debug"), Some(&Value::Bool(true)));
        assert_eq!(typed.get("count"), Some(&Value::Number(3.0)));
        assert_eq!(typed.get("name"), Some(&Value::from("mona")));
        assert_eq!(strings["debug"], "true");
        let (none, _) = event_inputs(&workflow, "workflow_dispatch", &[]);
        assert!(none.is_empty(), "dispatch declares nothing here");
    }
}
