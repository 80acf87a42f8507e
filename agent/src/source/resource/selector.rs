//! The requirements of a resource filter (Argo's `Selector`): `labels` become a Kubernetes
//! label selector the API server applies; `fields` are checked here on each object, as Argo
//! does (a gjson path and a regular expression, not a server-side field selector).

use regex::Regex;

use crate::manifest::ResourceSelector;

/// Why a requirement is invalid: the message, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SelectorError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: &'static str,
}

fn invalid(message: String, hint: &'static str) -> SelectorError {
    SelectorError { message, hint }
}

const LABEL_OPERATIONS: &str = "one of ==, =, !=, in, notin, exists, !, gt, lt";

/// One label requirement in label selector syntax (`app=web`, `tier in (a,b)`, `!canary`).
/// Values of `in`/`notin` are comma-separated, as in Argo.
pub fn label_requirement(sel: &ResourceSelector) -> Result<String, SelectorError> {
    let key = sel.key.trim();
    if let Some(problem) = qualified_name_problem(key) {
        return Err(invalid(
            format!("invalid label key {key:?}: {problem}"),
            "a label key such as app or app.kubernetes.io/name",
        ));
    }
    let value = sel.value.trim();
    let single = |op: &str| -> Result<String, SelectorError> {
        label_value(value)?;
        Ok(format!("{key}{op}{value}"))
    };
    let op = sel.operation.as_deref().map(str::trim).unwrap_or("");
    match op {
        "" | "==" | "=" => single("="),
        "!=" => single("!="),
        "in" | "notin" => {
            let values: Vec<&str> = value.split(',').map(str::trim).collect();
            if values.iter().all(|v| v.is_empty()) {
                return Err(invalid(
                    format!("operation {op} needs at least one value"),
                    "comma-separated values, e.g. value: a,b",
                ));
            }
            for v in &values {
                label_value(v)?;
            }
            Ok(format!("{key} {op} ({})", values.join(",")))
        }
        "exists" | "!" => {
            if !value.is_empty() {
                return Err(invalid(
                    format!("operation {op} takes no value (got {value:?})"),
                    "remove value",
                ));
            }
            Ok(if op == "!" {
                format!("!{key}")
            } else {
                key.to_owned()
            })
        }
        "gt" | "lt" => {
            if value.parse::<i64>().is_err() {
                return Err(invalid(
                    format!("operation {op} needs an integer value (got {value:?})"),
                    "e.g. value: \"3\"",
                ));
            }
            Ok(format!(
                "{key}{}{value}",
                if op == "gt" { ">" } else { "<" }
            ))
        }
        other => Err(invalid(
            format!("unknown label operation {other:?}"),
            LABEL_OPERATIONS,
        )),
    }
}

/// The label selector of all requirements, `None` when there are none.
pub fn label_selector(requirements: &[String]) -> Option<String> {
    (!requirements.is_empty()).then(|| requirements.join(","))
}

fn label_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    match name_problem(value) {
        None => Ok(()),
        Some(problem) => Err(invalid(
            format!("invalid label value {value:?}: {problem}"),
            "label values are at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        )),
    }
}

/// A Kubernetes qualified name: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("key is empty".into());
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !part.starts_with('-')
                        && !part.ends_with('-')
                });
            if !ok {
                return Some(format!("prefix {prefix:?} is not a DNS subdomain"));
            }
            name
        }
        None => key,
    };
    name_problem(name)
}

/// The name part of a qualified name, also the form of a label value.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name is empty".into());
    }
    if name.len() > 63 {
        return Some("longer than 63 characters".into());
    }
    let inner_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = name
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    (!(inner_ok && ends_ok)).then(|| {
        "use letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into()
    })
}

/// A compiled field requirement: the value at a gjson path of the object must (or must not)
/// match a regular expression. A path the object lacks fails the requirement either way.
#[derive(Debug, Clone)]
pub struct FieldRequirement {
    /// gjson path into the object, e.g. `spec.serviceAccountName`.
    pub path: String,
    /// Searched for in the value (unanchored, as Go's `regexp.Match`).
    pub pattern: Regex,
    /// `!=`: the value must not match.
    pub negate: bool,
}

impl FieldRequirement {
    /// Checks one requirement of `filter.fields`.
    pub fn compile(sel: &ResourceSelector) -> Result<Self, SelectorError> {
        let path = sel.key.trim();
        if path.is_empty() {
            return Err(invalid(
                "key is empty".into(),
                "a gjson path into the object, e.g. metadata.name or spec.serviceAccountName",
            ));
        }
        let negate = match sel.operation.as_deref().map(str::trim).unwrap_or("") {
            "" | "=" | "==" => false,
            "!=" => true,
            other => {
                return Err(invalid(
                    format!("unknown field operation {other:?}"),
                    "fields support =, == and != (value is a regular expression)",
                ))
            }
        };
        let pattern = Regex::new(&sel.value).map_err(|e| {
            invalid(
                format!("invalid regular expression {:?}: {e}", sel.value),
                "value is a regular expression, e.g. ^web-",
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
            pattern,
            negate,
        })
    }

    /// Whether the object (as JSON text) passes.
    pub fn matches(&self, object_json: &str) -> bool {
        let found = gjson::get(object_json, &self.path);
        found.exists() && self.pattern.is_match(found.str()) != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(key: &str, op: Option<&str>, value: &str) -> ResourceSelector {
        ResourceSelector {
            key: key.into(),
            operation: op.map(Into::into),
            value: value.into(),
        }
    }

    #[test]
    fn label_requirements_in_selector_syntax() {
        let cases = [
            (sel("app", None, "web"), "app=web"),
            (sel("app", Some("=="), "web"), "app=web"),
            (sel("app", Some("!="), "web"), "app!=web"),
            (sel("tier", Some("in"), "a, b"), "tier in (a,b)"),
            (sel("tier", Some("notin"), "a"), "tier notin (a)"),
            (
                sel("app.kubernetes.io/name", Some("exists"), ""),
                "app.kubernetes.io/name",
            ),
            (sel("canary", Some("!"), ""), "!canary"),
            (sel("replicas", Some("gt"), "2"), "replicas>2"),
            (sel("replicas", Some("lt"), "9"), "replicas<9"),
            (sel("app", None, ""), "app="),
        ];
        for (s, want) in cases {
            assert_eq!(label_requirement(&s).unwrap(), want, "{s:?}");
        }
        assert_eq!(
            label_selector(&["a=b".into(), "!c".into()]).as_deref(),
            Some("a=b,!c")
        );
        assert_eq!(label_selector(&[]), None);
    }

    #[test]
    fn bad_label_requirements_are_refused() {
        for s in [
            sel("", None, "x"),
            sel("-app", None, "x"),
            sel("Bad_Prefix/app", None, "x"),
            sel("app", None, "has space"),
            sel("app", Some("~"), "x"),
            sel("app", Some("exists"), "x"),
            sel("app", Some("in"), ""),
            sel("app", Some("gt"), "many"),
        ] {
            assert!(label_requirement(&s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn field_requirements_match_regular_expressions_at_gjson_paths() {
        let obj = r#"{"metadata":{"name":"web-1"},"spec":{"replicas":3,"sa":"builder"}}"#;
        let check = |s: ResourceSelector| FieldRequirement::compile(&s).unwrap().matches(obj);
        assert!(check(sel("metadata.name", None, "^web-")));
        assert!(check(sel("spec.sa", Some("=="), "build")));
        assert!(!check(sel("spec.sa", Some("!="), "build")));
        assert!(check(sel("spec.replicas", Some("="), "^3$")));
        // A missing path fails both = and !=, as in Argo.
        assert!(!check(sel("spec.missing", None, ".*")));
        assert!(!check(sel("spec.missing", Some("!="), "x")));
        assert!(FieldRequirement::compile(&sel("a", Some("in"), "x")).is_err());
        assert!(FieldRequirement::compile(&sel("a", None, "(")).is_err());
    }
}
