//! The accept loop, in front of the routes.
//!
//! Every accepted TCP connection holds a [`ConnectionSlot`] until it closes, upgraded sockets
//! included, so `limits.max_connections` counts what really costs a file descriptor; beyond
//! it a connection gets a 503 and is closed. hyper's header read timeout
//! (`websocket.header_timeout`) drops a connection that does not finish its request headers,
//! or sends none. The routes can be swapped while serving: start-up serves `/healthz` and a
//! `/readyz` of 503 from the first moment, and the full application once it is built.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// After a failed `accept` (typically: out of file descriptors), wait this long before the
/// next, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long open HTTP connections get to finish their current request at shutdown.
const HTTP_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Held by everything that serves one TCP connection (the HTTP connection, then its
/// WebSocket); the connection stops counting when the last holder drops it.
#[derive(Clone)]
pub struct ConnectionSlot {
    _counted: Arc<Counted>,
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// 0: no limit.
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// The listener and its connections, serving whatever routes are current.
pub struct HttpServer {
    pub addr: SocketAddr,
    routes: watch::Sender<Router>,
    stopped: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

impl HttpServer {
    pub fn start(listener: TcpListener, routes: Router, limits: ConnectionLimits) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let routes = watch::Sender::new(routes);
        let stopped = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept =
            tokio::spawn(accept_loop(listener, routes.subscribe(), limits, stopped.clone(), connections.clone()));
        Ok(Self { addr, routes, stopped, accept, connections })
    }

    /// Serves `routes` to every request from now on, on open connections too.
    pub fn set_routes(&self, routes: Router) {
        self.routes.send_modify(move |current| *current = routes);
    }

    /// Stops accepting, lets open HTTP connections finish their current request, and closes them.
    pub async fn stop(self) {
        self.stopped.cancel();
        if let Err(error) = self.accept.await {
            tracing::error!(%error, "the accept loop failed");
        }
        self.connections.close();
        if tokio::time::timeout(HTTP_CLOSE_TIMEOUT, self.connections.wait()).await.is_err() {
            tracing::debug!("HTTP connections still open at shutdown were dropped");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    routes: watch::Receiver<Router>,
    limits: ConnectionLimits,
    stopped: CancellationToken,
    connections: TaskTracker,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Small frames go out at once: with Nagle's algorithm a streamed chunk can wait for the
        // client's delayed ACK (~40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let count = open.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = ConnectionSlot { _counted: Arc::new(Counted(open.clone())) };
        let over_limit = limits.max_connections != 0 && count > limits.max_connections;
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(slot.clone());
            let router = (!over_limit).then(|| routes.borrow().clone());
            async move {
                match router {
                    Some(router) => router.oneshot(request).await,
                    None => Ok::<_, Infallible>(too_many_connections(limits.max_connections)),
                }
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let stopped = stopped.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopped.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, %remote, "HTTP connection ended with an error");
            }
        });
    }
}

fn too_many_connections(limit: usize) -> Response {
    let mut response = super::http::unavailable(&format!(
        "this server has {limit} connections open (limits.max_connections); try again shortly or connect to another instance"
    ));
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
