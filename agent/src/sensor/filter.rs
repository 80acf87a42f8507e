//! Dependency filters: data comparisons on gjson paths and Rhai predicates.

use regex::Regex;
use thiserror::Error;

use crate::manifest::{DataFilter, Filters, Spanned};
use crate::plan::CompileContext;
use crate::script::{CompiledScript, ScriptError, ScriptKind};

/// Why a filter could not be decided (the event then does not pass).
#[derive(Debug, Error)]
pub enum FilterError {
    /// The path is not in the event data.
    #[error("path {0:?} not found in event data")]
    PathNotFound(String),
    /// The value at the path is not of the filter's type.
    #[error("value {value:?} at path {path:?} is not a {kind}")]
    WrongType {
        /// Path.
        path: String,
        /// Found value.
        value: String,
        /// Expected type.
        kind: &'static str,
    },
    /// The filter script failed.
    #[error("filter script: {0}")]
    Script(#[from] ScriptError),
}

/// How several results combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    /// Every result must pass.
    And,
    /// One passing result is enough.
    Or,
}

impl Logic {
    /// Parses Argo's operator names (`and`, `or`; empty means `and`).
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        op: &Option<Spanned<String>>,
    ) -> Logic {
        match op.as_ref().map(|s| (s.value.to_ascii_lowercase(), s)) {
            None => Logic::And,
            Some((v, _)) if v.is_empty() || v == "and" => Logic::And,
            Some((v, _)) if v == "or" => Logic::Or,
            Some((v, s)) => {
                ctx.error_with_hint(
                    Some(&s.referenced),
                    field,
                    format!("unknown logical operator {v:?}"),
                    "use `and` or `or`",
                );
                Logic::And
            }
        }
    }
}

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
    fn compile(ctx: &mut CompileContext<'_>, field: &str, f: &Spanned<DataFilter>) -> Option<Self> {
        let loc = Some(&f.referenced);
        let d = &f.value;
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
                .map(|v| v.trim().to_ascii_lowercase().parse::<bool>())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(v) => Values::Bools(v),
                Err(_) => {
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

    /// Whether the event data (as JSON text) passes; any listed value may match.
    pub fn matches(&self, data_json: &str) -> Result<bool, FilterError> {
        let found = gjson::get(data_json, &self.path);
        if !found.exists() {
            return Err(FilterError::PathNotFound(self.path.clone()));
        }
        Ok(match &self.values {
            Values::Strings(res) => {
                let text = found.str();
                res.iter()
                    .any(|r| (self.comparator == Comparator::Eq) == r.is_match(text))
            }
            Values::Numbers(nums) => {
                let n: f64 = match found.kind() {
                    gjson::Kind::Number => found.f64(),
                    _ => found
                        .str()
                        .trim()
                        .parse()
                        .map_err(|_| FilterError::WrongType {
                            path: self.path.clone(),
                            value: found.str().to_owned(),
                            kind: "number",
                        })?,
                };
                nums.iter()
                    .any(|v| n.partial_cmp(v).is_some_and(|o| self.comparator.holds(o)))
            }
            Values::Bools(bools) => {
                let b = match found.kind() {
                    gjson::Kind::True => true,
                    gjson::Kind::False => false,
                    _ => found
                        .str()
                        .trim()
                        .parse()
                        .map_err(|_| FilterError::WrongType {
                            path: self.path.clone(),
                            value: found.str().to_owned(),
                            kind: "bool",
                        })?,
                };
                bools
                    .iter()
                    .any(|v| (self.comparator == Comparator::Eq) == (b == *v))
            }
        })
    }
}

/// All filters of one dependency.
#[derive(Debug, Clone)]
pub struct CompiledFilters {
    /// Data filters.
    pub data: Vec<CompiledDataFilter>,
    /// How data filters combine.
    pub data_logic: Logic,
    /// The script filter.
    pub script: Option<CompiledScript>,
    /// How the data group and the script combine.
    pub filters_logic: Logic,
}

impl CompiledFilters {
    /// Compiles a dependency's filters; `field` is the path of `filters`.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        f: &Filters,
        filters_logic: Logic,
    ) -> Self {
        let data = f
            .data
            .iter()
            .enumerate()
            .filter_map(|(i, d)| CompiledDataFilter::compile(ctx, &format!("{field}.data[{i}]"), d))
            .collect();
        let data_logic = Logic::compile(
            ctx,
            &format!("{field}.dataLogicalOperator"),
            &f.data_logical_operator,
        );
        let source = crate::manifest::ScriptSource::from_fields(&f.script, &f.script_file);
        let script =
            source.and_then(|s| ctx.script(&format!("{field}.script"), ScriptKind::Filter, &s));
        Self {
            data,
            data_logic,
            script,
            filters_logic,
        }
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.script.is_none()
    }

    /// Evaluates the data filters group; `None` when there are none.
    pub fn data_group(&self, data_json: &str) -> Option<Result<bool, FilterError>> {
        if self.data.is_empty() {
            return None;
        }
        let mut any = false;
        for f in &self.data {
            let r = f.matches(data_json);
            match (self.data_logic, r) {
                (Logic::And, Ok(false)) => return Some(Ok(false)),
                (Logic::And, Err(e)) => return Some(Err(e)),
                (Logic::Or, Ok(true)) => return Some(Ok(true)),
                (_, Ok(true)) => any = true,
                _ => {}
            }
        }
        Some(Ok(match self.data_logic {
            Logic::And => true,
            Logic::Or => any,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kind: &str, cmp: &str, values: Values) -> CompiledDataFilter {
        let _ = kind;
        CompiledDataFilter {
            path: "body.x".into(),
            comparator: Comparator::parse(Some(cmp)).unwrap(),
            values,
        }
    }

    #[test]
    fn strings_are_unanchored_regexes() {
        let f = filter(
            "string",
            "=",
            Values::Strings(vec![Regex::new("main").unwrap()]),
        );
        assert!(f.matches(r#"{"body":{"x":"refs/heads/main"}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":"dev"}}"#).unwrap());
        assert!(f.matches(r#"{"body":{}}"#).is_err());
    }

    #[test]
    fn numbers_compare() {
        let f = filter("number", ">=", Values::Numbers(vec![10.0]));
        assert!(f.matches(r#"{"body":{"x":10}}"#).unwrap());
        assert!(f.matches(r#"{"body":{"x":"11"}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":9.5}}"#).unwrap());
    }

    #[test]
    fn bools_compare() {
        let f = filter("bool", "!=", Values::Bools(vec![true]));
        assert!(f.matches(r#"{"body":{"x":false}}"#).unwrap());
        assert!(!f.matches(r#"{"body":{"x":true}}"#).unwrap());
    }
}
