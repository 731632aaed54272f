//! The secret store on SQLite and PostgreSQL: values sealed at rest (the
//! database files never hold one), a wrong key refused with its id, a
//! rotation, GitHub's precedence and limits.

#[path = "support/postgres.rs"]
mod postgres;

use firerunner_server::secrets::{SettingError, Settings};
use firerunner_server::vault::{Keyring, Scope, SettingKind};
use firerunner_server::Store;

const KEY_A: &str = "5f2b9a7c0e4d1f3a6b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c";
const KEY_B: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn keys(current: &str, previous: Option<&str>) -> Option<Keyring> {
    Some(Keyring::new(current, previous).unwrap())
}

async fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    (dir, url)
}

fn repo() -> Scope {
    Scope::from_parts(None, Some("octo/app"), None).unwrap()
}

fn org() -> Scope {
    Scope::from_parts(Some("octo"), None, None).unwrap()
}

fn env(name: &str) -> Scope {
    Scope::from_parts(None, Some("octo/app"), Some(name)).unwrap()
}

/// Every byte of the database's files (the main file, the WAL, the shared memory).
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("store.db") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn the_database_files_never_hold_a_secrets_value() {
    let (dir, url) = sqlite().await;
    let store = Store::connect(&url).await.unwrap();
    let settings = Settings::new(store.clone(), keys(KEY_A, None));
    let value = "dckr_pat_Zq8vLmN3xR7tY2wK9pB4";
    settings
        .set_secret(&repo(), "docker_token", value)
        .await
        .unwrap();
    settings
        .set_variable(&repo(), "REGISTRY", "registry.example.com")
        .await
        .unwrap();
    let opened = settings.secrets_of(&[repo()]).await.unwrap();
    assert_eq!(opened["DOCKER_TOKEN"], value);
    // Listing shows names and dates only.
    let listed = settings.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "DOCKER_TOKEN");
    assert!(!format!("{listed:?}").contains(value));
    let bytes = database_bytes(dir.path());
    assert!(bytes.len() > 4096, "the database files were read");
    assert!(
        !contains(&bytes, value.as_bytes()),
        "the value is in the database files"
    );
    assert!(!contains(&bytes, hex_of(value).as_bytes()));
    // The variable, which is not secret, is there: the scan does see rows.
    assert!(contains(&bytes, b"registry.example.com"));
    store.close().await;
    let bytes = database_bytes(dir.path());
    assert!(
        !contains(&bytes, value.as_bytes()),
        "the value is in the checkpointed file"
    );
    assert!(contains(&bytes, b"registry.example.com"));
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_wrong_key_fails_naming_the_key_it_needs() {
    let (_dir, url) = sqlite().await;
    let store = Store::connect(&url).await.unwrap();
    let old = Settings::new(store.clone(), keys(KEY_A, None));
    old.set_secret(&repo(), "TOKEN", "value-1").await.unwrap();
    let old_id = Keyring::new(KEY_A, None).unwrap().current_id().to_string();
    let wrong = Settings::new(store.clone(), keys(KEY_B, None));
    let err = wrong.secrets_of(&[repo()]).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SettingError::Vault(_)), "{message}");
    assert!(message.contains(&old_id), "{message}");
    assert!(message.contains("repo:octo/app/TOKEN"), "{message}");
    // Without any key the store is off, and says how to turn it on.
    let off = Settings::new(store, None);
    let err = off.set_secret(&repo(), "TOKEN", "v").await.unwrap_err();
    assert!(err.to_string().contains("secrets.key"), "{err}");
}

#[tokio::test]
async fn a_rotation_seals_every_value_with_the_new_key() {
    let (_dir, url) = sqlite().await;
    let store = Store::connect(&url).await.unwrap();
    let old = Settings::new(store.clone(), keys(KEY_A, None));
    old.set_secret(&org(), "ORG_TOKEN", "org-value")
        .await
        .unwrap();
    old.set_secret(&env("production"), "DEPLOY", "prod-value")
        .await
        .unwrap();
    let before = store.secret_infos().await.unwrap();
    let rotating = Settings::new(store.clone(), keys(KEY_B, Some(KEY_A)));
    // Both open while the previous key is configured.
    assert_eq!(
        rotating.secrets_of(&[org()]).await.unwrap()["ORG_TOKEN"],
        "org-value"
    );
    let rotation = rotating.rotate().await.unwrap();
    assert_eq!((rotation.resealed, rotation.current), (2, 0));
    assert!(rotation.unreadable.is_empty());
    assert_eq!(rotating.rotate().await.unwrap().current, 2);
    let new = Settings::new(store.clone(), keys(KEY_B, None));
    assert_eq!(
        new.secrets_of(&[org()]).await.unwrap()["ORG_TOKEN"],
        "org-value"
    );
    assert_eq!(
        new.secrets_of(&[env("production")]).await.unwrap()["DEPLOY"],
        "prod-value"
    );
    assert!(
        old.secrets_of(&[org()]).await.is_err(),
        "the old key no longer opens them"
    );
    let after = store.secret_infos().await.unwrap();
    let new_id = Keyring::new(KEY_B, None).unwrap().current_id().to_string();
    assert!(after.iter().all(|s| s.key_id == new_id));
    // A rotation keeps the dates of the values.
    let dates = |list: &[firerunner_server::SecretInfo]| {
        list.iter().map(|s| s.updated_at).collect::<Vec<_>>()
    };
    assert_eq!(dates(&before), dates(&after));
}

#[tokio::test]
async fn the_environment_wins_over_the_repository_over_the_organization() {
    let (_dir, url) = sqlite().await;
    let store = Store::connect(&url).await.unwrap();
    let settings = Settings::new(store, keys(KEY_A, None));
    settings.set_secret(&org(), "TOKEN", "org").await.unwrap();
    settings
        .set_secret(&org(), "ORG_ONLY", "org-only")
        .await
        .unwrap();
    settings.set_secret(&repo(), "token", "repo").await.unwrap();
    settings
        .set_secret(&env("production"), "Token", "prod")
        .await
        .unwrap();
    let other = Scope::from_parts(None, Some("octo/other"), None).unwrap();
    settings.set_secret(&other, "TOKEN", "other").await.unwrap();
    let run = Scope::of_run("octo/app").unwrap();
    let secrets = settings.secrets_of(&run).await.unwrap();
    assert_eq!(secrets["TOKEN"], "repo");
    assert_eq!(secrets["ORG_ONLY"], "org-only");
    assert_eq!(secrets.len(), 2);
    let production = settings.secrets_of(&[env("production")]).await.unwrap();
    assert_eq!(production["TOKEN"], "prod");
    assert!(settings
        .secrets_of(&[env("staging")])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn names_sizes_and_counts_follow_githubs_limits() {
    let (_dir, url) = sqlite().await;
    let store = Store::connect(&url).await.unwrap();
    let settings = Settings::new(store, keys(KEY_A, None));
    let err = settings
        .set_secret(&repo(), "GITHUB_TOKEN", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("field name:"), "{err}");
    let err = settings.set_secret(&repo(), "A", "").await.unwrap_err();
    assert!(err.to_string().starts_with("field value:"), "{err}");
    let big = "x".repeat(48 * 1024 + 1);
    let err = settings.set_secret(&repo(), "BIG", &big).await.unwrap_err();
    assert!(err.to_string().contains("49152"), "{err}");
    settings
        .set_secret(&repo(), "BIG", &big[1..])
        .await
        .unwrap();
    for n in 1..100 {
        settings
            .set_secret(&repo(), &format!("S{n}"), "v")
            .await
            .unwrap();
    }
    let err = settings
        .set_secret(&repo(), "ONE_TOO_MANY", "v")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SettingError::Full { limit: 100, .. }),
        "{err}"
    );
    // Replacing one that exists is no new one.
    settings.set_secret(&repo(), "S1", "new").await.unwrap();
    settings
        .remove(SettingKind::Secret, &repo(), "s1")
        .await
        .unwrap();
    let err = settings
        .remove(SettingKind::Secret, &repo(), "S1")
        .await
        .unwrap_err();
    assert!(matches!(err, SettingError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn on_postgres_too() {
    let server = postgres::TempPostgres::start();
    let store = Store::connect(&server.url()).await.unwrap();
    let settings = Settings::new(store.clone(), keys(KEY_A, None));
    settings.set_secret(&org(), "TOKEN", "org").await.unwrap();
    settings.set_secret(&repo(), "TOKEN", "repo").await.unwrap();
    settings
        .set_variable(&repo(), "COLOR", "blue")
        .await
        .unwrap();
    let run = Scope::of_run("octo/app").unwrap();
    assert_eq!(settings.secrets_of(&run).await.unwrap()["TOKEN"], "repo");
    assert_eq!(settings.variables_of(&run).await.unwrap()["COLOR"], "blue");
    let rotating = Settings::new(store.clone(), keys(KEY_B, Some(KEY_A)));
    assert_eq!(rotating.rotate().await.unwrap().resealed, 2);
    let new = Settings::new(store, keys(KEY_B, None));
    assert_eq!(new.secrets_of(&run).await.unwrap()["TOKEN"], "repo");
}
