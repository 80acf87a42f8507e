//! Comparing expected JSON with actual JSON: subset or exact, reporting the path of the first
//! difference and both sides, so a failed expectation reads as a diff.

use std::fmt;

use serde_json::Value;

/// How expected and actual values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every key of an expected object must be in the actual object with a matching value;
    /// extra actual keys are fine. Arrays match item by item and must have the same length.
    Subset,
    /// Equal values (numbers compare by value: `1` equals `1.0`).
    Exact,
}

/// The first difference found.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Where: `$` is the root, then `.key` and `[index]`.
    pub path: String,
    /// What was expected there (`None`: nothing, the key must not exist).
    pub expected: Option<Value>,
    /// What was there (`None`: the key is missing).
    pub actual: Option<Value>,
    /// Extra words, e.g. about array lengths.
    pub note: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "differs at {}", self.path)?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        writeln!(f)?;
        let side = |v: &Option<Value>| match v {
            Some(v) => compact(v),
            None => "(missing)".to_owned(),
        };
        writeln!(f, "  expected: {}", side(&self.expected))?;
        write!(f, "  actual:   {}", side(&self.actual))
    }
}

/// Compares `actual` against `expected`; `None` when they match.
pub fn compare(expected: &Value, actual: &Value, mode: Mode) -> Option<Mismatch> {
    let mut path = String::from("$");
    diff(expected, actual, mode, &mut path)
}

fn diff(expected: &Value, actual: &Value, mode: Mode, path: &mut String) -> Option<Mismatch> {
    let here = |path: &str, note: Option<String>| {
        Some(Mismatch {
            path: path.to_owned(),
            expected: Some(expected.clone()),
            actual: Some(actual.clone()),
            note,
        })
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let len = path.len();
                push_key(path, k);
                let found = match a.get(k) {
                    Some(av) => diff(ev, av, mode, path),
                    None => Some(Mismatch {
                        path: path.clone(),
                        expected: Some(ev.clone()),
                        actual: None,
                        note: Some("missing key".into()),
                    }),
                };
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            if mode == Mode::Exact {
                if let Some((k, av)) = a.iter().find(|(k, _)| !e.contains_key(*k)) {
                    push_key(path, k);
                    return Some(Mismatch {
                        path: path.clone(),
                        expected: None,
                        actual: Some(av.clone()),
                        note: Some("unexpected key".into()),
                    });
                }
            }
            None
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = diff(ev, av, mode, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            if e.len() != a.len() {
                return here(
                    path,
                    Some(format!("expected {} items, got {}", e.len(), a.len())),
                );
            }
            None
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64(), e.as_u64(), a.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => e.as_f64() == a.as_f64(),
            };
            if same {
                None
            } else {
                here(path, None)
            }
        }
        (e, a) if e == a => None,
        (e, a) => {
            let note = (std::mem::discriminant(e) != std::mem::discriminant(a))
                .then(|| format!("expected {}, got {}", type_name(e), type_name(a)));
            here(path, note)
        }
    }
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::String(key.to_owned())));
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One-line JSON.
pub fn compact(v: &Value) -> String {
    v.to_string()
}

/// JSON for a report: one line when short, else pretty-printed with every line indented by
/// `indent` (the first line too).
pub fn render(v: &Value, indent: &str) -> String {
    let line = v.to_string();
    if line.len() <= 100 {
        return format!("{indent}{line}");
    }
    serde_json::to_string_pretty(v)
        .unwrap_or(line)
        .lines()
        .map(|l| format!("{indent}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_extra_keys_but_not_wrong_values() {
        let actual = json!({"action": "promote", "app": "shop", "n": 3});
        assert_eq!(
            compare(&json!({"action": "promote"}), &actual, Mode::Subset),
            None
        );
        let m = compare(&json!({"action": "abort"}), &actual, Mode::Subset).unwrap();
        assert_eq!(m.path, "$.action");
        assert_eq!(m.expected, Some(json!("abort")));
        assert_eq!(m.actual, Some(json!("promote")));
    }

    #[test]
    fn exact_reports_unexpected_keys() {
        let actual = json!({"a": 1, "b": 2});
        assert_eq!(
            compare(&json!({"a": 1, "b": 2}), &actual, Mode::Exact),
            None
        );
        let m = compare(&json!({"a": 1}), &actual, Mode::Exact).unwrap();
        assert_eq!(m.path, "$.b");
        assert_eq!(m.expected, None);
        assert_eq!(m.note.as_deref(), Some("unexpected key"));
    }

    #[test]
    fn nested_paths_and_missing_keys() {
        let actual = json!({"items": [{"id": 1}, {"id": 2, "tags": ["x"]}]});
        let m = compare(
            &json!({"items": [{"id": 1}, {"tags": ["y"]}]}),
            &actual,
            Mode::Subset,
        )
        .unwrap();
        assert_eq!(m.path, "$.items[1].tags[0]");
        let m = compare(
            &json!({"items": [{"name": "a"}, {}]}),
            &actual,
            Mode::Subset,
        )
        .unwrap();
        assert_eq!(m.path, "$.items[0].name");
        assert_eq!(m.actual, None);
        assert_eq!(m.note.as_deref(), Some("missing key"));
        let m = compare(&json!({"odd key": 1}), &json!({}), Mode::Subset).unwrap();
        assert_eq!(m.path, "$[\"odd key\"]");
    }

    #[test]
    fn arrays_must_have_the_same_length() {
        let m = compare(&json!([1, 2]), &json!([1, 2, 3]), Mode::Subset).unwrap();
        assert_eq!(m.path, "$");
        assert_eq!(m.note.as_deref(), Some("expected 2 items, got 3"));
    }

    #[test]
    fn numbers_compare_by_value_and_types_are_named() {
        assert_eq!(compare(&json!(1), &json!(1.0), Mode::Exact), None);
        assert!(compare(&json!(1), &json!(2), Mode::Exact).is_some());
        let m = compare(&json!({"n": 1}), &json!({"n": "1"}), Mode::Subset).unwrap();
        assert_eq!(m.note.as_deref(), Some("expected a number, got a string"));
    }

    #[test]
    fn mismatches_read_as_a_diff() {
        let m = compare(&json!({"a": "x"}), &json!({"a": "y"}), Mode::Subset).unwrap();
        assert_eq!(
            m.to_string(),
            "differs at $.a\n  expected: \"x\"\n  actual:   \"y\""
        );
    }
}
