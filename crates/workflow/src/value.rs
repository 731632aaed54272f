//! The dynamic value type shared by expressions, contexts and matrices.

use indexmap::IndexMap;

/// A value as GitHub Actions expressions see it: JSON-shaped, with
/// objects whose keys are looked up without regard to ASCII case.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Every number is an IEEE double, as in GitHub's evaluator.
    Number(f64),
    /// A string.
    String(String),
    /// An ordered list.
    Array(Vec<Value>),
    /// A map that keeps insertion order.
    Object(Object),
}

/// The hasher of [`Object`]: contexts are looked up constantly and their keys
/// are not attacker-chosen in a way that matters for one evaluation, so a fast
/// hash is worth more than SipHash's flood resistance.
pub type ObjectHasher = foldhash::fast::RandomState;

/// An insertion-ordered map with case-insensitive lookup.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(pub IndexMap<String, Value, ObjectHasher>);

/// Objects up to this size are searched by one linear scan, which beats hashing.
const LINEAR_LOOKUP: usize = 8;
/// Objects up to this size are searched by two linear scans (exact, then
/// ignoring case), which give the same answer as the hashed lookup.
const LINEAR_EXACT_LOOKUP: usize = 16;

/// Equal bytes, for slices of equal length; compares short names in a few
/// word-sized loads instead of calling `memcmp`.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    debug_assert_eq!(n, b.len());
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        9..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Equal ignoring ASCII case; tries the (usual) exact match first.
#[inline(always)]
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (same_bytes(a.as_bytes(), b.as_bytes()) || a.eq_ignore_ascii_case(b))
}

/// Exactly equal.
#[inline(always)]
pub(crate) fn same_exact(a: &str, b: &str) -> bool {
    a.len() == b.len() && same_bytes(a.as_bytes(), b.as_bytes())
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks `key` up, ignoring ASCII case.
    pub fn get(&self, key: &str) -> Option<&Value> {
        if self.0.len() <= LINEAR_LOOKUP {
            return self
                .0
                .iter()
                .find(|(k, _)| same_name(k, key))
                .map(|(_, v)| v);
        }
        let exact = if self.0.len() <= LINEAR_EXACT_LOOKUP {
            self.0
                .iter()
                .find(|(k, _)| same_exact(k, key))
                .map(|(_, v)| v)
        } else {
            self.0.get(key)
        };
        exact.or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }

    /// Inserts or replaces `key` (an existing key differing only in case is replaced).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(existing) = self
            .0
            .keys()
            .find(|k| k.eq_ignore_ascii_case(&key))
            .cloned()
        {
            self.0.insert(existing, value);
        } else {
            self.0.insert(key, value);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }
}

impl FromIterator<(String, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut obj = Object::new();
        for (k, v) in iter {
            obj.insert(k, v);
        }
        obj
    }
}

impl Value {
    /// Equality as a test compares results: numbers by value (so `-0` equals
    /// `0` and `NaN` equals `NaN`), objects key by key in order.
    pub fn same_value(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(x), Value::Number(y)) => x == y || (x.is_nan() && y.is_nan()),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a.same_value(b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| v.same_value(w)))
            }
            _ => self == other,
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
                serde_json::Value::Number((*n as i64).into())
            }
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Into::into).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.into())).collect())
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

/// Formats a number as GitHub does (.NET's `G15`): at most 15 significant
/// digits, plain notation for exponents from -4 to 14, otherwise
/// `1.5E+15` / `1E-06`; `-0` prints as `0`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if n == 0.0 {
        return "0".into();
    }
    let scientific = format!("{:.14e}", n.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::with_capacity(24);
    if n < 0.0 {
        out.push('-');
    }
    if !(-4..15).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("E{sign}{:02}", exponent.abs()));
    } else if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(digits);
    } else {
        let whole = exponent as usize + 1;
        if digits.len() <= whole {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', whole - digits.len()));
        } else {
            out.push_str(&digits[..whole]);
            out.push('.');
            out.push_str(&digits[whole..]);
        }
    }
    out
}

/// Reads JSON straight into a [`Value`] (used by `fromJSON`), without building
/// a `serde_json::Value` first.
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n as f64))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n as f64))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Object::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            object.0.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_at_every_length() {
        let a: Vec<u8> = (0..40).map(|i| b'a' + i % 26).collect();
        for n in 0..40 {
            assert!(same_bytes(&a[..n], &a[..n]));
            for at in 0..n {
                let mut b = a[..n].to_vec();
                b[at] ^= 1;
                assert!(!same_bytes(&a[..n], &b), "length {n}, byte {at}");
            }
        }
    }

    #[test]
    fn lookups_prefer_the_exact_key_in_every_size_class() {
        for size in [4, 12, 20] {
            let mut text = String::from("{\"key\": 1, \"KEY\": 2");
            for i in 2..size {
                text.push_str(&format!(", \"filler{i}\": {i}"));
            }
            text.push('}');
            let Value::Object(o) = serde_json::from_str::<Value>(&text).unwrap() else {
                panic!("an object")
            };
            assert_eq!(o.len(), size);
            let exact = size > LINEAR_LOOKUP;
            assert_eq!(o.get("key"), Some(&Value::Number(1.0)));
            let upper = if exact { 2.0 } else { 1.0 };
            assert_eq!(o.get("KEY"), Some(&Value::Number(upper)), "size {size}");
            assert_eq!(o.get("Key"), Some(&Value::Number(1.0)));
            assert_eq!(o.get("FILLER3"), Some(&Value::Number(3.0)));
            assert_eq!(o.get("filler"), None);
        }
    }
}
