//! Debian's cloud kernel, fetched from the package registry and unpacked once.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::ImageError;

/// An unpacked kernel package: the boot image and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The concrete package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Its version, e.g. `6.1.192-2`.
    pub version: String,
    /// The unpacked package's root.
    pub root: PathBuf,
}

impl Kernel {
    /// The bzImage under `/boot`.
    pub fn bzimage(&self) -> Result<PathBuf, ImageError> {
        first_entry(&self.root.join("boot"), "vmlinuz-")
    }

    /// The directory `/lib/modules/<release>`.
    pub fn modules_dir(&self) -> Result<PathBuf, ImageError> {
        let base = self.root.join("lib/modules");
        first_entry(&base, "")
    }

    /// Finds the `.ko` file of module `name` (dashes and underscores are the
    /// same module name, as modprobe treats them).
    pub fn module(&self, name: &str) -> Result<PathBuf, ImageError> {
        let wanted = name.replace('-', "_");
        let dir = self.modules_dir()?;
        find_module(&dir, &wanted)?.ok_or_else(|| ImageError::MissingModule {
            module: name.to_string(),
            kernel: self.package.clone(),
        })
    }
}

fn find_module(dir: &Path, wanted: &str) -> Result<Option<PathBuf>, ImageError> {
    let entries = std::fs::read_dir(dir).map_err(|err| ImageError::io(dir, err))?;
    for entry in entries {
        let entry = entry.map_err(|err| ImageError::io(dir, err))?;
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, wanted)? {
                return Ok(Some(found));
            }
        } else if let Some(stem) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".ko"))
        {
            if stem.replace('-', "_") == wanted {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

fn first_entry(dir: &Path, prefix: &str) -> Result<PathBuf, ImageError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| ImageError::io(dir, err))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry
                .file_name()
                .to_str()?
                .starts_with(prefix)
                .then(|| entry.path())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| ImageError::io(dir, std::io::Error::other(format!("no {prefix}* entry"))))
}

/// Resolves a meta package such as `linux-image-cloud-amd64` to the concrete
/// kernel package and version it depends on, from the local apt lists.
pub fn resolve(meta_package: &str) -> Result<(String, String), ImageError> {
    let output = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", meta_package]),
        "apt-cache show",
    )?;
    let depends = output
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))
        .ok_or_else(|| ImageError::Resolve {
            package: meta_package.to_string(),
            reason: "it has no Depends line".into(),
        })?;
    let first = depends.split(',').next().unwrap_or_default().trim();
    let (package, version) = match first.split_once('(') {
        Some((package, rest)) => (
            package.trim(),
            rest.trim_end_matches(')')
                .trim()
                .trim_start_matches('=')
                .trim(),
        ),
        None => (first, ""),
    };
    if !package.starts_with("linux-image-") || version.is_empty() {
        return Err(ImageError::Resolve {
            package: meta_package.to_string(),
            reason: format!("unexpected dependency {first:?}"),
        });
    }
    Ok((package.to_string(), version.to_string()))
}

/// Downloads and unpacks `package` at `version` into `<cache>/kernels/`, once.
pub fn fetch(cache: &Path, package: &str, version: &str) -> Result<Kernel, ImageError> {
    let root = cache.join("kernels").join(format!("{package}_{version}"));
    let kernel = Kernel {
        package: package.to_string(),
        version: version.to_string(),
        root: root.clone(),
    };
    if root.join(".complete").exists() {
        return Ok(kernel);
    }
    let work = cache
        .join("kernels")
        .join(format!(".{package}_{version}.{}", unique_suffix()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|err| ImageError::io(&work, err))?;
    run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(&work),
        "apt-get download",
    )?;
    let deb = first_entry(&work, package)?;
    let unpacked = work.join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg-deb -x",
    )?;
    std::fs::write(unpacked.join(".complete"), version)
        .map_err(|err| ImageError::io(&unpacked, err))?;
    // Another process may have finished the same kernel meanwhile (and may
    // be reading it): keep its copy rather than replacing it.
    if !root.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&root);
        if let Err(err) = std::fs::rename(&unpacked, &root) {
            if !root.join(".complete").exists() {
                let _ = std::fs::remove_dir_all(&work);
                return Err(ImageError::io(&root, err));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(kernel)
}

/// Runs a command and returns its standard output, or an error with its stderr.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<String, ImageError> {
    let output = command.output().map_err(|err| ImageError::Command {
        command: what.to_string(),
        detail: err.to_string(),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(ImageError::Command {
            command: what.to_string(),
            detail: format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A suffix no other build in this or another process uses at the same time.
pub(super) fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}
