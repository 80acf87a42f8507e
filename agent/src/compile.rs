//! The compile context: what every compile step of the validation pass is handed (the
//! script host, the document's origin, the library directories and the error list), and
//! the compilation of inline and file scripts with positioned errors.

use std::path::PathBuf;

use serde_saphyr::Spanned;

use crate::manifest::{ManifestError, Origin, ScriptSource};
use crate::script::{CompiledScript, ScriptError, ScriptHost, ScriptKind};

/// What a compile step needs: the script host, where the document came from, and the place
/// to put errors.
pub struct CompileContext<'a> {
    /// The shared engine.
    pub host: &'a ScriptHost,
    /// The document being compiled.
    pub origin: &'a Origin,
    /// Library directories, also searched for `scriptFile`.
    pub library_dirs: &'a [PathBuf],
    /// Errors found so far.
    pub errors: &'a mut Vec<ManifestError>,
}

impl CompileContext<'_> {
    /// Records an error at a location of the document.
    pub fn error(
        &mut self,
        loc: Option<&serde_saphyr::Location>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let e = self.origin.error(loc, field, message);
        self.errors.push(e);
    }

    /// Records an error with a hint.
    pub fn error_with_hint(
        &mut self,
        loc: Option<&serde_saphyr::Location>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let e = self.origin.error(loc, field, message).with_hint(hint);
        self.errors.push(e);
    }

    /// Compiles an inline script or a `scriptFile`; `field` is the path of the `script` field.
    pub fn script(
        &mut self,
        field: &str,
        kind: ScriptKind,
        source: &ScriptSource,
    ) -> Option<CompiledScript> {
        match (&source.script, &source.script_file) {
            (Some(s), Some(_)) => {
                self.error(
                    Some(&s.referenced),
                    field,
                    "set either the script or the script file, not both",
                );
                None
            }
            (Some(s), None) => self.inline_script(field, kind, s),
            (None, Some(f)) => self.file_script(&format!("{field}File"), kind, f),
            (None, None) => None,
        }
    }

    fn inline_script(
        &mut self,
        field: &str,
        kind: ScriptKind,
        s: &Spanned<String>,
    ) -> Option<CompiledScript> {
        match self.host.compile(kind, &s.value) {
            Ok(c) => Some(c),
            Err(e) => {
                let (line, column) = script_error_position(&e);
                let position = self.origin.script_position(&s.referenced, line, column);
                let mut err = script_manifest_error(position, field, kind, &e);
                if looks_like_lua(&s.value) {
                    err.message = format!(
                        "Lua is not supported; this script does not compile as Rhai ({})",
                        err.message.trim_start_matches("Rhai: ")
                    );
                    err = err.with_hint(
                        "this looks like Lua (Argo); triggerd scripts are Rhai: write `event.body.a == \"b\"` for `if event.body.a == \"b\" then return true end`",
                    );
                }
                self.errors.push(err);
                None
            }
        }
    }

    fn file_script(
        &mut self,
        field: &str,
        kind: ScriptKind,
        f: &Spanned<String>,
    ) -> Option<CompiledScript> {
        let roots = self.origin.file_roots(self.library_dirs);
        let path = match roots.existing(&f.value, crate::files::RHAI_SCRIPT) {
            Ok(p) => p,
            Err(e) => {
                let hint = e.hint();
                self.error_with_hint(Some(&f.referenced), field, e.to_string(), hint);
                return None;
            }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    Some(&f.referenced),
                    field,
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        match self.host.compile(kind, &text) {
            Ok(c) => Some(c),
            Err(e) => {
                let (line, column) = script_error_position(&e);
                let position = crate::manifest::Position {
                    file: path,
                    line: line as u64,
                    column: column as u64,
                };
                self.errors
                    .push(script_manifest_error(position, field, kind, &e));
                None
            }
        }
    }
}

/// Argo sensors carry Lua filter scripts; recognise them to point users at the Rhai form.
fn looks_like_lua(source: &str) -> bool {
    let words: Vec<&str> = source
        .split(|c: char| !c.is_alphanumeric() && c != '~')
        .collect();
    (words.contains(&"then") && words.contains(&"end"))
        || source.contains("~=")
        || source.contains("local ")
        || has_single_quoted_string(source)
}

/// Lua quotes strings with `'…'`; in Rhai that is a character literal, one character long.
fn has_single_quoted_string(source: &str) -> bool {
    source
        .split('\'')
        .skip(1)
        .step_by(2)
        .any(|inside| inside.chars().count() > 1 && !inside.contains('\n'))
}

fn script_error_position(e: &ScriptError) -> (usize, usize) {
    match e {
        ScriptError::Compile { line, column, .. } | ScriptError::Runtime { line, column, .. } => {
            (*line, *column)
        }
        _ => (1, 1),
    }
}

fn script_manifest_error(
    position: crate::manifest::Position,
    field: &str,
    kind: ScriptKind,
    e: &ScriptError,
) -> ManifestError {
    let message = match e {
        ScriptError::Compile { message, .. } | ScriptError::Runtime { message, .. } => {
            message.clone()
        }
        other => other.to_string(),
    };
    let vars = kind.variables().join(", ");
    ManifestError::new(position, field, format!("Rhai: {message}"))
        .with_hint(format!("variables in scope here: {vars}"))
}

/// Compiles one manifest fragment outside any file (offline tools, conformance tests):
/// `yaml` (or JSON) is deserialized into `T` and handed to `compile` with a context whose
/// file is `<inline>`; every error found is returned.
pub fn compile_standalone<T, R>(
    host: &ScriptHost,
    library_dirs: &[PathBuf],
    yaml: &str,
    compile: impl FnOnce(&mut CompileContext<'_>, &T) -> Option<R>,
) -> Result<R, Vec<ManifestError>>
where
    T: serde::de::DeserializeOwned,
{
    let origin = Origin {
        file: PathBuf::from("<inline>"),
        line_offset: 0,
        text: yaml.into(),
        on_disk: false,
    };
    let value: T = crate::manifest::parse_fragment(&origin, yaml).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut ctx = CompileContext {
        host,
        origin: &origin,
        library_dirs,
        errors: &mut errors,
    };
    let out = compile(&mut ctx, &value);
    match out {
        Some(r) if errors.is_empty() => Ok(r),
        _ => Err(errors),
    }
}
