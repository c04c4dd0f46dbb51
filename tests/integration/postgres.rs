//! The store on PostgreSQL as users meet it: `hearth migrate-store` moving a used SQLite store
//! into PostgreSQL, verified row for row, and a server on the copy carrying on where the SQLite
//! one stopped (the same tokens, conversations, search, blog and no reused ids). Needs
//! `HEARTH_TEST_POSTGRES` (the test script starts a server); skipped without it.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::app::TestApp;
use hearth::config::Registration;
use hearth::store::scratch::Scratch;

pub(crate) fn open(c: &mut hearth::config::Config) {
    c.auth.registration = Registration::Open;
    c.auth.login_per_ip_per_minute = 100_000;
}

pub(crate) async fn scratch() -> Option<Scratch> {
    tokio::task::spawn_blocking(Scratch::new)
        .await
        .expect("scratch thread")
}

fn migrate(data_dir: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["migrate-store", "--to", to])
        .env("HEARTH__STORAGE__DATA_DIR", data_dir)
        .env_remove("HEARTH__STORAGE__URL")
        .output()
        .expect("run hearth migrate-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_used_sqlite_store_and_the_server_carries_on_on_postgres() {
    let Some(target) = scratch().await else {
        return;
    };
    // A SQLite server in use: two users, a branched conversation, a memory, a published post.
    let app = TestApp::spawn(|c| {
        open(c);
        c.storage.url = None;
    });
    let data_dir = app.data_dir.clone();
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let export = json!({
        "format": "hearth.conversation.v1",
        "conversation": {"title": "Otters and beavers", "active_leaf": "m3"},
        "messages": [
            {"id": "m1", "parent_id": null, "role": "user", "content": "tell me about otters"},
            {"id": "m2", "parent_id": "m1", "role": "assistant", "content": "Otters hold hands"},
            {"id": "m2b", "parent_id": "m1", "role": "assistant", "content": "Another answer"},
            {"id": "m3", "parent_id": "m2", "role": "user", "content": "and the café beavers?"}
        ]
    });
    let (s, conv) = app
        .post_json("/api/conversations/import", Some(&alice), &export)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    let conv_id = conv["id"].as_str().expect("id").to_owned();
    let (s, v) = app
        .post_json(
            "/api/me/memories",
            Some(&alice),
            &json!({"content": "likes rivers"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, post) = app
        .post_json(
            "/api/posts",
            Some(&alice),
            &json!({"title": "River notes", "body": "Otters *again*."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{post}");
    let post_id = post["id"].as_str().expect("post id");
    let (s, v) = app
        .post_json(
            &format!("/api/posts/{post_id}/publish"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, before) = app
        .get_json(&format!("/api/conversations/{conv_id}"), Some(&alice))
        .await;
    let (_, me_before) = app.get_json("/api/me", Some(&alice)).await;
    drop(app);

    let out = migrate(&data_dir, &target.url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["users", "messages", "posts", "memories"] {
        assert!(stdout.contains(line), "{stdout}");
    }
    assert!(stdout.contains("compared every row"), "{stdout}");
    // Into a store that is no longer empty: refused, nothing changed.
    let again = migrate(&data_dir, &target.url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The same data directory (its JWT secret), now on PostgreSQL.
    let url = target.url.clone();
    let app = TestApp::spawn_in(data_dir, move |c| {
        open(c);
        c.storage.url = Some(url);
    });
    // Tokens issued by the SQLite server still work: same secret, same user ids.
    let (s, me) = app.get_json("/api/me", Some(&alice)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me, me_before);
    let (s, after) = app
        .get_json(&format!("/api/conversations/{conv_id}"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(
        after, before,
        "the conversation, its tree and active branch"
    );
    // Search runs on PostgreSQL's index: words, prefixes, accents folded as FTS5 folds them.
    for q in ["otters", "beav", "cafe", "OTTERS hold"] {
        let (s, found) = app
            .get_json(&format!("/api/conversations?q={q}"), Some(&alice))
            .await;
        assert_eq!(s, StatusCode::OK, "{found}");
        let ids: Vec<&Value> = found["data"].as_array().expect("data").iter().collect();
        assert_eq!(ids.len(), 1, "q={q}: {found}");
    }
    let (_, none) = app
        .get_json("/api/conversations?q=giraffe", Some(&alice))
        .await;
    assert_eq!(none["data"], json!([]), "{none}");
    // Still owner-only.
    let (s, _) = app
        .get_json(&format!("/api/conversations/{conv_id}"), Some(&bob))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, found) = app
        .get_json("/api/conversations?q=otters", Some(&bob))
        .await;
    assert_eq!(found["data"], json!([]));
    // The public post and the memory came along.
    let page = app
        .client
        .get(app.url("/blog/alice/river-notes"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let (_, memories) = app.get_json("/api/me/memories", Some(&alice)).await;
    assert!(memories.to_string().contains("likes rivers"), "{memories}");
    // New rows get new ids: the identity counters start past the copied ones.
    let carol = app.user("carol").await;
    let (_, carol_me) = app.get_json("/api/me", Some(&carol)).await;
    let ids: Vec<i64> = [&me_before, &carol_me]
        .iter()
        .map(|m| m["user"]["id"].as_i64().expect("id"))
        .collect();
    assert!(ids[1] > ids[0] + 1, "carol's id {} after bob's", ids[1]);
    let (s, v) = app
        .post_json(
            "/api/me/memories",
            Some(&alice),
            &json!({"content": "second"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_store_share_accounts_sessions_and_conversations() {
    let Some(shared) = scratch().await else {
        return;
    };
    // Two servers, each with its own data directory (so each generated its own secret file),
    // one database.
    let (url_a, url_b) = (shared.url.clone(), shared.url.clone());
    let a = TestApp::spawn(move |c| {
        open(c);
        c.storage.url = Some(url_a);
    });
    let b = TestApp::spawn(move |c| {
        open(c);
        c.storage.url = Some(url_b);
    });
    assert_ne!(a.data_dir, b.data_dir);
    // Register on A, log in on B; an access token from either works on both.
    let creds = json!({"username": "ada", "password": "correct horse battery"});
    let (s, v) = a.post_json("/api/auth/register", None, &creds).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, login_b) = b.post_json("/api/auth/login", None, &creds).await;
    assert_eq!(s, StatusCode::OK, "{login_b}");
    let (s, login_a) = a.post_json("/api/auth/login", None, &creds).await;
    assert_eq!(s, StatusCode::OK, "{login_a}");
    for (app, token) in [(&a, &login_b), (&b, &login_a)] {
        let (s, me) = app
            .get_json("/api/me", token["access_token"].as_str())
            .await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(me["user"]["username"], "ada");
    }
    // A refresh token issued by A rotates on B, once: its reuse on A is caught.
    let refresh = json!({"refresh_token": login_a["refresh_token"]});
    let (s, rotated) = b.post_json("/api/auth/refresh", None, &refresh).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let (s, reused) = a.post_json("/api/auth/refresh", None, &refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{reused}");
    // A conversation started on A continues on B.
    let token = login_b["access_token"].as_str().expect("token").to_owned();
    let (s, conv) = a
        .post_json(
            "/api/conversations",
            Some(&token),
            &json!({"title": "Shared"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    let id = conv["id"].as_str().expect("id");
    let (s, seen) = b
        .get_json(&format!("/api/conversations/{id}"), Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{seen}");
    assert_eq!(seen["title"], "Shared", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starting_interrupts_only_the_answers_of_replicas_gone() {
    use hearth::store::{replicas, unix_now, Role, Store};
    let Some(shared) = scratch().await else {
        return;
    };
    // Another replica is generating an answer (its heartbeat is fresh); a crashed one left one.
    let url = shared.url.clone();
    let (store, owner, ids) = tokio::task::spawn_blocking(move || {
        let store = Store::open_postgres(&url, &Default::default()).expect("open");
        let (owner, ids) = store
            .run_blocking(|c| {
                let owner = hearth::store::users::create_user(c, "ada", "h", Role::User, 0)?.id;
                replicas::heartbeat(c, "peer", unix_now())?;
                replicas::heartbeat(c, "crashed", unix_now() - 3600)?;
                let ids = crate::store::streaming_answers(c, owner, &["peer", "crashed"])?;
                Ok((owner, ids))
            })
            .expect("seed");
        (store, owner, ids)
    })
    .await
    .expect("seed thread");
    let url = shared.url.clone();
    let _app = TestApp::spawn(move |c| c.storage.url = Some(url));
    let statuses: Vec<String> = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| {
                store
                    .run_blocking(|c| hearth::store::conversations::message(c, owner, id))
                    .expect("read")
                    .expect("exists")
                    .status
            })
            .collect()
    })
    .await
    .expect("read thread");
    assert_eq!(statuses, ["streaming", "interrupted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_database_drops_are_replaced_and_meanwhile_answer_503_never_500() {
    let Some(shared) = scratch().await else {
        return;
    };
    // Named apart, so only this server's sessions are ended below (other tests share the server).
    let name = format!("hearth_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}&application_name={name}", shared.url);
    let app = TestApp::spawn(move |c| {
        open(c);
        c.storage.url = Some(url);
        c.storage.connections = 2;
    });
    let token = app.user("ada").await;
    let (s, _) = app.get_json("/api/conversations", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    // The database server ends every session of the app (a restart or failover looks alike).
    let server = std::env::var("HEARTH_TEST_POSTGRES").expect("server");
    tokio::task::spawn_blocking(move || {
        let mut admin = postgres::Client::connect(&server, postgres::NoTls).expect("connect");
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&name],
            )
            .expect("terminate");
        assert_eq!(ended.len(), 2, "the app's two connections");
    })
    .await
    .expect("admin thread");
    // Each dead connection fails the one call that finds it dead, with 503; then it is
    // replaced, and every later call succeeds.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, v) = app.get_json("/api/conversations", Some(&token)).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
            "{s}: {v}"
        );
        statuses.push(s);
    }
    eprintln!("after the sessions ended: {statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s != StatusCode::OK).count() <= 2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses[4..],
        [StatusCode::OK, StatusCode::OK],
        "{statuses:?}"
    );
}

/// The test Redis (`HEARTH_TEST_REDIS`, which the test script starts), or `None` to skip;
/// with `HEARTH_TEST_REQUIRE_POSTGRES` set a missing one fails instead.
pub(crate) fn redis_url() -> Option<String> {
    match std::env::var("HEARTH_TEST_REDIS") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("HEARTH_TEST_REQUIRE_POSTGRES").is_none(),
                "the test script starts Redis: HEARTH_TEST_REDIS is missing"
            );
            eprintln!("skipped: set HEARTH_TEST_REDIS (scripts/redis.sh)");
            None
        }
    }
}
