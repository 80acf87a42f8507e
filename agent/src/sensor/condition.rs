//! Trigger conditions: boolean expressions over dependency names (`a && (b || c)`; names may
//! contain `-`), evaluated over which dependencies have an event.

/// A parsed condition; leaves index the sensor's dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The dependency at this index has an event.
    Dep(usize),
    /// Both hold.
    And(Box<Condition>, Box<Condition>),
    /// Either holds.
    Or(Box<Condition>, Box<Condition>),
}

impl Condition {
    /// Every dependency (the default when `conditions` is absent).
    pub fn all(count: usize) -> Option<Self> {
        (0..count)
            .map(Condition::Dep)
            .reduce(|a, b| Condition::And(Box::new(a), Box::new(b)))
    }

    /// Parses `expr`, naming dependencies by `names`.
    pub fn parse(expr: &str, names: &[String]) -> Result<Self, String> {
        let tokens = tokenize(expr)?;
        let mut p = Parser {
            tokens,
            pos: 0,
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
            Condition::And(a, b) => a.holds(present) && b.holds(present),
            Condition::Or(a, b) => a.holds(present) || b.holds(present),
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
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.dependencies(out);
                b.dependencies(out);
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
    names: &'a [String],
}

impl Parser<'_> {
    fn or(&mut self) -> Result<Condition, String> {
        let mut left = self.and()?;
        while self.tokens.get(self.pos) == Some(&Token::Or) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut left = self.atom()?;
        while self.tokens.get(self.pos) == Some(&Token::And) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
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
                let inner = self.or()?;
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
}
