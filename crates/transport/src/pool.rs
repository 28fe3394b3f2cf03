//! A cleartext HTTP/1.1 connection pool for one upstream origin: keep-alive connections
//! (`TCP_NODELAY`), one request at a time on each, taken from and returned to an idle list.
//!
//! This is the gateway's hot path to an `http://` upstream, so it does only what a proxy needs:
//! the request's URI and `Host` are built once per upstream, and a request borrows a connection
//! without the general-purpose client's per-request URL conversion and connector clones. A
//! connection goes back to the idle list only once its response body has been read to the end;
//! a response abandoned part way (a timeout, a cancelled call) closes its connection, which is
//! how a modern upstream learns that the call is cancelled.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per upstream and serving thread; more are closed when returned.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed rather than reused (servers close theirs too).
const IDLE_FOR: Duration = Duration::from_secs(90);
/// How long a pooled connection may take to be ready for its next request before it is taken
/// for stale (nothing has been sent on it, so the request goes to another).
const READY_WAIT: Duration = Duration::from_secs(1);

/// Why a request could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("connection refused or unreachable")]
    Connect,
    #[error("timed out")]
    ConnectTimeout,
    #[error("request failed")]
    Request,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The pool of one origin (`host:port`).
pub(crate) struct Pool {
    /// What `TcpStream::connect` resolves.
    authority: String,
    connect_timeout: Duration,
    /// Per serving thread (see [`crate::shard`]): oldest at the front; connections are taken
    /// from the back (the warmest).
    idle: Mutex<Vec<VecDeque<Idle>>>,
}

impl Pool {
    pub(crate) fn new(authority: String, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { authority, connect_timeout, idle: Mutex::new(Vec::new()) })
    }

    /// An idle connection opened on the calling thread (see [`crate::shard`]), the warmest first.
    fn take(&self) -> Option<(SendRequest<Full<Bytes>>, usize)> {
        let shard = crate::shard::current();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = idle.get_mut(shard)?;
        while let Some(c) = list.pop_back() {
            if !c.sender.is_closed() && c.since.elapsed() < IDLE_FOR {
                return Some((c.sender, shard));
            }
        }
        None
    }

    /// Returns a connection to the idle list of the thread that opened it.
    fn put(&self, sender: SendRequest<Full<Bytes>>, shard: usize) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() <= shard {
            idle.resize_with(shard + 1, VecDeque::new);
        }
        // The oldest are closed once they have idled too long, even when nothing takes them (nor
        // from a thread that no longer uses this upstream).
        for list in idle.iter_mut() {
            while list.front().is_some_and(|c| c.sender.is_closed() || c.since.elapsed() >= IDLE_FOR) {
                list.pop_front();
            }
        }
        let list = &mut idle[shard];
        if list.len() < MAX_IDLE {
            list.push_back(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PoolError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| PoolError::ConnectTimeout)?
            .map_err(|_| PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| PoolError::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends a request on an idle connection, or a new one. A request that a reused connection
    /// closed before sending is retried once more per stale connection on the next; one that may
    /// have reached the upstream is never resent.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        loop {
            // A new connection's driver task runs on the calling thread: so does its idle list.
            let (mut sender, shard, reused) = match self.take() {
                Some((s, shard)) => (s, shard, true),
                None => (self.connect().await?, crate::shard::current(), false),
            };
            let wait = if reused { READY_WAIT } else { self.connect_timeout };
            if !matches!(tokio::time::timeout(wait, sender.ready()).await, Ok(Ok(()))) {
                if reused {
                    continue;
                }
                return Err(PoolError::Connect);
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { pool: Arc::clone(self), sender: Some(sender), shard })),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => return Err(PoolError::Request),
                },
            }
        }
    }
}

/// The connection a response is read from; it goes back to the pool through [`Lease::release`]
/// once the body has ended, and closes if dropped before.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The serving thread whose idle list the connection belongs to.
    shard: usize,
}

impl Lease {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender, self.shard);
        }
    }
}

/// A request for the pool: origin-form URI, the given headers (which carry `Host`).
pub(crate) fn request(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers;
    req
}

/// A response body read frame by frame; the connection is released at its end.
pub(crate) struct PooledBody {
    body: Incoming,
    lease: Lease,
}

impl PooledBody {
    pub(crate) fn new(body: Incoming, lease: Lease) -> Self {
        Self { body, lease }
    }

    /// The next chunk of data, `None` at the end (the connection is then back in the pool).
    pub(crate) async fn chunk(&mut self) -> Option<Result<Bytes, PoolError>> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Some(Ok(data));
                    }
                }
                Some(Err(_)) => return Some(Err(PoolError::Request)),
                None => {
                    self.lease.release();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with a fixed body and counts connections.
    async fn server(close_after_first: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.expect("accept");
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().expect("length"));
                            if seen.len() < end + 4 + len {
                                break;
                            }
                            seen.drain(..end + 4 + len);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            s.write_all(reply).await.expect("write");
                            if close_after_first {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: &str) -> Request<Full<Bytes>> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, addr.parse().expect("host"));
        request(Method::POST, &Uri::from_static("/mcp"), headers, Bytes::from_static(b"{}"))
    }

    async fn read_all(pool: &Arc<Pool>, addr: &str) -> Bytes {
        let (resp, lease) = pool.send(get(addr)).await.expect("send");
        let mut body = PooledBody::new(resp.into_body(), lease);
        let mut out = Vec::new();
        while let Some(chunk) = body.chunk().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        Bytes::from(out)
    }

    #[tokio::test]
    async fn a_finished_response_returns_its_connection_for_reuse() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(addr.clone(), Duration::from_secs(2));
        for _ in 0..5 {
            assert_eq!(read_all(&pool, &addr).await, "ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_abandoned_response_closes_its_connection() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(addr.clone(), Duration::from_secs(2));
        let (resp, lease) = pool.send(get(&addr)).await.expect("send");
        drop((resp, lease));
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (addr, accepted) = server(true).await;
        let pool = Pool::new(addr.clone(), Duration::from_secs(2));
        for _ in 0..3 {
            assert_eq!(read_all(&pool, &addr).await, "ok");
            // Let the client see the close before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn each_serving_thread_reuses_only_the_connections_it_opened() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(addr.clone(), Duration::from_secs(2));
        let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
        // Thread 0 opens one and gets it back; thread 1 must open its own (its driver task runs
        // where it was opened), then reuses that one, as thread 0 still reuses its own.
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(count(), 1);
        crate::shard::enter(1);
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(count(), 2);
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(count(), 2);
        crate::shard::enter(0);
        assert_eq!(read_all(&pool, &addr).await, "ok");
        assert_eq!(count(), 2);
        let idle = || pool.idle.lock().map(|lists| lists.iter().map(VecDeque::len).collect::<Vec<_>>()).ok();
        assert_eq!(idle(), Some(vec![1, 1]));
        // A response read to its end elsewhere returns the connection to the list of the thread
        // that opened it.
        crate::shard::enter(1);
        let (resp, lease) = pool.send(get(&addr)).await.expect("send");
        crate::shard::enter(0);
        let mut body = PooledBody::new(resp.into_body(), lease);
        while body.chunk().await.is_some() {}
        assert_eq!(idle(), Some(vec![1, 1]));
        assert_eq!(count(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_origin_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let pool = Pool::new(addr.clone(), Duration::from_secs(2));
        assert!(matches!(pool.send(get(&addr)).await, Err(PoolError::Connect)));
    }
}
