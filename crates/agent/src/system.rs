//! PID 1 duties and transport discovery.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

/// Mounts the pseudo filesystems a guest needs and sets the hostname.
pub fn init_mounts() {
    let mounts = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("devpts", "/dev/pts", "devpts"),
        ("tmpfs", "/run", "tmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    for (source, target, fstype) in mounts {
        let _ = std::fs::create_dir_all(target);
        let (s, t, f) = (cstr(source), cstr(target), cstr(fstype));
        // SAFETY: all pointers are valid NUL-terminated strings; data is null.
        unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    }
    let name = b"firerunner";
    // SAFETY: the pointer and length describe a valid buffer.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

fn cstr(text: &str) -> CString {
    CString::new(text).expect("no NUL in constant")
}

/// Reads `firerunner.transport=` from the kernel command line.
pub fn cmdline_transport() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("firerunner.transport="))
        .map(str::to_owned)
}

/// Finds `/dev/vportNpM` of the virtio-serial port with the given name.
pub fn find_virtio_port(name: &str) -> std::io::Result<String> {
    for entry in std::fs::read_dir("/sys/class/virtio-ports")? {
        let entry = entry?;
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Ok(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no virtio port named {name}"),
    ))
}

/// Listens on a vsock port and accepts one host connection.
pub fn vsock_accept(port: u32) -> std::io::Result<File> {
    // SAFETY: plain socket calls on a fresh descriptor with a zeroed, filled-in address.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), len) < 0
            || libc::listen(fd, 1) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let conn = libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        );
        if conn < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(conn))
    }
}

/// Syncs filesystems and powers the machine off.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(0)
}

/// Reaps orphaned processes re-parented to PID 1, leaving the agent's own exec children (listed
/// in `own`) for their waiting threads.
pub fn spawn_reaper(own: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i32>>>) {
    std::thread::spawn(move || loop {
        // SAFETY: info is a zeroed siginfo_t the kernel fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer; WNOWAIT leaves the zombie in place while we look at it.
        let found =
            unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if found != 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        // SAFETY: the kernel filled in a child-exit siginfo.
        let pid = unsafe { info.si_pid() };
        if own.lock().expect("own children").contains(&pid) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        } else {
            // SAFETY: reaps exactly that zombie; status pointer may be null.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    });
}
