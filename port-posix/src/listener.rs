//! Listener addresses as users write them: `HOST:PORT`, `mqtt://HOST:PORT`, and the schemes of
//! the TLS and WebSocket listeners.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The protocol stack of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP (`mqtt://`, or no scheme).
    Tcp,
    /// MQTT over TLS (`mqtts://`).
    Tls,
    /// MQTT over WebSocket (`ws://`).
    WebSocket,
    /// MQTT over WebSocket over TLS (`wss://`).
    WebSocketTls,
}

/// A listener to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The protocol stack.
    pub transport: Transport,
    /// Where to listen.
    pub address: SocketAddr,
    /// The HTTP path of a WebSocket listener (`/mqtt` by default).
    pub path: Option<String>,
    /// The certificate files and client-certificate settings of a TLS listener (`mqtts://`,
    /// `wss://`); set by the configuration, not by the URL.
    pub tls: Option<TlsFiles>,
    /// The most connections this listener holds at once, over all workers (`None`: only the
    /// global limit). One more is closed at accept.
    pub max_connections: Option<u32>,
}

/// The files and client-certificate settings of a TLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; not encrypted).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Without it, no
    /// client certificate is asked for.
    pub cafile: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `cafile`).
    pub require_certificate: bool,
    /// The client certificate's subject CN is the client's user name (needs `cafile`; a client
    /// without a certificate is then refused at CONNECT with "not authorized").
    pub use_identity_as_username: bool,
}

/// Why a listener URL was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpecError(pub String);

impl fmt::Display for ListenerSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ListenerSpecError {}

/// The address `host_port` names: an IP address and port (`0.0.0.0:1883`, `[::]:1883`),
/// `localhost:PORT` (127.0.0.1), or, in builds with the cargo feature `dns`, a host name the C
/// library resolves (its first address). Builds without `dns` leave the resolver out (about
/// 12 KB of musl on x86_64) and refuse other host names, saying so.
fn listen_address(host_port: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = host_port.parse::<SocketAddr>() {
        return Ok(address);
    }
    let not_host_port = || format!("`{host_port}` is not HOST:PORT");
    let (host, port) = host_port.rsplit_once(':').ok_or_else(not_host_port)?;
    let port: u16 = port.parse().map_err(|_| not_host_port())?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    resolve(host_port)
}

#[cfg(feature = "dns")]
fn resolve(host_port: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .map_err(|e| format!("`{host_port}` does not resolve ({e})"))?
        .next()
        .ok_or_else(|| format!("`{host_port}` resolves to no address"))
}

#[cfg(not(feature = "dns"))]
fn resolve(host_port: &str) -> Result<SocketAddr, String> {
    Err(format!(
        "`{host_port}` names a host, and this build resolves no host names (cargo feature \
         `dns`); give an IP address, such as 0.0.0.0:1883 or [::]:1883, or localhost"
    ))
}

impl ListenerSpec {
    /// Parses `HOST:PORT`, `mqtt://HOST:PORT`, `mqtts://HOST:PORT`, `ws://HOST:PORT/PATH` or
    /// `wss://HOST:PORT/PATH`. IPv6 hosts go in brackets: `[::1]:1883`.
    pub fn parse(url: &str) -> Result<ListenerSpec, ListenerSpecError> {
        let (transport, rest) = match url.split_once("://") {
            None => (Transport::Tcp, url),
            Some(("mqtt" | "tcp", rest)) => (Transport::Tcp, rest),
            Some(("mqtts" | "ssl" | "tls", rest)) => (Transport::Tls, rest),
            Some(("ws", rest)) => (Transport::WebSocket, rest),
            Some(("wss", rest)) => (Transport::WebSocketTls, rest),
            Some((scheme, _)) => {
                return Err(ListenerSpecError(format!(
                    "listener `{url}`: unknown scheme `{scheme}` (use mqtt://, mqtts://, ws:// or wss://)"
                )));
            }
        };
        let (host_port, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(rest[slash..].to_string())),
            None => (rest, None),
        };
        let is_websocket = matches!(transport, Transport::WebSocket | Transport::WebSocketTls);
        if path.is_some() && !is_websocket {
            return Err(ListenerSpecError(format!(
                "listener `{url}`: only ws:// and wss:// listeners have a path"
            )));
        }
        let address = listen_address(host_port)
            .map_err(|why| ListenerSpecError(format!("listener `{url}`: {why}")))?;
        let path = if is_websocket {
            Some(path.unwrap_or_else(|| "/mqtt".to_string()))
        } else {
            None
        };
        Ok(ListenerSpec {
            transport,
            address,
            path,
            tls: None,
            max_connections: None,
        })
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "mqtt",
            Transport::Tls => "mqtts",
            Transport::WebSocket => "ws",
            Transport::WebSocketTls => "wss",
        };
        write!(
            f,
            "{scheme}://{}{}",
            self.address,
            self.path.as_deref().unwrap_or("")
        )
    }
}

/// Opens a listening TCP socket on `address`, like `TcpListener::bind` but with IPV6_V6ONLY set
/// on IPv6 sockets before bind: `[::]:P` then serves IPv6 only, so `0.0.0.0:P` can listen next
/// to it (Linux's default `net.ipv6.bindv6only = 0` would make the IPv6 socket take both).
pub fn bind_tcp(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // As std does: a restarted broker can bind while old connections linger in TIME_WAIT.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if address.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &address)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let plain = ListenerSpec::parse("127.0.0.1:1883").unwrap();
        assert_eq!(
            (plain.transport, plain.address.port(), plain.path),
            (Transport::Tcp, 1883, None)
        );
        assert_eq!(
            ListenerSpec::parse("mqtt://[::1]:1884").unwrap().address,
            "[::1]:1884".parse().unwrap()
        );
        let ws = ListenerSpec::parse("ws://127.0.0.1:8083").unwrap();
        assert_eq!(ws.path.as_deref(), Some("/mqtt"));
        assert_eq!(
            ListenerSpec::parse("wss://127.0.0.1:8084/x")
                .unwrap()
                .path
                .as_deref(),
            Some("/x")
        );
        assert_eq!(ws.to_string(), "ws://127.0.0.1:8083/mqtt");
        assert_eq!(
            ListenerSpec::parse("mqtt://localhost:1885")
                .unwrap()
                .address,
            "127.0.0.1:1885".parse().unwrap(),
            "localhost needs no resolver"
        );
        assert_eq!(
            ListenerSpec::parse("[::]:1883").unwrap().address,
            "[::]:1883".parse().unwrap()
        );
    }

    #[test]
    fn host_names_need_the_resolver() {
        // `.invalid` never resolves (RFC 6761), so no name server is asked to succeed.
        let error = ListenerSpec::parse("mqtt://broker.invalid:1883")
            .unwrap_err()
            .0;
        if cfg!(feature = "dns") {
            assert!(error.contains("does not resolve"), "{error}");
        } else {
            assert!(error.contains("cargo feature `dns`"), "{error}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_listen_on() {
        assert!(
            ListenerSpec::parse("http://127.0.0.1:1")
                .unwrap_err()
                .0
                .contains("unknown scheme")
        );
        assert!(ListenerSpec::parse("127.0.0.1").is_err());
        assert!(ListenerSpec::parse("127.0.0.1:port").is_err());
        assert!(ListenerSpec::parse("127.0.0.1:65536").is_err());
        assert!(ListenerSpec::parse("mqtt://127.0.0.1:1883/path").is_err());
    }
}
