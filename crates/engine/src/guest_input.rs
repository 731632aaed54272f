//! Caps on everything the engine reads back from a guest, which is attacker-controlled:
//! file commands, action metadata, tar streams. GitHub's documented limits where they exist.

use firerunner_agent_proto::tar::{Limits, UnpackOptions};

use crate::sandbox::{Sandbox, SandboxError};

/// One MiB.
const MIB: u64 = 1 << 20;

/// GitHub's limit for one step's summary (`GITHUB_STEP_SUMMARY`): 1 MiB.
pub const STEP_SUMMARY_LIMIT: u64 = MIB;
/// GitHub's limit for a job's outputs: 1 MiB in all. A step's `GITHUB_OUTPUT` file is
/// held to it too.
pub const JOB_OUTPUTS_LIMIT: u64 = MIB;
/// `GITHUB_ENV`, `GITHUB_PATH` and `GITHUB_STATE` (GitHub documents no limit; Linux keeps
/// a whole environment under 2 MiB, so 1 MiB per file loses no working job).
pub const ENV_FILE_LIMIT: u64 = MIB;
/// An `action.yml` read from the workspace.
pub const ACTION_METADATA_LIMIT: u64 = MIB;

/// A file command the runner reads after each process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCommand {
    /// `GITHUB_ENV`.
    Env,
    /// `GITHUB_OUTPUT`.
    Output,
    /// `GITHUB_PATH`.
    Path,
    /// `GITHUB_STATE`.
    State,
    /// `GITHUB_STEP_SUMMARY`.
    StepSummary,
}

impl FileCommand {
    /// Its environment variable.
    pub fn variable(self) -> &'static str {
        match self {
            FileCommand::Env => "GITHUB_ENV",
            FileCommand::Output => "GITHUB_OUTPUT",
            FileCommand::Path => "GITHUB_PATH",
            FileCommand::State => "GITHUB_STATE",
            FileCommand::StepSummary => "GITHUB_STEP_SUMMARY",
        }
    }

    /// The most bytes read from it per step.
    pub fn limit(self) -> u64 {
        match self {
            FileCommand::Output => JOB_OUTPUTS_LIMIT,
            FileCommand::StepSummary => STEP_SUMMARY_LIMIT,
            FileCommand::Env | FileCommand::Path | FileCommand::State => ENV_FILE_LIMIT,
        }
    }
}

/// A guest sent more than a limit allows; the message names the limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitExceeded {
    /// A file command file.
    #[error("{} is larger than its limit of {} bytes", .0.variable(), .0.limit())]
    FileCommand(FileCommand),
    /// The job's outputs together.
    #[error("the job's outputs are larger than their limit of {limit} bytes")]
    JobOutputs {
        /// The limit.
        limit: u64,
    },
}

/// Why a file command could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Over its limit: the step fails with this message.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The guest connection failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Reads a file command file (empty when missing), held to its limit.
pub async fn read_file_command(
    sandbox: &Sandbox,
    path: &str,
    command: FileCommand,
) -> Result<String, ReadError> {
    match sandbox.read_file(path, command.limit()).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()),
        Err(SandboxError::Agent(firerunner_agent_proto::ClientError::TooLarge { .. })) => {
            Err(LimitExceeded::FileCommand(command).into())
        }
        Err(err) => Err(err.into()),
    }
}

/// How the workspace copy `hashFiles` reads is unpacked: links that may point outside
/// (a virtualenv's `bin/python` → `/usr/bin/python3`) are left out rather than failing.
pub fn workspace_snapshot_options() -> UnpackOptions {
    UnpackOptions {
        skip_escaping_links: true,
        ..UnpackOptions::hostile(Limits::default())
    }
}

/// How one artifact upload is unpacked.
pub fn artifact_options() -> UnpackOptions {
    UnpackOptions::hostile(Limits::default())
}

/// How one cache path is unpacked (GitHub keeps 10 GiB of caches per repository).
pub fn cache_options() -> UnpackOptions {
    UnpackOptions::hostile(Limits::default())
}
