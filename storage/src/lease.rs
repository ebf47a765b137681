//! A lease in the object store: which node runs the work only one node may do (SLO
//! evaluation and alerting), taken over when its holder stops renewing it.
//!
//! Each taking of the lease is a new object `cluster/leases/<name>/<epoch>.json`, created
//! with `PutMode::Create`, so two nodes racing for an expired lease cannot both win: the
//! store refuses the second create. The holder renews by rewriting its own epoch's object
//! (no one else writes it). A holder that could not renew stops acting at its own expiry,
//! measured on its own clock, a margin before others may take over: nodes' clocks may
//! disagree by less than that margin (NTP keeps them within milliseconds).

use std::sync::Arc;
use std::time::Duration;

use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::clock::{Clock, SystemClock};
use crate::store::{get_json, to_json};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub epoch: u64,
    /// Others may take the lease from this moment.
    pub expires_unix_ms: i64,
}

/// One node's view of one lease.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    name: String,
    node: String,
    ttl: Duration,
    /// The epoch this node holds and until when it may act on it.
    held: Option<(u64, i64)>,
    clock: Arc<dyn Clock>,
}

impl Lease {
    pub fn new(store: Arc<dyn ObjectStore>, name: &str, node: &str, ttl: Duration) -> Lease {
        Lease { store, name: name.to_string(), node: node.to_string(), ttl, held: None, clock: Arc::new(SystemClock) }
    }

    /// The same lease on another clock (tests move a [`crate::clock::ManualClock`]).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Lease {
        Lease { clock, ..self }
    }

    fn dir(&self) -> Path {
        Path::from_iter(["cluster", "leases", &self.name])
    }

    fn epoch_path(&self, epoch: u64) -> Path {
        Path::from_iter(["cluster", "leases", &self.name, &format!("{epoch:016}.json")])
    }

    /// How often to call [`Lease::tick`]: three renewals fit in one lifetime.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// True while this node may act as the holder: it renewed within the lifetime, less a
    /// margin of a tenth of it.
    pub fn is_held(&self) -> bool {
        self.held.is_some_and(|(_, until)| self.clock.now_ms() < until)
    }

    /// The newest epoch's record, if any.
    pub async fn current(&self) -> Result<Option<LeaseRecord>, StorageError> {
        let objects: Vec<_> = self.store.list(Some(&self.dir())).try_collect().await?;
        let Some(newest) = objects.iter().map(|o| o.location.clone()).max() else {
            return Ok(None);
        };
        get_json(&self.store, &newest).await
    }

    /// Renews the lease if this node holds it, takes it if it is free or expired. Returns
    /// whether this node holds it now. An error leaves the node holding only until its
    /// last renewal runs out.
    pub async fn tick(&mut self) -> Result<bool, StorageError> {
        let now = self.clock.now_ms();
        let ttl_ms = self.ttl.as_millis() as i64;
        let current = self.current().await?;
        let record = match &current {
            // Ours: ours since this process took it, or left by this node before a restart.
            Some(r) if r.holder == self.node && self.held.is_none_or(|(epoch, _)| epoch == r.epoch) => {
                LeaseRecord { holder: self.node.clone(), epoch: r.epoch, expires_unix_ms: now + ttl_ms }
            }
            Some(r) if r.expires_unix_ms > now => {
                self.held = None;
                return Ok(false);
            }
            other => {
                let epoch = other.as_ref().map_or(1, |r| r.epoch + 1);
                let record = LeaseRecord { holder: self.node.clone(), epoch, expires_unix_ms: now + ttl_ms };
                let body = to_json(&record)?;
                let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                match self.store.put_opts(&self.epoch_path(epoch), PutPayload::from(body), create).await {
                    Ok(_) => {}
                    Err(datafusion::object_store::Error::AlreadyExists { .. }) => {
                        self.held = None;
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
                self.held = Some((epoch, now + ttl_ms - ttl_ms / 10));
                self.forget_before(epoch).await;
                return Ok(true);
            }
        };
        let body = to_json(&record)?;
        self.store.put(&self.epoch_path(record.epoch), PutPayload::from(body)).await?;
        self.held = Some((record.epoch, now + ttl_ms - ttl_ms / 10));
        Ok(true)
    }

    /// Gives the lease up (clean shutdown): others may take it at once.
    pub async fn release(&mut self) -> Result<(), StorageError> {
        if let Some((epoch, _)) = self.held.take() {
            let record = LeaseRecord { holder: self.node.clone(), epoch, expires_unix_ms: 0 };
            let body = to_json(&record)?;
            self.store.put(&self.epoch_path(epoch), PutPayload::from(body)).await?;
        }
        Ok(())
    }

    /// Old epochs are history only; a few are kept for inspection.
    async fn forget_before(&self, epoch: u64) {
        for old in epoch.saturating_sub(16)..epoch.saturating_sub(4) {
            let _ = self.store.delete(&self.epoch_path(old)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use datafusion::object_store::local::LocalFileSystem;

    #[tokio::test]
    async fn one_holder_at_a_time_and_takeover_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let ttl = Duration::from_secs(30);
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let mut a = Lease::new(store.clone(), "alerting", "a", ttl).with_clock(clock.clone());
        let mut b = Lease::new(store.clone(), "alerting", "b", ttl).with_clock(clock.clone());
        assert!(a.tick().await.unwrap());
        assert!(!b.tick().await.unwrap(), "a holds it");
        clock.advance(Duration::from_secs(20));
        assert!(a.tick().await.unwrap(), "renewed");
        clock.advance(Duration::from_secs(20));
        assert!(!b.tick().await.unwrap(), "the renewal moved the expiry on");
        assert!(a.is_held());
        // a stops renewing (dies): it stops acting a tenth of the lifetime before b may take
        // over, and b takes over once the lease expired, with a new epoch.
        clock.advance(Duration::from_secs(8));
        assert!(!a.is_held(), "a stops acting at its own expiry, less the margin");
        assert!(!b.tick().await.unwrap(), "not expired for others yet");
        clock.advance(Duration::from_secs(3));
        assert!(b.tick().await.unwrap());
        let current = b.current().await.unwrap().unwrap();
        assert_eq!((current.holder.as_str(), current.epoch), ("b", 2));
        // a comes back: it sees b's newer epoch and does not act.
        assert!(!a.tick().await.unwrap());
        // A clean release lets the other take over at once.
        b.release().await.unwrap();
        assert!(a.tick().await.unwrap());
    }

    #[tokio::test]
    async fn two_nodes_racing_for_a_free_lease_get_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        for round in 0..20 {
            let name = format!("race{round}");
            let mut a = Lease::new(store.clone(), &name, "a", Duration::from_secs(10));
            let mut b = Lease::new(store.clone(), &name, "b", Duration::from_secs(10));
            let (x, y) = tokio::join!(a.tick(), b.tick());
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x != y, "exactly one of the two holds {name}");
        }
    }
}
