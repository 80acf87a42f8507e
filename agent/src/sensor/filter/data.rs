//! The `data` filter: values at gjson paths compared with the listed values, any of which
//! may match; strings are unanchored regular expressions (Argo's `filterData`).

use regex::Regex;
use serde_saphyr::Spanned;

use super::{Logic, Verdict};
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::DataFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Comparator {
    fn parse(s: Option<&str>) -> Option<Self> {
        Some(match s.unwrap_or("=") {
            "" | "=" | "==" => Comparator::Eq,
            "!=" => Comparator::Ne,
            ">" => Comparator::Gt,
            ">=" => Comparator::Ge,
            "<" => Comparator::Lt,
            "<=" => Comparator::Le,
            _ => return None,
        })
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Comparator::Eq => ord == Equal,
            Comparator::Ne => ord != Equal,
            Comparator::Gt => ord == Greater,
            Comparator::Ge => ord != Less,
            Comparator::Lt => ord == Less,
            Comparator::Le => ord != Greater,
        }
    }
}

#[derive(Debug, Clone)]
enum Values {
    Strings(Vec<Regex>),
    Numbers(Vec<f64>),
    Bools(Vec<bool>),
}

/// One compiled data filter.
#[derive(Debug, Clone)]
pub struct CompiledDataFilter {
    path: String,
    comparator: Comparator,
    values: Values,
}

impl CompiledDataFilter {
    /// Checks one data filter. Argo only finds a missing type, a missing value or a bad
    /// regular expression when an event arrives; here they are load errors.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        f: &Spanned<DataFilter>,
    ) -> Option<Self> {
        let loc = Some(&f.referenced);
        let d = &f.value;
        if d.path.is_empty() {
            ctx.error(loc, format!("{field}.path"), "path must not be empty");
            return None;
        }
        if d.value.is_empty() {
            ctx.error_with_hint(
                loc,
                format!("{field}.value"),
                "no values specified",
                "list one or more values; any of them may match",
            );
            return None;
        }
        let Some(comparator) = Comparator::parse(d.comparator.as_deref()) else {
            ctx.error_with_hint(
                loc,
                format!("{field}.comparator"),
                format!("unknown comparator {:?}", d.comparator),
                "use one of =, !=, >, >=, <, <=",
            );
            return None;
        };
        let values = match d.kind.as_str() {
            "string" => {
                if !matches!(comparator, Comparator::Eq | Comparator::Ne) {
                    ctx.error(
                        loc,
                        format!("{field}.comparator"),
                        "strings compare only with = and !=",
                    );
                    return None;
                }
                let mut out = Vec::new();
                for v in &d.value {
                    match Regex::new(v) {
                        Ok(r) => out.push(r),
                        Err(e) => {
                            ctx.error(
                                loc,
                                format!("{field}.value"),
                                format!("invalid regular expression {v:?}: {e}"),
                            );
                            return None;
                        }
                    }
                }
                Values::Strings(out)
            }
            "number" => match d
                .value
                .iter()
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(v) => Values::Numbers(v),
                Err(_) => {
                    ctx.error(
                        loc,
                        format!("{field}.value"),
                        "number filters need numeric values",
                    );
                    return None;
                }
            },
            "bool" => match d
                .value
                .iter()
                .map(|v| parse_bool(v))
                .collect::<Option<Vec<_>>>()
            {
                Some(v) => Values::Bools(v),
                None => {
                    ctx.error(
                        loc,
                        format!("{field}.value"),
                        "bool filters need values true or false",
                    );
                    return None;
                }
            },
            other => {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.type"),
                    format!("unsupported type {other:?}"),
                    "use string, number or bool",
                );
                return None;
            }
        };
        Some(Self {
            path: d.path.clone(),
            comparator,
            values,
        })
    }

    /// Whether the data passes; `Err` when the path does not exist.
    pub fn matches(&self, data_json: &str) -> Result<bool, String> {
        let found = gjson::get(data_json, &self.path);
        if !found.exists() {
            return Err(format!("path '{}' does not exist", self.path));
        }
        Ok(match &self.values {
            Values::Strings(res) => {
                let text = found.str();
                res.iter()
                    .any(|r| (self.comparator == Comparator::Eq) == r.is_match(text))
            }
            Values::Numbers(nums) => {
                let n = found.f64();
                nums.iter()
                    .any(|v| n.partial_cmp(v).is_some_and(|o| self.comparator.holds(o)))
            }
            Values::Bools(bools) => {
                let b = found.bool();
                bools
                    .iter()
                    .any(|v| (self.comparator == Comparator::Eq) == (b == *v))
            }
        })
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Argo's `filterData`: no event is an error, an event without data passes, data that is not
/// JSON is an error; under `and` the first failing or missing path decides, under `or` the
/// first match passes and missing paths are reported if nothing matched.
pub fn evaluate(filters: &[CompiledDataFilter], logic: Logic, event: Option<&Event>) -> Verdict {
    let Some(event) = event else {
        return Verdict::error("nil event");
    };
    let Some(text) = event.data_text() else {
        return Verdict::of(true);
    };
    if !gjson::valid(&text) {
        return Verdict::error("event data not valid JSON");
    }
    let mut errors = Vec::new();
    for f in filters {
        match (f.matches(&text), logic) {
            (Ok(true), Logic::Or) => return Verdict::of(true),
            (Ok(false), Logic::And) => return Verdict::of(false),
            (Err(e), Logic::And) => return Verdict::error(format!("data filter error ({e})")),
            (Err(e), Logic::Or) => errors.push(e),
            _ => {}
        }
    }
    match logic {
        Logic::And => Verdict::of(true),
        Logic::Or if errors.is_empty() => Verdict::of(false),
        Logic::Or => Verdict::error(format!("data filter errors [{}]", errors.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(cmp: &str, values: Values) -> CompiledDataFilter {
        CompiledDataFilter {
            path: "body.x".into(),
            comparator: Comparator::parse(Some(cmp)).unwrap(),
            values,
        }
    }

    #[test]
    fn strings_are_unanchored_regexes() {
        let f = filter("=", Values::Strings(vec![Regex::new("main").unwrap()]));
        assert!(f.matches(r#"{"body":{"x":"refs/heads/main"}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":"dev"}}"#).unwrap());
        assert!(f.matches(r#"{"body":{}}"#).is_err());
    }

    #[test]
    fn numbers_compare() {
        let f = filter(">=", Values::Numbers(vec![10.0]));
        assert!(f.matches(r#"{"body":{"x":10}}"#).unwrap());
        assert!(f.matches(r#"{"body":{"x":"11"}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":9.5}}"#).unwrap());
    }

    #[test]
    fn bools_compare() {
        let f = filter("!=", Values::Bools(vec![true]));
        assert!(f.matches(r#"{"body":{"x":false}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":true}}"#).unwrap());
    }
}
