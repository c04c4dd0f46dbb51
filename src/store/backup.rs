//! Backups: consistent online copies with SQLite's backup API while the server runs, scheduled
//! backups and their pruning, and restore into a stopped server's data directory. Every file is
//! written beside its destination under a temporary name and renamed into place, so a crash
//! never leaves a half-written backup or database under the real name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;
use tokio::task::JoinHandle;

use super::migrations::{self, known_version, user_version};
use super::{Db, Store, StoreError};
use crate::config::StoreSettings;

const NAME_PREFIX: &str = "hearth-";
const NAME_SUFFIX: &str = ".db";
const NAME_TIME: &str = "%Y%m%dT%H%M%SZ";

/// The file name of a backup taken at `at`: `hearth-YYYYmmddTHHMMSSZ.db`. Names sort by time.
pub fn backup_file_name(at: DateTime<Utc>) -> String {
    format!("{NAME_PREFIX}{}{NAME_SUFFIX}", at.format(NAME_TIME))
}

/// Whether `name` is a backup file name as [`backup_file_name`] writes it.
fn is_backup_file_name(name: &str) -> bool {
    name.strip_prefix(NAME_PREFIX)
        .and_then(|rest| rest.strip_suffix(NAME_SUFFIX))
        .is_some_and(|stamp| NaiveDateTime::parse_from_str(stamp, NAME_TIME).is_ok())
}

/// A temporary name in `dest`'s directory, hidden and unique.
fn temp_path_beside(dest: &Path, purpose: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "hearth".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.{purpose}-{}.tmp", uuid::Uuid::new_v4()))
}

/// `path` with `suffix` appended to its file name (`hearth.db` → `hearth.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Remove `path` if it exists.
fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// Flush a file's contents to disk.
fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

/// Flush a directory entry (a rename) to disk where the platform allows it.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = std::fs::File::open(dir).and_then(|f| f.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The directory `path` lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Copy the database behind `src` to `dest` with the online backup API. Copies every page in
/// one step, i.e. inside one read transaction: the copy is the database as of that moment, and
/// other connections keep writing meanwhile (WAL readers do not block writers). Done in small
/// steps instead, each write by another connection would restart the copy, which might then
/// never finish on a busy server.
/// [`StoreError::Unsupported`] on PostgreSQL, whose backups are `pg_dump`'s.
pub fn backup_connection(src: &Db, dest: &Path) -> Result<(), StoreError> {
    let src = src.as_sqlite().ok_or_else(|| {
        StoreError::Unsupported(
            "backups of a PostgreSQL store are made with pg_dump, not by Hearth".into(),
        )
    })?;
    let dir = parent_dir(dest);
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let tmp = temp_path_beside(dest, "backup");
    let result = copy_into(src, &tmp).and_then(|()| {
        // Backups hold password hashes: owner-only, before the file gets its final name.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::io(&tmp, e))?;
        }
        sync_file(&tmp)?;
        std::fs::rename(&tmp, dest).map_err(|e| StoreError::io(dest, e))?;
        sync_dir(dir);
        Ok(())
    });
    if result.is_err() {
        for leftover in [tmp.clone(), with_suffix(&tmp, "-journal")] {
            let _ = std::fs::remove_file(leftover);
        }
    }
    result
}

fn copy_into(src: &Connection, tmp: &Path) -> Result<(), StoreError> {
    let mut dst = Connection::open(tmp)?;
    {
        let backup = Backup::new(src, &mut dst)?;
        let mut waits = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                // Transient: the source is mid-write on this very connection, or a lock is
                // held. Retry for as long as a busy writer would wait.
                StepResult::Busy | StepResult::Locked if waits < 100 => {
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                StepResult::Busy | StepResult::Locked => {
                    return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("backup could not read the database for 5 s".into()),
                    )));
                }
                // StepResult is non-exhaustive; any new variant is treated as "keep going".
                _ => {}
            }
        }
    }
    dst.close().map_err(|(_, e)| StoreError::from(e))
}

impl Store {
    /// Write a consistent copy of the live database to `dest` (replacing it if present), safe
    /// while other tasks write. Holds one connection for the duration.
    pub async fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let dest = dest.to_path_buf();
        self.run(move |c| backup_connection(c, &dest)).await
    }

    /// Back up into `dir` under a timestamped name ([`backup_file_name`]); returns the path.
    pub async fn backup_into(&self, dir: &Path) -> Result<PathBuf, StoreError> {
        let dest = dir.join(backup_file_name(Utc::now()));
        self.backup_to(&dest).await?;
        Ok(dest)
    }
}

/// Delete all but the newest `keep` backups in `dir` (files named like [`backup_file_name`];
/// anything else is left alone). Returns the files deleted. A missing `dir` has nothing to prune.
pub fn prune_backups(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_backup_file_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            names.push(name);
        }
    }
    // The timestamp format sorts lexically in time order: newest first.
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for name in names.into_iter().skip(keep) {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Start backing up every `settings.backup_interval_secs` into `settings.backup_dir()`, keeping
/// the newest `settings.backup_keep`. `None` when the interval is 0 (off). The first backup is
/// one interval after the start. Failures are logged and the schedule goes on; abort the handle
/// at shutdown. Must be called inside a tokio runtime.
pub fn spawn_scheduled_backups(store: Store, settings: &StoreSettings) -> Option<JoinHandle<()>> {
    if settings.backup_interval_secs == 0 {
        return None;
    }
    let period = Duration::from_secs(settings.backup_interval_secs);
    let dir = settings.backup_dir();
    let keep = settings.backup_keep.max(1);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.backup_into(&dir).await {
                Ok(path) => tracing::info!(path = %path.display(), "database backed up"),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "scheduled backup failed");
                    continue;
                }
            }
            let pruned = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || prune_backups(&dir, keep)).await
            };
            match pruned {
                Ok(Ok(removed)) if !removed.is_empty() => {
                    tracing::info!(removed = removed.len(), "old backups deleted");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "pruning backups failed"),
                Err(e) => tracing::error!(error = %e, "pruning backups failed"),
            }
        }
    }))
}

/// Replace the database at `db_path` with the backup `src`, for a **stopped** server.
/// Blocking. The backup is copied beside `db_path` first and checked there (`PRAGMA
/// integrity_check`, Hearth's application id, a schema version this build knows); only then are
/// the old database's stale `-wal`/`-shm` files removed and the copy renamed into place. `src`
/// itself is never modified. [`StoreError::InUse`] if another process has `db_path` open.
pub fn restore(src: &Path, db_path: &Path) -> Result<(), StoreError> {
    let src_wal = with_suffix(src, "-wal");
    if std::fs::metadata(&src_wal).is_ok_and(|m| m.len() > 0) {
        return Err(StoreError::NotHearthDatabase {
            path: src.to_path_buf(),
            reason: format!(
                "{} exists: it is a live database, not a backup (make one with backup_to)",
                src_wal.display()
            ),
        });
    }
    let dir = parent_dir(db_path);
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    ensure_not_in_use(db_path)?;

    let tmp = temp_path_beside(db_path, "restore");
    let result = std::fs::copy(src, &tmp)
        .map_err(|e| StoreError::io(src, e))
        .and_then(|_| verify_backup(&tmp, src))
        .and_then(|()| sync_file(&tmp));
    if let Err(e) = result {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&tmp, suffix));
        }
        return Err(e);
    }
    // The old WAL must go before the new file arrives: replayed onto another database's pages
    // it would corrupt them.
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&with_suffix(db_path, suffix))?;
    }
    std::fs::rename(&tmp, db_path).map_err(|e| StoreError::io(db_path, e))?;
    sync_dir(dir);
    Ok(())
}

/// Check the copy at `copy` of the backup `src` (named in errors); leaves no `-wal`/`-shm`.
fn verify_backup(copy: &Path, src: &Path) -> Result<(), StoreError> {
    let not_ours = |reason: String| StoreError::NotHearthDatabase {
        path: src.to_path_buf(),
        reason,
    };
    let conn = Connection::open(copy)?;
    let checks: Vec<String> = match conn.prepare("PRAGMA integrity_check").and_then(|mut s| {
        s.query_map((), |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    }) {
        Ok(checks) => checks,
        // "file is not a database" and the like.
        Err(e) => return Err(not_ours(e.to_string())),
    };
    if checks != ["ok"] {
        return Err(not_ours(format!(
            "integrity check failed: {}",
            checks.join("; ")
        )));
    }
    let version = user_version(&conn)?;
    if version == 0 {
        return Err(not_ours("it has no Hearth schema".into()));
    }
    if version > known_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: known_version(),
        });
    }
    migrations::check_identity(&conn, &src.display().to_string(), version)?;
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

/// [`StoreError::InUse`] if some connection (another process) has `db_path` open. In WAL mode
/// every open connection holds a shared lock on the WAL index, so leaving WAL mode is refused
/// while any other connection exists; that is the probe.
fn ensure_not_in_use(db_path: &Path) -> Result<(), StoreError> {
    if !db_path.exists() {
        return Ok(());
    }
    let conn = Connection::open(db_path)?;
    let mode: rusqlite::Result<String> =
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0));
    match mode {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => {}
        Ok(_) => return Err(StoreError::InUse(db_path.to_path_buf())),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            return Err(StoreError::InUse(db_path.to_path_buf()));
        }
        // Unreadable or corrupt: replacing it is what a restore is for.
        Err(e) => {
            tracing::warn!(path = %db_path.display(), error = %e, "replacing unreadable database")
        }
    }
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backup_names_carry_a_sortable_utc_timestamp() {
        let at = Utc
            .with_ymd_and_hms(2025, 3, 9, 4, 5, 6)
            .single()
            .expect("valid time");
        assert_eq!(backup_file_name(at), "hearth-20250309T040506Z.db");
        assert!(is_backup_file_name(&backup_file_name(at)));
    }

    #[test]
    fn only_backup_names_are_recognised() {
        for other in [
            "hearth.db",
            "hearth-20250309T040506Z.db-wal",
            "hearth-2025.db",
            "hearth-20251309T040506Z.db",
            ".hearth-20250309T040506Z.db.backup-1.tmp",
            "notes-20250309T040506Z.db",
        ] {
            assert!(!is_backup_file_name(other), "{other}");
        }
    }

    #[test]
    fn prune_keeps_the_newest_and_ignores_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            "hearth-20240101T000000Z.db",
            "hearth-20250101T000000Z.db",
            "hearth-20230101T000000Z.db",
            "hearth-20250601T120000Z.db",
            "keep-me.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").expect("write");
        }
        let mut removed = prune_backups(dir.path(), 2).expect("prune");
        removed.sort();
        assert_eq!(
            removed,
            vec![
                dir.path().join("hearth-20230101T000000Z.db"),
                dir.path().join("hearth-20240101T000000Z.db"),
            ]
        );
        for kept in [
            "hearth-20250101T000000Z.db",
            "hearth-20250601T120000Z.db",
            "keep-me.txt",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn pruning_a_missing_directory_removes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let removed = prune_backups(&dir.path().join("nope"), 1).expect("prune");
        assert!(removed.is_empty());
    }

    #[test]
    fn suffixes_append_to_the_file_name() {
        assert_eq!(
            with_suffix(Path::new("/d/hearth.db"), "-wal"),
            Path::new("/d/hearth.db-wal")
        );
        assert_eq!(parent_dir(Path::new("hearth.db")), Path::new("."));
    }
}
