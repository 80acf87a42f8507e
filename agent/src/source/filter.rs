//! EventSource filters (`filter.expression`): an expression over the event data, evaluated
//! before the event is published; events that do not pass are dropped at the source.
//! Top-level keys of the data are the variables (`body.id == 4` for a webhook), written in
//! Rhai or in the govaluate forms Argo manifests use.

use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::compile::CompileContext;
use crate::script::translate_govaluate;
use crate::script::{to_dynamic, CompiledScript, ScriptHost, ScriptKind};

/// A compiled EventSource filter.
#[derive(Debug, Clone)]
pub struct EventSourceFilter {
    script: CompiledScript,
    names: Vec<String>,
}

/// Words that are not variables in an expression.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "in",
    "matches",
    "not_matches",
    "if",
    "else",
    "let",
    "const",
    "fn",
    "return",
];

impl EventSourceFilter {
    /// Compiles `filter.expression`; `field` is its path.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        expression: &Spanned<String>,
    ) -> Option<Self> {
        let source = translate_govaluate(&expression.value);
        let names = root_identifiers(&source);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        match ctx.host.compile_with(ScriptKind::Expr, &source, &refs) {
            Ok(script) => Some(Self { script, names }),
            Err(e) => {
                ctx.error(
                    Some(&expression.referenced),
                    field,
                    format!("expression {:?}: {e}", expression.value),
                );
                None
            }
        }
    }

    /// Whether the data passes; variables missing from the data are unit.
    pub fn evaluate(&self, host: &ScriptHost, data: &Value) -> Result<bool, String> {
        let env = match data {
            Value::Object(m) => expand(m),
            _ => Value::Object(Map::new()),
        };
        let vars: Vec<(&str, rhai::Dynamic)> = self
            .names
            .iter()
            .map(|n| {
                (
                    n.as_str(),
                    env.get(n).map(to_dynamic).unwrap_or(rhai::Dynamic::UNIT),
                )
            })
            .collect();
        host.eval(&self.script, vars)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.as_bool()
                    .map_err(|t| format!("expression returned {t}, expected bool"))
            })
    }
}

/// The first segment of every identifier path in the expression (`body` in `body.id`),
/// skipping strings, keywords, function calls and property names.
fn root_identifiers(source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after_dot = start > 0 && chars[start - 1] == '.';
            let is_call = chars.get(i) == Some(&'(');
            if !after_dot && !is_call && !RESERVED.contains(&word.as_str()) && !out.contains(&word)
            {
                out.push(word);
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Turns dotted keys into nested objects (`{"a.b": 1}` → `{"a": {"b": 1}}`); a plain key
/// that collides with a nested object is dropped, as Argo does.
pub fn expand(map: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (k, v) in map.iter().filter(|(k, _)| k.contains('.')) {
        let mut cur = &mut out;
        let parts: Vec<&str> = k.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur.insert((*part).to_owned(), v.clone());
            } else {
                let slot = cur
                    .entry((*part).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                let Value::Object(next) = slot else { break };
                cur = next;
            }
        }
    }
    for (k, v) in map.iter().filter(|(k, _)| !k.contains('.')) {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_dotted_keys_and_drops_conflicting_parents() {
        let input = json!({"a.b": 1, "a.c.d": 2, "a": 3, "ab": 4, "abb": 5});
        let Value::Object(m) = input else {
            unreachable!()
        };
        assert_eq!(
            expand(&m),
            json!({"a": {"b": 1, "c": {"d": 2}}, "ab": 4, "abb": 5})
        );
    }

    #[test]
    fn finds_root_identifiers() {
        assert_eq!(
            root_identifiers("(body.id == 4) && (body.name != \"Joe x\")"),
            vec!["body"]
        );
        assert_eq!(
            root_identifiers("id == 1 && last_name matches \"D\""),
            vec!["id", "last_name"]
        );
        assert_eq!(
            root_identifiers("x in [a, 2] && len(y) > 0"),
            vec!["x", "a", "y"]
        );
    }
}
