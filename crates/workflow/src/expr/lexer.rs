//! Splits expression text into tokens, with GitHub's lexing errors.

use super::{ExprError, ExprErrorKind};

/// A token: its kind and the byte range of its text in the expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Token {
    /// The value of a [`Kind::Number`] token (0 for other kinds).
    pub number: f64,
    /// 0-based byte offset of the first byte.
    pub start: u32,
    /// Byte offset just past the last byte.
    pub end: u32,
    /// What it is.
    pub kind: Kind,
}

impl Token {
    /// The source text of the token.
    pub fn raw<'e>(&self, expr: &'e str) -> &'e str {
        &expr[self.start as usize..self.end as usize]
    }
}

/// The kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number literal (also `-Infinity`, `0x1F`, `.5`); see [`Token::number`].
    Number,
    /// A string literal without `''` escapes.
    String,
    /// A string literal holding `''` escapes (each meaning one `'`).
    EscapedString,
    /// An identifier, `true`, `false`, `null`, `NaN` or `Infinity`.
    Word,
    /// `*` after `.` or `[`.
    Wildcard,
    /// `.`, when no name follows it directly.
    Dot,
    /// `.name` written without space: the name, whose range the token has
    /// (the `.` is the byte before it).
    Member,
    /// `(`
    OpenParen,
    /// `)`
    CloseParen,
    /// `[`
    OpenBracket,
    /// `]`
    CloseBracket,
    /// `,`
    Comma,
    /// `!`
    Not,
    /// A binary operator.
    Op(BinaryOp),
}

impl Kind {
    /// True for tokens after which `.` is a dereference rather than a number.
    fn ends_value(self) -> bool {
        matches!(
            self,
            Kind::Number
                | Kind::String
                | Kind::EscapedString
                | Kind::Word
                | Kind::Member
                | Kind::Wildcard
                | Kind::CloseParen
                | Kind::CloseBracket
        )
    }
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    And,
    /// `||`
    Or,
}

/// Ends an unknown token in an error message: white space and `()[],`.
const ENDS_RAW: u8 = 1;
/// Ends a number: also the operator characters `!<>=&|`.
const ENDS_NUMBER: u8 = 2;
/// Ends a word: also `.`.
const ENDS_WORD: u8 = 4;

/// Which runs each ASCII character ends.
const CLASS: [u8; 128] = {
    let mut table = [0u8; 128];
    let all = ENDS_RAW | ENDS_NUMBER | ENDS_WORD;
    let raw = b" \t\n\r\x0b\x0c()[],";
    let mut i = 0;
    while i < raw.len() {
        table[raw[i] as usize] = all;
        i += 1;
    }
    let ops = b"!<>=&|";
    let mut i = 0;
    while i < ops.len() {
        table[ops[i] as usize] = ENDS_NUMBER | ENDS_WORD;
        i += 1;
    }
    table[b'.' as usize] = ENDS_WORD;
    table
};

/// A legal identifier: a letter or `_`, then letters, digits, `_` or `-`.
pub fn is_identifier(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Parses a number literal the way JavaScript's `Number()` does for trimmed
/// text: decimal with optional sign, fraction and exponent; `0x`/`0o`/`0b`;
/// `Infinity`. Returns `None` for anything else.
pub fn parse_number(s: &str) -> Option<f64> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if body == "Infinity" {
        return Some(sign * f64::INFINITY);
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = body.strip_prefix(prefix) {
            if sign < 0.0 || s.starts_with('+') || digits.is_empty() {
                return None;
            }
            return u128::from_str_radix(digits, radix).ok().map(|n| n as f64);
        }
    }
    let bytes = body.as_bytes();
    if !bytes.is_empty() && bytes.len() <= 15 && bytes.iter().all(u8::is_ascii_digit) {
        let n = bytes.iter().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        return Some(sign * n as f64);
    }
    if !is_decimal(bytes) {
        return None;
    }
    body.parse::<f64>().ok().map(|n| sign * n)
}

/// True for decimal text: digits with an optional fraction (at least one
/// digit in all) and an optional exponent.
fn is_decimal(bytes: &[u8]) -> bool {
    let mut i = 0;
    let mut digits = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == bytes.len()
}

/// Formats the standard error suffix: `Located at position N within expression: E`.
pub fn located(expr: &str, offset: usize) -> String {
    let position = expr[..offset.min(expr.len())].chars().count() + 1;
    format!("Located at position {position} within expression: {expr}")
}

/// The end of the run starting at `start` (whose first character is always
/// included) before the first character of class `ends` (non-ASCII white
/// space ends every run).
fn scan(expr: &str, start: usize, ends: u8) -> usize {
    let bytes = expr.as_bytes();
    let mut i = start
        + if bytes[start] < 0x80 {
            1
        } else {
            expr[start..].chars().next().map_or(1, char::len_utf8)
        };
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if CLASS[b as usize] & ends != 0 {
                break;
            }
            i += 1;
        } else {
            let c = expr[i..].chars().next().expect("in bounds");
            if c.is_whitespace() {
                break;
            }
            i += c.len_utf8();
        }
    }
    i
}

/// The end of a well-formed identifier starting at `start` (an ASCII letter or
/// `_`), or `None` when the run goes on with characters that need the general
/// [`scan`] (which then also reports the error).
#[inline(always)]
fn word_end(bytes: &[u8], start: usize) -> Option<usize> {
    let class = |b: u8| WORD_BYTE[b as usize];
    let rest = &bytes[start + 1..];
    // Four bytes a step; `WORD_CONTINUES` is 0, so the first non-zero class
    // in the packed classes is the byte that ends the run.
    let mut n = 0;
    for four in rest.chunks_exact(4) {
        let classes = u32::from_le_bytes([
            class(four[0]),
            class(four[1]),
            class(four[2]),
            class(four[3]),
        ]);
        if classes != 0 {
            let at = classes.trailing_zeros() as usize / 8;
            let stop = (classes >> (8 * at)) as u8;
            return (stop == WORD_ENDS).then_some(start + 1 + n + at);
        }
        n += 4;
    }
    for &b in &rest[n..] {
        match class(b) {
            WORD_CONTINUES => n += 1,
            WORD_ENDS => return Some(start + 1 + n),
            _ => return None,
        }
    }
    Some(start + 1 + n)
}

/// [`WORD_BYTE`]: a letter, digit, `_` or `-`.
const WORD_CONTINUES: u8 = 0;
/// [`WORD_BYTE`]: an ASCII character that ends a word.
const WORD_ENDS: u8 = 1;
/// [`WORD_BYTE`]: anything else (the word is malformed or needs [`scan`]).
const WORD_OTHER: u8 = 2;

/// What each byte means right after the start of an identifier.
const WORD_BYTE: [u8; 256] = {
    let mut table = [WORD_OTHER; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            table[b] = WORD_CONTINUES;
        } else if CLASS[b] & ENDS_WORD != 0 {
            table[b] = WORD_ENDS;
        }
        b += 1;
    }
    table
};

/// The lexing error for the text `expr[offset..end]`.
#[cold]
#[inline(never)]
fn lex_error(expr: &str, offset: usize, end: usize) -> ExprError {
    ExprError {
        kind: ExprErrorKind::Lexing,
        message: format!(
            "Unexpected symbol: '{}'. {}",
            &expr[offset..end],
            located(expr, offset)
        ),
        offset,
    }
}

/// A run of up to 15 decimal digits at `start` that ends where a number
/// ends (see [`ENDS_NUMBER`]), as its value and end: what [`parse_number`]
/// would give for it, without scanning twice.
#[inline(always)]
fn small_integer(bytes: &[u8], start: usize) -> Option<(f64, usize)> {
    let mut value = 0u64;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_digit() && i - start < 15 {
            value = value * 10 + u64::from(b - b'0');
            i += 1;
        } else if b < 0x80 && CLASS[b as usize] & ENDS_NUMBER != 0 {
            break;
        } else {
            return None;
        }
    }
    Some((value as f64, i))
}

/// The end of the identifier starting at `start` (an ASCII letter or `_`), or
/// the lexing error for a malformed one.
#[inline(always)]
fn identifier_end(expr: &str, start: usize) -> Result<usize, ExprError> {
    match word_end(expr.as_bytes(), start) {
        Some(end) => Ok(end),
        None => {
            let end = scan(expr, start, ENDS_WORD);
            if !is_identifier(&expr[start..end]) {
                return Err(lex_error(expr, start, end));
            }
            Ok(end)
        }
    }
}

/// The string literal starting with the `'` at `start`: its kind and end.
#[inline(always)]
fn string_literal(expr: &str, start: usize) -> Result<(Kind, usize), ExprError> {
    let bytes = expr.as_bytes();
    let mut j = start + 1;
    let mut escaped = false;
    let end = loop {
        match bytes[j..].iter().position(|&c| c == b'\'') {
            None => return Err(lex_error(expr, start, bytes.len())),
            Some(p) => j += p,
        }
        if bytes.get(j + 1) == Some(&b'\'') {
            escaped = true;
            j += 2;
        } else {
            break j + 1;
        }
    };
    let kind = if escaped {
        Kind::EscapedString
    } else {
        Kind::String
    };
    Ok((kind, end))
}

/// The operator (or `!`) starting at `start`: its kind and end.
#[inline(always)]
fn operator(expr: &str, start: usize) -> Result<(Kind, usize), ExprError> {
    let bytes = expr.as_bytes();
    let next = bytes.get(start + 1).copied();
    let two = |op| Ok((Kind::Op(op), start + 2));
    let one = |kind| Ok((kind, start + 1));
    match (bytes[start], next) {
        (b'!', Some(b'=')) => two(BinaryOp::Ne),
        (b'!', _) => one(Kind::Not),
        (b'=', Some(b'=')) => two(BinaryOp::Eq),
        (b'<', Some(b'=')) => two(BinaryOp::Le),
        (b'<', _) => one(Kind::Op(BinaryOp::Lt)),
        (b'>', Some(b'=')) => two(BinaryOp::Ge),
        (b'>', _) => one(Kind::Op(BinaryOp::Gt)),
        (b'&', Some(b'&')) => two(BinaryOp::And),
        (b'|', Some(b'|')) => two(BinaryOp::Or),
        _ => {
            let end = scan(expr, start, ENDS_RAW);
            Err(lex_error(expr, start, end))
        }
    }
}

/// The number literal starting at `start`: its value and end.
#[inline(always)]
fn number_literal(expr: &str, start: usize) -> Result<(f64, usize), ExprError> {
    let bytes = expr.as_bytes();
    if bytes[start].is_ascii_digit() {
        if let Some(small) = small_integer(bytes, start) {
            return Ok(small);
        }
    }
    let end = scan(expr, start, ENDS_NUMBER);
    match parse_number(&expr[start..end]) {
        Some(n) => Ok((n, end)),
        None => Err(lex_error(expr, start, end)),
    }
}

/// Splits `expr` into tokens, replacing the contents of `tokens`.
pub fn tokenize(expr: &str, tokens: &mut Vec<Token>) -> Result<(), ExprError> {
    let bytes = expr.as_bytes();
    tokens.clear();
    // A token takes at least one byte.
    tokens.reserve(bytes.len());
    // The previous token: after the end of a value `.` is a dereference (not
    // a number), after `.` or `[` a `*` is a wildcard.
    let mut previous: Option<Kind> = None;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(width) = space_width(expr, i) {
            i += width;
            continue;
        }
        let token = token(expr, i, previous)?;
        previous = Some(token.kind);
        tokens.push(token);
        i = token.end as usize;
        // The usual single space between tokens, without a trip through the match.
        if bytes.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    Ok(())
}

/// The byte length of the white space character at `i`, if it is one.
#[inline(always)]
fn space_width(expr: &str, i: usize) -> Option<usize> {
    match expr.as_bytes()[i] {
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => Some(1),
        0x80.. => {
            let c = expr[i..].chars().next().expect("in bounds");
            c.is_whitespace().then(|| c.len_utf8())
        }
        _ => None,
    }
}

/// The token starting at `start` (not white space), after `previous`.
#[inline(always)]
fn token(expr: &str, start: usize, previous: Option<Kind>) -> Result<Token, ExprError> {
    let bytes = expr.as_bytes();
    let mut number = 0.0;
    let mut token_start = start;
    let (kind, end) = match bytes[start] {
        b'(' => (Kind::OpenParen, start + 1),
        b')' => (Kind::CloseParen, start + 1),
        b'[' => (Kind::OpenBracket, start + 1),
        b']' => (Kind::CloseBracket, start + 1),
        b',' => (Kind::Comma, start + 1),
        b'*' if matches!(previous, Some(Kind::Dot | Kind::OpenBracket)) => {
            (Kind::Wildcard, start + 1)
        }
        b'.' if previous.is_some_and(Kind::ends_value) => match bytes.get(start + 1) {
            // `.name`: one token, whose range is the name's.
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'_') => {
                token_start = start + 1;
                (Kind::Member, identifier_end(expr, start + 1)?)
            }
            _ => (Kind::Dot, start + 1),
        },
        b'a'..=b'z' | b'A'..=b'Z' | b'_' => (Kind::Word, identifier_end(expr, start)?),
        b'\'' => string_literal(expr, start)?,
        b'!' | b'=' | b'<' | b'>' | b'&' | b'|' => operator(expr, start)?,
        b'-' | b'+' | b'0'..=b'9' | b'.' => {
            let end;
            (number, end) = number_literal(expr, start)?;
            (Kind::Number, end)
        }
        // Any other character (non-ASCII, `*` in the wrong place too) is not
        // a letter or `_`, so never the start of an identifier.
        _ => return Err(lex_error(expr, start, scan(expr, start, ENDS_WORD))),
    };
    Ok(Token {
        number,
        start: token_start as u32,
        end: end as u32,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_javascript() {
        assert_eq!(parse_number("0x1F"), Some(31.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("-.5"), Some(-0.5));
        assert_eq!(parse_number("1.2E+2"), Some(120.0));
        assert_eq!(parse_number("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_number("1."), Some(1.0));
        assert_eq!(parse_number("1e"), None);
        assert_eq!(parse_number("-0x1"), None);
        assert_eq!(parse_number("abc"), None);
    }

    #[test]
    fn word_ends_agree_with_a_byte_at_a_time_scan() {
        let reference = |bytes: &[u8], start: usize| {
            let mut i = start + 1;
            while let Some(&b) = bytes.get(i) {
                match WORD_BYTE[b as usize] {
                    WORD_CONTINUES => i += 1,
                    WORD_ENDS => return Some(i),
                    _ => return None,
                }
            }
            Some(i)
        };
        let alphabet = [b'a', b'Z', b'9', b'-', b'.', b' ', b'=', b'$', 0xC3];
        for len in 1..=10 {
            for seed in 0..400u32 {
                let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(len);
                let mut text = vec![b'w'];
                for _ in 0..len {
                    text.push(alphabet[(x % alphabet.len() as u32) as usize]);
                    x = x.rotate_left(7).wrapping_mul(747_796_405).wrapping_add(1);
                }
                assert_eq!(word_end(&text, 0), reference(&text, 0), "{text:?}");
            }
        }
    }

    #[test]
    fn integer_tokens_match_parse_number() {
        for text in [
            "0",
            "7",
            "007",
            "18",
            "999999999999999",
            "1234567890123456",
            "12345678901234567890",
        ] {
            for suffix in ["", ")", " ", "==1", ",", "]", "&&x"] {
                let source = format!("{text}{suffix}");
                let mut tokens = Vec::new();
                tokenize(&source, &mut tokens).unwrap();
                assert_eq!(tokens[0].kind, Kind::Number, "{source}");
                assert_eq!(tokens[0].raw(&source), text, "{source}");
                assert_eq!(Some(tokens[0].number), parse_number(text), "{source}");
            }
        }
        let mut tokens = Vec::new();
        assert!(tokenize("12a", &mut tokens).is_err());
        tokenize("0x1F 1.5 1e3", &mut tokens).unwrap();
        let numbers: Vec<f64> = tokens.iter().map(|t| t.number).collect();
        assert_eq!(numbers, [31.0, 1.5, 1000.0]);
    }

    #[test]
    fn operator_runs() {
        let mut tokens = Vec::new();
        tokenize("1==2&&!a", &mut tokens).unwrap();
        let kinds: Vec<Kind> = tokens.iter().map(|t| t.kind).collect();
        assert_eq!(kinds.len(), 6);
        assert_eq!(kinds[1], Kind::Op(BinaryOp::Eq));
        assert_eq!(kinds[4], Kind::Not);
    }
}
