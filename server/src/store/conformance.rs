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
    assert!(matches!(store.create_workspace("alpha", 12).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_workspace("alpha").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_workspace("nope").await.unwrap(), None);
    let first = store.list_workspaces(None, 1).await.unwrap();
    assert_eq!(first.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["alpha"]);
    let next = store.list_workspaces(Some("alpha"), 10).await.unwrap();
    assert_eq!(next.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["beta"]);

    // Keys: insert, conflict, unknown workspace, get with workspace name, list filters, revoke.
    let k1 = store.insert_key(&new_key("k1", &a.id, Role::Write, false)).await.unwrap();
    assert_eq!(k1.workspace, "alpha");
    assert_eq!(k1.role, Role::Write);
    assert!(!k1.system);
    assert_eq!(k1.label.as_deref(), Some("label k1"));
    assert!(matches!(store.insert_key(&new_key("k1", &a.id, Role::Read, false)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.insert_key(&new_key("k9", "no-such-id", Role::Read, false)).await, Err(StoreError::NotFound(_))));
    store.insert_key(&new_key("k2", &b.id, Role::Admin, true)).await.unwrap();
    store.insert_key(&new_key("k3", &a.id, Role::Read, false)).await.unwrap();
    let alpha_keys = store.list_keys(Some("alpha"), None, 10).await.unwrap();
    assert_eq!(alpha_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k1", "k3"]);
    let all_after_k1 = store.list_keys(None, Some("k1"), 10).await.unwrap();
    assert_eq!(all_after_k1.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k2", "k3"]);
    assert_eq!(store.count_system_keys().await.unwrap(), 1);
    assert!(store.revoke_key("k2", 50).await.unwrap());
    assert!(!store.revoke_key("k2", 60).await.unwrap(), "revoking twice reports nothing done");
    assert_eq!(store.get_key("k2").await.unwrap().unwrap().revoked_at_ms, Some(50));
    assert_eq!(store.count_system_keys().await.unwrap(), 0);

    // Upsert replaces the secret and clears a revocation.
    let mut replaced = new_key("k2", &b.id, Role::Admin, true);
    replaced.secret_hash = "new-hash".into();
    let k2 = store.upsert_key(&replaced).await.unwrap();
    assert_eq!((k2.secret_hash.as_str(), k2.revoked_at_ms), ("new-hash", None));

    // Blob visibility is per workspace.
    let d1 = "a".repeat(64);
    let d2 = "b".repeat(64);
    assert!(store.add_blob_ref(&a.id, &d1, 5, 1).await.unwrap());
    assert!(!store.add_blob_ref(&a.id, &d1, 5, 2).await.unwrap());
    assert_eq!(store.blob_ref(&a.id, &d1).await.unwrap(), Some(5));
    assert_eq!(store.blob_ref(&b.id, &d1).await.unwrap(), None);
    assert_eq!(store.missing_blobs(&a.id, &[d2.clone(), d1.clone()]).await.unwrap(), vec![d2.clone()]);
    assert_eq!(store.missing_blobs(&b.id, std::slice::from_ref(&d1)).await.unwrap(), vec![d1.clone()]);
    let many: Vec<String> = (0..1200).map(|i| format!("{i:064x}")).collect();
    assert_eq!(store.missing_blobs(&a.id, &many).await.unwrap().len(), 1200);

    workflows(store, &a.id, &b.id).await;

    // Deleting a workspace takes its keys, references and workflows with it.
    assert!(store.delete_workspace("alpha").await.unwrap());
    assert!(!store.delete_workspace("alpha").await.unwrap());
    assert_eq!(store.get_key("k1").await.unwrap(), None);
    assert_eq!(store.blob_ref(&a.id, &d1).await.unwrap(), None);
    assert!(store.get_key("k2").await.unwrap().is_some());
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
    assert!(matches!(store.create_workflow(&new("w1", a)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.create_workflow(&new("w9", "no-such-workspace")).await, Err(StoreError::NotFound(_))));
    store.create_workflow(&new("w2", a)).await.unwrap();
    store.create_workflow(&new("w3", b)).await.unwrap();
    assert_eq!(store.get_workflow(a, "w1").await.unwrap(), Some(w1.clone()));
    assert_eq!(store.get_workflow(b, "w1").await.unwrap(), None, "another workspace's workflow is invisible");
    let listed = store.list_workflows(a, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w1", "w2"]);
    assert_eq!(store.list_workflows(a, Some("w1"), 10).await.unwrap().len(), 1);

    // Conditional appends: the expected version or nothing.
    let append = |base: i64, ops: &str| NewPatch {
        workflow_id: "w1".into(),
        base_version: base,
        ops: ops.into(),
        author: "k1".into(),
        created_at_ms: 200 + base,
    };
    let AppendOutcome::Committed(p1) = store.append_patch(&append(0, "[1]")).await.unwrap() else { panic!() };
    assert_eq!((p1.seq, p1.ops.as_str(), p1.author.as_str()), (1, "[1]", "k1"));
    assert_eq!(store.append_patch(&append(0, "[2]")).await.unwrap(), AppendOutcome::Conflict { current_version: 1 });
    assert_eq!(store.append_patch(&append(5, "[2]")).await.unwrap(), AppendOutcome::Conflict { current_version: 1 });
    for base in 1..5 {
        assert!(matches!(store.append_patch(&append(base, "[]")).await.unwrap(), AppendOutcome::Committed(_)));
    }
    let mut missing = append(0, "[]");
    missing.workflow_id = "nope".into();
    assert_eq!(store.append_patch(&missing).await.unwrap(), AppendOutcome::NotFound);
    let w1 = store.get_workflow(a, "w1").await.unwrap().unwrap();
    assert_eq!((w1.version, w1.updated_at_ms), (5, 204));
    let seqs = |ps: Vec<PatchRecord>| ps.iter().map(|p| p.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.list_patches("w1", 0, None, 100).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(store.list_patches("w1", 1, Some(3), 100).await.unwrap()), [2, 3]);
    assert_eq!(seqs(store.list_patches("w1", 0, None, 2).await.unwrap()), [1, 2]);

    // Snapshots: the base (seq 0) serves every materializer version; compactions their own.
    let snap = |seq: i64, mv: i64| SnapshotRecord {
        workflow_id: "w1".into(),
        seq,
        materializer_version: mv,
        digest: format!("{seq:064}"),
        size: seq,
        created_at_ms: 300,
    };
    assert_eq!(store.latest_snapshot("w1", 7, 5).await.unwrap().unwrap().seq, 0);
    assert!(store.insert_snapshot(&snap(3, 1)).await.unwrap());
    assert!(!store.insert_snapshot(&snap(3, 1)).await.unwrap(), "recorded once");
    assert!(store.insert_snapshot(&snap(4, 2)).await.unwrap());
    let mut orphan = snap(1, 1);
    orphan.workflow_id = "nope".into();
    assert!(matches!(store.insert_snapshot(&orphan).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.latest_snapshot("w1", 1, 5).await.unwrap(), Some(snap(3, 1)));
    assert_eq!(store.latest_snapshot("w1", 1, 2).await.unwrap().unwrap().seq, 0);
    assert_eq!(store.latest_snapshot("w1", 2, 5).await.unwrap().unwrap().seq, 4);
    let base = store.latest_snapshot("w1", 1, 0).await.unwrap().unwrap();
    assert_eq!((base.digest.as_str(), base.size), ("c".repeat(64).as_str(), 42));
    let listed: Vec<i64> = store.list_snapshots("w1", 1).await.unwrap().iter().map(|s| s.seq).collect();
    assert_eq!(listed, [0, 3]);

    // Deleting takes the history along; another workspace cannot.
    assert!(!store.delete_workflow(b, "w1").await.unwrap());
    assert!(store.delete_workflow(a, "w1").await.unwrap());
    assert!(!store.delete_workflow(a, "w1").await.unwrap());
    assert!(store.list_patches("w1", 0, None, 100).await.unwrap().is_empty());
    assert!(store.list_snapshots("w1", 1).await.unwrap().is_empty());
}

#[test]
fn change_payloads_round_trip() {
    for change in [
        WorkflowChange::Patch { workflow_id: "0190-ab:cd".into(), seq: 42 },
        WorkflowChange::Deleted { workflow_id: "x".into() },
    ] {
        assert_eq!(WorkflowChange::parse(&change.payload().unwrap()), Some(change));
    }
    assert_eq!(WorkflowChange::parse("nonsense"), None);
    assert_eq!(WorkflowChange::parse(":5"), None);
    assert_eq!(WorkflowChange::Resync.payload(), None);
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteStore::connect(&url, &PoolOptions::default()).await.unwrap();
    run_suite(&store).await;
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let url = crate::testing::fresh_postgres_database().await;
    let store = PostgresStore::connect(&url, &PoolOptions::default()).await.unwrap();
    run_suite(&store).await;
}
