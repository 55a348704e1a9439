//! systemd's service notification protocol (`sd_notify(3)`), in a few
//! lines over a Unix datagram socket (`protocol-spec/daemon.md`, "Service
//! manager"): `READY=1` once the control socket serves, `WATCHDOG=1` from
//! the run loop, `STOPPING=1` on a graceful stop. Without `$NOTIFY_SOCKET`
//! (not started by systemd with `Type=notify`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The environment variable carrying the watchdog timeout (microseconds).
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog is for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Keep-alives are sent this many times per watchdog timeout (systemd
/// recommends at least twice).
pub const WATCHDOG_PINGS_PER_TIMEOUT: u32 = 2;

/// Sends `state` (e.g. `"READY=1"`) to the service manager. Returns whether
/// a message was sent; failures are logged, never fatal.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): the name without the '@'.
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
            }
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, socket = ?path, "could not notify the service manager");
            false
        }
    }
}

/// How often to send `WATCHDOG=1`: half the manager's timeout, when the
/// watchdog is enabled for this process (`$WATCHDOG_USEC`, and
/// `$WATCHDOG_PID` unset or this process).
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os(NOTIFY_SOCKET_ENV)?;
    if let Some(pid) = std::env::var_os(WATCHDOG_PID_ENV)
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / WATCHDOG_PINGS_PER_TIMEOUT)
}
