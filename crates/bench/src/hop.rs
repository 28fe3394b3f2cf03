//! What waking another thread costs on this machine: two threads pass one byte back and forth
//! over a Unix socket pair, on two different CPUs and then both on one. Every hop of a request
//! between the load generator, a gateway and an upstream wakes a process, on the other CPU when
//! that one is idle (at one host it always is), so this weighs on every latency the harness
//! measures; on a virtual machine a wake-up on another vCPU is an interrupt the hypervisor
//! delivers and can cost far more than on one CPU. The report gives it beside the machine's
//! other facts.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::Pid;
use serde::Serialize;

/// Round trips not timed, before the timed ones.
const WARM_UP: u32 = 200;

/// One placement's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PingPong {
    /// The CPUs the two threads were held to.
    pub cpus: [usize; 2],
    /// Wall time of one round trip (two wake-ups), µs.
    pub round_trip_us: f64,
    /// CPU time (user + system) each thread spent per round trip, µs: its send, its receive,
    /// and the wake-up of the other.
    pub cpu_us_per_thread: f64,
}

/// Both placements.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Wake {
    /// Timed round trips per placement.
    pub round_trips: u32,
    /// The threads on two CPUs: each message wakes a thread on the other CPU. Absent on a
    /// machine (or cpuset) with one CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub across_cpus: Option<PingPong>,
    /// Both threads on one CPU: each message is handed over when the sender blocks.
    pub one_cpu: PingPong,
}

/// Measures both placements with `round_trips` timed round trips each.
pub fn measure(round_trips: u32) -> io::Result<Wake> {
    let cpus = allowed_cpus()?;
    let first = *cpus.first().ok_or_else(|| io::Error::other("no CPU is allowed to this process"))?;
    let across_cpus = match cpus.get(1) {
        Some(&second) => Some(ping_pong([first, second], round_trips)?),
        None => None,
    };
    Ok(Wake { round_trips, across_cpus, one_cpu: ping_pong([first, first], round_trips)? })
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false)).collect())
}

/// Two threads, each held to its CPU, `round_trips` round trips after the warm-up.
fn ping_pong(cpus: [usize; 2], round_trips: u32) -> io::Result<PingPong> {
    if round_trips == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no round trips to time"));
    }
    let (mut ping, mut pong) = UnixStream::pair()?;
    let total = WARM_UP + round_trips;
    let echo =
        std::thread::Builder::new().name("bench-hop-echo".to_owned()).spawn(move || -> io::Result<Duration> {
            pin(cpus[1])?;
            let mut byte = [0u8; 1];
            let mut started = None;
            for i in 0..total {
                if i == WARM_UP {
                    started = Some(thread_cpu()?);
                }
                pong.read_exact(&mut byte)?;
                pong.write_all(&byte)?;
            }
            let started = started.ok_or_else(|| io::Error::other("the warm-up never ended"))?;
            Ok(thread_cpu()?.saturating_sub(started))
        })?;
    let timed = std::thread::Builder::new().name("bench-hop-ping".to_owned()).spawn(move || {
        pin(cpus[0])?;
        let mut byte = [0u8; 1];
        for _ in 0..WARM_UP {
            ping.write_all(&byte)?;
            ping.read_exact(&mut byte)?;
        }
        let (cpu, wall) = (thread_cpu()?, Instant::now());
        for _ in 0..round_trips {
            ping.write_all(&byte)?;
            ping.read_exact(&mut byte)?;
        }
        Ok::<_, io::Error>((wall.elapsed(), thread_cpu()?.saturating_sub(cpu)))
    })?;
    // Both are joined: when one fails, the other sees the socket close, and the first one's
    // error is the cause.
    let ((wall, ping_cpu), echo_cpu) = match (joined(timed), joined(echo)) {
        (Ok(timed), Ok(echo)) => (timed, echo),
        (Err(ping), Err(echo)) => return Err(if closed_by_the_other(&ping) { echo } else { ping }),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
    };
    let per = f64::from(round_trips);
    Ok(PingPong {
        cpus,
        round_trip_us: wall.as_secs_f64() * 1e6 / per,
        cpu_us_per_thread: (ping_cpu + echo_cpu).as_secs_f64() * 1e6 / 2.0 / per,
    })
}

/// A ping-pong thread's outcome.
fn joined<T>(thread: std::thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    thread.join().map_err(|_| io::Error::other("a ping-pong thread panicked"))?
}

/// An error that only says the other thread went away.
fn closed_by_the_other(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset)
}

/// Holds the calling thread to `cpu`.
fn pin(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The calling thread's CPU time so far (user + system).
fn thread_cpu() -> io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).map_err(io::Error::from)?;
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_placements_are_measured_on_the_cpus_allowed() {
        let wake = measure(300).expect("ping-pong");
        assert_eq!(wake.round_trips, 300);
        let allowed = allowed_cpus().expect("affinity");
        let one = wake.one_cpu;
        assert_eq!(one.cpus[0], one.cpus[1]);
        assert!(allowed.contains(&one.cpus[0]));
        assert!(one.round_trip_us > 0.0 && one.round_trip_us.is_finite());
        // A thread cannot spend more CPU than the time that passed.
        assert!(one.cpu_us_per_thread >= 0.0 && one.cpu_us_per_thread <= one.round_trip_us * 1.1, "{one:?}");
        let several = allowed.len() > 1;
        match wake.across_cpus {
            Some(across) => {
                assert!(several);
                assert_ne!(across.cpus[0], across.cpus[1]);
                assert!(across.cpus.iter().all(|c| allowed.contains(c)));
                assert!(across.round_trip_us > 0.0 && across.round_trip_us.is_finite());
                assert!(across.cpu_us_per_thread <= across.round_trip_us * 1.1, "{across:?}");
            }
            None => assert!(!several),
        }
    }

    #[test]
    fn no_round_trips_is_an_error_not_a_division_by_zero() {
        let e = ping_pong([0, 0], 0).expect_err("nothing to time");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
