//! Secret values at rest: sealed with XChaCha20-Poly1305 under a key kept
//! outside the database (`secrets.key`, or `secrets.key_file`), a fresh
//! random nonce per value, and the secret's scope and name as associated
//! data, so a ciphertext copied to another scope or name does not open.
//! Every sealed value carries the id of its key; `secrets.previous_key`
//! still opens values sealed before a rotation until they are sealed again
//! (see `docs/deploy.md`).

mod names;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

pub use names::{NameError, Scope, ScopeError, SettingKind};

/// Why a key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// A configured key is not 64 hexadecimal digits.
    #[error("{key}: a secrets key is 64 hexadecimal digits (32 bytes), e.g. from `openssl rand -hex 32`")]
    BadKey {
        /// The config key that holds it.
        key: &'static str,
    },
    /// A value was sealed with a key that is not configured.
    #[error("{what} was encrypted with key {key_id}, which is neither secrets.key ({current}) nor secrets.previous_key")]
    UnknownKey {
        /// The secret (`repo:octo/app/NAME`).
        what: String,
        /// The key it names.
        key_id: String,
        /// The current key's id.
        current: String,
    },
    /// The value does not open under its key: corrupt, or moved from
    /// another scope or name.
    #[error("{what} does not decrypt with key {key_id}: the stored value is corrupt or was moved from another scope or name")]
    Corrupt {
        /// The secret.
        what: String,
        /// The key it names.
        key_id: String,
    },
}

/// A sealed value as stored: the key's id, the nonce and the ciphertext
/// (with its tag), both hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key it was sealed with.
    pub key_id: String,
    /// 24 random bytes, hex.
    pub nonce: String,
    /// Ciphertext and tag, hex.
    pub ciphertext: String,
}

/// One 32-byte key and its id.
#[derive(Clone)]
struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SecretKey {
    fn parse(config_key: &'static str, text: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(text.trim()).map_err(|_| VaultError::BadKey { key: config_key })?;
        if bytes.len() != 32 {
            return Err(VaultError::BadKey { key: config_key });
        }
        let digest = Sha256::digest([b"firerunner secrets key id\n".as_slice(), &bytes].concat());
        Ok(Self {
            id: hex::encode(&digest[..8]),
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }
}

/// The current key, which seals, and the previous one, which only opens.
#[derive(Clone)]
pub struct Keyring {
    current: SecretKey,
    previous: Option<SecretKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

/// The associated data of a secret: its scope and name.
fn associated_data(scope: &Scope, name: &str) -> Vec<u8> {
    format!("firerunner secret\n{}\n{name}", scope.key()).into_bytes()
}

impl Keyring {
    /// The keyring of `current` (hex) and, during a rotation, `previous`.
    pub fn new(current: &str, previous: Option<&str>) -> Result<Self, VaultError> {
        Ok(Self {
            current: SecretKey::parse("secrets.key", current)?,
            previous: previous
                .filter(|p| !p.trim().is_empty())
                .map(|p| SecretKey::parse("secrets.previous_key", p))
                .transpose()?,
        })
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `value` of secret `name` in `scope` with the current key.
    pub fn seal(&self, scope: &Scope, name: &str, value: &str) -> Sealed {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(scope, name);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: &aad,
        };
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        Sealed {
            key_id: self.current.id.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    }

    /// Opens a value sealed for secret `name` in `scope`.
    pub fn open(&self, scope: &Scope, name: &str, sealed: &Sealed) -> Result<String, VaultError> {
        let what = format!("{}/{name}", scope.key());
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey {
                what: what.clone(),
                key_id: sealed.key_id.clone(),
                current: self.current.id.clone(),
            })?;
        let corrupt = || VaultError::Corrupt {
            what: what.clone(),
            key_id: sealed.key_id.clone(),
        };
        let nonce = hex::decode(&sealed.nonce).map_err(|_| corrupt())?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| corrupt())?;
        if nonce.len() != 24 {
            return Err(corrupt());
        }
        let aad = associated_data(scope, name);
        let payload = Payload {
            msg: &ciphertext,
            aad: &aad,
        };
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    fn repo() -> Scope {
        Scope::parse_key("repo:octo/app").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_scope_and_name() {
        let keys = Keyring::new(KEY, None).unwrap();
        let sealed = keys.seal(&repo(), "TOKEN", "hunter2");
        assert!(!sealed.ciphertext.contains(&hex::encode("hunter2")));
        assert_eq!(keys.open(&repo(), "TOKEN", &sealed).unwrap(), "hunter2");
        let other = Scope::parse_key("repo:octo/other").unwrap();
        assert!(matches!(
            keys.open(&other, "TOKEN", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        assert!(matches!(
            keys.open(&repo(), "OTHER", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        // A fresh nonce every time.
        assert_ne!(keys.seal(&repo(), "TOKEN", "hunter2").nonce, sealed.nonce);
    }

    #[test]
    fn a_wrong_key_is_named_and_the_previous_key_opens_old_values() {
        let old = Keyring::new(KEY, None).unwrap();
        let sealed = old.seal(&repo(), "TOKEN", "v");
        let new = Keyring::new(OTHER, None).unwrap();
        let err = new.open(&repo(), "TOKEN", &sealed).unwrap_err();
        assert!(err.to_string().contains(old.current_id()), "{err}");
        assert!(err.to_string().contains("secrets.previous_key"), "{err}");
        let rotating = Keyring::new(OTHER, Some(KEY)).unwrap();
        assert_eq!(rotating.open(&repo(), "TOKEN", &sealed).unwrap(), "v");
        assert_eq!(
            rotating.seal(&repo(), "TOKEN", "v").key_id,
            new.current_id()
        );
    }

    #[test]
    fn a_key_that_is_not_32_hex_bytes_is_refused_with_its_config_key() {
        let err = Keyring::new("abcd", None).unwrap_err();
        assert!(err.to_string().starts_with("secrets.key:"), "{err}");
        let err = Keyring::new(KEY, Some("zz")).unwrap_err();
        assert!(
            err.to_string().starts_with("secrets.previous_key:"),
            "{err}"
        );
        let mut tampered = Keyring::new(KEY, None).unwrap().seal(&repo(), "T", "v");
        tampered.ciphertext.replace_range(0..2, "00");
        let keys = Keyring::new(KEY, None).unwrap();
        assert!(keys.open(&repo(), "T", &tampered).is_err());
    }
}
