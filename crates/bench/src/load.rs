//! Load generation: closed-loop (N hosts, each sending its next request as soon as the last one is
//! answered) and fixed-rate open-loop with coordinated-omission correction (latency measured from
//! when a request was due, not from when a busy generator got round to sending it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::connection::{Connection, Endpoint};
use crate::pace::Pacer;
use crate::request::{Era, Template};

/// The longest latency recorded (larger values are clamped).
const MAX_NS: u64 = 60_000_000_000;

/// The measured part of a run: requests started in `[start, end)` are recorded.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When recording begins (after the warm-up).
    pub start: Instant,
    /// When workers stop starting requests.
    pub end: Instant,
}

impl Window {
    /// A window of `measure` after `warmup`, beginning shortly from now (connections are open by then).
    pub fn after(warmup: Duration, measure: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window { start, end: start + measure }
    }

    /// The measured duration.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }
}

/// What one run of one target measured.
#[derive(Debug)]
pub struct Sample {
    /// Latency of successful requests, nanoseconds.
    pub latency: Histogram<u64>,
    /// Requests that failed (transport error, non-200, no result).
    pub errors: u64,
    /// The first failure, to show.
    pub first_error: Option<String>,
    /// The measured duration.
    pub elapsed: Duration,
}

impl Sample {
    /// An empty sample to merge runs into.
    pub fn empty() -> Sample {
        Sample { latency: histogram(), errors: 0, first_error: None, elapsed: Duration::ZERO }
    }

    /// Adds another run of the same target.
    pub fn merge(&mut self, other: Sample) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
    }
}

fn histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits.
    Histogram::new_with_bounds(1, MAX_NS, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// Opens `n` connections in parallel (legacy ones with a session each).
pub async fn connect(endpoint: &Arc<Endpoint>, era: Era, n: usize) -> anyhow::Result<Vec<Connection>> {
    let mut set = JoinSet::new();
    // Opening hundreds at once only measures the listen backlog; 32 at a time is plenty.
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    for _ in 0..n {
        let (endpoint, gate) = (Arc::clone(endpoint), Arc::clone(&gate));
        set.spawn(async move {
            let _permit = gate.acquire().await;
            Connection::open(endpoint, era).await
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(c) = set.join_next().await {
        out.push(c??);
    }
    Ok(out)
}

/// Closed loop: each connection sends back to back until the window ends.
pub async fn closed(conns: Vec<Connection>, t: Arc<Template>, window: Window) -> Sample {
    let mut set = JoinSet::new();
    let latency = Arc::new(Mutex::new(histogram()));
    for mut conn in conns {
        let (t, latency) = (Arc::clone(&t), Arc::clone(&latency));
        set.spawn(async move {
            let mut w = Worker::new(latency);
            loop {
                let sent = Instant::now();
                if sent >= window.end {
                    break;
                }
                let result = conn.send(&t).await;
                if sent >= window.start {
                    w.note(&result, sent.elapsed());
                }
                if let Ok(reply) = result {
                    w.keep_session(&t, reply.session);
                }
            }
            w.finish(&mut conn).await;
            w
        });
    }
    collect(set, window, latency).await
}

/// Open loop at `rate` requests per second over the given connections. Request `i` is due at
/// `start + i / rate`; whichever connection is free takes the next due request. When every
/// connection is busy, requests fall behind schedule and their latency counts from when they were
/// due (the coordinated-omission correction). Each connection waits for its request's due time
/// on a microsecond timer ([`Pacer`]), not tokio's millisecond wheel, so requests leave one by one
/// at the rate instead of in a burst per millisecond; one sent late only because the generator's
/// thread woke late counts from when it was actually sent.
pub async fn fixed_rate(conns: Vec<Connection>, t: Arc<Template>, rate: f64, window: Window) -> Sample {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    // The schedule starts before the window so the warm-up is at the same rate.
    let origin = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    let latency = Arc::new(Mutex::new(histogram()));
    for mut conn in conns {
        let (t, next, latency) = (Arc::clone(&t), Arc::clone(&next), Arc::clone(&latency));
        set.spawn(async move {
            let mut w = Worker::new(latency);
            let timer_failed = |w: &mut Worker, e: std::io::Error| {
                w.note::<()>(&Err(anyhow::anyhow!("the generator's timer: {e}")), Duration::ZERO);
            };
            let pacer = match Pacer::new() {
                Ok(pacer) => pacer,
                Err(e) => {
                    timer_failed(&mut w, e);
                    return w;
                }
            };
            let mut free_at = Instant::now();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let due = origin + interval.mul_f64(i as f64);
                if due >= window.end {
                    break;
                }
                if let Err(e) = pacer.until(due).await {
                    timer_failed(&mut w, e);
                    break;
                }
                let sent = Instant::now();
                let from = if free_at > due { due } else { sent };
                let result = conn.send(&t).await;
                free_at = Instant::now();
                if due >= window.start {
                    w.note(&result, free_at - from);
                }
                if let Ok(reply) = result {
                    w.keep_session(&t, reply.session);
                }
            }
            w.finish(&mut conn).await;
            w
        });
    }
    collect(set, window, latency).await
}

async fn collect(mut set: JoinSet<Worker>, window: Window, latency: Arc<Mutex<Histogram<u64>>>) -> Sample {
    let mut sample = Sample::empty();
    while let Some(w) = set.join_next().await {
        match w {
            Ok(w) => {
                sample.errors += w.errors;
                sample.first_error = sample.first_error.take().or(w.first_error);
            }
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    sample.elapsed = window.length();
    let _ = sample.latency.add(&*latency.lock().unwrap_or_else(PoisonError::into_inner));
    sample
}

/// One connection's records. The histogram is shared by the run's workers: one per worker would
/// be ~600 KiB each (hundreds of MiB at 512 hosts, page-faulted in during the measurement), and
/// with the default single generator thread the lock is never contended.
struct Worker {
    latency: Arc<Mutex<Histogram<u64>>>,
    errors: u64,
    first_error: Option<String>,
    /// Sessions minted by `initialize` load, ended after the run so they do not pile up.
    minted: Vec<http::HeaderValue>,
}

impl Worker {
    fn new(latency: Arc<Mutex<Histogram<u64>>>) -> Worker {
        Worker { latency, errors: 0, first_error: None, minted: Vec::new() }
    }

    fn note<T>(&mut self, result: &anyhow::Result<T>, took: Duration) {
        match result {
            Ok(_) => {
                let ns = u64::try_from(took.as_nanos()).unwrap_or(MAX_NS).clamp(1, MAX_NS);
                let _ = self.latency.lock().unwrap_or_else(PoisonError::into_inner).record(ns);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn keep_session(&mut self, t: &Template, session: Option<http::HeaderValue>) {
        if t.era == Era::Handshake
            && let Some(s) = session
        {
            self.minted.push(s);
        }
    }

    async fn finish(&mut self, conn: &mut Connection) {
        for s in self.minted.drain(..) {
            let _ = conn.end_session(s).await;
        }
    }
}
