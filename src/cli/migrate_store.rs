//! `hearth migrate-store --to postgres://…`: move the configured SQLite store (or `--from
//! sqlite://PATH`) into an empty PostgreSQL database, verified row for row, and say what to put
//! in the config next. A boundary layer: argument checks and the report; the copy is
//! `store::transfer`'s.

use anyhow::{bail, Context, Result};

use crate::config::{parse_store_url, StoreSettings, StoreTarget};
use crate::store::{redact_url, transfer, Store};

/// Copy, verify, and report per table.
pub fn migrate_store(settings: &StoreSettings, from: Option<&str>, to: &str) -> Result<String> {
    let source = match from {
        Some(url) => parse_store_url(url).map_err(anyhow::Error::msg)?,
        None => StoreTarget::Sqlite(settings.db_path()),
    };
    let StoreTarget::Sqlite(path) = source else {
        bail!("--from must be a SQLite store (sqlite://PATH)");
    };
    if !path.exists() {
        bail!("{} does not exist: nothing to migrate", path.display());
    }
    let StoreTarget::Postgres(url) = parse_store_url(to).map_err(anyhow::Error::msg)? else {
        bail!("--to must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB)");
    };
    let one = StoreSettings {
        connections: 1,
        ..settings.clone()
    };
    let src = Store::open(&path, &one).with_context(|| format!("opening {}", path.display()))?;
    let dst = Store::open_postgres(&url, &one)
        .with_context(|| format!("connecting to {}", redact_url(&url)))?;
    let copied = transfer::copy_store(&src, &dst).context("copying")?;
    let mut report = format!(
        "copied {} into {} and compared every row:\n",
        path.display(),
        redact_url(&url)
    );
    for (table, rows) in &copied.tables {
        report.push_str(&format!("  {table:<16} {rows:>8} rows\n"));
    }
    report.push_str(&format!(
        "now set `[storage] url = \"{}\"` (or HEARTH__STORAGE__URL) and restart",
        redact_url(&url)
    ));
    Ok(report)
}
