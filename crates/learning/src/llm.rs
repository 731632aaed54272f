//! An optional OpenAI-compatible chat-completions client (Ollama, OpenRouter, vLLM, OpenAI...).
//!
//! Off unless configured ([`LlmConfig::from_env`] reads `FIRERUNNER_LLM_URL`,
//! `FIRERUNNER_LLM_MODEL` and `FIRERUNNER_LLM_API_KEY`). Two uses:
//! - [`LlmClient::workflow_from_request`]: a natural-language request becomes a workflow YAML
//!   that passes [`firerunner_workflow::load::parse_workflow`]; an invalid first answer is sent
//!   back once with the validation errors.
//! - [`LlmClient::explain_failure`]: a short explanation of a failed step for a PR comment.
//!
//! Every problem (unreachable server, timeout, HTTP error, an answer not in the
//! chat-completions shape, an empty answer, a workflow still invalid after the retry) is an
//! [`LlmError`]; nothing here panics on what the server sends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default time allowed for one chat-completions request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Log characters sent to the model when explaining a failure (the end of the tail).
const MAX_LOG_CHARS: usize = 6_000;
/// Longest explanation kept, in characters.
const MAX_EXPLANATION_CHARS: usize = 1_500;

/// Errors of the LLM client.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The configuration is unusable (e.g. an empty base URL or model).
    #[error("LLM configuration: {0}")]
    Config(String),
    /// The server could not be reached or the connection failed.
    #[error("LLM request to {url} failed: {source}")]
    Unavailable {
        /// The endpoint.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// No complete answer within the timeout.
    #[error("LLM at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The server answered with an HTTP error.
    #[error("LLM at {url} answered HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The answer is not a chat-completions response.
    #[error("LLM answer is not a chat completion: {0}")]
    Malformed(String),
    /// The answer has no text.
    #[error("LLM answer is empty")]
    Empty,
    /// The model's workflow was still invalid after it was shown the errors once.
    #[error("the model's workflow is invalid after a retry:\n{errors}")]
    InvalidWorkflow {
        /// The validation errors of the last answer.
        errors: String,
        /// The last answer's YAML.
        yaml: String,
    },
}

/// Where and how to reach the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Base URL of the OpenAI-compatible API, e.g. `http://localhost:11434/v1` (Ollama) or
    /// `https://openrouter.ai/api/v1`; `/chat/completions` is appended unless already there.
    pub base_url: String,
    /// Model name, e.g. `llama3.1` or `openai/gpt-4o-mini`.
    pub model: String,
    /// Bearer token, when the server needs one.
    pub api_key: Option<String>,
    /// Time allowed for one request.
    pub timeout: Duration,
}

impl LlmConfig {
    /// A configuration with the default timeout and no API key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        LlmConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Reads `FIRERUNNER_LLM_URL`, `FIRERUNNER_LLM_MODEL` and `FIRERUNNER_LLM_API_KEY`; `None`
    /// unless both the URL and the model are set and not empty.
    pub fn from_env() -> Option<Self> {
        let get = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let mut config = LlmConfig::new(get("FIRERUNNER_LLM_URL")?, get("FIRERUNNER_LLM_MODEL")?);
        config.api_key = get("FIRERUNNER_LLM_API_KEY");
        Some(config)
    }

    /// The chat-completions endpoint.
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    stream: bool,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
}

/// A workflow written by the model, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedWorkflow {
    /// The workflow YAML.
    pub yaml: String,
    /// Requests it took: 1, or 2 when the first answer was invalid.
    pub attempts: u32,
}

/// A failed step, as the explanation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureToExplain {
    /// The step's name.
    pub step_name: String,
    /// The step's command or script.
    pub command: String,
    /// The end of its log.
    pub log_tail: String,
}

const WORKFLOW_SYSTEM_PROMPT: &str = "You write GitHub Actions workflow files. \
Answer with the YAML of one complete workflow and nothing else: no explanation, no Markdown. \
It must have `on:` and `jobs:`; every job has `runs-on: ubuntu-latest` (or a matrix of \
runners) and `steps:`; start the steps with `uses: actions/checkout@v4`; use `run:` for shell \
commands, `if:` for conditions, `strategy.matrix` for version matrices and `schedule` with a \
`cron` for timed runs.";

const EXPLAIN_SYSTEM_PROMPT: &str = "You explain CI failures to developers in a pull-request \
comment. In at most three short sentences of plain text, say what most likely went wrong and \
what to try first. Do not repeat the whole log; do not invent files or commands the log does \
not mention.";

/// A chat-completions client (see the module docs).
#[derive(Debug, Clone)]
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
}

impl LlmClient {
    /// A client for `config` (no request is made yet).
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        if config.base_url.trim().is_empty() {
            return Err(LlmError::Config("the base URL is empty".into()));
        }
        if config.model.trim().is_empty() {
            return Err(LlmError::Config("the model is empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|error| LlmError::Config(error.to_string()))?;
        Ok(LlmClient { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Sends `messages` and returns the first choice's text (trimmed, never empty).
    pub async fn chat(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let url = self.config.endpoint();
        let mut request = self.http.post(&url).json(&ChatRequest {
            model: &self.config.model,
            messages,
            temperature: 0.0,
            stream: false,
        });
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                LlmError::Timeout {
                    url: url.clone(),
                    timeout: self.config.timeout,
                }
            } else {
                LlmError::Unavailable {
                    url: url.clone(),
                    source,
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(LlmError::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        answer_text(&body)
    }

    /// Turns a natural-language request into a valid workflow; an invalid first answer is sent
    /// back once with its validation errors.
    pub async fn workflow_from_request(
        &self,
        request: &str,
    ) -> Result<GeneratedWorkflow, LlmError> {
        let mut messages = vec![
            ChatMessage::new("system", WORKFLOW_SYSTEM_PROMPT),
            ChatMessage::new("user", request),
        ];
        let mut last = (String::new(), String::new());
        for attempt in 1..=2 {
            let answer = self.chat(&messages).await?;
            let yaml = extract_yaml(&answer);
            match validate_workflow(&yaml) {
                Ok(()) => {
                    return Ok(GeneratedWorkflow {
                        yaml,
                        attempts: attempt,
                    })
                }
                Err(errors) => {
                    messages.push(ChatMessage::new("assistant", answer));
                    messages.push(ChatMessage::new(
                        "user",
                        format!(
                            "That workflow is invalid:\n{errors}\nAnswer with the corrected workflow YAML only."
                        ),
                    ));
                    last = (errors, yaml);
                }
            }
        }
        Err(LlmError::InvalidWorkflow {
            errors: last.0,
            yaml: last.1,
        })
    }

    /// A short plain-text explanation of a failed step for a PR comment.
    pub async fn explain_failure(&self, failure: &FailureToExplain) -> Result<String, LlmError> {
        let tail = last_chars(&failure.log_tail, MAX_LOG_CHARS);
        let prompt = format!(
            "Step: {}\nCommand:\n{}\nEnd of the log:\n{}",
            failure.step_name, failure.command, tail
        );
        let messages = [
            ChatMessage::new("system", EXPLAIN_SYSTEM_PROMPT),
            ChatMessage::new("user", prompt),
        ];
        let answer = self.chat(&messages).await?;
        let mut explanation: String = answer.chars().take(MAX_EXPLANATION_CHARS).collect();
        if explanation.len() < answer.len() {
            explanation.push('…');
        }
        Ok(explanation)
    }
}

/// Validates a workflow YAML with firerunner's own loader; the errors as text when invalid.
pub fn validate_workflow(yaml: &str) -> Result<(), String> {
    match firerunner_workflow::load::parse_workflow("generated.yml", yaml) {
        Ok(_) => Ok(()),
        Err(diagnostics) => Err(diagnostics.to_string()),
    }
}

/// The YAML in a model's answer: the first fenced block when there is one, else the answer.
fn extract_yaml(answer: &str) -> String {
    if let Some(start) = answer.find("```") {
        let after = &answer[start + 3..];
        let body = match after.find('\n') {
            Some(newline) => &after[newline + 1..],
            None => after,
        };
        let end = body.find("```").unwrap_or(body.len());
        return body[..end].trim_end().to_string() + "\n";
    }
    answer.trim().to_string() + "\n"
}

fn last_chars(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    if count <= max {
        return text;
    }
    let skip = text
        .char_indices()
        .nth(count - max)
        .map(|(index, _)| index)
        .unwrap_or(0);
    &text[skip..]
}

/// The text of the first choice of a chat completion's `body`.
fn answer_text(body: &str) -> Result<String, LlmError> {
    let parsed: ChatResponse = serde_json::from_str(body).map_err(|error| {
        LlmError::Malformed(format!(
            "{error} in {:?}",
            body.chars().take(120).collect::<String>()
        ))
    })?;
    let text = parsed
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Malformed("no choices".into()))?
        .message
        .content
        .unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return Err(LlmError::Empty);
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_fences() {
        assert_eq!(
            LlmConfig::new("http://localhost:11434/v1/", "m").endpoint(),
            "http://localhost:11434/v1/chat/completions"
        );
        assert_eq!(
            LlmConfig::new("https://x/api/v1/chat/completions", "m").endpoint(),
            "https://x/api/v1/chat/completions"
        );
        assert_eq!(
            extract_yaml("Here:\n```yaml\non: push\njobs: {}\n```\nDone."),
            "on: push\njobs: {}\n"
        );
        assert_eq!(extract_yaml("  on: push\n"), "on: push\n");
        assert_eq!(last_chars("héllo", 3), "llo");
        assert!(LlmClient::new(LlmConfig::new("", "m")).is_err());
        assert!(LlmClient::new(LlmConfig::new("http://x", " ")).is_err());
    }
}
