//! Partial dependency state of multi-dependency triggers, kept in a JetStream key-value
//! bucket so it survives a restart and is shared by replicas: every change is a
//! compare-and-set on the key's revision, so two replicas recording different dependencies
//! at once both land, and exactly one of them fires.

use std::sync::Arc;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use super::{BusError, Names, WireEvent};
use crate::event::Event;

/// Attempts of one compare-and-set before giving up (each conflict means another replica
/// changed the state in between, so this only runs out under extreme contention).
const CAS_ATTEMPTS: usize = 20;

/// The latest accepted event of each dependency (by index), as stored.
type StoredState = Vec<Option<Arc<Event>>>;

/// The bucket of partial condition state.
#[derive(Debug, Clone)]
pub struct ConditionStore {
    kv: kv::Store,
    names: Names,
}

impl ConditionStore {
    pub(super) fn new(kv: kv::Store, names: Names) -> Self {
        Self { kv, names }
    }

    /// Records `event` for dependency `index` of a trigger with `deps` dependencies. When
    /// `holds` (the trigger's condition over which dependencies are present) then holds, the
    /// state is cleared and the events that fire are returned (by dependency index).
    pub async fn advance(
        &self,
        sensor: &str,
        trigger: &str,
        deps: usize,
        index: usize,
        event: &Arc<Event>,
        holds: impl Fn(&[bool]) -> bool,
    ) -> Result<Option<Vec<(usize, Arc<Event>)>>, BusError> {
        let key = self.names.condition_key(sensor, trigger);
        let what = format!("condition state {key}");
        for _ in 0..CAS_ATTEMPTS {
            let (mut state, revision) = self.read(&key, deps).await?;
            state[index] = Some(event.clone());
            let present: Vec<bool> = state.iter().map(Option::is_some).collect();
            let fired = holds(&present);
            let next: StoredState = if fired {
                vec![None; deps]
            } else {
                state.clone()
            };
            if self.write(&key, &next, revision).await? {
                return Ok(fired.then(|| {
                    state
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, e)| e.map(|e| (i, e)))
                        .collect()
                }));
            }
        }
        Err(BusError::setup(what, "too many concurrent changes"))
    }

    /// Forgets a trigger's partial state (`conditionsReset`). Whether anything was forgotten.
    pub async fn reset(&self, sensor: &str, trigger: &str, deps: usize) -> Result<bool, BusError> {
        let key = self.names.condition_key(sensor, trigger);
        for _ in 0..CAS_ATTEMPTS {
            let (state, revision) = self.read(&key, deps).await?;
            if state.iter().all(Option::is_none) {
                return Ok(false);
            }
            if self.write(&key, &vec![None; deps], revision).await? {
                return Ok(true);
            }
        }
        Err(BusError::setup(
            format!("condition state {key}"),
            "too many concurrent changes",
        ))
    }

    /// The stored state (sized to `deps`) and its revision (`None`: never written).
    async fn read(&self, key: &str, deps: usize) -> Result<(StoredState, Option<u64>), BusError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| BusError::setup(format!("condition state {key}"), e))?;
        let Some(entry) = entry else {
            return Ok((vec![None; deps], None));
        };
        let mut state: StoredState = vec![None; deps];
        if entry.operation == Operation::Put {
            match serde_json::from_slice::<Vec<Option<WireEvent>>>(&entry.value) {
                Ok(stored) => {
                    for (slot, e) in state.iter_mut().zip(stored) {
                        *slot = e.and_then(|e| e.into_event().ok()).map(Arc::new);
                    }
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable condition state discarded")
                }
            }
        }
        Ok((state, Some(entry.revision)))
    }

    /// Compare-and-set; `false` when another writer got there first.
    async fn write(
        &self,
        key: &str,
        state: &StoredState,
        revision: Option<u64>,
    ) -> Result<bool, BusError> {
        let wire: Vec<Option<WireEvent>> = state
            .iter()
            .map(|e| e.as_deref().map(WireEvent::from))
            .collect();
        let body = Bytes::from(serde_json::to_vec(&wire).unwrap_or_default());
        let written = match revision {
            Some(r) => match self.kv.update(key, body, r).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(e.to_string()),
            },
            None => match self.kv.create(key, body).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e.to_string()),
            },
        };
        written.map_err(|message| BusError::setup(format!("condition state {key}"), message))
    }
}
