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
    assert_eq!(store.missing_blobs(&a.id, &[d2.clone(), d1.clone()]).await.unwrap(), [d2.clone()]);
    assert_eq!(store.missing_blobs(&b.id, &[d1.clone()]).await.unwrap(), [d1.clone()]);
    let many: Vec<String> = (0..1200).map(|i| format!("{i:064x}")).collect();
    assert_eq!(store.missing_blobs(&a.id, &many).await.unwrap().len(), 1200);

    // Deleting a workspace takes its keys and references with it.
    assert!(store.delete_workspace("alpha").await.unwrap());
    assert!(!store.delete_workspace("alpha").await.unwrap());
    assert_eq!(store.get_key("k1").await.unwrap(), None);
    assert_eq!(store.blob_ref(&a.id, &d1).await.unwrap(), None);
    assert!(store.get_key("k2").await.unwrap().is_some());

    // Plugins: versions, activation, generation, deletion.
    let generation = store.plugin_generation().await.unwrap();
    let v1 = PluginVersionRecord { name: "p".into(), version: "1".into(), manifest: "{}".into(), digest: d1.clone(), created_at_ms: 1 };
    let v2 = PluginVersionRecord { version: "2".into(), digest: d2.clone(), created_at_ms: 2, ..v1.clone() };
    assert!(store.add_plugin_version(&v1).await.unwrap());
    assert!(!store.add_plugin_version(&v1).await.unwrap(), "the same upload again is fine");
    let clash = PluginVersionRecord { digest: d2.clone(), ..v1.clone() };
    assert!(matches!(store.add_plugin_version(&clash).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.activate_plugin("p", "9", 5).await, Err(StoreError::NotFound(_))));
    store.activate_plugin("p", "1", 5).await.unwrap();
    store.add_plugin_version(&v2).await.unwrap();
    store.activate_plugin("p", "2", 6).await.unwrap();
    let active = store.active_plugins().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version, v2);
    assert_eq!(store.plugin_versions("p").await.unwrap(), [v1.clone(), v2.clone()]);
    assert!(store.plugin_generation().await.unwrap() >= generation + 2);
    assert!(store.delete_plugin("p").await.unwrap());
    assert!(!store.delete_plugin("p").await.unwrap());
    assert!(store.active_plugins().await.unwrap().is_empty());
    assert!(store.plugin_versions("p").await.unwrap().is_empty());
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
