//! Root file system images: customising a tree, writing it with `mke2fs -d`
//! and checking the result with `e2fsck`/`debugfs`, and (slow, opt-in) the
//! full Debian build with debootstrap.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use firerunner_vm::image::rootfs::{
    build_debian_rootfs, check_rootfs_image, clean_tree, customise_tree, stat_in_image,
    write_ext4_image, RootfsError, RootfsProgress, RootfsRecipe, RootfsStage, AGENT_GUEST_PATH,
};
use firerunner_vm::testing::agent_binary;

/// A tree shaped like a merged-/usr Debian: `/sbin -> usr/sbin`, docs with
/// copyright files, apt caches and an `/etc/resolv.conf` symlink that points
/// outside the tree (writing through it would change the host's file).
fn debian_like_tree(root: &Path) {
    for dir in [
        "usr/sbin",
        "usr/bin",
        "etc",
        "usr/share/doc/git",
        "usr/share/man/man1",
        "var/cache/apt/archives/partial",
        "var/lib/apt/lists/partial",
        "var/log/apt",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    symlink("usr/sbin", root.join("sbin")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    fs::write(root.join("usr/bin/bash"), b"#!fake bash\n").unwrap();
    fs::write(root.join("usr/share/doc/git/copyright"), b"GPL-2\n").unwrap();
    fs::write(root.join("usr/share/doc/git/changelog.gz"), vec![7u8; 9000]).unwrap();
    fs::write(root.join("usr/share/man/man1/git.1.gz"), b"man").unwrap();
    fs::write(root.join("var/cache/apt/archives/git_1_amd64.deb"), b"deb").unwrap();
    fs::write(root.join("var/cache/apt/pkgcache.bin"), b"cache").unwrap();
    fs::write(
        root.join("var/lib/apt/lists/deb.debian.org_Packages"),
        b"list",
    )
    .unwrap();
    fs::write(root.join("var/log/apt/history.log"), b"log").unwrap();
    symlink("/run/host-resolv.conf", root.join("etc/resolv.conf")).unwrap();
}

fn fake_agent(dir: &Path) -> PathBuf {
    let agent = dir.join("agent-binary");
    fs::write(&agent, b"\x7fELF pretend agent").unwrap();
    fs::set_permissions(&agent, fs::Permissions::from_mode(0o600)).unwrap();
    agent
}

#[test]
fn customised_tree_becomes_a_consistent_image_holding_the_agent() {
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    debian_like_tree(&tree);
    let agent = fake_agent(scratch.path());
    let recipe = RootfsRecipe {
        hostname: "guest-7".into(),
        extra_size_mib: 8,
        ..RootfsRecipe::default()
    };

    customise_tree(&tree, &recipe, &agent).unwrap();
    clean_tree(&tree).unwrap();

    let installed = tree.join("usr/sbin/firerunner-agent");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&agent).unwrap());
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::read_link(tree.join("usr/sbin/init")).unwrap(),
        Path::new("firerunner-agent")
    );
    let resolv = tree.join("etc/resolv.conf");
    assert!(!fs::symlink_metadata(&resolv).unwrap().is_symlink());
    assert!(fs::read_to_string(&resolv)
        .unwrap()
        .starts_with("# Placeholder"));
    assert_eq!(
        fs::read_to_string(tree.join("etc/hostname")).unwrap(),
        "guest-7\n"
    );
    assert!(fs::read_to_string(tree.join("etc/hosts"))
        .unwrap()
        .contains("127.0.1.1\tguest-7\n"));
    assert!(fs::read_to_string(tree.join("etc/fstab"))
        .unwrap()
        .contains("LABEL=firerunner-root\t/\text4"));
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
    ] {
        let meta = fs::metadata(tree.join(dir)).unwrap();
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{dir}");
    }
    assert!(tree.join("usr/share/doc/git/copyright").exists());
    assert!(!tree.join("usr/share/doc/git/changelog.gz").exists());
    assert!(!tree.join("usr/share/man/man1").exists());
    assert!(!tree.join("var/cache/apt/archives/git_1_amd64.deb").exists());
    assert!(!tree.join("var/cache/apt/pkgcache.bin").exists());
    assert!(tree.join("var/cache/apt/archives/partial").is_dir());
    assert!(!tree
        .join("var/lib/apt/lists/deb.debian.org_Packages")
        .exists());
    assert!(!tree.join("var/log/apt/history.log").exists());
    assert!(tree.join("var/log/apt").is_dir());

    let image = scratch.path().join("out/rootfs.ext4");
    let mut stages = Vec::new();
    let mut mke2fs_lines = 0;
    let written = write_ext4_image(
        &tree,
        &image,
        recipe.extra_size_mib,
        &mut |event| match event {
            RootfsProgress::Stage(stage) => stages.push(stage),
            RootfsProgress::Output { tool: "mke2fs", .. } => mke2fs_lines += 1,
            _ => {}
        },
    );
    if let Err(RootfsError::ToolMissing { tool }) = &written {
        eprintln!("skipped: {tool} is not installed (run scripts/setup-rootfs-tools.sh)");
        return;
    }
    written.unwrap();
    assert_eq!(stages, [RootfsStage::Measuring, RootfsStage::WritingImage]);
    assert!(mke2fs_lines > 0);
    assert_eq!(fs::metadata(&image).unwrap().len(), 64 * 1024 * 1024);
    let leftovers: Vec<_> = fs::read_dir(image.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("rootfs.ext4")]);

    let agent_info = check_rootfs_image(&image).unwrap();
    assert_eq!(agent_info.size, fs::metadata(&agent).unwrap().len());
    let init = stat_in_image(&image, "/sbin/init").unwrap().unwrap();
    assert_eq!(init.file_type, "symlink");
    let tmp = stat_in_image(&image, "/tmp").unwrap().unwrap();
    assert_eq!((tmp.file_type.as_str(), tmp.mode), ("directory", 0o1777));
    let hostname = stat_in_image(&image, "/etc/hostname").unwrap().unwrap();
    assert_eq!((hostname.size, hostname.uid), (8, 0));
    assert_eq!(stat_in_image(&image, "/usr/share/man/man1").unwrap(), None);
    assert_eq!(stat_in_image(&image, "/usr/bin/gcc").unwrap(), None);
}

#[test]
fn absolute_symlinks_in_the_tree_are_not_followed_onto_the_host() {
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    let outside = scratch.path().join("host-sbin");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, tree.join("sbin")).unwrap();
    let agent = fake_agent(scratch.path());

    let result = customise_tree(&tree, &RootfsRecipe::default(), &agent);

    assert!(
        matches!(result, Err(RootfsError::EscapesTree(_))),
        "{result:?}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn image_check_rejects_images_without_the_agent_and_non_images() {
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    debian_like_tree(&tree);
    let image = scratch.path().join("no-agent.ext4");
    let written = write_ext4_image(&tree, &image, 0, &mut |_| {});
    if let Err(RootfsError::ToolMissing { tool }) = &written {
        eprintln!("skipped: {tool} is not installed (run scripts/setup-rootfs-tools.sh)");
        return;
    }
    written.unwrap();
    match check_rootfs_image(&image) {
        Err(RootfsError::BadImage { problem, .. }) => {
            assert!(problem.contains(AGENT_GUEST_PATH), "{problem}")
        }
        other => panic!("expected BadImage, got {other:?}"),
    }

    let garbage = scratch.path().join("garbage.ext4");
    fs::write(&garbage, vec![0xA5u8; 1 << 20]).unwrap();
    match check_rootfs_image(&garbage) {
        Err(RootfsError::BadImage { problem, .. }) => {
            assert!(problem.starts_with("e2fsck -fn"), "{problem}")
        }
        other => panic!("expected BadImage, got {other:?}"),
    }
}

#[test]
fn build_refuses_a_missing_agent_before_running_anything() {
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    let result = build_debian_rootfs(
        &RootfsRecipe::default(),
        &scratch.path().join("no-such-agent"),
        &work,
        &scratch.path().join("rootfs.ext4"),
        &mut |_| {},
    );
    match result {
        Err(RootfsError::AgentMissing(path)) => assert!(path.ends_with("no-such-agent")),
        Err(RootfsError::ToolMissing { tool }) => {
            eprintln!("skipped: {tool} is not installed (run scripts/setup-rootfs-tools.sh)")
        }
        other => panic!("expected AgentMissing, got {other:?}"),
    }
    assert!(!work.exists());
}

/// Builds the real Debian image (minutes, ~200 MB of downloads, needs root).
/// `FIRERUNNER_ROOTFS_WORK_DIR` keeps the work folder, package cache and
/// image (`rootfs.ext4` in it) for inspection and faster reruns.
#[test]
fn debian_rootfs_builds_and_holds_the_toolchain_and_agent() {
    if std::env::var("FIRERUNNER_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set FIRERUNNER_SLOW_TESTS=1 to build the Debian rootfs");
        return;
    }
    let agent = agent_binary();
    let scratch = tempfile::tempdir().unwrap();
    let work = std::env::var_os("FIRERUNNER_ROOTFS_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let image = work.join("rootfs.ext4");
    let recipe = RootfsRecipe::default();

    let started = Instant::now();
    let mut stages = Vec::new();
    build_debian_rootfs(&recipe, &agent, &work, &image, &mut |event| match &event {
        RootfsProgress::Stage(stage) => stages.push(*stage),
        RootfsProgress::Sized { .. } => eprintln!("{event:?}"),
        RootfsProgress::Output { tool, line }
            if line.starts_with("E:") || line.starts_with("W:") =>
        {
            eprintln!("{tool}: {line}")
        }
        RootfsProgress::Output { .. } => {}
    })
    .unwrap();
    let elapsed = started.elapsed();
    let image_bytes = fs::metadata(&image).unwrap().len();
    eprintln!(
        "built {} in {:.1} s, {} MiB",
        image.display(),
        elapsed.as_secs_f64(),
        image_bytes / (1024 * 1024)
    );

    assert_eq!(stages.first(), Some(&RootfsStage::Bootstrapping));
    assert_eq!(stages.last(), Some(&RootfsStage::Done));
    assert!(
        !work.join("tree").exists(),
        "the work tree is removed after success"
    );
    let agent_info = check_rootfs_image(&image).unwrap();
    assert_eq!(agent_info.size, fs::metadata(&agent).unwrap().len());
    for program in [
        "/usr/bin/bash",
        "/usr/bin/git",
        "/usr/bin/curl",
        "/usr/bin/gcc",
        "/usr/bin/make",
    ] {
        let info = stat_in_image(&image, program)
            .unwrap()
            .unwrap_or_else(|| panic!("{program} missing from the image"));
        assert!(
            ["regular", "symlink"].contains(&info.file_type.as_str()),
            "{program}: {info:?}"
        );
    }
    assert!(stat_in_image(&image, "/etc/ssl/certs/ca-certificates.crt")
        .unwrap()
        .is_some());
    assert_eq!(
        stat_in_image(&image, "/sbin/init")
            .unwrap()
            .unwrap()
            .file_type,
        "symlink"
    );
    assert_eq!(
        stat_in_image(&image, "/var/cache/apt/pkgcache.bin").unwrap(),
        None
    );
}
