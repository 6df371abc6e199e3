//! Remembers, for a few seconds, which (workspace, node type) scopes of the semantic cache are
//! too large for an exact search, so a PostgreSQL lookup in such a scope does not count its
//! entries again. Counting up to `exact_max_entries + 1` walks that many btree entries: about
//! 0.4 ms of a 2–4 ms lookup at 1,000,000 entries (pgbench, `bench/cache.md`).
//!
//! A stale verdict never gives a wrong answer: a scope that shrank below the bound meanwhile
//! (deletions, purges) is searched through the HNSW index with the iterative scan, which
//! filters while it walks; at worst, for up to [`TTL`], a scan that reaches
//! `hnsw.max_scan_tuples` first answers a miss it would have found exactly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a "large" verdict is trusted.
const TTL: Duration = Duration::from_secs(10);
/// Most scopes remembered; beyond that, expired verdicts are dropped, then all of them.
const MAX_SCOPES: usize = 10_000;

#[derive(Default)]
pub struct LargeScopes {
    /// (workspace id, node type) -> (entries it had at least, when it was counted).
    seen: Mutex<HashMap<(String, String), (u64, Instant)>>,
}

impl LargeScopes {
    /// Whether the scope was counted above `bound` entries less than [`TTL`] ago. The bound
    /// is the caller's (`exact_max_entries`), so a verdict taken under a smaller one never
    /// answers for a larger one.
    pub fn is_above(&self, workspace_id: &str, node_type: &str, bound: u64) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(workspace_id.to_string(), node_type.to_string()))
            .is_some_and(|(at_least, at)| *at_least > bound && at.elapsed() < TTL)
    }

    /// The scope has at least `at_least` entries (a count that stopped at its limit).
    pub fn counted(&self, workspace_id: &str, node_type: &str, at_least: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_SCOPES {
            seen.retain(|_, (_, at)| at.elapsed() < TTL);
            if seen.len() >= MAX_SCOPES {
                seen.clear();
            }
        }
        seen.insert(
            (workspace_id.to_string(), node_type.to_string()),
            (at_least, Instant::now()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_large_scopes_per_workspace_node_type_and_bound() {
        let scopes = LargeScopes::default();
        assert!(!scopes.is_above("w1", "agent", 1000));
        scopes.counted("w1", "agent", 1001);
        assert!(scopes.is_above("w1", "agent", 1000));
        assert!(
            !scopes.is_above("w1", "agent", 5000),
            "a larger bound counts again"
        );
        assert!(!scopes.is_above("w1", "function", 1000));
        assert!(!scopes.is_above("w2", "agent", 1000));
    }

    #[test]
    fn stays_bounded() {
        let scopes = LargeScopes::default();
        for i in 0..MAX_SCOPES + 5 {
            scopes.counted(&format!("w{i}"), "agent", 11);
        }
        assert!(scopes.seen.lock().unwrap().len() <= MAX_SCOPES);
        assert!(scopes.is_above(&format!("w{}", MAX_SCOPES + 4), "agent", 10));
    }
}
