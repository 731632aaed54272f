//! `actions/upload-artifact`, `actions/download-artifact` and `actions/cache`
//! served by the host: files move between the guest and the host's stores
//! through the agent, so the guest needs no network or token.

use std::collections::BTreeMap;

use firerunner_workflow::trigger::Glob;

use firerunner_agent_proto::ClientError;

use crate::sandbox::{ProcessEnd, ProcessSpec, Sandbox, SandboxError};
use crate::stores::artifacts::{ArtifactError, ArtifactStore};
use crate::stores::cache::{cache_version, path_slot, CacheError, CacheStore, SaveOutcome};

/// The actions the host serves itself instead of fetching them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostServed {
    /// `actions/checkout`: the host prepares the files with git.
    Checkout,
    /// `actions/upload-artifact`.
    UploadArtifact,
    /// `actions/download-artifact`.
    DownloadArtifact,
    /// `actions/cache` and `actions/cache/restore`.
    Cache,
}

impl HostServed {
    /// Which one `remote` names, if any (owner and repository in any case).
    pub fn of(remote: &firerunner_workflow::RemoteRef) -> Option<Self> {
        if !remote.owner.eq_ignore_ascii_case("actions") {
            return None;
        }
        let repo = remote.repo.to_ascii_lowercase();
        match (repo.as_str(), remote.path.to_ascii_lowercase().as_str()) {
            ("checkout", "") => Some(Self::Checkout),
            ("upload-artifact", "") => Some(Self::UploadArtifact),
            ("download-artifact", "") => Some(Self::DownloadArtifact),
            ("cache", "" | "restore") => Some(Self::Cache),
            _ => None,
        }
    }
}

/// What a native action step produced.
#[derive(Debug, Default)]
pub struct ActionResult {
    /// Lines for the job log.
    pub log: Vec<String>,
    /// Step outputs.
    pub outputs: BTreeMap<String, String>,
}

/// The inputs of a `uses:` step, evaluated to strings.
pub type Inputs = BTreeMap<String, String>;

fn lines(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Resolves `path` against `base` (absolute paths and `~` kept/expanded).
fn absolute(path: &str, base: &str, home: &str) -> String {
    let joined = if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else if path == "~" {
        home.to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    normalize(&joined)
}

/// Removes `.` and `..` segments and duplicate slashes.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The directory part of a pattern before its first glob character.
fn literal_prefix(pattern: &str) -> String {
    let mut prefix = Vec::new();
    for part in pattern.split('/') {
        if part.contains(['*', '?', '[', '+']) {
            break;
        }
        prefix.push(part);
    }
    let joined = prefix.join("/");
    if joined.is_empty() {
        "/".into()
    } else {
        joined
    }
}

/// Why a natively served action failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeActionError {
    /// The guest connection failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Streaming files to or from the guest failed (or the guest sent too much).
    #[error(transparent)]
    Transfer(#[from] ClientError),
    /// A helper command in the guest failed.
    #[error("{0}")]
    GuestCommand(String),
    /// A required input is missing.
    #[error("input '{0}' is required")]
    MissingInput(&'static str),
    /// An input has a value the action does not take.
    #[error("{0}")]
    InvalidInput(String),
    /// No file matched `path` with `if-no-files-found: error`.
    #[error("{0}")]
    NoFiles(String),
    /// The artifact store refused or failed.
    #[error("{0}")]
    Artifact(#[from] ArtifactError),
    /// The cache store refused or failed.
    #[error("{0}")]
    Cache(#[from] CacheError),
    /// A host folder could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The run has no scope (ref) to save a cache in.
    #[error("no scope to save the cache in")]
    NoCacheScope,
}

impl NativeActionError {
    /// True when the host, the VM or its agent failed (the step could not be
    /// run), false when the step's inputs or files are at fault.
    pub fn is_infrastructure(&self) -> bool {
        match self {
            Self::Sandbox(_) | Self::Transfer(_) | Self::GuestCommand(_) | Self::Io(_) => true,
            Self::NoCacheScope => true,
            Self::Artifact(e) => matches!(e, ArtifactError::Io { .. }),
            Self::Cache(e) => matches!(e, CacheError::Io { .. }),
            Self::MissingInput(_) | Self::InvalidInput(_) | Self::NoFiles(_) => false,
        }
    }
}

/// The guest a native action works in: its sandbox and the job's folders.
#[derive(Clone, Copy)]
pub struct ActionGuest<'a> {
    /// The job's sandbox.
    pub sandbox: &'a Sandbox,
    /// `GITHUB_WORKSPACE`: relative paths start here.
    pub workspace: &'a str,
    /// `$HOME`: what `~` stands for.
    pub home: &'a str,
    /// `RUNNER_TEMP`: where files are staged.
    pub temp: &'a str,
}

impl ActionGuest<'_> {
    /// `path` resolved against the workspace and home.
    fn absolute(&self, path: &str) -> String {
        absolute(path, self.workspace, self.home)
    }

    /// Runs `script` with `sh -c` and returns how it ended and its stdout lines.
    async fn lines(&self, script: &str) -> Result<(ProcessEnd, Vec<String>), SandboxError> {
        let mut out = Vec::new();
        let spec = ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([(
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".to_string(),
            )]),
            cwd: None,
            timeout: Some(std::time::Duration::from_secs(600)),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let end = self
            .sandbox
            .run(spec, &cancel, &mut |stream, line| {
                if stream == crate::logs::LogStream::Stdout {
                    out.push(line)
                }
            })
            .await?;
        Ok((end, out))
    }

    /// Creates `dest` in the guest and unpacks the host folder `files` into it.
    async fn put(&self, files: &std::path::Path, dest: &str) -> Result<(), NativeActionError> {
        self.sandbox.create_dirs(&[dest]).await?;
        self.sandbox.client().put_tar(files, dest).await?;
        Ok(())
    }

    /// Copies `files` under `root` into a fresh guest directory `staging`.
    async fn stage(
        &self,
        root: &str,
        files: &[String],
        staging: &str,
    ) -> Result<(), NativeActionError> {
        let mut script = format!("set -e\nrm -rf {0}\nmkdir -p {0}\n", quote(staging));
        for file in files {
            let relative = file
                .strip_prefix(root)
                .unwrap_or(file)
                .trim_start_matches('/');
            let target = format!("{staging}/{relative}");
            let parent = target.rsplit_once('/').map(|(d, _)| d).unwrap_or(staging);
            script.push_str(&format!(
                "mkdir -p {}\ncp -p {} {}\n",
                quote(parent),
                quote(file),
                quote(&target)
            ));
        }
        let (end, _) = self.lines(&script).await?;
        if end.succeeded() {
            Ok(())
        } else {
            Err(NativeActionError::GuestCommand(
                "copying the files in the guest failed".into(),
            ))
        }
    }
}

/// The files some `path:` patterns select: a directory selects what is under
/// it; `!pattern` excludes.
struct FileSelection {
    includes: Vec<Glob>,
    excludes: Vec<Glob>,
    /// The literal folder before each include's first glob character.
    roots: Vec<String>,
}

impl FileSelection {
    fn new(guest: &ActionGuest<'_>, patterns: &[String]) -> Result<Self, NativeActionError> {
        let mut selection = Self {
            includes: Vec::new(),
            excludes: Vec::new(),
            roots: Vec::new(),
        };
        for pattern in patterns {
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, pattern.as_str()),
            };
            let full = guest.absolute(body.trim_end_matches('/'));
            let glob = Glob::new(&full)
                .map_err(|e| NativeActionError::InvalidInput(format!("path {pattern:?}: {e}")))?;
            if negated {
                selection.excludes.push(glob);
            } else {
                selection.roots.push(literal_prefix(&full));
                selection.includes.push(glob);
            }
        }
        Ok(selection)
    }

    /// The selected guest files, sorted.
    async fn files(&self, guest: &ActionGuest<'_>) -> Result<Vec<String>, NativeActionError> {
        let mut files = Vec::new();
        for root in &self.roots {
            let (end, found) = guest
                .lines(&format!(
                    "[ -e {0} ] && find {0} \\( -type f -o -type l \\) -print || true",
                    quote(root)
                ))
                .await?;
            if !end.succeeded() {
                return Err(NativeActionError::GuestCommand(format!(
                    "cannot list {root} in the guest"
                )));
            }
            files.extend(found);
        }
        files.sort();
        files.dedup();
        files.retain(|f| selected(&self.includes, f) && !selected(&self.excludes, f));
        Ok(files)
    }

    /// The least common ancestor of the search roots; a root that is itself a
    /// selected file contributes its directory.
    fn common_root(&self, files: &[String]) -> String {
        let dirs: Vec<String> = self
            .roots
            .iter()
            .map(|root| {
                if files.iter().any(|f| f == root) {
                    root.rsplit_once('/')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default()
                } else {
                    root.clone()
                }
            })
            .collect();
        let mut common: Vec<&str> = dirs
            .first()
            .map(|d| d.split('/').collect())
            .unwrap_or_default();
        for dir in &dirs[1.min(dirs.len())..] {
            let parts: Vec<&str> = dir.split('/').collect();
            let same = common
                .iter()
                .zip(&parts)
                .take_while(|(a, b)| a == b)
                .count();
            common.truncate(same);
        }
        normalize(&common.join("/"))
    }
}

/// The files `patterns` select in the guest, with the artifact's root directory.
async fn select_files(
    guest: &ActionGuest<'_>,
    patterns: &[String],
) -> Result<(String, Vec<String>), NativeActionError> {
    let selection = FileSelection::new(guest, patterns)?;
    let files = selection.files(guest).await?;
    Ok((selection.common_root(&files), files))
}

/// Why `hashFiles` could not hash the workspace copy.
#[derive(Debug, thiserror::Error)]
pub enum HashFilesError {
    /// A pattern that is not a glob.
    #[error("{pattern:?}: {message}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// The workspace copy could not be listed.
    #[error("{0}")]
    List(std::io::Error),
    /// A matching file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file, relative to the workspace.
        file: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// `hashFiles(patterns)` over a host copy of the workspace at `root`: the
/// SHA-256 of the concatenated SHA-256 digests of every matching file, in
/// path order, as GitHub computes it; empty when nothing matches. Patterns
/// are relative to the workspace; `!pattern` excludes; a matching directory
/// selects what is under it.
pub fn hash_files(root: &std::path::Path, patterns: &[String]) -> Result<String, HashFilesError> {
    use sha2::{Digest, Sha256};
    let (includes, excludes) = hash_globs(patterns)?;
    let mut files = Vec::new();
    collect_files(root, root, &mut files).map_err(HashFilesError::List)?;
    files.sort();
    let mut outer = Sha256::new();
    let mut any = false;
    for relative in files {
        if selected(&includes, &relative) && !selected(&excludes, &relative) {
            let bytes =
                std::fs::read(root.join(&relative)).map_err(|source| HashFilesError::Read {
                    file: relative.clone(),
                    source,
                })?;
            outer.update(Sha256::digest(&bytes));
            any = true;
        }
    }
    Ok(if any {
        outer
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        String::new()
    })
}

/// The include and exclude (`!pattern`) globs of `hashFiles`, relative to the workspace.
fn hash_globs(patterns: &[String]) -> Result<(Vec<Glob>, Vec<Glob>), HashFilesError> {
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for pattern in patterns {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, pattern.as_str()),
        };
        let body = body.trim().trim_start_matches("./").trim_end_matches('/');
        let glob = Glob::new(body).map_err(|e| HashFilesError::Pattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        if negated {
            excludes.push(glob);
        } else {
            includes.push(glob);
        }
    }
    Ok((includes, excludes))
}

/// Whether `path` or one of its parent directories matches a glob.
fn selected(globs: &[Glob], path: &str) -> bool {
    let mut candidate = path;
    loop {
        if globs.iter().any(|g| g.is_match(candidate)) {
            return true;
        }
        match candidate.rfind('/') {
            Some(0) | None => return false,
            Some(at) => candidate = &candidate[..at],
        }
    }
}

fn collect_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<String>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &entry.path(), out)?;
        } else if kind.is_file() {
            if let Ok(relative) = entry.path().strip_prefix(root) {
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

/// The inputs of `actions/upload-artifact` (v4: name, path, if-no-files-found,
/// retention-days, overwrite).
struct UploadRequest {
    name: String,
    patterns: Vec<String>,
    retention: Option<u32>,
    overwrite: bool,
}

impl UploadRequest {
    fn new(inputs: &Inputs) -> Result<Self, NativeActionError> {
        let name = inputs
            .get("name")
            .cloned()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "artifact".into());
        let patterns = lines(inputs.get("path"));
        if patterns.is_empty() {
            return Err(NativeActionError::MissingInput("path"));
        }
        let retention = match inputs.get("retention-days").filter(|v| !v.is_empty()) {
            Some(days) => Some(days.parse::<u32>().map_err(|_| {
                NativeActionError::InvalidInput(format!("retention-days {days:?} is not a number"))
            })?),
            None => None,
        };
        let overwrite = inputs.get("overwrite").is_some_and(|v| v == "true");
        Ok(Self {
            name,
            patterns,
            retention,
            overwrite,
        })
    }

    /// What an upload that found no file gives, as `if-no-files-found` asks.
    fn nothing_found(&self, inputs: &Inputs) -> Result<ActionResult, NativeActionError> {
        let message = format!(
            "no files were found with the provided path: {}",
            self.patterns.join(", ")
        );
        let mut result = ActionResult::default();
        match inputs
            .get("if-no-files-found")
            .map(String::as_str)
            .unwrap_or("warn")
        {
            "error" => return Err(NativeActionError::NoFiles(message)),
            "ignore" => {}
            _ => result.log.push(format!(
                "warning: {message}. No artifacts will be uploaded."
            )),
        }
        Ok(result)
    }
}

/// `actions/upload-artifact` (v4 inputs: name, path, if-no-files-found,
/// retention-days, overwrite).
pub async fn upload_artifact(
    guest: &ActionGuest<'_>,
    store: &ArtifactStore,
    run_id: &str,
    inputs: &Inputs,
) -> Result<ActionResult, NativeActionError> {
    let request = UploadRequest::new(inputs)?;
    let (root, files) = select_files(guest, &request.patterns).await?;
    if files.is_empty() {
        return request.nothing_found(inputs);
    }
    let writer = store.begin_upload(run_id, &request.name, request.retention, request.overwrite)?;
    let staging = format!("{}/_artifact_upload", guest.temp);
    guest.stage(&root, &files, &staging).await?;
    let options = crate::guest_input::artifact_options();
    guest
        .sandbox
        .client()
        .get_tar(&staging, &writer.files(), options)
        .await?;
    let info = writer.commit()?;
    let mut result = ActionResult::default();
    result.log.push(format!(
        "Uploaded artifact '{}': {} file(s), {} bytes, root {root}",
        request.name,
        files.len(),
        info.size
    ));
    result.outputs.insert("artifact-id".into(), request.name);
    Ok(result)
}

/// The artifacts `actions/download-artifact` fetches, each with its guest folder:
/// `name`, else every artifact of the run that `pattern` matches (each in its own
/// folder unless `merge-multiple`).
fn wanted_artifacts(
    store: &ArtifactStore,
    run_id: &str,
    inputs: &Inputs,
    target: &str,
) -> Result<Vec<(String, String)>, NativeActionError> {
    if let Some(name) = inputs.get("name").filter(|n| !n.is_empty()) {
        return Ok(vec![(name.clone(), target.to_owned())]);
    }
    let pattern = inputs
        .get("pattern")
        .filter(|p| !p.is_empty())
        .map(|p| Glob::new(p))
        .transpose()
        .map_err(|e| NativeActionError::InvalidInput(e.to_string()))?;
    let merge = inputs.get("merge-multiple").is_some_and(|v| v == "true");
    let mut wanted = Vec::new();
    for info in store.list(run_id)? {
        if pattern.as_ref().is_some_and(|p| !p.is_match(&info.name)) {
            continue;
        }
        let dest = if merge {
            target.to_owned()
        } else {
            format!("{target}/{}", info.name)
        };
        wanted.push((info.name, dest));
    }
    Ok(wanted)
}

/// `actions/download-artifact` (v4 inputs: name, path, pattern, merge-multiple).
pub async fn download_artifact(
    guest: &ActionGuest<'_>,
    store: &ArtifactStore,
    run_id: &str,
    inputs: &Inputs,
) -> Result<ActionResult, NativeActionError> {
    let path = inputs.get("path").filter(|p| !p.is_empty());
    let target = guest.absolute(path.map_or(".", String::as_str));
    let mut result = ActionResult::default();
    for (name, dest) in wanted_artifacts(store, run_id, inputs, &target)? {
        let (files, _) = store.files(run_id, &name)?;
        guest.put(&files, &dest).await?;
        result
            .log
            .push(format!("Downloaded artifact '{name}' to {dest}"));
    }
    result.outputs.insert("download-path".into(), target);
    Ok(result)
}

/// Where a cache lives and which refs it may be restored from.
#[derive(Debug, Clone)]
pub struct CacheScope {
    /// `owner/name`.
    pub repository: String,
    /// The run's ref, then fall-backs (base branch, default branch).
    pub scopes: Vec<String>,
}

/// A cache to save at the end of the job.
#[derive(Debug, Clone)]
pub struct PendingCacheSave {
    key: String,
    paths: Vec<String>,
    guest_paths: Vec<String>,
}

/// The inputs of `actions/cache`: key, path, restore-keys.
struct CacheRequest {
    key: String,
    paths: Vec<String>,
    restore_keys: Vec<String>,
}

impl CacheRequest {
    fn new(inputs: &Inputs) -> Result<Self, NativeActionError> {
        let key = inputs
            .get("key")
            .filter(|k| !k.is_empty())
            .ok_or(NativeActionError::MissingInput("key"))?
            .clone();
        let paths = lines(inputs.get("path"));
        if paths.is_empty() {
            return Err(NativeActionError::MissingInput("path"));
        }
        let restore_keys = lines(inputs.get("restore-keys"));
        Ok(Self {
            key,
            paths,
            restore_keys,
        })
    }

    /// The log line of a miss.
    fn not_found(&self) -> String {
        format!(
            "Cache not found for input keys: {}",
            std::iter::once(self.key.clone())
                .chain(self.restore_keys.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `actions/cache` restore; returns the save to do after the job unless the key hit exactly.
pub async fn restore_cache(
    guest: &ActionGuest<'_>,
    store: &CacheStore,
    scope: &CacheScope,
    inputs: &Inputs,
) -> Result<(ActionResult, Option<PendingCacheSave>), NativeActionError> {
    let request = CacheRequest::new(inputs)?;
    let version = cache_version(&request.paths);
    let scopes: Vec<&str> = scope.scopes.iter().map(String::as_str).collect();
    let found = store.lookup(
        &scope.repository,
        &scopes,
        &request.key,
        &request.restore_keys,
        &version,
    )?;
    let guest_paths: Vec<String> = request.paths.iter().map(|p| guest.absolute(p)).collect();
    let mut result = ActionResult::default();
    let exact = match &found {
        Some(hit) => {
            for (index, path) in guest_paths.iter().enumerate() {
                let slot = path_slot(&hit.data, index);
                if slot.exists() {
                    guest.put(&slot, path).await?;
                }
            }
            let key = hit.info.key.clone();
            result.log.push(format!("Cache restored from key: {key}"));
            result.outputs.insert("cache-matched-key".into(), key);
            hit.exact
        }
        None => {
            result.log.push(request.not_found());
            false
        }
    };
    result.outputs.insert("cache-hit".into(), exact.to_string());
    let pending = (!exact).then_some(PendingCacheSave {
        key: request.key,
        paths: request.paths,
        guest_paths,
    });
    Ok((result, pending))
}

/// Saves a cache after a successful job (the post step of actions/cache).
pub async fn save_cache(
    guest: &ActionGuest<'_>,
    store: &CacheStore,
    scope: &CacheScope,
    pending: &PendingCacheSave,
) -> Result<String, NativeActionError> {
    let Some(own_scope) = scope.scopes.first() else {
        return Err(NativeActionError::NoCacheScope);
    };
    let version = cache_version(&pending.paths);
    let Some(writer) = store.begin_save(&scope.repository, own_scope, &pending.key, &version)?
    else {
        return Ok(format!("Cache already exists for key: {}", pending.key));
    };
    for (index, path) in pending.guest_paths.iter().enumerate() {
        let (end, _) = guest.lines(&format!("test -d {}", quote(path))).await?;
        if end.succeeded() {
            let slot = path_slot(&writer.data(), index);
            std::fs::create_dir_all(&slot)?;
            let options = crate::guest_input::cache_options();
            guest.sandbox.client().get_tar(path, &slot, options).await?;
        }
    }
    match writer.commit()? {
        SaveOutcome::Saved(info) => Ok(format!(
            "Cache saved with key: {} ({} bytes)",
            info.key, info.size
        )),
        SaveOutcome::AlreadyExists => Ok(format!("Cache already exists for key: {}", pending.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_serves_checkout_artifacts_and_cache_by_name() {
        let of = |uses: &str| match firerunner_workflow::ActionRef::parse(uses) {
            Ok(firerunner_workflow::ActionRef::Remote(remote)) => HostServed::of(&remote),
            other => panic!("{uses}: {other:?}"),
        };
        let kinds: Vec<Option<HostServed>> = [
            "actions/checkout@v4",
            "Actions/Checkout@v4",
            "actions/checkout/sub@v4",
            "octo/checkout@v4",
            "actions/upload-artifact@v4",
            "actions/download-artifact@v4",
            "actions/cache@v4",
            "actions/cache/restore@v4",
            "actions/cache/save@v4",
            "actions/setup-node@v4",
        ]
        .iter()
        .map(|uses| of(uses))
        .collect();
        use HostServed::*;
        assert_eq!(
            kinds,
            [
                Some(Checkout),
                Some(Checkout),
                None,
                None,
                Some(UploadArtifact),
                Some(DownloadArtifact),
                Some(Cache),
                Some(Cache),
                None,
                None,
            ]
        );
    }

    #[test]
    fn hash_files_hashes_the_digests_of_the_matching_files() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/nested")).unwrap();
        std::fs::write(dir.path().join("data/one.lock"), "alpha\n").unwrap();
        std::fs::write(dir.path().join("data/nested/two.lock"), "beta\n").unwrap();
        std::fs::write(dir.path().join("single.txt"), "solo\n").unwrap();
        let single = hash_files(dir.path(), &["single.txt".into()]).unwrap();
        let expected: String = Sha256::digest(Sha256::digest(b"solo\n"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(single, expected);
        let all = hash_files(dir.path(), &["data/**/*.lock".into()]).unwrap();
        assert_eq!(all.len(), 64);
        assert_eq!(
            all,
            hash_files(dir.path(), &["data".into(), "!**/*.txt".into()]).unwrap()
        );
        assert_eq!(hash_files(dir.path(), &["missing/**".into()]).unwrap(), "");
    }

    #[test]
    fn paths_resolve_against_the_workspace_and_home() {
        assert_eq!(absolute("dist/", "/w/r", "/home/runner"), "/w/r/dist");
        assert_eq!(
            absolute("~/.npm", "/w/r", "/home/runner"),
            "/home/runner/.npm"
        );
        assert_eq!(absolute("/tmp/x/../y", "/w/r", "/h"), "/tmp/y");
        assert_eq!(literal_prefix("/w/r/out/**/*.txt"), "/w/r/out");
        assert_eq!(literal_prefix("/w/r/a.txt"), "/w/r/a.txt");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
