//! Trigger conditions: boolean expressions over dependency names (`a && (b || c)`; names may
//! contain `-`), evaluated over which dependencies have an event.
//!
//! A chain of `&&` (or `||`) is one node with every operand, so the tree is only as deep as
//! the parentheses, which are limited to [`MAX_NESTING`] levels: no input can make parsing,
//! evaluating or dropping a condition recurse deeply.

/// How deeply parentheses may nest in a condition.
pub const MAX_NESTING: usize = 32;

/// A parsed condition; leaves index the sensor's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The dependency at this index has an event.
    Dep(usize),
    /// Every operand holds (two or more).
    And(Vec<Condition>),
    /// Some operand holds (two or more).
    Or(Vec<Condition>),
}

impl Condition {
    /// Every dependency (the default when `conditions` is absent).
    pub fn all(count: usize) -> Option<Self> {
        match count {
            0 => None,
            1 => Some(Condition::Dep(0)),
            n => Some(Condition::And((0..n).map(Condition::Dep).collect())),
        }
    }

    /// Parses `expr`, naming dependencies by `names`.
    pub fn parse(expr: &str, names: &[String]) -> Result<Self, String> {
        let tokens = tokenize(expr)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            names,
        };
        let c = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(c),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    /// Whether the condition holds when `present[i]` tells if dependency `i` has an event.
    pub fn holds(&self, present: &[bool]) -> bool {
        match self {
            Condition::Dep(i) => present.get(*i).copied().unwrap_or(false),
            Condition::And(all) => all.iter().all(|c| c.holds(present)),
            Condition::Or(any) => any.iter().any(|c| c.holds(present)),
        }
    }

    /// The dependencies the condition mentions, by index.
    pub fn dependencies(&self, out: &mut Vec<usize>) {
        match self {
            Condition::Dep(i) => {
                if !out.contains(i) {
                    out.push(*i)
                }
            }
            Condition::And(operands) | Condition::Or(operands) => {
                for c in operands {
                    c.dependencies(out);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    And,
    Or,
    Open,
    Close,
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                out.push(Token::And);
                i += 2;
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                out.push(Token::Or);
                i += 2;
            }
            c if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '-' | '_' | '.'))
                {
                    i += 1;
                }
                out.push(Token::Name(chars[start..i].iter().collect()));
            }
            other => {
                return Err(format!(
                    "unexpected character {other:?} (use names, &&, || and parentheses)"
                ))
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    /// Open parentheses around the current position.
    depth: usize,
    names: &'a [String],
}

impl Parser<'_> {
    fn or(&mut self) -> Result<Condition, String> {
        let mut operands = vec![self.and()?];
        while self.tokens.get(self.pos) == Some(&Token::Or) {
            self.pos += 1;
            operands.push(self.and()?);
        }
        Ok(one_or(operands, Condition::Or))
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut operands = vec![self.atom()?];
        while self.tokens.get(self.pos) == Some(&Token::And) {
            self.pos += 1;
            operands.push(self.atom()?);
        }
        Ok(one_or(operands, Condition::And))
    }

    fn atom(&mut self) -> Result<Condition, String> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            Some(Token::Name(n)) => self
                .names
                .iter()
                .position(|d| *d == n)
                .map(Condition::Dep)
                .ok_or_else(|| {
                    format!(
                        "unknown dependency {n:?} (dependencies: {})",
                        self.names.join(", ")
                    )
                }),
            Some(Token::Open) => {
                if self.depth == MAX_NESTING {
                    return Err(format!("parentheses nest deeper than {MAX_NESTING} levels"));
                }
                self.depth += 1;
                let inner = self.or()?;
                self.depth -= 1;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err("missing )".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end of condition".into()),
        }
    }
}

/// The single operand itself, or a node over several.
fn one_or(mut operands: Vec<Condition>, node: fn(Vec<Condition>) -> Condition) -> Condition {
    if operands.len() == 1 {
        if let Some(only) = operands.pop() {
            return only;
        }
    }
    node(operands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["dep-a", "dep-b", "dep_c"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn parses_and_evaluates_with_precedence() {
        let c = Condition::parse("dep-a || dep-b && dep_c", &names()).unwrap();
        assert!(c.holds(&[true, false, false]));
        assert!(!c.holds(&[false, true, false]));
        assert!(c.holds(&[false, true, true]));
        let c = Condition::parse("(dep-a || dep-b) && dep_c", &names()).unwrap();
        assert!(!c.holds(&[true, false, false]));
        assert!(c.holds(&[true, false, true]));
    }

    #[test]
    fn rejects_unknown_names_and_bad_syntax() {
        assert!(Condition::parse("dep-a && nope", &names())
            .unwrap_err()
            .contains("nope"));
        assert!(Condition::parse("(dep-a", &names()).is_err());
        assert!(Condition::parse("dep-a &&", &names()).is_err());
        assert!(Condition::parse("dep-a & dep-b", &names()).is_err());
    }

    #[test]
    fn fifty_dependencies_stay_linear() {
        let names: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
        let all = Condition::all(50).unwrap();
        let mut present = vec![true; 50];
        assert!(all.holds(&present));
        present[49] = false;
        assert!(!all.holds(&present));
        let expr = names.join(" && ");
        assert_eq!(Condition::parse(&expr, &names).unwrap(), all);
    }

    #[test]
    fn deep_nesting_is_an_error_and_long_chains_stay_flat() {
        let names = names();
        let deep = format!("{}dep-a{}", "(".repeat(20_000), ")".repeat(20_000));
        assert!(Condition::parse(&deep, &names)
            .unwrap_err()
            .contains("deeper than 32"));
        let ok = format!("{}dep-a{}", "(".repeat(32), ")".repeat(32));
        assert_eq!(Condition::parse(&ok, &names), Ok(Condition::Dep(0)));
        let long = vec!["dep-a"; 60_000].join(" && ");
        let c = Condition::parse(&long, &names).unwrap();
        assert!(c.holds(&[true, false, false]));
        assert!(!c.holds(&[false, true, true]));
    }
}
