//! One database connection, SQLite or PostgreSQL, behind the small statement API the store's
//! aggregates are written against: `prepare_cached(sql)` then `execute` / `query_row` /
//! `query_map`, write transactions, parameters and typed row values. Owns the dialect
//! differences that are not in the SQL text itself: placeholders (`?1` is rewritten to `$1`),
//! value conversion both ways, error classification, and what "a write transaction" means on
//! each engine. Knows no schema.
//!
//! # Write transactions
//! [`Db::write_transaction`] is SQLite's `BEGIN IMMEDIATE` (the one writer lock, taken up
//! front) and, on PostgreSQL, `BEGIN` plus a transaction-scoped advisory lock on one key: write
//! transactions that read before they write (the first admin, refresh-token rotation, the
//! message tree) run one at a time on both engines, across every replica sharing the database,
//! so the same code is race-free on both. Single statements outside a transaction run
//! concurrently on PostgreSQL. A transaction opened inside another becomes a savepoint.
//!
//! Every query is stepped to its end before the call returns (rows are read into memory): on
//! SQLite an `INSERT … RETURNING` commits only when stepped past its last row, and an error
//! there (a full disk) must reach the caller.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;

use postgres::types::{FromSql, IsNull, ToSql, Type};

use super::StoreError;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (a file).
    Sqlite,
    /// PostgreSQL (a server).
    Postgres,
}

/// The advisory-lock key every PostgreSQL write transaction takes ("HRTH").
const WRITE_LOCK: i64 = 0x4852_5448;

enum Engine {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
    /// Given away by `into_sqlite` or `drop`.
    Closed,
}

/// A PostgreSQL client and its prepared statements (SQLite's are cached by rusqlite): each
/// statement is parsed and planned once per connection, not once per call.
struct Pg {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

/// Prepared statements kept per PostgreSQL connection; past this the cache starts over (the
/// store's SQL is a fixed set well below it).
const STATEMENT_CACHE: usize = 512;

/// An open connection to the store's database.
pub struct Db {
    engine: Engine,
    /// Open transactions (nested ones are savepoints).
    depth: Cell<u32>,
}

impl Db {
    /// A SQLite connection (its pragmas already set by the caller).
    pub fn sqlite(conn: rusqlite::Connection) -> Db {
        Db {
            engine: Engine::Sqlite(conn),
            depth: Cell::new(0),
        }
    }

    /// A PostgreSQL connection.
    pub fn postgres(client: postgres::Client) -> Db {
        Db {
            engine: Engine::Postgres(Box::new(RefCell::new(Pg {
                client,
                statements: HashMap::new(),
            }))),
            depth: Cell::new(0),
        }
    }

    /// The engine behind this connection.
    pub fn dialect(&self) -> Dialect {
        match self.engine {
            Engine::Sqlite(_) | Engine::Closed => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection itself, for what only SQLite has (pragmas, online backups).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite(c) => Some(c),
            _ => None,
        }
    }

    /// The SQLite connection back (to close it and see the error), `None` for PostgreSQL.
    pub fn into_sqlite(mut self) -> Option<rusqlite::Connection> {
        match std::mem::replace(&mut self.engine, Engine::Closed) {
            Engine::Sqlite(c) => Some(c),
            other => {
                self.engine = other;
                None
            }
        }
    }

    /// Whether the connection can no longer be used (PostgreSQL: the server went away).
    pub(crate) fn is_broken(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(_) => false,
            Engine::Postgres(c) => c.borrow().client.is_closed(),
            Engine::Closed => true,
        }
    }

    /// Whether a transaction is open (one left open by a panic is rolled back by the pool).
    pub(crate) fn in_transaction(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(c) => !c.is_autocommit(),
            Engine::Postgres(_) | Engine::Closed => self.depth.get() > 0,
        }
    }

    /// A statement for `sql` (written with SQLite's `?N` placeholders). Cheap: statements are
    /// cached by the engines, not here.
    pub fn prepare_cached<'a>(&'a self, sql: &str) -> Result<Stmt<'a>, StoreError> {
        Ok(Stmt {
            db: self,
            sql: match self.dialect() {
                Dialect::Sqlite => sql.to_owned(),
                Dialect::Postgres => postgres_placeholders(sql),
            },
        })
    }

    /// Run `sql` with `params`; the number of rows changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StoreError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of `sql` through `map` (see [`Stmt::query_row`]).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.prepare_cached(sql)?.query_row(params, map)
    }

    /// Run several statements without parameters (schema changes, `ROLLBACK`, …).
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Engine::Postgres(c) => Ok(c.borrow_mut().client.batch_execute(sql)?),
            Engine::Closed => Err(closed()),
        }
    }

    /// Open a write transaction (see the module docs); it rolls back unless committed.
    pub fn write_transaction(&self) -> Result<Tx<'_>, StoreError> {
        let depth = self.depth.get();
        if depth > 0 {
            self.execute_batch(&format!("SAVEPOINT hearth_{depth}"))?;
        } else {
            match self.dialect() {
                Dialect::Sqlite => self.execute_batch("BEGIN IMMEDIATE")?,
                Dialect::Postgres => self.execute_batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                ))?,
            }
        }
        self.depth.set(depth + 1);
        Ok(Tx {
            db: self,
            done: false,
        })
    }

    /// Roll back whatever transaction is open (a caller that panicked mid-transaction).
    pub(crate) fn rollback_abandoned(&self) -> Result<(), StoreError> {
        self.depth.set(0);
        self.execute_batch("ROLLBACK")
    }

    fn run(&self, sql: &str, params: &[Value]) -> Result<(Vec<Vec<Value>>, usize), StoreError> {
        match &self.engine {
            Engine::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(Value::from_sqlite(row.get_ref(i)?));
                    }
                    out.push(values);
                }
                drop(rows);
                let changed = if columns == 0 {
                    c.changes() as usize
                } else {
                    0
                };
                Ok((out, changed))
            }
            Engine::Postgres(c) => {
                let Pg { client, statements } = &mut *c.borrow_mut();
                let stmt = match statements.get(sql) {
                    Some(stmt) => stmt.clone(),
                    None => {
                        let stmt = client.prepare(sql)?;
                        if statements.len() >= STATEMENT_CACHE {
                            statements.clear();
                        }
                        statements.insert(sql.to_owned(), stmt.clone());
                        stmt
                    }
                };
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                if stmt.columns().is_empty() {
                    let changed = client.execute(&stmt, &refs)?;
                    return Ok((Vec::new(), changed as usize));
                }
                let rows = client.query(&stmt, &refs)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut values = Vec::with_capacity(row.len());
                    for i in 0..row.len() {
                        values.push(row.try_get::<_, Value>(i)?);
                    }
                    out.push(values);
                }
                Ok((out, rows.len()))
            }
            Engine::Closed => Err(closed()),
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unsupported("the connection was closed".into())
}

// The blocking PostgreSQL client runs its own small runtime, which must not be shut down on a
// thread driving async tasks (tokio panics there): such a drop is finished on a plain thread.
impl Drop for Db {
    fn drop(&mut self) {
        if let Engine::Postgres(client) = std::mem::replace(&mut self.engine, Engine::Closed) {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

/// An open write transaction: derefs to its connection; rolls back when dropped uncommitted.
pub struct Tx<'a> {
    db: &'a Db,
    done: bool,
}

impl Tx<'_> {
    /// Make the transaction's writes durable (or, nested, part of the outer transaction).
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        let depth = self.db.depth.get() - 1;
        self.db.depth.set(depth);
        if depth > 0 {
            self.db
                .execute_batch(&format!("RELEASE SAVEPOINT hearth_{depth}"))
        } else {
            self.db.execute_batch("COMMIT")
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let depth = self.db.depth.get().saturating_sub(1);
        self.db.depth.set(depth);
        let sql = if depth > 0 {
            format!("ROLLBACK TO SAVEPOINT hearth_{depth}; RELEASE SAVEPOINT hearth_{depth}")
        } else {
            "ROLLBACK".to_owned()
        };
        if let Err(e) = self.db.execute_batch(&sql) {
            tracing::warn!(error = %e, "could not roll back a transaction");
        }
    }
}

/// A statement bound to its connection.
pub struct Stmt<'a> {
    db: &'a Db,
    sql: String,
}

impl Stmt<'_> {
    /// Run it; the number of rows changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, StoreError> {
        Ok(self.db.run(&self.sql, &params.values())?.1)
    }

    /// Its first row through `map`; [`StoreError::NotFound`] when there is none (turn that into
    /// `None` with [`Optional::optional`]).
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (rows, _) = self.db.run(&self.sql, &params.values())?;
        let first = rows.first().ok_or(StoreError::NotFound)?;
        map(&Row { values: first })
    }

    /// Whether it returns any row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool, StoreError> {
        Ok(!self.db.run(&self.sql, &params.values())?.0.is_empty())
    }

    /// Every row through `map`, in order.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let (rows, _) = self.db.run(&self.sql, &params.values())?;
        Ok(rows
            .iter()
            .map(|values| map(&Row { values }))
            .collect::<Vec<_>>()
            .into_iter())
    }
}

/// `NotFound` as `None`, for single-row lookups.
pub trait Optional<T> {
    /// `Ok(None)` for [`StoreError::NotFound`].
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> Optional<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One row of a result.
pub struct Row<'a> {
    values: &'a [Value],
}

impl Row<'_> {
    /// Column `index` (from 0) as a `T`.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, index: I) -> Result<T, StoreError> {
        let index = index.index();
        let value = self
            .values
            .get(index)
            .ok_or_else(|| StoreError::Decode(format!("no column {index}")))?;
        T::from_value(value).map_err(|e| StoreError::Decode(format!("column {index}: {e}")))
    }
}

/// A column's position (an integer literal or a `usize`).
pub trait ColumnIndex {
    /// From 0.
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl ColumnIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// A value crossing the boundary, either way. Booleans are stored as integers 0 and 1 on both
/// engines, so that one schema and one set of queries serve both.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// INTEGER / BIGINT (and booleans).
    Int(i64),
    /// REAL / DOUBLE PRECISION.
    Real(f64),
    /// TEXT.
    Text(String),
    /// BLOB / BYTEA.
    Blob(Vec<u8>),
}

impl Value {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::TEXT) => i.to_string().to_sql(ty, out),
            (Value::Int(i), _) => i.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Real(f), _) => f.to_sql(ty, out),
            (Value::Text(t), _) => t.as_str().to_sql(ty, out),
            (Value::Blob(b), _) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("unsupported column type {ty}").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what `sum(bigint)` returns): an integer when it has no
/// fractional digits, else a float.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short NUMERIC".into())
    };
    let (digits, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let count = digits.max(0) as usize;
    let digit = |i: usize| if i < count { word(4 + i) } else { Ok(0) };
    let mut real = 0f64;
    for i in 0..count {
        real += f64::from(digit(i)?) * 10f64.powi(4 * (i32::from(weight) - i as i32));
    }
    // The whole part: groups 0..=weight (trailing zero groups are not sent).
    let mut int: i128 = 0;
    for i in 0..=weight.max(-1) as isize {
        int = int.saturating_mul(10_000) + i128::from(digit(i as usize)?);
    }
    let negative = sign == 0x4000;
    if scale == 0 {
        let v = i64::try_from(int).map_err(|_| "NUMERIC out of range")?;
        Ok(Value::Int(if negative { -v } else { v }))
    } else {
        Ok(Value::Real(if negative { -real } else { real }))
    }
}

/// Rewrite SQLite's `?N` placeholders as PostgreSQL's `$N`, leaving string literals and quoted
/// names alone.
fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    let mut next_anonymous = 0;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    next_anonymous += 1;
                    out.push_str(&next_anonymous.to_string());
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// A Rust value as a statement parameter.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Value;
}

macro_rules! to_value_int {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
to_value_int!(i64, i32, i16, u8, u16, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for f32 {
    fn to_value(&self) -> Value {
        Value::Real(f64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// A column value as a Rust value.
pub trait FromValue: Sized {
    /// Convert, or say what was found instead.
    fn from_value(v: &Value) -> Result<Self, String>;
}

fn expected<T>(what: &str, v: &Value) -> Result<T, String> {
    Err(format!("expected {what}, found {}", v.kind()))
}

macro_rules! from_value_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).map_err(|e| e.to_string()),
                    other => expected("an integer", other),
                }
            }
        }
    )*};
}
from_value_int!(i64, i32, u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            other => expected("a boolean", other),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => expected("a number", other),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(t) => Ok(t.clone()),
            other => expected("text", other),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            other => expected("a blob", other),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A statement's parameters: a tuple, an array, or the slice [`params!`](crate::params) makes.
pub trait Params {
    /// The values to bind, in placeholder order.
    fn values(&self) -> Vec<Value>;
}

impl Params for () {
    fn values(&self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(|p| p.to_value()).collect()
    }
}
impl<const N: usize> Params for &[&dyn ToValue; N] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(|p| p.to_value()).collect()
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl Params for Vec<Value> {
    fn values(&self) -> Vec<Value> {
        self.clone()
    }
}

macro_rules! params_tuple {
    ($($name:ident : $idx:tt),+) => {
        impl<$($name: ToValue),+> Params for ($($name,)+) {
            fn values(&self) -> Vec<Value> {
                vec![$(self.$idx.to_value()),+]
            }
        }
    };
}
params_tuple!(A: 0);
params_tuple!(A: 0, B: 1);
params_tuple!(A: 0, B: 1, C: 2);
params_tuple!(A: 0, B: 1, C: 2, D: 3);
params_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4);
params_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);
params_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6);
params_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7);

/// Parameters of any types, as a slice: `params![id, owner, title]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::db::ToValue] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::ToValue),+] as &[&dyn $crate::store::db::ToValue] };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT '?1', \"a?\" FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', \"a?\" FROM t WHERE a = $1 AND b = $12"
        );
        assert_eq!(postgres_placeholders("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    fn numeric_bytes(words: &[i16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numerics_decode_as_integers_or_reals() {
        // 12345678 = 1234 * 10000 + 5678: two digits, weight 1, positive, scale 0.
        let v = numeric(&numeric_bytes(&[2, 1, 0, 0, 1234, 5678])).expect("decodes");
        assert_eq!(v, Value::Int(12_345_678));
        // 20000 = 2 * 10000: one digit sent, weight 1 (the trailing zero group is omitted).
        let v = numeric(&numeric_bytes(&[1, 1, 0, 0, 2])).expect("decodes");
        assert_eq!(v, Value::Int(20_000));
        // 0: no digits.
        assert_eq!(
            numeric(&numeric_bytes(&[0, 0, 0, 0])).expect("decodes"),
            Value::Int(0)
        );
        // -7
        let v = numeric(&numeric_bytes(&[1, 0, 0x4000, 0, 7])).expect("decodes");
        assert_eq!(v, Value::Int(-7));
        // 1.5 = 1 + 5000/10000, scale 1.
        let v = numeric(&numeric_bytes(&[2, 0, 0, 1, 1, 5000])).expect("decodes");
        assert_eq!(v, Value::Real(1.5));
    }
}
