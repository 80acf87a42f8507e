//! Label selectors (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`; a comma
//! is AND) and field selectors (`metadata.name`, `metadata.namespace` with `=`, `==`, `!=`).

use serde_json::Value;

use super::resource::ResourceType;
use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<(String, Op)>);

impl LabelSelector {
    /// Parses `labelSelector`; a malformed one is a 400 as on the real server.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("unable to parse requirement: {why}"));
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some(key) = part.strip_prefix('!') {
                reqs.push((
                    valid_key(key.trim()).map_err(|e| bad(&e))?,
                    Op::DoesNotExist,
                ));
            } else if let Some((key, value)) = part.split_once("!=") {
                reqs.push((
                    valid_key(key.trim()).map_err(|e| bad(&e))?,
                    Op::NotEq(value.trim().into()),
                ));
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                reqs.push((
                    valid_key(key.trim()).map_err(|e| bad(&e))?,
                    Op::Eq(value.trim().into()),
                ));
            } else if let Some((key, set)) = split_set(part, " notin ") {
                reqs.push((
                    valid_key(key).map_err(|e| bad(&e))?,
                    Op::NotIn(parse_set(set).map_err(|e| bad(&e))?),
                ));
            } else if let Some((key, set)) = split_set(part, " in ") {
                reqs.push((
                    valid_key(key).map_err(|e| bad(&e))?,
                    Op::In(parse_set(set).map_err(|e| bad(&e))?),
                ));
            } else {
                reqs.push((valid_key(part).map_err(|e| bad(&e))?, Op::Exists));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(key, op)| match op {
            Op::Eq(v) => get(key) == Some(v.as_str()),
            Op::NotEq(v) => get(key) != Some(v.as_str()),
            Op::In(set) => get(key).is_some_and(|v| set.iter().any(|s| s == v)),
            Op::NotIn(set) => !get(key).is_some_and(|v| set.iter().any(|s| s == v)),
            Op::Exists => get(key).is_some(),
            Op::DoesNotExist => get(key).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `key in (..)` → (`key`, `(..)`), tolerating extra spaces.
fn split_set<'a>(part: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let normalized_at = part.find(op)?;
    let key = part[..normalized_at].trim();
    let set = part[normalized_at + op.len()..].trim();
    set.starts_with('(').then_some((key, set))
}

fn parse_set(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {set:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

fn valid_key(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key \"{key}\""))
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `fieldSelector`; unsupported fields are a 400 with the real server's message.
    pub fn parse(text: &str, rt: &ResourceType) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(ApiError::bad_request(if rt.builtin {
                    format!("field label not supported: {field}")
                } else {
                    format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )
                }));
            }
            reqs.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object is selected.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object.pointer("/metadata/name"),
                _ => object.pointer("/metadata/namespace"),
            }
            .and_then(Value::as_str)
            .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("env!=prod"));
        assert!(m("app in (db, web)"));
        assert!(!m("app notin (db,web)"));
        assert!(m("env notin (prod)"));
        assert!(m("!env"));
        assert!(!m("!app"));
        assert!(!m("app=web,tier=back"));
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selectors() {
        let rt = super::super::resource::builtins().remove(1);
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, &rt).expect("parses").matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns"));
        assert!(!m("metadata.name!=a"));
        assert!(FieldSelector::parse("spec.x=1", &rt).is_err());
    }
}
