//! `actions/upload-artifact`, `actions/download-artifact` and `actions/cache`
//! served by the host: files move between the guest and the host's stores
//! through the agent, so the guest needs no network or token.

use std::collections::BTreeMap;

use firerunner_workflow::trigger::Glob;

use crate::artifacts::ArtifactStore;
use crate::cache::{cache_version, path_slot, CacheStore, SaveOutcome};
use crate::sandbox::{ProcessEnd, ProcessSpec, Sandbox};

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

async fn guest_lines(sandbox: &Sandbox, script: &str) -> Result<(ProcessEnd, Vec<String>), String> {
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
    let end = sandbox
        .run(
            spec,
            &tokio_util::sync::CancellationToken::new(),
            &mut |stream, line| {
                if stream == crate::logs::LogStream::Stdout {
                    out.push(line)
                }
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((end, out))
}

/// The files `patterns` select in the guest (a directory selects what is
/// under it; `!pattern` excludes), with the artifact's root directory.
async fn select_files(
    sandbox: &Sandbox,
    patterns: &[String],
    workspace: &str,
    home: &str,
) -> Result<(String, Vec<String>), String> {
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    let mut roots = Vec::new();
    for pattern in patterns {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, pattern.as_str()),
        };
        let full = absolute(body.trim_end_matches('/'), workspace, home);
        let glob = Glob::new(&full).map_err(|e| format!("path {pattern:?}: {e}"))?;
        if negated {
            excludes.push(glob);
        } else {
            roots.push(literal_prefix(&full));
            includes.push(glob);
        }
    }
    let mut files = Vec::new();
    for root in &roots {
        let (end, found) = guest_lines(
            sandbox,
            &format!(
                "[ -e {0} ] && find {0} \\( -type f -o -type l \\) -print || true",
                quote(root)
            ),
        )
        .await?;
        if !end.succeeded() {
            return Err(format!("cannot list {root} in the guest"));
        }
        files.extend(found);
    }
    files.sort();
    files.dedup();
    files.retain(|f| selected(&includes, f) && !selected(&excludes, f));
    // The least common ancestor of the search roots; a root that is itself a
    // selected file contributes its directory.
    let dirs: Vec<String> = roots
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
    let root = normalize(&common.join("/"));
    Ok((root, files))
}

/// Copies `files` under `root` into a fresh guest directory and returns it.
async fn stage(
    sandbox: &Sandbox,
    root: &str,
    files: &[String],
    staging: &str,
) -> Result<(), String> {
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
    let (end, _) = guest_lines(sandbox, &script).await?;
    if end.succeeded() {
        Ok(())
    } else {
        Err("copying the files in the guest failed".into())
    }
}

/// `hashFiles(patterns)` over a host copy of the workspace at `root`: the
/// SHA-256 of the concatenated SHA-256 digests of every matching file, in
/// path order, as GitHub computes it; empty when nothing matches. Patterns
/// are relative to the workspace; `!pattern` excludes; a matching directory
/// selects what is under it.
pub fn hash_files(root: &std::path::Path, patterns: &[String]) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for pattern in patterns {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, pattern.as_str()),
        };
        let body = body.trim().trim_start_matches("./").trim_end_matches('/');
        let glob = Glob::new(body).map_err(|e| format!("{pattern:?}: {e}"))?;
        if negated {
            excludes.push(glob);
        } else {
            includes.push(glob);
        }
    }
    let mut files = Vec::new();
    collect_files(root, root, &mut files).map_err(|e| e.to_string())?;
    files.sort();
    let mut outer = Sha256::new();
    let mut any = false;
    for relative in files {
        if selected(&includes, &relative) && !selected(&excludes, &relative) {
            let bytes =
                std::fs::read(root.join(&relative)).map_err(|e| format!("{relative}: {e}"))?;
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

/// `actions/upload-artifact` (v4 inputs: name, path, if-no-files-found,
/// retention-days, overwrite).
pub async fn upload_artifact(
    sandbox: &Sandbox,
    store: &ArtifactStore,
    run_id: &str,
    inputs: &Inputs,
    workspace: &str,
    home: &str,
    temp: &str,
) -> Result<ActionResult, String> {
    let name = inputs
        .get("name")
        .cloned()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "artifact".into());
    let patterns = lines(inputs.get("path"));
    if patterns.is_empty() {
        return Err("input 'path' is required".into());
    }
    let (root, files) = select_files(sandbox, &patterns, workspace, home).await?;
    let mut result = ActionResult::default();
    if files.is_empty() {
        let message = format!(
            "no files were found with the provided path: {}",
            patterns.join(", ")
        );
        return match inputs
            .get("if-no-files-found")
            .map(String::as_str)
            .unwrap_or("warn")
        {
            "error" => Err(message),
            "ignore" => Ok(result),
            _ => {
                result.log.push(format!(
                    "warning: {message}. No artifacts will be uploaded."
                ));
                Ok(result)
            }
        };
    }
    let retention = match inputs.get("retention-days").filter(|v| !v.is_empty()) {
        Some(days) => Some(
            days.parse::<u32>()
                .map_err(|_| format!("retention-days {days:?} is not a number"))?,
        ),
        None => None,
    };
    let overwrite = inputs.get("overwrite").is_some_and(|v| v == "true");
    let writer = store
        .begin_upload(run_id, &name, retention, overwrite)
        .map_err(|e| e.to_string())?;
    let staging = format!("{temp}/_artifact_upload");
    stage(sandbox, &root, &files, &staging).await?;
    sandbox
        .client()
        .get_tar(
            &staging,
            &writer.files(),
            crate::guest_input::artifact_options(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let info = writer.commit().map_err(|e| e.to_string())?;
    result.log.push(format!(
        "Uploaded artifact '{name}': {} file(s), {} bytes, root {root}",
        files.len(),
        info.size
    ));
    result.outputs.insert("artifact-id".into(), name);
    Ok(result)
}

/// `actions/download-artifact` (v4 inputs: name, path, pattern, merge-multiple).
pub async fn download_artifact(
    sandbox: &Sandbox,
    store: &ArtifactStore,
    run_id: &str,
    inputs: &Inputs,
    workspace: &str,
    home: &str,
) -> Result<ActionResult, String> {
    let target = absolute(
        inputs
            .get("path")
            .filter(|p| !p.is_empty())
            .map_or(".", String::as_str),
        workspace,
        home,
    );
    let mut result = ActionResult::default();
    let mut wanted: Vec<(String, String)> = Vec::new();
    if let Some(name) = inputs.get("name").filter(|n| !n.is_empty()) {
        wanted.push((name.clone(), target.clone()));
    } else {
        let pattern = inputs
            .get("pattern")
            .filter(|p| !p.is_empty())
            .map(|p| Glob::new(p))
            .transpose()
            .map_err(|e| e.to_string())?;
        let merge = inputs.get("merge-multiple").is_some_and(|v| v == "true");
        for info in store.list(run_id).map_err(|e| e.to_string())? {
            if pattern.as_ref().is_some_and(|p| !p.is_match(&info.name)) {
                continue;
            }
            let dest = if merge {
                target.clone()
            } else {
                format!("{target}/{}", info.name)
            };
            wanted.push((info.name, dest));
        }
    }
    for (name, dest) in wanted {
        let (files, _) = store.files(run_id, &name).map_err(|e| e.to_string())?;
        sandbox
            .create_dirs(&[&dest])
            .await
            .map_err(|e| e.to_string())?;
        sandbox
            .client()
            .put_tar(&files, &dest)
            .await
            .map_err(|e| e.to_string())?;
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

/// `actions/cache` restore; returns the save to do after the job unless the key hit exactly.
pub async fn restore_cache(
    sandbox: &Sandbox,
    store: &CacheStore,
    scope: &CacheScope,
    inputs: &Inputs,
    workspace: &str,
    home: &str,
) -> Result<(ActionResult, Option<PendingCacheSave>), String> {
    let key = inputs
        .get("key")
        .filter(|k| !k.is_empty())
        .ok_or("input 'key' is required")?
        .clone();
    let paths = lines(inputs.get("path"));
    if paths.is_empty() {
        return Err("input 'path' is required".into());
    }
    let restore_keys = lines(inputs.get("restore-keys"));
    let version = cache_version(&paths);
    let scopes: Vec<&str> = scope.scopes.iter().map(String::as_str).collect();
    let found = store
        .lookup(&scope.repository, &scopes, &key, &restore_keys, &version)
        .map_err(|e| e.to_string())?;
    let guest_paths: Vec<String> = paths.iter().map(|p| absolute(p, workspace, home)).collect();
    let mut result = ActionResult::default();
    let exact = match &found {
        Some(hit) => {
            for (index, guest) in guest_paths.iter().enumerate() {
                let slot = path_slot(&hit.data, index);
                if slot.exists() {
                    sandbox
                        .create_dirs(&[guest])
                        .await
                        .map_err(|e| e.to_string())?;
                    sandbox
                        .client()
                        .put_tar(&slot, guest)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            result
                .log
                .push(format!("Cache restored from key: {}", hit.info.key));
            result
                .outputs
                .insert("cache-matched-key".into(), hit.info.key.clone());
            hit.exact
        }
        None => {
            result.log.push(format!(
                "Cache not found for input keys: {}",
                std::iter::once(key.clone())
                    .chain(restore_keys)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            false
        }
    };
    result.outputs.insert("cache-hit".into(), exact.to_string());
    let pending = (!exact).then_some(PendingCacheSave {
        key,
        paths,
        guest_paths,
    });
    Ok((result, pending))
}

/// Saves a cache after a successful job (the post step of actions/cache).
pub async fn save_cache(
    sandbox: &Sandbox,
    store: &CacheStore,
    scope: &CacheScope,
    pending: &PendingCacheSave,
) -> Result<String, String> {
    let Some(own_scope) = scope.scopes.first() else {
        return Err("no scope to save the cache in".into());
    };
    let version = cache_version(&pending.paths);
    let Some(writer) = store
        .begin_save(&scope.repository, own_scope, &pending.key, &version)
        .map_err(|e| e.to_string())?
    else {
        return Ok(format!("Cache already exists for key: {}", pending.key));
    };
    for (index, guest) in pending.guest_paths.iter().enumerate() {
        let (end, _) = guest_lines(sandbox, &format!("test -d {}", quote(guest))).await?;
        if end.succeeded() {
            let slot = path_slot(&writer.data(), index);
            std::fs::create_dir_all(&slot).map_err(|e| e.to_string())?;
            sandbox
                .client()
                .get_tar(guest, &slot, crate::guest_input::cache_options())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    match writer.commit().map_err(|e| e.to_string())? {
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
