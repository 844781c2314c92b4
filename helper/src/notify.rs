//! systemd notification (`sd_notify(3)` protocol) without a crate: one datagram per message
//! to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! `READY=1` is sent once the socket is bound, chowned and chmodded; `WATCHDOG=1` every half
//! watchdog interval (`$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` recommends) from a task
//! on the async runtime, so a wedged runtime stops petting and systemd restarts the helper.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `READY=1` to `notify_socket`.
pub fn ready(notify_socket: &OsStr) -> std::io::Result<()> {
    send(notify_socket, b"READY=1\n")
}

/// Sends `WATCHDOG=1` to `notify_socket`.
pub fn watchdog(notify_socket: &OsStr) -> std::io::Result<()> {
    send(notify_socket, b"WATCHDOG=1\n")
}

/// The watchdog interval systemd asks for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` must be a positive integer, and `WATCHDOG_PID`, when set, must name this
/// process (otherwise the variables were meant for a parent and are ignored).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pets the watchdog every half `interval` for as long as the runtime runs this future.
pub async fn pet_watchdog(notify_socket: std::ffi::OsString, interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = watchdog(&notify_socket) {
            tracing::warn!(error = %e, "cannot pet the systemd watchdog");
        }
    }
}

fn send(notify_socket: &OsStr, message: &[u8]) -> std::io::Result<()> {
    let bytes = notify_socket.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        Some(_) => SocketAddr::from_pathname(std::path::Path::new(notify_socket))?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is empty",
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(message, &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind notify socket");
        ready(path.as_os_str()).expect("notify sent");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("datagram received");
        assert_eq!(buf.get(..n), Some(&b"READY=1\n"[..]));
    }

    #[test]
    fn watchdog_interval_is_read_for_this_process_only() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }
}
