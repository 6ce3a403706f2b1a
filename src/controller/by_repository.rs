//! The names of the ServiceBuilds of each namespace by image repository, kept from the watch
//! beside the ServiceBuild store: a reconcile that must know who else pushes to its tags looks
//! at the ServiceBuilds of its repository only, not at every ServiceBuild (which made each
//! commit quadratic in the number of ServiceBuilds).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::api::ServiceBuild;

/// `(namespace, repository)` → names, and `(namespace, name)` → repository.
#[derive(Default)]
struct Index {
    names: HashMap<(String, String), BTreeSet<String>>,
    repository_of: HashMap<(String, String), String>,
}

impl Index {
    fn insert(&mut self, sb: &ServiceBuild) {
        let Some(namespace) = sb.namespace() else {
            return;
        };
        let name = sb.name_any();
        let repository = &sb.spec.image.repository;
        let at = (namespace.clone(), name.clone());
        if self.repository_of.get(&at) == Some(repository) {
            return;
        }
        self.remove(&at);
        self.names
            .entry((namespace, repository.clone()))
            .or_default()
            .insert(name);
        self.repository_of.insert(at, repository.clone());
    }

    fn remove(&mut self, at: &(String, String)) {
        let Some(repository) = self.repository_of.remove(at) else {
            return;
        };
        let key = (at.0.clone(), repository);
        if let Some(names) = self.names.get_mut(&key) {
            names.remove(&at.1);
            if names.is_empty() {
                self.names.remove(&key);
            }
        }
    }
}

/// [`Index`] as the watch keeps it: a relist builds a new one, which replaces the old when the
/// list is complete (as the reflector's store does).
#[derive(Default)]
pub struct ByRepository {
    state: Mutex<(Index, Option<Index>)>,
}

impl ByRepository {
    /// Follow one watch event.
    pub fn observe(&self, event: &Event<ServiceBuild>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let (live, relist) = &mut *state;
        match event {
            Event::Apply(sb) => live.insert(sb),
            Event::Delete(sb) => {
                if let Some(namespace) = sb.namespace() {
                    live.remove(&(namespace, sb.name_any()));
                }
            }
            Event::Init => *relist = Some(Index::default()),
            Event::InitApply(sb) => relist.get_or_insert_with(Index::default).insert(sb),
            Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    *live = fresh;
                }
            }
        }
    }

    /// The names of the ServiceBuilds of `namespace` that push to `repository`.
    pub fn names(&self, namespace: &str, repository: &str) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .0
            .names
            .get(&(namespace.to_owned(), repository.to_owned()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many ServiceBuilds are indexed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.0.repository_of.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;

    fn sb(namespace: &str, name: &str, repository: &str) -> ServiceBuild {
        let mut spec = fixtures::Fixture::new().spec;
        spec.image.repository = repository.into();
        let mut sb = ServiceBuild::new(name, spec);
        sb.metadata.namespace = Some(namespace.into());
        sb
    }

    #[test]
    fn follows_applies_moves_deletes_and_relists() {
        let index = ByRepository::default();
        index.observe(&Event::Apply(sb("shop", "a", "r/one")));
        index.observe(&Event::Apply(sb("shop", "b", "r/one")));
        index.observe(&Event::Apply(sb("other", "c", "r/one")));
        assert_eq!(index.names("shop", "r/one"), ["a", "b"]);
        assert_eq!(index.names("other", "r/one"), ["c"]);
        assert!(index.names("shop", "r/two").is_empty());

        // A ServiceBuild that changes repository leaves the old one.
        index.observe(&Event::Apply(sb("shop", "b", "r/two")));
        assert_eq!(index.names("shop", "r/one"), ["a"]);
        assert_eq!(index.names("shop", "r/two"), ["b"]);
        index.observe(&Event::Delete(sb("shop", "a", "r/one")));
        assert!(index.names("shop", "r/one").is_empty());
        assert_eq!(index.len(), 2);

        // A relist replaces the index once complete; until then the old one answers.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(sb("shop", "d", "r/one")));
        assert_eq!(index.names("shop", "r/two"), ["b"]);
        index.observe(&Event::InitDone);
        assert!(index.names("shop", "r/two").is_empty());
        assert_eq!(index.names("shop", "r/one"), ["d"]);
        assert_eq!(index.len(), 1);
    }
}
