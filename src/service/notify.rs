//! The systemd notify protocol (`sd_notify(3)`): datagrams of `KEY=VALUE` lines to the
//! socket named by `NOTIFY_SOCKET` — a path, or an abstract socket when it starts with
//! `@`. Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does
//! nothing, so the agent runs the same by hand.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// A connection to the service manager's notify socket.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog applies to
    /// this process only when `WATCHDOG_PID` is unset or names it).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(
            socket.as_deref().and_then(|s| s.to_str()),
            usec.as_deref(),
            pid.as_deref(),
        )
    }

    fn new(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>) -> Self {
        let target = socket.and_then(|name| match open(name) {
            Ok(target) => Some(target),
            Err(e) => {
                warn!(
                    "NOTIFY_SOCKET={name} cannot be used ({e}); systemd will not hear from roomcast"
                );
                None
            }
        });
        let for_us = watchdog_pid.is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        Self { target, watchdog }
    }

    /// A notifier that says nothing (tests, and `roomcast run` outside systemd).
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    /// recommends. `None` when systemd does not watch this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// The full watchdog timeout (`WATCHDOG_USEC`).
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (one or more `KEY=VALUE` lines). Never blocks: a full socket queue
    /// drops the message, which the next one supersedes.
    pub fn notify(&self, state: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        match socket.send_to_addr(state.as_bytes(), address) {
            Ok(_) => debug!("sd_notify: {}", state.replace('\n', " ")),
            Err(e) => debug!("sd_notify failed ({e}): {}", state.replace('\n', " ")),
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// A reload begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
            monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping: leaving every room");
    }
}

fn open(name: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let address = if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())?
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@…)",
        ));
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, address))
}

/// STATUS is one line: newlines would start new KEY=VALUE assignments.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds, for RELOADING=1 (systemd 253+ wants it; older
/// versions ignore it).
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).expect("a datagram");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("roomcast-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str(), Some("4000000"), None);
        assert!(notifier.enabled());
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(2)));
        notifier.ready("2 rooms\n(bigclass, group-3)");
        assert_eq!(
            receive(&listener),
            "READY=1\nSTATUS=2 rooms (bigclass, group-3)"
        );
        notifier.watchdog();
        assert_eq!(receive(&listener), "WATCHDOG=1");
        notifier.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1\n"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("roomcast-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier::new(Some(&format!("@{name}")), None, None);
        notifier.status("no rooms");
        assert_eq!(receive(&listener), "STATUS=no rooms");
        assert_eq!(notifier.watchdog_interval(), None);
    }

    #[test]
    fn without_a_socket_nothing_happens_and_the_watchdog_follows_its_pid() {
        let notifier = Notifier::new(None, Some("1000000"), Some("1"));
        assert!(!notifier.enabled());
        notifier.ready("x"); // no panic, no effect
        assert_eq!(
            notifier.watchdog_interval(),
            None,
            "WATCHDOG_PID names another process"
        );
        let ours = std::process::id().to_string();
        let notifier = Notifier::new(None, Some("1000000"), Some(&ours));
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(500))
        );
        let notifier = Notifier::new(Some("relative/path"), Some("0"), None);
        assert!(!notifier.enabled());
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
