//! Argo's `filters.exprs` are govaluate expressions; triggerd runs them as Rhai after a
//! small syntax translation, shared by sensor and EventSource filters.

/// Rewrites govaluate syntax into Rhai: `'s'` → `"s"`, `=~` → `matches`, `!~` →
/// `not_matches`, and `in (a, b)` → `in [a, b]`. Everything else passes through.
pub fn translate_govaluate(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 8);
    // Depths of parentheses opened right after `in`, which close as `]`.
    let mut depth = 0usize;
    let mut list_depths: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let quote = c;
                out.push('"');
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            out.push('\\');
                            out.push(chars[i + 1]);
                            i += 1;
                        }
                        '"' => out.push_str("\\\""),
                        other => out.push(other),
                    }
                    i += 1;
                }
                out.push('"');
            }
            '=' if chars.get(i + 1) == Some(&'~') => {
                out.push_str(" matches ");
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'~') => {
                out.push_str(" not_matches ");
                i += 1;
            }
            '(' => {
                depth += 1;
                if ends_with_in(&out) {
                    list_depths.push(depth);
                    out.push('[');
                } else {
                    out.push('(');
                }
            }
            ')' => {
                if list_depths.last() == Some(&depth) {
                    list_depths.pop();
                    out.push(']');
                } else {
                    out.push(')');
                }
                depth = depth.saturating_sub(1);
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

fn ends_with_in(out: &str) -> bool {
    let trimmed = out.trim_end();
    trimmed.ends_with("in")
        && !trimmed[..trimmed.len() - 2]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_govaluate_forms() {
        assert_eq!(translate_govaluate("a == 'b'"), "a == \"b\"");
        assert_eq!(
            translate_govaluate("b =~ \"start\""),
            "b  matches  \"start\""
        );
        assert_eq!(translate_govaluate("b !~ 'x'"), "b  not_matches  \"x\"");
        assert_eq!(
            translate_govaluate("x in (1, 2) && (y)"),
            "x in [1, 2] && (y)"
        );
        assert_eq!(translate_govaluate("begin(1)"), "begin(1)");
        assert_eq!(translate_govaluate("a == 'it\"s'"), "a == \"it\\\"s\"");
    }
}
