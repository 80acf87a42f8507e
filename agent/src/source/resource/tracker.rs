//! Tells ADD from UPDATE from DELETE for kube's watcher, which reports only "applied" and
//! "deleted", and replays every object after a relist (a watch restart or 410 Gone).
//!
//! The tracker remembers each object's `resourceVersion` (and the object itself, for
//! `oldBody` and for deletions seen only as absences) by uid. A relist is buffered from
//! `Init` to `InitDone` and then compared with what was known: new uids are added, changed
//! versions updated, unchanged ones stay silent, and uids missing from the relist were
//! deleted while the watch was down.

use std::collections::HashMap;

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// First seen.
    Added(T),
    /// Seen before with another `resourceVersion`.
    Updated {
        /// The object as last seen.
        old: T,
        /// The object now.
        new: T,
    },
    /// Gone: deleted by the watch, or missing from a relist (then the last copy seen).
    Deleted(T),
}

/// Classifies watcher events into [`Change`]s; pure, no I/O.
#[derive(Debug)]
pub struct ObjectTracker<T> {
    /// uid → (resourceVersion, object) of every object currently known.
    known: HashMap<String, (String, T)>,
    /// Objects of a relist in progress, in the order listed.
    relist: Option<Vec<(String, String, T)>>,
}

impl<T> Default for ObjectTracker<T> {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            relist: None,
        }
    }
}

impl<T: Clone> ObjectTracker<T> {
    /// Number of objects known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// A (re)list starts (`Event::Init`): objects are buffered until [`Self::init_done`].
    /// A relist interrupted by another `Init` starts over.
    pub fn init(&mut self) {
        self.relist = Some(Vec::new());
    }

    /// One object of the list (`Event::InitApply`).
    pub fn init_apply(&mut self, uid: &str, resource_version: &str, object: T) {
        match &mut self.relist {
            Some(buffer) => buffer.push((uid.to_owned(), resource_version.to_owned(), object)),
            // kube's watcher always sends `Init` first; should it not, nothing is lost.
            None => {
                self.relist = Some(vec![(uid.to_owned(), resource_version.to_owned(), object)]);
            }
        }
    }

    /// The list is complete (`Event::InitDone`): the changes since the objects were last
    /// known, in list order, then the deletions (by uid, for a stable order).
    pub fn init_done(&mut self) -> Vec<Change<T>> {
        let listed = self.relist.take().unwrap_or_default();
        let mut previous = std::mem::take(&mut self.known);
        let mut changes = Vec::new();
        for (uid, rv, object) in listed {
            match previous.remove(&uid) {
                None => changes.push(Change::Added(object.clone())),
                Some((old_rv, old)) if old_rv != rv => changes.push(Change::Updated {
                    old,
                    new: object.clone(),
                }),
                Some(_) => {}
            }
            self.known.insert(uid, (rv, object));
        }
        let mut gone: Vec<(String, (String, T))> = previous.into_iter().collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        changes.extend(gone.into_iter().map(|(_, (_, old))| Change::Deleted(old)));
        changes
    }

    /// An object was created or modified (`Event::Apply`); `None` when this version was
    /// already seen (a replay).
    pub fn apply(&mut self, uid: &str, resource_version: &str, object: T) -> Option<Change<T>> {
        match self.known.get_mut(uid) {
            None => {
                self.known.insert(
                    uid.to_owned(),
                    (resource_version.to_owned(), object.clone()),
                );
                Some(Change::Added(object))
            }
            Some((rv, _)) if rv == resource_version => None,
            Some(entry) => {
                let (_, old) =
                    std::mem::replace(entry, (resource_version.to_owned(), object.clone()));
                Some(Change::Updated { old, new: object })
            }
        }
    }

    /// An object was deleted (`Event::Delete`): always a deletion, and forgotten.
    pub fn delete(&mut self, uid: &str, object: T) -> Change<T> {
        self.known.remove(uid);
        Change::Deleted(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(
        t: &mut ObjectTracker<&'static str>,
        objects: &[(&str, &str, &'static str)],
    ) -> Vec<Change<&'static str>> {
        t.init();
        for (uid, rv, o) in objects {
            t.init_apply(uid, rv, o);
        }
        t.init_done()
    }

    #[test]
    fn first_list_adds_each_object_once() {
        let mut t = ObjectTracker::default();
        let changes = list(&mut t, &[("a", "1", "a1"), ("b", "5", "b5")]);
        assert_eq!(changes, vec![Change::Added("a1"), Change::Added("b5")]);
        assert_eq!(t.len(), 2);
        // The watch then replays an object it already listed: nothing new.
        assert_eq!(t.apply("a", "1", "a1"), None);
    }

    #[test]
    fn relist_with_unchanged_objects_is_silent() {
        let mut t = ObjectTracker::default();
        list(&mut t, &[("a", "1", "a1"), ("b", "5", "b5")]);
        assert_eq!(list(&mut t, &[("b", "5", "b5"), ("a", "1", "a1")]), vec![]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn relist_reports_changed_new_and_vanished_objects() {
        let mut t = ObjectTracker::default();
        list(
            &mut t,
            &[
                ("a", "1", "a1"),
                ("b", "5", "b5"),
                ("c", "7", "c7"),
                ("d", "2", "d2"),
            ],
        );
        let changes = list(
            &mut t,
            &[("a", "3", "a3"), ("b", "5", "b5"), ("e", "9", "e9")],
        );
        assert_eq!(
            changes,
            vec![
                Change::Updated {
                    old: "a1",
                    new: "a3"
                },
                Change::Added("e9"),
                Change::Deleted("c7"),
                Change::Deleted("d2"),
            ]
        );
        assert_eq!(t.len(), 3);
        // What the relist established is the new baseline.
        assert_eq!(t.apply("a", "3", "a3"), None);
        assert_eq!(t.apply("c", "8", "c8"), Some(Change::Added("c8")));
    }

    #[test]
    fn apply_of_the_same_version_twice_emits_once() {
        let mut t = ObjectTracker::default();
        list(&mut t, &[]);
        assert_eq!(t.apply("a", "1", "a1"), Some(Change::Added("a1")));
        assert_eq!(t.apply("a", "1", "a1"), None);
        assert_eq!(
            t.apply("a", "2", "a2"),
            Some(Change::Updated {
                old: "a1",
                new: "a2"
            })
        );
        assert_eq!(t.apply("a", "2", "a2"), None);
    }

    #[test]
    fn delete_forgets_so_a_recreated_uid_is_added_again() {
        let mut t = ObjectTracker::default();
        list(&mut t, &[("a", "1", "a1")]);
        assert_eq!(t.delete("a", "a-final"), Change::Deleted("a-final"));
        assert!(t.is_empty());
        // A relist after the deletion does not report it a second time.
        assert_eq!(list(&mut t, &[]), vec![]);
        assert_eq!(t.apply("a", "3", "a3"), Some(Change::Added("a3")));
    }

    #[test]
    fn an_interrupted_relist_starts_over() {
        let mut t = ObjectTracker::default();
        list(&mut t, &[("a", "1", "a1")]);
        t.init();
        t.init_apply("z", "1", "z1");
        // The list failed part-way; the watcher starts another one.
        let changes = list(&mut t, &[("a", "1", "a1")]);
        assert_eq!(changes, vec![]);
    }
}
