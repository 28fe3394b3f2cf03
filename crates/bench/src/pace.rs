//! Sleeping until an instant with microsecond precision, for the fixed-rate load.
//!
//! tokio's timer wheel ticks in milliseconds and wakes a sleep at the first tick at or after its
//! deadline, so every request due within one millisecond would be sent together at that tick: at
//! 20 000 requests a second, a burst of 20 every millisecond, which the server under test sees as
//! a momentary overload and whose queue lands in the tail latency of every target. A fixed rate
//! means one request every `1 / rate`; a `timerfd` (an `hrtimer`, not rounded and without the
//! timer slack of `epoll_wait`'s timeout) wakes the connection's task when its request is due.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// A deadline this close is not worth arming a timer for: it is waited for on the CPU.
const NOW: Duration = Duration::from_micros(5);

/// One connection's precise timer.
pub struct Pacer {
    timer: AsyncFd<Timer>,
}

/// The timer, as tokio's reactor needs it (`AsRawFd`).
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Pacer {
    /// A timer on the monotonic clock (the one `Instant` reads), registered with the current
    /// runtime's reactor.
    pub fn new() -> io::Result<Pacer> {
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        // Deprecated for types whose `as_raw_fd` could change or close underneath the reactor
        // (tokio #8587); its replacement is `unsafe`, which this workspace forbids. `Timer` owns
        // its descriptor (`TimerFd` holds an `OwnedFd`), never hands it out, and always answers the
        // same one until dropped with the `AsyncFd`: the condition the replacement asks for.
        #[allow(deprecated)]
        let timer = AsyncFd::new(Timer(fd))?;
        Ok(Pacer { timer })
    }

    /// Returns at `due` (a few microseconds after it, as the scheduler allows; never before it), or
    /// at once when it has passed.
    pub async fn until(&self, due: Instant) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if due <= now + NOW {
                // Too close for a timer: the last few microseconds spent waiting here, so no
                // request leaves before its time.
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                return Ok(());
            }
            let wait = TimeSpec::from_duration(due - now);
            self.timer.get_ref().0.set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())?;
            let mut ready = self.timer.readable().await?;
            // Reading takes the expiry; the one-shot timer is not readable again until re-armed.
            match ready.get_inner().0.wait() {
                Ok(()) => {
                    ready.clear_ready();
                    return Ok(());
                }
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_the_instant_and_not_before() {
        let pacer = Pacer::new().expect("timerfd");
        // Not a timing test of the machine: only that a wait ends after its deadline (never early,
        // which would send requests ahead of the schedule), near or far, and that a past one returns.
        for micros in [2, 50, 300, 1_500] {
            let due = Instant::now() + Duration::from_micros(micros);
            pacer.until(due).await.expect("wait");
            assert!(Instant::now() >= due, "woke before {micros} µs had passed");
        }
        let past = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        pacer.until(past).await.expect("a deadline that has passed returns");
    }
}
