//! Stopping threads that sleep in the kernel. The packet threads read non-blocking descriptors and,
//! when nothing is queued, sleep in `poll(2)` on the descriptor *and* an eventfd; `StopSignal`
//! raises a flag and writes the eventfd so every sleeper wakes and sees it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct StopSignal {
    stopped: AtomicBool,
    eventfd: OwnedFd,
}

/// Why [`StopSignal::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The descriptor is ready for the requested direction.
    Ready,
    /// Stop was requested.
    Stopped,
    /// The timeout passed.
    Timeout,
}

impl StopSignal {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            stopped: AtomicBool::new(false),
            eventfd,
        })
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Raises the flag and wakes every thread sleeping in [`wait`](Self::wait). The eventfd is
    /// never read, so it stays readable and later waits return at once too.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let _ = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Sleeps until `fd` is ready for `events` (`libc::POLLIN` / `libc::POLLOUT`), stop is
    /// requested, or `timeout` passes (`None`: no timeout).
    pub fn wait(&self, fd: RawFd, events: i16, timeout: Option<Duration>) -> io::Result<Wake> {
        if self.is_stopped() {
            return Ok(Wake::Stopped);
        }
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: self.eventfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout_ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        loop {
            // SAFETY: `fds` is a live array of two pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if self.is_stopped() || fds[1].revents != 0 {
                return Ok(Wake::Stopped);
            }
            if n == 0 {
                return Ok(Wake::Timeout);
            }
            if fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0
                && fds[0].revents & events == 0
            {
                return Err(io::Error::other(format!(
                    "poll reported error condition {:#x} on fd {fd}",
                    fds[0].revents
                )));
            }
            return Ok(Wake::Ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn stop_wakes_a_sleeping_thread() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let stop = Arc::new(StopSignal::new().unwrap());
        let s2 = stop.clone();
        let fd = a.as_raw_fd();
        let t = std::thread::spawn(move || s2.wait(fd, libc::POLLIN, None).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        stop.stop();
        assert_eq!(t.join().unwrap(), Wake::Stopped);
        assert!(started.elapsed() < Duration::from_secs(2));
        // Later waits return at once.
        assert_eq!(stop.wait(fd, libc::POLLIN, None).unwrap(), Wake::Stopped);
    }

    #[test]
    fn readiness_and_timeout() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let stop = StopSignal::new().unwrap();
        assert_eq!(
            stop.wait(a.as_raw_fd(), libc::POLLIN, Some(Duration::from_millis(20)))
                .unwrap(),
            Wake::Timeout
        );
        b.send(b"x").unwrap();
        assert_eq!(
            stop.wait(a.as_raw_fd(), libc::POLLIN, None).unwrap(),
            Wake::Ready
        );
    }
}
