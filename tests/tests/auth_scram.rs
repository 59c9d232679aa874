//! MQTT 5 enhanced authentication with SCRAM-SHA-256 and failed-login throttling, against the
//! built broker over loopback sockets. The SCRAM client is written here (RFC 5802 / RFC 7677,
//! with the RustCrypto primitives), not taken from the broker; the password file is made by
//! `femtomq passwd`. Throttling is per source address: connections come from 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use femtomq_e2e::{Broker, STEP, TestDir, femtomq, path_arg, run_with_input};

const METHOD: &str = "SCRAM-SHA-256";

// ----- MQTT packets by hand -----------------------------------------------------------------------

fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// Authentication Method and Data properties, with their length.
fn auth_properties(data: &[u8]) -> Vec<u8> {
    let mut properties = vec![0x15];
    properties.extend(field(METHOD.as_bytes()));
    properties.push(0x16);
    properties.extend(field(data));
    let mut out = varint(properties.len());
    out.extend(properties);
    out
}

/// CONNECT: level 5 or 4, optional user name and password, optional SCRAM client-first.
fn connect_packet(
    level: u8,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
    scram_first: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.push(level);
    body.push(
        0x02 | if user.is_some() { 0x80 } else { 0 } | if password.is_some() { 0x40 } else { 0 },
    );
    body.extend(60u16.to_be_bytes());
    if level == 5 {
        match scram_first {
            Some(data) => body.extend(auth_properties(data)),
            None => body.push(0),
        }
    }
    body.extend(field(client_id.as_bytes()));
    if let Some(user) = user {
        body.extend(field(user.as_bytes()));
    }
    if let Some(password) = password {
        body.extend(field(password));
    }
    packet(0x10, &body)
}

fn auth_packet(reason: u8, data: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(auth_properties(data));
    packet(0xF0, &body)
}

/// A received packet: type nibble, reason code (CONNACK, AUTH, DISCONNECT), and the
/// Authentication Data property if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    kind: u8,
    reason: u8,
    auth_data: Option<Vec<u8>>,
}

/// The Authentication Data among MQTT 5 properties.
fn find_auth_data(properties: &[u8]) -> Option<Vec<u8>> {
    let two = |at: usize| usize::from(u16::from_be_bytes([properties[at], properties[at + 1]]));
    let mut at = 0;
    while at < properties.len() {
        let id = properties[at];
        at += 1;
        at += match id {
            0x16 => return Some(properties[at + 2..at + 2 + two(at)].to_vec()),
            // Strings and binary data.
            0x15 | 0x12 | 0x1A | 0x1C | 0x1F => 2 + two(at),
            // User property: two strings.
            0x26 => {
                let first = 2 + two(at);
                first + 2 + two(at + first)
            }
            0x21 | 0x22 | 0x13 => 2,
            0x11 | 0x27 => 4,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            other => panic!("unexpected property {other:#x}"),
        };
    }
    None
}

/// One client connection, read packet by packet.
struct Client {
    stream: TcpStream,
    input: Vec<u8>,
}

impl Client {
    /// Connects to `to` from the loopback address `from`.
    fn connect(from: IpAddr, to: SocketAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        socket
            .connect_timeout(&to.into(), STEP)
            .unwrap_or_else(|e| panic!("connect to {to} from {from}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("nodelay");
        stream.set_write_timeout(Some(STEP)).expect("write timeout");
        Client {
            stream,
            input: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next packet within STEP; `None` when the broker closed the connection.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some((header, total)) = whole(&self.input) {
                let packet: Vec<u8> = self.input.drain(..total).collect();
                return Some((packet[0], packet[header..].to_vec()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no packet within {STEP:?}");
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => return None,
                Ok(n) => self.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no packet within {STEP:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next CONNACK, AUTH or DISCONNECT.
    fn answer(&mut self) -> Option<Answer> {
        let (first, body) = self.read()?;
        let kind = first >> 4;
        let (reason, properties) = match kind {
            2 => (body[1], body.get(2..)),
            14 | 15 => (body.first().copied().unwrap_or(0), body.get(1..)),
            _ => panic!("unexpected packet {first:#x} {body:?}"),
        };
        let auth_data = properties.filter(|p| !p.is_empty()).and_then(|p| {
            let (length, used) = read_varint(p);
            find_auth_data(&p[used..used + length])
        });
        Some(Answer {
            kind,
            reason,
            auth_data,
        })
    }

    /// PINGREQ answered by PINGRESP: the connection is up.
    fn ping(&mut self) -> bool {
        self.send(&[0xC0, 0x00]).is_ok() && matches!(self.read(), Some((0xD0, _)))
    }
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer")
}

/// (header length, total length) of the packet at the start of `bytes`, if whole.
fn whole(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let mut length = 0;
    for (i, byte) in bytes[1..].iter().take(4).enumerate() {
        length |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            return (bytes.len() >= header + length).then_some((header, header + length));
        }
    }
    None
}

// ----- the SCRAM-SHA-256 client -------------------------------------------------------------------

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

struct ScramClient {
    password: Vec<u8>,
    nonce: String,
    first_bare: String,
}

impl ScramClient {
    fn new(user: &str, password: &str, nonce: &str) -> ScramClient {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            password: password.as_bytes().to_vec(),
            nonce: nonce.to_string(),
            first_bare: format!("n={name},r={nonce}"),
        }
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// client-final for `server_first`, and the server signature to expect.
    fn client_final(&self, server_first: &[u8]) -> (Vec<u8>, String) {
        let server_first = std::str::from_utf8(server_first).expect("UTF-8 server-first");
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attribute in server_first.split(',') {
            if let Some(value) = attribute.strip_prefix("r=") {
                nonce = value;
            } else if let Some(value) = attribute.strip_prefix("s=") {
                salt = STANDARD.decode(value).expect("base64 salt");
            } else if let Some(value) = attribute.strip_prefix("i=") {
                iterations = value.parse().expect("iterations");
            }
        }
        assert!(
            nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len(),
            "server nonce {nonce:?} must extend {:?}",
            self.nonce
        );
        assert!(iterations >= 4096, "{server_first}");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(&self.password, &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let server_signature = hmac(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
            format!("v={}", STANDARD.encode(server_signature)),
        )
    }
}

/// A SCRAM-SHA-256 CONNECT from `from`: the final answer (CONNACK, or whatever came instead of
/// server-first), with the server signature checked on success, and the connection.
fn scram_connect(
    from: IpAddr,
    broker: SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
    connect_user: Option<&str>,
) -> (Client, Answer) {
    let scram = ScramClient::new(user, password, "fyko+d2lbbFgONRv9qkxdawL");
    let mut client = Client::connect(from, broker);
    client
        .send(&connect_packet(
            5,
            client_id,
            connect_user,
            None,
            Some(&scram.client_first()),
        ))
        .expect("send CONNECT");
    let first = client.answer().expect("an answer to CONNECT");
    if first.kind != 15 {
        return (client, first);
    }
    assert_eq!(first.reason, 0x18, "{first:?}");
    let (client_final, server_final) = scram.client_final(&first.auth_data.expect("server-first"));
    client
        .send(&auth_packet(0x18, &client_final))
        .expect("send AUTH");
    let answer = client.answer().expect("CONNACK");
    assert_eq!(answer.kind, 2, "{answer:?}");
    if answer.reason == 0 {
        assert_eq!(
            answer.auth_data.as_deref(),
            Some(server_final.as_bytes()),
            "server-final must prove the server knows the verifier"
        );
    } else {
        assert_eq!(answer.auth_data, None);
    }
    (client, answer)
}

/// Re-authenticates with AUTH 0x19; the final AUTH (checked) or DISCONNECT.
fn reauthenticate(client: &mut Client, user: &str, password: &str) -> Answer {
    let scram = ScramClient::new(user, password, "reauth-nonce-4b2c");
    client
        .send(&auth_packet(0x19, &scram.client_first()))
        .expect("send AUTH 0x19");
    let first = client.answer().expect("server-first");
    assert_eq!((first.kind, first.reason), (15, 0x18), "{first:?}");
    let (client_final, server_final) = scram.client_final(&first.auth_data.unwrap());
    client
        .send(&auth_packet(0x18, &client_final))
        .expect("send AUTH 0x18");
    let answer = client.answer().expect("an answer to client-final");
    if answer.kind == 15 {
        assert_eq!(answer.reason, 0);
        assert_eq!(answer.auth_data.as_deref(), Some(server_final.as_bytes()));
    }
    answer
}

/// A plain CONNECT from `from` with user name and password: the CONNACK code.
fn password_connect(from: IpAddr, broker: SocketAddr, level: u8, user: &str, password: &str) -> u8 {
    let mut client = Client::connect(from, broker);
    client
        .send(&connect_packet(
            level,
            "plain",
            Some(user),
            Some(password.as_bytes()),
            None,
        ))
        .expect("send CONNECT");
    let answer = client.answer().expect("CONNACK");
    assert_eq!(answer.kind, 2);
    answer.reason
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ----- setup --------------------------------------------------------------------------------------

/// `femtomq passwd` adds `user` with `password`; returns its stderr.
fn add_user(file: &Path, user: &str, password: &str, create: bool) -> String {
    let mut args = vec!["passwd"];
    if create {
        args.push("-c");
    }
    args.extend([path_arg(file), user]);
    let outcome = run_with_input(
        &mut femtomq(&args),
        format!("{password}\n").as_bytes(),
        STEP,
    );
    outcome.assert_success("femtomq passwd");
    outcome.stderr.clone()
}

/// A broker with a password file made by `femtomq passwd` and this `[throttle]` table.
fn broker_with_users(dir: &TestDir, throttle: &str, extra: &str) -> Broker {
    let file = dir.join("passwd");
    add_user(&file, "alice", "correct horse", true);
    let warning = add_user(&file, "bob", "pässwort", false);
    assert!(warning.contains("printable ASCII"), "{warning}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("#SCRAM-SHA-256:"))
            .count(),
        1,
        "a verifier for alice only:\n{text}"
    );
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "password_file = \"{}\"\n[throttle]\n{throttle}\n{extra}",
            file.display()
        ),
    );
    Broker::start(&["--conf", path_arg(&conf)])
}

// ----- tests --------------------------------------------------------------------------------------

#[test]
fn scram_sha_256_round_trip_re_authentication_and_refusals() {
    let dir = TestDir::new("scram");
    // Throttling stays out of the way of this test's many refusals.
    let broker = broker_with_users(
        &dir,
        "max_failures = 1000",
        "[session]\nconnect_timeout_ms = 3000\n",
    );
    let address = broker.address();
    let local = ip("127.0.0.1");

    // The round trip: server-final proves the server, the connection works.
    let (mut client, answer) = scram_connect(local, address, "s1", "alice", "correct horse", None);
    assert_eq!(answer.reason, 0, "{}", broker.log());
    assert!(client.ping());
    // Re-authentication with the same method, twice.
    for _ in 0..2 {
        let answer = reauthenticate(&mut client, "alice", "correct horse");
        assert_eq!((answer.kind, answer.reason), (15, 0), "{answer:?}");
        assert!(client.ping());
    }
    // A re-authentication with the wrong password ends the connection with DISCONNECT 0x86.
    let answer = reauthenticate(&mut client, "alice", "wrong horse");
    assert_eq!((answer.kind, answer.reason), (14, 0x86), "{answer:?}");
    assert!(client.read().is_none(), "closed after the refusal");

    // A CONNECT with the user name given as well.
    let (mut client, answer) = scram_connect(
        local,
        address,
        "s2",
        "alice",
        "correct horse",
        Some("alice"),
    );
    assert_eq!(answer.reason, 0);
    // Re-authenticating as somebody else is refused.
    client
        .send(&auth_packet(0x19, b"n,,n=bob,r=abcdef"))
        .expect("send AUTH");
    assert_eq!(
        client.answer().map(|a| (a.kind, a.reason)),
        Some((14, 0x87))
    );

    // Wrong password: 0x86, no server-final.
    let (_, answer) = scram_connect(local, address, "s3", "alice", "wrong horse", None);
    assert_eq!(answer.reason, 0x86);
    // An unknown user gets a server-first like anyone, then 0x86.
    let (_, answer) = scram_connect(local, address, "s4", "mallory", "anything", None);
    assert_eq!((answer.kind, answer.reason), (2, 0x86));
    // bob's password is not ASCII: no verifier, so no SCRAM, but a plain password works.
    let (_, answer) = scram_connect(local, address, "s5", "bob", "pässwort", None);
    assert_eq!(answer.reason, 0x86);
    assert_eq!(password_connect(local, address, 5, "bob", "pässwort"), 0);
    assert_eq!(
        password_connect(local, address, 5, "alice", "correct horse"),
        0
    );
    // A User Name that differs from the SCRAM user: 0x87.
    let (_, answer) = scram_connect(local, address, "s6", "alice", "correct horse", Some("bob"));
    assert_eq!((answer.kind, answer.reason), (2, 0x87));

    // Malformed client-first, channel binding, another method.
    for (method, data, code) in [
        (METHOD, &b"hello"[..], 0x87),
        (METHOD, b"p=tls-unique,,n=alice,r=abc", 0x87),
        (METHOD, b"n,,n=alice", 0x87),
        ("SCRAM-SHA-1", b"n,,n=alice,r=abc", 0x8C),
    ] {
        let mut client = Client::connect(local, address);
        client
            .send(&connect_packet_with_method(data, method))
            .expect("send CONNECT");
        let answer = client.answer().expect("CONNACK");
        assert_eq!((answer.kind, answer.reason), (2, code), "{method} {data:?}");
    }

    // A malformed client-final: 0x87.
    let scram = ScramClient::new("alice", "correct horse", "nonce-malformed");
    let mut client = Client::connect(local, address);
    client
        .send(&connect_packet(
            5,
            "s7",
            None,
            None,
            Some(&scram.client_first()),
        ))
        .unwrap();
    assert_eq!(client.answer().map(|a| a.reason), Some(0x18));
    client.send(&auth_packet(0x18, b"c=biws,r=x")).unwrap();
    assert_eq!(client.answer().map(|a| (a.kind, a.reason)), Some((2, 0x87)));

    // A client that never sends client-final is closed at the connect timeout, no CONNACK.
    let mut client = Client::connect(local, address);
    client
        .send(&connect_packet(
            5,
            "s8",
            None,
            None,
            Some(&scram.client_first()),
        ))
        .unwrap();
    assert_eq!(client.answer().map(|a| a.reason), Some(0x18));
    assert_eq!(client.answer(), None, "closed without CONNACK");

    // Everything above left the broker serving.
    let (mut client, answer) = scram_connect(local, address, "s9", "alice", "correct horse", None);
    assert_eq!(answer.reason, 0);
    assert!(client.ping());
}

/// CONNECT with `method` as Authentication Method.
fn connect_packet_with_method(data: &[u8], method: &str) -> Vec<u8> {
    let mut properties = vec![0x15];
    properties.extend(field(method.as_bytes()));
    properties.push(0x16);
    properties.extend(field(data));
    let mut body = field(b"MQTT");
    body.extend([5, 0x02]);
    body.extend(60u16.to_be_bytes());
    body.extend(varint(properties.len()));
    body.extend(properties);
    body.extend(field(b"bad"));
    packet(0x10, &body)
}

#[test]
fn brute_force_from_one_address_is_throttled_while_others_connect() {
    let dir = TestDir::new("throttle");
    // Refusal periods far longer than the test: nothing here depends on timing.
    let broker = broker_with_users(
        &dir,
        "max_failures = 3\nwindow_ms = 600000\nbackoff_ms = 600000\nmax_backoff_ms = 600000",
        "",
    );
    let address = broker.address();
    let (one, two, three) = (ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.3"));

    // 127.0.0.1 guesses alice's password.
    assert_eq!(
        password_connect(one, address, 5, "alice", "correct horse"),
        0
    );
    for guess in ["a", "b", "c"] {
        assert_eq!(password_connect(one, address, 5, "alice", guess), 0x86);
    }
    // Now even the right password is refused, in either protocol version and with SCRAM.
    assert_eq!(
        password_connect(one, address, 5, "alice", "correct horse"),
        0x9F
    );
    assert_eq!(
        password_connect(one, address, 4, "alice", "correct horse"),
        3
    );
    let (_, answer) = scram_connect(one, address, "t1", "alice", "correct horse", None);
    assert_eq!((answer.kind, answer.reason), (2, 0x9F));
    assert!(
        broker.wait_for_log("failed logins from 127.0.0.1", 1, STEP),
        "{}",
        broker.log()
    );

    // 127.0.0.2 is not affected; its own success clears its failures.
    assert_eq!(
        password_connect(two, address, 5, "alice", "correct horse"),
        0
    );
    for _ in 0..2 {
        assert_eq!(password_connect(two, address, 5, "alice", "nope"), 0x86);
    }
    assert_eq!(
        password_connect(two, address, 5, "alice", "correct horse"),
        0
    );
    for _ in 0..3 {
        assert_eq!(password_connect(two, address, 5, "alice", "nope"), 0x86);
    }
    assert_eq!(
        password_connect(two, address, 5, "alice", "correct horse"),
        0x9F
    );

    // Failed SCRAM proofs count the same way.
    for _ in 0..3 {
        let (_, answer) = scram_connect(three, address, "t3", "alice", "wrong", None);
        assert_eq!(answer.reason, 0x86);
    }
    let (_, answer) = scram_connect(three, address, "t3", "alice", "correct horse", None);
    assert_eq!((answer.kind, answer.reason), (2, 0x9F));

    // An address that never failed still gets in, with a password or SCRAM.
    let four = ip("127.0.0.4");
    assert_eq!(
        password_connect(four, address, 5, "alice", "correct horse"),
        0
    );
    let (mut client, answer) = scram_connect(four, address, "t4", "alice", "correct horse", None);
    assert_eq!(answer.reason, 0);
    assert!(client.ping());
}
