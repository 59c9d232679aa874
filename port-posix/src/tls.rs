//! MQTT over TLS: rustls 0.23 (provider `ring`, TLS 1.2 and 1.3), driven sans-IO.
//!
//! [`load`] builds a listener's `rustls::ServerConfig` from PEM files ([`TlsFiles`]): the
//! certificate chain, its private key (an encrypted key is refused with a message saying how to
//! decrypt it), and optionally a CA file to verify client certificates against (mTLS), required
//! or not. ALPN offers `mqtt` on MQTT-over-TLS listeners and `http/1.1` on WebSocket ones (what
//! browsers ask for); a client that offers no ALPN at all is served too. The server re-runs
//! [`load`] on reload, so renewed certificates apply to new connections while open ones keep
//! theirs.
//!
//! [`TlsSession`] is one connection. Why drive `rustls::ServerConnection` ourselves rather than
//! use futures-rustls: the event loop reads every socket into one shared 64 KB buffer and writes
//! one buffer per wake-up. The sans-IO API fits that as it is: the raw bytes go in with
//! `read_tls` from a slice of that buffer, `process_new_packets` decrypts them, the plaintext
//! comes out of `reader()` into the connection's MQTT buffer, what the engine sends goes into
//! `writer()`, and `write_tls` appends the records to the one output buffer. futures-rustls
//! would wrap the socket in its own `AsyncRead`/`AsyncWrite` with buffers of its own, bypass the
//! shared read buffer, and add two crates (it and futures-io) to audit and measure for about 60
//! lines saved. The same session also carries WebSocket frames for `wss://`, by the same calls.
//!
//! With `use_identity_as_username`, the subject Common Name of the client's verified
//! certificate ([`TlsSession::peer_common_name`], read by [`common_name`]) becomes the client's
//! user name for authentication and ACLs, as Mosquitto does.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

pub use crate::listener::TlsFiles;

/// Why a TLS listener or connection cannot go on: a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// ALPN protocol of MQTT over TLS (registered with IANA as `mqtt`).
pub const ALPN_MQTT: &[u8] = b"mqtt";
/// ALPN protocol of a WebSocket upgrade (what browsers offer).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Reads `files` and builds a server configuration offering `alpn`.
pub fn load(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    if files.cafile.is_none() && files.require_certificate {
        return Err(TlsError(
            "require_certificate needs cafile: the CA to verify client certificates against".into(),
        ));
    }
    if files.cafile.is_none() && files.use_identity_as_username {
        return Err(TlsError(
            "use_identity_as_username needs cafile: the CA to verify client certificates against"
                .into(),
        ));
    }
    let chain = read_certificates(&files.cert, "certificate")?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match &files.cafile {
        Some(cafile) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(cafile, "CA certificate")? {
                roots.add(certificate).map_err(|e| {
                    TlsError(format!(
                        "CA file {}: unusable certificate: {e}",
                        cafile.display()
                    ))
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !files.require_certificate {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("CA file {}: {e}", cafile.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
}

/// Every certificate in a PEM file (at least one).
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, &format!("{what} file"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} file {}: bad PEM: {e:?}", path.display())))?;
    if certificates.is_empty() {
        return Err(TlsError(format!(
            "{what} file {}: no `BEGIN CERTIFICATE` block",
            path.display()
        )));
    }
    Ok(certificates)
}

/// The private key of a PEM file; an encrypted one is refused with a clear message.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "key file")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError(format!(
            "key file {}: the key is encrypted with a passphrase, which femtomq cannot ask for; \
             decrypt it with `openssl pkey -in {0} -out DECRYPTED.pem` and keep that file private",
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "key file {}: no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM block): {e:?}",
            path.display()
        ))
    })
}

/// One TLS connection, server side.
pub struct TlsSession {
    connection: ServerConnection,
    peer_closed: bool,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.connection.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl TlsSession {
    /// A connection waiting for the client's hello.
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, TlsError> {
        let mut connection =
            ServerConnection::new(config).map_err(|e| TlsError(format!("TLS: {e}")))?;
        // The engine bounds what it queues per connection; rustls must take all of it.
        connection.set_buffer_limit(None);
        Ok(TlsSession {
            connection,
            peer_closed: false,
        })
    }

    /// Handles `raw` bytes from the socket: appends the plaintext they carry to `plain`. An error
    /// (a failed handshake, a bad record) leaves the TLS alert for the client in the output:
    /// write it, then close.
    pub fn receive(&mut self, mut raw: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsError> {
        while !raw.is_empty() && !self.peer_closed {
            self.connection
                .read_tls(&mut raw)
                .map_err(|e| TlsError(format!("TLS: {e}")))?;
            let state = self.connection.process_new_packets().map_err(|e| {
                let stage = if self.connection.is_handshaking() {
                    "TLS handshake failed"
                } else {
                    "TLS error"
                };
                TlsError(format!("{stage}: {e}"))
            })?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                self.connection
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| TlsError(format!("TLS: {e}")))?;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
        }
        Ok(())
    }

    /// Encrypts `plain` for the client (buffered until the handshake is done).
    pub fn send(&mut self, plain: &[u8]) {
        if !plain.is_empty() {
            // Cannot fail: the buffer limit is off.
            let _ = self.connection.writer().write_all(plain);
        }
    }

    /// Whether records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.connection.wants_write()
    }

    /// Appends the records waiting for the socket to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        while self.connection.wants_write() {
            if self.connection.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.connection.is_handshaking()
    }

    /// Whether the client sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Sends close_notify (after what was sent before).
    pub fn close(&mut self) {
        self.connection.send_close_notify();
    }

    /// The subject Common Name of the client's verified certificate, if it sent one.
    pub fn peer_common_name(&self) -> Option<String> {
        let chain = self.connection.peer_certificates()?;
        common_name(chain.first()?)
    }

    /// The negotiated version, cipher suite and ALPN protocol, for the log.
    pub fn describe(&self) -> String {
        let version = self
            .connection
            .protocol_version()
            .map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
        let suite = self
            .connection
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
        let alpn = self.connection.alpn_protocol().map_or_else(
            || "-".to_string(),
            |p| String::from_utf8_lossy(p).into_owned(),
        );
        format!("{version} {suite} ALPN {alpn}")
    }
}

/// One DER element: `(tag, contents, rest)`. Single-byte tags and definite lengths only, which
/// is all X.509 uses.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[count..];
        length
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The first Common Name (OID 2.5.4.3) of a DER certificate's subject, decoded from
/// UTF8String, PrintableString, IA5String, TeletexString (as Latin-1) or BMPString.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der(certificate)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der(certificate)? else {
        return None;
    };
    // [0] version (optional), serial number, signature algorithm, issuer, validity, subject.
    let mut fields = Vec::with_capacity(6);
    while let Some((tag, contents, rest)) = der(tbs) {
        fields.push((tag, contents));
        tbs = rest;
        if fields.len() == 6 {
            break;
        }
    }
    let skip = usize::from(fields.first()?.0 == 0xA0);
    let &(SEQUENCE, mut subject) = fields.get(skip + 4)? else {
        return None;
    };
    while let Some((SET, mut set, rest)) = der(subject) {
        subject = rest;
        while let Some((SEQUENCE, attribute, next)) = der(set) {
            set = next;
            let Some((0x06, oid, value)) = der(attribute) else {
                continue;
            };
            if oid != CN {
                continue;
            }
            let (tag, value, _) = der(value)?;
            return match tag {
                0x0C | 0x13 | 0x16 => std::str::from_utf8(value).ok().map(str::to_string),
                0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
                0x1E => {
                    let units: Vec<u16> = value
                        .chunks_exact(2)
                        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                        .collect();
                    String::from_utf16(&units).ok()
                }
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };
    use std::path::PathBuf;

    /// A CA, a server certificate for localhost/127.0.0.1 and client certificates, in a
    /// scratch directory.
    struct Pki {
        dir: PathBuf,
        ca: rcgen::Certificate,
        ca_key: KeyPair,
    }

    impl Pki {
        fn new(label: &str) -> Pki {
            let dir =
                std::env::temp_dir().join(format!("femtomq-tls-{}-{label}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "femtomq test CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = params.self_signed(&ca_key).unwrap();
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            let pki = Pki { dir, ca, ca_key };
            let (cert, key) = pki.issue("localhost", false);
            std::fs::write(pki.dir.join("server.pem"), cert.pem()).unwrap();
            std::fs::write(pki.dir.join("server.key"), key.serialize_pem()).unwrap();
            pki
        }

        fn issue(&self, cn: &str, client: bool) -> (rcgen::Certificate, KeyPair) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            (cert, key)
        }

        fn files(&self) -> TlsFiles {
            TlsFiles {
                cert: self.dir.join("server.pem"),
                key: self.dir.join("server.key"),
                ..TlsFiles::default()
            }
        }

        fn client(
            &self,
            identity: Option<(&rcgen::Certificate, &KeyPair)>,
            alpn: &[&[u8]],
        ) -> rustls::ClientConnection {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let mut config = match identity {
                Some((cert, key)) => builder
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                    )
                    .unwrap(),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Moves bytes both ways until neither side has more; the server's plaintext goes to
    /// `plain`. Returns the server's error, if any, after delivering its alert to the client.
    fn pump(
        client: &mut rustls::ClientConnection,
        server: &mut TlsSession,
        plain: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let result = server.receive(&wire, plain);
            let mut back = Vec::new();
            server.take_output(&mut back);
            if !back.is_empty() {
                let _ = client.read_tls(&mut &back[..]);
                let _ = client.process_new_packets();
            }
            result?;
            if wire.is_empty() && back.is_empty() {
                break;
            }
        }
        Ok(())
    }

    #[test]
    fn handshake_alpn_and_data_both_ways() {
        let pki = Pki::new("basic");
        let config = load(&pki.files(), &[ALPN_MQTT]).unwrap();
        for alpn in [&[ALPN_MQTT][..], &[]] {
            let mut server = TlsSession::new(config.clone()).unwrap();
            let mut client = pki.client(None, alpn);
            let mut plain = Vec::new();
            client.writer().write_all(b"\x10\x00").unwrap();
            pump(&mut client, &mut server, &mut plain).unwrap();
            assert!(!server.is_handshaking());
            assert_eq!(plain, b"\x10\x00");
            assert_eq!(server.peer_common_name(), None);
            let expected_alpn = if alpn.is_empty() {
                None
            } else {
                Some(ALPN_MQTT)
            };
            assert_eq!(client.alpn_protocol(), expected_alpn);
            server.send(b"\x20\x02\x00\x00");
            pump(&mut client, &mut server, &mut plain).unwrap();
            let mut answer = [0u8; 4];
            client.reader().read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"\x20\x02\x00\x00");
            server.close();
            pump(&mut client, &mut server, &mut plain).unwrap();
        }
    }

    #[test]
    fn tls12_is_offered_too() {
        let pki = Pki::new("tls12");
        let config = load(&pki.files(), &[ALPN_MQTT]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = TlsSession::new(config).unwrap();
        client.writer().write_all(b"x").unwrap();
        let mut plain = Vec::new();
        pump(&mut client, &mut server, &mut plain).unwrap();
        assert_eq!(plain, b"x");
        assert!(
            server.describe().starts_with("TLSv1_2 "),
            "{}",
            server.describe()
        );
    }

    #[test]
    fn a_client_offering_only_other_alpn_protocols_is_refused() {
        let pki = Pki::new("alpn");
        let config = load(&pki.files(), &[ALPN_MQTT]).unwrap();
        let mut server = TlsSession::new(config).unwrap();
        let mut client = pki.client(None, &[b"h2"]);
        let error = pump(&mut client, &mut server, &mut Vec::new()).unwrap_err();
        assert!(error.0.contains("TLS handshake failed"), "{error}");
    }

    #[test]
    fn plain_mqtt_on_the_tls_port_fails_the_handshake() {
        let pki = Pki::new("plain");
        let config = load(&pki.files(), &[ALPN_MQTT]).unwrap();
        let mut server = TlsSession::new(config).unwrap();
        let connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test";
        let error = server.receive(connect, &mut Vec::new()).unwrap_err();
        assert!(error.0.starts_with("TLS handshake failed"), "{error}");
        // The alert for the client is queued.
        let mut out = Vec::new();
        server.take_output(&mut out);
        assert_eq!(out.first(), Some(&0x15), "{out:?}");
    }

    #[test]
    fn client_certificates_verified_required_and_named() {
        let pki = Pki::new("mtls");
        let (cert, key) = pki.issue("device-42", true);
        let files = TlsFiles {
            cafile: Some(pki.dir.join("ca.pem")),
            require_certificate: true,
            use_identity_as_username: true,
            ..pki.files()
        };
        let config = load(&files, &[ALPN_MQTT]).unwrap();

        let mut server = TlsSession::new(config.clone()).unwrap();
        let mut client = pki.client(Some((&cert, &key)), &[ALPN_MQTT]);
        client.writer().write_all(b"hello").unwrap();
        let mut plain = Vec::new();
        pump(&mut client, &mut server, &mut plain).unwrap();
        assert_eq!(plain, b"hello");
        assert_eq!(server.peer_common_name().as_deref(), Some("device-42"));

        // No certificate: refused during the handshake.
        let mut server = TlsSession::new(config.clone()).unwrap();
        let mut client = pki.client(None, &[ALPN_MQTT]);
        client.writer().write_all(b"hello").unwrap();
        let error = pump(&mut client, &mut server, &mut Vec::new()).unwrap_err();
        assert!(error.0.contains("TLS handshake failed"), "{error}");

        // A certificate from another CA: refused.
        let other = Pki::new("mtls-other");
        let (cert, key) = other.issue("intruder", true);
        let mut server = TlsSession::new(config).unwrap();
        let mut client = pki.client(Some((&cert, &key)), &[ALPN_MQTT]);
        client.writer().write_all(b"hello").unwrap();
        let error = pump(&mut client, &mut server, &mut Vec::new()).unwrap_err();
        assert!(error.0.contains("certificate"), "{error}");
    }

    #[test]
    fn optional_client_certificates() {
        let pki = Pki::new("optional");
        let files = TlsFiles {
            cafile: Some(pki.dir.join("ca.pem")),
            ..pki.files()
        };
        let config = load(&files, &[ALPN_MQTT]).unwrap();
        let mut server = TlsSession::new(config.clone()).unwrap();
        let mut client = pki.client(None, &[]);
        client.writer().write_all(b"anonymous").unwrap();
        let mut plain = Vec::new();
        pump(&mut client, &mut server, &mut plain).unwrap();
        assert_eq!(plain, b"anonymous");
        assert_eq!(server.peer_common_name(), None);

        let (cert, key) = pki.issue("sensor", true);
        let mut server = TlsSession::new(config).unwrap();
        let mut client = pki.client(Some((&cert, &key)), &[]);
        client.writer().write_all(b"x").unwrap();
        pump(&mut client, &mut server, &mut Vec::new()).unwrap();
        assert_eq!(server.peer_common_name().as_deref(), Some("sensor"));
    }

    #[test]
    fn configuration_errors_name_the_file_and_the_problem() {
        let pki = Pki::new("errors");
        let missing = TlsFiles {
            cert: pki.dir.join("nope.pem"),
            ..pki.files()
        };
        let error = load(&missing, &[]).unwrap_err().0;
        assert!(error.starts_with("cannot read certificate file"), "{error}");
        assert!(error.contains("nope.pem"), "{error}");

        let encrypted = pki.dir.join("encrypted.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = load(
            &TlsFiles {
                key: encrypted,
                ..pki.files()
            },
            &[],
        )
        .unwrap_err()
        .0;
        assert!(error.contains("encrypted with a passphrase"), "{error}");
        assert!(error.contains("openssl pkey"), "{error}");

        let legacy = pki.dir.join("legacy.key");
        std::fs::write(
            &legacy,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = load(
            &TlsFiles {
                key: legacy,
                ..pki.files()
            },
            &[],
        )
        .unwrap_err();
        assert!(error.0.contains("encrypted"), "{error}");

        // The key of another certificate.
        let (_, other_key) = pki.issue("other", false);
        let wrong = pki.dir.join("wrong.key");
        std::fs::write(&wrong, other_key.serialize_pem()).unwrap();
        let error = load(
            &TlsFiles {
                key: wrong,
                ..pki.files()
            },
            &[],
        )
        .unwrap_err();
        assert!(error.0.contains("wrong.key"), "{error}");

        // Files swapped: no certificate in the key file, no key in the certificate file.
        let swapped = TlsFiles {
            cert: pki.files().key,
            key: pki.files().cert,
            ..TlsFiles::default()
        };
        let error = load(&swapped, &[]).unwrap_err();
        assert!(error.0.contains("no `BEGIN CERTIFICATE` block"), "{error}");

        let error = load(
            &TlsFiles {
                require_certificate: true,
                ..pki.files()
            },
            &[],
        )
        .unwrap_err();
        assert!(
            error.0.starts_with("require_certificate needs cafile"),
            "{error}"
        );
        let error = load(
            &TlsFiles {
                use_identity_as_username: true,
                ..pki.files()
            },
            &[],
        )
        .unwrap_err();
        assert!(
            error.0.starts_with("use_identity_as_username needs cafile"),
            "{error}"
        );
    }

    #[test]
    fn common_name_of_string_kinds() {
        let pki = Pki::new("cn");
        let (cert, _) = pki.issue("émile-7", true);
        assert_eq!(common_name(cert.der()).as_deref(), Some("émile-7"));
        assert_eq!(
            common_name(pki.ca.der()).as_deref(),
            Some("femtomq test CA")
        );
        for kind in [
            rcgen::DnValue::PrintableString("printable".try_into().unwrap()),
            rcgen::DnValue::Ia5String("ia5".try_into().unwrap()),
            rcgen::DnValue::BmpString("bmp".try_into().unwrap()),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            let expected = match &kind {
                rcgen::DnValue::PrintableString(_) => "printable",
                rcgen::DnValue::Ia5String(_) => "ia5",
                _ => "bmp",
            };
            params
                .distinguished_name
                .push(DnType::OrganizationName, "org");
            params.distinguished_name.push(DnType::CommonName, kind);
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(common_name(cert.der()).as_deref(), Some(expected));
        }
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "no cn");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        assert_eq!(common_name(b"\x30\x03\x02"), None);
        assert_eq!(common_name(b""), None);
    }
}
