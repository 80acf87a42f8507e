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

/// Converts a Rhai value back to JSON (unit becomes null).
pub fn from_dynamic(value: &Dynamic) -> Result<Value, ScriptError> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    rhai::serde::from_dynamic(value).map_err(|e| ScriptError::Type {
        expected: "a JSON-compatible value",
        got: format!("{} ({e})", value.type_name()),
    })
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
}
