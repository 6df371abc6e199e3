//! A bounded cache of materialized documents, one slot per workflow.
//!
//! A slot's async mutex also serializes this node's appends to its workflow: the store would
//! refuse all but one of a racing group anyway, and serializing them here spares the losers a
//! materialization. Slots are evicted least recently used, never while someone holds them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A workflow's document at `version`, and the seq of the snapshot it was last rebuilt from or
/// the latest snapshot this node knows of.
#[derive(Debug, Clone)]
pub struct Cached {
    pub version: u64,
    pub snapshot_seq: u64,
    pub doc: Value,
}

/// None: nothing cached (never loaded, or invalidated after a failed or uncertain write).
pub type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

struct Entry {
    slot: Slot,
    used: u64,
}

pub struct DocumentCache {
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
    clock: AtomicU64,
}

impl DocumentCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// The workflow's slot, created empty when absent.
    pub fn slot(&self, workflow_id: &str) -> Slot {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(workflow_id) {
            entry.used = now;
            return Arc::clone(&entry.slot);
        }
        if entries.len() >= self.capacity {
            // Least recently used among the slots nobody holds; with every slot in use the cache
            // briefly exceeds its capacity rather than wait.
            let victim = entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.slot) == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(id, _)| id.clone());
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        let slot = Slot::default();
        entries.insert(
            workflow_id.to_string(),
            Entry {
                slot: Arc::clone(&slot),
                used: now,
            },
        );
        slot
    }

    /// The workflow's slot if it has one.
    pub fn existing(&self, workflow_id: &str) -> Option<Slot> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(workflow_id).map(|e| Arc::clone(&e.slot))
    }

    pub fn remove(&self, workflow_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(workflow_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evicts_the_least_recently_used_idle_slot() {
        let cache = DocumentCache::new(2);
        *cache.slot("a").lock().await = Some(Cached {
            version: 1,
            snapshot_seq: 0,
            doc: Value::Null,
        });
        cache.slot("b");
        cache.slot("a"); // a is now more recent than b
        cache.slot("c");
        assert_eq!(cache.len(), 2);
        assert!(cache.existing("b").is_none(), "b was least recently used");
        assert_eq!(
            cache
                .existing("a")
                .unwrap()
                .lock()
                .await
                .as_ref()
                .unwrap()
                .version,
            1
        );

        // Slots in use are not evicted; the cache overflows instead.
        let held_a = cache.slot("a");
        let held_c = cache.slot("c");
        cache.slot("d");
        assert_eq!(cache.len(), 3);
        drop((held_a, held_c));
        cache.slot("e");
        assert_eq!(cache.len(), 3, "an idle slot made room");
        cache.remove("e");
        assert!(cache.existing("e").is_none());
    }
}
