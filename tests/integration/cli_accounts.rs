//! `hearth user …`, `hearth backup` and `hearth restore` end to end: the real binary on a real
//! SQLite file in a temporary data directory, with passwords piped on standard input. The
//! configured model does not exist, so every test also shows these commands never load it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hearth::auth::password::verify_blocking;
use hearth::config::StoreSettings;
use hearth::store::{api_keys, refresh_tokens, unix_now, usage, users, ConsumeOutcome, Role};
use hearth::store::{Store, StoreError};
use rusqlite::types::Value;
use rusqlite::Connection;
use tempfile::TempDir;

/// A data directory and a config file pointing at it.
struct Setup {
    dir: TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_auth("")
    }

    /// With extra lines for the `[auth]` section.
    fn with_auth(auth: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "[model]\npath = \"no-such-model.gguf\"\n[auth]\n{auth}\n[storage]\n\
                 data_dir = {:?}\n",
                data.to_str().expect("utf-8 temp path")
            ),
        )
        .expect("write config");
        Setup { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.settings().db_path()
    }

    fn settings(&self) -> StoreSettings {
        StoreSettings {
            data_dir: self.path("data"),
            ..StoreSettings::default()
        }
    }

    /// The database opened the way the server opens it.
    fn store(&self) -> Store {
        Store::open(&self.db(), &self.settings()).expect("open store")
    }

    /// Run `hearth --config <ours> ARGS` with `stdin` piped in (nothing: an empty stdin).
    fn hearth(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hearth");
        let mut pipe = child.stdin.take().expect("stdin");
        // A command that reads no password may exit before reading: ignore a broken pipe.
        let _ = pipe.write_all(stdin.as_bytes());
        drop(pipe);
        child.wait_with_output().expect("wait for hearth")
    }

    /// `hearth user create [--admin] NAME` with `password` piped in; must succeed.
    fn create(&self, name: &str, admin: bool, password: &str) -> String {
        let mut args = vec!["user", "create"];
        if admin {
            args.push("--admin");
        }
        args.push(name);
        succeeds(&self.hearth(&args, &format!("{password}\n")))
    }

    fn user(&self, name: &str) -> (users::User, String) {
        self.store()
            .run_blocking(|c| users::user_by_username(c, name))
            .expect("look up")
            .unwrap_or_else(|| panic!("no user {name}"))
    }

    /// `hearth user list`, parsed: username → (role, disabled).
    fn listed(&self) -> BTreeMap<String, (String, String)> {
        let out = succeeds(&self.hearth(&["user", "list"], ""));
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
        assert_eq!(
            header,
            ["id", "username", "role", "disabled", "created", "(UTC)"]
        );
        lines
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(cells.len(), 6, "{l}");
                (
                    cells[1].to_owned(),
                    (cells[2].to_owned(), cells[3].to_owned()),
                )
            })
            .collect()
    }
}

/// Stdout of a command that must succeed.
fn succeeds(o: &Output) -> String {
    assert!(
        o.status.success(),
        "hearth failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

/// Stderr of a command that must fail with a non-zero exit code.
fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "hearth should have failed; stdout:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_ne!(o.status.code(), Some(0));
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn integrity(path: &Path) -> String {
    Connection::open(path)
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Every row of every table, by table name.
fn dump(path: &Path) -> BTreeMap<String, Vec<Vec<Value>>> {
    let conn = Connection::open(path).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    tables
        .into_iter()
        .map(|t| {
            let width = conn
                .prepare(&format!("SELECT * FROM \"{t}\""))
                .expect("prepare")
                .column_count();
            let order: Vec<String> = (1..=width).map(|i| i.to_string()).collect();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT * FROM \"{t}\" ORDER BY {}",
                    order.join(", ")
                ))
                .expect("prepare");
            let rows = stmt
                .query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())
                .expect("query")
                .collect::<Result<Vec<Vec<Value>>, _>>()
                .expect("rows");
            (t, rows)
        })
        .collect()
}

fn usernames(path: &Path) -> HashSet<String> {
    dump(path)["users"]
        .iter()
        .map(|row| match &row[1] {
            Value::Text(name) => name.clone(),
            other => panic!("username {other:?}"),
        })
        .collect()
}

/// A refresh token for `user_id`, as a login would store it; returns its hash.
fn issue_refresh(store: &Store, user_id: i64, family: &str) -> String {
    let hash = format!("hash-{family}");
    store
        .run_blocking(|c| {
            refresh_tokens::insert_refresh(c, user_id, family, &hash, unix_now() + 3600, unix_now())
        })
        .expect("insert refresh token");
    hash
}

fn consume(store: &Store, hash: &str) -> ConsumeOutcome {
    store
        .run_blocking(|c| refresh_tokens::consume_refresh(c, hash, unix_now()))
        .expect("consume")
}

// ---- accounts ------------------------------------------------------------------------------

#[test]
fn an_admin_and_a_user_created_with_piped_passwords_are_listed_with_their_roles() {
    let s = Setup::new();
    let out = s.create("root", true, "correct horse");
    assert!(out.contains("created admin `root`"), "{out}");
    let out = s.create("ada.l-2_x", false, "battery staple");
    assert!(out.contains("created user `ada.l-2_x`"), "{out}");

    let listed = s.listed();
    assert_eq!(listed["root"], ("admin".into(), "no".into()));
    assert_eq!(listed["ada.l-2_x"], ("user".into(), "no".into()));
    assert_eq!(listed.len(), 2);

    let (_, hash) = s.user("root");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify_blocking("correct horse", Some(&hash)).expect("verify"));
}

#[test]
fn a_password_piped_with_a_crlf_line_ending_is_stored_without_it() {
    let s = Setup::new();
    succeeds(&s.hearth(&["user", "create", "win"], "from windows\r\nignored\n"));
    let (_, hash) = s.user("win");
    assert!(verify_blocking("from windows", Some(&hash)).expect("verify"));
}

/// Run `hearth --config <ours> ARGS` on a pseudo-terminal (util-linux `script`), typing
/// `typed`; `None` where `script` is not installed.
#[cfg(target_os = "linux")]
fn hearth_on_a_terminal(s: &Setup, args: &str, typed: &str) -> Option<Output> {
    let command = format!(
        "{} --config {} {args}",
        env!("CARGO_BIN_EXE_hearth"),
        s.config.display()
    );
    let mut child = match Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("run script: {e}"),
    };
    let mut pipe = child.stdin.take().expect("stdin");
    let _ = pipe.write_all(typed.as_bytes());
    drop(pipe);
    Some(child.wait_with_output().expect("wait for script"))
}

#[cfg(target_os = "linux")]
#[test]
fn a_password_typed_at_a_terminal_is_asked_for_twice_and_must_match_to_count() {
    let s = Setup::new();
    let Some(out) = hearth_on_a_terminal(&s, "user create ada", "first one\nsecond one\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    // On a terminal, stderr and stdout both arrive through the transcript.
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{transcript}");
    assert!(transcript.contains("New password for ada:"), "{transcript}");
    assert!(transcript.contains("Repeat the password:"), "{transcript}");
    assert!(
        transcript.contains("the two passwords differ"),
        "{transcript}"
    );
    assert!(s.listed().is_empty());

    let out = hearth_on_a_terminal(&s, "user create ada", "same one\nsame one\n").expect("script");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("created user `ada`"), "{transcript}");
    let (_, hash) = s.user("ada");
    assert!(verify_blocking("same one", Some(&hash)).expect("verify"));
}

#[test]
fn creating_a_taken_username_in_any_case_fails_with_a_message() {
    let s = Setup::new();
    s.create("ada", false, "password one");
    for name in ["ada", "ADA"] {
        let err = fails(&s.hearth(&["user", "create", name], "password two\n"));
        assert!(err.contains("a user named `ada` already exists"), "{err}");
    }
    let (_, hash) = s.user("ada");
    assert!(verify_blocking("password one", Some(&hash)).expect("verify"));
    assert_eq!(s.listed().len(), 1);
}

#[test]
fn bad_usernames_and_short_passwords_are_refused_and_nothing_is_created() {
    let s = Setup::new();
    for name in ["a b", "ad!", "zoë", "ab", &"x".repeat(33)] {
        let err = fails(&s.hearth(&["user", "create", name], "long enough\n"));
        assert!(err.contains("username"), "{name}: {err}");
    }
    let err = fails(&s.hearth(&["user", "create", "shorty"], "short\n"));
    assert!(err.contains("at least 8 characters"), "{err}");
    assert!(s.listed().is_empty());
}

#[test]
fn the_username_and_password_rules_come_from_the_auth_config() {
    let s = Setup::with_auth("username_min_len = 5\npassword_min_len = 12");
    let err = fails(&s.hearth(&["user", "create", "abcd"], "twelve chars\n"));
    assert!(err.contains("5 to 32 characters"), "{err}");
    let err = fails(&s.hearth(&["user", "create", "abcde"], "eleven char\n"));
    assert!(err.contains("at least 12 characters"), "{err}");
    s.create("abcde", false, "twelve chars");
}

#[test]
fn an_empty_standard_input_is_refused_when_no_terminal_is_attached() {
    let s = Setup::new();
    let err = fails(&s.hearth(&["user", "create", "ada"], ""));
    assert!(err.contains("standard input is empty"), "{err}");
    assert!(s.listed().is_empty());
}

#[test]
fn disabling_revokes_refresh_tokens_and_enabling_restores_the_account() {
    let s = Setup::new();
    s.create("root", true, "password root");
    s.create("ada", false, "password ada");
    let (ada, _) = s.user("ada");
    let token = issue_refresh(&s.store(), ada.id, "ada-session");

    let out = succeeds(&s.hearth(&["user", "disable", "ada"], ""));
    assert!(out.contains("disabled `ada` and revoked 1"), "{out}");
    assert_eq!(s.listed()["ada"], ("user".into(), "yes".into()));
    assert!(s.user("ada").0.disabled);
    assert_eq!(consume(&s.store(), &token), ConsumeOutcome::Revoked);
    let again = succeeds(&s.hearth(&["user", "disable", "ADA"], ""));
    assert!(again.contains("already disabled"), "{again}");

    let out = succeeds(&s.hearth(&["user", "enable", "ada"], ""));
    assert!(out.contains("enabled `ada`"), "{out}");
    assert_eq!(s.listed()["ada"], ("user".into(), "no".into()));
    assert_eq!(s.listed()["root"], ("admin".into(), "no".into()));
}

#[test]
fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted() {
    let s = Setup::new();
    s.create("root", true, "password root");
    s.create("ada", false, "password ada");
    for args in [["user", "disable", "root"], ["user", "set-role", "root"]] {
        let mut args = args.to_vec();
        if args[1] == "set-role" {
            args.push("user");
        }
        let err = fails(&s.hearth(&args, ""));
        assert!(err.contains("`root` is the last enabled admin"), "{err}");
    }
    assert_eq!(s.listed()["root"], ("admin".into(), "no".into()));

    // A disabled admin does not count: with `bob` disabled, `root` is still the last one.
    s.create("bob", true, "password bob");
    succeeds(&s.hearth(&["user", "disable", "bob"], ""));
    let err = fails(&s.hearth(&["user", "set-role", "root", "user"], ""));
    assert!(err.contains("last enabled admin"), "{err}");

    // With a second enabled admin, `root` may go; then `bob` is the last one.
    succeeds(&s.hearth(&["user", "enable", "bob"], ""));
    succeeds(&s.hearth(&["user", "disable", "root"], ""));
    let err = fails(&s.hearth(&["user", "set-role", "bob", "user"], ""));
    assert!(err.contains("`bob` is the last enabled admin"), "{err}");
}

#[test]
fn set_role_promotes_and_demotes_when_another_admin_remains() {
    let s = Setup::new();
    s.create("root", true, "password root");
    s.create("ada", false, "password ada");
    let out = succeeds(&s.hearth(&["user", "set-role", "ada", "admin"], ""));
    assert!(out.contains("`ada` is now an admin"), "{out}");
    assert_eq!(s.user("ada").0.role, Role::Admin);
    let out = succeeds(&s.hearth(&["user", "set-role", "root", "user"], ""));
    assert!(out.contains("`root` is now a user"), "{out}");
    assert_eq!(s.listed()["root"], ("user".into(), "no".into()));
    let err = fails(&s.hearth(&["user", "set-role", "ada", "root"], ""));
    assert!(err.contains("possible values: user, admin"), "{err}");
}

#[test]
fn passwd_replaces_the_hash_and_revokes_the_users_refresh_tokens() {
    let s = Setup::new();
    s.create("ada", false, "old password");
    s.create("bob", false, "bobs password");
    let (ada, old_hash) = s.user("ada");
    let (bob, _) = s.user("bob");
    let store = s.store();
    let ada_tokens = [
        issue_refresh(&store, ada.id, "laptop"),
        issue_refresh(&store, ada.id, "phone"),
    ];
    let bob_token = issue_refresh(&store, bob.id, "bobs");
    drop(store);

    let out = succeeds(&s.hearth(&["user", "passwd", "ada"], "new password\n"));
    assert!(out.contains("revoked 2 refresh token(s)"), "{out}");
    let (after, new_hash) = s.user("ada");
    assert_ne!(new_hash, old_hash);
    assert!(verify_blocking("new password", Some(&new_hash)).expect("verify"));
    assert!(!verify_blocking("old password", Some(&new_hash)).expect("verify"));
    assert!(after.password_changed_at >= ada.password_changed_at);
    let store = s.store();
    for t in &ada_tokens {
        assert_eq!(consume(&store, t), ConsumeOutcome::Revoked);
    }
    assert!(matches!(
        consume(&store, &bob_token),
        ConsumeOutcome::Valid { .. }
    ));

    let err = fails(&s.hearth(&["user", "passwd", "ada"], "tiny\n"));
    assert!(err.contains("at least 8"), "{err}");
    assert_eq!(
        s.user("ada").1,
        new_hash,
        "a refused password changes nothing"
    );
}

#[test]
fn commands_on_an_unknown_user_fail_with_a_message() {
    let s = Setup::new();
    s.create("root", true, "password root");
    for args in [
        &["user", "disable", "nobody"][..],
        &["user", "enable", "nobody"],
        &["user", "set-role", "nobody", "admin"],
        &["user", "passwd", "nobody"],
    ] {
        let err = fails(&s.hearth(args, "some password\n"));
        assert!(err.contains("no user named `nobody`"), "{args:?}: {err}");
    }
}

// ---- backup and restore --------------------------------------------------------------------

#[test]
fn a_backup_taken_while_another_process_writes_holds_every_user_committed_before_it() {
    let s = Setup::new();
    s.create("root", true, "password root");
    let store = s.store();
    // Enough pages that the copy takes a while.
    store
        .run_blocking(|c| {
            let tx = c.write_transaction()?;
            for i in 0..3000 {
                users::create_user(&tx, &format!("pad{i}"), &"h".repeat(100), Role::User, 0)?;
            }
            tx.commit()?;
            Ok(())
        })
        .expect("pad");
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
        std::thread::sleep(Duration::from_millis(1));
    }

    let before = committed.load(Ordering::SeqCst);
    let dest = s.path("backup.db");
    let out = succeeds(&s.hearth(&["backup", dest.to_str().expect("utf-8")], ""));
    let during = committed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().expect("writer thread").expect("writes");
    assert!(out.contains("backed up"), "{out}");
    assert!(
        during > before,
        "the writer kept writing while the backup ran"
    );

    assert_eq!(integrity(&dest), "ok");
    let names = usernames(&dest);
    assert!(names.contains("root"));
    assert!((0..3000).all(|i| names.contains(&format!("pad{i}"))));
    let missing: Vec<_> = (0..before)
        .filter(|i| !names.contains(&format!("w{i}")))
        .collect();
    assert!(missing.is_empty(), "the backup lacks {missing:?}");
    // The live database has every write, before, during and after.
    let live = store
        .run_blocking(|c| users::count_users(c))
        .expect("count");
    assert_eq!(live as usize, 1 + 3000 + total);
    // Nothing but the backup was left beside it.
    let beside: Vec<_> = std::fs::read_dir(s.dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains("backup.db-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

#[test]
fn a_backup_into_a_directory_gets_a_timestamped_private_file() {
    let s = Setup::new();
    s.create("root", true, "password root");
    let dir = s.path("backups");
    std::fs::create_dir(&dir).expect("mkdir");
    succeeds(&s.hearth(&["backup", dir.to_str().expect("utf-8")], ""));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().expect("name").to_string_lossy();
    assert!(
        name.starts_with("hearth-") && name.ends_with("Z.db"),
        "{name}"
    );
    assert_eq!(usernames(&files[0]), HashSet::from(["root".to_owned()]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[0])
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn backing_up_onto_the_live_database_or_without_one_is_refused() {
    let s = Setup::new();
    let err = fails(&s.hearth(&["backup", s.path("b.db").to_str().expect("utf-8")], ""));
    assert!(err.contains("no database"), "{err}");
    assert!(!s.db().exists(), "backup must not create a database");

    s.create("root", true, "password root");
    let before = dump(&s.db());
    let err = fails(&s.hearth(&["backup", s.db().to_str().expect("utf-8")], ""));
    assert!(err.contains("the live database itself"), "{err}");
    assert_eq!(dump(&s.db()), before);
}

#[test]
fn a_restore_into_a_stopped_servers_data_dir_brings_back_every_row() {
    let s = Setup::new();
    s.create("root", true, "password root");
    s.create("ada", false, "password ada");
    // What a running server would have written: sessions, keys, usage.
    let store = s.store();
    let (ada, _) = s.user("ada");
    issue_refresh(&store, ada.id, "ada-session");
    let key = store
        .run_blocking(|c| api_keys::create_api_key(c, ada.id, "laptop", "sk-hearth-abcd", "kh", 1))
        .expect("key");
    store
        .run_blocking(|c| usage::record_usage(c, ada.id, Some(key.id), 12, 34, unix_now()))
        .expect("usage");
    drop(store);

    let backup = s.path("backup.db");
    succeeds(&s.hearth(&["backup", backup.to_str().expect("utf-8")], ""));
    let backed_up = dump(&backup);
    for table in ["users", "refresh_tokens", "api_keys", "usage_daily"] {
        assert!(!backed_up[table].is_empty(), "{table} is in the backup");
    }

    // Changes after the backup, then the "server" stops (nothing holds the database open).
    s.create("late", false, "password late");
    succeeds(&s.hearth(&["user", "disable", "ada"], ""));

    let out = succeeds(&s.hearth(&["restore", backup.to_str().expect("utf-8")], ""));
    assert!(out.contains("restored"), "{out}");
    assert!(out.contains("(2 user(s))"), "{out}");
    assert_eq!(dump(&s.db()), backed_up, "every row, exactly as backed up");
    assert_eq!(integrity(&s.db()), "ok");
    let listed = s.listed();
    assert_eq!(listed["ada"], ("user".into(), "no".into()));
    assert!(!listed.contains_key("late"));

    // The database it replaced was kept, with the later changes.
    let saved: Vec<PathBuf> = std::fs::read_dir(s.settings().backup_dir())
        .expect("the backup dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(out.contains(saved[0].to_str().expect("utf-8")), "{out}");
    assert!(usernames(&saved[0]).contains("late"));
}

#[test]
fn restoring_while_a_process_has_the_database_open_is_refused_and_leaves_it_intact() {
    let s = Setup::new();
    s.create("root", true, "password root");
    let backup = s.path("backup.db");
    succeeds(&s.hearth(&["backup", backup.to_str().expect("utf-8")], ""));
    s.create("late", false, "password late");

    // This test process plays the running server.
    let server = s.store();
    let err = fails(&s.hearth(&["restore", backup.to_str().expect("utf-8")], ""));
    assert!(err.contains("stop the server first"), "{err}");
    assert!(err.contains("left as it was"), "{err}");
    let names: Vec<String> = server
        .run_blocking(|c| users::list_users(c))
        .expect("list")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["root", "late"]);
    drop(server);
    assert_eq!(integrity(&s.db()), "ok");
    let leftovers = std::fs::read_dir(s.settings().backup_dir()).map_or(0, |d| d.count());
    assert_eq!(
        leftovers, 0,
        "no safety copy is kept when nothing was replaced"
    );
}

#[test]
fn restoring_a_file_that_is_not_a_database_is_refused_and_leaves_the_database_intact() {
    let s = Setup::new();
    s.create("root", true, "password root");
    let before = dump(&s.db());
    let junk = s.path("notes.txt");
    std::fs::write(
        &junk,
        "these are not the pages you are looking for\n".repeat(200),
    )
    .expect("write");
    let err = fails(&s.hearth(&["restore", junk.to_str().expect("utf-8")], ""));
    assert!(err.contains("not a usable Hearth database"), "{err}");
    assert_eq!(dump(&s.db()), before);
    assert_eq!(integrity(&s.db()), "ok");

    let err = fails(&s.hearth(
        &["restore", s.path("missing.db").to_str().expect("utf-8")],
        "",
    ));
    assert!(err.contains("is not a file"), "{err}");
    let err = fails(&s.hearth(&["restore", s.db().to_str().expect("utf-8")], ""));
    assert!(err.contains("the live database itself"), "{err}");
    assert_eq!(dump(&s.db()), before);
}
