//! `firerunner secrets`, `vars` and `environments` against the real
//! `firerunner serve` on loopback: a value goes in from standard input or
//! a file, never from the command line, never comes back out, and is not
//! in the database files; a key rotation by restarting with the new key
//! and the previous one.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use firerunner_github::testing::MockGitHub;

const TOKEN: &str = "cli-test-token";
const OLD_KEY: &str = "11223344556677889900aabbccddeeff11223344556677889900aabbccddeeff";
const NEW_KEY: &str = "ffeeddccbbaa00998877665544332211ffeeddccbbaa00998877665544332211";
const VALUE: &str = "ghp_cliSecretValue_4f8a2c";

/// The server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, github: &str, keys: &[(&str, &str)]) -> std::path::PathBuf {
    for (file, key) in keys {
        std::fs::write(dir.join(file), format!("{key}\n")).unwrap();
    }
    let mut secrets = format!(
        "[secrets]\nkey_file = \"{}\"\n",
        dir.join(keys[0].0).display()
    );
    if let Some((file, _)) = keys.get(1) {
        secrets.push_str(&format!(
            "previous_key_file = \"{}\"\n",
            dir.join(file).display()
        ));
    }
    let config = dir.join("firerunner.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         database_url = \"sqlite://{}?mode=rwc\"\ndata_dir = \"{}\"\napi_token = \"{TOKEN}\"\n\
         [github]\napi_url = \"{github}\"\ntoken = \"ghs_cli\"\n[worker]\nenabled = false\n{secrets}",
        dir.join("store.db").display(),
        dir.display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn start(config: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

/// Runs `firerunner ARGS` against the server, `stdin` on its standard input.
fn cli(port: u16, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(args)
        .env("FIRERUNNER_URL", format!("http://127.0.0.1:{port}"))
        .env("FIRERUNNER_API_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "stdout: {out}\nstderr: {err}");
    out.into_owned()
}

fn database_holds(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        name.starts_with("store.db")
            && std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_go_in_from_stdin_or_a_file_and_never_come_out() {
    let github = MockGitHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &github.url(), &[("old.key", OLD_KEY)]);
    let server = start(&config, port);

    let out = ok(&cli(
        port,
        &["secrets", "set", "deploy_key", "--repo", "octo-org/widgets"],
        &format!("{VALUE}\n"),
    ));
    assert!(
        out.contains("set secret DEPLOY_KEY in repo:octo-org/widgets"),
        "{out}"
    );
    let file = dir.path().join("value.txt");
    std::fs::write(&file, "org-value-from-file").unwrap();
    let path = file.to_str().unwrap();
    ok(&cli(
        port,
        &[
            "secrets",
            "set",
            "ORG_TOKEN",
            "--org",
            "octo-org",
            "--file",
            path,
        ],
        "",
    ));
    let listed = ok(&cli(port, &["secrets", "list"], ""));
    assert!(
        listed.contains("DEPLOY_KEY") && listed.contains("ORG_TOKEN"),
        "{listed}"
    );
    assert!(
        !listed.contains(VALUE) && !listed.contains("org-value-from-file"),
        "{listed}"
    );
    // No way to put a value on the command line.
    let argv = cli(
        port,
        &["secrets", "set", "X", "--repo", "o/r", "--value", "v"],
        "",
    );
    assert!(!argv.status.success());
    let bad = cli(port, &["secrets", "set", "GITHUB_X", "--repo", "o/r"], "v");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("field name"),
        "{bad:?}"
    );

    ok(&cli(
        port,
        &[
            "vars",
            "set",
            "COLOR",
            "--repo",
            "octo-org/widgets",
            "--value",
            "blue",
        ],
        "",
    ));
    assert!(ok(&cli(port, &["vars", "list"], "")).contains("blue"));
    let rules = [
        "environments",
        "set",
        "production",
        "--repo",
        "octo-org/widgets",
        "--branch",
        "main",
        "--reviewer",
        "alice",
    ];
    ok(&cli(port, &rules, ""));
    let environments = ok(&cli(port, &["environments", "list"], ""));
    assert!(
        environments.contains("production") && environments.contains("alice"),
        "{environments}"
    );
    drop(server);
    assert!(
        !database_holds(dir.path(), VALUE),
        "the value is in the database files"
    );

    // Rotation: the new key with the old one beside it; the start seals again.
    let config = write_config(
        dir.path(),
        port,
        &github.url(),
        &[("new.key", NEW_KEY), ("old.key", OLD_KEY)],
    );
    let server = start(&config, port);
    let rotated = ok(&cli(port, &["secrets", "rotate-key"], ""));
    assert!(
        rotated.starts_with("0 secret(s) sealed again, 2 already under key"),
        "{rotated}"
    );
    drop(server);
    let config = write_config(dir.path(), port, &github.url(), &[("new.key", NEW_KEY)]);
    let _server = start(&config, port);
    ok(&cli(
        port,
        &["secrets", "rm", "DEPLOY_KEY", "--repo", "octo-org/widgets"],
        "",
    ));
    let listed = ok(&cli(port, &["secrets", "list"], ""));
    assert!(
        !listed.contains("DEPLOY_KEY") && listed.contains("ORG_TOKEN"),
        "{listed}"
    );
}
