//! Conversions between JSON values and Rhai values.

use rhai::Dynamic;
use serde_json::Value;

use super::ScriptError;

/// Converts JSON to a Rhai value: objects become maps, arrays arrays, null `()`; integers
/// that fit an `i64` are integers, other numbers floats (as `rhai::serde::to_dynamic`
/// converts them, without going through serde, which took several times as long).
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
    }
}

/// How deeply a script's result may nest maps and arrays (the conversion recurses).
pub const MAX_VALUE_DEPTH: usize = 128;

/// Converts a Rhai value back to JSON (unit becomes null); values nested deeper than
/// [`MAX_VALUE_DEPTH`] are refused.
pub fn from_dynamic(value: &Dynamic) -> Result<Value, ScriptError> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    check_depth(value)?;
    rhai::serde::from_dynamic(value).map_err(|e| ScriptError::Type {
        expected: "a JSON-compatible value",
        got: format!("{} ({e})", value.type_name()),
    })
}

/// Refuses `value` when it nests too deeply; the walk itself stops descending at the limit,
/// so it recurses at most [`MAX_VALUE_DEPTH`] levels.
fn check_depth(value: &Dynamic) -> Result<(), ScriptError> {
    fn within(v: &Dynamic, depth: usize) -> bool {
        if let Ok(map) = v.as_map_ref() {
            depth < MAX_VALUE_DEPTH && map.values().all(|c| within(c, depth + 1))
        } else if let Ok(items) = v.as_array_ref() {
            depth < MAX_VALUE_DEPTH && items.iter().all(|c| within(c, depth + 1))
        } else {
            true
        }
    }
    if within(value, 0) {
        Ok(())
    } else {
        Err(ScriptError::Limit(format!(
            "the result nests maps and arrays deeper than {MAX_VALUE_DEPTH} levels"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_as_rhai_serde_does() {
        for v in [
            json!(null),
            json!({"a": [1, -2, 2.5, 1e300, 18446744073709551615u64, 9223372036854775807i64,
                   -9223372036854775808i64, "x\u{e9}\n", true, false, null, {}, []],
                   "b": {"c": "d", "": 0}}),
            json!([[], {"z": 1, "a": 2}]),
            json!("text"),
            json!(0.1),
        ] {
            let ours = to_dynamic(&v);
            let theirs = rhai::serde::to_dynamic(&v).unwrap();
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{v}");
            assert_eq!(ours.type_name(), theirs.type_name());
        }
    }

    #[test]
    fn round_trips_json() {
        let v = json!({"a": [1, 2.5, "x", true, null], "b": {"c": "d"}});
        assert_eq!(from_dynamic(&to_dynamic(&v)).unwrap(), v);
    }

    #[test]
    fn results_nested_too_deeply_are_refused_not_recursed() {
        let nest = |levels: usize| {
            let mut v = Dynamic::from_map(rhai::Map::new());
            for _ in 0..levels {
                let mut m = rhai::Map::new();
                m.insert("a".into(), v);
                v = Dynamic::from_map(m);
            }
            v
        };
        assert!(from_dynamic(&nest(MAX_VALUE_DEPTH - 1)).is_ok());
        let err = from_dynamic(&nest(1000)).unwrap_err();
        assert!(matches!(err, ScriptError::Limit(_)), "{err:?}");
    }
}
