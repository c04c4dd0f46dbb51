//! `hearth user …`, `hearth backup` and `hearth restore`: account administration and backups
//! from the command line, straight on the configured database file. No server and no model are
//! needed; the account commands and `backup` are safe while a server runs on the same database
//! (SQLite's WAL and busy timeout order the writes), `restore` refuses unless it is stopped.
//!
//! A boundary layer like the rest of `cli`: it applies the account policy the store leaves to
//! its callers (the `[auth]` username and password rules, "keep one enabled admin", revoking
//! sessions when a password changes or an account is disabled) and formats the results for a
//! terminal, with `anyhow` context on failures. No SQL here: only the store's typed functions.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::auth::password::hash_blocking;
use crate::auth::rules::{validate_password, validate_username};
use crate::config::{AuthSettings, Config, StoreSettings};
use crate::store::{
    self, api_keys, backup, refresh_tokens, unix_now, users, Db, Role, Store, StoreError, User,
};

/// An account change refused by policy rather than by the database.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no user named `{0}`")]
    NoSuchUser(String),
    #[error(
        "`{0}` is the last enabled admin; make another user an admin first \
         (`hearth user set-role NAME admin`)"
    )]
    LastEnabledAdmin(String),
}

/// Open the configured database with one connection: the CLI makes one call at a time.
fn open_store(settings: &StoreSettings) -> Result<Store> {
    let settings = StoreSettings {
        connections: 1,
        ..settings.clone()
    };
    Store::connect(&settings)
        .with_context(|| format!("opening {}", crate::app::store_name(&settings)))
}

/// Run `change` in one `BEGIN IMMEDIATE` transaction, committed only when it returns
/// `Ok(Ok(_))`. Immediate, so that a check ("is this the last admin?") and the write it guards
/// see the same database even when a server writes beside us.
fn in_transaction<T>(
    store: &Store,
    change: impl FnOnce(&Db) -> Result<Result<T, Refusal>, StoreError>,
) -> Result<T> {
    let outcome = store.run_blocking(|conn| {
        let tx = conn.write_transaction()?;
        let outcome = change(&tx)?;
        if outcome.is_ok() {
            tx.commit()?;
        }
        // Dropped without a commit: rolled back.
        Ok(outcome)
    })?;
    Ok(outcome?)
}

/// The user named `name` (any ASCII case).
fn find_user(conn: &Db, name: &str) -> Result<Result<User, Refusal>, StoreError> {
    Ok(users::user_by_username(conn, name)?
        .map(|(user, _hash)| user)
        .ok_or_else(|| Refusal::NoSuchUser(name.to_owned())))
}

/// Whether taking `user`'s admin powers away (disabling or demoting them) would leave no
/// enabled admin to manage the others.
fn is_last_enabled_admin(conn: &Db, user: &User) -> Result<bool, StoreError> {
    if user.role != Role::Admin || user.disabled {
        return Ok(false);
    }
    let others = users::list_users(conn)?
        .into_iter()
        .filter(|u| u.id != user.id && u.role == Role::Admin && !u.disabled)
        .count();
    Ok(others == 0)
}

/// The first line of `input` without its line ending (`\n` or `\r\n`): a password piped to
/// `hearth user create|passwd`. Nothing else is trimmed: spaces are part of a password.
pub fn password_from_reader(mut input: impl BufRead) -> Result<String> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    if read == 0 {
        bail!(
            "standard input is empty: pipe the password as one line, or run the command in a \
             terminal to be prompted"
        );
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// A new password for `username`: the first line of standard input when it is not a terminal,
/// otherwise typed twice at a prompt without echo. Checked against the `[auth]` rules.
pub fn read_new_password(auth: &AuthSettings, username: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let password = password_from_reader(stdin.lock())?;
        validate_password(auth, &password).map_err(|e| anyhow!(e))?;
        return Ok(password);
    }
    let password = rpassword::prompt_password(format!("New password for {username}: "))
        .context("reading the password from the terminal")?;
    // Checked before the second prompt, so a refused password is not typed twice.
    validate_password(auth, &password).map_err(|e| anyhow!(e))?;
    let again = rpassword::prompt_password("Repeat the password: ")
        .context("reading the password from the terminal")?;
    if again != password {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(password)
}

/// `hearth user create [--admin] NAME`: check the name, read a password (see
/// [`read_new_password`]), hash it and add the account. A taken name (in any ASCII case) is
/// an error, found before the password is asked for.
pub fn create_user(config: &Config, name: &str, role: Role) -> Result<String> {
    let username = validate_username(&config.auth, name).map_err(|e| anyhow!(e))?;
    let store = open_store(&config.storage)?;
    let taken = |existing: &str| anyhow!("a user named `{existing}` already exists");
    if let Some((existing, _)) = store.run_blocking(|c| users::user_by_username(c, &username))? {
        return Err(taken(&existing.username));
    }
    let password = read_new_password(&config.auth, &username)?;
    let hash = hash_blocking(&password).context("hashing the password")?;
    let user = store
        .run_blocking(|c| users::create_user(c, &username, &hash, role, unix_now()))
        .map_err(|e| match e {
            // Created by someone else while the password was typed.
            StoreError::Conflict(_) => taken(&username),
            other => anyhow::Error::from(other).context("creating the user"),
        })?;
    Ok(format!(
        "created {} `{}` (id {})",
        user.role, user.username, user.id
    ))
}

/// `hearth user list`: every account as an aligned table, oldest first.
pub fn list_users(config: &Config) -> Result<String> {
    let store = open_store(&config.storage)?;
    let all = store.run_blocking(|c| users::list_users(c))?;
    Ok(users_table(&all))
}

/// The table `hearth user list` prints: id, username, role, disabled, created (UTC).
pub fn users_table(all: &[User]) -> String {
    let header = ["id", "username", "role", "disabled", "created (UTC)"].map(String::from);
    let rows: Vec<[String; 5]> = all
        .iter()
        .map(|u| {
            let created = chrono::DateTime::from_timestamp(u.created_at, 0).map_or_else(
                || u.created_at.to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            );
            [
                u.id.to_string(),
                u.username.clone(),
                u.role.to_string(),
                if u.disabled { "yes" } else { "no" }.to_owned(),
                created,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            // The id column is right-aligned, like numbers; the rest left-aligned.
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `hearth user disable NAME` / `enable NAME`. Disabling also revokes the user's refresh
/// tokens (their sessions end when the current access tokens expire) and is refused for the
/// last enabled admin.
pub fn set_disabled(config: &Config, name: &str, disabled: bool) -> Result<String> {
    let store = open_store(&config.storage)?;
    in_transaction(&store, |tx| {
        let user = match find_user(tx, name)? {
            Ok(user) => user,
            Err(refused) => return Ok(Err(refused)),
        };
        let verb = if disabled { "disabled" } else { "enabled" };
        if user.disabled == disabled {
            return Ok(Ok(format!("`{}` is already {verb}", user.username)));
        }
        if disabled && is_last_enabled_admin(tx, &user)? {
            return Ok(Err(Refusal::LastEnabledAdmin(user.username)));
        }
        users::set_disabled(tx, user.id, disabled)?;
        if !disabled {
            return Ok(Ok(format!("enabled `{}`", user.username)));
        }
        let revoked = refresh_tokens::revoke_all_for_user(tx, user.id, unix_now())?;
        Ok(Ok(format!(
            "disabled `{}` and revoked {revoked} refresh token(s)",
            user.username
        )))
    })
}

/// `hearth user set-role NAME user|admin`. Demoting the last enabled admin is refused.
/// Access tokens already issued keep the role they were issued with until they expire.
pub fn set_role(config: &Config, name: &str, role: Role) -> Result<String> {
    let store = open_store(&config.storage)?;
    let ttl_min = config.auth.access_token_ttl_secs.div_ceil(60);
    in_transaction(&store, |tx| {
        let user = match find_user(tx, name)? {
            Ok(user) => user,
            Err(refused) => return Ok(Err(refused)),
        };
        if user.role == role {
            return Ok(Ok(format!(
                "`{}` is already {}",
                user.username,
                with_article(role)
            )));
        }
        if role != Role::Admin && is_last_enabled_admin(tx, &user)? {
            return Ok(Err(Refusal::LastEnabledAdmin(user.username)));
        }
        users::set_role(tx, user.id, role)?;
        Ok(Ok(format!(
            "`{}` is now {} (access tokens issued before keep their role until they expire, \
             within {ttl_min} min)",
            user.username,
            with_article(role)
        )))
    })
}

/// "a user", "an admin".
fn with_article(role: Role) -> &'static str {
    match role {
        Role::User => "a user",
        Role::Admin => "an admin",
    }
}

/// `hearth user passwd NAME`: read a new password (see [`read_new_password`]), store its hash,
/// revoke every refresh token of the user, so other sessions must log in again, and unless
/// `keep_api_keys` delete their API keys (whoever knew the old password may have made some).
pub fn change_password(config: &Config, name: &str, keep_api_keys: bool) -> Result<String> {
    let store = open_store(&config.storage)?;
    let user = store
        .run_blocking(|c| find_user(c, name))?
        .map_err(anyhow::Error::from)?;
    let password = read_new_password(&config.auth, &user.username)?;
    let hash = hash_blocking(&password).context("hashing the password")?;
    let revoked = in_transaction(&store, |tx| {
        let now = unix_now();
        match users::set_password(tx, user.id, &hash, now) {
            // Deleted while the password was typed.
            Err(StoreError::NotFound) => return Ok(Err(Refusal::NoSuchUser(name.to_owned()))),
            other => other?,
        }
        let sessions = refresh_tokens::revoke_all_for_user(tx, user.id, now)?;
        let keys = if keep_api_keys {
            0
        } else {
            api_keys::delete_all_api_keys(tx, user.id)?
        };
        Ok(Ok((sessions, keys)))
    })?;
    let (sessions, keys) = revoked;
    Ok(format!(
        "changed the password of `{}`, revoked {sessions} refresh token(s) and deleted {keys} \
         API key(s)",
        user.username
    ))
}

/// Whether `a` and `b` name the same file, or would once `b` is created (compares the
/// canonical directories and the file names, so `./x.db` and `dir/../x.db` match).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new(".")).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (canonical(a), canonical(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether `path` is the database at `db_path` or one of its `-wal`/`-shm`/`-journal` files.
fn is_database_file(path: &Path, db_path: &Path) -> bool {
    ["", "-wal", "-shm", "-journal"].iter().any(|suffix| {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        same_file(path, Path::new(&name))
    })
}

/// How many users the database file at `path` holds (opened on its own, then closed again, so
/// no `-wal`/`-shm` stays behind).
fn count_users_in(path: &Path) -> Result<u64> {
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let db = Db::sqlite(conn);
    let n = users::count_users(&db).with_context(|| format!("reading {}", path.display()))?;
    db.into_sqlite()
        .expect("a SQLite connection")
        .close()
        .map_err(|(_, e)| e)
        .with_context(|| format!("closing {}", path.display()))?;
    Ok(n)
}

/// Make `path` readable by its owner only (on Unix): a backup holds password hashes, and may
/// land outside the private data directory.
fn make_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// Refuse `command` on a PostgreSQL store, whose backups are `pg_dump`'s and `pg_restore`'s.
fn sqlite_only(config: &Config, command: &str) -> Result<()> {
    if let Ok(crate::config::StoreTarget::Postgres(_)) = config.storage.target() {
        bail!(
            "`hearth {command}` works on a SQLite store; this one is on PostgreSQL \
             (storage.url): use pg_dump and pg_restore"
        );
    }
    Ok(())
}

/// `hearth backup FILE`: a consistent copy of the configured database, taken with SQLite's
/// online backup API, so it is safe while a server writes. The copy is written beside `dest`
/// under a temporary name and renamed into place (an existing file is replaced). When `dest`
/// is a directory the copy goes into it as `hearth-YYYYmmddTHHMMSSZ.db`.
pub fn backup(config: &Config, dest: &Path) -> Result<String> {
    sqlite_only(config, "backup")?;
    let db_path = config.storage.db_path();
    if !db_path.exists() {
        bail!(
            "there is no database at {}: nothing to back up",
            db_path.display()
        );
    }
    let dest = if dest.is_dir() {
        dest.join(backup::backup_file_name(chrono::Utc::now()))
    } else {
        dest.to_path_buf()
    };
    if is_database_file(&dest, &db_path) {
        bail!(
            "{} is the live database itself; back it up to another file",
            dest.display()
        );
    }
    let store = open_store(&config.storage)?;
    store
        .run_blocking(|c| backup::backup_connection(c, &dest))
        .with_context(|| format!("backing up {} to {}", db_path.display(), dest.display()))?;
    drop(store);
    make_private(&dest)?;
    let users = count_users_in(&dest)?;
    Ok(format!(
        "backed up {} to {} ({users} user(s), {} bytes)",
        db_path.display(),
        dest.display(),
        file_size(&dest)?
    ))
}

/// A copy of the current database, taken before a restore replaces it. `None` when there is no
/// database yet.
fn save_current_database(config: &Config, db_path: &Path) -> Result<Option<PathBuf>> {
    if !db_path.exists() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let dir = config.storage.backup_dir();
    // Not named like a scheduled backup, so pruning never deletes it; numbered when two
    // restores happen within a second, so one never overwrites the other.
    let dest = (0..)
        .map(|n| match n {
            0 => dir.join(format!("hearth-before-restore-{stamp}.db")),
            n => dir.join(format!("hearth-before-restore-{stamp}-{n}.db")),
        })
        .find(|p| !p.exists())
        .unwrap_or_default();
    match open_store(&config.storage) {
        Ok(store) => {
            store
                .run_blocking(|c| backup::backup_connection(c, &dest))
                .with_context(|| {
                    format!(
                        "saving the current database to {} before restoring",
                        dest.display()
                    )
                })?;
        }
        // Unreadable, or not a Hearth database: keep its bytes as they are.
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "copying the current database file as is");
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::copy(db_path, &dest)
                .with_context(|| format!("copying {} to {}", db_path.display(), dest.display()))?;
        }
    }
    make_private(&dest)?;
    Ok(Some(dest))
}

/// `hearth restore FILE`: replace the configured database with the backup `src`, for a
/// **stopped** server. The current database (if any) is first saved into the backup directory
/// as `hearth-before-restore-…db`; the backup is then checked (integrity, Hearth schema) and
/// moved into place by [`store::restore`], which refuses while another process has the
/// database open. On any refusal the database is left as it was.
pub fn restore(config: &Config, src: &Path) -> Result<String> {
    sqlite_only(config, "restore")?;
    let db_path = config.storage.db_path();
    if !src.is_file() {
        bail!("{} is not a file", src.display());
    }
    if is_database_file(src, &db_path) {
        bail!(
            "{} is the live database itself; restore from a backup file",
            src.display()
        );
    }
    let saved = save_current_database(config, &db_path)?;
    if let Err(e) = store::restore(src, &db_path) {
        if let Some(saved) = &saved {
            // Nothing was replaced: the safety copy is not needed.
            let _ = std::fs::remove_file(saved);
        }
        return Err(anyhow::Error::from(e).context(format!(
            "restoring {} from {}; the database was left as it was",
            db_path.display(),
            src.display()
        )));
    }
    let users = count_users_in(&db_path)?;
    let mut report = format!(
        "restored {} from {} ({users} user(s))",
        db_path.display(),
        src.display()
    );
    match saved {
        Some(saved) => report.push_str(&format!(
            "; the database it replaced is saved as {}",
            saved.display()
        )),
        None => report.push_str("; there was no database before"),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_password_is_its_first_line_without_the_line_ending() {
        let read = |s: &str| password_from_reader(s.as_bytes()).expect("a password");
        assert_eq!(read("hunter22\n"), "hunter22");
        assert_eq!(read("hunter22\r\nsecond line\n"), "hunter22");
        assert_eq!(read("no newline at all"), "no newline at all");
        assert_eq!(read("  spaces stay  \n"), "  spaces stay  ");
    }

    #[test]
    fn empty_standard_input_is_an_error_that_says_what_to_do() {
        let err = password_from_reader(&b""[..]).expect_err("nothing piped");
        assert!(err.to_string().contains("pipe the password"), "{err}");
    }

    #[test]
    fn the_users_table_aligns_its_columns_under_a_header() {
        let user = |id, name: &str, role, disabled| User {
            id,
            username: name.into(),
            role,
            disabled,
            created_at: 1_700_000_000,
            password_changed_at: 1_700_000_000,
            sessions_revoked_at: 0,
        };
        let table = users_table(&[
            user(1, "root", Role::Admin, false),
            user(12, "marguerite", Role::User, true),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "id  username    role   disabled  created (UTC)",
                " 1  root        admin  no        2023-11-14 22:13:20",
                "12  marguerite  user   yes       2023-11-14 22:13:20",
            ]
        );
    }

    #[test]
    fn a_database_and_its_side_files_are_recognised_under_other_spellings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("hearth.db");
        let other = dir.path().join("sub/../hearth.db-wal");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        assert!(is_database_file(&db, &db));
        assert!(is_database_file(&other, &db));
        assert!(!is_database_file(&dir.path().join("backup.db"), &db));
    }
}
