//! Webhook signature checks and payload parsing against fixtures in GitHub's documented shapes.

use firerunner_github::webhook::{verify_signature, SignatureError, WebhookEvent};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::trigger::{decide, TriggerDecision};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/testdata/payloads/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn parse(event: &str, fixture_name: &str) -> WebhookEvent {
    WebhookEvent::parse(event, &fixture(fixture_name))
        .unwrap_or_else(|e| panic!("{fixture_name}: {e}"))
}

#[test]
fn signature_of_the_body_with_the_secret_is_accepted() {
    let body = fixture("push");
    let header = sign(b"It's a Secret to Everybody", &body);
    assert_eq!(
        verify_signature(b"It's a Secret to Everybody", &body, Some(&header)),
        Ok(())
    );
}

#[test]
fn known_vector_from_githubs_documentation_scheme() {
    // HMAC-SHA256 of "Hello, World!" keyed with "It's a Secret to Everybody".
    let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        verify_signature(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some(header)
        ),
        Ok(())
    );
}

#[test]
fn missing_signature_is_rejected() {
    let err = verify_signature(b"secret", b"{}", None).unwrap_err();
    assert_eq!(err, SignatureError::Missing);
    assert!(err.to_string().contains("X-Hub-Signature-256"), "{err}");
}

#[test]
fn malformed_signatures_are_rejected() {
    let body = b"{}";
    let good = sign(b"secret", body);
    let hex_part = good.strip_prefix("sha256=").unwrap();
    for header in [
        "".to_owned(),
        hex_part.to_owned(),
        format!("sha1={hex_part}"),
        "sha256=not-hex".to_owned(),
        format!("sha256={}", &hex_part[..62]),
        format!("sha256={hex_part}00"),
    ] {
        assert_eq!(
            verify_signature(b"secret", body, Some(&header)),
            Err(SignatureError::Malformed),
            "{header:?}"
        );
    }
}

#[test]
fn signature_with_another_secret_or_body_is_a_mismatch() {
    let body = fixture("ping");
    let header = sign(b"secret", &body);
    assert_eq!(
        verify_signature(b"other secret", &body, Some(&header)),
        Err(SignatureError::Mismatch)
    );
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert_eq!(
        verify_signature(b"secret", &tampered, Some(&header)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn empty_secret_checks_like_any_other_key() {
    let body = b"{\"zen\":\"x\"}";
    let header = sign(b"", body);
    assert_eq!(verify_signature(b"", body, Some(&header)), Ok(()));
    assert_eq!(
        verify_signature(b"secret", body, Some(&header)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn push_with_commits() {
    let event = parse("push", "push");
    let WebhookEvent::Push(push) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(push.git_ref, "refs/heads/main");
    assert_eq!(push.before, "a10867b14bb761a232cd80139fbd4c0d33264240");
    assert_eq!(push.after, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
    assert!(!push.deleted && !push.forced && !push.created);
    assert_eq!(push.commits.len(), 2);
    assert_eq!(push.commits[0].added, ["src/gear.rs"]);
    assert_eq!(push.commits[0].modified, ["src/lib.rs", "Cargo.toml"]);
    assert_eq!(push.commits[1].removed, ["docs/sprocket.md"]);
    assert!(push.commits[1]
        .message
        .starts_with("Drop the old sprocket docs\n"));
    assert_eq!(push.head_commit.as_ref().unwrap().id, push.after);
    assert_eq!(push.pusher_name, "mona");
    let repo = event.repository().unwrap();
    assert_eq!(repo.id, 186853002);
    assert_eq!(repo.full_name, "octo-org/widgets");
    assert_eq!(repo.name, "widgets");
    assert_eq!(repo.owner_login, "octo-org");
    assert_eq!(repo.clone_url, "https://github.com/octo-org/widgets.git");
    assert_eq!(repo.default_branch, "main");
    assert!(repo.private);
    assert_eq!(event.name(), "push");
    assert_eq!(event.installation_id(), Some(51234567));
    assert_eq!(
        event.head_sha(),
        Some("6dcb09b5b57875f334f61aebed695e2e4193db5e")
    );
    assert_eq!(event.git_ref().as_deref(), Some("refs/heads/main"));
    assert_eq!(event.pull_request_number(), None);
    assert_eq!(event.payload()["sender"]["login"], "mona");
}

#[test]
fn tag_push() {
    let event = parse("push", "push-tag");
    let WebhookEvent::Push(push) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(event.git_ref().as_deref(), Some("refs/tags/v1.4.0"));
    assert!(push.created);
    assert!(push.commits.is_empty());
    assert_eq!(push.base_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(
        event.head_sha(),
        Some("6dcb09b5b57875f334f61aebed695e2e4193db5e")
    );
}

#[test]
fn branch_delete_has_no_head() {
    let event = parse("push", "push-branch-delete");
    let WebhookEvent::Push(push) = &event else {
        panic!("{event:?}")
    };
    assert!(push.deleted);
    assert!(push.head_commit.is_none());
    assert_eq!(event.head_sha(), None);
    assert_eq!(
        event.git_ref().as_deref(),
        Some("refs/heads/feature/old-sprockets")
    );
}

#[test]
fn pull_request_actions() {
    for (action, sha) in [
        ("opened", "e5bd3914e2e596debea16f433f57875b5b90bcd6"),
        ("synchronize", "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"),
        ("reopened", "e5bd3914e2e596debea16f433f57875b5b90bcd6"),
        ("closed", "e5bd3914e2e596debea16f433f57875b5b90bcd6"),
    ] {
        let event = parse("pull_request", &format!("pull_request-{action}"));
        let WebhookEvent::PullRequest(pr) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(pr.action, action);
        assert_eq!(pr.number, 42);
        assert_eq!(pr.head_sha, sha);
        assert_eq!(pr.head_ref, "gears-mesh");
        assert_eq!(pr.head_repo_full_name.as_deref(), Some("mona/widgets"));
        assert_eq!(pr.base_ref, "main");
        assert_eq!(pr.base_sha, "a10867b14bb761a232cd80139fbd4c0d33264240");
        assert_eq!(pr.title, "Teach gears to mesh");
        assert_eq!(pr.html_url, "https://github.com/octo-org/widgets/pull/42");
        assert_eq!(pr.merged, action == "closed");
        assert_eq!(pr.repository.full_name, "octo-org/widgets");
        assert_eq!(event.head_sha(), Some(sha));
        assert_eq!(event.git_ref().as_deref(), Some("refs/pull/42/merge"));
        assert_eq!(event.pull_request_number(), Some(42));
        assert_eq!(event.installation_id(), Some(51234567));
    }
}

#[test]
fn workflow_dispatch_with_inputs() {
    let event = parse("workflow_dispatch", "workflow_dispatch");
    let WebhookEvent::WorkflowDispatch(dispatch) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(dispatch.git_ref, "refs/heads/main");
    assert_eq!(dispatch.workflow, ".github/workflows/deploy.yml");
    assert_eq!(dispatch.inputs["environment"], "staging");
    assert_eq!(dispatch.inputs["dry_run"], "true");
    assert_eq!(dispatch.inputs.len(), 3);
    assert_eq!(event.git_ref().as_deref(), Some("refs/heads/main"));
    assert_eq!(event.head_sha(), None);
    assert_eq!(event.repository().unwrap().full_name, "octo-org/widgets");
}

#[test]
fn ping() {
    let event = parse("ping", "ping");
    let WebhookEvent::Ping(ping) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(ping.zen, "Design for failure.");
    assert_eq!(ping.hook_id, 482911733);
    assert_eq!(
        ping.repository.as_ref().unwrap().full_name,
        "octo-org/widgets"
    );
    assert_eq!(event.git_ref(), None);
    assert_eq!(event.head_sha(), None);
    assert_eq!(event.installation_id(), None);
}

#[test]
fn other_events_keep_their_payload() {
    let event =
        WebhookEvent::parse("issues", br#"{"action":"opened","issue":{"number":7}}"#).unwrap();
    assert_eq!(event.name(), "issues");
    assert_eq!(event.payload()["issue"]["number"], 7);
    assert_eq!(event.repository(), None);
    assert_eq!(event.git_ref(), None);
}

fn without(mut payload: serde_json::Value, pointer: &str) -> Vec<u8> {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    payload
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .unwrap();
    serde_json::to_vec(&payload).unwrap()
}

#[test]
fn missing_field_names_its_path() {
    let payload: serde_json::Value =
        serde_json::from_slice(&fixture("pull_request-opened")).unwrap();
    let err = WebhookEvent::parse("pull_request", &without(payload, "/pull_request/head/sha"))
        .unwrap_err();
    assert_eq!(err.event, "pull_request");
    assert_eq!(err.path, "pull_request.head.sha");
    assert_eq!(
        err.to_string(),
        "pull_request payload: field pull_request.head.sha: missing field `sha`"
    );

    let payload: serde_json::Value = serde_json::from_slice(&fixture("push")).unwrap();
    let err =
        WebhookEvent::parse("push", &without(payload, "/repository/owner/login")).unwrap_err();
    assert_eq!(err.path, "repository.owner.login");

    let payload: serde_json::Value = serde_json::from_slice(&fixture("push")).unwrap();
    let err = WebhookEvent::parse("push", &without(payload, "/ref")).unwrap_err();
    assert_eq!(err.path, "ref");
    assert_eq!(
        err.to_string(),
        "push payload: field ref: missing field `ref`"
    );
}

#[test]
fn mistyped_field_names_its_path() {
    let mut payload: serde_json::Value = serde_json::from_slice(&fixture("push")).unwrap();
    payload["commits"][1]["added"] = serde_json::json!("src/one.rs");
    let err = WebhookEvent::parse("push", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
    assert_eq!(err.path, "commits[1].added");
    assert!(
        err.message
            .contains("invalid type: string \"src/one.rs\", expected a sequence"),
        "{err}"
    );

    let mut payload: serde_json::Value =
        serde_json::from_slice(&fixture("pull_request-opened")).unwrap();
    payload["number"] = serde_json::json!("42");
    let err =
        WebhookEvent::parse("pull_request", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
    assert_eq!(err.path, "number");
    assert!(err
        .to_string()
        .starts_with("pull_request payload: field number: invalid type"));
}

#[test]
fn truncated_json_names_line_and_column() {
    let body = fixture("ping");
    let truncated = &body[..body.len() / 2];
    let err = WebhookEvent::parse("ping", truncated).unwrap_err();
    assert_eq!(err.path, "");
    let text = err.to_string();
    assert!(
        text.starts_with("ping payload: invalid JSON: EOF while parsing"),
        "{text}"
    );
    assert!(text.contains(" at line "), "{text}");
    assert!(text.contains(" column "), "{text}");
    let err = WebhookEvent::parse("other", b"not json").unwrap_err();
    assert!(err.to_string().contains("line 1 column 2"), "{err}");
}

const WORKFLOW: &str = "\
on:
  push:
    branches: [main]
    paths: ['src/**']
  pull_request:
    branches: [main]
  workflow_dispatch:
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: cargo test
";

#[test]
fn trigger_event_round_trip_decides_like_the_payload_says() {
    let workflow = parse_workflow("ci.yml", WORKFLOW).unwrap();
    let push = parse("push", "push").to_trigger_event();
    assert_eq!(push.name, "push");
    assert_eq!(push.payload["ref"], "refs/heads/main");
    assert_eq!(decide(&workflow, &push), TriggerDecision::Run);

    let delete = parse("push", "push-branch-delete").to_trigger_event();
    assert!(matches!(
        decide(&workflow, &delete),
        TriggerDecision::Skip { .. }
    ));

    let tag = parse("push", "push-tag").to_trigger_event();
    assert!(matches!(
        decide(&workflow, &tag),
        TriggerDecision::Skip { .. }
    ));

    let opened = parse("pull_request", "pull_request-opened").to_trigger_event();
    assert_eq!(decide(&workflow, &opened), TriggerDecision::Run);
    let closed = parse("pull_request", "pull_request-closed").to_trigger_event();
    assert!(matches!(
        decide(&workflow, &closed),
        TriggerDecision::Skip { .. }
    ));

    let dispatch = parse("workflow_dispatch", "workflow_dispatch").to_trigger_event();
    assert_eq!(decide(&workflow, &dispatch), TriggerDecision::Run);
    let ping = parse("ping", "ping").to_trigger_event();
    assert!(matches!(
        decide(&workflow, &ping),
        TriggerDecision::Skip { .. }
    ));
}
