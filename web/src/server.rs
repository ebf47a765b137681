//! Serving one listener: accept, admit, (TLS,) HTTP/1 or HTTP/2, until shutdown.
//!
//! Every connection is bounded in number and in time, so that connections a client opens
//! and never uses cannot exhaust file descriptors or stall anyone else:
//! - at most `max_connections` at once, and `max_connections_per_client` from one address;
//!   past either the connection is closed at once and counted;
//! - the TLS handshake, and each HTTP/1 request's headers from their first byte, must
//!   arrive within `header_read_timeout` (slow senders are cut off);
//! - a connection with no request in flight and no bytes moving for `idle_timeout` is
//!   closed (HTTP/2 included). Idle keep-alive connections are not cut at the header
//!   timeout, as hyper's own timer would: clients keep pooled connections for 90 s (Go,
//!   reqwest), and closing them sooner makes their next request fail mid-send;
//! - an `accept` error (out of file descriptors) backs off instead of spinning.
//!
//! Request bodies have their own deadline (`body_read_timeout`, see [`crate::body`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Bounds on the connections of one listener.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 8192,
            max_connections_per_client: 512,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Open connections, total and per client address, shared by every listener.
#[derive(Default)]
pub struct ConnectionCounts {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionCounts {
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One admitted connection; dropping it gives its place back.
struct ConnectionPermit {
    counts: Arc<ConnectionCounts>,
    client: IpAddr,
}

impl ConnectionPermit {
    fn acquire(
        counts: &Arc<ConnectionCounts>,
        client: IpAddr,
        limits: &ConnectionLimits,
    ) -> Result<ConnectionPermit, &'static str> {
        let mut per_client = counts.per_client.lock();
        if counts.total.load(Ordering::Relaxed) >= limits.max_connections {
            return Err("max_connections");
        }
        let from_client = per_client.entry(client).or_default();
        if *from_client >= limits.max_connections_per_client {
            return Err("max_connections_per_client");
        }
        *from_client += 1;
        counts.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("vigil_http_open_connections").set(counts.total.load(Ordering::Relaxed) as f64);
        Ok(ConnectionPermit { counts: counts.clone(), client })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_client = self.counts.per_client.lock();
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
        let open = self.counts.total.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("vigil_http_open_connections").set(open as f64);
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish (at
/// most `shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    counts: Arc<ConnectionCounts>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's timer also bounds the wait for a keep-alive connection's next request: at the
    // idle timeout, and the header deadline is ours (see `Activity`).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout.max(limits.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout / 4))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors (or a connection reset before accept): wait
                    // for some to close instead of spinning on the error.
                    metrics::counter!("vigil_http_accept_errors_total").increment(1);
                    warn!(%error, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match ConnectionPermit::acquire(&counts, peer.ip(), &limits) {
            Ok(permit) => permit,
            Err(limit) => {
                metrics::counter!("vigil_http_connections_refused_total", "limit" => limit).increment(1);
                debug!(client = %peer, limit, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            tls.clone(),
            builder.clone(),
            limits.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    tasks.close();
    if tokio::time::timeout(limits.shutdown_grace, tasks.wait()).await.is_err() {
        warn!("requests still running at the end of the shutdown grace period were cut off");
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    _permit: ConnectionPermit,
) {
    let activity = Activity::new();
    let stream = Watched { inner: stream, activity: activity.clone() };
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(error)) => {
                debug!(client = %peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!("vigil_http_connections_closed_total", "reason" => "handshake_timeout").increment(1);
                return;
            }
        },
    };
    let in_flight = activity.clone();
    let service = app.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let guard = in_flight.request_started(request.version());
        let call = service.clone().oneshot(request);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let every = limits.idle_timeout.min(limits.header_read_timeout / 2).min(Duration::from_secs(5));
        let idle_check = tokio::time::sleep(every.max(Duration::from_millis(100)));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(client = %peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check, if !closing => {
                if activity.reading_headers_for() >= limits.header_read_timeout {
                    // No request runs on it: nothing is lost by dropping it now.
                    metrics::counter!("vigil_http_connections_closed_total", "reason" => "header_timeout").increment(1);
                    return;
                }
                if activity.idle_for() >= limits.idle_timeout {
                    metrics::counter!("vigil_http_connections_closed_total", "reason" => "idle").increment(1);
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// When a connection last moved bytes, how many of its requests are running, and since
/// when the next HTTP/1 request's headers have been arriving.
#[derive(Clone)]
struct Activity {
    started: Instant,
    last_ms: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
    /// ms (+1) of the first byte read while no request ran; 0: none pending.
    head_since_ms: Arc<AtomicU64>,
    /// HTTP/2 (a request said so): frames between requests are no header to time.
    http2: Arc<std::sync::atomic::AtomicBool>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: Arc::default(),
            requests: Arc::default(),
            head_since_ms: Arc::default(),
            http2: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: with no request running they start (or continue) a request head.
    fn read(&self) {
        self.touch();
        if self.requests.load(Ordering::Relaxed) == 0 && !self.http2.load(Ordering::Relaxed) {
            let _ = self.head_since_ms.compare_exchange(0, self.now_ms() + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// How long an HTTP/1 request head has been arriving without being complete.
    fn reading_headers_for(&self) -> Duration {
        let since = self.head_since_ms.load(Ordering::Relaxed);
        if since == 0 || self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis((self.now_ms() + 1).saturating_sub(since))
    }

    /// How long nothing happened; zero while a request runs (a long query moves no bytes).
    fn idle_for(&self) -> Duration {
        if self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    fn request_started(&self, version: hyper::Version) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(0, Ordering::Relaxed);
        if version >= hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        RequestGuard(self.clone())
    }
}

struct RequestGuard(Activity);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that records when bytes last moved.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_bound_total_and_per_client_connections() {
        let counts = Arc::new(ConnectionCounts::default());
        let limits = ConnectionLimits { max_connections: 3, max_connections_per_client: 2, ..Default::default() };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = ConnectionPermit::acquire(&counts, a, &limits).unwrap();
        let _second = ConnectionPermit::acquire(&counts, a, &limits).unwrap();
        assert_eq!(ConnectionPermit::acquire(&counts, a, &limits).err(), Some("max_connections_per_client"));
        let _third = ConnectionPermit::acquire(&counts, b, &limits).unwrap();
        assert_eq!(ConnectionPermit::acquire(&counts, b, &limits).err(), Some("max_connections"));
        drop(first);
        assert_eq!(counts.open(), 2);
        assert!(ConnectionPermit::acquire(&counts, a, &limits).is_ok(), "a place given back is taken again");
    }

    #[test]
    fn a_running_request_is_never_idle() {
        let activity = Activity::new();
        let guard = activity.request_started(hyper::Version::HTTP_11);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(guard);
        std::thread::sleep(Duration::from_millis(20));
        assert!(activity.idle_for() >= Duration::from_millis(15));
    }

    #[test]
    fn the_header_clock_runs_from_a_heads_first_byte_to_its_request() {
        let activity = Activity::new();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(activity.reading_headers_for(), Duration::ZERO, "an idle keep-alive connection has no head pending");
        activity.read();
        std::thread::sleep(Duration::from_millis(20));
        activity.read();
        assert!(activity.reading_headers_for() >= Duration::from_millis(15), "the clock starts at the first byte");
        let guard = activity.request_started(hyper::Version::HTTP_11);
        activity.read(); // the body
        assert_eq!(activity.reading_headers_for(), Duration::ZERO);
        drop(guard);
        assert_eq!(activity.reading_headers_for(), Duration::ZERO, "between requests: idle, not a head");
        // HTTP/2 frames between requests (pings, settings) are no request head.
        drop(activity.request_started(hyper::Version::HTTP_2));
        activity.read();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(activity.reading_headers_for(), Duration::ZERO);
    }
}
