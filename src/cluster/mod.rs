//! Replicas sharing state through Redis (`cache.url`): the one connection every shared part
//! uses and the names of its keys ([`Cluster`]), and the events replicas tell each other
//! ([`events`]). What is shared lives with its owner: budgets in
//! [`crate::chat::shared_budgets`], cached answers in [`crate::chat::cache`], answers being
//! generated in [`crate::chat::relay`]. Without `cache.url` there is no cluster and every part
//! stays in-process.
//!
//! Knows no HTTP: must not import axum or the API layer.

pub mod events;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncConnectionConfig;

/// The Redis every replica of one deployment shares.
pub struct Cluster {
    client: redis::Client,
    /// The longest a command may take (`cache.timeout_ms`).
    timeout: Duration,
    conn: ConnectionManager,
    /// `hearth:<installation id>`: deployments sharing one Redis stay apart.
    prefix: String,
    /// This process's id (the store's replica id).
    replica: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connect to `url` (the connection reconnects by itself later); no command or connection
    /// attempt takes longer than `timeout`. `installation` names the deployment (the store's
    /// installation id), `replica` this process.
    pub async fn connect(
        url: &str,
        installation: &str,
        replica: &str,
        timeout: Duration,
    ) -> redis::RedisResult<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(Arc::new(Self {
            client,
            timeout,
            conn,
            prefix: format!("hearth:{installation}"),
            replica: replica.to_string(),
        }))
    }

    /// The shared connection (multiplexed: never send a blocking command on it).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for blocking reads: commands may take `block` more than the
    /// usual timeout.
    pub async fn dedicated(
        &self,
        block: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout + block);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A connection subscribed to `channel` (connected and subscribed within the timeout).
    pub async fn subscribe(&self, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
        let subscribed = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        };
        match tokio::time::timeout(self.timeout, subscribed).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        }
    }

    /// Send `cmd` on the shared connection from a task of its own, without waiting for it
    /// (nothing is sent outside a runtime); a failure is logged as `what` failing.
    pub fn send_later(self: &Arc<Self>, cmd: redis::Cmd, what: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut conn = self.conn();
        runtime.spawn(tracing::Instrument::in_current_span(async move {
            let sent: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "{what} failed");
            }
        }));
    }

    /// The key `what` of this deployment.
    pub fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    /// This process's replica id.
    pub fn replica(&self) -> &str {
        &self.replica
    }
}
