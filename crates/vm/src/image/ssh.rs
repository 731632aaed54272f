//! The SSH variant of the test image: Dropbear beside the agent, so that a
//! benchmark can compare the agent with running commands over SSH (the way
//! earlier CI systems ran them) in one and the same guest.
//!
//! Dropbear comes from the host's Debian package `dropbear-bin`; it is
//! dynamically linked, so the shared libraries `ldd` names are copied with it
//! (their bytes are part of the image's cache key). The build makes a host
//! key with `dropbearkey` and a client key pair with `ssh-keygen`; the
//! private client key stays beside the image ([`client_key`]) and its public
//! half is root's only authorised key. Password logins are off.
//!
//! The variant's `/sbin/firerunner-agent` is [`AGENT_WRAPPER`], which starts
//! Dropbear on port 22 and then becomes the real agent (still PID 1).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::cpio::CpioWriter;
use super::error::ImageError;
use super::guest::GuestImage;

/// Where the private client key lies, relative to the image directory.
pub const CLIENT_KEY: &str = "ssh/id_ed25519";

/// Where the real agent lies in the SSH variant.
const REAL_AGENT: &str = "/sbin/firerunner-agent.real";

/// The SSH variant's `/sbin/firerunner-agent`: starts Dropbear (which forks
/// into the background), then execs the real agent.
pub const AGENT_WRAPPER: &str = "#!/bin/sh
# firerunner test image with SSH: start Dropbear on port 22, then become the agent.
/usr/sbin/dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -s -P /run/dropbear.pid \\
    || echo \"firerunner-init: cannot start dropbear\"
exec /sbin/firerunner-agent.real \"$@\"
";

/// The programs the SSH variant is made with (Debian's paths by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshRecipe {
    /// Dropbear's server (`dropbear-bin`).
    pub dropbear: PathBuf,
    /// `dropbearkey` (`dropbear-bin`), for the host key.
    pub dropbearkey: PathBuf,
    /// `ssh-keygen` (`openssh-client`), for the client key pair.
    pub ssh_keygen: PathBuf,
}

impl Default for SshRecipe {
    fn default() -> Self {
        Self {
            dropbear: PathBuf::from("/usr/sbin/dropbear"),
            dropbearkey: PathBuf::from("/usr/bin/dropbearkey"),
            ssh_keygen: PathBuf::from("/usr/bin/ssh-keygen"),
        }
    }
}

/// The files Dropbear brings: its binary and each shared library, by the
/// path the guest finds them at.
#[derive(Debug, Clone)]
pub(crate) struct SshBinaries {
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

impl SshBinaries {
    /// Reads Dropbear and the libraries `ldd` lists for it.
    pub(crate) fn read(recipe: &SshRecipe) -> Result<Self, ImageError> {
        let dropbear = std::fs::read(&recipe.dropbear).map_err(|err| ImageError::Command {
            command: format!("reading {}", recipe.dropbear.display()),
            detail: format!("{err} (install Debian's dropbear-bin: scripts/setup-vm.sh)"),
        })?;
        let mut files = vec![("/usr/sbin/dropbear".to_string(), dropbear)];
        let output = Command::new("ldd")
            .arg(&recipe.dropbear)
            .output()
            .map_err(|err| ImageError::io(Path::new("ldd"), err))?;
        if !output.status.success() {
            return Err(ImageError::Command {
                command: format!("ldd {}", recipe.dropbear.display()),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        for library in libraries(&String::from_utf8_lossy(&output.stdout)) {
            let bytes =
                std::fs::read(&library).map_err(|err| ImageError::io(Path::new(&library), err))?;
            files.push((library, bytes));
        }
        Ok(Self { files })
    }
}

/// The absolute library paths in `ldd` output (the vDSO has none).
fn libraries(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, target)) => target.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// Makes the host key and the client key pair in `<work>/ssh/`; returns the
/// host key and the public client key. The host key file is removed again:
/// only the guest needs it.
pub(crate) fn make_keys(recipe: &SshRecipe, work: &Path) -> Result<(Vec<u8>, Vec<u8>), ImageError> {
    let dir = work.join("ssh");
    std::fs::create_dir_all(&dir).map_err(|err| ImageError::io(&dir, err))?;
    let host = dir.join("host_key");
    run(Command::new(&recipe.dropbearkey)
        .args(["-t", "ed25519", "-f"])
        .arg(&host))?;
    let host_key = std::fs::read(&host).map_err(|err| ImageError::io(&host, err))?;
    std::fs::remove_file(&host).map_err(|err| ImageError::io(&host, err))?;
    let client = work.join(CLIENT_KEY);
    run(Command::new(&recipe.ssh_keygen)
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "firerunner-test-image",
            "-f",
        ])
        .arg(&client))?;
    let public = client.with_extension("pub");
    let authorized = std::fs::read(&public).map_err(|err| ImageError::io(&public, err))?;
    Ok((host_key, authorized))
}

fn run(command: &mut Command) -> Result<(), ImageError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|err| ImageError::Command {
        command: program.clone(),
        detail: format!(
            "{err} (install Debian's dropbear-bin and openssh-client: scripts/setup-vm.sh)"
        ),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ImageError::Command {
            command: program,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Adds Dropbear, its libraries, keys and account files to the initramfs
/// and puts the agent behind [`AGENT_WRAPPER`].
pub(crate) fn add_to_initramfs<W: std::io::Write>(
    cpio: &mut CpioWriter<W>,
    binaries: &SshBinaries,
    host_key: &[u8],
    authorized_key: &[u8],
    agent: &[u8],
    existing_dirs: &[&str],
) -> std::io::Result<()> {
    let mut dirs: Vec<String> = vec!["/etc/dropbear".into(), "/root".into(), "/root/.ssh".into()];
    for (path, _) in &binaries.files {
        for dir in Path::new(path).ancestors().skip(1) {
            let dir = dir.display().to_string();
            if dir != "/" && !dirs.contains(&dir) && !existing_dirs.contains(&dir.as_str()) {
                dirs.push(dir);
            }
        }
    }
    // Parents sort before their children.
    dirs.sort();
    for dir in &dirs {
        let mode = if dir.starts_with("/root") {
            0o700
        } else {
            0o755
        };
        cpio.directory(dir, mode)?;
    }
    for (path, bytes) in &binaries.files {
        cpio.file(path, 0o755, bytes)?;
    }
    cpio.file("/etc/dropbear/dropbear_ed25519_host_key", 0o600, host_key)?;
    cpio.file("/root/.ssh/authorized_keys", 0o600, authorized_key)?;
    cpio.file("/etc/passwd", 0o644, b"root:*:0:0:root:/root:/bin/sh\n")?;
    cpio.file("/etc/group", 0o644, b"root:x:0:\n")?;
    cpio.file("/etc/shells", 0o644, b"/bin/sh\n")?;
    cpio.file(
        "/etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nshadow: files\n",
    )?;
    cpio.file(REAL_AGENT, 0o755, agent)?;
    cpio.file("/sbin/firerunner-agent", 0o755, AGENT_WRAPPER.as_bytes())
}

/// The private key that logs in as root to guests of an SSH image, if
/// `image` is one.
pub fn client_key(image: &GuestImage) -> Option<PathBuf> {
    let key = image.kernel.parent()?.join(CLIENT_KEY);
    key.is_file().then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f04)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f04e8848000)\n";
        assert_eq!(
            libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
