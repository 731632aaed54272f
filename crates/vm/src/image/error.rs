//! Why building or loading an image failed.

use std::path::{Path, PathBuf};

use super::rootfs;

/// Errors building or loading images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An external tool failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The tool and what it was asked.
        command: String,
        /// Its exit status and the end of its error output.
        detail: String,
    },
    /// The kernel meta package could not be resolved.
    #[error("cannot resolve kernel package {package}: {reason} (run scripts/setup-vm.sh, which runs apt-get update)")]
    Resolve {
        /// The meta package.
        package: String,
        /// Why.
        reason: String,
    },
    /// A module the recipe names is not in the kernel package.
    #[error("kernel {kernel} has no module {module}")]
    MissingModule {
        /// The module.
        module: String,
        /// The kernel package.
        kernel: String,
    },
    /// A binary that must be static is dynamically linked.
    #[error("{0} is not statically linked (for busybox, install Debian's busybox-static)")]
    NotStatic(PathBuf),
    /// The root filesystem could not be built.
    #[error("building the root filesystem: {0}")]
    Rootfs(#[from] rootfs::RootfsError),
    /// An image manifest cannot be read.
    #[error("{path}: bad image manifest: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ImageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
