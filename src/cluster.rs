//! The alerting lease: which of the nodes sharing a store evaluates SLOs and alerts.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_alerting::Alerting;
use vigil_storage::lease::Lease;

/// One renewal or attempt to take the lease; alerting follows the outcome. Taking over
/// first loads the state the previous holder shared, so nothing it paged is paged again.
/// A standby node refreshes its copy of that state, for its APIs and dashboard.
pub async fn lease_tick(lease: &mut Lease, alerting: &Alerting) {
    let was_active = alerting.is_active();
    // A store that hangs counts as one that fails: the holder must not act past its lease.
    let held = match tokio::time::timeout(lease.renew_every(), lease.tick()).await {
        Ok(Ok(held)) => held,
        Ok(Err(e)) => {
            warn!(error = %e, "alerting lease: the store did not answer; acting only until the last renewal runs out");
            lease.is_held()
        }
        Err(_) => {
            warn!("alerting lease: the store is too slow to answer; acting only until the last renewal runs out");
            lease.is_held()
        }
    };
    if held && !was_active {
        if let Err(e) = alerting.load_shared().await {
            // Taking over without the holder's notification log could page twice: wait.
            warn!(error = %e, "alerting lease taken but the shared alerting state is unreadable; not alerting yet");
            return;
        }
        info!("alerting lease held: this node evaluates SLOs and alerts");
    } else if !held {
        if was_active {
            info!("alerting lease lost: another node evaluates SLOs and alerts");
        }
        if let Err(e) = alerting.load_shared().await {
            warn!(error = %e, "reading the shared alerting state failed");
        }
    }
    alerting.set_active(held);
}

/// Renews the lease until `stop`, then releases it so that another node takes over at once.
pub async fn hold_lease(mut lease: Lease, alerting: Alerting, stop: CancellationToken) {
    let mut every = tokio::time::interval(lease.renew_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    while stop.run_until_cancelled(every.tick()).await.is_some() {
        lease_tick(&mut lease, &alerting).await;
        // Between renewals the holder stops acting by itself once its lifetime runs out.
    }
    alerting.set_active(false);
    if let Err(e) = lease.release().await {
        warn!(error = %e, "releasing the alerting lease failed; another node takes over when it expires");
    }
}
