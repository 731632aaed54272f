//! The runner's text formats used by the job runner: file commands, the
//! workflow commands it acts on, shells, and secret masking.

/// Parses a `GITHUB_ENV`/`GITHUB_OUTPUT` file: `NAME=value` lines and
/// `NAME<<DELIMITER` blocks ending at a line equal to `DELIMITER`.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
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
                    return Err(format!("line {}: invalid heredoc {line:?}", index + 1));
                }
                let mut value = Vec::new();
                loop {
                    match lines.next() {
                        Some((_, l)) if l == delimiter => break,
                        Some((_, l)) => value.push(l),
                        None => {
                            return Err(format!(
                                "line {}: matching delimiter {delimiter:?} not found",
                                index + 1
                            ))
                        }
                    }
                }
                pairs.push((name.to_string(), value.join("\n")));
            }
            (_, Some(e)) => {
                let name = &line[..e];
                if name.is_empty() {
                    return Err(format!("line {}: empty name", index + 1));
                }
                pairs.push((name.to_string(), line[e + 1..].to_string()));
            }
            _ => {
                return Err(format!(
                    "line {}: expected NAME=value or NAME<<DELIMITER",
                    index + 1
                ))
            }
        }
    }
    Ok(pairs)
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
) -> Result<(String, &'static str), String> {
    Ok(match shell {
        None if has_bash => ("bash -e {0}".into(), "sh"),
        None => ("sh -e {0}".into(), "sh"),
        Some("bash") => ("bash --noprofile --norc -eo pipefail {0}".into(), "sh"),
        Some("sh") => ("sh -e {0}".into(), "sh"),
        Some("python") => ("python {0}".into(), "py"),
        Some("pwsh") => ("pwsh -command . '{0}'".into(), "ps1"),
        Some(custom) if custom.contains("{0}") => (custom.to_string(), "sh"),
        Some(custom) => return Err(format!("shell {custom:?} must contain {{0}}")),
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

/// Replaces secret values with `***` in log lines.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
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

    /// Adds a value (each line of a multi-line value too).
    pub fn add(&mut self, value: &str) {
        for part in std::iter::once(value).chain(value.lines()) {
            let part = part.trim();
            if !part.is_empty() && !self.values.iter().any(|v| v == part) {
                self.values.push(part.to_string());
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// The line with every known value replaced.
    pub fn mask(&self, line: &str) -> String {
        let mut masked = line.to_string();
        for value in &self.values {
            if masked.contains(value.as_str()) {
                masked = masked.replace(value.as_str(), "***");
            }
        }
        masked
    }
}
