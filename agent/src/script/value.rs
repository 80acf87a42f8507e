//! Conversions between JSON values and Rhai values.

use rhai::Dynamic;
use serde_json::Value;

use super::ScriptError;

/// Converts JSON to a Rhai value (objects become maps, arrays arrays).
pub fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
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
    fn round_trips_json() {
        let v = json!({"a": [1, 2.5, "x", true, null], "b": {"c": "d"}});
        assert_eq!(from_dynamic(&to_dynamic(&v)).unwrap(), v);
    }
}
