//! GitHub's filter patterns for branches, tags and paths.
//!
//! `*` matches any characters but `/`; `**` any characters; `**/` zero or more
//! whole folders; `?` makes the preceding character optional; `+` repeats it
//! one or more times; `[...]` is a character class with ranges; `\` escapes the
//! next character. A leading `!` (handled by [`PatternList`]) negates.

use std::fmt;

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", .offset + 1)]
pub struct GlobError {
    /// 0-based byte offset of the problem in the pattern.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Char(char),
    Class(Vec<(char, char)>),
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Class(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Repeat {
    One,
    ZeroOrOne,
    OneOrMore,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Atom(Atom, Repeat),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
    /// `**/`: nothing, or any run of characters ending in `/`.
    Folders,
}

/// One compiled pattern (without its `!`).
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    tokens: Vec<Token>,
    source: String,
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Checks that a filter pattern (with or without a leading `!`) compiles.
pub fn validate_pattern(pattern: &str) -> Result<(), GlobError> {
    let body = pattern.strip_prefix('!').unwrap_or(pattern);
    let shift = pattern.len() - body.len();
    Glob::new(body).map(|_| ()).map_err(|e| GlobError {
        offset: e.offset + shift,
        ..e
    })
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(glob_error(0, "empty pattern"));
        }
        let chars: Vec<(usize, char)> = pattern.char_indices().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            i = compile_at(&chars, i, &mut tokens)?;
        }
        Ok(Glob {
            tokens,
            source: pattern.to_owned(),
        })
    }

    /// True when the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let cols = chars.len() + 1;
        // reachable[i * cols + j]: tokens[..i] can consume exactly chars[..j].
        let mut reachable = vec![false; (self.tokens.len() + 1) * cols];
        reachable[0] = true;
        for (i, token) in self.tokens.iter().enumerate() {
            let (cur, next) = reachable.split_at_mut((i + 1) * cols);
            let cur = &cur[i * cols..];
            let next = &mut next[..cols];
            for (j, &here) in cur.iter().enumerate() {
                if here {
                    token.advance(&chars, j, next);
                }
            }
        }
        reachable[self.tokens.len() * cols + chars.len()]
    }
}

impl Token {
    /// Marks in `next` every position the token can reach from position `j` of `chars`.
    fn advance(&self, chars: &[char], j: usize, next: &mut [bool]) {
        match self {
            Token::Atom(atom, repeat) => {
                if *repeat == Repeat::ZeroOrOne {
                    next[j] = true;
                }
                let mut k = j;
                while k < chars.len() && atom.matches(chars[k]) {
                    k += 1;
                    next[k] = true;
                    if *repeat != Repeat::OneOrMore {
                        break;
                    }
                }
            }
            Token::Star => {
                next[j] = true;
                let mut k = j;
                while k < chars.len() && chars[k] != '/' {
                    k += 1;
                    next[k] = true;
                }
            }
            Token::DoubleStar => next[j..].iter_mut().for_each(|r| *r = true),
            Token::Folders => {
                next[j] = true;
                for k in j..chars.len() {
                    if chars[k] == '/' {
                        next[k + 1] = true;
                    }
                }
            }
        }
    }
}

/// Makes the last token optional (`?`) or repeated (`+`).
fn repeat_last(tokens: &mut [Token], offset: usize, c: char) -> Result<(), GlobError> {
    let repeat = if c == '?' {
        Repeat::ZeroOrOne
    } else {
        Repeat::OneOrMore
    };
    match tokens.last_mut() {
        Some(Token::Atom(_, r @ Repeat::One)) => {
            *r = repeat;
            Ok(())
        }
        _ => {
            let message = format!("'{c}' must follow a character or a [class]");
            Err(glob_error(offset, &message))
        }
    }
}

/// The character class opened by the `[` at `chars[i]`, non-empty and with
/// ordered ranges, and where the pattern goes on after it.
fn checked_class(
    chars: &[(usize, char)],
    i: usize,
) -> Result<(Vec<(char, char)>, usize), GlobError> {
    let offset = chars[i].0;
    let (ranges, next) =
        class(chars, i + 1).ok_or_else(|| glob_error(offset, "'[' is never closed"))?;
    if ranges.is_empty() {
        return Err(glob_error(offset, "empty character class"));
    }
    if let Some((lo, hi)) = ranges.iter().find(|(lo, hi)| lo > hi) {
        return Err(glob_error(offset, &format!("range {lo}-{hi} is reversed")));
    }
    Ok((ranges, next))
}

/// A [`GlobError`] at `offset`.
fn glob_error(offset: usize, message: &str) -> GlobError {
    GlobError {
        offset,
        message: message.to_owned(),
    }
}

/// Compiles the pattern's part at `chars[i]` into `tokens`; returns where the
/// next part starts.
fn compile_at(
    chars: &[(usize, char)],
    i: usize,
    tokens: &mut Vec<Token>,
) -> Result<usize, GlobError> {
    let (offset, c) = chars[i];
    let at = |n: usize| chars.get(i + n).map(|x| x.1);
    match c {
        '*' if at(1) == Some('*') && at(2) == Some('/') => {
            tokens.push(Token::Folders);
            Ok(i + 3)
        }
        '*' if at(1) == Some('*') => {
            tokens.push(Token::DoubleStar);
            Ok(i + 2)
        }
        '*' => {
            tokens.push(Token::Star);
            Ok(i + 1)
        }
        '?' | '+' => {
            repeat_last(tokens, offset, c)?;
            Ok(i + 1)
        }
        '[' => {
            let (ranges, next) = checked_class(chars, i)?;
            tokens.push(Token::Atom(Atom::Class(ranges), Repeat::One));
            Ok(next)
        }
        '\\' => {
            let escaped =
                at(1).ok_or_else(|| glob_error(offset, "'\\' at the end escapes nothing"))?;
            tokens.push(Token::Atom(Atom::Char(escaped), Repeat::One));
            Ok(i + 2)
        }
        _ => {
            tokens.push(Token::Atom(Atom::Char(c), Repeat::One));
            Ok(i + 1)
        }
    }
}

fn class(chars: &[(usize, char)], mut i: usize) -> Option<(Vec<(char, char)>, usize)> {
    let mut ranges = Vec::new();
    while i < chars.len() {
        let c = chars[i].1;
        if c == ']' {
            return Some((ranges, i + 1));
        }
        if chars.get(i + 1).map(|x| x.1) == Some('-')
            && chars.get(i + 2).is_some_and(|x| x.1 != ']')
        {
            ranges.push((c, chars[i + 2].1));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

/// An ordered list of patterns where a later `!pattern` excludes what earlier
/// ones matched and a later positive pattern includes it again.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternList {
    patterns: Vec<(bool, Glob)>,
}

impl PatternList {
    /// Compiles every pattern; the first bad one is returned as an error.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, GlobError> {
        let patterns = patterns
            .into_iter()
            .map(|p| match p.strip_prefix('!') {
                Some(body) => Glob::new(body).map(|g| (true, g)),
                None => Glob::new(p).map(|g| (false, g)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// True when the last pattern that matches `text` is a positive one.
    pub fn is_match(&self, text: &str) -> bool {
        self.patterns
            .iter()
            .rev()
            .find(|(_, glob)| glob.is_match(text))
            .is_some_and(|(negated, _)| !negated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let g = Glob::new(pattern).unwrap();
        for t in yes {
            assert!(g.is_match(t), "{pattern} should match {t}");
        }
        for t in no {
            assert!(!g.is_match(t), "{pattern} should not match {t}");
        }
    }

    #[test]
    fn branch_and_tag_cheat_sheet() {
        check(
            "feature/*",
            &["feature/my-branch", "feature/your-branch"],
            &["feature/a/b", "feature"],
        );
        check(
            "feature/**",
            &[
                "feature/beta-a/my-branch",
                "feature/your-branch",
                "feature/mona/the/octocat",
            ],
            &["features/x"],
        );
        check("main", &["main"], &["main2", "xmain"]);
        check(
            "releases/mona-the-octocat",
            &["releases/mona-the-octocat"],
            &[],
        );
        check("*", &["main", "releases"], &["releases/v1"]);
        check("**", &["all/branches/and/tags", "main"], &[]);
        check(
            "*feature",
            &["mona-feature", "feature", "ver-10-feature"],
            &["feature-x"],
        );
        check("v2*", &["v2", "v2.0", "v2.9"], &["v3"]);
        check(
            "v[12].[0-9]+.[0-9]+",
            &["v1.10.1", "v2.0.0"],
            &["v3.0.0", "v1.0", "v1.a.0"],
        );
    }

    #[test]
    fn path_cheat_sheet() {
        check("*", &["README.md", "server.rb"], &["docs/README.md"]);
        check(
            "*.jsx?",
            &["page.js", "page.jsx"],
            &["page.jsxx", "src/page.js"],
        );
        check("**", &["all/the/files.md", "x"], &[]);
        check("*.js", &["app.js", "index.js"], &["js/index.js"]);
        check(
            "**.js",
            &["index.js", "js/index.js", "src/js/app.js"],
            &["index.ts"],
        );
        check(
            "docs/*",
            &["docs/README.md", "docs/file.txt"],
            &["docs/a/b.md"],
        );
        check(
            "docs/**",
            &["docs/README.md", "docs/mona/octocat.txt"],
            &["README.md"],
        );
        check(
            "docs/**/*.md",
            &[
                "docs/README.md",
                "docs/mona/hello-world.md",
                "docs/a/markdown/file.md",
            ],
            &["docs/x.txt"],
        );
        check(
            "**/docs/**",
            &[
                "docs/hello.md",
                "dir/docs/my-file.txt",
                "space/docs/plan/space.doc",
            ],
            &["mydocs/x"],
        );
        check(
            "**/README.md",
            &["README.md", "js/README.md"],
            &["README.mdx"],
        );
        check(
            "**/*src/**",
            &["a/src/app.js", "my-src/code/js/app.js"],
            &["src.js"],
        );
        check(
            "**/*-post.md",
            &["my-post.md", "path/their-post.md"],
            &["post.md"],
        );
        check(
            "**/migrate-*.sql",
            &[
                "migrate-10909.sql",
                "db/migrate-v1.0.sql",
                "db/sept/migrate-v1.sql",
            ],
            &["migrate.sql"],
        );
    }

    #[test]
    fn ordered_negation() {
        let list = PatternList::new(["*.md", "!README.md"]).unwrap();
        assert!(list.is_match("hello.md"));
        assert!(!list.is_match("README.md"));
        assert!(!list.is_match("docs/hello.md"));
        let list = PatternList::new(["*.md", "!README.md", "README*"]).unwrap();
        assert!(list.is_match("hello.md"));
        assert!(list.is_match("README.md"));
        assert!(list.is_match("README.doc"));
        assert!(!list.is_match("docs/hello.md"));
        let list = PatternList::new(["releases/**", "!releases/**-alpha"]).unwrap();
        assert!(list.is_match("releases/10"));
        assert!(!list.is_match("releases/10-alpha"));
    }

    #[test]
    fn escapes_and_errors() {
        check("a\\*b", &["a*b"], &["axb"]);
        assert_eq!(validate_pattern("[abc").unwrap_err().offset, 0);
        assert_eq!(validate_pattern("!+x").unwrap_err().offset, 1);
        assert!(validate_pattern("x\\").is_err());
        assert!(validate_pattern("[z-a]").is_err());
        assert!(validate_pattern("!release/**").is_ok());
    }

    #[test]
    fn long_inputs_stay_fast() {
        let g = Glob::new("**a**a**a**a**a**b").unwrap();
        let text = "a".repeat(2000);
        assert!(!g.is_match(&text));
    }
}
