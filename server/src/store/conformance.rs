//! One suite both store backends must pass.

use super::*;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;

fn new_key(id: &str, workspace_id: &str, role: Role, system: bool) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        workspace_id: workspace_id.into(),
        role,
        system,
        secret_hash: format!("hash-of-{id}"),
        label: Some(format!("label {id}")),
        created_at_ms: 1_000,
        expires_at_ms: None,
    }
}

async fn run_suite(store: &dyn Store) {
    store.ping().await.unwrap();
    assert!(store.pool_stats().max > 0);

    // Workspaces: unique names, ordered cursor listing, deletion.
    let a = store.create_workspace("alpha", 10).await.unwrap();
    let b = store.create_workspace("beta", 11).await.unwrap();
    assert!(matches!(
        store.create_workspace("alpha", 12).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_workspace("alpha").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_workspace("nope").await.unwrap(), None);
    let first = store.list_workspaces(None, 1).await.unwrap();
    assert_eq!(
        first.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["alpha"]
    );
    let next = store.list_workspaces(Some("alpha"), 10).await.unwrap();
    assert_eq!(
        next.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );

    // Keys: insert, conflict, unknown workspace, get with workspace name, list filters, revoke.
    let k1 = store
        .insert_key(&new_key("k1", &a.id, Role::Write, false))
        .await
        .unwrap();
    assert_eq!(k1.workspace, "alpha");
    assert_eq!(k1.role, Role::Write);
    assert!(!k1.system);
    assert_eq!(k1.label.as_deref(), Some("label k1"));
    assert!(matches!(
        store
            .insert_key(&new_key("k1", &a.id, Role::Read, false))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .insert_key(&new_key("k9", "no-such-id", Role::Read, false))
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .insert_key(&new_key("k2", &b.id, Role::Admin, true))
        .await
        .unwrap();
    store
        .insert_key(&new_key("k3", &a.id, Role::Read, false))
        .await
        .unwrap();
    let alpha_keys = store.list_keys(Some("alpha"), None, 10).await.unwrap();
    assert_eq!(
        alpha_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["k1", "k3"]
    );
    let all_after_k1 = store.list_keys(None, Some("k1"), 10).await.unwrap();
    assert_eq!(
        all_after_k1
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        ["k2", "k3"]
    );
    assert_eq!(store.count_system_keys().await.unwrap(), 1);
    assert!(store.revoke_key("k2", 50).await.unwrap());
    assert!(
        !store.revoke_key("k2", 60).await.unwrap(),
        "revoking twice reports nothing done"
    );
    assert_eq!(
        store.get_key("k2").await.unwrap().unwrap().revoked_at_ms,
        Some(50)
    );
    assert_eq!(store.count_system_keys().await.unwrap(), 0);

    // Upsert replaces the secret and clears a revocation.
    let mut replaced = new_key("k2", &b.id, Role::Admin, true);
    replaced.secret_hash = "new-hash".into();
    let k2 = store.upsert_key(&replaced).await.unwrap();
    assert_eq!(
        (k2.secret_hash.as_str(), k2.revoked_at_ms),
        ("new-hash", None)
    );

    // Blob visibility is per workspace.
    let d1 = "a".repeat(64);
    let d2 = "b".repeat(64);
    assert!(store.add_blob_ref(&a.id, &d1, 5, 1).await.unwrap());
    assert!(!store.add_blob_ref(&a.id, &d1, 5, 2).await.unwrap());
    assert_eq!(store.blob_ref(&a.id, &d1).await.unwrap(), Some(5));
    assert_eq!(store.blob_ref(&b.id, &d1).await.unwrap(), None);
    assert_eq!(
        store
            .missing_blobs(&a.id, &[d2.clone(), d1.clone()])
            .await
            .unwrap(),
        vec![d2.clone()]
    );
    assert_eq!(
        store
            .missing_blobs(&b.id, std::slice::from_ref(&d1))
            .await
            .unwrap(),
        vec![d1.clone()]
    );
    assert_eq!(
        store
            .missing_blobs(&a.id, &[d2.clone(), d1.clone()])
            .await
            .unwrap(),
        std::slice::from_ref(&d2)
    );
    assert_eq!(
        store
            .missing_blobs(&b.id, std::slice::from_ref(&d1))
            .await
            .unwrap(),
        std::slice::from_ref(&d1)
    );
    let many: Vec<String> = (0..1200).map(|i| format!("{i:064x}")).collect();
    assert_eq!(store.missing_blobs(&a.id, &many).await.unwrap().len(), 1200);

    workflows(store, &a.id, &b.id).await;

    // Deleting a workspace takes its keys, references and workflows with it.
    assert!(store.delete_workspace("alpha").await.unwrap());
    assert!(!store.delete_workspace("alpha").await.unwrap());
    assert_eq!(store.get_key("k1").await.unwrap(), None);
    assert_eq!(store.blob_ref(&a.id, &d1).await.unwrap(), None);
    assert!(store.get_key("k2").await.unwrap().is_some());

    // Plugins: versions, activation, generation, deletion.
    let generation = store.plugin_generation().await.unwrap();
    let v1 = PluginVersionRecord {
        name: "p".into(),
        version: "1".into(),
        manifest: "{}".into(),
        digest: d1.clone(),
        created_at_ms: 1,
    };
    let v2 = PluginVersionRecord {
        version: "2".into(),
        digest: d2.clone(),
        created_at_ms: 2,
        ..v1.clone()
    };
    assert!(store.add_plugin_version(&v1).await.unwrap());
    assert!(
        !store.add_plugin_version(&v1).await.unwrap(),
        "the same upload again is fine"
    );
    let clash = PluginVersionRecord {
        digest: d2.clone(),
        ..v1.clone()
    };
    assert!(matches!(
        store.add_plugin_version(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.activate_plugin("p", "9", 5).await,
        Err(StoreError::NotFound(_))
    ));
    store.activate_plugin("p", "1", 5).await.unwrap();
    store.add_plugin_version(&v2).await.unwrap();
    store.activate_plugin("p", "2", 6).await.unwrap();
    let active = store.active_plugins().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version, v2);
    assert_eq!(
        store.plugin_versions("p").await.unwrap(),
        [v1.clone(), v2.clone()]
    );
    assert!(store.plugin_generation().await.unwrap() >= generation + 2);
    assert!(store.delete_plugin("p").await.unwrap());
    assert!(!store.delete_plugin("p").await.unwrap());
    assert!(store.active_plugins().await.unwrap().is_empty());
    assert!(store.plugin_versions("p").await.unwrap().is_empty());
}

async fn workflows(store: &dyn Store, a: &str, b: &str) {
    let new = |id: &str, ws: &str| NewWorkflow {
        id: id.into(),
        workspace_id: ws.into(),
        name: format!("flow {id}"),
        created_at_ms: 100,
        base_digest: "c".repeat(64),
        base_size: 42,
        materializer_version: 1,
    };
    let w1 = store.create_workflow(&new("w1", a)).await.unwrap();
    assert_eq!((w1.version, w1.name.as_str()), (0, "flow w1"));
    assert!(matches!(
        store.create_workflow(&new("w1", a)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_workflow(&new("w9", "no-such-workspace")).await,
        Err(StoreError::NotFound(_))
    ));
    store.create_workflow(&new("w2", a)).await.unwrap();
    store.create_workflow(&new("w3", b)).await.unwrap();
    assert_eq!(store.get_workflow(a, "w1").await.unwrap(), Some(w1.clone()));
    assert_eq!(
        store.get_workflow(b, "w1").await.unwrap(),
        None,
        "another workspace's workflow is invisible"
    );
    let listed = store.list_workflows(a, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["w1", "w2"]
    );
    assert_eq!(
        store.list_workflows(a, Some("w1"), 10).await.unwrap().len(),
        1
    );

    // Conditional appends: the expected version or nothing.
    let append = |base: i64, ops: &str| NewPatch {
        workflow_id: "w1".into(),
        base_version: base,
        ops: ops.into(),
        author: "k1".into(),
        created_at_ms: 200 + base,
    };
    let AppendOutcome::Committed(p1) = store.append_patch(&append(0, "[1]")).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (p1.seq, p1.ops.as_str(), p1.author.as_str()),
        (1, "[1]", "k1")
    );
    assert_eq!(
        store.append_patch(&append(0, "[2]")).await.unwrap(),
        AppendOutcome::Conflict { current_version: 1 }
    );
    assert_eq!(
        store.append_patch(&append(5, "[2]")).await.unwrap(),
        AppendOutcome::Conflict { current_version: 1 }
    );
    for base in 1..5 {
        assert!(matches!(
            store.append_patch(&append(base, "[]")).await.unwrap(),
            AppendOutcome::Committed(_)
        ));
    }
    let mut missing = append(0, "[]");
    missing.workflow_id = "nope".into();
    assert_eq!(
        store.append_patch(&missing).await.unwrap(),
        AppendOutcome::NotFound
    );
    let w1 = store.get_workflow(a, "w1").await.unwrap().unwrap();
    assert_eq!((w1.version, w1.updated_at_ms), (5, 204));
    let seqs = |ps: Vec<PatchRecord>| ps.iter().map(|p| p.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.list_patches("w1", 0, None, 100).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seqs(store.list_patches("w1", 1, Some(3), 100).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        seqs(store.list_patches("w1", 0, None, 2).await.unwrap()),
        [1, 2]
    );

    // Snapshots: the base (seq 0) serves every materializer version; compactions their own.
    let snap = |seq: i64, mv: i64| SnapshotRecord {
        workflow_id: "w1".into(),
        seq,
        materializer_version: mv,
        digest: format!("{seq:064}"),
        size: seq,
        created_at_ms: 300,
    };
    assert_eq!(
        store
            .latest_snapshot("w1", 7, 5)
            .await
            .unwrap()
            .unwrap()
            .seq,
        0
    );
    assert!(store.insert_snapshot(&snap(3, 1)).await.unwrap());
    assert!(
        !store.insert_snapshot(&snap(3, 1)).await.unwrap(),
        "recorded once"
    );
    assert!(store.insert_snapshot(&snap(4, 2)).await.unwrap());
    let mut orphan = snap(1, 1);
    orphan.workflow_id = "nope".into();
    assert!(matches!(
        store.insert_snapshot(&orphan).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.latest_snapshot("w1", 1, 5).await.unwrap(),
        Some(snap(3, 1))
    );
    assert_eq!(
        store
            .latest_snapshot("w1", 1, 2)
            .await
            .unwrap()
            .unwrap()
            .seq,
        0
    );
    assert_eq!(
        store
            .latest_snapshot("w1", 2, 5)
            .await
            .unwrap()
            .unwrap()
            .seq,
        4
    );
    let base = store.latest_snapshot("w1", 1, 0).await.unwrap().unwrap();
    assert_eq!(
        (base.digest.as_str(), base.size),
        ("c".repeat(64).as_str(), 42)
    );
    let listed: Vec<i64> = store
        .list_snapshots("w1", 1)
        .await
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(listed, [0, 3]);

    // Deleting takes the history along; another workspace cannot.
    assert!(!store.delete_workflow(b, "w1").await.unwrap());
    assert!(store.delete_workflow(a, "w1").await.unwrap());
    assert!(!store.delete_workflow(a, "w1").await.unwrap());
    assert!(
        store
            .list_patches("w1", 0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_snapshots("w1", 1).await.unwrap().is_empty());
}

#[test]
fn change_payloads_round_trip() {
    for change in [
        WorkflowChange::Patch {
            workflow_id: "0190-ab:cd".into(),
            seq: 42,
        },
        WorkflowChange::Deleted {
            workflow_id: "x".into(),
        },
    ] {
        assert_eq!(
            WorkflowChange::parse(&change.payload().unwrap()),
            Some(change)
        );
    }
    assert_eq!(WorkflowChange::parse("nonsense"), None);
    assert_eq!(WorkflowChange::parse(":5"), None);
    assert_eq!(WorkflowChange::Resync.payload(), None);
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteStore::connect(&url, &PoolOptions::default())
        .await
        .unwrap();
    run_suite(&store).await;
}

/// A store on a fresh PostgreSQL database, and the database's URL.
async fn fresh_postgres_store() -> (String, PostgresStore) {
    let url = crate::testing::fresh_postgres_database().await;
    let store = postgres_store(&url).await;
    (url, store)
}

async fn postgres_store(url: &str) -> PostgresStore {
    PostgresStore::connect(url, &PoolOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let (_, store) = fresh_postgres_store().await;
    run_suite(&store).await;
}

// ---- caches ----

use crate::store::cache::{
    CacheKind, IterativeScan, NewExactEntry, NewSemanticEntry, SemanticScope, SemanticSearch,
    SemanticTable,
};

const DAY_MS: i64 = 86_400_000;

fn exact_entry(id: &str, workspace_id: &str, key: &str, role: Role, now: i64) -> NewExactEntry {
    NewExactEntry {
        id: id.into(),
        workspace_id: workspace_id.into(),
        key_hash: key.into(),
        node_type: "function".into(),
        required_role: role,
        result: Some(format!("{{\"by\":\"{id}\"}}")),
        result_digest: None,
        execution_ms: Some(1500),
        created_at_ms: now,
        expires_at_ms: now + DAY_MS,
    }
}

fn semantic_entry(
    id: &str,
    workspace_id: &str,
    prompt: &str,
    embedding: Vec<f32>,
    role: Role,
    now: i64,
) -> NewSemanticEntry {
    NewSemanticEntry {
        id: id.into(),
        workspace_id: workspace_id.into(),
        node_type: "agent".into(),
        required_role: role,
        prompt: prompt.into(),
        prompt_hash: format!("hash-{prompt}"),
        result: format!("\"{id}\""),
        embedding,
        execution_ms: None,
        created_at_ms: now,
        expires_at_ms: now + DAY_MS,
    }
}

fn axis(i: usize, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i] = 1.0;
    v
}

async fn run_cache_suite(store: &dyn Store) {
    let cache = store.cache();
    let a = store.create_workspace("cache-a", 1).await.unwrap().id;
    let b = store.create_workspace("cache-b", 1).await.unwrap().id;
    let now = 1_000_000;

    // The semantic dimension is fixed once; another is refused until a re-index.
    cache
        .prepare_semantic(&SemanticTable::new(4))
        .await
        .unwrap();
    cache
        .prepare_semantic(&SemanticTable::new(4))
        .await
        .unwrap();
    assert!(matches!(
        cache.prepare_semantic(&SemanticTable::new(8)).await,
        Err(StoreError::DimensionMismatch {
            stored: 4,
            configured: 8
        })
    ));

    // Exact: the highest required role at or below the caller's wins; other workspaces see nothing.
    assert_eq!(
        cache
            .insert_exact(&exact_entry("e-read", &a, "k1", Role::Read, now), 100)
            .await
            .unwrap(),
        0
    );
    cache
        .insert_exact(&exact_entry("e-admin", &a, "k1", Role::Admin, now), 100)
        .await
        .unwrap();
    for (role, want) in [
        (Role::Read, "e-read"),
        (Role::Write, "e-read"),
        (Role::Admin, "e-admin"),
    ] {
        let got = cache
            .lookup_exact(&a, "k1", role, now + 10)
            .await
            .unwrap()
            .map(|h| h.id);
        assert_eq!(got.as_deref(), Some(want), "{role:?}");
    }
    assert_eq!(
        cache
            .lookup_exact(&b, "k1", Role::Admin, now)
            .await
            .unwrap(),
        None
    );
    let found = cache
        .lookup_exact(&a, "k1", Role::Read, now + 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            found.result.as_deref(),
            found.execution_ms,
            found.created_at_ms
        ),
        (Some("{\"by\":\"e-read\"}"), Some(1500), now)
    );
    // Hits are counted with their time.
    let entry = cache
        .get_entry(CacheKind::Exact, &a, "e-read", Role::Read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.hits, entry.last_hit_at_ms, entry.required_role),
        (3, Some(now + 20), Role::Read)
    );
    assert_eq!(
        cache
            .get_entry(CacheKind::Exact, &a, "e-admin", Role::Write)
            .await
            .unwrap(),
        None,
        "above the caller's role"
    );
    assert_eq!(
        cache
            .get_entry(CacheKind::Exact, &b, "e-read", Role::Admin)
            .await
            .unwrap(),
        None,
        "another workspace's"
    );
    // Expired entries are never served.
    assert_eq!(
        cache
            .lookup_exact(&a, "k1", Role::Read, now + DAY_MS)
            .await
            .unwrap(),
        None
    );

    // Storing the same key and role again replaces the entry.
    cache
        .insert_exact(&exact_entry("e-read-2", &a, "k1", Role::Read, now), 100)
        .await
        .unwrap();
    assert_eq!(
        cache
            .get_entry(CacheKind::Exact, &a, "e-read", Role::Read)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .lookup_exact(&a, "k1", Role::Read, now)
            .await
            .unwrap()
            .unwrap()
            .id,
        "e-read-2"
    );
    let counts = cache.entry_counts().await.unwrap();
    assert_eq!(counts, [(CacheKind::Exact, 2), (CacheKind::Semantic, 0)]);

    // Rejected entries are never served again; the next lower role's entry is.
    assert_eq!(
        cache
            .reject_entry(CacheKind::Exact, &a, "e-admin", Role::Admin, now + 30)
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        cache
            .reject_entry(CacheKind::Exact, &a, "e-admin", Role::Admin, now + 40)
            .await
            .unwrap(),
        Some(false),
        "once"
    );
    assert_eq!(
        cache
            .reject_entry(CacheKind::Exact, &a, "e-admin", Role::Write, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .reject_entry(CacheKind::Exact, &b, "e-read-2", Role::Admin, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .lookup_exact(&a, "k1", Role::Admin, now)
            .await
            .unwrap()
            .unwrap()
            .id,
        "e-read-2"
    );
    assert_eq!(
        cache
            .get_entry(CacheKind::Exact, &a, "e-admin", Role::Admin)
            .await
            .unwrap()
            .unwrap()
            .rejected_at_ms,
        Some(now + 30)
    );

    // The cap evicts the least recently used entries.
    for (i, t) in [(1, 100), (2, 200), (3, 300)] {
        cache
            .insert_exact(
                &exact_entry(&format!("c{i}"), &b, &format!("ck{i}"), Role::Read, now + t),
                3,
            )
            .await
            .unwrap();
    }
    cache
        .lookup_exact(&b, "ck1", Role::Read, now + 400)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cache
            .insert_exact(&exact_entry("c4", &b, "ck4", Role::Read, now + 500), 3)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cache
            .lookup_exact(&b, "ck2", Role::Read, now + 600)
            .await
            .unwrap(),
        None,
        "c2 was least recently used"
    );
    for key in ["ck1", "ck3", "ck4"] {
        assert!(
            cache
                .lookup_exact(&b, key, Role::Read, now + 600)
                .await
                .unwrap()
                .is_some(),
            "{key}"
        );
    }

    // Deleting: by id (within the caller's role), by node type, all.
    assert!(
        !cache
            .delete_entry(CacheKind::Exact, &a, "e-admin", Role::Write)
            .await
            .unwrap()
    );
    assert!(
        cache
            .delete_entry(CacheKind::Exact, &a, "e-admin", Role::Admin)
            .await
            .unwrap()
    );
    let mut other = exact_entry("c5", &b, "ck5", Role::Read, now);
    other.node_type = "http_request".into();
    cache.insert_exact(&other, 100).await.unwrap();
    assert_eq!(
        cache
            .delete_entries(CacheKind::Exact, &b, Some("http_request"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cache
            .delete_entries(CacheKind::Exact, &b, None)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        cache.entry_counts().await.unwrap()[0],
        (CacheKind::Exact, 1)
    );

    // Large results are a CAS digest instead.
    let mut blob = exact_entry("blob", &a, "k-blob", Role::Read, now);
    (blob.result, blob.result_digest) = (None, Some("d".repeat(64)));
    cache.insert_exact(&blob, 100).await.unwrap();
    let hit = cache
        .lookup_exact(&a, "k-blob", Role::Read, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (hit.result, hit.result_digest),
        (None, Some("d".repeat(64)))
    );

    // Semantic: identical prompts without a vector search; nearest within the scope only.
    cache
        .insert_semantic(
            &semantic_entry("s1", &a, "p1", vec![3.0, 4.0, 0.0, 0.0], Role::Read, now),
            100,
        )
        .await
        .unwrap();
    cache
        .insert_semantic(
            &semantic_entry("s2", &a, "p2", axis(2, 4), Role::Admin, now),
            100,
        )
        .await
        .unwrap();
    cache
        .insert_semantic(
            &semantic_entry("s3", &b, "p3", vec![1.0, 0.01, 0.0, 0.0], Role::Read, now),
            100,
        )
        .await
        .unwrap();
    let scope = |ws, role| SemanticScope {
        workspace_id: ws,
        node_type: "agent",
        max_role: role,
        now_ms: now,
    };
    let search = SemanticSearch::default();
    let by_prompt = cache
        .semantic_by_prompt(&scope(&a, Role::Read), "p1", "hash-p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            by_prompt.id.as_str(),
            by_prompt.similarity,
            by_prompt.result.as_str()
        ),
        ("s1", 1.0, "\"s1\"")
    );
    assert_eq!(
        cache
            .semantic_by_prompt(&scope(&b, Role::Admin), "p1", "hash-p1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .semantic_by_prompt(&scope(&a, Role::Write), "p2", "hash-p2")
            .await
            .unwrap(),
        None
    );
    let nearest = cache
        .semantic_nearest(&scope(&a, Role::Read), &axis(0, 4), &search)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (nearest.id.as_str(), nearest.similarity),
        ("s1", 0.6),
        "similarity exactly 3/5, computed as pgvector does"
    );
    let nearest = cache
        .semantic_nearest(&scope(&a, Role::Admin), &axis(2, 4), &search)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((nearest.id.as_str(), nearest.similarity), ("s2", 1.0));
    assert_eq!(
        cache
            .semantic_nearest(&scope(&a, Role::Read), &axis(2, 4), &search)
            .await
            .unwrap()
            .unwrap()
            .id,
        "s1"
    );
    let other_type = SemanticScope {
        node_type: "function",
        ..scope(&a, Role::Admin)
    };
    assert_eq!(
        cache
            .semantic_nearest(&other_type, &axis(0, 4), &search)
            .await
            .unwrap(),
        None
    );
    let expired = SemanticScope {
        now_ms: now + DAY_MS,
        ..scope(&a, Role::Admin)
    };
    assert_eq!(
        cache
            .semantic_nearest(&expired, &axis(0, 4), &search)
            .await
            .unwrap(),
        None
    );
    cache
        .record_hit(CacheKind::Semantic, "s1", now + 5)
        .await
        .unwrap();
    let entry = cache
        .get_entry(CacheKind::Semantic, &a, "s1", Role::Read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.hits, entry.last_hit_at_ms), (1, Some(now + 5)));
    assert_eq!(
        cache
            .reject_entry(CacheKind::Semantic, &a, "s1", Role::Read, now)
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        cache
            .semantic_nearest(&scope(&a, Role::Read), &axis(0, 4), &search)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .semantic_by_prompt(&scope(&a, Role::Read), "p1", "hash-p1")
            .await
            .unwrap(),
        None
    );
    // The same prompt again replaces its entry.
    cache
        .insert_semantic(
            &semantic_entry("s1b", &a, "p1", axis(1, 4), Role::Read, now),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        cache
            .semantic_by_prompt(&scope(&a, Role::Read), "p1", "hash-p1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "s1b"
    );
    assert_eq!(
        cache.entry_counts().await.unwrap()[1],
        (CacheKind::Semantic, 3)
    );

    // Purging removes what expired and keeps the counts right.
    let purged = cache.purge_expired(now + DAY_MS, 2).await.unwrap();
    assert_eq!((purged.exact, purged.semantic), (2, 3));
    assert_eq!(
        cache.entry_counts().await.unwrap(),
        [(CacheKind::Exact, 0), (CacheKind::Semantic, 0)]
    );

    // Re-indexing drops the semantic entries and takes the new dimension.
    cache
        .insert_semantic(
            &semantic_entry("s4", &a, "p4", axis(3, 4), Role::Read, now),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        cache
            .reindex_semantic(&SemanticTable::new(8))
            .await
            .unwrap(),
        1
    );
    cache
        .prepare_semantic(&SemanticTable::new(8))
        .await
        .unwrap();
    assert!(matches!(
        cache.prepare_semantic(&SemanticTable::new(4)).await,
        Err(StoreError::DimensionMismatch {
            stored: 8,
            configured: 4
        })
    ));
    cache
        .insert_semantic(
            &semantic_entry("s5", &a, "p5", axis(7, 8), Role::Read, now),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        cache
            .semantic_nearest(&scope(&a, Role::Read), &axis(7, 8), &search)
            .await
            .unwrap()
            .unwrap()
            .id,
        "s5"
    );

    // A deleted workspace takes its entries and counts along.
    assert!(store.delete_workspace("cache-a").await.unwrap());
    assert_eq!(
        cache.entry_counts().await.unwrap(),
        [(CacheKind::Exact, 0), (CacheKind::Semantic, 0)]
    );
    let _ = IterativeScan::StrictOrder;
}

#[tokio::test]
async fn sqlite_passes_the_cache_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteStore::connect(&url, &PoolOptions::default())
        .await
        .unwrap();
    run_cache_suite(&store).await;
    let (searched, fell_back) = store.vector_index().counts();
    assert!(searched > 0, "the in-memory index answered");
    assert_eq!(fell_back, 0);
}

/// SQLite without its in-memory vector index: every semantic lookup scans the rows.
#[tokio::test]
async fn sqlite_passes_the_cache_suite_without_its_vector_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteStore::connect_with_index(&url, &PoolOptions::default(), 0)
        .await
        .unwrap();
    run_cache_suite(&store).await;
    assert_eq!(store.vector_index().counts().0, 0);
}

#[tokio::test]
async fn postgres_passes_the_cache_suite() {
    let (_, store) = fresh_postgres_store().await;
    run_cache_suite(&store).await;
}

/// The HNSW index with the workspace filter: the 500 nearest neighbours of the query belong to
/// another workspace. A plain HNSW scan returns its `ef_search` candidates and the filter leaves
/// nothing; pgvector 0.8's iterative scan keeps walking the graph and finds ours.
#[tokio::test]
async fn postgres_iterative_scans_find_our_entry_behind_other_workspaces_neighbours() {
    use sqlx::Connection as _;
    let (url, store) = fresh_postgres_store().await;
    let dims = 16;
    let cache = store.cache();
    cache
        .prepare_semantic(&SemanticTable::new(dims as u32))
        .await
        .unwrap();
    let ours = store.create_workspace("ours", 1).await.unwrap().id;
    let theirs = store.create_workspace("theirs", 1).await.unwrap().id;
    let now = 1_000_000;
    let query = axis(0, dims);
    for i in 0..500 {
        // Very close to the query, each a little different.
        let mut v = axis(0, dims);
        v[1 + i % (dims - 1)] = 0.01 + (i as f32) * 0.0001;
        cache
            .insert_semantic(
                &semantic_entry(
                    &format!("t{i}"),
                    &theirs,
                    &format!("t{i}"),
                    v,
                    Role::Read,
                    now,
                ),
                u64::MAX,
            )
            .await
            .unwrap();
    }
    let mut mine = axis(0, dims);
    mine[1] = 0.4; // similarity about 0.93: far behind all of theirs
    cache
        .insert_semantic(
            &semantic_entry("mine", &ours, "mine", mine, Role::Read, now),
            u64::MAX,
        )
        .await
        .unwrap();

    // Only the HNSW index may answer: no other index leads with the workspace, no sequential scans.
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("DROP INDEX semantic_cache_prompt, semantic_cache_lru, semantic_cache_expiry")
        .execute(&mut admin)
        .await
        .unwrap();
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE \"{db}\" SET enable_seqscan = off"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store = postgres_store(&url).await;
    let cache = store.cache();
    let mut conn = store.pool.acquire().await.unwrap();
    for sql in [
        crate::store::postgres::NEAREST_STRICT,
        crate::store::postgres::NEAREST_RELAXED,
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
            .bind(crate::store::vector::to_pgvector_text(&query))
            .bind("x")
            .bind("agent")
            .bind(0i16)
            .bind(0i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("semantic_cache_embedding")),
            "the HNSW index answers: {plan:#?}"
        );
    }
    drop(conn);

    let scope = SemanticScope {
        workspace_id: &ours,
        node_type: "agent",
        max_role: Role::Read,
        now_ms: now,
    };
    // The index even for this one-entry scope (small scopes are otherwise compared exactly).
    let search = |iterative_scan| SemanticSearch {
        ef_search: 40,
        iterative_scan,
        max_scan_tuples: 20_000,
        exact_max_entries: 0,
    };
    assert_eq!(
        cache
            .semantic_nearest(&scope, &query, &search(IterativeScan::Off))
            .await
            .unwrap(),
        None,
        "without iterative scans the filter empties the candidates: the false miss this guards against"
    );
    for mode in [IterativeScan::RelaxedOrder, IterativeScan::StrictOrder] {
        let hit = cache
            .semantic_nearest(&scope, &query, &search(mode))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{mode:?} missed"));
        assert_eq!(hit.id, "mine", "{mode:?}");
        assert!((hit.similarity - 0.928).abs() < 0.01, "{}", hit.similarity);
    }
    // A small scope is compared exactly: nothing to lose even without iterative scans.
    let exact = SemanticSearch {
        exact_max_entries: 1_000,
        ..search(IterativeScan::Off)
    };
    assert_eq!(
        cache
            .semantic_nearest(&scope, &query, &exact)
            .await
            .unwrap()
            .unwrap()
            .id,
        "mine"
    );
}

/// The HNSW index is built with the configured graph, and a reindex rebuilds it with new
/// parameters.
#[tokio::test]
async fn postgres_builds_the_hnsw_index_with_the_configured_graph() {
    use sqlx::Connection as _;
    let (url, store) = fresh_postgres_store().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let table = SemanticTable {
        dimensions: 4,
        hnsw_m: 8,
        hnsw_ef_construction: 40,
    };
    let mut built = Vec::new();
    for table in [
        table,
        SemanticTable {
            hnsw_m: 24,
            hnsw_ef_construction: 96,
            ..table
        },
    ] {
        if built.is_empty() {
            store.cache().prepare_semantic(&table).await.unwrap();
        } else {
            store.cache().reindex_semantic(&table).await.unwrap();
        }
        let options: Vec<String> = sqlx::query_scalar(
            "SELECT reloptions FROM pg_class WHERE relname = 'semantic_cache_embedding'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        built.push(options);
    }
    assert_eq!(
        built,
        [
            ["m=8", "ef_construction=40"],
            ["m=24", "ef_construction=96"]
        ]
    );
}

/// Statistics taken before a workspace grew say it has a row or two; left to itself the
/// planner then reads the workspace's btree range and sorts every row by distance (31 ms at
/// 10,000 entries, seconds at a million), and flips back when autovacuum analyzes. Lookups
/// of scopes above `exact_max_entries` take the HNSW index whatever the statistics say.
#[tokio::test]
async fn postgres_large_scopes_use_the_hnsw_index_despite_stale_statistics() {
    use sqlx::Connection as _;
    let (url, store) = fresh_postgres_store().await;
    let dims = 8;
    let cache = store.cache();
    cache
        .prepare_semantic(&SemanticTable::new(dims as u32))
        .await
        .unwrap();
    let other = store.create_workspace("other", 1).await.unwrap().id;
    let ours = store.create_workspace("ours", 1).await.unwrap().id;
    let now = 1_000_000;
    let entry = |i: usize, ws: &str| {
        let mut v = axis(i % dims, dims);
        v[(i + 1) % dims] = (i % 97) as f32 / 97.0;
        semantic_entry(
            &format!("{ws}-{i}"),
            ws,
            &format!("p{i}"),
            v,
            Role::Read,
            now,
        )
    };
    for i in 0..300 {
        cache
            .insert_semantic(&entry(i, &other), u64::MAX)
            .await
            .unwrap();
    }
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("ANALYZE semantic_cache")
        .execute(&mut admin)
        .await
        .unwrap();
    // Our workspace grows after the statistics were taken.
    for i in 0..300 {
        cache
            .insert_semantic(&entry(i, &ours), u64::MAX)
            .await
            .unwrap();
    }
    let search = SemanticSearch {
        exact_max_entries: 100,
        ..SemanticSearch::default()
    };
    let query = crate::store::vector::to_pgvector_text(&axis(0, dims));
    // EXPLAIN of the statement a lookup would run, after it was prepared as `prepared` says.
    #[derive(Clone, Copy)]
    enum Prepared {
        Not,
        Counted,
        KnownLarge,
    }
    let explain = |prepared: Prepared, search: SemanticSearch| {
        let (url, ours, query) = (url.clone(), ours.clone(), query.clone());
        async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            let statement = match prepared {
                Prepared::Not => crate::store::postgres::nearest_statement(&search, None),
                Prepared::Counted => {
                    crate::store::postgres::prepare_lookup(&mut tx, &search, &ours, "agent")
                        .await
                        .unwrap()
                        .0
                }
                Prepared::KnownLarge => {
                    crate::store::postgres::prepare_large_scope_lookup(&mut tx, &search)
                        .await
                        .unwrap()
                }
            };
            let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {statement}"))
                .bind(query)
                .bind(ours)
                .bind("agent")
                .bind(0i16)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            (statement, plan.join("\n"))
        }
    };
    let (_, unguided) = explain(Prepared::Not, search).await;
    assert!(
        !unguided.contains("semantic_cache_embedding"),
        "the planner alone sorts the workspace's rows: {unguided}"
    );
    for prepared in [Prepared::Counted, Prepared::KnownLarge] {
        let (statement, guided) = explain(prepared, search).await;
        assert_ne!(
            statement,
            crate::store::postgres::NEAREST_EXACT,
            "above exact_max_entries"
        );
        assert!(
            guided.contains("semantic_cache_embedding"),
            "the lookup's settings make it use the index: {guided}"
        );
    }
    // The relaxed statement re-orders all ten rows it fetches: were the CTE taken as sorted
    // by the final ORDER BY, an incremental sort would read only its first rows.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    crate::store::postgres::prepare_lookup(&mut tx, &search, &ours, "agent")
        .await
        .unwrap();
    let analyzed: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {}",
        crate::store::postgres::NEAREST_RELAXED
    ))
    .bind(query.clone())
    .bind(&ours)
    .bind("agent")
    .bind(0i16)
    .bind(now)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let cte_scan = analyzed
        .iter()
        .find(|l| l.contains("CTE Scan on nearest"))
        .expect("a CTE scan");
    assert!(cte_scan.contains("rows=10"), "{analyzed:#?}");
    drop(tx);
    // And a scope within the bound is compared exactly.
    let small = SemanticSearch {
        exact_max_entries: 1_000,
        ..search
    };
    let mut conn = store.pool.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let (statement, entries) =
        crate::store::postgres::prepare_lookup(&mut tx, &small, &ours, "agent")
            .await
            .unwrap();
    assert_eq!(
        (statement, entries),
        (crate::store::postgres::NEAREST_EXACT, Some(300))
    );
    tx.commit().await.unwrap();
    drop(conn);
    let scope = SemanticScope {
        workspace_id: &ours,
        node_type: "agent",
        max_role: Role::Read,
        now_ms: now,
    };
    let hit = cache
        .semantic_nearest(&scope, &axis(0, dims), &search)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.similarity, 1.0);
    // The scope was counted as large once; the next lookup skips the count and finds the same.
    assert!(store.large_scopes.is_above(&ours, "agent", 100));
    let again = cache
        .semantic_nearest(&scope, &axis(0, dims), &search)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, hit.id);
}
