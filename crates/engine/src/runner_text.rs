//! The runner's text formats used by the job runner: file commands, the
//! workflow commands it acts on, shells, and secret masking.

/// Why a `GITHUB_ENV`/`GITHUB_OUTPUT` file could not be read (lines count from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// `NAME<<DELIMITER` with an empty name or delimiter.
    #[error("line {line}: invalid heredoc {text:?}")]
    InvalidHeredoc {
        /// Where.
        line: usize,
        /// The line.
        text: String,
    },
    /// A heredoc without its closing delimiter.
    #[error("line {line}: matching delimiter {delimiter:?} not found")]
    UnclosedHeredoc {
        /// Where the heredoc starts.
        line: usize,
        /// The delimiter looked for.
        delimiter: String,
    },
    /// `=value` without a name.
    #[error("line {line}: empty name")]
    EmptyName {
        /// Where.
        line: usize,
    },
    /// A line of neither form.
    #[error("line {line}: expected NAME=value or NAME<<DELIMITER")]
    Malformed {
        /// Where.
        line: usize,
    },
}

/// A `shell:` without the `{0}` the script path goes in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shell {0:?} must contain {{0}}")]
pub struct ShellError(pub String);

/// Parses a `GITHUB_ENV`/`GITHUB_OUTPUT` file: `NAME=value` lines and
/// `NAME<<DELIMITER` blocks ending at a line equal to `DELIMITER`.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let heredoc = line.find("<<");
        let equals = line.find('=');
        match (heredoc, equals) {
            (Some(h), e) if e.is_none_or(|e| h < e) => {
                let name = &line[..h];
                let delimiter = &line[h + 2..];
                if name.is_empty() || delimiter.is_empty() {
                    return Err(EnvFileError::InvalidHeredoc {
                        line: index + 1,
                        text: line.to_owned(),
                    });
                }
                let value = heredoc_value(&mut lines, delimiter).ok_or_else(|| {
                    EnvFileError::UnclosedHeredoc {
                        line: index + 1,
                        delimiter: delimiter.to_owned(),
                    }
                })?;
                pairs.push((name.to_string(), value));
            }
            (_, Some(e)) => {
                let name = &line[..e];
                if name.is_empty() {
                    return Err(EnvFileError::EmptyName { line: index + 1 });
                }
                pairs.push((name.to_string(), line[e + 1..].to_string()));
            }
            _ => return Err(EnvFileError::Malformed { line: index + 1 }),
        }
    }
    Ok(pairs)
}

/// The lines up to the one equal to `delimiter`, joined; `None` when no line is.
fn heredoc_value<'a>(
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    delimiter: &str,
) -> Option<String> {
    let mut value = Vec::new();
    for (_, line) in lines {
        if line == delimiter {
            return Some(value.join("\n"));
        }
        value.push(line);
    }
    None
}

/// Prepends the paths of a `GITHUB_PATH` file (later lines first).
pub fn apply_path_file(text: &str, path: &mut Vec<String>) {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        path.insert(0, line.to_string());
    }
}

/// The command template and script extension for a step's `shell:`.
///
/// Without `shell:`, `bash -e {0}` when the guest has bash (GitHub's runner
/// adds `pipefail` only when `shell: bash` is written), else `sh -e {0}`.
pub fn shell_command(
    shell: Option<&str>,
    has_bash: bool,
) -> Result<(String, &'static str), ShellError> {
    Ok(match shell {
        None if has_bash => ("bash -e {0}".into(), "sh"),
        None => ("sh -e {0}".into(), "sh"),
        Some("bash") => ("bash --noprofile --norc -eo pipefail {0}".into(), "sh"),
        Some("sh") => ("sh -e {0}".into(), "sh"),
        Some("python") => ("python {0}".into(), "py"),
        Some("pwsh") => ("pwsh -command . '{0}'".into(), "ps1"),
        Some(custom) if custom.contains("{0}") => (custom.to_string(), "sh"),
        Some(custom) => return Err(ShellError(custom.to_owned())),
    })
}

/// A workflow command the job runner acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowCommand {
    /// `::add-mask::value`.
    AddMask(String),
    /// `::set-output name=x::value` (deprecated, still honoured).
    SetOutput {
        /// Output name.
        name: String,
        /// Value.
        value: String,
    },
    /// `::error/warning/notice ...::message`.
    Annotation {
        /// `error`, `warning` or `notice`.
        level: String,
        /// Where it points: `file`, `line`, `endLine`, `col`, `endColumn`,
        /// `title`, as given (property values unescaped).
        location: Vec<(String, String)>,
        /// The message.
        message: String,
    },
    /// `::group::title`.
    Group(String),
    /// `::endgroup::`.
    EndGroup,
    /// `::debug::message`: shown only when step debug logging is on.
    Debug(String),
    /// `::set-env name=x::value` (only with `ACTIONS_ALLOW_UNSECURE_COMMANDS`).
    SetEnv {
        /// Variable name (empty when the command has none).
        name: String,
        /// Value.
        value: String,
    },
    /// `::add-path::dir` (only with `ACTIONS_ALLOW_UNSECURE_COMMANDS`).
    AddPath(String),
    /// `::save-state name=x::value` (deprecated, still honoured).
    SaveState {
        /// State name.
        name: String,
        /// Value.
        value: String,
    },
}

impl WorkflowCommand {
    /// Recognises a command line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_start().strip_prefix("::")?;
        let (head, message) = rest.split_once("::")?;
        let (name, properties) = head.split_once(' ').unwrap_or((head, ""));
        let property = |key: &str| {
            properties
                .split(',')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.to_string())
        };
        let data = unescape(message);
        Some(match name {
            "add-mask" => WorkflowCommand::AddMask(data),
            "set-output" => WorkflowCommand::SetOutput {
                name: property("name")?,
                value: data,
            },
            "error" | "warning" | "notice" => WorkflowCommand::Annotation {
                level: name.to_string(),
                location: properties
                    .split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), unescape_property(v)))
                    .collect(),
                message: data,
            },
            "group" => WorkflowCommand::Group(data),
            "endgroup" => WorkflowCommand::EndGroup,
            "debug" => WorkflowCommand::Debug(data),
            "set-env" => WorkflowCommand::SetEnv {
                name: property("name")
                    .map(|n| unescape_property(&n))
                    .unwrap_or_default(),
                value: data,
            },
            "add-path" => WorkflowCommand::AddPath(data),
            "save-state" => WorkflowCommand::SaveState {
                name: property("name")?,
                value: data,
            },
            _ => return None,
        })
    }
}

/// Property values also escape `:` and `,`.
fn unescape_property(text: &str) -> String {
    unescape(&text.replace("%3A", ":").replace("%2C", ","))
}

fn unescape(text: &str) -> String {
    text.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

/// Most values a [`Masker`] holds (secrets, their encoded forms, `::add-mask::` values).
pub const MAX_MASKED_VALUES: usize = 20_000;

/// Replaces secret values, and the encoded forms GitHub's runner also masks (base64 at each
/// of the three byte offsets, URL-, JSON- and shell-escaped), with `***`, in one
/// Aho-Corasick pass over the text.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
    automaton: Option<aho_corasick::AhoCorasick>,
}

impl Masker {
    /// A masker for these secrets.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let mut masker = Self::default();
        for secret in secrets {
            masker.add(secret);
        }
        masker
    }

    /// Adds a value (each line of a multi-line value too) with its encoded forms; `false`
    /// when the list is full and the value was not added.
    pub fn add(&mut self, value: &str) -> bool {
        let mut added = true;
        for part in std::iter::once(value).chain(value.lines()) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            for form in std::iter::once(part.to_string()).chain(encoded_forms(part)) {
                if self.values.contains(&form) {
                    continue;
                }
                if self.values.len() >= MAX_MASKED_VALUES {
                    added = false;
                    break;
                }
                self.values.push(form);
            }
        }
        self.automaton = None;
        added
    }

    /// The text with every known value replaced (longest match first).
    pub fn mask(&mut self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        let values = &self.values;
        let automaton = self.automaton.get_or_insert_with(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(values)
                .expect("masker automaton")
        });
        automaton.replace_all(text, &vec!["***"; values.len()])
    }

    /// Whether the text holds any known value.
    pub fn contains_secret(&mut self, text: &str) -> bool {
        self.mask(text) != text
    }
}

/// The encodings of `secret` the runner also masks; base64 forms keep only the characters
/// that depend on the secret alone, and only when at least 6 remain.
fn encoded_forms(secret: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3 {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = base64(&bytes);
        let start = (offset * 4).div_ceil(3);
        let end = (bytes.len() * 4) / 3;
        if end >= start + 6 {
            forms.push(encoded[start..end].to_string());
        }
    }
    let url: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let json = serde_json::to_string(secret).expect("a string serialises");
    let json = json[1..json.len() - 1].to_string();
    let shell = secret.replace('\'', "'\\''");
    for form in [url, json, shell] {
        if form != secret {
            forms.push(form);
        }
    }
    forms
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn debug_set_env_add_path_and_save_state_are_recognised() {
        assert_eq!(
            WorkflowCommand::parse("::debug::50%25 done%0Anext"),
            Some(WorkflowCommand::Debug("50% done\nnext".into()))
        );
        assert_eq!(
            WorkflowCommand::parse("::set-env name=GREETING::hi there"),
            Some(WorkflowCommand::SetEnv {
                name: "GREETING".into(),
                value: "hi there".into()
            })
        );
        assert_eq!(
            WorkflowCommand::parse("::set-env::no name"),
            Some(WorkflowCommand::SetEnv {
                name: String::new(),
                value: "no name".into()
            })
        );
        assert_eq!(
            WorkflowCommand::parse("::add-path::/opt/tool/bin"),
            Some(WorkflowCommand::AddPath("/opt/tool/bin".into()))
        );
        assert_eq!(
            WorkflowCommand::parse("::save-state name=pid::42"),
            Some(WorkflowCommand::SaveState {
                name: "pid".into(),
                value: "42".into()
            })
        );
        assert_eq!(WorkflowCommand::parse("::save-state::42"), None);
    }
}

#[cfg(test)]
mod masker_tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Zq8W/value'\"x y";

    #[test]
    fn secrets_and_their_encodings_are_masked() {
        let mut masker = Masker::new([&SECRET.to_string()]);
        let line = format!("plain {SECRET} end");
        assert_eq!(masker.mask(&line), "plain *** end");
        for offset in 0..3 {
            let mut bytes = b"abc"[..offset].to_vec();
            bytes.extend_from_slice(SECRET.as_bytes());
            bytes.extend_from_slice(b"tail");
            let encoded = base64(&bytes);
            let masked = masker.mask(&encoded);
            assert!(masked.contains("***"), "offset {offset}: {masked}");
            assert!(
                !masked.contains(&base64(SECRET.as_bytes())[4..12]),
                "offset {offset}"
            );
        }
        let url = "s3cr3t-Zq8W%2Fvalue%27%22x%20y";
        assert_eq!(masker.mask(&format!("?q={url}&")), "?q=***&");
        let json = serde_json::to_string(SECRET).unwrap();
        assert_eq!(masker.mask(&format!("{{\"k\":{json}}}")), "{\"k\":\"***\"}");
        let shell = SECRET.replace('\'', "'\\''");
        assert_eq!(masker.mask(&format!("echo '{shell}'")), "echo '***'");
    }

    #[test]
    fn the_list_is_bounded() {
        let mut masker = Masker::default();
        let mut refused = 0;
        for i in 0..MAX_MASKED_VALUES + 10 {
            if !masker.add(&format!("v{i}")) {
                refused += 1;
            }
        }
        assert!(refused >= 10);
        assert!(masker.values.len() <= MAX_MASKED_VALUES);
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"f"), "Zg==");
    }
}
