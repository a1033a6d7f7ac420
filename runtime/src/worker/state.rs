//! The worker's copy of one input partition's committed state, shared between
//! the [`Instance`](crate::Instance) that reads it and the member task that
//! applies the writes the broker has committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::instance::StateView;

/// Committed state of one processor and input partition, as of the worker's
/// last successful commit for it. Cheap to clone; clones share the map.
#[derive(Clone, Default)]
pub(crate) struct SharedState {
    map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
}

impl SharedState {
    /// A state holding the entries read from the broker.
    pub(crate) fn from_entries(entries: Vec<(Bytes, Bytes)>) -> Self {
        let map = entries.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        SharedState { map: Arc::new(Mutex::new(map)) }
    }

    /// Applies writes the broker has committed (`None`: the key was deleted).
    pub(crate) fn apply(&self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value) in writes {
            match value {
                Some(v) => {
                    map.insert(key, v);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl StateView for SharedState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_writes_are_visible_to_every_clone() {
        let state = SharedState::from_entries(vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1"))]);
        let view = state.clone();
        state.apply(vec![(b"a".to_vec(), None), (b"b".to_vec(), Some(b"2".to_vec()))]);
        assert_eq!(view.get(b"a"), None);
        assert_eq!(view.get(b"b"), Some(b"2".to_vec()));
        assert_eq!(view.len(), 1);
    }
}
