//! The dotenv format of act's `.secrets`, `.vars`, `.env` and `.input`
//! files: `KEY=value` lines, optionally prefixed with `export`, values bare,
//! 'single-quoted' (literal) or "double-quoted" (with `\n`, `\t`, `\"`, `\\`
//! escapes, and spanning lines); `#` starts a comment line, or a comment
//! after a bare value when preceded by a space.

use indexmap::IndexMap;

/// A syntax error with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DotenvError {
    /// The file, as named by the caller.
    pub file: String,
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses dotenv text; later keys replace earlier ones.
pub fn parse(file: &str, text: &str) -> Result<IndexMap<String, String>, DotenvError> {
    let mut reader = Reader {
        file,
        lines: text.lines().collect(),
        index: 0,
    };
    let mut values = IndexMap::new();
    while let Some(line) = reader.lines.get(reader.index).copied() {
        let number = reader.index + 1;
        reader.index += 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(reader.error(number, format!("expected KEY=value, found {line:?}")));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(reader.error(number, format!("invalid name {key:?}")));
        }
        let value = reader.value(rest.trim_start(), number)?;
        values.insert(key.to_string(), value);
    }
    Ok(values)
}

/// Dotenv lines being read, with the index of the next one.
struct Reader<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    index: usize,
}

impl Reader<'_> {
    fn error(&self, line: usize, message: String) -> DotenvError {
        DotenvError {
            file: self.file.to_string(),
            line,
            message,
        }
    }

    /// The value after `=` on line `number`: quoted (a double-quoted one may
    /// go on over the next lines) or bare.
    fn value(&mut self, rest: &str, number: usize) -> Result<String, DotenvError> {
        if let Some(body) = rest.strip_prefix('\'') {
            let end = body
                .find('\'')
                .ok_or_else(|| self.error(number, "unterminated single-quoted value".into()))?;
            return Ok(body[..end].to_string());
        }
        if let Some(body) = rest.strip_prefix('"') {
            return self.double_quoted(body, number);
        }
        let bare = match rest.find(" #") {
            Some(at) => &rest[..at],
            None => rest,
        };
        Ok(bare.trim_end().to_string())
    }

    /// A double-quoted value from `body` on, reading lines until its closing quote.
    fn double_quoted(&mut self, body: &str, number: usize) -> Result<String, DotenvError> {
        let mut raw = body.to_string();
        loop {
            if let Some(end) = closing_quote(&raw) {
                raw.truncate(end);
                return Ok(unescape(&raw));
            }
            let Some(next) = self.lines.get(self.index) else {
                return Err(self.error(number, "unterminated double-quoted value".into()));
            };
            raw.push('\n');
            raw.push_str(next);
            self.index += 1;
        }
    }
}

/// The byte offset of the first unescaped `"`.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(at),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_value() {
        let text = "# secrets\nTOKEN=abc123\nexport USER = octo \nEMPTY=\nSINGLE='a \"b\" $c'\nDOUBLE=\"line1\\nline2\\t\\\"q\\\"\"\nMULTI=\"first\nsecond\"\nCOMMENT=value # note\nHASH=a#b\n";
        let values = parse(".secrets", text).unwrap();
        let get = |k: &str| values.get(k).map(String::as_str);
        assert_eq!(get("TOKEN"), Some("abc123"));
        assert_eq!(get("USER"), Some("octo"));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(get("SINGLE"), Some("a \"b\" $c"));
        assert_eq!(get("DOUBLE"), Some("line1\nline2\t\"q\""));
        assert_eq!(get("MULTI"), Some("first\nsecond"));
        assert_eq!(get("COMMENT"), Some("value"));
        assert_eq!(get("HASH"), Some("a#b"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse(".vars", "A=1\nnot a pair\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".vars:2: expected KEY=value, found \"not a pair\""
        );
        let err = parse(".secrets", "A=1\nB=\"open\nstill open\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".secrets:2: unterminated double-quoted value"
        );
        let err = parse(".env", "BAD KEY=1\n").unwrap_err();
        assert_eq!(err.line, 1);
    }
}
