//! Which parts of its variables a script reads, found once when it is compiled, and the
//! per-evaluation views that hold just those parts.
//!
//! A filter such as `event.body.ref == "refs/heads/main"` reads one string of the event;
//! giving it a copy of the whole event (a deep copy of every map and array in it) cost most
//! of its evaluation time. Rhai's shared values cannot stand in for the copy: reading a
//! property of a shared value takes its write lock, so scripts on different threads reading
//! the same event would wait on (and after five tries fail with) a data race, and Rhai's
//! size checks panic on a shared value nested in a map. So instead each evaluation gets a
//! fresh value that holds only the paths the script can reach.
//!
//! The analysis walks the compiled AST. A variable that only ever appears at the root of a
//! property chain (`event.body.ref`, `event.body.commits.len()`, `event.a?.b[0]`) needs only
//! the values at the end of each chain's leading properties (`body.ref`, `body.commits`,
//! `a`), each whole; any other appearance (`event` alone, `event["a"]`, an argument, a
//! closure capture) needs the whole variable. Property access on a map is a key lookup (a
//! missing key reads as `()`), so a map that holds only the needed keys answers every
//! reachable lookup exactly as the whole map would; a value that is not a map is kept whole
//! wherever a path meets it, so getters such as `s.len` see the same value.

use std::collections::BTreeMap;

use rhai::{ASTNode, Dynamic, Expr, Stmt, AST};
use serde_json::Value;

/// What a script reads of one of its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// Never read: `()` will do.
    Nothing,
    /// Read as a whole value.
    Whole,
    /// Only these property paths are read (each path's end whole).
    Paths(PathTree),
}

/// Property paths from a variable, as a tree; a node marked `whole` is read entirely.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathTree {
    whole: bool,
    children: BTreeMap<String, PathTree>,
}

impl PathTree {
    fn add(&mut self, path: &[String]) {
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some(_) if self.whole => {}
            Some((first, rest)) => self.children.entry(first.clone()).or_default().add(rest),
        }
    }

    /// Whether the value at this node is read entirely.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// The properties read below this node, each with the paths read below it.
    pub fn children(&self) -> impl Iterator<Item = (&str, &PathTree)> {
        self.children.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The parts of a Rhai value on the paths (the value itself where it is not a map).
    pub fn project(&self, value: &Dynamic) -> Dynamic {
        if self.whole || !value.is_map() {
            return value.clone();
        }
        let Ok(map) = value.as_map_ref() else {
            return value.clone();
        };
        let mut out = rhai::Map::new();
        for (key, sub) in &self.children {
            if let Some(v) = map.get(key.as_str()) {
                out.insert(key.as_str().into(), sub.project(v));
            }
        }
        Dynamic::from_map(out)
    }

    /// The parts of a JSON value on the paths, converted as [`super::to_dynamic`] would.
    pub fn project_json(&self, value: &Value) -> Dynamic {
        match value {
            Value::Object(map) if !self.whole => {
                let mut out = rhai::Map::new();
                for (key, sub) in &self.children {
                    if let Some(v) = map.get(key) {
                        out.insert(key.as_str().into(), sub.project_json(v));
                    }
                }
                Dynamic::from_map(out)
            }
            other => super::to_dynamic(other),
        }
    }
}

impl Reads {
    /// The view of `value` this script needs, from a Rhai value.
    pub fn project(&self, value: &Dynamic) -> Dynamic {
        match self {
            Reads::Nothing => Dynamic::UNIT,
            Reads::Whole => value.clone(),
            Reads::Paths(tree) => tree.project(value),
        }
    }
}

/// What the script in `ast` reads of each of `vars`.
pub(super) fn analyse(ast: &AST, vars: &[&str]) -> Vec<Reads> {
    let mut trees: Vec<Option<PathTree>> = vec![None; vars.len()];
    // Set when the script may read variables where the walk cannot see: every variable it
    // uses is then read whole.
    let mut unsure = false;
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            // `f!()` runs a function in the caller's scope (an imported one's body is not in
            // this AST); `break value` is an expression the walk does not visit.
            Some(ASTNode::Stmt(Stmt::FnCall(call, ..)))
            | Some(ASTNode::Expr(Expr::FnCall(call, ..) | Expr::MethodCall(call, ..)))
                if call.capture_parent_scope =>
            {
                unsure = true;
            }
            Some(ASTNode::Stmt(Stmt::BreakLoop(Some(_), ..))) => unsure = true,
            Some(ASTNode::Expr(Expr::Variable(var, ..))) if var.2.is_empty() => {
                if let Some(i) = vars.iter().position(|v| *v == var.1.as_str()) {
                    let read = chain_from(path);
                    trees[i].get_or_insert_with(PathTree::default).add(&read);
                }
            }
            _ => {}
        }
        true
    });
    trees
        .into_iter()
        .map(|t| match t {
            None => Reads::Nothing,
            Some(_) if unsure => Reads::Whole,
            Some(t) if t.whole => Reads::Whole,
            Some(t) => Reads::Paths(t),
        })
        .collect()
}

/// The leading property names of the chain whose root is the variable at the end of `path`
/// (empty when the variable is used otherwise: it is then read whole).
fn chain_from(path: &[ASTNode]) -> Vec<String> {
    let [.., ASTNode::Expr(parent), ASTNode::Expr(var)] = path else {
        return Vec::new();
    };
    let Expr::Dot(chain, ..) = parent else {
        return Vec::new();
    };
    if !std::ptr::eq(&chain.lhs, *var) {
        return Vec::new();
    }
    let mut names = Vec::new();
    let mut next = &chain.rhs;
    loop {
        match next {
            Expr::Property(p, ..) => {
                names.push(p.2.to_string());
                return names;
            }
            Expr::Dot(x, ..) => match &x.lhs {
                Expr::Property(p, ..) => {
                    names.push(p.2.to_string());
                    next = &x.rhs;
                }
                _ => return names,
            },
            Expr::Index(x, ..) => {
                if let Expr::Property(p, ..) = &x.lhs {
                    names.push(p.2.to_string());
                }
                return names;
            }
            _ => return names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{to_dynamic, Limits, ScriptHost, ScriptKind};
    use serde_json::json;

    fn data() -> Value {
        json!({
            "body": {"ref": "refs/heads/main", "deleted": false, "n": 3, "len": 7,
                     "commits": [{"id": "a1", "m": "x"}, {"id": "b2", "m": "y"}],
                     "repo": {"name": "t", "owner": {"login": "o"}}, "s": "text", "nothing": null},
            "header": {"X-Event": ["push"]},
            "list": [1, 2, 3],
        })
    }

    fn paths(reads: &Reads) -> Vec<String> {
        fn walk(t: &PathTree, at: String, out: &mut Vec<String>) {
            if t.whole {
                out.push(at);
                return;
            }
            for (k, sub) in &t.children {
                walk(sub, format!("{at}.{k}"), out);
            }
        }
        match reads {
            Reads::Nothing => vec!["-".into()],
            Reads::Whole => vec!["*".into()],
            Reads::Paths(t) => {
                let mut out = Vec::new();
                walk(t, String::new(), &mut out);
                out
            }
        }
    }

    #[test]
    fn finds_the_paths_a_script_reads() {
        let h = ScriptHost::new(Limits::default(), vec![]);
        for (src, event, ctx) in [
            (
                "event.body.ref == \"x\" && !event.body.deleted",
                &[".body.deleted", ".body.ref"][..],
                &["-"][..],
            ),
            (
                "event.body.commits.len() > ctx.id.len()",
                &[".body.commits"],
                &[".id"],
            ),
            ("event.body.commits[0].id", &[".body.commits"], &["-"]),
            (
                "event.body?.repo.owner.login",
                &[".body.repo.owner.login"],
                &["-"],
            ),
            (
                "event.body.repo.owner.login; event.body.repo",
                &[".body.repo"],
                &["-"],
            ),
            ("event[\"body\"]", &["*"], &["-"]),
            ("let e = event; e.body", &["*"], &["-"]),
            ("type_of(event.body)", &[".body"], &["-"]),
            ("event.body.keys().len()", &[".body"], &["-"]),
            ("ctx", &["-"], &["*"]),
            ("let f = |x| event.body.n + x; f.call(1)", &["*"], &["-"]),
            ("fn g() { event.body.n } g!()", &["*"], &["-"]),
            ("fn g() { event.body.n } let x = g!(); x", &["*"], &["-"]),
            (
                "let x = loop { break event; }; event.body.n + x.list[0]",
                &["*"],
                &["-"],
            ),
        ] {
            let s = h.compile(ScriptKind::Filter, src).unwrap();
            assert_eq!(paths(s.reads("event")), event, "event in {src}");
            assert_eq!(paths(s.reads("ctx")), ctx, "ctx in {src}");
        }
    }

    /// Every script gives the same result (value or error) with the projected view as with
    /// the whole event.
    #[test]
    fn projected_views_answer_as_the_whole_event_does() {
        let h = ScriptHost::new(Limits::default(), vec![]);
        let data = data();
        let whole = to_dynamic(&data);
        let ctx = to_dynamic(&json!({"id": "e1", "source": "github", "type": "webhook"}));
        let scripts = [
            "event.body.ref == \"refs/heads/main\" && !event.body.deleted",
            "event.body.commits.len()",
            "event.body.commits[1].id",
            "event.body.commits.map(|c| c.id)",
            "event.body.missing",
            "event.body.missing.deeper",
            "event.nope?.deeper",
            "event.body.s.len",
            "event.body.s.len()",
            "event.body.len",
            "event.body.n + event.list[2]",
            "event.body.nothing == ()",
            "let x = loop { break event; }; x.list[0] + event.body.n",
            "fn g() { event.body.n } g!()",
            "event.body.ref.x",
            "event.body.ref.sub_string(0, 4)",
            "\"ref\" in event.body",
            "event.body.keys()",
            "event.body.repo",
            "event.body.repo.owner.login + ctx.id",
            "type_of(event.body.repo.owner)",
            "`${event.body.repo.name}-${ctx.source}`",
            "#{ b: event.body.repo }",
            "#{ whole: event }.whole.list",
            "let x = event.body.repo; x.name = \"changed\"; x",
            "event.body.repo.name = \"changed\"; event",
            "event.body.n += 1; event.body.n",
            "switch event.body.ref { \"refs/heads/main\" => 1, _ => 2 }",
            "let t = 0; for c in event.body.commits { t += c.id.len() } t",
            "let i = 0; while i < event.list.len() { i += 1 } i",
            "if event.header[\"X-Event\"][0] == \"push\" { event.body.n } else { 0 }",
            "let f = |k| event.body.repo[k]; f.call(\"name\")",
            "fn g(e) { e.body.n * 2 } g(event)",
            "event.body.commits.filter(|c| c.id == \"b2\").len() == 1",
            "event.list.contains(2) && event.body.commits[0].m == \"x\"",
            "event.body.commits[5]",
            "ctx.nope",
            "event.body.repo.owner?.login ?? \"none\"",
            "event.list.reduce(|s, x| s + x, 0)",
            "throw event.body.s",
        ];
        for src in scripts {
            let s = h.compile(ScriptKind::Filter, src).unwrap();
            let run = |event: Dynamic, ctx: Dynamic| {
                format!("{:?}", h.eval(&s, [("event", event), ("ctx", ctx)]))
            };
            let full = run(whole.clone(), ctx.clone());
            let projected = run(
                s.reads("event").project(&whole),
                s.reads("ctx").project(&ctx),
            );
            assert_eq!(projected, full, "{src}");
            if let Reads::Paths(t) = s.reads("event") {
                let from_json = run(t.project_json(&data), s.reads("ctx").project(&ctx));
                assert_eq!(from_json, full, "{src} (from JSON)");
            }
        }
    }
}
