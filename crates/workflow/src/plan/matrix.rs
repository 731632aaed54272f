//! Matrix expansion with GitHub's `include` and `exclude` rules.

use crate::value::{Object, Value};

/// GitHub runs at most this many jobs per matrix.
pub const MAX_COMBINATIONS: usize = 256;

/// Why a matrix cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// A dimension is not a sequence.
    #[error("matrix vector '{0}' must be a sequence")]
    NotAVector(String),
    /// A dimension has no values.
    #[error("matrix vector '{0}' does not contain any values")]
    EmptyVector(String),
    /// `include` or `exclude` is not a sequence of mappings.
    #[error("matrix '{0}' must be a sequence of mappings")]
    BadList(&'static str),
    /// Too many jobs.
    #[error("the matrix expands to {0} jobs; GitHub allows at most {MAX_COMBINATIONS}")]
    TooLarge(usize),
    /// Nothing is left to run.
    #[error("the matrix has no combinations left after 'exclude'")]
    Empty,
    /// The matrix is not a mapping.
    #[error("a matrix must be a mapping, found {0}")]
    NotAMapping(&'static str),
}

/// Expands an evaluated matrix into its combinations, in GitHub's order.
///
/// Dimensions multiply in declaration order (the first varies slowest);
/// `exclude` entries remove every combination they partially match; each
/// `include` entry is merged into every original combination whose original
/// values it does not overwrite, or becomes a combination of its own.
pub fn expand_matrix(matrix: &Object) -> Result<Vec<Object>, MatrixError> {
    let parts = Parts::of(matrix)?;
    let product: usize = parts.dimensions.iter().map(|(_, v)| v.len()).product();
    if product > MAX_COMBINATIONS * 16 {
        return Err(MatrixError::TooLarge(product));
    }
    let mut combos = parts.product();
    combos.retain(|combo| !parts.exclude.iter().any(|ex| partially_matches(combo, ex)));
    if !parts.dimensions.is_empty() && combos.is_empty() && parts.include.is_empty() {
        return Err(MatrixError::Empty);
    }
    parts.include(&mut combos);
    if combos.len() > MAX_COMBINATIONS {
        return Err(MatrixError::TooLarge(combos.len()));
    }
    Ok(combos)
}

/// A matrix taken apart: its dimensions in declaration order, and its
/// `include` and `exclude` entries.
struct Parts<'m> {
    dimensions: Vec<(&'m str, &'m [Value])>,
    include: Vec<Object>,
    exclude: Vec<Object>,
}

impl<'m> Parts<'m> {
    fn of(matrix: &'m Object) -> Result<Self, MatrixError> {
        let mut dimensions: Vec<(&str, &[Value])> = Vec::new();
        let mut include: &[Value] = &[];
        let mut exclude: &[Value] = &[];
        for (key, value) in matrix.iter() {
            match (key.as_str(), value) {
                ("include", Value::Array(list)) => include = list,
                ("exclude", Value::Array(list)) => exclude = list,
                ("include", _) => return Err(MatrixError::BadList("include")),
                ("exclude", _) => return Err(MatrixError::BadList("exclude")),
                (_, Value::Array(values)) if values.is_empty() => {
                    return Err(MatrixError::EmptyVector(key.clone()))
                }
                (_, Value::Array(values)) => dimensions.push((key, values)),
                _ => return Err(MatrixError::NotAVector(key.clone())),
            }
        }
        Ok(Parts {
            dimensions,
            include: as_objects("include", include)?,
            exclude: as_objects("exclude", exclude)?,
        })
    }

    /// Every combination of the dimensions' values, the first varying slowest.
    fn product(&self) -> Vec<Object> {
        if self.dimensions.is_empty() {
            return Vec::new();
        }
        let mut combos = vec![Object::new()];
        for (key, values) in &self.dimensions {
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for combo in &combos {
                for value in values.iter() {
                    let mut c = combo.clone();
                    c.0.insert((*key).to_owned(), value.clone());
                    next.push(c);
                }
            }
            combos = next;
        }
        combos
    }

    /// Merges each `include` entry into the original combinations whose
    /// dimension values it does not overwrite, or adds it as its own.
    fn include(&self, combos: &mut Vec<Object>) {
        let had_dimensions = !combos.is_empty();
        let originals = combos.len();
        for entry in &self.include {
            let mut merged = false;
            if had_dimensions {
                for combo in combos.iter_mut().take(originals) {
                    let overwrites_original = entry.iter().any(|(k, v)| {
                        self.dimensions.iter().any(|(d, _)| d == k)
                            && combo.get(k).is_some_and(|cur| cur != v)
                    });
                    if !overwrites_original {
                        for (k, v) in entry.iter() {
                            combo.0.insert(k.clone(), v.clone());
                        }
                        merged = true;
                    }
                }
            }
            if !merged {
                combos.push(entry.clone());
            }
        }
    }
}

/// The mappings of an `include` or `exclude` list.
fn as_objects(list: &'static str, values: &[Value]) -> Result<Vec<Object>, MatrixError> {
    values
        .iter()
        .map(|v| match v {
            Value::Object(o) => Ok(o.clone()),
            _ => Err(MatrixError::BadList(list)),
        })
        .collect()
}

fn partially_matches(combo: &Object, pattern: &Object) -> bool {
    pattern.iter().all(|(k, v)| match (combo.get(k), v) {
        (Some(Value::Object(have)), Value::Object(want)) => partially_matches(have, want),
        (Some(have), want) => have == want,
        (None, _) => false,
    })
}

/// The text GitHub shows for a matrix value in a job's display name.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => crate::value::format_number(*n),
        Value::String(s) => s.clone(),
        other => serde_json::Value::from(other).to_string(),
    }
}

/// `name (v1, v2, ...)`: a matrix job's display name when `name:` has no expression.
pub fn display_name(name: &str, combo: &Object) -> String {
    let values: Vec<String> = combo.iter().map(|(_, v)| display_value(v)).collect();
    format!("{name} ({})", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> Object {
        match Value::from(v) {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    fn expand(v: serde_json::Value) -> Result<Vec<serde_json::Value>, MatrixError> {
        expand_matrix(&obj(v)).map(|c| {
            c.iter()
                .map(|o| serde_json::Value::from(&Value::Object(o.clone())))
                .collect()
        })
    }

    use serde_json::json;

    #[test]
    fn cartesian_product_first_dimension_slowest() {
        let got = expand(json!({"os": ["a", "b"], "v": [1, 2]})).unwrap();
        assert_eq!(
            got,
            vec![
                json!({"os":"a","v":1}),
                json!({"os":"a","v":2}),
                json!({"os":"b","v":1}),
                json!({"os":"b","v":2})
            ]
        );
    }

    #[test]
    fn docs_include_example() {
        let got = expand(json!({
            "fruit": ["apple", "pear"],
            "animal": ["cat", "dog"],
            "include": [
                {"color": "green"},
                {"color": "pink", "animal": "cat"},
                {"fruit": "apple", "shape": "circle"},
                {"fruit": "banana"},
                {"fruit": "banana", "animal": "cat"}
            ]
        }))
        .unwrap();
        assert_eq!(
            got,
            vec![
                json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"}),
                json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"}),
                json!({"fruit": "pear", "animal": "cat", "color": "pink"}),
                json!({"fruit": "pear", "animal": "dog", "color": "green"}),
                json!({"fruit": "banana"}),
                json!({"fruit": "banana", "animal": "cat"}),
            ]
        );
    }

    #[test]
    fn docs_exclude_example() {
        let got = expand(json!({
            "os": ["macos-latest", "windows-latest"],
            "version": [12, 14, 16],
            "environment": ["staging", "production"],
            "exclude": [
                {"os": "macos-latest", "version": 12, "environment": "production"},
                {"os": "windows-latest", "version": 16}
            ]
        }))
        .unwrap();
        assert_eq!(got.len(), 12 - 1 - 2);
        assert!(!got
            .contains(&json!({"os": "windows-latest", "version": 16, "environment": "staging"})));
    }

    #[test]
    fn include_only_matrix() {
        let got =
            expand(json!({"include": [{"site": "prod", "datacenter": "x"}, {"site": "dev"}]}))
                .unwrap();
        assert_eq!(
            got,
            vec![
                json!({"site": "prod", "datacenter": "x"}),
                json!({"site": "dev"})
            ]
        );
    }

    #[test]
    fn expanding_include_with_new_keys() {
        let got = expand(json!({"os": ["windows", "ubuntu"], "node": [14, 16], "include": [{"os": "windows", "node": 16, "npm": 6}]})).unwrap();
        assert_eq!(got[1], json!({"os": "windows", "node": 16, "npm": 6}));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand(json!({"os": []})).unwrap_err(),
            MatrixError::EmptyVector("os".into())
        );
        assert_eq!(
            expand(json!({"os": "x"})).unwrap_err(),
            MatrixError::NotAVector("os".into())
        );
        let big: Vec<u32> = (0..17).collect();
        assert_eq!(
            expand(json!({"a": big, "b": big})).unwrap_err(),
            MatrixError::TooLarge(289)
        );
        assert_eq!(
            expand(json!({"a": [1], "exclude": [{"a": 1}]})).unwrap_err(),
            MatrixError::Empty
        );
        let exact: Vec<u32> = (0..16).collect();
        assert_eq!(expand(json!({"a": exact, "b": exact})).unwrap().len(), 256);
    }

    #[test]
    fn display_names() {
        let combo = obj(json!({"os": "ubuntu", "node": 18, "x": {"a": 1}}));
        assert_eq!(display_name("test", &combo), "test (ubuntu, 18, {\"a\":1})");
    }
}
