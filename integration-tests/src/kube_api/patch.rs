//! The four PATCH content types.
//!
//! Server-side apply is modelled as "merge the applied configuration into the live object"
//! (strategic merge for built-in kinds, JSON merge for custom resources). Managed fields,
//! field ownership and apply conflicts are NOT modelled: fields a manager stops applying are
//! kept, and `force` makes no difference.

use serde_json::Value;

use super::resource::ResourceType;
use super::status::ApiError;
use super::strategic::strategic_merge;

/// A PATCH body's type, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

const ACCEPTED_BUILTIN: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
const ACCEPTED_CUSTOM: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

impl PatchKind {
    /// The patch type for `content_type` on resource `rt`; 415 like the real server for an
    /// unknown type or a strategic merge patch of a custom resource.
    pub fn for_request(
        content_type: Option<&str>,
        rt: &ResourceType,
    ) -> Result<PatchKind, ApiError> {
        let accepted = if rt.builtin {
            ACCEPTED_BUILTIN
        } else {
            ACCEPTED_CUSTOM
        };
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/strategic-merge-patch+json" if rt.builtin => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" => Ok(PatchKind::Apply),
            _ => Err(ApiError::unsupported_media_type(accepted)),
        }
    }
}

/// Parses a PATCH body: JSON for the JSON types, YAML (JSON is YAML) for apply.
pub(crate) fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match kind {
        PatchKind::Apply => serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        _ => Err(ApiError::bad_request(format!(
            "error decoding patch: invalid JSON: {}",
            text.chars().take(80).collect::<String>()
        ))),
    }
}

/// Applies a parsed patch to `target` (the live object as clients see it).
pub(crate) fn apply(
    kind: PatchKind,
    rt: &ResourceType,
    target: &mut Value,
    patch: &Value,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(target, &ops).map_err(|e| ApiError::patch_rejected(e.to_string()))
        }
        PatchKind::Strategic => strategic_merge(target, patch).map_err(ApiError::bad_request),
        PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("apply patch must be an object"));
            }
            if rt.builtin {
                strategic_merge(target, patch).map_err(ApiError::bad_request)
            } else {
                json_patch::merge(target, patch);
                Ok(())
            }
        }
    }
}
