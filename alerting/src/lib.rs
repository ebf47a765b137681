//! Vigil's alerting: burn-rate and rule alerts, alert state, routing, silences and notifiers.
//! It reads SLO and rule results from `vigil-query` and writes alert state to `vigil-storage`.
