//! Thesaurus of command concepts, matched with Aho-Corasick on word boundaries.
//!
//! Each entry of [`THESAURUS`] maps a phrase to a [`Concept`]; a command carries every concept
//! whose phrase occurs in it (case-insensitive, leftmost-longest, at word boundaries). The phrases
//! are the table itself, so the documentation is the code: e.g. `cargo test`, `pytest`, `go test`
//! → [`Concept::Test`]; `npm ci`, `pip install` → [`Concept::Install`].

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::sync::LazyLock;

/// A kind of work a command does (serialized as its [`Concept::as_str`] name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concept {
    /// Runs tests.
    Test,
    /// Compiles or builds.
    Build,
    /// Installs dependencies or tools.
    Install,
    /// Static analysis.
    Lint,
    /// Code formatting (or its check).
    Format,
    /// Deploys somewhere.
    Deploy,
    /// Produces a distributable package or image.
    Package,
    /// Publishes a package or image.
    Publish,
    /// Fetches sources.
    Checkout,
    /// Saves or restores caches.
    Cache,
}

impl Concept {
    /// Stable lower-case name (used in the store).
    pub fn as_str(self) -> &'static str {
        match self {
            Concept::Test => "test",
            Concept::Build => "build",
            Concept::Install => "install",
            Concept::Lint => "lint",
            Concept::Format => "format",
            Concept::Deploy => "deploy",
            Concept::Package => "package",
            Concept::Publish => "publish",
            Concept::Checkout => "checkout",
            Concept::Cache => "cache",
        }
    }

    /// Parses a name produced by [`Concept::as_str`].
    pub fn parse(name: &str) -> Option<Concept> {
        ALL.iter().copied().find(|concept| concept.as_str() == name)
    }
}

const ALL: [Concept; 10] = [
    Concept::Test,
    Concept::Build,
    Concept::Install,
    Concept::Lint,
    Concept::Format,
    Concept::Deploy,
    Concept::Package,
    Concept::Publish,
    Concept::Checkout,
    Concept::Cache,
];

/// The thesaurus: phrase (lower case) → concept.
pub const THESAURUS: &[(&str, Concept)] = &[
    ("cargo test", Concept::Test),
    ("cargo nextest", Concept::Test),
    ("npm test", Concept::Test),
    ("npm run test", Concept::Test),
    ("yarn test", Concept::Test),
    ("pnpm test", Concept::Test),
    ("pytest", Concept::Test),
    ("python -m pytest", Concept::Test),
    ("tox", Concept::Test),
    ("go test", Concept::Test),
    ("make test", Concept::Test),
    ("make check", Concept::Test),
    ("ctest", Concept::Test),
    ("mvn test", Concept::Test),
    ("gradle test", Concept::Test),
    ("./gradlew test", Concept::Test),
    ("jest", Concept::Test),
    ("vitest", Concept::Test),
    ("rspec", Concept::Test),
    ("cargo build", Concept::Build),
    ("cargo check", Concept::Build),
    ("npm run build", Concept::Build),
    ("yarn build", Concept::Build),
    ("go build", Concept::Build),
    ("make", Concept::Build),
    ("cmake", Concept::Build),
    ("mvn compile", Concept::Build),
    ("gradle build", Concept::Build),
    ("tsc", Concept::Build),
    ("docker build", Concept::Build),
    ("npm ci", Concept::Install),
    ("npm install", Concept::Install),
    ("npm i", Concept::Install),
    ("yarn install", Concept::Install),
    ("pnpm install", Concept::Install),
    ("pip install", Concept::Install),
    ("poetry install", Concept::Install),
    ("uv sync", Concept::Install),
    ("apt-get install", Concept::Install),
    ("apt install", Concept::Install),
    ("brew install", Concept::Install),
    ("go mod download", Concept::Install),
    ("cargo fetch", Concept::Install),
    ("cargo install", Concept::Install),
    ("bundle install", Concept::Install),
    ("rustup", Concept::Install),
    ("cargo clippy", Concept::Lint),
    ("eslint", Concept::Lint),
    ("npm run lint", Concept::Lint),
    ("flake8", Concept::Lint),
    ("ruff check", Concept::Lint),
    ("pylint", Concept::Lint),
    ("mypy", Concept::Lint),
    ("golangci-lint", Concept::Lint),
    ("go vet", Concept::Lint),
    ("shellcheck", Concept::Lint),
    ("cargo fmt", Concept::Format),
    ("rustfmt", Concept::Format),
    ("prettier", Concept::Format),
    ("black", Concept::Format),
    ("ruff format", Concept::Format),
    ("gofmt", Concept::Format),
    ("clang-format", Concept::Format),
    ("kubectl apply", Concept::Deploy),
    ("helm upgrade", Concept::Deploy),
    ("helm install", Concept::Deploy),
    ("terraform apply", Concept::Deploy),
    ("deploy", Concept::Deploy),
    ("cargo package", Concept::Package),
    ("npm pack", Concept::Package),
    ("python -m build", Concept::Package),
    ("mvn package", Concept::Package),
    ("docker build", Concept::Package),
    ("cargo publish", Concept::Publish),
    ("npm publish", Concept::Publish),
    ("twine upload", Concept::Publish),
    ("docker push", Concept::Publish),
    ("git clone", Concept::Checkout),
    ("git checkout", Concept::Checkout),
    ("git fetch", Concept::Checkout),
    ("actions/checkout", Concept::Checkout),
    ("actions/cache", Concept::Cache),
    ("sccache", Concept::Cache),
    ("ccache", Concept::Cache),
];

static MATCHER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(THESAURUS.iter().map(|(phrase, _)| phrase))
        .expect("valid thesaurus")
});

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Concepts of a command (raw or normalised), sorted and without duplicates.
pub fn concepts_of(command: &str) -> Vec<Concept> {
    let bytes = command.as_bytes();
    let mut found: Vec<Concept> = Vec::new();
    for found_match in MATCHER.find_iter(command) {
        let starts_word = found_match.start() == 0 || !is_word_byte(bytes[found_match.start() - 1]);
        let ends_word = found_match.end() == bytes.len() || !is_word_byte(bytes[found_match.end()]);
        if !(starts_word && ends_word) {
            continue;
        }
        let phrase = THESAURUS[found_match.pattern().as_usize()].0;
        for (candidate, concept) in THESAURUS {
            if *candidate == phrase {
                found.push(*concept);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::{concepts_of as c, Concept::*, ALL};

    #[test]
    fn concepts_serialize_as_their_names() {
        for concept in ALL {
            let json = serde_json::to_value(concept).unwrap();
            assert_eq!(json, concept.as_str(), "{concept:?}");
        }
    }

    #[test]
    fn common_commands_map_to_concepts() {
        assert_eq!(c("cargo test --workspace"), vec![Test]);
        assert_eq!(c("npm ci"), vec![Install]);
        assert_eq!(c("pytest -k x"), vec![Test]);
        assert_eq!(c("go test ./..."), vec![Test]);
        assert_eq!(c("cargo clippy -- -D warnings"), vec![Lint]);
        assert_eq!(c("cargo fmt --check"), vec![Format]);
        assert_eq!(c("docker build -t app ."), vec![Build, Package]);
        assert_eq!(c("kubectl apply -f k8s"), vec![Deploy]);
        assert_eq!(c("twine upload dist"), vec![Publish]);
    }

    #[test]
    fn multi_line_scripts_collect_every_concept() {
        assert_eq!(c("npm ci\nnpm test"), vec![Test, Install]);
    }

    #[test]
    fn matches_need_word_boundaries_and_ignore_case() {
        assert_eq!(c("echo blackbird"), vec![]);
        assert_eq!(c("makefile-lint"), vec![]);
        assert_eq!(c("Cargo Test"), vec![Test]);
        assert_eq!(c("npm install"), vec![Install]);
    }

    #[test]
    fn names_round_trip() {
        for concept in super::ALL {
            assert_eq!(super::Concept::parse(concept.as_str()), Some(concept));
        }
    }
}
