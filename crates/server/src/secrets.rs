//! The secret and variable stores operators manage (CLI, API, dashboard):
//! names and sizes checked against GitHub's rules, secrets sealed before
//! they reach the store and opened only for a run, never listed with their
//! values; and the key rotation that seals old values again.

use std::collections::BTreeMap;

use crate::store::{SealedSecret, SecretInfo, Store, StoreError, StoredVariable, Table};
use crate::vault::{Keyring, NameError, Scope, ScopeError, SettingKind, VaultError};

/// Why a secret or variable could not be set, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// The name breaks GitHub's rules.
    #[error("field name: {0}")]
    Name(#[from] NameError),
    /// The scope is not one.
    #[error("scope: {0}")]
    Scope(#[from] ScopeError),
    /// An empty value (GitHub refuses them too).
    #[error("field value: a {0} cannot be empty")]
    Empty(&'static str),
    /// Over GitHub's size limit.
    #[error("field value: a {noun} is at most {limit} bytes (GitHub's limit), this one is {size}")]
    TooLarge {
        /// `secret` or `variable`.
        noun: &'static str,
        /// The limit.
        limit: usize,
        /// The value's size.
        size: usize,
    },
    /// The scope holds as many as GitHub allows.
    #[error("the {scope} already holds {limit} {noun}s, GitHub's most; remove one first")]
    Full {
        /// `secret` or `variable`.
        noun: &'static str,
        /// The scope.
        scope: Scope,
        /// The limit.
        limit: usize,
    },
    /// No key is configured.
    #[error("the secret store is off: set secrets.key (or secrets.key_file, FIRERUNNER_SECRETS_KEY_FILE) in the configuration")]
    NoKey,
    /// There is no such secret or variable.
    #[error("no {noun} {name} in the {scope}")]
    NotFound {
        /// `secret` or `variable`.
        noun: &'static str,
        /// The name.
        name: String,
        /// The scope.
        scope: Scope,
    },
    /// A stored value does not open.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    /// The id of the key every readable secret is now sealed with.
    pub key_id: String,
    /// Secrets sealed again with the current key.
    pub resealed: usize,
    /// Secrets already sealed with it.
    pub current: usize,
    /// Secrets that opened with neither key, and why (left as they are).
    pub unreadable: Vec<String>,
}

/// The secret and variable stores over the service's database.
#[derive(Debug, Clone)]
pub struct Settings {
    store: Store,
    keys: Option<Keyring>,
}

impl Settings {
    /// The stores in `store`, secrets sealed with `keys` (none: secrets off).
    pub fn new(store: Store, keys: Option<Keyring>) -> Self {
        Self { store, keys }
    }

    /// The keyring, or why secrets are off.
    fn keys(&self) -> Result<&Keyring, SettingError> {
        self.keys.as_ref().ok_or(SettingError::NoKey)
    }

    /// Whether secrets can be set (a key is configured).
    pub fn secrets_enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// Checks a name and value of `kind` for `scope`, and that the scope has
    /// room for it; returns the name as stored (upper case).
    async fn check(
        &self,
        kind: SettingKind,
        scope: &Scope,
        name: &str,
        value: &str,
    ) -> Result<String, SettingError> {
        let name = kind.check_name(name)?;
        if value.is_empty() {
            return Err(SettingError::Empty(kind.noun()));
        }
        let limit = kind.max_value_bytes();
        if value.len() > limit {
            let (noun, size) = (kind.noun(), value.len());
            return Err(SettingError::TooLarge { noun, limit, size });
        }
        let table = table_of(kind);
        let limit = kind.max_count(scope);
        let exists = self.store.setting_exists(table, scope, &name).await?;
        if !exists && self.store.count_in_scope(table, scope).await? >= limit as i64 {
            let (noun, scope) = (kind.noun(), scope.clone());
            return Err(SettingError::Full { noun, scope, limit });
        }
        Ok(name)
    }

    /// Seals and stores a secret; returns its stored name.
    pub async fn set_secret(
        &self,
        scope: &Scope,
        name: &str,
        value: &str,
    ) -> Result<String, SettingError> {
        let keys = self.keys()?;
        let name = self.check(SettingKind::Secret, scope, name, value).await?;
        let sealed = keys.seal(scope, &name, value);
        let secret = SealedSecret {
            scope: scope.clone(),
            name: name.clone(),
            sealed,
        };
        self.store.put_secret(&secret).await?;
        Ok(name)
    }

    /// Stores a variable; returns its stored name.
    pub async fn set_variable(
        &self,
        scope: &Scope,
        name: &str,
        value: &str,
    ) -> Result<String, SettingError> {
        let name = self
            .check(SettingKind::Variable, scope, name, value)
            .await?;
        self.store.put_variable(scope, &name, value).await?;
        Ok(name)
    }

    /// Removes a secret or variable.
    pub async fn remove(
        &self,
        kind: SettingKind,
        scope: &Scope,
        name: &str,
    ) -> Result<(), SettingError> {
        let name = kind.check_name(name)?;
        if self
            .store
            .delete_setting(table_of(kind), scope, &name)
            .await?
        {
            return Ok(());
        }
        let (noun, scope) = (kind.noun(), scope.clone());
        Err(SettingError::NotFound { noun, name, scope })
    }

    /// Every secret's name, scope and date.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, SettingError> {
        Ok(self.store.secret_infos().await?)
    }

    /// Every variable.
    pub async fn list_variables(&self) -> Result<Vec<StoredVariable>, SettingError> {
        Ok(self.store.variables(None).await?)
    }

    /// The secrets of `scopes` opened, a later scope's winning over an
    /// earlier one's (pass them widest first).
    pub async fn secrets_of(
        &self,
        scopes: &[Scope],
    ) -> Result<BTreeMap<String, String>, SettingError> {
        let sealed = self.store.sealed_secrets(Some(scopes)).await?;
        let mut opened = BTreeMap::new();
        if sealed.is_empty() {
            return Ok(opened);
        }
        let keys = self.keys()?;
        for scope in scopes {
            for secret in sealed.iter().filter(|s| s.scope == *scope) {
                let value = keys.open(&secret.scope, &secret.name, &secret.sealed)?;
                opened.insert(secret.name.clone(), value);
            }
        }
        Ok(opened)
    }

    /// The variables of `scopes`, a later scope's winning.
    pub async fn variables_of(
        &self,
        scopes: &[Scope],
    ) -> Result<BTreeMap<String, String>, SettingError> {
        let stored = self.store.variables(Some(scopes)).await?;
        let mut merged = BTreeMap::new();
        for scope in scopes {
            let key = scope.key();
            for variable in stored.iter().filter(|v| v.scope == key) {
                merged.insert(variable.name.clone(), variable.value.clone());
            }
        }
        Ok(merged)
    }

    /// Seals every secret that another key sealed again with the current
    /// key (it must still open: with `secrets.previous_key` during a rotation).
    pub async fn rotate(&self) -> Result<Rotation, SettingError> {
        let keys = self.keys()?;
        let mut rotation = Rotation {
            key_id: keys.current_id().to_string(),
            ..Rotation::default()
        };
        for mut secret in self.store.sealed_secrets(None).await? {
            if secret.sealed.key_id == keys.current_id() {
                rotation.current += 1;
                continue;
            }
            let value = match keys.open(&secret.scope, &secret.name, &secret.sealed) {
                Ok(value) => value,
                Err(err) => {
                    rotation.unreadable.push(err.to_string());
                    continue;
                }
            };
            secret.sealed = keys.seal(&secret.scope, &secret.name, &value);
            self.store.reseal_secret(&secret).await?;
            rotation.resealed += 1;
        }
        Ok(rotation)
    }
}

fn table_of(kind: SettingKind) -> Table {
    match kind {
        SettingKind::Secret => Table::Secrets,
        SettingKind::Variable => Table::Variables,
    }
}
