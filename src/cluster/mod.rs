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

use redis::aio::ConnectionManager;

/// The Redis every replica of one deployment shares.
pub struct Cluster {
    client: redis::Client,
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
    /// Connect to `url` (the connection reconnects by itself later). `installation` names the
    /// deployment (the store's installation id), `replica` this process.
    pub async fn connect(
        url: &str,
        installation: &str,
        replica: &str,
    ) -> redis::RedisResult<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let mut conn = ConnectionManager::new(client.clone()).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: format!("hearth:{installation}"),
            replica: replica.to_string(),
        }))
    }

    /// The shared connection (multiplexed: never send a blocking command on it).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for blocking reads and subscriptions.
    pub async fn dedicated(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client.get_multiplexed_async_connection().await
    }

    /// The client (for pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
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
