//! Which process holds a TCP connection, and whether a process is still running — read
//! from /proc (Linux), for tests where several server processes share one listener.

use std::net::{SocketAddr, SocketAddrV4};

/// The process among `pids` that holds the server side of the TCP connection between
/// `server` (the listener's address) and `client` (the client socket's local address).
pub fn connection_owner(server: SocketAddr, client: SocketAddr, pids: &[u32]) -> Option<u32> {
    let inode = tcp_inode(server, client)?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy() == wanted)
                })
            })
            .unwrap_or(false)
    })
}

/// The inode of the socket with local address `local` and peer `peer` (IPv4).
fn tcp_inode(local: SocketAddr, peer: SocketAddr) -> Option<u64> {
    let (SocketAddr::V4(local), SocketAddr::V4(peer)) = (local, peer) else {
        return None;
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (l, p) = (hex(local), hex(peer));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == l && f[2] == p)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// `/proc/net/tcp`'s form: the IPv4 address as a host-order u32 in hex, then the port.
fn hex(a: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    )
}

/// The process runs (not gone, not a zombie waiting to be reaped).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
