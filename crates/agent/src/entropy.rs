//! Seeding the kernel's RNG from the host: a guest restored from a snapshot
//! starts with the snapshot's RNG state, shared by every VM restored from it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use firerunner_agent_proto::message::MAX_ENTROPY_SEED;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes `seed` into the kernel's input pool, credits it, and reseeds the
/// kernel's random generator so the next random bytes depend on it.
pub fn add(seed: &[u8]) -> io::Result<()> {
    if seed.is_empty() || seed.len() > MAX_ENTROPY_SEED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a seed is 1 to {MAX_ENTROPY_SEED} bytes"),
        ));
    }
    let random = OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    info.resize(info.len().next_multiple_of(4), 0);
    let words: Vec<u32> = info
        .chunks_exact(4)
        .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    // SAFETY: `words` is a rand_pool_info followed by buf_size bytes, alive for the call.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, words.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
