#![no_main]
//! Any byte stream given to the tar unpacker as a hostile guest would: it may fail, but it
//! never panics, never writes outside the target directory, and keeps to its quotas.

use std::path::PathBuf;
use std::sync::OnceLock;

use firerunner_agent_proto::tar::{unpack, Limits, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("fuzz-tar-{}", std::process::id()));
        std::fs::create_dir_all(base.join("outside")).unwrap();
        base
    })
}

fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let dest = base.join("dest");
    let limits = Limits {
        max_bytes: 64 * 1024,
        max_entries: 256,
    };
    let mut input = data;
    let _ = unpack(&mut input, &dest, &UnpackOptions::hostile(limits));
    assert!(
        std::fs::read_dir(base.join("outside")).unwrap().next().is_none(),
        "the unpacker wrote outside its directory"
    );
    assert!(disk_usage(&dest) <= limits.max_bytes, "byte quota exceeded");
    std::fs::remove_dir_all(&dest).unwrap();
});
