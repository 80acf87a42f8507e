//! The server's objects and their history: every write takes the next number of one global
//! `resourceVersion` counter and is recorded (bounded) for watches.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use serde_json::{json, Map, Value};

use super::objects::{self, view};
use super::patch::{self, PatchKind};
use super::resource::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
pub(crate) type ObjKey = (String, String);
/// `(group, plural)`: all versions of a resource share one storage.
pub(crate) type StorageKey = (String, String);

/// How many changes watches can resume from before they get 410 Gone.
const HISTORY_LIMIT: usize = 10_000;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One recorded write.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub storage: StorageKey,
    pub namespace: String,
    pub kind: ChangeType,
    /// The object after the change (for a delete: its last state, at the delete's version).
    pub object: Value,
    /// The object before a modification, so selector-filtered watches can tell an object
    /// entering or leaving the selection.
    pub previous: Option<Value>,
}

/// Selection of a LIST or WATCH.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    /// Whether `object` (in `namespace`) is selected.
    pub fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// The whole state: resource types, objects, resourceVersion counter and history.
pub(crate) struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<StorageKey, BTreeMap<ObjKey, Value>>,
    rv: u64,
    history: VecDeque<Change>,
    /// Every change with a version above this is still in `history`.
    floor: u64,
}

impl Store {
    /// The built-in resource types and the namespaces every cluster has.
    pub fn new() -> Store {
        let mut store = Store {
            types: resource::builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            floor: 0,
        };
        let ns_type = store.find("", "v1", "namespaces").cloned();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if let Some(rt) = &ns_type {
                let created = store.create(rt, None, json!({"metadata": {"name": ns}}), false);
                debug_assert!(created.is_ok(), "creating namespace {ns}");
            }
        }
        store
    }

    /// All served resource types.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `group`/`version`/`plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".into()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_owned())))
    }

    fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
        (ns.to_owned(), name.to_owned())
    }

    fn stored(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<&Value, ApiError> {
        self.objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&Self::key(rt, ns, name)))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
    }

    /// GET of one object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.stored(rt, ns, name).map(|o| view(rt, o))
    }

    /// LIST with selectors and `limit`/`continue` paging.
    pub fn list(
        &self,
        rt: &ResourceType,
        selection: &Selection,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (after, list_rv) = match continue_token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let (rv, key) = decode_continue(token).ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
                (Some(key), rv)
            }
            None => (None, self.rv),
        };
        let matching: Vec<(&ObjKey, &Value)> = self
            .objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .filter(|(k, o)| selection.matches(&k.0, o))
            .collect();
        let take = limit
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX)
            .min(matching.len());
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".into(), json!(list_rv.to_string()));
        if take < matching.len() {
            let last = matching[take - 1].0;
            metadata.insert("continue".into(), json!(encode_continue(list_rv, last)));
            metadata.insert("remainingItemCount".into(), json!(matching.len() - take));
        }
        let items: Vec<Value> = matching[..take].iter().map(|(_, o)| view(rt, o)).collect();
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// POST. Returns the created object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let Some(obj) = body.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        };
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj.insert("metadata".into(), json!({}));
        }
        let body_ns = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ns = if rt.namespaced {
            let ns = ns.unwrap_or("");
            if body_ns.as_deref().is_some_and(|b| !b.is_empty() && b != ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::namespace_not_found(ns));
            }
            Some(ns)
        } else {
            None
        };
        let name = match body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(name) => name.to_owned(),
            None => match body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            },
        };
        objects::validate_name(rt, &name)?;
        let key = Self::key(rt, ns, &name);
        if self
            .objects
            .get(&rt.storage_key())
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(rt, &name));
        }
        let mut obj = body;
        if rt.status {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        let meta = objects::metadata_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        match ns {
            Some(ns) => meta.insert("namespace".into(), json!(ns)),
            None => meta.remove("namespace"),
        };
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(objects::now()));
        if rt.generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        objects::set_type(rt, &mut obj);
        let crd_types = objects::on_write(rt, &mut obj, None)?;
        if dry_run {
            return Ok(view(rt, &obj));
        }
        self.rv += 1;
        objects::metadata_mut(&mut obj)
            .insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects
            .entry(rt.storage_key())
            .or_default()
            .insert(key.clone(), obj.clone());
        self.record(Change {
            rv: self.rv,
            storage: rt.storage_key(),
            namespace: key.0,
            kind: ChangeType::Added,
            object: obj.clone(),
            previous: None,
        });
        if let Some(types) = crd_types {
            self.register(&name, types);
        }
        Ok(view(rt, &obj))
    }

    /// PUT of the object or of its `status` subresource.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let live = self.stored(rt, ns, name)?.clone();
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        if let Some(body_name) = body.pointer("/metadata/name").and_then(Value::as_str) {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if rt.namespaced {
            if let Some(body_ns) = body.pointer("/metadata/namespace").and_then(Value::as_str) {
                if !body_ns.is_empty() && Some(body_ns) != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        match body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            Some(rv) if Some(rv) != objects::resource_version(&live) => {
                return Err(ApiError::conflict(rt, name))
            }
            Some(_) => {}
            None if !rt.builtin => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                ))
            }
            None => {}
        }
        let new = objects::merge_for_update(rt, &live, body, subresource);
        self.commit_update(rt, live, new, dry_run)
    }

    /// PATCH of the object or of its `status` subresource. `Ok((object, created))`: a server-side
    /// apply of a missing object creates it.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per part of a PATCH request"
    )]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        kind: PatchKind,
        body: &[u8],
        field_manager: Option<&str>,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let parsed = patch::parse_body(kind, body)?;
        if kind == PatchKind::Apply {
            if field_manager.is_none_or(str::is_empty) {
                return Err(ApiError::invalid_options(
                    "PatchOptions",
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            if let Some(applied) = parsed.pointer("/metadata/name").and_then(Value::as_str) {
                if applied != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({applied}) does not match the name on the URL ({name})"
                    )));
                }
            }
            if subresource.is_none() && self.stored(rt, ns, name).is_err() {
                let mut obj = parsed;
                if let Some(meta) = obj
                    .as_object_mut()
                    .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
                {
                    if let Some(meta) = meta.as_object_mut() {
                        meta.insert("name".into(), json!(name));
                    }
                }
                return self.create(rt, ns, obj, dry_run).map(|o| (o, true));
            }
        }
        let live = self.stored(rt, ns, name)?.clone();
        let mut doc = view(rt, &live);
        patch::apply(kind, rt, &mut doc, &parsed)?;
        if let Some(rv) = doc
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if Some(rv) != objects::resource_version(&live) {
                return Err(ApiError::conflict(rt, name));
            }
        }
        let new = objects::merge_for_update(rt, &live, doc, subresource);
        self.commit_update(rt, live, new, dry_run)
            .map(|o| (o, false))
    }

    fn commit_update(
        &mut self,
        rt: &ResourceType,
        live: Value,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let crd_types = objects::on_write(rt, &mut new, Some(&live))?;
        if rt.generation && objects::spec_changed(rt, &live, &new) {
            let generation = live
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            objects::metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        // A write that changes nothing keeps the resourceVersion and sends no watch event.
        if objects::same_content(rt, &live, &new) {
            return Ok(view(rt, &live));
        }
        if dry_run {
            return Ok(view(rt, &new));
        }
        self.rv += 1;
        objects::metadata_mut(&mut new)
            .insert("resourceVersion".into(), json!(self.rv.to_string()));
        let name = objects::name(&new).to_owned();
        let key = Self::key(rt, objects::namespace(&new), &name);
        self.objects
            .entry(rt.storage_key())
            .or_default()
            .insert(key.clone(), new.clone());
        self.record(Change {
            rv: self.rv,
            storage: rt.storage_key(),
            namespace: key.0,
            kind: ChangeType::Modified,
            object: new.clone(),
            previous: Some(live),
        });
        if let Some(types) = crd_types {
            self.register(&name, types);
        }
        Ok(view(rt, &new))
    }

    /// DELETE of one object: removed at once (finalizers and graceful deletion are not
    /// modelled). Deleting a namespace deletes everything in it; deleting a CRD unregisters
    /// its resource and deletes its objects.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let found = self.stored(rt, ns, name)?.clone();
        if dry_run {
            return Ok(view(rt, &found));
        }
        let deleted = self.remove(&rt.storage_key(), &Self::key(rt, ns, name));
        if rt.plural == "namespaces" && rt.group.is_empty() {
            let inside: Vec<(StorageKey, ObjKey)> = self
                .objects
                .iter()
                .flat_map(|(s, m)| {
                    m.keys()
                        .filter(|k| k.0 == name)
                        .map(move |k| (s.clone(), k.clone()))
                })
                .collect();
            for (storage, key) in inside {
                self.remove(&storage, &key);
            }
        }
        if rt.crd.is_none() && rt.plural == "customresourcedefinitions" {
            if let Some(storage) = self
                .types
                .iter()
                .find(|t| t.crd.as_deref() == Some(name))
                .map(|t| t.storage_key())
            {
                let keys: Vec<ObjKey> = self
                    .objects
                    .get(&storage)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for key in keys {
                    self.remove(&storage, &key);
                }
            }
            self.types.retain(|t| t.crd.as_deref() != Some(name));
        }
        Ok(view(rt, &deleted.unwrap_or(found)))
    }

    /// DELETE of a collection: every selected object; answers the list of deleted objects.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        selection: &Selection,
    ) -> Result<Value, ApiError> {
        let keys: Vec<ObjKey> = self
            .objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(k, o)| selection.matches(&k.0, o))
            .map(|(k, _)| k.clone())
            .collect();
        let items: Vec<Value> = keys
            .iter()
            .filter_map(|k| self.remove(&rt.storage_key(), k))
            .map(|o| view(rt, &o))
            .collect();
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    fn remove(&mut self, storage: &StorageKey, key: &ObjKey) -> Option<Value> {
        let mut obj = self.objects.get_mut(storage)?.remove(key)?;
        self.rv += 1;
        objects::metadata_mut(&mut obj)
            .insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(Change {
            rv: self.rv,
            storage: storage.clone(),
            namespace: key.0.clone(),
            kind: ChangeType::Deleted,
            object: obj.clone(),
            previous: None,
        });
        Some(obj)
    }

    fn register(&mut self, crd_name: &str, types: Vec<ResourceType>) {
        self.types.retain(|t| t.crd.as_deref() != Some(crd_name));
        self.types.extend(types);
    }

    /// Changes after `rv`, or `Err(oldest)` when they are no longer all in the history.
    pub fn changes_since(&self, rv: u64) -> Result<impl Iterator<Item = &Change>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        Ok(self.history.iter().filter(move |c| c.rv > rv))
    }

    /// Whether a watch may start from `rv`.
    pub fn can_resume(&self, rv: u64) -> Result<(), u64> {
        if rv < self.floor {
            Err(self.floor)
        } else {
            Ok(())
        }
    }

    /// Every object of a resource that `selection` selects, in key order.
    pub fn selected(&self, rt: &ResourceType, selection: &Selection) -> Vec<Value> {
        self.objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(k, o)| selection.matches(&k.0, o))
            .map(|(_, o)| view(rt, o))
            .collect()
    }

    /// Forget the history: every resourceVersion issued so far becomes too old to watch from.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    hex::encode(json!({"rv": rv, "ns": key.0, "name": key.1}).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, ObjKey)> {
    let bytes = hex::decode(token).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        (
            v.get("ns")?.as_str()?.to_owned(),
            v.get("name")?.as_str()?.to_owned(),
        ),
    ))
}
