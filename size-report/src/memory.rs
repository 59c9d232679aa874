//! Resident memory of a running broker, read from `/proc`, idle and with 1,000 idle
//! connections.
//!
//! Only meaningful for programs that run natively: under qemu-user, `/proc/PID` describes qemu,
//! whose resident set includes the emulator and its translation cache.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a broker has to print its ready line or open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one connection has to get its CONNACK.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Time left to the broker after start, and after the last connection, before reading `/proc`.
const SETTLE: Duration = Duration::from_secs(1);

/// Memory figures of one process, in KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS` from `/proc/PID/status`.
    pub rss_kb: u64,
    /// `VmHWM` (peak RSS) from `/proc/PID/status`.
    pub hwm_kb: u64,
    /// `Pss` from `/proc/PID/smaps_rollup`: shared pages divided among their users.
    pub pss_kb: u64,
    /// `Pss_Anon`: heap, stacks and other private memory.
    pub pss_anon_kb: u64,
    /// `Pss_File`: pages of the binary and the shared libraries.
    pub pss_file_kb: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// What [`measure`] found.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// 1 s after the broker was ready, before any client connected.
    pub idle: Memory,
    /// 1 s after 1,000 idle clients connected (they stay connected while it is read).
    pub with_connections: Memory,
    /// Connections opened (each got its CONNACK).
    pub connections: u64,
    /// Growth of VmRSS, scaled to 1,000 connections, in KiB.
    pub rss_per_1000_connections_kb: u64,
}

/// Reads the memory figures of process `pid`.
pub fn read(pid: u32) -> Result<Memory, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map_err(|e| format!("/proc/{pid}/smaps_rollup: {e}"))?;
    Ok(Memory {
        rss_kb: field(&status, "VmRSS:")?,
        hwm_kb: field(&status, "VmHWM:")?,
        threads: field(&status, "Threads:")?,
        pss_kb: field(&rollup, "Pss:")?,
        pss_anon_kb: field(&rollup, "Pss_Anon:")?,
        pss_file_kb: field(&rollup, "Pss_File:")?,
    })
}

/// The number after `key` at the start of a line of a `/proc` file (`VmRSS:   512 kB`).
pub fn field(text: &str, key: &str) -> Result<u64, String> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| format!("no `{key}` in /proc output"))
}

/// A broker started for measurement; killed when dropped.
pub struct Broker {
    child: Child,
    /// Where it accepts MQTT connections.
    pub address: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts `femtomq start --listen 127.0.0.1:0` and waits for its ready line
    /// (`... listening on mqtt://127.0.0.1:PORT ...`).
    pub fn femtomq(binary: &Path) -> Result<Broker, String> {
        let mut child = Command::new(binary)
            .args(["start", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = send.send(line);
        });
        let mut broker = Broker {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = receive.recv_timeout(START_TIMEOUT).map_err(|_| {
            format!(
                "{} printed no ready line within {START_TIMEOUT:?}",
                binary.display()
            )
        })?;
        broker.address = ready_address(&line)
            .ok_or_else(|| format!("unexpected first line from femtomq: {line:?}"))?;
        Ok(broker)
    }

    /// Starts `mosquitto -p PORT` on a free loopback port and waits until it accepts
    /// connections.
    pub fn mosquitto(binary: &Path) -> Result<Broker, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(binary)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let broker = Broker {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&broker.address, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "mosquitto did not accept connections on {} within {START_TIMEOUT:?}",
                    broker.address
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The address in femtomq's ready line.
pub fn ready_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("mqtt://")? + "mqtt://".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// An MQTT 3.1.1 CONNECT with a clean session, no keep alive and client id `id`.
pub fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Opens one MQTT connection and waits for a successful CONNACK.
fn open_idle_connection(address: SocketAddr, id: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&address, CONNACK_TIMEOUT)
        .map_err(|e| format!("connect to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(CONNACK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&connect_packet(id))
        .map_err(|e| format!("{id}: sending CONNECT: {e}"))?;
    let mut connack = [0u8; 4];
    stream
        .read_exact(&mut connack)
        .map_err(|e| format!("{id}: no CONNACK: {e}"))?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(format!("{id}: CONNACK refused: {connack:02x?}"));
    }
    Ok(stream)
}

/// Raises this process's soft limit of open files to the hard limit (children inherit it),
/// and fails if that leaves fewer than `needed`.
pub fn raise_open_files(needed: u64) -> Result<(), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < needed) {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)
            .map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    }
    match limit.current {
        Some(current) if current < needed => Err(format!(
            "RLIMIT_NOFILE hard limit {current} is below the {needed} descriptors needed"
        )),
        _ => Ok(()),
    }
}

/// Measures `broker`: idle 1 s after start, then with `connections` idle clients
/// (1,000 in reports), scaling the growth of VmRSS to 1,000 connections.
pub fn measure(broker: &Broker, connections: u64) -> Result<MemoryReport, String> {
    std::thread::sleep(SETTLE);
    let idle = read(broker.pid())?;
    let mut streams = Vec::with_capacity(connections as usize);
    for index in 0..connections {
        streams.push(open_idle_connection(
            broker.address,
            &format!("size-report-{index:05}"),
        )?);
    }
    std::thread::sleep(SETTLE);
    let with_connections = read(broker.pid())?;
    drop(streams);
    let growth = with_connections.rss_kb.saturating_sub(idle.rss_kb);
    Ok(MemoryReport {
        idle,
        with_connections,
        connections,
        rss_per_1000_connections_kb: (growth * 1000).div_ceil(connections.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\tfemtomq\nVmHWM:\t     512 kB\nVmRSS:\t     508 kB\nThreads:\t2\n";
        assert_eq!(field(status, "VmRSS:"), Ok(508));
        assert_eq!(field(status, "VmHWM:"), Ok(512));
        assert_eq!(field(status, "Threads:"), Ok(2));
        assert!(field(status, "Pss:").is_err());
    }

    #[test]
    fn reads_its_own_memory() {
        let me = read(std::process::id()).unwrap();
        assert!(
            me.rss_kb > 0 && me.hwm_kb >= me.rss_kb && me.threads >= 1,
            "{me:?}"
        );
    }

    #[test]
    fn finds_the_address_in_the_ready_line() {
        let line = "femtomq 0.1.0 listening on mqtt://127.0.0.1:40123; anonymous access on\n";
        assert_eq!(
            ready_address(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(ready_address("error: no listener"), None);
    }

    #[test]
    fn encodes_connect() {
        let packet = connect_packet("ab");
        assert_eq!(
            packet,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'a', b'b'
            ]
        );
    }
}
