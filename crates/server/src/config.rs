//! The operator's configuration: a TOML file, then `FIRERUNNER_*`
//! environment overrides, then secrets read from `*_FILE` paths.
//!
//! Every key of the file can be overridden by an environment variable named
//! after its path: `listen` by `FIRERUNNER_LISTEN`, `limits.max_vms` by
//! `FIRERUNNER_LIMITS_MAX_VMS`. A value is read as TOML when it parses
//! (`4`, `true`, `["a", "b"]`) and as a plain string otherwise. Any
//! variable ending in `_FILE` names a file whose content (without its final
//! newline) is the value: `FIRERUNNER_GITHUB_TOKEN_FILE=/run/secrets/token`.
//! In the file, a secret key can likewise be given as `<key>_file`.

use std::path::{Path, PathBuf};

use firerunner_github::permissions::DefaultPermissions;
use firerunner_learning::HintScope;
use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has wrong keys or types.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        /// The file (or `environment` for an override).
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is present but unusable.
    #[error("config key {key}: {message}")]
    Value {
        /// The key, dotted.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of `firerunner serve` / `firerunner worker`.
/// Its `Debug` shows secrets as `<redacted>`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// The public URL of this service (links in statuses and comments).
    pub public_url: String,
    /// Database URL: `sqlite://...` (default, in the data dir) or `postgres://...`.
    pub database_url: String,
    /// Where logs, artifacts and caches are kept.
    pub data_dir: PathBuf,
    /// The webhook secret set on GitHub (required to accept webhooks).
    pub webhook_secret: String,
    /// Bearer token of the JSON API (the API is off when empty).
    pub api_token: String,
    /// Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MiB).
    pub max_body_bytes: usize,
    /// How to reach GitHub.
    pub github: GitHubConfig,
    /// Which repositories and workflows may run.
    pub allow: AllowConfig,
    /// Capacity of this host.
    pub limits: LimitsConfig,
    /// This host's worker.
    pub worker: WorkerConfig,
    /// The microVMs.
    pub vm: VmConfig,
    /// What is learned from every step.
    pub learning: LearningSettings,
    /// An optional language model that explains failures in the PR comment.
    pub llm: LlmSettings,
    /// The key that encrypts the secret store.
    pub secrets: SecretsSettings,
    /// Where the `vars` context comes from besides firerunner's own store.
    pub variables: VariablesSettings,
}

/// The secret store's key (see docs/deploy.md, "Secrets, variables and
/// environments"): 64 hexadecimal digits, kept outside the database.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// The key new values are sealed with (`key_file` or
    /// `FIRERUNNER_SECRETS_KEY_FILE` to read it from a file). Empty: the
    /// store is off and setting a secret is refused.
    pub key: String,
    /// During a rotation, the key before `key`: values it sealed are opened
    /// and sealed again with `key` at start-up (or `firerunner secrets rotate-key`).
    pub previous_key: String,
}

impl std::fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsSettings")
            .field("key", &redacted(&self.key))
            .field("previous_key", &redacted(&self.previous_key))
            .finish()
    }
}

/// GitHub's configuration variables, read through the API where the App
/// may (*Variables: read*), kept for `ttl_seconds`; firerunner's own store
/// wins over them at the same scope.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VariablesSettings {
    /// Read GitHub's organization, repository and environment variables.
    pub from_github: bool,
    /// How long GitHub's answer is kept before it is asked again.
    pub ttl_seconds: u64,
}

impl Default for VariablesSettings {
    fn default() -> Self {
        Self {
            from_github: true,
            ttl_seconds: 300,
        }
    }
}

/// Learning from every step (see docs/learning.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LearningSettings {
    /// Record steps and show hints (in the same database as the runs).
    pub enabled: bool,
    /// Failures with one signature at one step before a lesson is reported.
    pub lesson_threshold: u64,
    /// Whose lessons a failure's hints may name: `repository` (its own) or
    /// `owner` (every repository of the same owner).
    #[serde(deserialize_with = "hint_scope")]
    pub hint_scope: HintScope,
}

fn hint_scope<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<HintScope, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "repository" => Ok(HintScope::Repository),
        "owner" => Ok(HintScope::Owner),
        other => Err(serde::de::Error::custom(format!(
            "hint_scope is repository or owner, not {other:?}"
        ))),
    }
}

impl Default for LearningSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lesson_threshold: 3,
            hint_scope: HintScope::Repository,
        }
    }
}

/// An OpenAI-compatible chat-completions API (Ollama, OpenRouter, ...);
/// off while `url` is empty. A slow or bad answer never fails a run.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Base URL, e.g. `http://localhost:11434/v1`.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Bearer token, when the API needs one.
    pub api_key: String,
    /// Time allowed for one answer.
    pub timeout_seconds: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            model: String::new(),
            api_key: String::new(),
            timeout_seconds: 20,
        }
    }
}

/// How to reach GitHub's API and git.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubConfig {
    /// REST API base (`https://HOST/api/v3` for GitHub Enterprise Server).
    pub api_url: String,
    /// Base of clone URLs (`https://HOST` for GitHub Enterprise Server).
    pub git_url: String,
    /// A token (personal access token or fine-grained token).
    pub token: String,
    /// GitHub App id (with `private_key`, instead of `token`).
    pub app_id: u64,
    /// The GitHub App's private key (PEM).
    pub private_key: String,
    /// Commit status context prefix.
    pub status_context: String,
    /// What `GITHUB_TOKEN` may do when a workflow has no `permissions:`
    /// (`restricted`: read contents and packages; `permissive`: write).
    #[serde(deserialize_with = "default_permissions")]
    pub default_permissions: DefaultPermissions,
}

fn default_permissions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<DefaultPermissions, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "restricted" => Ok(DefaultPermissions::Restricted),
        "permissive" => Ok(DefaultPermissions::Permissive),
        other => Err(serde::de::Error::custom(format!(
            "default_permissions is restricted or permissive, not {other:?}"
        ))),
    }
}

/// Allow-lists (empty: everything allowed).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AllowConfig {
    /// `owner/name` patterns (`*` matches within a segment: `octo/*`).
    pub repositories: Vec<String>,
    /// Workflow file names or paths (`ci.yml`, `.github/workflows/ci.yml`, `*.yml`).
    pub workflows: Vec<String>,
}

/// Capacity limits of this host.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Workflow runs executing at once.
    pub concurrent_runs: usize,
    /// Jobs (VM sessions) executing at once.
    pub max_sessions: usize,
    /// VMs running at once, warm pool included.
    pub max_vms: usize,
    /// VMs kept booted (restored from a snapshot) and waiting.
    pub warm_vms: usize,
    /// Dispatch attempts for a delivery when GitHub fails transiently.
    pub dispatch_attempts: u32,
    /// Webhook requests handled at once; more are answered 503.
    pub webhook_concurrency: usize,
    /// Time allowed to receive a webhook's body; slower senders get 408.
    pub webhook_timeout_seconds: u64,
    /// Times a run is started before it is failed (a run that crashes the
    /// process must not crash-loop the service).
    pub run_attempts: u32,
}

/// This host's worker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Whether `serve` also runs jobs (a `worker` process always does).
    pub enabled: bool,
    /// Stable id of this worker (default: the host name); a restart with
    /// the same id re-queues the runs it held.
    pub id: String,
    /// Lease of a claimed run; a worker that stops heartbeating loses its
    /// runs after this long.
    pub lease_seconds: u64,
}

/// The microVMs jobs run in.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    /// `qemu` or `firecracker`.
    pub backend: String,
    /// QEMU acceleration: `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// `debian`, `test` or an image directory.
    pub image: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub vcpus: u8,
    /// Firecracker's jailer (`vm.backend = "firecracker"` only).
    pub jailer: JailerSettings,
}

/// How the service runs Firecracker under its jailer: a chroot of its own
/// and an unprivileged uid/gid for every VM. On by default; turning it off
/// runs Firecracker as the service's own user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JailerSettings {
    /// Run Firecracker through the jailer.
    pub enabled: bool,
    /// The `jailer` binary: a path, or a name looked up on `PATH`
    /// (`$FIRECRACKER_JAILER` overrides it).
    pub binary: String,
    /// User the jailed Firecracker runs as.
    pub uid: u32,
    /// Group the jailed Firecracker runs as.
    pub gid: u32,
    /// Where the jails are built.
    pub chroot_base: PathBuf,
}

impl Default for JailerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            binary: "jailer".into(),
            uid: 10000,
            gid: 10000,
            chroot_base: PathBuf::from("/srv/jailer"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = default_data_dir();
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("firerunner.db").display()
            ),
            data_dir,
            webhook_secret: String::new(),
            api_token: String::new(),
            max_body_bytes: 25 * 1024 * 1024,
            github: GitHubConfig::default(),
            allow: AllowConfig::default(),
            limits: LimitsConfig::default(),
            worker: WorkerConfig::default(),
            vm: VmConfig::default(),
            learning: LearningSettings::default(),
            llm: LlmSettings::default(),
            secrets: SecretsSettings::default(),
            variables: VariablesSettings::default(),
        }
    }
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com".into(),
            git_url: "https://github.com".into(),
            token: String::new(),
            app_id: 0,
            private_key: String::new(),
            status_context: "firerunner".into(),
            default_permissions: DefaultPermissions::Restricted,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            concurrent_runs: 2,
            max_sessions: 2,
            max_vms: 3,
            warm_vms: 1,
            dispatch_attempts: 6,
            webhook_concurrency: 128,
            webhook_timeout_seconds: 10,
            run_attempts: 5,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            id: host_name(),
            lease_seconds: 60,
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            backend: "qemu".into(),
            accel: "auto".into(),
            image: "debian".into(),
            memory_mib: 1024,
            vcpus: 1,
            jailer: JailerSettings::default(),
        }
    }
}

/// The data directory: `$FIRERUNNER_DATA_DIR`, else `$XDG_DATA_HOME/firerunner`,
/// else `$HOME/.local/share/firerunner`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIRERUNNER_DATA_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("firerunner");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/firerunner")
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a secret shows in `Debug`: whether it is set, never its value.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("database_url", &redacted_url(&self.database_url))
            .field("data_dir", &self.data_dir)
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field("api_token", &redacted(&self.api_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("github", &self.github)
            .field("allow", &self.allow)
            .field("limits", &self.limits)
            .field("worker", &self.worker)
            .field("vm", &self.vm)
            .field("learning", &self.learning)
            .field("llm", &self.llm)
            .field("secrets", &self.secrets)
            .field("variables", &self.variables)
            .finish()
    }
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("git_url", &self.git_url)
            .field("token", &redacted(&self.token))
            .field("app_id", &self.app_id)
            .field("private_key", &redacted(&self.private_key))
            .field("status_context", &self.status_context)
            .field("default_permissions", &self.default_permissions)
            .finish()
    }
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &redacted(&self.api_key))
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// A database URL without its password (`postgres://user:<redacted>@host/db`).
fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_string(),
    }
}

/// Keys that hold secrets, which may also come from `<key>_file` / `*_FILE`.
const SECRET_KEYS: [&str; 7] = [
    "webhook_secret",
    "api_token",
    "github.token",
    "github.private_key",
    "llm.api_key",
    "secrets.key",
    "secrets.previous_key",
];

impl Config {
    /// Reads `path` (when given) and applies the environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (name, text) = match path {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
            ),
            None => ("(defaults)".to_string(), String::new()),
        };
        Self::from_parts(&name, &text, std::env::vars())
    }

    /// Builds the configuration from a file's text and environment variables.
    pub fn from_parts(
        name: &str,
        text: &str,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|err| invalid(name, text, &err))?;
        apply_environment(&mut table, environment)?;
        read_secret_files(&mut table)?;
        let rendered = toml::to_string(&table).map_err(|err| ConfigError::Value {
            key: "(all)".into(),
            message: err.to_string(),
        })?;
        let config: Config = toml::from_str(&rendered).map_err(|err| {
            // Errors of the merged table name the key; point into the file when it is there.
            let located = toml::from_str::<Config>(text).err();
            match located {
                Some(err) => invalid(name, text, &err),
                None => ConfigError::Value {
                    key: "environment override".into(),
                    message: err.message().to_string(),
                },
            }
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Value {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 127.0.0.1:8080");
        }
        if self.limits.concurrent_runs == 0 || self.limits.max_sessions == 0 {
            return bad(
                "limits",
                "concurrent_runs and max_sessions must be at least 1",
            );
        }
        if self.limits.webhook_concurrency == 0 || self.limits.run_attempts == 0 {
            return bad(
                "limits",
                "webhook_concurrency and run_attempts must be at least 1",
            );
        }
        if self.limits.max_vms < self.limits.max_sessions {
            return bad("limits.max_vms", "must be at least limits.max_sessions");
        }
        if !["qemu", "firecracker"].contains(&self.vm.backend.as_str()) {
            return bad("vm.backend", "must be qemu or firecracker");
        }
        if !["auto", "kvm", "tcg"].contains(&self.vm.accel.as_str()) {
            return bad("vm.accel", "must be auto, kvm or tcg");
        }
        if self.github.app_id != 0 && self.github.private_key.is_empty() {
            return bad("github.private_key", "a GitHub App needs its private key");
        }
        if self.worker.lease_seconds < 5 {
            return bad("worker.lease_seconds", "must be at least 5");
        }
        if !self.secrets.key.is_empty() {
            let previous = Some(self.secrets.previous_key.as_str());
            if let Err(err) = crate::vault::Keyring::new(&self.secrets.key, previous) {
                let key = match err {
                    crate::vault::VaultError::BadKey { key } => key,
                    _ => "secrets.key",
                };
                return bad(key, "must be 64 hexadecimal digits (openssl rand -hex 32)");
            }
        } else if !self.secrets.previous_key.is_empty() {
            return bad("secrets.key", "a previous_key needs the new key beside it");
        }
        Ok(())
    }

    /// Whether `full_name` may run here.
    pub fn repository_allowed(&self, full_name: &str) -> bool {
        self.allow.repositories.is_empty()
            || self
                .allow
                .repositories
                .iter()
                .any(|pattern| wildcard_match(pattern, full_name))
    }

    /// Whether the workflow file `path` (`.github/workflows/ci.yml`) may run here.
    pub fn workflow_allowed(&self, path: &str) -> bool {
        let file = path.rsplit('/').next().unwrap_or(path);
        self.allow.workflows.is_empty()
            || self.allow.workflows.iter().any(|pattern| {
                let subject = if pattern.contains('/') { path } else { file };
                wildcard_match(pattern, subject)
            })
    }
}

/// `*` matches any run of characters other than `/`; everything else literally.
fn wildcard_match(pattern: &str, subject: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), subject.as_bytes())
}

fn invalid(name: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, col) = err
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        })
        .unwrap_or((1, 1));
    ConfigError::Invalid {
        path: name.into(),
        line,
        col,
        message: err.message().to_string(),
    }
}

fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Value {
        key: key.into(),
        message: format!("cannot read {}: {err}", path.display()),
    })?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// The dotted path of an override's name (`LIMITS_MAX_VMS` -> `limits.max_vms`).
fn config_path(name: &str) -> Option<Vec<String>> {
    const SECTIONS: [&str; 9] = [
        "github",
        "allow",
        "limits",
        "worker",
        "vm",
        "learning",
        "llm",
        "secrets",
        "variables",
    ];
    let lower = name.to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(key) = lower.strip_prefix(&format!("{section}_")) {
            return Some(vec![section.to_string(), key.to_string()]);
        }
    }
    const TOP: [&str; 7] = [
        "listen",
        "public_url",
        "database_url",
        "data_dir",
        "webhook_secret",
        "api_token",
        "max_body_bytes",
    ];
    TOP.contains(&lower.as_str()).then(|| vec![lower])
}

fn parse_override(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

fn take_path(table: &mut toml::Table, path: &[String]) -> Option<toml::Value> {
    match path {
        [] => None,
        [key] => table.remove(key),
        [section, rest @ ..] => match table.get_mut(section) {
            Some(toml::Value::Table(inner)) => take_path(inner, rest),
            _ => None,
        },
    }
}

/// Sets the keys `FIRERUNNER_<SECTION>_<KEY>` name (read from a file for
/// `..._FILE`) in `table`.
fn apply_environment(
    table: &mut toml::Table,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (key, value) in environment {
        let Some(rest) = key.strip_prefix("FIRERUNNER_") else {
            continue;
        };
        let (rest, from_file) = match rest.strip_suffix("_FILE") {
            Some(rest) => (rest, true),
            None => (rest, false),
        };
        let Some(path) = config_path(rest) else {
            continue;
        };
        let value = if from_file {
            toml::Value::String(read_secret(&path.join("."), Path::new(&value))?)
        } else {
            parse_override(&value)
        };
        set_path(table, &path, value);
    }
    Ok(())
}

/// Replaces each `<secret>_file` key of `table` with the secret read from that file.
fn read_secret_files(table: &mut toml::Table) -> Result<(), ConfigError> {
    for key in SECRET_KEYS {
        let file_key = format!("{key}_file");
        let path: Vec<String> = file_key.split('.').map(str::to_string).collect();
        if let Some(toml::Value::String(file)) = take_path(table, &path) {
            let secret = read_secret(key, Path::new(&file))?;
            let path: Vec<String> = key.split('.').map(str::to_string).collect();
            set_path(table, &path, toml::Value::String(secret));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_file_and_environment_layer_in_that_order() {
        let config = Config::from_parts(
            "firerunner.toml",
            "listen = \"0.0.0.0:9000\"\n[limits]\nmax_vms = 8\nmax_sessions = 4\n",
            env(&[
                ("FIRERUNNER_LIMITS_MAX_VMS", "12"),
                ("FIRERUNNER_ALLOW_REPOSITORIES", "[\"octo/*\"]"),
                ("FIRERUNNER_GITHUB_API_URL", "http://127.0.0.1:1/api/v3"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.limits.max_vms, 12);
        assert_eq!(config.limits.max_sessions, 4);
        assert_eq!(config.limits.concurrent_runs, 2, "default kept");
        assert_eq!(config.github.api_url, "http://127.0.0.1:1/api/v3");
        assert!(config.repository_allowed("octo/app"));
        assert!(!config.repository_allowed("octo/app/x"));
        assert!(!config.repository_allowed("evil/app"));
    }

    #[test]
    fn learning_and_the_language_model_are_configured_like_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("llm-key"), "sk-test\n").unwrap();
        let config = Config::from_parts(
            "firerunner.toml",
            "[learning]\nlesson_threshold = 5\n[llm]\nmodel = \"llama3.1\"\n",
            env(&[
                ("FIRERUNNER_LLM_URL", "http://127.0.0.1:11434/v1"),
                (
                    "FIRERUNNER_LLM_API_KEY_FILE",
                    dir.path().join("llm-key").to_str().unwrap(),
                ),
            ]),
        )
        .unwrap();
        assert!(config.learning.enabled, "on by default");
        assert_eq!(config.learning.hint_scope, HintScope::Repository);
        assert_eq!(config.learning.lesson_threshold, 5);
        assert_eq!(config.llm.url, "http://127.0.0.1:11434/v1");
        assert_eq!(config.llm.model, "llama3.1");
        assert_eq!(config.llm.api_key, "sk-test");
        assert_eq!(config.llm.timeout_seconds, 20);
        let err = Config::from_parts("f.toml", "[llm]\nmodle = \"x\"\n", Vec::new()).unwrap_err();
        assert!(err.to_string().starts_with("f.toml:2:1"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_named_in_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("token"), "ghp_x").unwrap();
        let text = format!(
            "webhook_secret_file = \"{}\"\n",
            dir.path().join("secret").display()
        );
        let token_file = dir.path().join("token").display().to_string();
        let config = Config::from_parts(
            "c.toml",
            &text,
            env(&[("FIRERUNNER_GITHUB_TOKEN_FILE", token_file.as_str())]),
        )
        .unwrap();
        assert_eq!(config.webhook_secret, "s3cret");
        assert_eq!(config.github.token, "ghp_x");
        let missing = Config::from_parts("c.toml", "api_token_file = \"/nonexistent/x\"", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("api_token") && missing.contains("/nonexistent/x"),
            "{missing}"
        );
    }

    #[test]
    fn errors_point_at_the_line_and_column_or_name_the_key() {
        let err = Config::from_parts(
            "c.toml",
            "listen = \"x:1\"\n[limits]\nmax_vmz = 3\n",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml:3:1: "), "{err}");
        assert!(err.contains("max_vmz"), "{err}");
        let err = Config::from_parts("c.toml", "[limits]\nmax_vms = \"many\"\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2:11: "), "{err}");
        let err = Config::from_parts("c.toml", "listen = \"nowhere\"\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key listen: must be an address like 127.0.0.1:8080"
        );
        let err = Config::from_parts("c.toml", "", env(&[("FIRERUNNER_LIMITS_MAX_VMS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment override"), "{err}");
    }

    #[test]
    fn debug_output_names_secrets_but_never_shows_them() {
        let mut config = Config {
            webhook_secret: "hook-s3cret".into(),
            api_token: "api-s3cret".into(),
            ..Config::default()
        };
        config.github.token = "ghp_s3cret".into();
        config.github.private_key = "-----BEGIN RSA PRIVATE KEY-----s3cret".into();
        config.llm.api_key = "sk-s3cret".into();
        config.database_url = "postgres://ci:pg-s3cret@db.example.com/ci".into();
        for shown in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("webhook_secret: \"<redacted>\""), "{shown}");
            assert!(
                shown.contains("postgres://ci:<redacted>@db.example.com/ci"),
                "{shown}"
            );
            assert!(
                shown.contains("127.0.0.1:8080"),
                "the rest is shown: {shown}"
            );
        }
    }

    #[test]
    fn workflow_allow_list_matches_names_or_paths() {
        let mut config = Config::default();
        assert!(config.workflow_allowed(".github/workflows/anything.yml"));
        config.allow.workflows = vec!["ci.yml".into(), ".github/workflows/release-*.yaml".into()];
        assert!(config.workflow_allowed(".github/workflows/ci.yml"));
        assert!(config.workflow_allowed(".github/workflows/release-1.yaml"));
        assert!(!config.workflow_allowed(".github/workflows/deploy.yml"));
    }
}
