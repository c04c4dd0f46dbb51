//! `hearth migrate-store`: copy every row of a SQLite store into an empty PostgreSQL one, then
//! read both back and compare them row for row. Owns the table order (parents before children),
//! the identity counters (set past every id SQLite ever handed out, so ids are never reused)
//! and the comparison. The source is read inside one read transaction: a consistent snapshot,
//! even if a server still writes to it (writes after the snapshot are not copied: stop the
//! server for the switch).

use std::collections::HashMap;

use super::db::{Db, Value};
use super::{Store, StoreError};

/// The tables, parents first, with the key that orders them and the identity column PostgreSQL
/// keeps a counter for (if any).
const TABLES: &[(&str, &str, Option<&str>)] = &[
    ("users", "id", Some("id")),
    ("refresh_tokens", "id", Some("id")),
    ("api_keys", "id", Some("id")),
    ("usage_daily", "user_id, api_key_id, day", None),
    ("conversations", "rowid", Some("rowid")),
    ("messages", "rowid", Some("rowid")),
    ("preferences", "user_id", None),
    ("memories", "id", Some("id")),
    ("settings", "key", None),
    ("user_limits", "user_id", None),
    ("posts", "rowid", Some("rowid")),
    ("post_revisions", "post_id, revision", None),
];

/// Rows copied and verified, per table, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows)`.
    pub tables: Vec<(String, usize)>,
}

/// Copy `from` (SQLite) into `to` (PostgreSQL, empty), then verify. Blocking.
pub fn copy_store(from: &Store, to: &Store) -> Result<Copied, StoreError> {
    if to.dialect() != super::Dialect::Postgres || from.path().is_none() {
        return Err(StoreError::Unsupported(
            "migrate-store copies a SQLite store into a PostgreSQL one".into(),
        ));
    }
    from.run_blocking(|src| {
        to.run_blocking(|dst| {
            let users: i64 = dst.query_row("SELECT count(*) FROM users", (), |r| r.get(0))?;
            if users > 0 {
                return Err(StoreError::Conflict(format!(
                    "the PostgreSQL store already has {users} users; migrate into an empty one"
                )));
            }
            // One read transaction on the source: every table as of the same moment.
            src.execute_batch("BEGIN")?;
            let result = copy_tables(src, dst);
            src.execute_batch("COMMIT")?;
            result
        })
    })
}

fn copy_tables(src: &Db, dst: &Db) -> Result<Copied, StoreError> {
    let tx = dst.write_transaction()?;
    let mut copied = Vec::new();
    let mut snapshot = Vec::new();
    for &(table, key, identity) in TABLES {
        let (columns, mut rows) = read_sqlite(src, table, key)?;
        if table == "messages" {
            rows = parents_first(&columns, rows)?;
        }
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            placeholders.join(", ")
        );
        for row in &rows {
            tx.execute(&insert, row.clone())?;
        }
        if let Some(column) = identity {
            let next = next_identity(src, table, column)?;
            tx.query_row(
                &format!("SELECT setval(pg_get_serial_sequence('{table}', '{column}'), ?1, false)"),
                [next],
                |_| Ok(()),
            )?;
        }
        copied.push((table.to_owned(), rows.len()));
        snapshot.push((table, key, columns, rows));
    }
    // Row for row: what PostgreSQL now holds, in key order, against what was read.
    for (table, key, columns, mut rows) in snapshot {
        let stored = select_all(&tx, table, key, &columns)?;
        if table == "messages" {
            rows.sort_by_key(|r| match r.first() {
                Some(Value::Int(rowid)) => *rowid,
                _ => 0,
            });
        }
        if let Some(i) = (0..rows.len().max(stored.len())).find(|&i| rows.get(i) != stored.get(i)) {
            return Err(StoreError::Decode(format!(
                "{table}: row {i} differs after the copy ({:?} vs {:?})",
                rows.get(i),
                stored.get(i)
            )));
        }
    }
    tx.commit()?;
    Ok(Copied { tables: copied })
}

/// Every row of `table` in `key` order, and its column names (`rowid` first where PostgreSQL
/// keeps one as a column).
fn read_sqlite(
    src: &Db,
    table: &str,
    key: &str,
) -> Result<(Vec<String>, Vec<Vec<Value>>), StoreError> {
    let conn = src.as_sqlite().expect("the source is SQLite");
    let select = if key == "rowid" {
        "rowid AS rowid, *"
    } else {
        "*"
    };
    let mut stmt = conn.prepare(&format!("SELECT {select} FROM {table} ORDER BY {key}"))?;
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let rows = stmt
        .query_map((), |r| {
            (0..columns.len())
                .map(|i| r.get::<_, rusqlite::types::Value>(i).map(from_sqlite))
                .collect::<Result<Vec<_>, _>>()
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((columns, rows))
}

fn from_sqlite(v: rusqlite::types::Value) -> Value {
    use rusqlite::types::Value as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => Value::Int(i),
        V::Real(f) => Value::Real(f),
        V::Text(t) => Value::Text(t),
        V::Blob(b) => Value::Blob(b),
    }
}

fn select_all(
    db: &Db,
    table: &str,
    key: &str,
    columns: &[String],
) -> Result<Vec<Vec<Value>>, StoreError> {
    db.prepare_cached(&format!(
        "SELECT {} FROM {table} ORDER BY {key}",
        columns.join(", ")
    ))?
    .query_map((), |r| (0..columns.len()).map(|i| r.get(i)).collect())?
    .collect()
}

/// Messages reordered so each comes after its parent (PostgreSQL checks the parent reference
/// at every insert; an imported tree may have children older than their parents' rowids).
fn parents_first(columns: &[String], rows: Vec<Vec<Value>>) -> Result<Vec<Vec<Value>>, StoreError> {
    let at = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| StoreError::Decode(format!("messages has no {name} column")))
    };
    let (id, parent) = (at("id")?, at("parent_id")?);
    let text = |v: &Value| match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    };
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut ready = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match text(&row[parent]) {
            None => ready.push(i),
            Some(p) => children.entry(p).or_default().push(i),
        }
    }
    let mut order = Vec::with_capacity(rows.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        if let Some(kids) = text(&rows[i][id]).and_then(|id| children.remove(&id)) {
            ready.extend(kids.into_iter().rev());
        }
    }
    if order.len() != rows.len() {
        return Err(StoreError::Decode(
            "messages: some parents are missing (run `PRAGMA foreign_key_check`)".into(),
        ));
    }
    let mut rows: Vec<Option<Vec<Value>>> = rows.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| rows[i].take()).collect())
}

/// The next id PostgreSQL may hand out: past the largest in the table and, for SQLite's
/// AUTOINCREMENT tables, past the largest ever used (`sqlite_sequence`).
fn next_identity(src: &Db, table: &str, column: &str) -> Result<i64, StoreError> {
    let conn = src.as_sqlite().expect("the source is SQLite");
    let max: i64 = conn.query_row(
        &format!("SELECT coalesce(max({column}), 0) FROM {table}"),
        (),
        |r| r.get(0),
    )?;
    let seq: i64 = conn
        .query_row(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(max.max(seq) + 1)
}
