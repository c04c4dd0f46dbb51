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
    migration!(5, "0005_tool_messages"),
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
    fn the_tool_messages_migration_keeps_messages_their_search_and_their_cascades() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "foreign_keys", true).expect("fk");
        // A database as version 4 left it, with a conversation of three messages.
        for m in &MIGRATIONS[..4] {
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(m.sql).expect(m.name);
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("id");
            tx.pragma_update(None, "user_version", m.version)
                .expect("version");
            tx.commit().expect("commit");
        }
        conn.execute_batch(
            "INSERT INTO users (id, username, password_hash, created_at, password_changed_at) \
                 VALUES (1, 'alice', 'x', 0, 0);
             INSERT INTO conversations (id, owner_id, created_at, updated_at) \
                 VALUES ('c1', 1, 0, 0);
             INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at, \
                 updated_at) VALUES ('m1', 'c1', NULL, 'user', 'tell me about otters', 0, 0), \
                 ('m2', 'c1', 'm1', 'assistant', 'otters hold hands', 0, 0), \
                 ('m3', 'c1', 'm2', 'user', 'and beavers', 0, 0);",
        )
        .expect("seed");
        let rowids = |conn: &Connection| -> Vec<(String, i64)> {
            let mut q = conn
                .prepare("SELECT id, rowid FROM messages ORDER BY id")
                .expect("prepare");
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let before = rowids(&conn);
        assert_eq!(
            migrate(&mut conn, Path::new(":memory:")).expect("migrate"),
            1
        );
        assert_eq!(
            rowids(&conn),
            before,
            "rowids (the search index's keys) kept"
        );
        let found: String = conn
            .query_row(
                "SELECT m.id FROM messages_fts f JOIN messages m ON m.rowid = f.rowid \
                 WHERE messages_fts MATCH 'beavers'",
                [],
                |r| r.get(0),
            )
            .expect("search");
        assert_eq!(found, "m3");
        // Tool messages now fit; a tool message needs its call id, and only it has one.
        conn.execute(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, tool_call_id, \
             created_at, updated_at) VALUES ('m4', 'c1', 'm3', 'tool', '{\"t\": 1}', 'call_1', 0, 0)",
            [],
        )
        .expect("a tool message");
        for bad in [
            "INSERT INTO messages (id, conversation_id, role, content, created_at, updated_at) \
             VALUES ('x1', 'c1', 'tool', '', 0, 0)",
            "INSERT INTO messages (id, conversation_id, role, content, tool_call_id, created_at, \
             updated_at) VALUES ('x2', 'c1', 'user', '', 'call_1', 0, 0)",
            "INSERT INTO messages (id, conversation_id, role, content, tool_calls, created_at, \
             updated_at) VALUES ('x3', 'c1', 'user', '', '[]', 0, 0)",
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at, \
             updated_at) VALUES ('x4', 'c1', 'nope', 'user', '', 0, 0)",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
        // Deleting a message still deletes its subtree, and its search entries.
        conn.execute("DELETE FROM messages WHERE id = 'm2'", [])
            .expect("delete");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 1);
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'beavers'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(indexed, 0);
        let violations: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("check");
        assert_eq!(violations, 0);
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
