//! Opening the store on PostgreSQL (`storage.url = "postgres://…"`): the connections, their
//! session settings, the schema, and the URL as it may be shown (without its password).

use std::time::Duration;

use super::pool::Pool;
use super::{migrations, Db, Location, Store, StoreError};
use crate::config::StoreSettings;

/// Connect `settings.connections` times to `url`, migrate, and make the store.
pub(super) fn open(url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact(url))))?;
    let wait = Duration::from_millis(settings.busy_timeout_ms);
    config.connect_timeout(wait.max(Duration::from_secs(1)));
    if config.get_application_name().is_none() {
        config.application_name("hearth");
    }
    let shown = redact(url);
    let connect = move |config: &postgres::Config| -> Result<Db, StoreError> {
        let client = config.connect(postgres::NoTls)?;
        let db = Db::postgres(client);
        // A statement waiting longer than the store's wait for a lock fails instead of hanging
        // a request (SQLite's busy_timeout, on the server's side). Statements are prepared
        // once per connection but planned per call: a generic plan for the search query
        // (its terms unknown) scans every message instead of using the index.
        db.execute_batch(&format!(
            "SET lock_timeout = {}; SET TIME ZONE 'UTC'; SET plan_cache_mode = force_custom_plan",
            wait.as_millis().max(1)
        ))?;
        Ok(db)
    };
    let first = connect(&config)?;
    migrations::migrate(&first, &shown)?;
    let size = settings.connections.max(1);
    let mut connections = vec![first];
    for _ in 1..size {
        connections.push(connect(&config)?);
    }
    let reopen = Box::new(move || connect(&config));
    Ok(Store::from_pool(
        Pool::new(connections, wait, Some(reopen)),
        size,
        Location::Server(shown),
    ))
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let shown = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    };
    // `?password=…` in the query string too.
    let Some((base, query)) = shown.split_once('?') else {
        return shown;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://hearth:s3cret@db:5432/hearth"),
            "postgres://hearth:***@db:5432/hearth"
        );
        assert_eq!(
            redact("postgres://hearth@db/hearth?password=s3cret&sslmode=disable"),
            "postgres://hearth@db/hearth?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db/hearth"), "postgres://db/hearth");
    }
}
