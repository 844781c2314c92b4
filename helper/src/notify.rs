//! systemd readiness notification (`sd_notify(3)` protocol, `READY=1`) without a crate:
//! one datagram to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). Sent only once the socket is bound, chowned and chmodded.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `READY=1` to `notify_socket`.
pub fn ready(notify_socket: &OsStr) -> std::io::Result<()> {
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
    sock.send_to_addr(b"READY=1\n", &addr)?;
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
}
