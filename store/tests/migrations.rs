//! Migrations and health: several processes may migrate at once; the store works as a
//! `DynStore`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::sync::Arc;

use common::TestDb;
use ris_store::{DynStore, PgStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_all_succeed() {
    let db = TestDb::unmigrated().await;
    let stores: Vec<PgStore> = (0..4).map(|_| db.second_store()).collect();
    let runs = stores.iter().map(|s| s.migrate());
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
    // Once more, now that everything is applied.
    db.store.migrate().await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
        })
        .count();
    let applied = db.count("SELECT count(*) FROM _sqlx_migrations").await;
    assert_eq!(usize::try_from(applied).unwrap(), files);
}

#[tokio::test]
async fn ping_through_the_shared_handle() {
    let db = TestDb::new().await;
    let store: DynStore = Arc::new(db.store.clone());
    store.ping().await.unwrap();
    assert!(store.list_tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lazy_pool_starts_without_a_database() {
    // Nothing listens on port 1: creating the store succeeds, using it fails.
    let store = PgStore::connect_lazy("postgres://postgres@127.0.0.1:1/none", 2).unwrap();
    let store: DynStore = Arc::new(store);
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
