//! A minimal client for QEMU's machine protocol (QMP) on a Unix socket.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::backend::VmError;
use crate::runtime::ProcessId;

/// A QMP connection past capability negotiation.
pub struct Qmp {
    stream: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects to `socket`, retrying until `within` passes (QEMU creates the
    /// socket shortly after it starts) or `qemu` is gone, and negotiates
    /// capabilities.
    pub async fn connect(
        socket: &Path,
        qemu: Option<ProcessId>,
        within: Duration,
    ) -> Result<Self, VmError> {
        let deadline = tokio::time::Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(err)
                    if tokio::time::Instant::now() >= deadline
                        || qemu.is_some_and(|process| !process.is_alive()) =>
                {
                    return Err(VmError::io(format!("connect {}", socket.display()), err))
                }
                // QEMU makes the socket a few ms after it starts; a refused
                // connect is cheap, so look often.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        let mut qmp = Self {
            stream: BufReader::new(stream),
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(api_error(
                "greeting",
                format!("unexpected greeting {greeting}"),
            ));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value (events are skipped).
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request).expect("JSON serialises");
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .await
            .map_err(|err| VmError::io(format!("QMP {command}"), err))?;
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let text = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string();
                return Err(api_error(command, text));
            }
        }
    }

    /// The VM's run state (`running`, `paused`, `inmigrate`, `postmigrate`...).
    pub async fn status(&mut self) -> Result<String, VmError> {
        let status = self.execute("query-status", None).await?;
        Ok(status
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Waits for the event `name` and returns it; events that arrived before
    /// the call and were skipped by [`Qmp::execute`] are not seen.
    pub async fn wait_event(&mut self, name: &str) -> Result<Value, VmError> {
        loop {
            let message = self.read_message().await?;
            if message.get("event").and_then(Value::as_str) == Some(name) {
                return Ok(message);
            }
        }
    }

    async fn read_message(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        let read = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(|err| VmError::io("QMP read", err))?;
        if read == 0 {
            return Err(api_error("read", "QEMU closed the QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|err| api_error("read", format!("bad JSON: {err}")))
    }
}

fn api_error(request: &str, message: String) -> VmError {
    VmError::Api {
        api: "QMP",
        request: request.to_string(),
        message,
    }
}
