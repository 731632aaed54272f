//! Unpacking a tar stream from an untrusted peer beneath one directory.
//!
//! Every path is opened relative to the target directory with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so no link (one from the
//! stream or one already on disk) is ever followed; files are created `O_EXCL | O_NOFOLLOW`;
//! names are kept as raw bytes; a name seen twice, a link whose target could leave the
//! directory, hard links, device nodes and unknown entry kinds are refused; setuid, setgid
//! and sticky bits are dropped; the byte and entry quotas hold while data streams to disk.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use thiserror::Error;

use super::names::{components, display, link_stays_inside};
use super::{read_header, Header, Kind};

/// Quotas for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most file content bytes (declared sizes count before any byte is written).
    pub max_bytes: u64,
    /// Most entries (files, directories, links, long-name records).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 10 GiB (GitHub's cache limit per repository) and one million entries.
    fn default() -> Self {
        Self {
            max_bytes: 10 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What to do when a name already exists on disk (never followed either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail: the host unpacks into fresh directories.
    Refuse,
    /// Remove a file or link and create the new one (a guest restoring a cache over a tree).
    Replace,
}

/// How to unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Quotas.
    pub limits: Limits,
    /// Existing names.
    pub existing: Existing,
    /// Leave out symlinks whose target may resolve outside (instead of refusing the stream):
    /// for read-only copies such as the `hashFiles` snapshot, where a virtualenv's absolute
    /// `python` link must not fail the job.
    pub skip_escaping_links: bool,
}

impl UnpackOptions {
    /// Into a fresh directory: anything already there is an error.
    pub fn hostile(limits: Limits) -> Self {
        Self {
            limits,
            existing: Existing::Refuse,
            skip_escaping_links: false,
        }
    }

    /// Over an existing tree, replacing files and links (directories are merged).
    pub fn replacing(limits: Limits) -> Self {
        Self {
            limits,
            existing: Existing::Replace,
            skip_escaping_links: false,
        }
    }
}

/// What a stream held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Entries.
    pub entries: u64,
    /// File content bytes.
    pub bytes: u64,
}

/// Why a stream was refused; nothing is ever written outside the target directory.
#[derive(Debug, Error)]
pub enum TarError {
    /// Reading the stream failed (or it ended early).
    #[error("tar stream: {0}")]
    Read(#[from] io::Error),
    /// The target directory could not be created or opened.
    #[error("tar target {dir}: {source}")]
    Target {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing an entry failed (for example a link already in the way).
    #[error("tar entry {name}: {source}")]
    Entry {
        /// The entry name, escaped.
        name: String,
        /// The cause.
        source: io::Error,
    },
    /// A header that is not tar, or a field out of range.
    #[error("malformed tar stream: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// An absolute name or one that climbs with `..`.
    #[error("tar entry {name} escapes the target directory")]
    Escapes {
        /// The entry name, escaped.
        name: String,
    },
    /// A symbolic link whose target could resolve outside the directory.
    #[error("tar entry {name} links to {target}, which may resolve outside the target directory")]
    LinkEscapes {
        /// The entry name, escaped.
        name: String,
        /// The link target, escaped.
        target: String,
    },
    /// The same name twice (after dropping `.` and empty components).
    #[error("tar entry {name} appears twice")]
    Duplicate {
        /// The entry name, escaped.
        name: String,
    },
    /// Hard links, devices, FIFOs, extended headers and unknown kinds.
    #[error("tar entry {name} has unsupported kind {kind:?}")]
    Unsupported {
        /// The entry name, escaped.
        name: String,
        /// The type flag byte.
        kind: char,
    },
    /// Over [`Limits::max_entries`].
    #[error("tar stream has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// Over [`Limits::max_bytes`].
    #[error("tar stream holds more than {limit} bytes of files")]
    TooManyBytes {
        /// The limit.
        limit: u64,
    },
}

impl From<TarError> for io::Error {
    fn from(err: TarError) -> Self {
        match err {
            TarError::Read(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Unpacks a tar stream beneath `dir` (created when missing) under `options`.
pub fn unpack<R: Read>(
    input: &mut R,
    dir: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, TarError> {
    let target = |source| TarError::Target {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(target)?;
    let root = OwnedFd::from(File::open(dir).map_err(target)?);
    let mut state = State {
        root,
        options: *options,
        seen: HashSet::new(),
        done: Unpacked::default(),
    };
    while let Some(header) = read_header(input, &mut |size| state.count(size))? {
        state.apply(input, header)?;
    }
    Ok(state.done)
}

struct State {
    root: OwnedFd,
    options: UnpackOptions,
    seen: HashSet<Vec<u8>>,
    done: Unpacked,
}

impl State {
    /// Counts one entry (long-name records too) carrying `size` bytes against the quotas.
    fn count(&mut self, size: u64) -> Result<(), TarError> {
        let limits = self.options.limits;
        self.done.entries += 1;
        if self.done.entries > limits.max_entries {
            return Err(TarError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        self.done.bytes = self.done.bytes.saturating_add(size);
        if self.done.bytes > limits.max_bytes {
            return Err(TarError::TooManyBytes {
                limit: limits.max_bytes,
            });
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, input: &mut R, header: Header) -> Result<(), TarError> {
        let name = display(&header.name);
        let parts = components(&header.name).ok_or(TarError::Escapes { name: name.clone() })?;
        if !self.seen.insert(parts.join(&b'/')) {
            return Err(TarError::Duplicate { name });
        }
        let entry = |source| TarError::Entry {
            name: name.clone(),
            source,
        };
        let Some((leaf, parents)) = parts.split_last() else {
            return match header.kind {
                Kind::Directory => Ok(()),
                _ => Err(TarError::Escapes { name }),
            };
        };
        match header.kind {
            Kind::Directory => {
                let dir = self.make_dirs(&parts).map_err(entry)?;
                rustix::fs::fchmod(&dir, dir_mode(header.mode)).map_err(|e| entry(e.into()))
            }
            Kind::Symlink => {
                if !link_stays_inside(parents.len(), &header.link) {
                    if self.options.skip_escaping_links {
                        return Ok(());
                    }
                    let target = display(&header.link);
                    return Err(TarError::LinkEscapes { name, target });
                }
                let parent = self.make_dirs(parents).map_err(entry)?;
                self.symlink(&parent, leaf, &header.link).map_err(entry)
            }
            Kind::File => {
                let parent = self.make_dirs(parents).map_err(entry)?;
                let file = self.create(&parent, leaf, header.mode).map_err(entry)?;
                copy_exact(input, file, header.size)
            }
            Kind::Other(kind) => Err(TarError::Unsupported {
                name,
                kind: char::from(kind),
            }),
        }
    }

    /// Opens (creating as needed) the directory `parts` beneath the root, never through a link.
    fn make_dirs(&self, parts: &[&[u8]]) -> io::Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let joined = if parts.is_empty() {
            b".".to_vec()
        } else {
            parts.join(&b'/')
        };
        match rustix::fs::openat2(&self.root, joined.as_slice(), flags, Mode::empty(), RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {}
            Err(err) => return Err(err.into()),
        }
        let mut current = rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), RESOLVE)?;
        for part in parts {
            match rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(err) => return Err(err.into()),
            }
            current = rustix::fs::openat2(&current, *part, flags, Mode::empty(), RESOLVE)?;
        }
        Ok(current)
    }

    /// Creates a new file `O_EXCL | O_NOFOLLOW`, replacing a file or link when allowed.
    fn create(&self, parent: &OwnedFd, leaf: &[u8], mode: u32) -> io::Result<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat2(parent, leaf, flags, Mode::from_raw_mode(0o600), RESOLVE);
        let fd = match open() {
            Err(rustix::io::Errno::EXIST) if self.options.existing == Existing::Replace => {
                rustix::fs::unlinkat(parent, leaf, AtFlags::empty())?;
                open()?
            }
            other => other?,
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?;
        Ok(File::from(fd))
    }

    fn symlink(&self, parent: &OwnedFd, leaf: &[u8], target: &[u8]) -> io::Result<()> {
        match rustix::fs::symlinkat(target, parent.as_fd(), leaf) {
            Err(rustix::io::Errno::EXIST) if self.options.existing == Existing::Replace => {
                rustix::fs::unlinkat(parent, leaf, AtFlags::empty())?;
                Ok(rustix::fs::symlinkat(target, parent.as_fd(), leaf)?)
            }
            other => Ok(other?),
        }
    }
}

/// Directory bits without setuid/setgid/sticky, always traversable and writable by the owner.
fn dir_mode(mode: u32) -> Mode {
    Mode::from_raw_mode((mode & 0o777) | 0o700)
}

/// Streams exactly `size` bytes (then the block padding) into `file`.
fn copy_exact<R: Read>(input: &mut R, mut file: File, size: u64) -> Result<(), TarError> {
    let copied = io::copy(&mut input.by_ref().take(size), &mut file)?;
    if copied < size {
        return Err(TarError::Read(io::ErrorKind::UnexpectedEof.into()));
    }
    super::skip_padding(input, size)?;
    Ok(())
}
