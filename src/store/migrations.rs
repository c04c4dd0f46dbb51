//! The schema, as embedded SQL migrations (`migrations/NNNN_name.sql`), and the runner that
//! applies them. The file's `PRAGMA user_version` is the number of the last migration applied;
//! `PRAGMA application_id` marks the file as Hearth's. Migrations are append-only: never edit
//! one that has shipped, add the next number.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// `PRAGMA application_id` of every Hearth database: "HRTH" in ASCII.
pub const APPLICATION_ID: i32 = 0x4852_5448;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: `user_version` once it is applied.
    pub version: i64,
    /// Its file name without `.sql`, e.g. `0001_accounts`.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("migrations/", $name, ".sql")),
        }
    };
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_accounts"),
    migration!(2, "0002_conversations"),
    migration!(3, "0003_sessions"),
    migration!(4, "0004_posts"),
];

/// The schema version this build writes: the last migration's number.
pub fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Bring the database behind `conn` (the file at `path`, for messages) up to
/// [`known_version`]. Returns how many migrations were applied. Safe to run from several
/// processes at once: each migration re-checks the version inside its write transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, StoreError> {
    let found = user_version(conn)?;
    check_identity(conn, path, found)?;
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = user_version(&tx)?;
        if current > known_version() {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known: known_version(),
            });
        }
        if current >= m.version {
            continue; // another process got here first; dropping `tx` rolls back nothing
        }
        tx.execute_batch(m.sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
        applied += 1;
    }
    Ok(applied)
}

/// `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Refuse files this build must not touch: a newer schema, another program's database.
pub(crate) fn check_identity(
    conn: &Connection,
    path: &Path,
    version: i64,
) -> Result<(), StoreError> {
    if version > known_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: known_version(),
        });
    }
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let not_ours = |reason: String| StoreError::NotHearthDatabase {
        path: path.to_path_buf(),
        reason,
    };
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(not_ours(format!("application_id is {app_id:#x}")));
    }
    if version == 0 {
        let objects: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if objects > 0 {
            return Err(not_ours(format!(
                "it has {objects} tables or indexes but no Hearth schema version"
            )));
        }
    } else if app_id != APPLICATION_ID {
        return Err(not_ours(
            "it has a schema version but no Hearth application_id".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_like_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let expected = i64::try_from(i + 1).expect("small");
            assert_eq!(m.version, expected, "{}", m.name);
            assert!(
                m.name.starts_with(&format!("{expected:04}_")),
                "{} must start with {expected:04}_",
                m.name
            );
        }
        assert_eq!(
            known_version(),
            i64::try_from(MIGRATIONS.len()).expect("small")
        );
    }

    #[test]
    fn migrations_leave_transactions_and_pragmas_to_the_runner() {
        for m in MIGRATIONS {
            for line in m
                .sql
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("--"))
            {
                let upper = line.to_ascii_uppercase();
                for banned in ["BEGIN", "COMMIT", "PRAGMA"] {
                    assert!(!upper.starts_with(banned), "{}: {line}", m.name);
                }
            }
        }
    }

    #[test]
    fn migrating_a_new_database_creates_the_schema_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, path).expect("first"), MIGRATIONS.len());
        assert_eq!(migrate(&mut conn, path).expect("second"), 0);
        assert_eq!(user_version(&conn).expect("version"), known_version());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN \
                 ('users', 'refresh_tokens', 'api_keys', 'usage_daily')",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(tables, 4);
    }

    #[test]
    fn another_programs_database_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE theirs (x)")
            .expect("create");
        let err = migrate(&mut conn, Path::new("x.db")).unwrap_err();
        assert!(matches!(err, StoreError::NotHearthDatabase { .. }), "{err}");

        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "application_id", 7)
            .expect("pragma");
        let err = migrate(&mut conn, Path::new("x.db")).unwrap_err();
        assert!(matches!(err, StoreError::NotHearthDatabase { .. }), "{err}");
    }
}
