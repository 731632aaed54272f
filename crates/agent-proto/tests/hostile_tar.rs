//! Tar streams written by a hostile guest: nothing may land outside the target directory,
//! no link is followed, names are kept byte for byte, and quotas hold while streaming.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use firerunner_agent_proto::tar::{self, Limits, TarError, UnpackOptions};
use firerunner_agent_proto::testing::{HostileTar, ScratchDir};

fn unpack(stream: &[u8], dir: &Path) -> Result<tar::Unpacked, TarError> {
    unpack_limited(stream, dir, Limits::default())
}

fn unpack_limited(stream: &[u8], dir: &Path, limits: Limits) -> Result<tar::Unpacked, TarError> {
    let mut input = stream;
    tar::unpack(&mut input, dir, &UnpackOptions::hostile(limits))
}

/// A target directory `dest` and a sibling `outside` that must stay empty.
fn rooms(tag: &str) -> (ScratchDir, std::path::PathBuf, std::path::PathBuf) {
    let base = ScratchDir::new(tag);
    let dest = base.path().join("dest");
    let outside = base.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    (base, dest, outside)
}

fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().next().is_none()
}

fn name(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

#[test]
fn a_link_then_a_path_under_it_does_not_write_outside() {
    let (_base, dest, outside) = rooms("tar-link-then-path");
    let stream = HostileTar::new()
        .symlink(b"d", b"sub/x")
        .dir(b"sub", 0o755)
        .symlink(b"sub/x", b"..")
        .file(b"d/../../outside/pwned", 0o644, b"x")
        .file(b"d/pwned", 0o644, b"x")
        .finish();
    assert!(unpack(&stream, &dest).is_err());
    assert!(is_empty(&outside), "something was written outside");
    let stream = HostileTar::new()
        .symlink(b"d", outside.as_os_str().as_bytes())
        .file(b"d/pwned", 0o644, b"x")
        .finish();
    assert!(unpack(&stream, &dest).is_err());
    assert!(is_empty(&outside), "something was written outside");
}

#[test]
fn the_reported_non_utf8_collision_cannot_escape() {
    let (_base, dest, outside) = rooms("tar-fffd");
    let stream = HostileTar::new()
        .symlink(b"d\xfe", outside.as_os_str().as_bytes())
        .dir(b"d\xff/", 0o755)
        .file(b"d\xff/pwned", 0o644, b"owned")
        .finish();
    let _ = unpack(&stream, &dest);
    assert!(is_empty(&outside), "the unpacker followed the symlink");
}

#[test]
fn non_utf8_names_are_kept_byte_for_byte() {
    let (_base, dest, _outside) = rooms("tar-bytes");
    let stream = HostileTar::new()
        .file(b"d\xfe", 0o644, b"one")
        .file(b"d\xff", 0o644, b"two")
        .finish();
    unpack(&stream, &dest).unwrap();
    assert_eq!(fs::read(dest.join(name(b"d\xfe"))).unwrap(), b"one");
    assert_eq!(fs::read(dest.join(name(b"d\xff"))).unwrap(), b"two");
}

#[test]
fn non_utf8_names_round_trip_through_pack() {
    let (_base, source, dest) = rooms("tar-pack-bytes");
    fs::write(source.join(name(b"d\xfe")), b"one").unwrap();
    fs::write(source.join(name(b"d\xff")), b"two").unwrap();
    let mut stream = Vec::new();
    tar::pack(&source, &mut stream).unwrap();
    unpack(&stream, &dest).unwrap();
    assert_eq!(fs::read(dest.join(name(b"d\xfe"))).unwrap(), b"one");
    assert_eq!(fs::read(dest.join(name(b"d\xff"))).unwrap(), b"two");
}

#[test]
fn duplicate_names_are_refused() {
    for second in [&b"a"[..], b"./a", b"a/", b"a//"] {
        let (_base, dest, _outside) = rooms("tar-dup");
        let stream = HostileTar::new()
            .file(b"a", 0o644, b"first")
            .file(second, 0o644, b"second")
            .finish();
        let err = unpack(&stream, &dest).unwrap_err();
        assert!(
            matches!(err, TarError::Duplicate { .. }),
            "{second:?}: {err}"
        );
    }
}

#[test]
fn link_targets_must_stay_inside() {
    for (link, target) in [
        (&b"a"[..], &b"/etc/passwd"[..]),
        (b"a", b".."),
        (b"sub/a", b"../../x"),
        (b"a", b"sub/../../x"),
        (b"a", b""),
        (b"a", b"l/../x"),
    ] {
        let (_base, dest, _outside) = rooms("tar-link-target");
        let stream = HostileTar::new().symlink(link, target).finish();
        let err = unpack(&stream, &dest).unwrap_err();
        assert!(
            matches!(err, TarError::LinkEscapes { .. }),
            "{target:?}: {err}"
        );
    }
    let (_base, dest, _outside) = rooms("tar-link-inside");
    let stream = HostileTar::new()
        .dir(b"sub", 0o755)
        .symlink(b"sub/a", b"../b")
        .symlink(b"c", b"sub/./a")
        .finish();
    unpack(&stream, &dest).unwrap();
    assert_eq!(
        fs::read_link(dest.join("sub/a")).unwrap(),
        Path::new("../b")
    );
}

#[test]
fn names_that_climb_out_are_refused() {
    for entry in [&b"../x"[..], b"/x", b"a/../../x", b"sub/.."] {
        let (_base, dest, outside) = rooms("tar-climb");
        let stream = HostileTar::new().file(entry, 0o644, b"x").finish();
        assert!(unpack(&stream, &dest).is_err(), "{entry:?}");
        assert!(is_empty(&outside));
    }
}

#[test]
fn existing_links_in_the_target_are_not_followed() {
    let (_base, dest, outside) = rooms("tar-existing-link");
    symlink(outside.join("victim"), dest.join("a")).unwrap();
    symlink(&outside, dest.join("dir")).unwrap();
    let stream = HostileTar::new().file(b"a", 0o644, b"x").finish();
    assert!(unpack(&stream, &dest).is_err());
    let stream = HostileTar::new().file(b"dir/b", 0o644, b"x").finish();
    assert!(unpack(&stream, &dest).is_err());
    assert!(is_empty(&outside));
}

#[test]
fn hard_links_are_never_made() {
    let (_base, dest, _outside) = rooms("tar-hardlink");
    let stream = HostileTar::new().hardlink(b"h", b"/etc/passwd").finish();
    let _ = unpack(&stream, &dest);
    assert!(fs::symlink_metadata(dest.join("h")).is_err());
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    let (_base, dest, _outside) = rooms("tar-setuid");
    let stream = HostileTar::new()
        .file(b"suid", 0o6755, b"#!/bin/sh\n")
        .dir(b"sgid", 0o2775)
        .finish();
    unpack(&stream, &dest).unwrap();
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid") & 0o6000, 0);
}

#[test]
fn the_byte_quota_holds_while_streaming() {
    let (_base, dest, _outside) = rooms("tar-bytes-quota");
    let data = vec![1u8; 3 << 20];
    let stream = HostileTar::new().file(b"big", 0o644, &data).finish();
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = unpack_limited(&stream, &dest, limits).unwrap_err();
    assert!(
        matches!(err, TarError::TooManyBytes { limit } if limit == 1 << 20),
        "{err}"
    );
    let written = fs::metadata(dest.join("big")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 1 << 20, "{written} bytes written past the quota");
}

#[test]
fn the_entry_quota_holds() {
    let (_base, dest, _outside) = rooms("tar-entry-quota");
    let mut tar = HostileTar::new();
    for i in 0..20 {
        tar = tar.file(format!("f{i}").as_bytes(), 0o644, b"");
    }
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let err = unpack_limited(&tar.finish(), &dest, limits).unwrap_err();
    assert!(
        matches!(err, TarError::TooManyEntries { limit: 10 }),
        "{err}"
    );
}

#[test]
fn absurd_declared_sizes_are_refused_without_allocating() {
    let (_base, dest, _outside) = rooms("tar-absurd");
    let stream = HostileTar::new().long_name(b"x", 0o77777777777).finish();
    let err = unpack(&stream, &dest).unwrap_err();
    assert!(matches!(err, TarError::Malformed { .. }), "{err}");
    let stream = HostileTar::new()
        .entry(b"big", 0o644, 0o77777777777, b'0', b"")
        .body(b"short")
        .finish();
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = unpack_limited(&stream, &dest, limits).unwrap_err();
    assert!(matches!(err, TarError::TooManyBytes { .. }), "{err}");
}

#[test]
fn garbage_headers_and_truncated_streams_are_errors() {
    let (_base, dest, _outside) = rooms("tar-garbage");
    let stream = HostileTar::new().raw(&[0x41; 512]).finish();
    assert!(matches!(
        unpack(&stream, &dest),
        Err(TarError::Malformed { .. })
    ));
    let stream = HostileTar::new().file(b"a", 0o644, b"data").unfinished();
    assert!(unpack(&stream, &dest).is_err());
}

#[test]
fn read_only_copies_can_leave_escaping_links_out() {
    let (_base, dest, outside) = rooms("tar-skip-links");
    let stream = HostileTar::new()
        .symlink(b"python", b"/usr/bin/python3")
        .symlink(b"up", outside.as_os_str().as_bytes())
        .file(b"up/pwned", 0o644, b"x")
        .file(b"a.txt", 0o644, b"data")
        .finish();
    let options = UnpackOptions {
        skip_escaping_links: true,
        ..UnpackOptions::hostile(Limits::default())
    };
    let _ = tar::unpack(&mut stream.as_slice(), &dest, &options);
    assert!(fs::symlink_metadata(dest.join("python")).is_err());
    assert!(is_empty(&outside));
    let stream = HostileTar::new()
        .symlink(b"python", b"/usr/bin/python3")
        .file(b"a.txt", 0o644, b"data")
        .finish();
    let dest2 = dest.with_file_name("dest2");
    tar::unpack(&mut stream.as_slice(), &dest2, &options).unwrap();
    assert_eq!(fs::read(dest2.join("a.txt")).unwrap(), b"data");
}
