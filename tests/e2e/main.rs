//! End-to-end tests: the real `vigil` binary driven by real clients. One test binary, so
//! DataFusion is linked once.

mod adversity;
mod alerting;
mod alertmanager_api;
mod cluster;
mod dashboard;
mod drift;
mod foundation;
mod grafana_calls;
mod hardening;
mod harness;
mod ingestion;
mod ports;
mod prometheus;
mod promql;
mod promql_upstream;
mod query_api;
mod remote_read;
mod remote_write_client;
mod slos;
mod tls;
