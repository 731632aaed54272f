//! The chat-completions client against a tiny local HTTP server that speaks the
//! OpenAI shape: good answers, a retry after an invalid workflow, timeouts, garbage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_learning::llm::{LlmClient, LlmConfig, LlmError};
use firerunner_learning::FailureToExplain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake server answers to one request.
#[derive(Clone)]
enum Reply {
    /// 200 with a chat completion whose message is this text.
    Text(String),
    /// A status and a raw body.
    Raw(u16, String),
    /// Wait this long before answering.
    Slow(Duration),
}

/// A request the fake server saw.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: serde_json::Value,
}

/// Serves `replies` in order (the last one repeats); returns the base URL and the requests.
async fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let reply = replies[index.min(replies.len() - 1)].clone();
            index += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let read = socket.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    let Some(split) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..split].to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buffer.len() >= split + 4 + length {
                        break (head, buffer[split + 4..split + 4 + length].to_vec());
                    }
                };
                log.lock().unwrap().push(Seen {
                    head,
                    body: serde_json::from_slice(&body).unwrap_or_default(),
                });
                let (status, body) = match reply {
                    Reply::Text(text) => (
                        200,
                        serde_json::json!({
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "choices": [{
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"
                            }]
                        })
                        .to_string(),
                    ),
                    Reply::Raw(status, body) => (status, body),
                    Reply::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        (200, "{}".to_string())
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{address}/v1"), seen)
}

fn client(base_url: &str, timeout: Duration) -> LlmClient {
    let mut config = LlmConfig::new(base_url, "test-model");
    config.api_key = Some("sk-test".into());
    config.timeout = timeout;
    LlmClient::new(config).unwrap()
}

const VALID: &str =
    "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: cargo test\n";

#[tokio::test]
async fn a_valid_workflow_is_returned_from_a_fenced_answer() {
    let (url, seen) = serve(vec![Reply::Text(format!(
        "Here you go:\n```yaml\n{VALID}```\n"
    ))])
    .await;
    let generated = client(&url, Duration::from_secs(5))
        .workflow_from_request("run cargo test on push")
        .await
        .unwrap();
    assert_eq!(generated.yaml, VALID);
    assert_eq!(generated.attempts, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.starts_with("POST /v1/chat/completions "),
        "{}",
        seen[0].head
    );
    assert!(
        seen[0]
            .head
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-test"),
        "{}",
        seen[0].head
    );
    assert_eq!(seen[0].body["model"], "test-model");
    assert_eq!(seen[0].body["messages"][0]["role"], "system");
    assert_eq!(
        seen[0].body["messages"][1]["content"],
        "run cargo test on push"
    );
}

#[tokio::test]
async fn an_invalid_workflow_is_sent_back_once_with_its_errors() {
    let (url, seen) = serve(vec![
        Reply::Text("jobs:\n  test:\n    steps: []\n".into()),
        Reply::Text(VALID.into()),
    ])
    .await;
    let generated = client(&url, Duration::from_secs(5))
        .workflow_from_request("test it")
        .await
        .unwrap();
    assert_eq!(generated.attempts, 2);
    assert_eq!(generated.yaml, VALID);
    let seen = seen.lock().unwrap();
    let retry = seen[1].body["messages"].as_array().unwrap();
    assert_eq!(retry.len(), 4, "system, request, first answer, errors");
    assert_eq!(retry[2]["role"], "assistant");
    let feedback = retry[3]["content"].as_str().unwrap();
    assert!(
        feedback.starts_with("That workflow is invalid:"),
        "{feedback}"
    );
    assert!(feedback.contains("generated.yml:"), "{feedback}");
}

#[tokio::test]
async fn a_workflow_still_invalid_after_the_retry_is_an_error() {
    let (url, seen) = serve(vec![Reply::Text("on: push\njobs: 3\n".into())]).await;
    let error = client(&url, Duration::from_secs(5))
        .workflow_from_request("anything")
        .await
        .unwrap_err();
    match error {
        LlmError::InvalidWorkflow { errors, yaml } => {
            assert!(!errors.is_empty());
            assert_eq!(yaml, "on: push\njobs: 3\n");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 2, "exactly one retry");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let (url, _) = serve(vec![Reply::Slow(Duration::from_secs(30))]).await;
    let started = Instant::now();
    let error = client(&url, Duration::from_millis(300))
        .workflow_from_request("anything")
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Timeout { .. }), "{error:?}");
    // Far below the 30 s the server takes to answer.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn garbage_answers_are_typed_errors() {
    let (url, _) = serve(vec![
        Reply::Raw(200, "<html>not json".into()),
        Reply::Raw(200, r#"{"choices": []}"#.into()),
        Reply::Raw(200, r#"{"object": "list", "data": [1, 2]}"#.into()),
        Reply::Text("   ".into()),
        Reply::Raw(503, "overloaded".into()),
    ])
    .await;
    let client = client(&url, Duration::from_secs(5));
    let failure = FailureToExplain {
        step_name: "unit".into(),
        command: "npm test".into(),
        log_tail: "Error: boom".into(),
    };
    let error = client.explain_failure(&failure).await.unwrap_err();
    assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    let error = client.explain_failure(&failure).await.unwrap_err();
    assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    let error = client.explain_failure(&failure).await.unwrap_err();
    assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    let error = client.explain_failure(&failure).await.unwrap_err();
    assert!(matches!(error, LlmError::Empty), "{error:?}");
    match client.explain_failure(&failure).await.unwrap_err() {
        LlmError::Status { status, body, .. } => {
            assert_eq!((status, body.as_str()), (503, "overloaded"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error = client(&format!("http://{address}/v1"), Duration::from_secs(5))
        .chat(&[])
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Unavailable { .. }), "{error:?}");
}

#[tokio::test]
async fn failures_are_explained_from_the_log_tail() {
    let (url, seen) = serve(vec![Reply::Text(
        "  The test could not import `left-pad`; run `npm ci` first.  ".into(),
    )])
    .await;
    let long_log = format!(
        "{}\nError: Cannot find module 'left-pad'",
        "noise line\n".repeat(2_000)
    );
    let explanation = client(&url, Duration::from_secs(5))
        .explain_failure(&FailureToExplain {
            step_name: "unit".into(),
            command: "npm test".into(),
            log_tail: long_log,
        })
        .await
        .unwrap();
    assert_eq!(
        explanation,
        "The test could not import `left-pad`; run `npm ci` first."
    );
    let seen = seen.lock().unwrap();
    let prompt = seen[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.starts_with("Step: unit\nCommand:\nnpm test\n"),
        "{prompt}"
    );
    assert!(prompt.ends_with("Error: Cannot find module 'left-pad'"));
    assert!(prompt.len() < 7_000, "the log is cut to its end");
}
