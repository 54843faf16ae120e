//! The HTTP/1 server in front of the router, bounded against slow and
//! greedy clients: at most so many connections at once (more wait in the
//! listen backlog, those accepted keep being served), a request's head must
//! arrive within a timeout, a body that stalls is cut off (the extractors
//! answer 408), a kept-alive connection with nothing to do is closed, and a
//! shutdown lets requests in flight finish.
//!
//! `flatrender serve`, `flatrender demo` and the tests all serve through
//! [`serve`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::Service;
use tower_http::timeout::TimeoutBody;

/// How the server bounds what clients may hold; the defaults suit a farm
/// of agents on a LAN.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once; more wait until one closes.
    pub max_connections: u32,
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// The longest a request body may go without sending data (a body
    /// that stalls longer is answered 408 and the connection closed).
    pub body_read_timeout: Duration,
    /// How long a connection may wait for its next request (nothing sent,
    /// nothing in flight) before it is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long requests in flight may take to finish (a claim
    /// long-polls for up to 30 s).
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(35),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, closes idle connections, and waits (at most
/// [`ServerLimits::shutdown_grace`]) for requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max as usize));
    let (stop, stopping) = watch::channel(false);
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        // A permit first: over the limit, connections wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = connection(
            stream,
            router.clone(),
            limits.clone(),
            stopping.clone(),
            permit,
        );
        drop(eventstore::task::spawn_named(
            "http-connection",
            async move {
                connection.await;
                tracing::trace!(%peer, "connection closed");
            },
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it ends.
    let drained = tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(max)).await;
    if drained.is_err() {
        tracing::warn!("shutdown: requests still in flight after the grace period");
    }
    Ok(())
}

/// What a connection is doing, for its timeouts.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests handed to the router and not answered yet.
    in_flight: usize,
    /// When the last answer was ready, or the last bytes of one were
    /// written (or the connection opened).
    idle_since: Instant,
    /// When the first byte of a request not yet handed over arrived.
    head_since: Option<Instant>,
}

impl Activity {
    /// When the connection is to be closed, unless something happens.
    fn deadline(&self, limits: &ServerLimits) -> Option<Instant> {
        if self.in_flight > 0 {
            None
        } else if let Some(head) = self.head_since {
            Some(head + limits.header_read_timeout)
        } else {
            Some(self.idle_since + limits.idle_timeout)
        }
    }
}

/// Marks a request in flight until its answer is ready.
struct InFlight(watch::Sender<Activity>);

impl InFlight {
    fn begin(activity: &watch::Sender<Activity>) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.head_since = None;
        });
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            a.idle_since = Instant::now();
            a.head_since = None;
        });
    }
}

/// The socket, noting when a new request's first bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: watch::Sender<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.send_if_modified(|a| {
                let starts_a_head = a.in_flight == 0 && a.head_since.is_none();
                if starts_a_head {
                    a.head_since = Some(Instant::now());
                }
                starts_a_head
            });
        }
        polled
    }
}

impl Watched {
    /// An answer's bytes went out: a client that reads is not idle (a long
    /// download goes on), one that stopped reading is, from its last read.
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            let now = Instant::now();
            self.activity.send_if_modified(|a| {
                let stale = now.duration_since(a.idle_since) >= Duration::from_millis(250);
                if stale {
                    a.idle_since = now;
                }
                stale
            });
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&polled);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Resolves when the connection has been idle, or has been sending a head,
/// for too long.
async fn expired(mut activity: watch::Receiver<Activity>, limits: &ServerLimits) {
    loop {
        let deadline = activity.borrow_and_update().deadline(limits);
        match deadline {
            Some(at) if at <= Instant::now() => return,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    changed = activity.changed() => if changed.is_err() { return },
                }
            }
            None => {
                if activity.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves one connection until it closes, its timeouts expire, or the
/// server stops (after the request in flight).
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Arc<ServerLimits>,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let (activity, watching) = watch::channel(Activity {
        in_flight: 0,
        idle_since: Instant::now(),
        head_since: None,
    });
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let body_read_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&activity);
        let request = request.map(|body| Body::new(TimeoutBody::new(body_read_timeout, body)));
        let answer = router.clone().call(request);
        async move {
            let response = answer.await;
            drop(in_flight);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        // hyper counts this from when it starts waiting for a head, idle
        // time included: a backstop behind the precise timeouts above.
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    // Upgrades (the WebSocket endpoints) take the connection over once
    // answered; the limits above then no longer apply to it (its session
    // has its own: pings, a send timeout, bounded buffers).
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let stop = async {
        tokio::select! {
            () = expired(watching, &limits) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop => {
            // Closes an idle connection (or one still sending a head) now;
            // one with a request in flight after its answer, within the
            // grace (a client that stopped reading an answer is cut off).
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.shutdown_grace, conn).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!("a connection that would not finish was closed");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
