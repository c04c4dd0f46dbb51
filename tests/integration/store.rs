//! The store on real temporary database files, and the same tests on PostgreSQL (a scratch
//! schema on `HEARTH_TEST_POSTGRES`): schema, accounts, tokens, keys, usage, concurrency; then
//! SQLite's own backup and restore.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hearth::config::StoreSettings;
use hearth::store::migrations::known_version;
use hearth::store::scratch::Scratch;
use hearth::store::{
    self, restore, unix_now, usage, users, ConsumeOutcome, Role, Rotation, Store, StoreError, Usage,
};
use rusqlite::Connection;
use tempfile::TempDir;

fn settings() -> StoreSettings {
    StoreSettings {
        busy_timeout_ms: 5000,
        connections: 4,
        ..StoreSettings::default()
    }
}

/// A store on a fresh file in a temporary directory (kept alive by the returned guard).
fn open_temp() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("data/hearth.db"), &settings()).expect("open store");
    (dir, store)
}

/// A store on a fresh PostgreSQL schema, or `None` to skip (see `hearth::store::scratch`).
/// Opened on a plain thread: the blocking client must not run on an async worker.
fn open_postgres() -> Option<(Store, Scratch)> {
    std::thread::spawn(|| {
        let scratch = Scratch::new()?;
        let store = Store::open_postgres(&scratch.url, &settings()).expect("open store");
        Some((store, scratch))
    })
    .join()
    .expect("opening thread")
}

/// Each test, on SQLite and on PostgreSQL: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (_dir, store) = super::open_temp();
                super::$name(store).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some((store, _scratch)) = super::open_postgres() {
                    super::$name(store).await
                }
            }
        }
    )*};
}

on_both_engines!(
    an_answer_is_interrupted_only_when_the_process_generating_it_is_gone,
    usernames_are_unique_whatever_their_case,
    a_new_user_is_enabled_with_its_password_changed_at_creation,
    users_can_be_disabled_promoted_and_given_a_new_password,
    updating_a_missing_user_is_not_found,
    a_refresh_token_is_valid_once_and_its_reuse_revokes_the_family,
    expired_and_unknown_refresh_tokens_are_refused,
    revoking_all_of_a_users_tokens_ends_every_session_and_no_one_elses,
    logout_revokes_the_session_of_the_token_presented,
    of_many_concurrent_uses_of_one_token_exactly_one_succeeds,
    foreign_keys_refuse_rows_for_missing_users,
    a_duplicate_token_hash_is_a_conflict,
    one_user_can_neither_see_nor_delete_anothers_api_key,
    an_api_key_lookup_returns_its_owner_so_disabled_owners_can_be_refused,
    usage_is_summed_per_user_and_per_key_across_days,
    usage_through_the_async_api_counts_requests,
    many_tasks_writing_at_once_all_succeed,
    racing_rotations_of_one_token_leave_no_live_token_in_its_family,
    a_rotation_for_a_disabled_account_issues_nothing_and_ends_the_session,
);

/// `owner`'s streaming answers attributed to each of `replicas`, in a new conversation: their
/// message ids, in the same order.
pub(crate) fn streaming_answers(
    c: &hearth::store::Db,
    owner: i64,
    replicas: &[&str],
) -> Result<Vec<String>, StoreError> {
    use hearth::store::conversations::{self, NewConversation, NewMessage};
    let conv = conversations::create_conversation(
        c,
        owner,
        &NewConversation {
            title: "t".into(),
            model: None,
            system_prompt: None,
            params: serde_json::json!({}),
        },
        unix_now(),
    )?;
    let mut ids = Vec::new();
    for replica in replicas {
        let new = NewMessage {
            conversation_id: conv.id.clone(),
            parent_id: None,
            role: "assistant",
            content: String::new(),
            tool_call_id: None,
            model: None,
            status: "streaming",
            content_tokens: None,
            context: None,
        };
        ids.push(conversations::insert_message(c, owner, &new, replica, unix_now())?.id);
    }
    Ok(ids)
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

fn integrity(path: &Path) -> String {
    Connection::open(path)
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

fn usernames(path: &Path) -> HashSet<String> {
    let conn = Connection::open(path).expect("open");
    let mut stmt = conn.prepare("SELECT username FROM users").expect("prepare");
    let names = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    names
}

async fn user(store: &Store, name: &str) -> i64 {
    store
        .create_user(name, "hash", Role::User)
        .await
        .expect("create user")
        .id
}

// ---- schema --------------------------------------------------------------------------------

#[tokio::test]
async fn opening_creates_the_data_directory_and_applies_every_migration() {
    let (dir, store) = open_temp();
    let path = dir.path().join("data/hearth.db");
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(path.is_file());
    assert_eq!(user_version(&path), known_version());
}

#[tokio::test]
async fn reopening_applies_no_migration_twice_and_keeps_the_data() {
    let (dir, store) = open_temp();
    let path = dir.path().join("data/hearth.db");
    user(&store, "ada").await;
    drop(store);
    for _ in 0..2 {
        let store = Store::open(&path, &settings()).expect("reopen");
        assert_eq!(user_version(&path), known_version());
        assert_eq!(store.count_users().await.expect("count"), 1);
    }
}

#[tokio::test]
async fn every_connection_uses_wal_foreign_keys_normal_sync_and_the_busy_timeout() {
    let (_dir, store) = open_temp();
    // Hold all four connections at once so each one is checked.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                store
                    .run(move |c| {
                        barrier.wait();
                        let get = |p: &str| -> Result<String, StoreError> {
                            let c = c.as_sqlite().expect("a SQLite store");
                            Ok(c.query_row(&format!("PRAGMA {p}"), [], |r| {
                                r.get::<_, rusqlite::types::Value>(0)
                            })
                            .map(|v| format!("{v:?}"))?)
                        };
                        Ok([
                            get("journal_mode")?,
                            get("foreign_keys")?,
                            get("synchronous")?,
                            get("busy_timeout")?,
                        ])
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.expect("task").expect("pragmas");
        assert_eq!(
            got,
            [
                "Text(\"wal\")".to_string(),
                "Integer(1)".into(),
                "Integer(1)".into(),
                "Integer(5000)".into()
            ]
        );
    }
}

#[tokio::test]
async fn a_database_from_a_newer_hearth_is_refused_with_both_versions() {
    let (dir, store) = open_temp();
    let path = dir.path().join("data/hearth.db");
    drop(store);
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", known_version() + 5)
        .expect("bump version");
    let err = Store::open(&path, &settings()).expect_err("must refuse");
    match &err {
        StoreError::SchemaTooNew { found, known } => {
            assert_eq!((*found, *known), (known_version() + 5, known_version()));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    Connection::open(&path)
        .expect("open")
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .expect("create");
    let err = Store::open(&path, &settings()).expect_err("must refuse");
    assert!(matches!(err, StoreError::NotHearthDatabase { .. }), "{err}");
}

#[test]
fn the_cli_can_use_the_store_without_a_runtime() {
    let (_dir, store) = open_temp();
    let created = store
        .run_blocking(|c| users::create_user(c, "root", "hash", Role::Admin, unix_now()))
        .expect("create");
    let count = store
        .run_blocking(|c| users::count_users(c))
        .expect("count");
    assert_eq!((created.role, count), (Role::Admin, 1));
}

// ---- users ---------------------------------------------------------------------------------

async fn usernames_are_unique_whatever_their_case(store: Store) {
    let alice = store
        .create_user("Alice", "h1", Role::User)
        .await
        .expect("create");
    let err = store
        .create_user("aLICE", "h2", Role::User)
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let (found, hash) = store
        .user_by_username("ALICE")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!((found, hash.as_str()), (alice, "h1"));
    assert_eq!(store.count_users().await.expect("count"), 1);
}

async fn a_new_user_is_enabled_with_its_password_changed_at_creation(store: Store) {
    let before = unix_now();
    let u = store
        .create_user("bob", "h", Role::Admin)
        .await
        .expect("create");
    assert_eq!(
        (u.username.as_str(), u.role, u.disabled),
        ("bob", Role::Admin, false)
    );
    assert!(u.created_at >= before && u.created_at <= unix_now());
    assert_eq!(u.password_changed_at, u.created_at);
    assert_eq!(store.user_by_id(u.id).await.expect("by id"), Some(u));
    assert_eq!(store.user_by_id(9999).await.expect("by id"), None);
    assert_eq!(
        store.user_by_username("nobody").await.expect("lookup"),
        None
    );
}

async fn users_can_be_disabled_promoted_and_given_a_new_password(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    store.set_disabled(a, true).await.expect("disable");
    store.set_role(b, Role::Admin).await.expect("promote");
    store
        .run(move |c| users::set_password(c, b, "new-hash", 4_000_000_000))
        .await
        .expect("set password");
    let all = store.list_users().await.expect("list");
    assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a, b]);
    assert!(all[0].disabled && all[0].role == Role::User);
    assert!(!all[1].disabled && all[1].role == Role::Admin);
    assert_eq!(all[1].password_changed_at, 4_000_000_000);
    let (_, hash) = store
        .user_by_username("b")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(hash, "new-hash");
    store.set_disabled(a, false).await.expect("enable");
    assert!(
        !store
            .user_by_id(a)
            .await
            .expect("get")
            .expect("found")
            .disabled
    );
}

async fn updating_a_missing_user_is_not_found(store: Store) {
    for result in [
        store.set_disabled(42, true).await,
        store.set_role(42, Role::Admin).await,
        store.set_password(42, "h").await,
    ] {
        assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    }
}

// ---- refresh tokens ------------------------------------------------------------------------

async fn a_refresh_token_is_valid_once_and_its_reuse_revokes_the_family(store: Store) {
    let uid = user(&store, "ada").await;
    let now = unix_now();
    store
        .insert_refresh(uid, "fam", "t1", now + 3600)
        .await
        .expect("insert t1");
    assert_eq!(
        store.consume_refresh("t1", now).await.expect("consume"),
        ConsumeOutcome::Valid {
            user_id: uid,
            family_id: "fam".into()
        }
    );
    // Rotation: the next token of the session.
    store
        .insert_refresh(uid, "fam", "t2", now + 3600)
        .await
        .expect("insert t2");
    // Someone replays t1: the whole session dies.
    assert_eq!(
        store.consume_refresh("t1", now + 1).await.expect("consume"),
        ConsumeOutcome::Reused {
            user_id: uid,
            family_id: "fam".into()
        }
    );
    assert_eq!(
        store.consume_refresh("t2", now + 2).await.expect("consume"),
        ConsumeOutcome::Revoked
    );
}

async fn expired_and_unknown_refresh_tokens_are_refused(store: Store) {
    let uid = user(&store, "ada").await;
    let now = unix_now();
    store
        .insert_refresh(uid, "fam", "old", now)
        .await
        .expect("insert");
    // Live while now < expires_at: at expires_at it is expired, and stays unused.
    for _ in 0..2 {
        assert_eq!(
            store.consume_refresh("old", now).await.expect("consume"),
            ConsumeOutcome::Expired
        );
    }
    assert_eq!(
        store
            .consume_refresh("never-issued", now)
            .await
            .expect("consume"),
        ConsumeOutcome::Unknown
    );
    assert_eq!(
        store.delete_expired_refresh(now + 1).await.expect("purge"),
        1
    );
    assert_eq!(
        store.consume_refresh("old", now).await.expect("consume"),
        ConsumeOutcome::Unknown
    );
}

async fn revoking_all_of_a_users_tokens_ends_every_session_and_no_one_elses(store: Store) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let exp = unix_now() + 3600;
    for (uid, fam, hash) in [(ada, "f1", "a1"), (ada, "f2", "a2"), (bob, "f3", "b1")] {
        store
            .insert_refresh(uid, fam, hash, exp)
            .await
            .expect("insert");
    }
    assert_eq!(store.revoke_all_for_user(ada).await.expect("revoke"), 2);
    let now = unix_now();
    for hash in ["a1", "a2"] {
        assert_eq!(
            store.consume_refresh(hash, now).await.expect("consume"),
            ConsumeOutcome::Revoked
        );
    }
    assert!(matches!(
        store.consume_refresh("b1", now).await.expect("consume"),
        ConsumeOutcome::Valid { user_id, .. } if user_id == bob
    ));
}

async fn logout_revokes_the_session_of_the_token_presented(store: Store) {
    let uid = user(&store, "ada").await;
    let exp = unix_now() + 3600;
    for (fam, hash) in [("phone", "p1"), ("laptop", "l1")] {
        store
            .insert_refresh(uid, fam, hash, exp)
            .await
            .expect("insert");
    }
    assert_eq!(store.revoke_by_hash("p1").await.expect("logout"), 1);
    assert_eq!(store.revoke_by_hash("nope").await.expect("logout"), 0);
    let now = unix_now();
    assert_eq!(
        store.consume_refresh("p1", now).await.expect("consume"),
        ConsumeOutcome::Revoked
    );
    assert!(matches!(
        store.consume_refresh("l1", now).await.expect("consume"),
        ConsumeOutcome::Valid { .. }
    ));
    assert_eq!(store.revoke_family("laptop").await.expect("revoke"), 1);
}

async fn of_many_concurrent_uses_of_one_token_exactly_one_succeeds(store: Store) {
    let uid = user(&store, "ada").await;
    let now = unix_now();
    store
        .insert_refresh(uid, "fam", "t", now + 60)
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_refresh("t", now).await })
        })
        .collect();
    let mut valid = 0;
    for t in tasks {
        match t.await.expect("task").expect("consume") {
            ConsumeOutcome::Valid { .. } => valid += 1,
            ConsumeOutcome::Reused { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(valid, 1);
}

async fn foreign_keys_refuse_rows_for_missing_users(store: Store) {
    let exp = unix_now() + 60;
    let err = store
        .insert_refresh(404, "fam", "t", exp)
        .await
        .expect_err("no such user");
    assert!(matches!(err, StoreError::MissingReference(_)), "{err}");
    let err = store
        .create_api_key(404, "k", "hk_abc", "hash")
        .await
        .expect_err("no such user");
    assert!(matches!(err, StoreError::MissingReference(_)), "{err}");
    let err = store
        .record_usage(404, None, 1, 1)
        .await
        .expect_err("no such user");
    assert!(matches!(err, StoreError::MissingReference(_)), "{err}");
}

async fn a_duplicate_token_hash_is_a_conflict(store: Store) {
    let uid = user(&store, "ada").await;
    let exp = unix_now() + 60;
    store
        .insert_refresh(uid, "f", "t", exp)
        .await
        .expect("first");
    let err = store
        .insert_refresh(uid, "g", "t", exp)
        .await
        .expect_err("second");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

// ---- API keys ------------------------------------------------------------------------------

async fn one_user_can_neither_see_nor_delete_anothers_api_key(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let key = store
        .create_api_key(a, "laptop", "hk_12345678", "hash-a")
        .await
        .expect("create");
    assert_eq!(
        (
            key.user_id,
            key.name.as_str(),
            key.prefix.as_str(),
            key.last_used_at
        ),
        (a, "laptop", "hk_12345678", None)
    );
    assert!(store.list_api_keys(b).await.expect("list b").is_empty());
    let err = store
        .delete_api_key(b, key.id)
        .await
        .expect_err("not b's key");
    assert!(matches!(err, StoreError::NotFound), "{err}");
    let listed = store.list_api_keys(a).await.expect("list a");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.clone(), listed[0].usage),
        (key.clone(), Usage::default())
    );

    store.delete_api_key(a, key.id).await.expect("delete own");
    assert!(store.list_api_keys(a).await.expect("list a").is_empty());
    assert_eq!(store.api_key_by_hash("hash-a").await.expect("lookup"), None);
    let err = store.delete_api_key(a, key.id).await.expect_err("gone");
    assert!(matches!(err, StoreError::NotFound), "{err}");
}

async fn an_api_key_lookup_returns_its_owner_so_disabled_owners_can_be_refused(store: Store) {
    let a = user(&store, "a").await;
    let key = store
        .create_api_key(a, "k", "hk_1", "hash")
        .await
        .expect("create");
    store.set_disabled(a, true).await.expect("disable");
    let (found, owner) = store
        .api_key_by_hash("hash")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found, key);
    assert_eq!(
        (owner.id, owner.username.as_str(), owner.disabled),
        (a, "a", true)
    );

    store.touch_api_key(key.id, 1234).await.expect("touch");
    let (found, _) = store
        .api_key_by_hash("hash")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.last_used_at, Some(1234));
    assert!(matches!(
        store.touch_api_key(999, 1).await,
        Err(StoreError::NotFound)
    ));
}

// ---- usage ---------------------------------------------------------------------------------

async fn usage_is_summed_per_user_and_per_key_across_days(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let idle = user(&store, "idle").await;
    let k1 = store
        .create_api_key(a, "k1", "p1", "h1")
        .await
        .expect("k1")
        .id;
    let k2 = store
        .create_api_key(a, "k2", "p2", "h2")
        .await
        .expect("k2")
        .id;
    let day = 86_400;
    store
        .run(move |c| {
            usage::record_usage(c, a, Some(k1), 10, 5, 100)?;
            usage::record_usage(c, a, Some(k1), 20, 7, 200)?; // same day: same row
            usage::record_usage(c, a, Some(k1), 1, 1, 100 + day)?; // next day
            usage::record_usage(c, a, Some(k2), 3, 4, 300)?;
            usage::record_usage(c, a, None, 100, 50, 300)?; // web session
            usage::record_usage(c, b, None, 2, 2, 300)?;
            Ok(())
        })
        .await
        .expect("record");

    let keys = store.list_api_keys(a).await.expect("list");
    let per_key: Vec<_> = keys.iter().map(|k| (k.key.id, k.usage)).collect();
    assert_eq!(
        per_key,
        vec![
            (
                k1,
                Usage {
                    requests: 3,
                    prompt_tokens: 31,
                    completion_tokens: 13
                }
            ),
            (
                k2,
                Usage {
                    requests: 1,
                    prompt_tokens: 3,
                    completion_tokens: 4
                }
            ),
        ]
    );
    // Recording through a key marks it used.
    assert_eq!(keys[0].key.last_used_at, Some(100 + day));

    let a_total = Usage {
        requests: 5,
        prompt_tokens: 134,
        completion_tokens: 67,
    };
    assert_eq!(store.usage_for_user(a).await.expect("a").usage, a_total);
    let all = store.usage_by_user().await.expect("all");
    let rows: Vec<_> = all
        .iter()
        .map(|u| (u.user_id, u.username.as_str(), u.usage))
        .collect();
    assert_eq!(
        rows,
        vec![
            (a, "a", a_total),
            (
                b,
                "b",
                Usage {
                    requests: 1,
                    prompt_tokens: 2,
                    completion_tokens: 2
                }
            ),
            (idle, "idle", Usage::default()),
        ]
    );

    // Deleting a key does not erase what was done with it.
    store.delete_api_key(a, k1).await.expect("delete");
    assert_eq!(store.usage_for_user(a).await.expect("a").usage, a_total);
}

async fn usage_through_the_async_api_counts_requests(store: Store) {
    let a = user(&store, "a").await;
    for _ in 0..3 {
        store.record_usage(a, None, 7, 3).await.expect("record");
    }
    assert_eq!(
        store.usage_for_user(a).await.expect("usage").usage,
        Usage {
            requests: 3,
            prompt_tokens: 21,
            completion_tokens: 9
        }
    );
    assert!(matches!(
        store.usage_for_user(999).await,
        Err(StoreError::NotFound)
    ));
}

// ---- concurrency ---------------------------------------------------------------------------

async fn many_tasks_writing_at_once_all_succeed(store: Store) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let u = store
                    .create_user(&format!("user{i}"), "hash", Role::User)
                    .await?;
                store
                    .insert_refresh(u.id, &format!("f{i}"), &format!("t{i}"), unix_now() + 60)
                    .await?;
                for _ in 0..5 {
                    store.record_usage(u.id, None, 1, 2).await?;
                }
                Ok::<_, StoreError>(u.id)
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("every write succeeds");
    }
    // A second writer through the blocking API at the same time as async ones.
    let blocking = {
        let store = store.clone();
        std::thread::spawn(move || {
            (0..20).try_for_each(|i| {
                store
                    .run_blocking(|c| {
                        users::create_user(c, &format!("cli{i}"), "h", Role::User, unix_now())
                    })
                    .map(drop)
            })
        })
    };
    let more: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { user(&store, &format!("late{i}")).await })
        })
        .collect();
    for t in more {
        t.await.expect("task");
    }
    blocking.join().expect("thread").expect("blocking writes");
    assert_eq!(store.count_users().await.expect("count"), 104);
    let totals = store.usage_by_user().await.expect("usage");
    assert_eq!(totals.iter().map(|u| u.usage.requests).sum::<u64>(), 320);
}

// ---- backup and restore --------------------------------------------------------------------

/// Fill the database enough that a backup takes measurable time.
async fn pad(store: &Store, rows: usize) {
    store
        .run(move |c| {
            let tx = c.write_transaction()?;
            let hash = "x".repeat(200);
            for i in 0..rows {
                users::create_user(&tx, &format!("pad{i}"), &hash, Role::User, 0)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .expect("pad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_holds_every_row_committed_before_it_began() {
    let (dir, store) = open_temp();
    pad(&store, 5000).await;
    let committed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, committed, stop) = (store.clone(), Arc::clone(&committed), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<usize, StoreError> {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                store.run_blocking(|c| {
                    users::create_user(c, &format!("w{i}"), "h", Role::User, unix_now())
                })?;
                i += 1;
                committed.store(i, Ordering::SeqCst);
            }
            Ok(i)
        })
    };
    while committed.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let backups = dir.path().join("backups");
    let mut checked = Vec::new();
    for round in 0..3 {
        let before = committed.load(Ordering::SeqCst);
        let dest = backups.join(format!("b{round}.db"));
        store.backup_to(&dest).await.expect("backup");
        checked.push((dest, before));
    }
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().expect("writer thread").expect("writes");
    assert!(
        total > checked[0].1,
        "the writer kept writing during the backups"
    );

    for (dest, before) in &checked {
        assert_eq!(integrity(dest), "ok");
        assert_eq!(user_version(dest), known_version());
        let names = usernames(dest);
        assert!((0..5000).all(|i| names.contains(&format!("pad{i}"))));
        let missing: Vec<_> = (0..*before)
            .filter(|i| !names.contains(&format!("w{i}")))
            .collect();
        assert!(
            missing.is_empty(),
            "{} lacks rows {missing:?}",
            dest.display()
        );
    }
    // No temporary files are left beside the backups.
    let leftovers: Vec<_> = std::fs::read_dir(&backups)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| !n.to_string_lossy().starts_with('b'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restore the last backup into a fresh data directory and open it.
    let (last, before) = checked.last().cloned().expect("a backup");
    let fresh = dir.path().join("fresh/hearth.db");
    restore(&last, &fresh).expect("restore");
    let restored = Store::open(&fresh, &settings()).expect("open restored");
    let names: HashSet<String> = restored
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert!((0..before).all(|i| names.contains(&format!("w{i}"))));
    assert!((0..5000).all(|i| names.contains(&format!("pad{i}"))));
}

#[tokio::test]
async fn restoring_replaces_a_stopped_servers_database_and_its_wal() {
    let (dir, store) = open_temp();
    user(&store, "kept").await;
    let backup = dir.path().join("b.db");
    store.backup_to(&backup).await.expect("backup");
    user(&store, "after-backup").await;
    let path = store.path().expect("a file").to_path_buf();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let committed_wal = std::fs::read(&wal).expect("the last write is still in the WAL");
    assert!(!committed_wal.is_empty());
    drop(store);
    // As if the server had been killed: its WAL, holding commits, is still there.
    std::fs::write(&wal, committed_wal).expect("put the WAL back");

    restore(&backup, &path).expect("restore");
    for suffix in ["-wal", "-shm"] {
        assert!(!PathBuf::from(format!("{}{suffix}", path.display())).exists());
    }
    let store = Store::open(&path, &settings()).expect("open");
    assert!(store.user_by_username("kept").await.expect("get").is_some());
    assert!(store
        .user_by_username("after-backup")
        .await
        .expect("get")
        .is_none());
    assert!(backup.is_file(), "the backup itself is untouched");
}

#[tokio::test]
async fn restoring_while_the_database_is_open_is_refused() {
    let (dir, store) = open_temp();
    user(&store, "ada").await;
    let backup = dir.path().join("b.db");
    store.backup_to(&backup).await.expect("backup");
    let err = restore(&backup, store.path().expect("a file")).expect_err("server still running");
    assert!(matches!(err, StoreError::InUse(_)), "{err}");
    // Still usable.
    assert_eq!(store.count_users().await.expect("count"), 1);
}

#[test]
fn restoring_something_that_is_not_a_hearth_backup_leaves_the_database_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/hearth.db");
    let store = Store::open(&db, &settings()).expect("open");
    store
        .run_blocking(|c| users::create_user(c, "ada", "h", Role::User, 0))
        .expect("create");
    drop(store);

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).expect("write junk");
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .expect("open")
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("other db");
    for bad in [&junk, &other] {
        let err = restore(bad, &db).expect_err("not a backup");
        assert!(
            matches!(err, StoreError::NotHearthDatabase { .. }),
            "{}: {err}",
            bad.display()
        );
    }
    let err = restore(&dir.path().join("missing.db"), &db).expect_err("missing");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");

    let store = Store::open(&db, &settings()).expect("reopen");
    assert_eq!(
        store
            .run_blocking(|c| users::count_users(c))
            .expect("count"),
        1
    );
    let stray: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn restoring_a_backup_from_a_newer_hearth_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("a/hearth.db"), &settings()).expect("open");
    let backup = dir.path().join("b.db");
    store
        .run_blocking(|c| store::backup::backup_connection(c, &backup))
        .expect("backup");
    Connection::open(&backup)
        .expect("open")
        .pragma_update(None, "user_version", known_version() + 1)
        .expect("bump");
    let err = restore(&backup, &dir.path().join("b/hearth.db")).expect_err("too new");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_on_their_interval_and_keep_only_the_newest() {
    let (dir, store) = open_temp();
    user(&store, "ada").await;
    let off = settings();
    assert!(store::spawn_scheduled_backups(store.clone(), &off).is_none());

    let backups = dir.path().join("scheduled");
    let on = StoreSettings {
        backup_interval_secs: 1,
        backup_keep: 1,
        backup_dir: Some(backups.clone()),
        ..settings()
    };
    let task = store::spawn_scheduled_backups(store.clone(), &on).expect("scheduled");
    // Finished backups only: one being written is a hidden temporary file (and its journal)
    // until it is renamed into place.
    let list = || -> Vec<PathBuf> {
        std::fs::read_dir(&backups)
            .map(|rd| {
                rd.map(|e| e.expect("entry").path())
                    .filter(|p| {
                        !p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while list().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = list();
    assert_eq!(first.len(), 1, "{first:?}");
    // Pruning, while the task runs: a newer backup replaces the first and only `backup_keep`
    // (one) stays. Observed between ticks, never right after a rename and before its prune.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut replaced = false;
    while !replaced && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = list();
        replaced = now.len() == 1 && now[0] != first[0];
    }
    assert!(replaced, "pruned to backup_keep: {:?}", list());
    task.abort();
    // Aborting may land between a newer backup's rename and its prune: check the newest.
    let mut later = list();
    later.sort();
    let newest = later.pop().expect("a backup");
    let name = newest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("hearth-") && name.ends_with("Z.db"),
        "{name}"
    );
    assert_eq!(integrity(&newest), "ok");
    assert_eq!(usernames(&newest), HashSet::from(["ada".to_string()]));
}

async fn racing_rotations_of_one_token_leave_no_live_token_in_its_family(store: Store) {
    let uid = user(&store, "ada").await;
    for round in 0..60 {
        let parallel = if round % 2 == 0 { 2 } else { 20 };
        let now = unix_now();
        let old = format!("old{round}");
        store
            .insert_refresh(uid, &format!("fam{round}"), &old, now + 60)
            .await
            .expect("insert");
        let tasks: Vec<_> = (0..parallel)
            .map(|i| {
                let (store, old) = (store.clone(), old.clone());
                let new = format!("new{round}-{i}");
                tokio::spawn(async move {
                    let r = store.rotate_refresh(&old, &new, now + 60, now).await;
                    (new, r)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (new, r) = t.await.expect("task");
            match r.expect("rotate") {
                Rotation::Rotated(u) => {
                    assert_eq!(u.id, uid);
                    winners.push(new);
                }
                Rotation::Refused(ConsumeOutcome::Reused { .. }) => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        // The reuse revoked the family after the winner's rotation, its new token included.
        assert_eq!(
            store
                .consume_refresh(&winners[0], now)
                .await
                .expect("consume"),
            ConsumeOutcome::Revoked,
            "round {round} ({parallel} at once)"
        );
    }
}

async fn a_rotation_for_a_disabled_account_issues_nothing_and_ends_the_session(store: Store) {
    let uid = user(&store, "bea").await;
    let now = unix_now();
    store
        .insert_refresh(uid, "f", "r1", now + 60)
        .await
        .expect("insert");
    store.set_disabled(uid, true).await.expect("disable");
    assert_eq!(
        store
            .rotate_refresh("r1", "r2", now + 60, now)
            .await
            .expect("rotate"),
        Rotation::Refused(ConsumeOutcome::Revoked)
    );
    assert_eq!(
        store.consume_refresh("r2", now).await.expect("consume"),
        ConsumeOutcome::Unknown,
        "no token was issued"
    );
}

/// Both dialects' migrations build the same tables with the same columns (PostgreSQL adds only
/// its explicit `rowid` and search columns), so one set of queries serves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_build_the_same_tables_and_columns() {
    let Some((pg, _scratch)) = open_postgres() else {
        return;
    };
    let (_dir, lite) = open_temp();
    let sqlite_columns = lite
        .run(|c| {
            let c = c.as_sqlite().expect("sqlite");
            let mut out = std::collections::BTreeSet::new();
            let tables: Vec<String> = c
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for t in tables {
                let cols: Vec<String> = c
                    .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                out.extend(cols.into_iter().map(|col| format!("{t}.{col}")));
            }
            Ok(out)
        })
        .await
        .expect("sqlite columns");
    let pg_columns = pg
        .run(|c| {
            c.prepare_cached(
                "SELECT table_name || '.' || column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> 'hearth_schema' \
                 AND column_name NOT IN ('rowid', 'search', 'title_search')",
            )?
            .query_map((), |r| r.get::<_, String>(0))?
            .collect::<Result<std::collections::BTreeSet<_>, _>>()
        })
        .await
        .expect("postgres columns");
    assert!(sqlite_columns.len() > 80, "{sqlite_columns:?}");
    assert_eq!(sqlite_columns, pg_columns);
}

async fn an_answer_is_interrupted_only_when_the_process_generating_it_is_gone(store: Store) {
    use hearth::store::replicas::{self, GONE_AFTER_SECS};
    let owner = user(&store, "ada").await;
    let status = |id: &str| {
        let (store, id) = (store.clone(), id.to_owned());
        async move {
            store
                .message(owner, id)
                .await
                .expect("read")
                .expect("exists")
                .status
        }
    };
    // A live process's answer, a crashed one's (heartbeat an hour old), one from before
    // processes were tracked.
    let ids = store
        .run(move |c| {
            let now = unix_now();
            replicas::heartbeat(c, "live", now)?;
            replicas::heartbeat(c, "crashed", now - 3600)?;
            let ids = streaming_answers(c, owner, &["live", "crashed"])?;
            c.execute(
                "UPDATE messages SET replica = NULL WHERE id = ?1",
                [ids[1].clone()],
            )?;
            let more = streaming_answers(c, owner, &["crashed"])?;
            Ok([ids[0].clone(), ids[1].clone(), more[0].clone()])
        })
        .await
        .expect("seed");
    let swept = store
        .run(|c| replicas::interrupt_orphans(c, unix_now() - GONE_AFTER_SECS))
        .await
        .expect("sweep");
    assert_eq!(swept, 2);
    assert_eq!(status(&ids[0]).await, "streaming");
    assert_eq!(status(&ids[1]).await, "interrupted");
    assert_eq!(status(&ids[2]).await, "interrupted");
    // A process starting: alone on a SQLite file, everything streaming was orphaned; on a
    // shared PostgreSQL store the live replica's answer goes on.
    store.start_replica().await.expect("start");
    let expected = if store.path().is_some() {
        "interrupted"
    } else {
        "streaming"
    };
    assert_eq!(status(&ids[0]).await, expected);
    // This process's own answers are never its sweep's.
    let me = store.replica_id().to_owned();
    let mine = store
        .run(move |c| streaming_answers(c, owner, &[me.as_str()]))
        .await
        .expect("mine");
    assert_eq!(store.replica_heartbeat().await.expect("beat"), 0);
    assert_eq!(status(&mine[0]).await, "streaming");
}
