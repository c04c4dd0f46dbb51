//! What one replica tells the others: a user's credentials changed (their sockets recheck at
//! once and close if revoked), a user's preferences changed (cached copies are dropped), the
//! admin's settings changed (the model policy and limit overrides are read again), an answer
//! generating elsewhere is to stop. [`Events`] delivers each event to this process at once and,
//! with a [`Cluster`], publishes it on the deployment's Redis channel; a relay task hands the
//! other replicas' events to this process. Without Redis the bus is in-process only.
//!
//! Events are hints to re-read the store, never state themselves: one lost while Redis is
//! unreachable is made good on reconnecting by [`Event::Resync`] (drop every cached copy).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::Cluster;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// `user`'s credentials changed (disabled, deleted, password changed, signed out
    /// everywhere, a key deleted): their sockets check theirs again now.
    Credentials {
        /// The user.
        user: i64,
    },
    /// `user`'s preferences changed.
    Preferences {
        /// The user.
        user: i64,
    },
    /// The model policy or a user's limit overrides changed.
    Settings,
    /// Stop `owner`'s answer `message`, wherever it generates.
    Cancel {
        /// The answer's owner.
        owner: i64,
        /// The answer.
        message: String,
    },
    /// Events may have been missed (Redis was unreachable): drop every cached copy (never
    /// published; made by the relay).
    Resync,
}

/// On the wire: the event and who sent it (a replica ignores its own).
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    event: Event,
}

/// Events a slow listener may fall behind before it misses some (and resyncs).
const BUFFER: usize = 1024;

/// The bus (cheap to clone).
#[derive(Clone, Debug)]
pub struct Events {
    local: broadcast::Sender<Event>,
    cluster: Option<Arc<Cluster>>,
}

impl Events {
    /// A bus over `cluster`, or in-process only.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            local: broadcast::channel(BUFFER).0,
            cluster,
        }
    }

    /// Listen to every event from now on (this process's and, with Redis, the others').
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    /// Tell this process now and the other replicas as soon as Redis takes it.
    pub fn publish(&self, event: Event) {
        let _ = self.local.send(event.clone());
        let Some(cluster) = &self.cluster else {
            return;
        };
        let payload = serde_json::to_string(&Envelope {
            from: cluster.replica().to_string(),
            event,
        })
        .unwrap_or_default();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(cluster.key("events")).arg(payload);
        cluster.send_later(publish, "telling the other replicas");
    }

    /// With a cluster: hand the other replicas' events to this process until the runtime
    /// stops, resubscribing (and resyncing) after Redis goes away.
    pub fn spawn_relay(&self) -> Option<tokio::task::JoinHandle<()>> {
        let cluster = self.cluster.clone()?;
        let local = self.local.clone();
        Some(tokio::spawn(async move {
            let channel = cluster.key("events");
            let mut first = true;
            loop {
                match cluster.subscribe(&channel).await {
                    Ok(pubsub) => {
                        if !first {
                            tracing::info!("listening to the other replicas again");
                            let _ = local.send(Event::Resync);
                        }
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            match serde_json::from_str::<Envelope>(&payload) {
                                Ok(e) if e.from != cluster.replica() => {
                                    let _ = local.send(e.event);
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "an event from another replica did not parse")
                                }
                            }
                        }
                        tracing::warn!("the replicas' event channel closed");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "subscribing to the replicas' events failed")
                    }
                }
                first = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_redis_events_reach_this_process() {
        let bus = Events::new(None);
        let mut rx = bus.subscribe();
        bus.publish(Event::Credentials { user: 7 });
        assert_eq!(rx.recv().await.ok(), Some(Event::Credentials { user: 7 }));
        assert!(bus.spawn_relay().is_none());
    }

    #[test]
    fn events_travel_as_tagged_json() {
        let text = serde_json::to_string(&Event::Cancel {
            owner: 1,
            message: "m".into(),
        })
        .unwrap_or_default();
        assert_eq!(text, r#"{"kind":"cancel","owner":1,"message":"m"}"#);
    }
}
