//! Builds the running server: loads the model, starts the scheduler thread, binds the listener
//! (port 0 allowed, for tests) and serves until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::scheduler::{Scheduler, SchedulerConfig};

/// A bound, ready-to-serve server.
pub struct App {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: crate::net::ConnectionLimits,
    backups: Option<tokio::task::JoinHandle<()>>,
    housekeeping: tokio::task::JoinHandle<()>,
    /// This process's heartbeat in the store (kept up until the answers are saved).
    heartbeat: tokio::task::JoinHandle<()>,
    /// The other replicas' events, and this process acting on them.
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Sockets and detached answers, for the graceful shutdown.
    drain: crate::shutdown::Drain,
    store: crate::store::Store,
    /// HTTPS, when `server.tls_cert` and `server.tls_key` are set.
    tls: Option<crate::net::Tls>,
}

impl App {
    /// Load the model, start the model thread and bind the address from `config.server`.
    pub async fn build(mut config: Config) -> Result<Self> {
        // Served over HTTPS, the session cookie is only ever sent back over HTTPS.
        if config.server.tls_cert.is_some() {
            config.auth.secure_cookies = true;
        }
        // Before the (slow) model load: a remote backend's key variable must exist.
        for b in &config.backends {
            if let Some(var) = &b.api_key_env {
                if std::env::var_os(var).is_none() {
                    anyhow::bail!(
                        "configuration: backend `{}`: the environment variable {var} (api_key_env) is not set",
                        b.name
                    );
                }
            }
        }
        let engine_config = config.clone();
        let engine = tokio::task::spawn_blocking(move || crate::cli::load_engine(&engine_config))
            .await
            .context("model loading thread")??;
        let model_id = config.server.model_id.clone().unwrap_or_else(|| {
            std::path::Path::new(&config.model.path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "default".into())
        });
        let s = &config.server;
        let scheduler = Scheduler::start(
            Arc::new(engine),
            SchedulerConfig {
                queue_capacity: s.queue_capacity,
                max_active: s.max_active,
                queue_timeout: Duration::from_secs(s.queue_timeout_secs),
                prefix_cache_bytes: s.prefix_cache_mb << 20,
                nice: config.model.nice,
            },
        )
        .context("starting the model thread")?;
        let limits = crate::net::ConnectionLimits::from_config(s);
        match crate::net::raise_open_file_limit() {
            // Each connection is a descriptor; the database, model and logs need some more.
            Some(open_files) if open_files < s.max_connections as u64 + 64 => tracing::warn!(
                open_files,
                max_connections = s.max_connections,
                "the open-file limit is below server.max_connections + 64: \
                 connections past it will fail to be accepted"
            ),
            _ => {}
        }
        // A certificate that does not load stops the start, before the model is served.
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::net::Tls::load(cert, key)
                    .map_err(|e| anyhow::anyhow!("configuration: server.tls_cert/tls_key: {e}"))?,
            ),
            _ => None,
        };
        let addr = format!("{}:{}", s.host, s.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let storage = config.storage.clone();
        let store = tokio::task::spawn_blocking(move || crate::store::Store::connect(&storage))
            .await
            .context("store opening thread")?
            .with_context(|| format!("opening {}", store_name(&config.storage)))?;
        // Answers that were generating when the server last stopped have no generation now.
        let interrupted = store
            .start_replica()
            .await
            .context("marking interrupted answers")?;
        if interrupted > 0 {
            tracing::info!(
                interrupted,
                "answers cut off by the last shutdown marked interrupted"
            );
        }
        let mut secret = crate::auth::jwt::load_or_create_secret(
            config.auth.jwt_secret.as_deref(),
            &config.storage.data_dir,
        )
        .context("loading the token signing secret")?;
        if store.dialect() == crate::store::Dialect::Postgres && config.auth.jwt_secret.is_none() {
            // Replicas sharing a database must sign alike: the first one's secret (its file's,
            // so a store moved by `migrate-store` keeps its sessions) is kept in the database
            // and used by all.
            let candidate = serde_json::Value::String(String::from_utf8_lossy(&secret).into());
            let shared = store
                .setting_or_insert("jwt_secret", candidate)
                .await
                .context("sharing the token signing secret")?;
            secret = shared.as_str().unwrap_or_default().as_bytes().to_vec();
            anyhow::ensure!(
                secret.len() >= crate::config::MIN_JWT_SECRET_BYTES,
                "the shared jwt_secret setting in the database is too short"
            );
        }
        let jwt = Arc::new(crate::auth::jwt::JwtKeys::new(
            &secret,
            config.auth.access_token_ttl_secs as i64,
        ));
        let login_limits = Arc::new(crate::limits::LoginLimits::new(
            config.auth.login_per_ip_per_minute,
            config.auth.login_per_username_per_minute,
        ));
        let backups = crate::store::spawn_scheduled_backups(store.clone(), &config.storage);
        let housekeeping = spawn_housekeeping(store.clone(), login_limits.clone());
        let heartbeat = spawn_replica_heartbeat(store.clone());
        let metrics = Arc::new(crate::metrics::Metrics::new(
            scheduler.stats().clone(),
            s.queue_capacity,
            s.max_active,
        ));
        let scheduler = Arc::new(scheduler);
        let router = crate::backends::Router::new(
            &config.effective_backends(),
            crate::backends::local::LocalBackend::new(scheduler.clone()),
            &model_id,
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("configuration: backends: {e}"))?;
        let proxies = crate::net::TrustedProxies::parse(&config.server.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("configuration: server.trusted_proxies: {e}"))?;
        let router = Arc::new(router);
        let drain = crate::shutdown::Drain::new();
        let cluster = match &config.cache.url {
            Some(url) => {
                // Deployments sharing one Redis stay apart by the store's installation id.
                let id = format!("{}", uuid::Uuid::new_v4().simple());
                let id = store
                    .setting_or_insert("installation_id", serde_json::Value::String(id))
                    .await
                    .context("reading the installation id")?;
                let cluster = crate::cluster::Cluster::connect(
                    url,
                    id.as_str().unwrap_or_default(),
                    store.replica_id(),
                    std::time::Duration::from_millis(config.cache.timeout_ms),
                )
                .await
                .with_context(|| {
                    format!("connecting to cache.url {}", crate::store::redact_url(url))
                })?;
                Some(cluster)
            }
            None => None,
        };
        let chat = crate::chat::ChatService::new(
            &config,
            router.clone(),
            store.clone(),
            metrics.clone(),
            scheduler.engine().clone(),
            drain.clone(),
            cluster,
        );
        chat.load_settings()
            .await
            .context("loading the model policy and limit overrides")?;
        let listeners = chat
            .events()
            .spawn_relay()
            .into_iter()
            .chain([chat.spawn_event_listener()])
            .collect();
        let blog = crate::blog::Blog::new(&config.blog).context("blog templates")?;
        let state = AppState {
            schemas: Arc::new(crate::engine::grammar::mask::SchemaCache::new(
                config.generation.schema_cache_entries,
                config.generation.schema_max_elements,
            )),
            blog: Arc::new(blog),
            chat,
            drain: drain.clone(),
            store: store.clone(),
            jwt,
            login_limits,
            hasher: crate::auth::password::Hasher::new(config.auth.max_concurrent_hashes),
            proxies: Arc::new(proxies),
            engine: scheduler.engine().clone(),
            metrics,
            scheduler,
            router,
            config: Arc::new(config),
            model_id,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        // Compress the web UI's files now rather than on the first page load.
        api::web::warm();
        Ok(Self {
            listener,
            drain,
            store,
            tls,
            router: api::router(state),
            limits,
            backups,
            housekeeping,
            heartbeat,
            listeners,
        })
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` resolves, then shut down gracefully: stop accepting, let
    /// requests, WebSocket generations and detached conversation answers finish within
    /// `server.shutdown_grace_secs` of the signal (sockets then close with 1001), stop what is
    /// left (answers are saved as interrupted), and checkpoint the database.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let drain = self.drain.clone();
        let signalled = async move {
            shutdown.await;
            drain.begin();
        };
        let grace = self.limits.shutdown_grace;
        let reloads = self
            .tls
            .clone()
            .map(|tls| tokio::spawn(reload_on_sighup(tls)));
        crate::net::serve(self.listener, self.router, self.limits, self.tls, signalled).await;
        if let Some(r) = reloads {
            r.abort();
        }
        if let Some(b) = self.backups {
            b.abort();
        }
        self.housekeeping.abort();
        let began = self.drain.began().unwrap_or_else(std::time::Instant::now);
        let deadline = tokio::time::Instant::from_std(began + grace);
        if tokio::time::timeout_at(deadline, self.drain.idle())
            .await
            .is_err()
        {
            tracing::info!(
                left = self.drain.active(),
                "shutdown grace over: stopping the sockets and answers still running"
            );
            self.drain.force();
            // They stop at once; this bounds saving the answers and the sockets' close frames.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.drain.idle()).await;
        }
        self.heartbeat.abort();
        for l in &self.listeners {
            l.abort();
        }
        match self.store.checkpoint().await {
            Ok(true) => tracing::info!("database checkpointed"),
            Ok(false) => tracing::warn!("database checkpoint incomplete: a reader held it back"),
            Err(e) => tracing::warn!(error = %e, "database checkpoint failed"),
        }
        Ok(())
    }

    /// Serve until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// Every few minutes: forget login-limit buckets that have refilled, and delete refresh tokens
/// that expired a day ago or more (a day's grace keeps recent ones reading as "expired", not
/// "unknown", in logs).
/// Every `replicas::HEARTBEAT_SECS`: this process is alive; answers of replicas gone (a
/// crashed peer sharing the PostgreSQL store) are marked interrupted.
fn spawn_replica_heartbeat(store: crate::store::Store) -> tokio::task::JoinHandle<()> {
    let period = Duration::from_secs(crate::store::replicas::HEARTBEAT_SECS as u64);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.replica_heartbeat().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    interrupted = n,
                    "answers of a replica gone marked interrupted"
                ),
                Err(e) => tracing::warn!(error = %e, "replica heartbeat failed"),
            }
        }
    })
}

fn spawn_housekeeping(
    store: crate::store::Store,
    login_limits: Arc<crate::limits::LoginLimits>,
) -> tokio::task::JoinHandle<()> {
    const PERIOD: Duration = Duration::from_secs(300);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            login_limits.prune();
            let before = crate::store::unix_now() - 24 * 3600;
            match store.delete_expired_refresh(before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired refresh tokens deleted"),
                Err(e) => tracing::warn!(error = %e, "deleting expired refresh tokens failed"),
            }
        }
    })
}

/// Read the certificate and key again on each SIGHUP (`systemctl reload`); a pair that does not
/// load is logged and the running one kept.
async fn reload_on_sighup(tls: crate::net::Tls) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: TLS certificates reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; keeping the old one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The configured database, for messages: the file, or the URL without its password.
pub(crate) fn store_name(storage: &crate::config::StoreSettings) -> String {
    match storage.target() {
        Ok(crate::config::StoreTarget::Postgres(url)) => crate::store::redact_url(&url),
        _ => storage.db_path().display().to_string(),
    }
}
