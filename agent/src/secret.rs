//! Secret values (webhook tokens, client credentials, TLS files) for sources, triggers and
//! their clients, resolved from mounted secret files or the environment.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::manifest::SecretRef;

/// A secret could not be read.
#[derive(Debug, Error)]
pub enum SecretError {
    /// Nothing says where the secret is.
    #[error("secret reference needs name and key, env, or file")]
    Incomplete,
    /// A certificate or key must be a file (`file:` or a Secret under `--secrets-dir`).
    #[error(
        "certificates and keys must be files: use `file:`, or `name`/`key` with --secrets-dir"
    )]
    NotAFile,
    /// No source had it.
    #[error("secret {0} not found (looked in: {1})")]
    NotFound(String, String),
}

/// Reads a secret: `env`, then `file`, then for `{name, key}` the environment variable
/// `TRIGGERD_SECRET_<NAME>_<KEY>` and the file `<secrets_dir>/<name>/<key>`.
pub fn resolve_secret(r: &SecretRef, secrets_dir: Option<&Path>) -> Result<String, SecretError> {
    let mut looked = Vec::new();
    if let Some(var) = &r.env {
        if let Ok(v) = std::env::var(var) {
            return Ok(v);
        }
        looked.push(format!("env {var}"));
    }
    if let Some(file) = &r.file {
        if let Ok(v) = std::fs::read_to_string(file) {
            return Ok(v.trim_end_matches(['\n', '\r']).to_owned());
        }
        looked.push(format!("file {file}"));
    }
    if let (Some(name), Some(key)) = (&r.name, &r.key) {
        let var = format!("TRIGGERD_SECRET_{}_{}", env_part(name), env_part(key));
        if let Ok(v) = std::env::var(&var) {
            return Ok(v);
        }
        looked.push(format!("env {var}"));
        if let Some(dir) = secrets_dir {
            let path = dir.join(name).join(key);
            if let Ok(v) = std::fs::read_to_string(&path) {
                return Ok(v.trim_end_matches(['\n', '\r']).to_owned());
            }
            looked.push(format!("file {}", path.display()));
        }
    }
    if looked.is_empty() {
        return Err(SecretError::Incomplete);
    }
    let what = match (&r.name, &r.key) {
        (Some(n), Some(k)) => format!("{n}/{k}"),
        _ => "reference".into(),
    };
    Err(SecretError::NotFound(what, looked.join(", ")))
}

/// The file holding a secret, for clients that read certificates and keys from paths: `file`,
/// else the mounted `<secrets_dir>/<name>/<key>`. A secret given only as an environment
/// variable is refused (keys are not written to disk on the agent's behalf).
pub fn secret_file(r: &SecretRef, secrets_dir: Option<&Path>) -> Result<PathBuf, SecretError> {
    let mut looked = Vec::new();
    if let Some(file) = &r.file {
        let path = PathBuf::from(file);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(format!("file {file}"));
    }
    if let (Some(name), Some(key), Some(dir)) = (&r.name, &r.key, secrets_dir) {
        let path = dir.join(name).join(key);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(format!("file {}", path.display()));
    }
    if looked.is_empty() {
        return Err(SecretError::NotAFile);
    }
    let what = match (&r.name, &r.key) {
        (Some(n), Some(k)) => format!("{n}/{k}"),
        _ => "reference".into(),
    };
    Err(SecretError::NotFound(what, looked.join(", ")))
}

fn env_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mounted_secret_files() {
        let dir = std::env::temp_dir().join(format!("triggerd-secret-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("hook")).unwrap();
        std::fs::write(dir.join("hook").join("token"), "s3cret\n").unwrap();
        let r = SecretRef {
            name: Some("hook".into()),
            key: Some("token".into()),
            env: None,
            file: None,
            optional: None,
        };
        assert_eq!(resolve_secret(&r, Some(&dir)).unwrap(), "s3cret");
        let missing = SecretRef {
            key: Some("other".into()),
            ..r
        };
        assert!(matches!(
            resolve_secret(&missing, Some(&dir)),
            Err(SecretError::NotFound(..))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
