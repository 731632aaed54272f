//! The `on:` section.

use indexmap::IndexMap;

use crate::model::{
    EventFilters, EventTrigger, Input, InputType, Template, Triggers, WorkflowCall,
    WorkflowCallOutput, WorkflowCallSecret, WorkflowDispatch,
};

use super::checker::{get, suggest, Checker};
use super::yaml::{Node, NodeKind};
use crate::expr::contexts as ctx;

/// Every event a workflow can listen to.
pub const EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "image_version",
    "issue_comment",
    "issues",
    "label",
    "merge_group",
    "milestone",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request",
    "pull_request_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_target",
    "push",
    "registry_package",
    "release",
    "repository_dispatch",
    "schedule",
    "status",
    "watch",
    "workflow_call",
    "workflow_dispatch",
    "workflow_run",
];

/// The activity types of comments, labels and branch protection rules.
const COMMENT_LIKE_TYPES: &[&str] = &["created", "edited", "deleted"];

/// The activity types of `pull_request` and `pull_request_target`.
const PULL_REQUEST_TYPES: &[&str] = &[
    "assigned",
    "unassigned",
    "labeled",
    "unlabeled",
    "opened",
    "edited",
    "closed",
    "reopened",
    "synchronize",
    "converted_to_draft",
    "locked",
    "unlocked",
    "enqueued",
    "dequeued",
    "milestoned",
    "demilestoned",
    "ready_for_review",
    "review_requested",
    "review_request_removed",
    "auto_merge_enabled",
    "auto_merge_disabled",
    "stacked",
];

/// The activity types of each event that has them, from GitHub's workflow schema.
const ACTIVITY_TYPES: &[(&str, &[&str])] = &[
    ("branch_protection_rule", COMMENT_LIKE_TYPES),
    ("discussion_comment", COMMENT_LIKE_TYPES),
    ("issue_comment", COMMENT_LIKE_TYPES),
    ("label", COMMENT_LIKE_TYPES),
    ("pull_request_review_comment", COMMENT_LIKE_TYPES),
    ("pull_request_comment", COMMENT_LIKE_TYPES),
    (
        "check_run",
        &["completed", "created", "rerequested", "requested_action"],
    ),
    ("check_suite", &["completed"]),
    (
        "discussion",
        &[
            "created",
            "edited",
            "deleted",
            "transferred",
            "pinned",
            "unpinned",
            "labeled",
            "unlabeled",
            "locked",
            "unlocked",
            "category_changed",
            "answered",
            "unanswered",
        ],
    ),
    ("image_version", &["created", "ready", "deleted"]),
    (
        "issues",
        &[
            "opened",
            "edited",
            "deleted",
            "transferred",
            "pinned",
            "unpinned",
            "closed",
            "reopened",
            "assigned",
            "unassigned",
            "labeled",
            "unlabeled",
            "locked",
            "unlocked",
            "milestoned",
            "demilestoned",
            "field_added",
            "field_removed",
            "typed",
            "untyped",
        ],
    ),
    ("merge_group", &["checks_requested"]),
    (
        "milestone",
        &["created", "closed", "opened", "edited", "deleted"],
    ),
    (
        "project",
        &["created", "closed", "reopened", "edited", "deleted"],
    ),
    (
        "project_card",
        &["created", "moved", "converted", "edited", "deleted"],
    ),
    (
        "project_column",
        &["created", "updated", "moved", "deleted"],
    ),
    ("pull_request", PULL_REQUEST_TYPES),
    ("pull_request_target", PULL_REQUEST_TYPES),
    ("pull_request_review", &["submitted", "edited", "dismissed"]),
    ("registry_package", &["published", "updated"]),
    (
        "release",
        &[
            "published",
            "unpublished",
            "created",
            "edited",
            "deleted",
            "prereleased",
            "released",
        ],
    ),
    ("watch", &["started"]),
    ("workflow_run", &["requested", "completed", "in_progress"]),
];

/// The activity types of `event`, if it has them.
fn activity_types(event: &str) -> Option<&'static [&'static str]> {
    ACTIVITY_TYPES
        .iter()
        .find(|(name, _)| *name == event)
        .map(|(_, types)| *types)
}

/// The `workflow_dispatch` event's configuration: its inputs.
fn workflow_dispatch(c: &mut Checker, config: Option<&Node>) -> WorkflowDispatch {
    let inputs = config
        .and_then(|node| c.map_with_keys(node, "on.workflow_dispatch", &["inputs"]))
        .and_then(|entries| get(entries, "inputs"))
        .map(|node| inputs(c, node, "on.workflow_dispatch.inputs", false))
        .unwrap_or_default();
    WorkflowDispatch { inputs }
}

/// Builds [`Triggers`] from the `on:` node.
pub fn build(c: &mut Checker, node: &Node) -> Triggers {
    let mut triggers = Triggers::default();
    match &node.kind {
        NodeKind::Scalar(..) => add_event(c, &mut triggers, node, None),
        NodeKind::Seq(items) => {
            for item in items {
                if item.as_str().is_some() {
                    add_event(c, &mut triggers, item, None);
                } else {
                    c.error(
                        item.pos,
                        format!("on: expected an event name, found {}", item.kind_name()),
                    );
                }
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                add_event(c, &mut triggers, key, Some(value));
            }
        }
    }
    if triggers.events.is_empty() && c.diagnostics.is_empty() {
        c.error(node.pos, "on: no events given");
    }
    triggers
}

fn add_event(c: &mut Checker, triggers: &mut Triggers, name_node: &Node, config: Option<&Node>) {
    let Some(name) = name_node.as_str() else {
        return;
    };
    if !EVENTS.contains(&name) {
        let hint = suggest(name, EVENTS.iter().copied())
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        c.error(name_node.pos, format!("on: unknown event '{name}'{hint}"));
        return;
    }
    if triggers.events.contains_key(name) {
        c.error(name_node.pos, format!("on: event '{name}' is listed twice"));
        return;
    }
    let field = format!("on.{name}");
    let mut trigger = EventTrigger {
        pos: name_node.pos,
        ..EventTrigger::default()
    };
    let config = config.filter(|n| !n.is_null());
    match name {
        "schedule" => match config {
            Some(node) => triggers.schedule = schedule(c, node),
            None => c.error(
                name_node.pos,
                "on.schedule: expected a sequence of {cron: ...} entries",
            ),
        },
        "workflow_dispatch" => triggers.workflow_dispatch = Some(workflow_dispatch(c, config)),
        "workflow_call" => triggers.workflow_call = Some(workflow_call(c, config)),
        _ => {
            if let Some(node) = config {
                filters(c, name, node, &field, &mut trigger);
            }
        }
    }
    triggers.events.insert(name.to_owned(), trigger);
}

fn filters(c: &mut Checker, event: &str, node: &Node, field: &str, trigger: &mut EventTrigger) {
    let Some(entries) = c.map_with_keys(node, field, filter_keys(event)) else {
        return;
    };
    let mut list = |key: &str| filter_list(c, entries, field, key);
    trigger.filters = EventFilters {
        branches: list("branches"),
        branches_ignore: list("branches-ignore"),
        tags: list("tags"),
        tags_ignore: list("tags-ignore"),
        paths: list("paths"),
        paths_ignore: list("paths-ignore"),
        types: list("types"),
    };
    trigger.workflows = list("workflows").unwrap_or_default();
    list("names");
    list("versions");
    warn_filter_pairs(c, entries, field);
    if let (Some(types), Some(known)) = (&trigger.filters.types, activity_types(event)) {
        check_activity_types(c, event, field, types, known);
    }
}

/// The filter keys `event` takes.
fn filter_keys(event: &str) -> &'static [&'static str] {
    match event {
        "push" => &[
            "branches",
            "branches-ignore",
            "tags",
            "tags-ignore",
            "paths",
            "paths-ignore",
        ],
        "pull_request" | "pull_request_target" => &[
            "types",
            "branches",
            "branches-ignore",
            "paths",
            "paths-ignore",
        ],
        "workflow_run" => &["types", "workflows", "branches", "branches-ignore"],
        "merge_group" => &["types", "branches", "branches-ignore"],
        "image_version" => &["types", "names", "versions"],
        _ => &["types"],
    }
}

/// The list under the filter `key`, its items checked: no expressions, and
/// valid patterns where the filter takes patterns.
fn filter_list(
    c: &mut Checker,
    entries: &[(Node, Node)],
    field: &str,
    key: &str,
) -> Option<Vec<Template>> {
    let node = get(entries, key)?;
    let f = format!("{field}.{key}");
    let items = c.string_list(node, &f);
    for item in &items {
        if item.contains("${{") {
            c.error(item.pos, format!("{f}: expressions are not allowed here"));
        } else if !matches!(key, "types" | "workflows" | "names" | "versions") {
            if let Err(err) = crate::trigger::validate_pattern(item) {
                c.error(
                    item.pos,
                    format!("{f}: invalid pattern '{}': {err}", item.value),
                );
            }
        }
    }
    Some(items)
}

/// Warns about a filter used together with its `-ignore` twin.
fn warn_filter_pairs(c: &mut Checker, entries: &[(Node, Node)], field: &str) {
    for (a, b) in [
        ("branches", "branches-ignore"),
        ("tags", "tags-ignore"),
        ("paths", "paths-ignore"),
    ] {
        if let (Some(_), Some((key, _))) = (
            get(entries, a),
            entries.iter().find(|(k, _)| k.as_str() == Some(b)),
        ) {
            // GitHub's documentation forbids this, but its parser runs the file.
            c.warning(
                key.pos,
                format!("{field}: '{a}' and '{b}' should not be used together for the same event"),
            );
        }
    }
}

/// Reports the `types` that are not among the `known` activity types of `event`.
fn check_activity_types(
    c: &mut Checker,
    event: &str,
    field: &str,
    types: &[Template],
    known: &[&str],
) {
    for t in types {
        if !known.contains(&t.as_str()) {
            let hint = suggest(t, known.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            c.error(
                t.pos,
                format!(
                    "{field}.types: '{}' is not an activity type of {event}{hint}",
                    t.value
                ),
            );
        }
    }
}

fn schedule(c: &mut Checker, node: &Node) -> Vec<Template> {
    let mut out = Vec::new();
    for item in c.seq(node, "on.schedule") {
        let Some(entries) = c.map_with_keys(item, "on.schedule", &["cron", "timezone"]) else {
            continue;
        };
        c.require(entries, item.pos, "on.schedule", &["cron"]);
        if let Some(cron) = get(entries, "cron").and_then(|n| c.string(n, "on.schedule.cron")) {
            if let Err(message) = validate_cron(&cron) {
                c.error(
                    cron.pos,
                    format!("on.schedule.cron: invalid cron '{}': {message}", cron.value),
                );
            }
            out.push(cron);
        }
    }
    out
}

/// Checks a five-field POSIX cron line as GitHub accepts it.
pub fn validate_cron(line: &str) -> Result<(), String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!("expected 5 fields, found {}", parts.len()));
    }
    for (part, field) in parts.iter().zip(CRON_FIELDS) {
        for item in part.split(',') {
            field.check_item(item)?;
        }
    }
    Ok(())
}

/// One field of a cron line: its name and range.
#[derive(Clone, Copy)]
struct CronField {
    what: &'static str,
    lo: u32,
    hi: u32,
}

/// The five fields of a cron line, in order.
const CRON_FIELDS: [CronField; 5] = [
    CronField::new("minute", 0, 59),
    CronField::new("hour", 0, 23),
    CronField::new("day of month", 1, 31),
    CronField::new("month", 1, 12),
    CronField::new("day of week", 0, 6),
];

/// The month names a cron line may use, from January.
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// The day names a cron line may use, from Sunday (0).
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronField {
    const fn new(what: &'static str, lo: u32, hi: u32) -> Self {
        CronField { what, lo, hi }
    }

    /// Checks one comma-separated item: `*`, a value or a range, with an
    /// optional `/step`.
    fn check_item(self, item: &str) -> Result<(), String> {
        let what = self.what;
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n > 0 => {}
                _ => return Err(format!("'{step}' is not a valid step for the {what}")),
            }
        }
        if range == "*" {
            return Ok(());
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (self.number(a)?, self.number(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} of the {what} is reversed"));
                }
            }
            None => {
                self.number(range)?;
            }
        }
        Ok(())
    }

    /// The value of `s`, a number or (for months and days) a name, in range.
    fn number(self, s: &str) -> Result<u32, String> {
        let (what, lo, hi) = (self.what, self.lo, self.hi);
        let named = match what {
            "month" => MONTHS
                .iter()
                .position(|m| m.eq_ignore_ascii_case(s))
                .map(|i| i as u32 + 1),
            "day of week" => DAYS
                .iter()
                .position(|d| d.eq_ignore_ascii_case(s))
                .map(|i| i as u32),
            _ => None,
        };
        let n = match named {
            Some(n) => n,
            None => s
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a valid {what}"))?,
        };
        if n < lo || n > hi {
            return Err(format!("{what} {n} is outside {lo}-{hi}"));
        }
        Ok(n)
    }
}

fn inputs(c: &mut Checker, node: &Node, field: &str, call: bool) -> IndexMap<String, Input> {
    let mut out = IndexMap::new();
    let Some(entries) = c.map(node, field) else {
        return out;
    };
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default();
        let f = format!("{field}.{name}");
        if let Some(input) = input(c, key, value, &f, call) {
            out.insert(name.to_owned(), input);
        }
    }
    out
}

/// The keys of a `workflow_call` input.
const CALL_INPUT_KEYS: &[&str] = &["description", "required", "default", "type"];

/// The keys of a `workflow_dispatch` input.
const DISPATCH_INPUT_KEYS: &[&str] = &[
    "description",
    "required",
    "default",
    "type",
    "options",
    "deprecationMessage",
];

/// One input of a `workflow_call` (`call`) or `workflow_dispatch` event.
fn input(c: &mut Checker, key: &Node, value: &Node, f: &str, call: bool) -> Option<Input> {
    let allowed = if call {
        CALL_INPUT_KEYS
    } else {
        DISPATCH_INPUT_KEYS
    };
    let props = c.map_with_keys(value, f, allowed)?;
    let description = get(props, "description")
        .and_then(|n| c.string(n, f))
        .map(|s| s.value);
    let required = get(props, "required")
        .and_then(|n| c.bool(n, &format!("{f}.required")))
        .unwrap_or(false);
    let type_name = get(props, "type").and_then(|n| c.string(n, &format!("{f}.type")));
    if call && type_name.is_none() {
        c.error(value.pos, format!("{f}: missing required key 'type'"));
    }
    let kind = input_type(c, props, key, f, type_name.as_ref(), call);
    let default = get(props, "default").map(|n| {
        if call {
            c.template(n, &format!("{f}.default"), ctx::CALL_INPUT_DEFAULT);
        } else {
            c.forbid_expression(n, &format!("{f}.default"));
        }
        n.to_value()
    });
    if let (InputType::Choice(options), Some(crate::value::Value::String(d))) = (&kind, &default) {
        if !options.contains(d) {
            let pos = get(props, "default").map_or(key.pos, |n| n.pos);
            c.error(pos, format!("{f}.default: '{d}' is not one of the options"));
        }
    }
    Some(Input {
        pos: key.pos,
        description,
        required,
        default,
        kind,
    })
}

/// An input's type from its `type` (and a choice's `options`); an unknown
/// type is an error for a call and read as a string for a dispatch.
fn input_type(
    c: &mut Checker,
    props: &[(Node, Node)],
    key: &Node,
    f: &str,
    type_name: Option<&Template>,
    call: bool,
) -> InputType {
    let t = match type_name.map(|t| t.as_str()) {
        None | Some("string") => return InputType::String,
        Some("boolean") => return InputType::Boolean,
        Some("number") => return InputType::Number,
        Some("environment") if !call => return InputType::Environment,
        Some("choice") if !call => {
            let options = get(props, "options")
                .map(|n| c.string_list(n, &format!("{f}.options")))
                .unwrap_or_default();
            if options.is_empty() {
                let message = format!("{f}: an input of type 'choice' needs 'options'");
                c.error(key.pos, message);
            }
            return InputType::Choice(options.into_iter().map(|o| o.value).collect());
        }
        Some(_) => type_name.expect("matched Some"),
    };
    let allowed = if call {
        "boolean, number, string"
    } else {
        "boolean, choice, environment, number, string"
    };
    let message = format!(
        "{f}.type: unknown input type '{}'; expected one of {allowed}",
        t.as_str()
    );
    if call {
        c.error(t.pos, message);
    } else {
        // GitHub runs such a file and offers the input as text.
        c.warning(t.pos, format!("{message} (read as a string)"));
    }
    InputType::String
}

fn workflow_call(c: &mut Checker, config: Option<&Node>) -> WorkflowCall {
    let mut call = WorkflowCall::default();
    let field = "on.workflow_call";
    let Some(entries) =
        config.and_then(|n| c.map_with_keys(n, field, &["inputs", "outputs", "secrets"]))
    else {
        return call;
    };
    if let Some(node) = get(entries, "inputs") {
        call.inputs = inputs(c, node, "on.workflow_call.inputs", true);
    }
    if let Some(node) = get(entries, "outputs") {
        call_outputs(c, node, &mut call);
    }
    if let Some(node) = get(entries, "secrets") {
        call_secrets(c, node, &mut call);
    }
    call
}

/// The `outputs` of a `workflow_call` event.
fn call_outputs(c: &mut Checker, node: &Node, call: &mut WorkflowCall) {
    for (key, value) in c.map(node, "on.workflow_call.outputs").unwrap_or_default() {
        let name = key.as_str().unwrap_or_default();
        let f = format!("on.workflow_call.outputs.{name}");
        let Some(props) = c.map_with_keys(value, &f, &["description", "value"]) else {
            continue;
        };
        c.require(props, value.pos, &f, &["value"]);
        let description = get(props, "description")
            .and_then(|n| c.string(n, &f))
            .map(|s| s.value);
        if let Some(v) = get(props, "value") {
            c.template(v, &format!("{f}.value"), ctx::CALL_OUTPUT);
            if let Some(value) = c.string(v, &format!("{f}.value")) {
                call.outputs
                    .insert(name.to_owned(), WorkflowCallOutput { description, value });
            }
        }
    }
}

/// The `secrets` of a `workflow_call` event.
fn call_secrets(c: &mut Checker, node: &Node, call: &mut WorkflowCall) {
    for (key, value) in c.map(node, "on.workflow_call.secrets").unwrap_or_default() {
        let name = key.as_str().unwrap_or_default();
        let f = format!("on.workflow_call.secrets.{name}");
        let mut secret = WorkflowCallSecret::default();
        if let Some(props) = c.map_with_keys(value, &f, &["description", "required"]) {
            secret.description = get(props, "description")
                .and_then(|n| c.string(n, &f))
                .map(|s| s.value);
            secret.required = get(props, "required")
                .and_then(|n| c.bool(n, &format!("{f}.required")))
                .unwrap_or(false);
        }
        call.secrets.insert(name.to_owned(), secret);
    }
}

#[cfg(test)]
mod tests {
    use super::validate_cron;

    #[test]
    fn cron_lines() {
        assert!(validate_cron("*/15 * * * *").is_ok());
        assert!(validate_cron("0 3 * JAN-MAR MON-FRI").is_ok());
        assert!(validate_cron("30 5,17 1-15 * 0").is_ok());
        assert_eq!(
            validate_cron("* * *").unwrap_err(),
            "expected 5 fields, found 3"
        );
        assert_eq!(
            validate_cron("60 * * * *").unwrap_err(),
            "minute 60 is outside 0-59"
        );
        assert!(validate_cron("*/0 * * * *").is_err());
        assert!(validate_cron("5-1 * * * *").is_err());
    }
}
