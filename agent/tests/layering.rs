//! The layering check: every top-level module of the crate may import only the modules
//! listed after it in the crate's top-level doc comment (`src/lib.rs`, section "Layers"), so
//! imports follow the data flow and cannot silently tangle into rings again.
//!
//! Imports are found as `crate::name` and `crate::{name, …}` paths outside comments and
//! outside test-only code (`#[cfg(test)]` modules, inline or in their own file).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One import that points up the declared order.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The declared order from the doc comment: lines `//! N. \`name\` — …`.
fn declared_order(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .filter_map(|l| {
            let (number, rest) = l.split_once(". `")?;
            number.trim().parse::<u32>().ok()?;
            Some(rest.split('`').next()?.to_owned())
        })
        .collect()
}

/// The top-level modules `lib.rs` declares (`pub mod x;` / `mod x;`).
fn declared_modules(lib_rs: &str) -> BTreeSet<String> {
    lib_rs
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The source with comments, string and char literals blanked (newlines kept, so line
/// numbers hold) and test-only modules removed; `test_files` collects the names of
/// `#[cfg(test)] mod name;` declarations, whose files are test-only too.
fn code_only(text: &str, test_files: &mut Vec<String>) -> String {
    let blanked = blank_comments_and_literals(text);
    let mut out = String::with_capacity(blanked.len());
    let mut rest = blanked.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let item = after.trim_start();
        let Some(decl) = item.strip_prefix("mod ") else {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        };
        let name: String = decl
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = decl[name.len()..].trim_start();
        let skipped_start = after.len() - item.len();
        if tail.starts_with(';') {
            test_files.push(name);
            let end = skipped_start + 4 + decl.find(';').unwrap_or(0) + 1;
            out.extend(after[..end].chars().filter(|c| *c == '\n'));
            rest = &after[end..];
        } else if tail.starts_with('{') {
            let open = skipped_start + 4 + (decl.len() - tail.len());
            let close = matching_brace(after, open).unwrap_or(after.len() - 1);
            out.extend(after[..=close].chars().filter(|c| *c == '\n'));
            rest = &after[close + 1..];
        } else {
            out.push_str("#[cfg(test)]");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The index of the brace closing the one at `open` (literals are already blanked).
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Replaces comments and string/char literals by spaces, keeping newlines.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // Raw string r"…", r#"…"#: ends at a quote followed by as many hashes.
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            out.push_str(&" ".repeat(2 + hashes));
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..].iter().take(hashes).all(|c| *c == '#')
                    && chars.len() >= i + 1 + hashes
                {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            let end = char_literal_end(&chars, i);
            out.push_str(&" ".repeat(end - i + 1));
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'`, `'\n'`, `'\u{1F600}'` — as opposed to a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

fn char_literal_end(chars: &[char], i: usize) -> usize {
    let mut j = i + 2;
    while j < chars.len() && chars[j] != '\'' {
        j += 1;
    }
    j.min(chars.len() - 1)
}

/// The top-level modules a piece of code imports through `crate::`, with their lines.
fn imports(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before_ok = at == 0 || !ident_before(&rest.chars().collect::<Vec<_>>(), at);
            rest = &rest[at + "crate::".len()..];
            if !before_ok {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                for name in group_heads(group, code, n) {
                    out.push((n + 1, name));
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

/// The first path segment of each item of a `crate::{…}` group (which may span lines).
fn group_heads(group_start: &str, code: &str, line: usize) -> Vec<String> {
    // Join the group with the lines after it, up to its closing brace.
    let mut text = group_start.to_owned();
    for l in code.lines().skip(line + 1) {
        if matching_close(&text).is_some() {
            break;
        }
        text.push(' ');
        text.push_str(l);
    }
    let end = matching_close(&text).unwrap_or(text.len());
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut current = String::new();
    for c in text[..end].chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if depth == 0 && item_start && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ if depth == 0 && item_start && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                item_start = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// The index of the `}` closing a group whose `{` came just before `text`.
fn matching_close(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Every import in `files` (paths relative to `src`, with their text) that points from a
/// module to one listed before it in `order`, or to or from a module missing from `order`.
fn violations(order: &[String], files: &[(PathBuf, String)]) -> Vec<Violation> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut found = Vec::new();
    // Files declared as test-only modules are found while reading their parents; read
    // parents first (shorter paths), so a test-only file is known before it is read.
    let mut sorted: Vec<&(PathBuf, String)> = files.iter().collect();
    sorted.sort_by_key(|(p, _)| (p.components().count(), p.clone()));
    for (path, text) in sorted {
        if test_only
            .iter()
            .any(|t| path.starts_with(t) || *path == t.with_extension("rs"))
        {
            continue;
        }
        let top = top_module(path);
        let Some(top) = top else { continue };
        let mut tests = Vec::new();
        let code = code_only(text, &mut tests);
        let dir = module_dir(path);
        for t in tests {
            test_only.insert(dir.join(t));
        }
        for (line, to) in imports(&code) {
            if to == top || !order.contains(&to) && !is_module_like(&to) {
                continue;
            }
            let upward = match (rank(&top), rank(&to)) {
                (Some(from), Some(to)) => to < from,
                _ => true,
            };
            if upward {
                found.push(Violation {
                    file: path.display().to_string(),
                    line,
                    from: top.clone(),
                    to,
                });
            }
        }
    }
    found
}

/// Lower-case names are modules; `crate::Type` re-exports at the root are not imports of
/// a module.
fn is_module_like(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

/// The top-level module a file belongs to (`None` for `lib.rs` and `main.rs`).
fn top_module(path: &Path) -> Option<String> {
    let first = path.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// The directory a file's child modules live in: `a/mod.rs` → `a`, `a/b.rs` → `a/b`.
fn module_dir(path: &Path) -> PathBuf {
    match path.file_name().and_then(|f| f.to_str()) {
        Some("mod.rs") => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => path.with_extension(""),
    }
}

fn read_tree(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text =
                    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_declared_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let order = declared_order(&lib);
    let modules = declared_modules(&lib);
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        modules, listed,
        "every module lib.rs declares must be listed once in its \"Layers\" doc section"
    );
    let found = violations(&order, &read_tree(&src));
    assert!(
        found.is_empty(),
        "imports pointing up the layers of src/lib.rs:\n{}",
        found
            .iter()
            .map(|v| format!("  {}:{}: {} imports {}", v.file, v.line, v.from, v.to))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn order(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn tree(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect()
}

#[test]
fn an_inverted_import_is_found_with_its_file_and_line() {
    let files = tree(&[
        ("top.rs", "use crate::bottom::X;\n"),
        ("bottom/mod.rs", "mod inner;\n"),
        ("bottom/inner.rs", "//! doc\n\nuse crate::top::Y;\n"),
    ]);
    let found = violations(&order(&["top", "bottom"]), &files);
    assert_eq!(
        found,
        vec![Violation {
            file: "bottom/inner.rs".into(),
            line: 3,
            from: "bottom".into(),
            to: "top".into(),
        }]
    );
}

#[test]
fn grouped_and_multiline_imports_are_read() {
    let files = tree(&[(
        "low.rs",
        "use crate::{\n    mid::A,\n    high::{B, C},\n};\nfn f() { crate::mid::g(); }\n",
    )]);
    let found = violations(&order(&["high", "mid", "low"]), &files);
    let targets: Vec<&str> = found.iter().map(|v| v.to.as_str()).collect();
    assert_eq!(targets, ["mid", "high", "mid"]);
}

#[test]
fn comments_strings_and_test_modules_are_not_imports() {
    let files = tree(&[
        (
            "low.rs",
            "// see crate::high\nconst S: &str = \"crate::high\";\nconst R: &str = r#\"crate::high\"#;\n\
             fn f<'a>(c: char) -> bool { c == '{' }\n\
             #[cfg(test)]\nmod tests {\n    use crate::high::X;\n    fn g() { let _ = '}'; }\n}\n\
             #[cfg(test)]\nmod more;\nuse crate::lower::Z;\n",
        ),
        ("low/more.rs", "use crate::high::Y;\n"),
    ]);
    let found = violations(&order(&["high", "low", "lower"]), &files);
    assert_eq!(found, vec![]);
}

#[test]
fn a_module_missing_from_the_order_is_a_violation() {
    let files = tree(&[("low.rs", "use crate::stray::X;\n")]);
    let found = violations(&order(&["low"]), &files);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to, "stray");
}

#[test]
fn the_order_is_read_from_the_doc_comment() {
    let lib = "//! # Layers\n//!\n//! 1. `cli` — top.\n//! 2. `agent` — below.\n//! text `x`\n\npub mod cli;\nmod agent;\n";
    assert_eq!(declared_order(lib), ["cli", "agent"]);
    assert_eq!(
        declared_modules(lib),
        BTreeSet::from(["agent".to_owned(), "cli".to_owned()])
    );
}
