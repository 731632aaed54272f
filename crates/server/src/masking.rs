//! Hides a run's secrets in what its jobs report before any of it reaches
//! the store, the PR comment, statuses, the dashboard, the API or the
//! learning store: its job token and the host's fetch token from the start,
//! the store's secrets, and each environment's secrets as a job enters it.

use std::sync::{Arc, RwLock};

/// A run's secret values, longest first, shared by its reporter and its
/// environment gate.
#[derive(Debug, Clone, Default)]
pub struct ReportMasker {
    secrets: Arc<RwLock<Vec<String>>>,
}

/// Values shorter than this are not masked (GitHub's runner skips them
/// too: masking `a` would hide every `a`).
const MIN_MASKED_LEN: usize = 4;

impl ReportMasker {
    /// A masker hiding `secrets`.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let masker = Self::default();
        masker.add(secrets);
        masker
    }

    /// Hides `secrets` too from now on.
    pub fn add<'a>(&self, secrets: impl IntoIterator<Item = &'a String>) {
        let mut known = self.secrets.write().expect("masker");
        for secret in secrets {
            if secret.len() >= MIN_MASKED_LEN && !known.contains(secret) {
                known.push(secret.clone());
            }
        }
        // Longest first, so a secret containing another is hidden whole.
        known.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn mask(&self, text: String) -> String {
        let known = self.secrets.read().expect("masker");
        known
            .iter()
            .fold(text, |text, secret| text.replace(secret.as_str(), "***"))
    }

    /// Masks `text` in place.
    pub fn mask_in(&self, text: &mut String) {
        *text = self.mask(std::mem::take(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_added_later_are_masked_too_and_the_longest_first() {
        let masker = ReportMasker::new(&["token-1234".to_string(), "abc".to_string()]);
        let environment = "prod-password".to_string();
        assert_eq!(
            masker.mask("token-1234 abc prod-password".into()),
            "*** abc prod-password"
        );
        masker.add([&environment, &"prod".to_string()]);
        assert_eq!(masker.mask("prod-password prod".into()), "*** ***");
    }
}
