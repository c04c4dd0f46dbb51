//! The store: accounts (users, refresh tokens, API keys), usage counters, conversations,
//! preferences and blog posts, in one SQLite file (`<data_dir>/hearth.db`, the default) or one
//! PostgreSQL database (`storage.url = "postgres://…"`, for replicas that share it). Owns the
//! connections, the schema (embedded migrations for both engines, see `migrations.rs`),
//! backups (SQLite) and the copy from SQLite to PostgreSQL (`transfer.rs`). Must not import
//! axum, api, auth or engine: callers pass hashes, never passwords or raw tokens, and get typed
//! rows back, never SQL. The aggregates' SQL is written once, against [`db::Db`]'s statement
//! API; what differs between the engines lives in `db.rs` and `migrations.rs`.
//!
//! # Access
//! Every database call runs on a blocking thread, never on the async runtime:
//! - async callers (the server) use the typed methods on [`Store`] (`store.create_user(..)`), or
//!   [`Store::run`] to compose several calls in one closure;
//! - sync callers outside a runtime (the CLI's `hearth user create`) use [`Store::run_blocking`]
//!   with the typed per-aggregate functions, e.g.
//!   `store.run_blocking(|c| users::create_user(c, "ada", &hash, Role::Admin, unix_now()))`.
//!   Never call `run_blocking` from an async task: it parks the thread while it waits.
//!
//! # Connections and durability
//! A fixed set of `storage.connections` connections (see `pool.rs`). PostgreSQL's durability is
//! its server's; a connection the server dropped is replaced when next lent. SQLite's each have
//! `journal_mode=WAL` (readers never block the writer, nor it them), `foreign_keys=ON`,
//! `busy_timeout=storage.busy_timeout_ms` and `synchronous=NORMAL`. In WAL mode NORMAL syncs the
//! WAL only at checkpoints: every acknowledged commit has reached the operating system before the
//! call returns, so it survives the process being killed (SIGKILL, panic, OOM); only an OS crash
//! or power loss can roll back the last few commits, never corrupt the file. That is the right
//! trade for a self-hosted playground; FULL would fsync every commit. Multi-statement writes use
//! `BEGIN IMMEDIATE`, so they queue on `busy_timeout` instead of failing with `SQLITE_BUSY` when
//! a read transaction would have to be upgraded.

/// Account operations spanning several tables, each in one transaction.
pub mod accounts;
/// API keys: create, list with usage, delete, look up by hash.
pub mod api_keys;
/// Online backups, restore and pruning of scheduled backups.
pub mod backup;
/// Conversations and their message trees, with full-text search.
pub mod conversations;
/// One connection to either engine, and the statement API the aggregates use.
pub mod db;
/// Embedded schema migrations.
pub mod migrations;
/// Blog posts and their revisions.
pub mod posts;
/// Users' preferences and memories; server-wide settings.
pub mod preferences;
/// Refresh-token rotation: issue, consume once, detect reuse, revoke.
pub mod refresh_tokens;
/// Server processes and which streaming answers are theirs.
pub mod replicas;
/// Throwaway PostgreSQL schemas for tests and benchmarks.
pub mod scratch;
/// Copying a SQLite store into PostgreSQL, verified row for row.
pub mod transfer;
/// Per-user, per-key, per-day request and token counters.
pub mod usage;
/// User accounts.
pub mod users;

mod pool;
mod postgres_store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ffi;
use tokio::sync::Semaphore;

pub use db::{Db, Dialect, Optional};
pub use postgres_store::redact as redact_url;

use crate::config::StoreSettings;
use pool::Pool;

pub use accounts::{AccountUpdate, Rotation};
pub use api_keys::{ApiKey, ApiKeyWithUsage};
pub use backup::{backup_file_name, prune_backups, restore, spawn_scheduled_backups};
pub use refresh_tokens::ConsumeOutcome;
pub use usage::{DailyUsage, Usage, UserUsage};
pub use users::{Role, User};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or, for scoped calls, is not the caller's).
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write, e.g. a username that is taken.
    #[error("already exists ({0})")]
    Conflict(String),
    /// A foreign key refused the write: the row it refers to does not exist.
    #[error("refers to a row that does not exist ({0})")]
    MissingReference(String),
    /// The file was written by a newer Hearth; this build must not touch it.
    #[error(
        "the database schema is version {found}, newer than this build of Hearth knows \
         ({known}); run a newer Hearth or restore an older backup"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` in the file.
        found: i64,
        /// The newest migration this build embeds.
        known: i64,
    },
    /// The file is a database, but not one of Hearth's (or not a database at all).
    #[error("{} is not a usable Hearth database: {reason}", path.display())]
    NotHearthDatabase {
        /// The file examined.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The disk (or the file system's quota) is full: the write was rolled back, nothing of
    /// it is stored.
    #[error("the disk holding the database is full; the write was not stored")]
    Full,
    /// `PRAGMA quick_check` found damage: the file must be restored from a backup.
    #[error(
        "{} is corrupt ({detail}); stop here and restore a backup (`hearth restore FILE`)",
        path.display()
    )]
    Corrupt {
        /// The file examined.
        path: PathBuf,
        /// SQLite's first complaint.
        detail: String,
    },
    /// Another process has the database open (restore needs the server stopped).
    #[error("{} is open in another process; stop the server first", .0.display())]
    InUse(PathBuf),
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// Any other PostgreSQL error (including a lost connection).
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(postgres::Error),
    /// A column held a value of another type than the code reads.
    #[error("unexpected value in the database: {0}")]
    Decode(String),
    /// The operation exists for one engine only (online backups are SQLite's; PostgreSQL's are
    /// `pg_dump`'s).
    #[error("{0}")]
    Unsupported(String),
    /// `storage.url` is not one Hearth can open.
    #[error("storage.url: {0}")]
    BadUrl(String),
    /// No connection became free in time (all busy, or a caller holds one too long).
    #[error("no database connection became free within {0:?}")]
    PoolTimeout(Duration),
    /// The blocking task running the call panicked or was cancelled.
    #[error("database task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A file-system operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl StoreError {
    /// Whether the database could not be reached (a PostgreSQL server down, restarting or
    /// that closed the connection): worth a 503 and a retry, not a 500. The pool replaces the
    /// connection before it is lent again.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Postgres(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                    || e.code()
                        .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
            }
            _ => false,
        }
    }

    /// An [`StoreError::Io`] for `path`.
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

// Constraint failures become domain errors here, once, so every `?` classifies them.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(failure, message) = &e {
            let detail = || message.clone().unwrap_or_else(|| failure.to_string());
            match failure.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    return StoreError::Conflict(detail());
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                    return StoreError::MissingReference(detail());
                }
                _ => {}
            }
            if failure.code == rusqlite::ErrorCode::DiskFull {
                return StoreError::Full;
            }
        }
        if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
            return StoreError::NotFound;
        }
        StoreError::Sqlite(e)
    }
}

// The same classification for PostgreSQL's SQLSTATE codes.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let detail = || {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        };
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(detail()),
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                StoreError::MissingReference(detail())
            }
            Some(c) if *c == SqlState::DISK_FULL => StoreError::Full,
            _ => StoreError::Postgres(e),
        }
    }
}

/// What the server said (its message and detail), not only "db error".
fn postgres_detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

/// Seconds since the Unix epoch, UTC: the store's clock for `created_at` and friends.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The database: a cheap-to-clone handle (an `Arc`) to a fixed set of connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    // Bounds async callers to one blocking thread per connection, so a burst of requests waits
    // here as futures instead of parking hundreds of blocking threads on the pool.
    permits: Arc<Semaphore>,
    location: Location,
    /// This process's id among the replicas sharing the store.
    replica: String,
}

/// Where the data lives.
enum Location {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL database: its URL without the password.
    Server(String),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("at", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open the database `settings` names: `storage.url` when set (`sqlite://PATH` or
    /// `postgres://…`), else `<data_dir>/hearth.db`. See [`Store::open`] and
    /// [`Store::open_postgres`].
    pub fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        match settings.target().map_err(StoreError::BadUrl)? {
            crate::config::StoreTarget::Sqlite(path) => Store::open(&path, settings),
            crate::config::StoreTarget::Postgres(url) => Store::open_postgres(&url, settings),
        }
    }

    /// Open (creating the file and its parent directories if needed) the database at `path`,
    /// bring its schema up to date and open `settings.connections` connections.
    ///
    /// Blocking: call it before the runtime starts or inside `spawn_blocking`.
    /// Fails with [`StoreError::SchemaTooNew`] when the file comes from a newer Hearth, and with
    /// [`StoreError::NotHearthDatabase`] when it belongs to another program.
    pub fn open(path: &Path, settings: &StoreSettings) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
        }
        let busy_timeout = Duration::from_millis(settings.busy_timeout_ms);
        let first = open_connection(path, busy_timeout).map_err(|e| corrupt(path, e))?;
        check_integrity(&first, path)?;
        let first = Db::sqlite(first);
        migrations::migrate(&first, &path.display().to_string())?;
        let size = settings.connections.max(1);
        let mut connections = Vec::with_capacity(size);
        connections.push(first);
        for _ in 1..size {
            connections.push(Db::sqlite(open_connection(path, busy_timeout)?));
        }
        Ok(Store::from_pool(
            Pool::new(connections, busy_timeout, None),
            size,
            Location::File(path.to_path_buf()),
        ))
    }

    /// Connect `settings.connections` times to the PostgreSQL database at `url` and bring its
    /// schema up to date (several replicas may do so at once). Blocking, like [`Store::open`].
    pub fn open_postgres(url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
        postgres_store::open(url, settings)
    }

    fn from_pool(pool: Pool, size: usize, location: Location) -> Store {
        Store {
            inner: Arc::new(Inner {
                pool,
                permits: Arc::new(Semaphore::new(size)),
                location,
                replica: format!("r_{}", uuid::Uuid::new_v4().simple()),
            }),
        }
    }

    /// The database file; `None` for PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.location {
            Location::File(p) => Some(p),
            Location::Server(_) => None,
        }
    }

    /// Whether the store answers now (one trivial statement).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.execute_batch("SELECT 1")).await
    }

    /// The engine behind the store.
    pub fn dialect(&self) -> Dialect {
        match self.inner.location {
            Location::File(_) => Dialect::Sqlite,
            Location::Server(_) => Dialect::Postgres,
        }
    }

    /// Where the data is, for logs and messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.inner.location {
            Location::File(p) => p.display().to_string(),
            Location::Server(url) => url.clone(),
        }
    }

    /// Run `f` with a connection on a blocking thread. The typed methods are built on this; use
    /// it directly to group several per-aggregate calls (e.g. in one transaction).
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            // The semaphore is never closed; treat a closed one like an exhausted pool.
            .map_err(|_| StoreError::PoolTimeout(Duration::ZERO))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.pool.with(f)
        })
        .await?
    }

    /// Make the data durable on its own, as a clean shutdown does. SQLite: fold the write-ahead
    /// log into the database file and truncate it (`PRAGMA wal_checkpoint(TRUNCATE)`); returns
    /// whether every frame was checkpointed (false when a reader held some back). PostgreSQL
    /// has nothing to do (its server owns durability): `true`.
    pub async fn checkpoint(&self) -> Result<bool, StoreError> {
        self.run(|c| match c.as_sqlite() {
            Some(c) => {
                let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                Ok(busy == 0)
            }
            None => Ok(true),
        })
        .await
    }

    /// Run `f` with a connection on the calling thread: for code outside a tokio runtime, such
    /// as CLI commands. Waits up to `busy_timeout_ms` for a free connection.
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.inner.pool.with(f)
    }
}

/// SQLite's "this is not a database" and "malformed" errors at open, as [`StoreError::Corrupt`].
fn corrupt(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, detail))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: detail.unwrap_or_else(|| f.to_string()),
            }
        }
        other => other,
    }
}

/// `PRAGMA quick_check` (structure of every page, O(file size)): refuse a damaged file at
/// start, before anything reads half of it or writes next to a broken page.
fn check_integrity(conn: &rusqlite::Connection, path: &Path) -> Result<(), StoreError> {
    let problems: Vec<String> = (|| -> Result<Vec<String>, StoreError> {
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map((), |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })()
    .map_err(|e| corrupt(path, e))?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: problems
                .into_iter()
                .next()
                .unwrap_or_else(|| "quick_check returned nothing".into()),
        }),
    }
}

/// Open one connection with the pragmas every connection needs (see the module docs).
fn open_connection(
    path: &Path,
    busy_timeout: Duration,
) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    // First, so that the pragmas below wait for a concurrent writer instead of failing.
    conn.busy_timeout(busy_timeout)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Create `dir` (and its parents); on Unix a new directory is private to its owner, since the
/// database holds password hashes.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(extended_code),
            Some("constraint failed: t.c".into()),
        )
    }

    #[test]
    fn unique_violations_become_conflicts() {
        assert!(matches!(
            StoreError::from(failure(ffi::SQLITE_CONSTRAINT_UNIQUE)),
            StoreError::Conflict(m) if m.contains("t.c")
        ));
        assert!(matches!(
            StoreError::from(failure(ffi::SQLITE_CONSTRAINT_PRIMARYKEY)),
            StoreError::Conflict(_)
        ));
    }

    #[test]
    fn foreign_key_violations_become_missing_references() {
        assert!(matches!(
            StoreError::from(failure(ffi::SQLITE_CONSTRAINT_FOREIGNKEY)),
            StoreError::MissingReference(_)
        ));
    }

    #[test]
    fn no_rows_becomes_not_found_and_other_errors_stay_sqlite_errors() {
        assert!(matches!(
            StoreError::from(rusqlite::Error::QueryReturnedNoRows),
            StoreError::NotFound
        ));
        assert!(matches!(
            StoreError::from(failure(ffi::SQLITE_CONSTRAINT_CHECK)),
            StoreError::Sqlite(_)
        ));
        assert!(matches!(
            StoreError::from(failure(ffi::SQLITE_BUSY)),
            StoreError::Sqlite(_)
        ));
    }

    #[test]
    fn schema_too_new_says_what_to_do() {
        let msg = StoreError::SchemaTooNew { found: 9, known: 1 }.to_string();
        assert!(msg.contains("version 9"), "{msg}");
        assert!(msg.contains("knows (1)"), "{msg}");
        assert!(msg.contains("newer Hearth"), "{msg}");
    }
}
