//! MQTT over WebSocket: the server side of RFC 6455, sans-IO.
//!
//! [`WebSocket`] takes the bytes a client sent ([`WebSocket::receive`]) and gives back the MQTT
//! bytes they carry, as one stream: the engine frames MQTT packets itself, so a packet split
//! across WebSocket frames, or several packets in one frame, need nothing special here. What
//! the broker sends goes out as one binary frame per write batch ([`WebSocket::send`]). The
//! bytes for the socket (handshake answer, frames, pongs, close frames) accumulate in an output
//! buffer the caller drains with [`WebSocket::take_output`].
//!
//! The opening handshake (RFC 6455 §4.2) is an HTTP/1.1 `GET` of the configured path with
//! `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a
//! `Sec-WebSocket-Key`, parsed with `httparse`. MQTT's subprotocols are `mqtt` (MQTT 5.0 §6,
//! 3.1.1) and `mqttv3.1` (old clients); a client that offers neither is refused, one that offers
//! none at all is accepted. Refusals answer with an HTTP status and close:
//! - 426 Upgrade Required: a plain HTTP request (no `Upgrade` header), or a WebSocket version
//!   other than 13;
//! - 404 Not Found: another path;
//! - 431 Request Header Fields Too Large: headers over [`MAX_HEADER_BYTES`] or
//!   [`MAX_HEADERS`] lines;
//! - 405 Method Not Allowed: not `GET`;
//! - 400 Bad Request: anything else malformed.
//!
//! Frames (RFC 6455 §5): client frames must be masked (else close 1002), MQTT travels in binary
//! frames (a text frame: close 1003), messages may be fragmented with continuation frames and
//! control frames interleaved, pings are answered with pongs, a close frame is answered with a
//! close frame, and a frame larger than the configured bound is refused with close 1009.
//! Payloads are unmasked as they arrive and never held whole: a connection holds at most a
//! 14-byte frame header and a 125-byte control payload.

use std::fmt;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Largest opening handshake accepted, in bytes (request line and headers).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most header lines accepted in the opening handshake.
pub const MAX_HEADERS: usize = 32;
/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close status codes (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Data of a type the endpoint cannot accept (text frames for MQTT).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Data inconsistent with its type (a close reason that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// How a WebSocket listener behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// The HTTP path clients must ask for (`/mqtt` by default); the query string is ignored.
    pub path: String,
    /// Largest frame payload accepted; a larger one is refused with close 1009.
    pub max_frame_size: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: "/mqtt".to_string(),
            max_frame_size: 1024 * 1024,
        }
    }
}

/// Why a WebSocket connection ended badly. Its answer (an HTTP error response or a close frame)
/// is already in the output buffer: write it, then close the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// The opening handshake was refused with this HTTP status.
    Handshake {
        /// The HTTP status sent.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// A frame broke the protocol; the connection was closed with this close code.
    Protocol {
        /// The close code sent.
        code: u16,
        /// What was wrong.
        reason: &'static str,
    },
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Handshake { status, reason } => write!(
                f,
                "WebSocket handshake refused with HTTP {status} {}: {reason}",
                status_text(*status)
            ),
            WsError::Protocol { code, reason } => {
                write!(f, "WebSocket closed with code {code}: {reason}")
            }
        }
    }
}

impl std::error::Error for WsError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// Exchanging frames.
    Open,
    /// A close frame was sent (answer, refusal or our own close): nothing more is read or sent.
    Closed,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    remaining: u64,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    offset: usize,
}

/// One client's WebSocket connection (server side).
#[derive(Debug)]
pub struct WebSocket {
    config: WsConfig,
    state: State,
    /// The handshake read so far (released once it is complete).
    request: Vec<u8>,
    /// A frame header read so far (2 to 14 bytes).
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    /// A fragmented binary message is in progress (continuation frames expected).
    fragmented: bool,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    /// The subprotocol agreed on.
    protocol: Option<&'static str>,
    /// The peer sent a close frame (we answered it).
    peer_closed: bool,
    out: Vec<u8>,
}

impl WebSocket {
    /// A connection waiting for its opening handshake.
    pub fn new(config: WsConfig) -> WebSocket {
        WebSocket {
            config,
            state: State::Handshake,
            request: Vec::new(),
            header: [0; 14],
            header_len: 0,
            frame: None,
            fragmented: false,
            control: Vec::new(),
            protocol: None,
            peer_closed: false,
            out: Vec::new(),
        }
    }

    /// Whether the opening handshake is complete and the connection not closed.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over (a close frame or refusal was queued): write the output,
    /// then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the client ended the connection with a close frame.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The subprotocol agreed on in the handshake (`mqtt` or `mqttv3.1`), if the client offered one.
    pub fn protocol(&self) -> Option<&'static str> {
        self.protocol
    }

    /// Whether bytes wait for the socket.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Appends the bytes waiting for the socket to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    /// Handles `input` from the client: appends the MQTT bytes it carries to `mqtt`, and queues
    /// what must be answered. After an error the answer is queued and the connection is closed.
    pub fn receive(&mut self, mut input: &[u8], mqtt: &mut Vec<u8>) -> Result<(), WsError> {
        if self.state == State::Handshake {
            let used = self.read_handshake(input)?;
            input = &input[used..];
        }
        while !input.is_empty() && self.state == State::Open {
            match self.frame {
                Some(ref mut frame) => {
                    let count = usize::try_from(frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (chunk, rest) = input.split_at(count);
                    input = rest;
                    let target = if is_control(frame.opcode) {
                        &mut self.control
                    } else {
                        &mut *mqtt
                    };
                    let start = target.len();
                    target.extend_from_slice(chunk);
                    for byte in &mut target[start..] {
                        *byte ^= frame.mask[frame.offset];
                        frame.offset = (frame.offset + 1) & 3;
                    }
                    frame.remaining -= count as u64;
                    if frame.remaining == 0 {
                        let opcode = frame.opcode;
                        self.frame = None;
                        self.frame_done(opcode)?;
                    }
                }
                None => {
                    let before = self.header_len;
                    let count = (self.header.len() - before).min(input.len());
                    self.header[before..before + count].copy_from_slice(&input[..count]);
                    self.header_len += count;
                    match self.parse_header()? {
                        Some(length) => {
                            input = &input[length - before..];
                            self.header_len = 0;
                            if self.frame.is_some_and(|f| f.remaining == 0) {
                                let opcode = self.frame.take().map_or(0, |f| f.opcode);
                                self.frame_done(opcode)?;
                            }
                        }
                        None => input = &input[count..],
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues `payload` (what the broker sends) as one binary frame. Ignored unless open.
    pub fn send(&mut self, payload: &[u8]) {
        if self.state != State::Open {
            return;
        }
        self.frame_header(OP_BINARY, payload.len());
        self.out.extend_from_slice(payload);
    }

    /// Starts the closing handshake with `code` (1000 when the broker closes the connection,
    /// 1001 at shutdown). Ignored unless open.
    pub fn close(&mut self, code: u16) {
        if self.state == State::Open {
            self.send_close(code, b"");
        }
    }

    fn frame_header(&mut self, opcode: u8, length: usize) {
        self.out.push(0x80 | opcode);
        match length {
            0..=125 => self.out.push(length as u8),
            126..=0xFFFF => {
                self.out.push(126);
                self.out.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                self.out.push(127);
                self.out.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
    }

    fn send_close(&mut self, code: u16, reason: &[u8]) {
        let reason = &reason[..reason.len().min(123)];
        self.frame_header(OP_CLOSE, 2 + reason.len());
        self.out.extend_from_slice(&code.to_be_bytes());
        self.out.extend_from_slice(reason);
        self.state = State::Closed;
    }

    /// Closes with `code` after a protocol violation.
    fn fail(&mut self, code: u16, reason: &'static str) -> WsError {
        self.frame = None;
        self.send_close(code, reason.as_bytes());
        WsError::Protocol { code, reason }
    }

    /// Parses the frame header in `self.header[..header_len]`: `Some(length of the header)`
    /// once complete (and `self.frame` set), `None` while bytes are missing.
    fn parse_header(&mut self) -> Result<Option<usize>, WsError> {
        let header = &self.header[..self.header_len];
        if header.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (header[0], header[1]);
        let length_bytes = match second & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let size = 2 + length_bytes + 4;
        if first & 0x70 != 0 {
            return Err(self.fail(
                close_code::PROTOCOL_ERROR,
                "reserved bits set without an extension",
            ));
        }
        if second & 0x80 == 0 {
            return Err(self.fail(close_code::PROTOCOL_ERROR, "client frame not masked"));
        }
        if header.len() < size {
            return Ok(None);
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let length = match length_bytes {
            2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&header[2..10]);
                u64::from_be_bytes(bytes)
            }
            _ => u64::from(second & 0x7F),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&header[size - 4..size]);
        match opcode {
            OP_TEXT => {
                return Err(self.fail(
                    close_code::UNSUPPORTED_DATA,
                    "text frame: MQTT travels in binary frames",
                ));
            }
            OP_BINARY if self.fragmented => {
                return Err(self.fail(
                    close_code::PROTOCOL_ERROR,
                    "new message before the fragmented one ended",
                ));
            }
            OP_CONTINUATION if !self.fragmented => {
                return Err(self.fail(
                    close_code::PROTOCOL_ERROR,
                    "continuation frame without a message to continue",
                ));
            }
            OP_BINARY | OP_CONTINUATION => {
                if length > self.config.max_frame_size {
                    return Err(self.fail(close_code::TOO_BIG, "frame larger than allowed"));
                }
                self.fragmented = !fin;
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(self.fail(close_code::PROTOCOL_ERROR, "fragmented control frame"));
                }
                if length > 125 {
                    return Err(self.fail(
                        close_code::PROTOCOL_ERROR,
                        "control frame longer than 125 bytes",
                    ));
                }
                self.control.clear();
            }
            _ => return Err(self.fail(close_code::PROTOCOL_ERROR, "reserved opcode")),
        }
        if length_bytes == 8 && length >> 63 != 0 {
            return Err(self.fail(close_code::PROTOCOL_ERROR, "frame length over 2^63"));
        }
        self.frame = Some(Frame {
            opcode,
            remaining: length,
            mask,
            offset: 0,
        });
        Ok(Some(size))
    }

    /// A frame's payload is complete.
    fn frame_done(&mut self, opcode: u8) -> Result<(), WsError> {
        match opcode {
            OP_PING => {
                let payload = std::mem::take(&mut self.control);
                self.frame_header(OP_PONG, payload.len());
                self.out.extend_from_slice(&payload);
                self.control = payload;
            }
            OP_CLOSE => {
                self.peer_closed = true;
                let payload = std::mem::take(&mut self.control);
                match payload.len() {
                    // No status: answer with none either.
                    0 => {
                        self.frame_header(OP_CLOSE, 0);
                        self.state = State::Closed;
                    }
                    1 => {
                        return Err(self.fail(close_code::PROTOCOL_ERROR, "close frame of 1 byte"));
                    }
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return Err(self.fail(close_code::PROTOCOL_ERROR, "invalid close code"));
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(
                                self.fail(close_code::INVALID_PAYLOAD, "close reason is not UTF-8")
                            );
                        }
                        // Echo the status, as RFC 6455 §5.5.1 suggests.
                        self.send_close(code, b"");
                    }
                }
            }
            // Pongs are unsolicited or answer nothing we sent; data needs nothing more.
            _ => {}
        }
        Ok(())
    }

    /// Reads handshake bytes from `input`; returns how many belonged to the handshake.
    fn read_handshake(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let before = self.request.len();
        let room = MAX_HEADER_BYTES - before;
        let taken = room.min(input.len());
        self.request.extend_from_slice(&input[..taken]);
        let search_from = before.saturating_sub(3);
        let end = self.request[search_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|position| search_from + position + 4);
        let Some(end) = end else {
            if self.request.len() >= MAX_HEADER_BYTES {
                return Err(self.refuse(
                    431,
                    format!("request headers longer than {MAX_HEADER_BYTES} bytes"),
                    "",
                ));
            }
            return Ok(taken);
        };
        let request = std::mem::take(&mut self.request);
        self.handshake(&request[..end])?;
        Ok(end - before)
    }

    /// Checks a complete upgrade request and answers it.
    fn handshake(&mut self, request: &[u8]) -> Result<(), WsError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(request) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(self.refuse(400, "incomplete HTTP request".into(), ""));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(self.refuse(431, format!("more than {MAX_HEADERS} header lines"), ""));
            }
            Err(e) => return Err(self.refuse(400, format!("malformed HTTP request: {e}"), "")),
        }
        let header = |name: &'static str| {
            parsed
                .headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value))
        };
        let has_token = |name: &'static str, token: &str| {
            header(name).any(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        };
        if parsed.method != Some("GET") {
            let method = parsed.method.unwrap_or("").to_string();
            return Err(self.refuse(405, format!("method {method}, not GET"), "Allow: GET\r\n"));
        }
        if parsed.version != Some(1) {
            return Err(self.refuse(400, "not HTTP/1.1".into(), ""));
        }
        if header("upgrade").next().is_none() {
            return Err(self.refuse(
                426,
                "plain HTTP request without `Upgrade: websocket`".into(),
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            ));
        }
        if !has_token("upgrade", "websocket") {
            return Err(self.refuse(400, "Upgrade is not `websocket`".into(), ""));
        }
        if !has_token("connection", "upgrade") {
            return Err(self.refuse(400, "no `Connection: Upgrade` header".into(), ""));
        }
        let full_path = parsed.path.unwrap_or("");
        let path = full_path.split('?').next().unwrap_or("");
        if path != self.config.path {
            let reason = format!("path `{path}` is not `{}`", self.config.path);
            return Err(self.refuse(404, reason, ""));
        }
        if !header("sec-websocket-version").any(|v| v.trim() == "13") {
            return Err(self.refuse(
                426,
                "Sec-WebSocket-Version is not 13".into(),
                "Sec-WebSocket-Version: 13\r\n",
            ));
        }
        let key = header("sec-websocket-key")
            .next()
            .map(|k| k.trim().to_string());
        let key_ok = key.as_deref().is_some_and(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|bytes| bytes.len() == 16)
        });
        let Some(key) = key.filter(|_| key_ok) else {
            return Err(self.refuse(400, "missing or malformed Sec-WebSocket-Key".into(), ""));
        };
        let offered: Vec<String> = header("sec-websocket-protocol")
            .flat_map(|value| {
                value
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .collect();
        self.protocol = if offered.iter().any(|p| p == "mqtt") {
            Some("mqtt")
        } else if offered.iter().any(|p| p == "mqttv3.1") {
            Some("mqttv3.1")
        } else if offered.is_empty() {
            None
        } else {
            let reason = format!(
                "subprotocols {} offered, none of mqtt and mqttv3.1",
                offered.join(", ")
            );
            return Err(self.refuse(400, reason, ""));
        };
        self.out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        self.out.extend_from_slice(accept_key(&key).as_bytes());
        if let Some(protocol) = self.protocol {
            self.out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
            self.out.extend_from_slice(protocol.as_bytes());
        }
        self.out.extend_from_slice(b"\r\n\r\n");
        self.state = State::Open;
        Ok(())
    }

    /// Queues an HTTP error response and closes.
    fn refuse(&mut self, status: u16, reason: String, extra_headers: &str) -> WsError {
        let body = format!("{reason}\n");
        let response = format!(
            "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
            status_text(status),
            body.len()
        );
        self.out.extend_from_slice(response.as_bytes());
        self.request = Vec::new();
        self.state = State::Closed;
        WsError::Handshake { status, reason }
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// Close codes an endpoint may send (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn open() -> WebSocket {
        let mut ws = WebSocket::new(WsConfig {
            max_frame_size: 1000,
            ..WsConfig::default()
        });
        let mut mqtt = Vec::new();
        ws.receive(
            request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n").as_bytes(),
            &mut mqtt,
        )
        .unwrap();
        assert!(ws.is_open() && mqtt.is_empty());
        output(&mut ws);
        ws
    }

    fn output(ws: &mut WebSocket) -> Vec<u8> {
        let mut out = Vec::new();
        ws.take_output(&mut out);
        out
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            0..=125 => bytes.push(0x80 | payload.len() as u8),
            126..=0xFFFF => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&MASK);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        bytes
    }

    fn refusal(raw: &str) -> (u16, String) {
        let mut ws = WebSocket::new(WsConfig::default());
        let error = ws.receive(raw.as_bytes(), &mut Vec::new()).unwrap_err();
        assert!(ws.is_closed());
        let response = text(&output(&mut ws));
        match error {
            WsError::Handshake { status, .. } => {
                assert!(
                    response.starts_with(&format!("HTTP/1.1 {status} ")),
                    "{response}"
                );
                (status, response)
            }
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn close_code_of(out: &[u8]) -> u16 {
        assert_eq!(out[0], 0x88, "not a close frame: {out:?}");
        u16::from_be_bytes([out[2], out[3]])
    }

    #[test]
    fn accept_key_is_the_rfc_6455_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshake_answers_101_with_accept_and_the_mqtt_subprotocol() {
        let mut ws = WebSocket::new(WsConfig::default());
        let raw = request(
            "/mqtt?client=1",
            "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n",
        );
        ws.receive(raw.as_bytes(), &mut Vec::new()).unwrap();
        let response = text(&output(&mut ws));
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        assert_eq!(ws.protocol(), Some("mqtt"));
    }

    #[test]
    fn handshake_accepts_mqttv31_and_no_subprotocol() {
        let mut ws = WebSocket::new(WsConfig::default());
        let raw = request("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1\r\n");
        ws.receive(raw.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!(ws.protocol(), Some("mqttv3.1"));
        assert!(text(&output(&mut ws)).contains("Sec-WebSocket-Protocol: mqttv3.1\r\n"));

        let mut ws = WebSocket::new(WsConfig::default());
        ws.receive(request("/mqtt", "").as_bytes(), &mut Vec::new())
            .unwrap();
        assert!(ws.is_open());
        assert!(!text(&output(&mut ws)).contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn handshake_in_pieces_and_a_frame_in_the_same_read() {
        let mut ws = WebSocket::new(WsConfig::default());
        let mut raw = request("/mqtt", "").into_bytes();
        raw.extend(frame(0x82, b"\x10\x00"));
        let mut mqtt = Vec::new();
        for byte in &raw {
            ws.receive(std::slice::from_ref(byte), &mut mqtt).unwrap();
        }
        assert!(ws.is_open());
        assert_eq!(mqtt, b"\x10\x00");
    }

    #[test]
    fn plain_http_without_upgrade_gets_426() {
        let (status, response) = refusal("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 426);
        assert!(response.contains("Upgrade: websocket\r\n"));
    }

    #[test]
    fn wrong_path_gets_404() {
        assert_eq!(refusal(&request("/other", "")).0, 404);
        assert_eq!(refusal(&request("/mqtt/x", "")).0, 404);
    }

    #[test]
    fn oversized_headers_get_431() {
        let padding = format!("X-Padding: {}\r\n", "a".repeat(MAX_HEADER_BYTES));
        let (status, _) = refusal(&request("/mqtt", &padding));
        assert_eq!(status, 431);
        let many: String = (0..MAX_HEADERS)
            .map(|i| format!("X-{i}: {i}\r\n"))
            .collect();
        assert_eq!(refusal(&request("/mqtt", &many)).0, 431);
    }

    #[test]
    fn oversized_headers_get_431_without_waiting_for_their_end() {
        let mut ws = WebSocket::new(WsConfig::default());
        let chunk = vec![b'a'; 1000];
        let mut error = None;
        for _ in 0..MAX_HEADER_BYTES / 1000 + 1 {
            if let Err(e) = ws.receive(&chunk, &mut Vec::new()) {
                error = Some(e);
                break;
            }
        }
        assert!(matches!(
            error,
            Some(WsError::Handshake { status: 431, .. })
        ));
    }

    #[test]
    fn malformed_requests_get_4xx() {
        assert_eq!(refusal("POST /mqtt HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(
            refusal("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\r\n\r\n").0,
            400
        );
        assert_eq!(
            refusal(&request("/mqtt", "").replace("Connection: keep-alive, Upgrade", "X: y")).0,
            400
        );
        assert_eq!(
            refusal(&request("/mqtt", "").replace("Upgrade: websocket", "Upgrade: h2c")).0,
            400
        );
        assert_eq!(
            refusal(&request("/mqtt", "").replace(KEY, "c2hvcnQ=")).0,
            400
        );
        let (status, response) =
            refusal(&request("/mqtt", "").replace("Version: 13", "Version: 8"));
        assert_eq!(status, 426);
        assert!(response.contains("Sec-WebSocket-Version: 13\r\n"));
        assert_eq!(
            refusal(&request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n")).0,
            400
        );
    }

    #[test]
    fn binary_payloads_are_unmasked_into_the_stream() {
        let mut ws = open();
        let mut mqtt = Vec::new();
        let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
        ws.receive(&frame(0x82, connect), &mut mqtt).unwrap();
        assert_eq!(mqtt, connect);
        assert!(output(&mut ws).is_empty());
    }

    #[test]
    fn packets_split_across_frames_and_several_per_frame() {
        let mut ws = open();
        let packets: Vec<u8> = b"\xc0\x00\xc0\x00\x30\x05\x00\x01ahi".to_vec();
        // Several packets in one frame, then one packet over three frames (fragmented).
        let mut raw = frame(0x82, &packets);
        raw.extend(frame(0x02, &packets[4..6]));
        raw.extend(frame(0x00, &packets[6..9]));
        raw.extend(frame(0x80, &packets[9..]));
        let mut mqtt = Vec::new();
        // Fed in awkward pieces: headers and payloads cut anywhere.
        for chunk in raw.chunks(3) {
            ws.receive(chunk, &mut mqtt).unwrap();
        }
        let mut expected = packets.clone();
        expected.extend_from_slice(&packets[4..]);
        assert_eq!(mqtt, expected);
    }

    #[test]
    fn long_frames_use_16_and_64_bit_lengths() {
        let mut ws = WebSocket::new(WsConfig::default());
        ws.receive(request("/mqtt", "").as_bytes(), &mut Vec::new())
            .unwrap();
        let medium: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let large: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut mqtt = Vec::new();
        ws.receive(&frame(0x82, &medium), &mut mqtt).unwrap();
        ws.receive(&frame(0x82, &large), &mut mqtt).unwrap();
        assert_eq!(mqtt.len(), medium.len() + large.len());
        assert_eq!(&mqtt[..300], &medium[..]);
        assert_eq!(&mqtt[300..], &large[..]);
    }

    #[test]
    fn unmasked_frame_closes_with_1002() {
        let mut ws = open();
        let error = ws
            .receive(b"\x82\x02\xc0\x00", &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error,
            WsError::Protocol {
                code: 1002,
                reason: "client frame not masked"
            }
        );
        assert_eq!(close_code_of(&output(&mut ws)), 1002);
        assert!(ws.is_closed());
    }

    #[test]
    fn text_frame_closes_with_1003() {
        let mut ws = open();
        let mut mqtt = Vec::new();
        let error = ws.receive(&frame(0x81, b"hello"), &mut mqtt).unwrap_err();
        assert!(matches!(error, WsError::Protocol { code: 1003, .. }));
        assert!(mqtt.is_empty());
        assert_eq!(close_code_of(&output(&mut ws)), 1003);
    }

    #[test]
    fn oversized_frame_closes_with_1009() {
        let mut ws = open();
        let error = ws
            .receive(&frame(0x82, &[0u8; 1001]), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(error, WsError::Protocol { code: 1009, .. }));
        assert_eq!(close_code_of(&output(&mut ws)), 1009);
    }

    #[test]
    fn fragmentation_errors_close_with_1002() {
        let mut ws = open();
        let error = ws.receive(&frame(0x80, b"x"), &mut Vec::new()).unwrap_err();
        assert!(matches!(error, WsError::Protocol { code: 1002, .. }));

        let mut ws = open();
        let mut raw = frame(0x02, b"a");
        raw.extend(frame(0x82, b"b"));
        let error = ws.receive(&raw, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, WsError::Protocol { code: 1002, .. }));

        let mut ws = open();
        let error = ws.receive(&frame(0x09, b""), &mut Vec::new()).unwrap_err();
        assert_eq!(
            error,
            WsError::Protocol {
                code: 1002,
                reason: "fragmented control frame"
            }
        );
    }

    #[test]
    fn reserved_bits_opcodes_and_long_control_frames_close_with_1002() {
        for raw in [
            frame(0xC2, b"x"),
            frame(0x83, b"x"),
            frame(0x8B, b"x"),
            frame(0x89, &[0u8; 126]),
        ] {
            let mut ws = open();
            let error = ws.receive(&raw, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(error, WsError::Protocol { code: 1002, .. }),
                "{raw:?}: {error:?}"
            );
        }
    }

    #[test]
    fn ping_is_answered_with_pong_even_inside_a_fragmented_message() {
        let mut ws = open();
        let mut raw = frame(0x02, b"\xc0");
        raw.extend(frame(0x89, b"are you there"));
        raw.extend(frame(0x80, b"\x00"));
        let mut mqtt = Vec::new();
        ws.receive(&raw, &mut mqtt).unwrap();
        assert_eq!(mqtt, b"\xc0\x00");
        let out = output(&mut ws);
        assert_eq!(out[0], 0x8A);
        assert_eq!(&out[2..], b"are you there");
        // An unsolicited pong needs no answer.
        ws.receive(&frame(0x8A, b"x"), &mut mqtt).unwrap();
        assert!(output(&mut ws).is_empty());
    }

    #[test]
    fn close_is_answered_and_ends_the_connection() {
        let mut ws = open();
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut raw = frame(0x88, &payload);
        // Anything after the close frame is ignored.
        raw.extend(frame(0x82, b"\xc0\x00"));
        let mut mqtt = Vec::new();
        ws.receive(&raw, &mut mqtt).unwrap();
        assert!(ws.is_closed() && ws.peer_closed());
        assert!(mqtt.is_empty());
        assert_eq!(output(&mut ws), b"\x88\x02\x03\xe8");

        let mut ws = open();
        ws.receive(&frame(0x88, b""), &mut mqtt).unwrap();
        assert_eq!(output(&mut ws), b"\x88\x00");
    }

    #[test]
    fn bad_close_frames() {
        let mut ws = open();
        let error = ws.receive(&frame(0x88, b"\x03"), &mut Vec::new());
        assert!(matches!(error, Err(WsError::Protocol { code: 1002, .. })));
        let mut ws = open();
        let error = ws.receive(&frame(0x88, b"\x03\xed"), &mut Vec::new());
        assert!(matches!(error, Err(WsError::Protocol { code: 1002, .. })));
        let mut ws = open();
        let error = ws.receive(&frame(0x88, b"\x03\xe8\xff"), &mut Vec::new());
        assert!(matches!(error, Err(WsError::Protocol { code: 1007, .. })));
    }

    #[test]
    fn sent_bytes_go_out_as_one_unmasked_binary_frame() {
        let mut ws = WebSocket::new(WsConfig::default());
        ws.send(b"before the handshake");
        assert!(!ws.wants_write());
        ws.receive(request("/mqtt", "").as_bytes(), &mut Vec::new())
            .unwrap();
        output(&mut ws);
        ws.send(b"\x20\x02\x00\x00");
        assert_eq!(output(&mut ws), b"\x82\x04\x20\x02\x00\x00");
        ws.send(&[7u8; 200]);
        let out = output(&mut ws);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        assert_eq!(out.len(), 204);
        ws.send(&vec![9u8; 70_000]);
        let out = output(&mut ws);
        assert_eq!(&out[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn our_close_sends_a_close_frame_once() {
        let mut ws = open();
        ws.close(close_code::NORMAL);
        assert_eq!(output(&mut ws), b"\x88\x02\x03\xe8");
        assert!(ws.is_closed());
        ws.close(close_code::NORMAL);
        ws.send(b"x");
        assert!(!ws.wants_write());
    }

    #[test]
    fn errors_read_well_in_a_log() {
        let error = WsError::Handshake {
            status: 404,
            reason: "path `/x` is not `/mqtt`".into(),
        };
        assert_eq!(
            error.to_string(),
            "WebSocket handshake refused with HTTP 404 Not Found: path `/x` is not `/mqtt`"
        );
    }
}
