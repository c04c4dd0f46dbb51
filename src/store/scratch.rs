//! Throwaway PostgreSQL schemas for tests and benchmarks. `HEARTH_TEST_POSTGRES` names a server
//! (`scripts/postgres.sh start` prints one; `scripts/test.sh` sets it); each [`Scratch`] is a
//! fresh schema on it, reached through a URL whose `search_path` points there, and dropped with
//! it. Without the variable PostgreSQL tests are skipped, unless `HEARTH_TEST_REQUIRE_POSTGRES`
//! is set (the test script sets it), when they fail instead of passing unseen.

/// A fresh, empty schema on the test server.
pub struct Scratch {
    server: String,
    schema: String,
    /// Connects to the server with the schema as `search_path`: a `storage.url`.
    pub url: String,
}

impl Scratch {
    /// A new schema, or `None` (with a note on stderr) when no test server is configured.
    ///
    /// # Panics
    /// When `HEARTH_TEST_REQUIRE_POSTGRES` is set but the server is not, or cannot be reached.
    pub fn new() -> Option<Scratch> {
        let Ok(server) = std::env::var("HEARTH_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("HEARTH_TEST_REQUIRE_POSTGRES").is_none(),
                "HEARTH_TEST_REQUIRE_POSTGRES is set but HEARTH_TEST_POSTGRES is not"
            );
            eprintln!("skipped on PostgreSQL: set HEARTH_TEST_POSTGRES (scripts/postgres.sh)");
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin(&server, &format!("CREATE SCHEMA {schema}"))
            .unwrap_or_else(|e| panic!("HEARTH_TEST_POSTGRES={server}: {e}"));
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-csearch_path%3D{schema}");
        Some(Scratch {
            server,
            schema,
            url,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) = admin(&self.server, &drop) {
            eprintln!("could not drop scratch schema {}: {e}", self.schema);
        }
    }
}

/// Run `sql` on `server` from a plain thread: the blocking client must not run on a thread that
/// drives async tasks, and tests call this from both kinds.
fn admin(server: &str, sql: &str) -> Result<(), postgres::Error> {
    std::thread::scope(|s| {
        s.spawn(|| postgres::Client::connect(server, postgres::NoTls)?.batch_execute(sql))
            .join()
            .expect("the admin thread does not panic")
    })
}
