//! What lies between a socket and the engine on TLS and WebSocket listeners.
//!
//! A [`Wrapping`] belongs to a listener: its transport, its TLS configuration (re-read from the
//! files by [`Wrapping::reload`]; connections already open keep the one they started with), and
//! its WebSocket path. For each connection it makes [`Layers`]: a [`TlsSession`], a
//! [`WebSocket`], or the WebSocket inside the TLS session (`wss://`). Plain TCP has no layers
//! and keeps the server's direct path.
//!
//! [`Layers`] is sans-IO like the engine: the server hands it what the socket gave
//! ([`Layers::receive`], which yields the MQTT bytes for `Broker::handle_input`), hands it what
//! the engine queued ([`Layers::send`], one WebSocket frame per batch), and writes what
//! [`Layers::take_output`] gives (TLS records, HTTP answers, frames, pongs, alerts). A failed
//! handshake is an error naming what went wrong, with the answer for the client (TLS alert,
//! HTTP status, close frame) already in the output: the server writes it, logs one line and
//! closes that connection only.
//!
//! With `use_identity_as_username`, [`Layers::identity`] gives the client certificate's Common
//! Name once the TLS handshake is over (before any MQTT byte), and the server records it in
//! [`Identities`]; [`IdentityAuthenticator`] then lets such a client in under that name (the
//! password file and HTTP callout are not asked, as in Mosquitto), and refuses one without a
//! certificate with 0x87 Not authorized.

use std::cell::RefCell;
use std::collections::HashMap;
#[cfg(feature = "tls")]
use std::sync::{Arc, Mutex};

use femtomq_core::broker::{AuthDecision, Authenticator, ConnId, ConnectInfo};
use femtomq_core::codec::ReasonCode;

use crate::listener::{ListenerSpec, Transport};
#[cfg(feature = "tls")]
use crate::tls::{self, TlsFiles, TlsSession};
#[cfg(feature = "ws")]
use crate::ws::{WebSocket, WsConfig, close_code};

/// How a listener wraps its connections. Shared by the workers that accept on it.
#[derive(Debug)]
pub(crate) struct Wrapping {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    description: String,
    #[cfg(feature = "tls")]
    tls: Option<TlsListener>,
    #[cfg(feature = "ws")]
    ws_path: Option<String>,
}

#[cfg(feature = "tls")]
#[derive(Debug)]
struct TlsListener {
    files: TlsFiles,
    alpn: &'static [u8],
    config: Mutex<Arc<rustls::ServerConfig>>,
}

impl Wrapping {
    /// The wrapping of `spec`'s connections; `None` for plain TCP. Fails when a TLS file cannot
    /// be used, or when the listener needs a feature this build lacks.
    pub(crate) fn new(spec: &ListenerSpec) -> Result<Option<Wrapping>, String> {
        let (tls, ws) = match spec.transport {
            Transport::Tcp => {
                if spec.tls.is_some() {
                    return Err(format!(
                        "listener {spec}: certificates given for a plain mqtt:// listener (use mqtts:// or wss://)"
                    ));
                }
                return Ok(None);
            }
            Transport::Tls => (true, false),
            Transport::WebSocket => (false, true),
            Transport::WebSocketTls => (true, true),
        };
        if tls && !cfg!(feature = "tls") {
            return Err(format!(
                "listener {spec}: this femtomq was built without the `tls` feature"
            ));
        }
        if ws && !cfg!(feature = "ws") {
            return Err(format!(
                "listener {spec}: this femtomq was built without the `ws` feature"
            ));
        }
        if !tls && spec.tls.is_some() {
            return Err(format!(
                "listener {spec}: certificates given for a listener without TLS (use wss://)"
            ));
        }
        #[cfg(feature = "tls")]
        let tls = if tls {
            let Some(files) = spec.tls.clone() else {
                return Err(format!(
                    "listener {spec}: a TLS listener needs a certificate and key (cert and key, or --cert and --key)"
                ));
            };
            let alpn = if ws { tls::ALPN_HTTP1 } else { tls::ALPN_MQTT };
            let config = tls::load(&files, &[alpn]).map_err(|e| format!("listener {spec}: {e}"))?;
            Some(TlsListener {
                files,
                alpn,
                config: Mutex::new(config),
            })
        } else {
            None
        };
        Ok(Some(Wrapping {
            description: spec.to_string(),
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "ws")]
            ws_path: ws.then(|| spec.path.clone().unwrap_or_else(|| "/mqtt".into())),
        }))
    }

    /// Re-reads the certificate and key files (and CA file): new connections use them, open
    /// ones keep theirs. On error the previous configuration stays.
    pub(crate) fn reload(&self) -> Result<(), String> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let config = tls::load(&tls.files, &[tls.alpn])
                .map_err(|e| format!("listener {}: {e}", self.description))?;
            if let Ok(mut current) = tls.config.lock() {
                *current = config;
            }
        }
        Ok(())
    }

    /// Whether this listener's connections may get a certificate identity.
    pub(crate) fn uses_identity(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.files.use_identity_as_username;
        }
        false
    }

    /// The layers of a new connection; `max_frame_size` bounds WebSocket frames.
    pub(crate) fn layers(&self, max_frame_size: u64) -> Result<Layers, String> {
        let _ = max_frame_size;
        Ok(Layers {
            #[cfg(feature = "tls")]
            tls: match &self.tls {
                Some(tls) => {
                    let config = match tls.config.lock() {
                        Ok(config) => config.clone(),
                        Err(poisoned) => poisoned.into_inner().clone(),
                    };
                    Some(TlsSession::new(config).map_err(|e| e.to_string())?)
                }
                None => None,
            },
            #[cfg(feature = "ws")]
            ws: self.ws_path.as_ref().map(|path| {
                WebSocket::new(WsConfig {
                    path: path.clone(),
                    max_frame_size,
                })
            }),
            #[cfg(all(feature = "tls", feature = "ws"))]
            between: Vec::new(),
            out: Vec::new(),
            wire: Vec::new(),
            failed: false,
            announced: false,
            identity_taken: !self.uses_identity(),
        })
    }
}

/// The protocol layers of one connection (see the module documentation).
#[derive(Debug)]
pub(crate) struct Layers {
    #[cfg(feature = "tls")]
    tls: Option<TlsSession>,
    #[cfg(feature = "ws")]
    ws: Option<WebSocket>,
    /// TLS plaintext on its way to the WebSocket layer, or WebSocket frames on their way into
    /// TLS.
    #[cfg(all(feature = "tls", feature = "ws"))]
    between: Vec<u8>,
    /// Bytes for the socket from a WebSocket layer without TLS.
    out: Vec<u8>,
    /// Bytes gathered for the socket and not written yet ([`Layers::gather_wire`]).
    wire: Vec<u8>,
    failed: bool,
    /// [`Layers::just_established`] said so.
    announced: bool,
    /// The certificate identity was handed out (or is not wanted).
    identity_taken: bool,
}

/// A buffer grown past this is released once empty.
const KEEP_BUFFER: usize = 16 * 1024;

fn release_if_large(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > KEEP_BUFFER {
        *buffer = Vec::new();
    }
}

impl Layers {
    /// Handles bytes from the socket; appends the MQTT bytes they carry to `mqtt`. After an
    /// error the answer for the client is in the output, and the connection must close.
    pub(crate) fn receive(&mut self, raw: &[u8], mqtt: &mut Vec<u8>) -> Result<(), String> {
        let result = self.receive_inner(raw, mqtt);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn receive_inner(&mut self, raw: &[u8], mqtt: &mut Vec<u8>) -> Result<(), String> {
        #[cfg(all(feature = "tls", feature = "ws"))]
        if let (Some(tls), Some(ws)) = (&mut self.tls, &mut self.ws) {
            let decrypted = tls.receive(raw, &mut self.between);
            // What came before a TLS error still counts (a close frame, say).
            let result = ws.receive(&self.between, mqtt);
            self.between.clear();
            release_if_large(&mut self.between);
            decrypted.map_err(|e| e.to_string())?;
            return result.map_err(|e| e.to_string());
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.receive(raw, mqtt).map_err(|e| e.to_string());
        }
        #[cfg(feature = "ws")]
        if let Some(ws) = &mut self.ws {
            return ws.receive(raw, mqtt).map_err(|e| e.to_string());
        }
        mqtt.extend_from_slice(raw);
        Ok(())
    }

    /// Queues what the engine sends (one WebSocket frame per call).
    pub(crate) fn send(&mut self, mqtt: &[u8]) {
        #[cfg(feature = "ws")]
        if let Some(ws) = &mut self.ws {
            ws.send(mqtt);
            self.pass_ws_output();
            return;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.send(mqtt);
            return;
        }
        self.out.extend_from_slice(mqtt);
    }

    /// Moves what the WebSocket layer has for the client into TLS, or to the socket's output.
    fn pass_ws_output(&mut self) {
        #[cfg(feature = "ws")]
        if let Some(ws) = &mut self.ws {
            if !ws.wants_write() {
                return;
            }
            #[cfg(feature = "tls")]
            if let Some(tls) = &mut self.tls {
                ws.take_output(&mut self.between);
                tls.send(&self.between);
                self.between.clear();
                release_if_large(&mut self.between);
                return;
            }
            ws.take_output(&mut self.out);
        }
    }

    /// Gathers what the layers have for the socket into [`Layers::wire`]; true when there is
    /// something to write.
    pub(crate) fn gather_wire(&mut self) -> bool {
        let mut wire = std::mem::take(&mut self.wire);
        self.take_output(&mut wire);
        self.wire = wire;
        !self.wire.is_empty()
    }

    /// The bytes gathered for the socket, not written yet.
    pub(crate) fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The socket took the first `count` bytes of [`Layers::wire`].
    pub(crate) fn wire_written(&mut self, count: usize) {
        let count = count.min(self.wire.len());
        self.wire.drain(..count);
        release_if_large(&mut self.wire);
    }

    /// Appends the bytes waiting for the socket to `wire`.
    pub(crate) fn take_output(&mut self, wire: &mut Vec<u8>) {
        self.pass_ws_output();
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.take_output(wire);
        }
        if !self.out.is_empty() {
            if wire.is_empty() {
                std::mem::swap(wire, &mut self.out);
            } else {
                wire.append(&mut self.out);
            }
            release_if_large(&mut self.out);
        }
    }

    /// Starts closing (the engine closes the connection, or the server shuts down): a WebSocket
    /// close frame, then TLS close_notify.
    pub(crate) fn close(&mut self, shutdown: bool) {
        let _ = shutdown;
        #[cfg(feature = "ws")]
        if let Some(ws) = &mut self.ws {
            ws.close(if shutdown {
                close_code::GOING_AWAY
            } else {
                close_code::NORMAL
            });
            // The close frame goes before close_notify.
            self.pass_ws_output();
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            if !tls.is_handshaking() {
                tls.close();
            }
        }
    }

    /// Whether the connection is over once the output is written: a failed handshake or
    /// protocol error, a WebSocket close handshake, or TLS close_notify from the client.
    pub(crate) fn finished(&self) -> bool {
        if self.failed {
            return true;
        }
        #[cfg(feature = "ws")]
        if self.ws.as_ref().is_some_and(WebSocket::is_closed) {
            return true;
        }
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(TlsSession::peer_closed) {
            return true;
        }
        false
    }

    /// Whether a handshake failed or the protocol was broken (the answer is in the output).
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// Whether every handshake is over (MQTT bytes may flow).
    pub(crate) fn established(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(TlsSession::is_handshaking) {
            return false;
        }
        #[cfg(feature = "ws")]
        if self.ws.as_ref().is_some_and(|ws| !ws.is_open()) {
            return false;
        }
        true
    }

    /// For a `use_identity_as_username` listener, once, when the TLS handshake is over: the
    /// client certificate's Common Name (`Some(None)`: no certificate, or no CN in it).
    pub(crate) fn identity(&mut self) -> Option<Option<Box<str>>> {
        if self.identity_taken {
            return None;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            if tls.is_handshaking() {
                return None;
            }
            self.identity_taken = true;
            return Some(tls.peer_common_name().map(String::into_boxed_str));
        }
        None
    }

    /// Once, when every handshake is over: what was negotiated, for the log.
    pub(crate) fn just_established(&mut self) -> Option<String> {
        if self.announced || !self.established() {
            return None;
        }
        self.announced = true;
        Some(self.describe())
    }

    /// The negotiated TLS parameters and WebSocket subprotocol, for the log.
    pub(crate) fn describe(&self) -> String {
        #[cfg_attr(not(any(feature = "tls", feature = "ws")), allow(unused_mut))]
        let mut parts: Vec<String> = Vec::new();
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            parts.push(tls.describe());
        }
        #[cfg(feature = "ws")]
        if let Some(ws) = &self.ws {
            parts.push(format!(
                "WebSocket subprotocol {}",
                ws.protocol().unwrap_or("-")
            ));
        }
        parts.join(", ")
    }
}

/// Certificate identities of the connections of `use_identity_as_username` listeners.
#[derive(Debug, Default)]
pub(crate) struct Identities(RefCell<HashMap<ConnId, Option<Box<str>>>>);

impl Identities {
    /// Records `conn`'s certificate identity (`None`: it has none) before its CONNECT is read.
    pub(crate) fn set(&self, conn: ConnId, identity: Option<Box<str>>) {
        self.0.borrow_mut().insert(conn, identity);
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, conn: ConnId) {
        self.0.borrow_mut().remove(&conn);
    }

    fn get(&self, conn: ConnId) -> Option<Option<Box<str>>> {
        self.0.borrow().get(&conn).cloned()
    }
}

/// Lets clients of `use_identity_as_username` listeners in under their certificate's name and
/// asks `inner` about everyone else.
pub(crate) struct IdentityAuthenticator {
    /// The authenticator of everyone else.
    pub(crate) inner: Box<dyn Authenticator>,
    /// The identities recorded by the server.
    pub(crate) identities: std::rc::Rc<Identities>,
}

impl IdentityAuthenticator {
    /// An `Allow` from `inner` carries the certificate name.
    fn with_identity(&self, conn: ConnId, decision: AuthDecision) -> AuthDecision {
        match (self.identities.get(conn), decision) {
            (Some(Some(name)), AuthDecision::Allow { data, .. }) => AuthDecision::Allow {
                username: Some(name),
                data,
            },
            (Some(None), AuthDecision::Allow { .. }) => {
                AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED)
            }
            (_, decision) => decision,
        }
    }
}

impl Authenticator for IdentityAuthenticator {
    fn authenticate(&mut self, info: &ConnectInfo<'_>) -> AuthDecision {
        match self.identities.get(info.conn) {
            Some(Some(name)) => AuthDecision::Allow {
                username: Some(name),
                data: None,
            },
            Some(None) => AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED),
            None => self.inner.authenticate(info),
        }
    }

    fn start_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let decision = self.inner.start_enhanced(info, method, data);
        self.with_identity(info.conn, decision)
    }

    fn continue_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let decision = self.inner.continue_enhanced(info, method, data);
        self.with_identity(info.conn, decision)
    }
}
