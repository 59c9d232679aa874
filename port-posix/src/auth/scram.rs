//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, for MQTT 5 enhanced authentication.
//!
//! The exchange over MQTT (Authentication Method `SCRAM-SHA-256`):
//! 1. CONNECT (or AUTH 0x19 to re-authenticate) carries client-first
//!    (`n,,n=USER,r=CNONCE`) as Authentication Data;
//! 2. the server answers AUTH 0x18 with server-first (`r=CNONCE+SNONCE,s=SALT,i=ITERATIONS`);
//! 3. the client sends AUTH 0x18 with client-final (`c=biws,r=NONCE,p=PROOF`);
//! 4. the server answers CONNACK 0x00 (or AUTH 0x00) with server-final (`v=SIGNATURE`), or
//!    refuses.
//!
//! The server keeps a [`ScramVerifier`] per user: salt, iterations, StoredKey and ServerKey,
//! never the SaltedPassword, so a leaked verifier does not let anyone authenticate (it still
//! allows an offline dictionary attack at the cost of the iterations). Verifiers are made by
//! `femtomq passwd` from passwords of printable ASCII only: SASLprep (RFC 4013) leaves those
//! unchanged, so no Unicode normalization is needed; other passwords get no verifier.
//!
//! Proofs are compared in constant time. An unknown user gets a server-first like a known one
//! (a salt derived from a process secret and the user name, the default iterations) and fails
//! at the proof, so the exchange does not tell which users exist. Channel binding is not
//! supported (`p=` is refused; `y` and `n` are accepted), nor an authorization identity that
//! differs from the user name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::passwd::constant_time_eq;

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";
/// Iterations `femtomq passwd` uses: the minimum RFC 7677 recommends. The cost is the client's;
/// the server computes a few HMACs per exchange whatever the count.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Bytes of salt `femtomq passwd` uses.
pub const SALT_LEN: usize = 16;
/// Bytes of randomness in a server nonce.
pub const NONCE_LEN: usize = 18;
/// Longest client-first or client-final message accepted.
pub const MAX_MESSAGE: usize = 1024;

const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// What the server stores for one user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 rounds.
    pub iterations: u32,
    /// Salt bytes.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; KEY_LEN],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        write!(f, "ScramVerifier({} rounds)", self.iterations)
    }
}

/// Why a password cannot have a SCRAM verifier.
pub const PASSWORD_NOT_ASCII: &str = "SCRAM-SHA-256 needs a password of printable ASCII \
    (SASLprep of other characters is not implemented): the user can log in with a password \
    but not with SCRAM-SHA-256";

impl ScramVerifier {
    /// The verifier of `password`; refused unless it is printable ASCII (see the module).
    pub fn new(password: &[u8], salt: &[u8], iterations: u32) -> Result<ScramVerifier, String> {
        if password.is_empty() || !password.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(PASSWORD_NOT_ASCII.into());
        }
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        Ok(ScramVerifier::from_salted_password(
            &salted, salt, iterations,
        ))
    }

    /// The verifier of a SaltedPassword.
    pub fn from_salted_password(salted: &[u8], salt: &[u8], iterations: u32) -> ScramVerifier {
        let client_key = hmac(salted, &[b"Client Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(salted, &[b"Server Key"]),
        }
    }

    /// `ITERATIONS:SALT:STOREDKEY:SERVERKEY` (base64 fields), as in a password file line.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Parses [`ScramVerifier::encode`]'s output.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let mut fields = text.split(':');
        let (Some(iterations), Some(salt), Some(stored), Some(server), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err("expected ITERATIONS:SALT:STOREDKEY:SERVERKEY".into());
        };
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{iterations}` is not a number of iterations"))?;
        let decode = |field: &str, what: &str| {
            STANDARD
                .decode(field)
                .map_err(|e| format!("the {what} is not valid base64: {e}"))
        };
        let key = |field: &str, what: &str| -> Result<[u8; KEY_LEN], String> {
            decode(field, what)?
                .try_into()
                .map_err(|_| format!("the {what} is not {KEY_LEN} bytes"))
        };
        let salt = decode(salt, "salt")?;
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored, "StoredKey")?,
            server_key: key(server, "ServerKey")?,
        })
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    /// A message that is not SCRAM, or that breaks its rules (CONNACK 0x87 Not authorized).
    Malformed(&'static str),
    /// The client asked for something not supported: channel binding, an authorization
    /// identity other than the user, a mandatory extension (0x87).
    Unsupported(&'static str),
    /// The proof does not match: wrong password or unknown user (0x86 Bad user name or
    /// password).
    InvalidProof,
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            ScramError::Unsupported(what) => write!(f, "unsupported SCRAM request: {what}"),
            ScramError::InvalidProof => f.write_str("invalid SCRAM proof"),
        }
    }
}

/// The user name of a client-first message, when it is well formed (to look up its verifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user (`n=`, unescaped).
    pub username: String,
    gs2_header: String,
    bare: String,
    client_nonce: String,
}

/// Decodes a `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn sasl_name(text: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce: printable ASCII except `,`, not empty.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',')
}

impl ClientFirst {
    /// Parses client-first (`gs2-header client-first-bare`).
    pub fn parse(data: &[u8]) -> Result<ClientFirst, ScramError> {
        if data.len() > MAX_MESSAGE {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ScramError::Malformed("no GS2 header"));
        };
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Unsupported("channel binding"));
            }
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let authzid = match authzid {
            "" => None,
            _ => {
                Some(sasl_name(authzid.strip_prefix("a=").ok_or(
                    ScramError::Malformed("bad authorization identity"),
                )?)?)
            }
        };
        let mut attributes = bare.split(',');
        let username = match attributes.next() {
            Some(user) if user.starts_with("m=") => {
                return Err(ScramError::Unsupported("mandatory extension"));
            }
            Some(user) => sasl_name(
                user.strip_prefix("n=")
                    .ok_or(ScramError::Malformed("no user name"))?,
            )?,
            None => return Err(ScramError::Malformed("no user name")),
        };
        if username.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|nonce| valid_nonce(nonce))
            .ok_or(ScramError::Malformed("no valid nonce"))?;
        if authzid.is_some_and(|a| a != username) {
            return Err(ScramError::Unsupported(
                "an authorization identity other than the user",
            ));
        }
        Ok(ClientFirst {
            username,
            gs2_header: text[..text.len() - bare.len()].to_string(),
            bare: bare.to_string(),
            client_nonce: client_nonce.to_string(),
        })
    }
}

/// The server's state between server-first and client-final.
#[derive(Clone)]
pub struct ServerExchange {
    /// The user being authenticated.
    pub username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// `None` for an unknown user: the exchange goes on and fails at the proof.
    verifier: Option<ScramVerifier>,
}

impl std::fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerExchange({})", self.username)
    }
}

/// The salt shown for a user without a verifier: stable for the process, unrelated to any real
/// salt, so that asking twice does not reveal that the user is unknown.
pub fn decoy_salt(secret: &[u8], username: &str) -> [u8; SALT_LEN] {
    let mac = hmac(secret, &[b"femtomq decoy salt", username.as_bytes()]);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&mac[..SALT_LEN]);
    salt
}

impl ServerExchange {
    /// Answers `client_first` with server-first. `verifier` is the user's (`None`: unknown;
    /// `decoy_salt` is then shown), `server_nonce` printable ASCII without `,`.
    pub fn start(
        client_first: ClientFirst,
        verifier: Option<ScramVerifier>,
        server_nonce: &str,
        decoy_salt: &[u8],
    ) -> (ServerExchange, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", client_first.client_nonce);
        let (salt, iterations) = match &verifier {
            Some(v) => (STANDARD.encode(&v.salt), v.iterations),
            None => (STANDARD.encode(decoy_salt), DEFAULT_ITERATIONS),
        };
        let server_first = format!("r={nonce},s={salt},i={iterations}");
        let message = server_first.clone().into_bytes();
        (
            ServerExchange {
                username: client_first.username,
                gs2_header: client_first.gs2_header,
                client_first_bare: client_first.bare,
                server_first,
                nonce,
                verifier,
            },
            message,
        )
    }

    /// Checks client-final; on success, server-final (`v=...`).
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        if client_final.len() > MAX_MESSAGE {
            return Err(ScramError::Malformed("message too long"));
        }
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding differs from the GS2 header",
            ));
        }
        if !constant_time_eq(nonce.as_bytes(), self.nonce.as_bytes()) {
            return Err(ScramError::Malformed("nonce differs"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        // An unknown user goes through the same computation with a key nobody has.
        let (stored_key, server_key) = match &self.verifier {
            Some(v) => (v.stored_key, v.server_key),
            None => ([0u8; KEY_LEN], [0u8; KEY_LEN]),
        };
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; KEY_LEN];
        if proof.len() == KEY_LEN {
            for (i, byte) in client_key.iter_mut().enumerate() {
                *byte = proof[i] ^ signature[i];
            }
        }
        let computed: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let matches = constant_time_eq(&computed, &stored_key);
        if !matches || proof.len() != KEY_LEN || self.verifier.is_none() {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// A server nonce from the OS random number generator: [`NONCE_LEN`] bytes, base64.
pub fn server_nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; NONCE_LEN];
    fill_random(&mut bytes)?;
    Ok(STANDARD.encode(bytes))
}

/// Fills `bytes` from the OS random number generator (`getrandom(2)`).
pub fn fill_random(bytes: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::new(b"pencil", &salt, 4096).unwrap()
    }

    fn start(client_first: &str, verifier: Option<ScramVerifier>) -> (ServerExchange, String) {
        let first = ClientFirst::parse(client_first.as_bytes()).unwrap();
        let (exchange, message) = ServerExchange::start(first, verifier, SERVER_NONCE, &[7; 16]);
        (exchange, String::from_utf8(message).unwrap())
    }

    #[test]
    fn rfc7677_test_vector() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.username, "user");
        let (exchange, server_first) = start(CLIENT_FIRST, Some(rfc_verifier()));
        assert_eq!(server_first, SERVER_FIRST);
        let server_final = exchange.finish(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, SERVER_FINAL.as_bytes());
    }

    #[test]
    fn verifiers_round_trip_and_hide_their_keys() {
        let verifier = rfc_verifier();
        let text = verifier.encode();
        assert!(text.starts_with("4096:W22ZaJ0SNY7soEsUEjb6gQ==:"), "{text}");
        assert_eq!(ScramVerifier::parse(&text).unwrap(), verifier);
        assert_eq!(format!("{verifier:?}"), "ScramVerifier(4096 rounds)");
        for (bad, words) in [
            ("4096:AAAA:AAAA", "ITERATIONS:SALT"),
            ("x:AAAA:AAAA:AAAA", "iterations"),
            ("0:AAAA:AAAA:AAAA", "iterations"),
            ("4096::AAAA:AAAA", "salt is empty"),
            ("4096:AAAA:AAAA:AAAA", "StoredKey is not 32 bytes"),
            ("4096:!:AAAA:AAAA", "base64"),
        ] {
            let error = ScramVerifier::parse(bad).unwrap_err();
            assert!(error.contains(words), "{bad}: {error}");
        }
    }

    #[test]
    fn only_printable_ascii_passwords_get_a_verifier() {
        assert!(ScramVerifier::new(b"p@ss word~", b"salt", 1).is_ok());
        for bad in [&b""[..], "pässword".as_bytes(), b"tab\there"] {
            assert_eq!(
                ScramVerifier::new(bad, b"salt", 1).unwrap_err(),
                PASSWORD_NOT_ASCII
            );
        }
    }

    #[test]
    fn a_wrong_password_is_an_invalid_proof() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let other = ScramVerifier::new(b"pencil2", &salt, 4096).unwrap();
        let (exchange, _) = start(CLIENT_FIRST, Some(other));
        assert_eq!(
            exchange.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        // A proof of the wrong length, and an altered one.
        let (exchange, _) = start(CLIENT_FIRST, Some(rfc_verifier()));
        let short =
            CLIENT_FINAL.replace("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "p=AAAA");
        assert_eq!(
            exchange.finish(short.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        let altered = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(
            exchange.finish(altered.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn an_unknown_user_looks_known_until_the_proof() {
        let (exchange, server_first) = start(CLIENT_FIRST, None);
        assert_eq!(
            server_first,
            format!(
                "r=rOprNGfwEbeRWgbNEkqO{SERVER_NONCE},s={},i=4096",
                STANDARD.encode([7u8; 16])
            )
        );
        assert_eq!(
            exchange.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        // The decoy salt is stable per user and differs between users.
        assert_eq!(decoy_salt(b"k", "a"), decoy_salt(b"k", "a"));
        assert_ne!(decoy_salt(b"k", "a"), decoy_salt(b"k", "b"));
    }

    #[test]
    fn malformed_and_unsupported_client_first_messages() {
        for (message, expected) in [
            ("", ScramError::Malformed("no GS2 header")),
            ("n,,", ScramError::Malformed("no user name")),
            (
                "x,,n=user,r=abc",
                ScramError::Malformed("bad channel binding flag"),
            ),
            (
                "p=tls-unique,,n=user,r=abc",
                ScramError::Unsupported("channel binding"),
            ),
            ("n,,r=abc", ScramError::Malformed("no user name")),
            ("n,,n=,r=abc", ScramError::Malformed("empty user name")),
            (
                "n,,n=us=er,r=abc",
                ScramError::Malformed("bad escape in a user name"),
            ),
            ("n,,n=user", ScramError::Malformed("no valid nonce")),
            ("n,,n=user,r=", ScramError::Malformed("no valid nonce")),
            (
                "n,,m=ext,n=user,r=abc",
                ScramError::Unsupported("mandatory extension"),
            ),
            (
                "n,a=admin,n=user,r=abc",
                ScramError::Unsupported("an authorization identity other than the user"),
            ),
            (
                "n,b=x,n=user,r=abc",
                ScramError::Malformed("bad authorization identity"),
            ),
        ] {
            assert_eq!(
                ClientFirst::parse(message.as_bytes()),
                Err(expected),
                "{message:?}"
            );
        }
        assert_eq!(
            ClientFirst::parse(&[b'n'; MAX_MESSAGE + 1]),
            Err(ScramError::Malformed("message too long"))
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=\xff,r=abc"),
            Err(ScramError::Malformed("not UTF-8"))
        );
        // Escapes, an authzid equal to the user, and the `y` flag are accepted.
        let first = ClientFirst::parse(b"y,a=a=2Cb=3D,n=a=2Cb=3D,r=abc,x=ext").unwrap();
        assert_eq!(first.username, "a,b=");
        assert_eq!(first.gs2_header, "y,a=a=2Cb=3D,");
    }

    #[test]
    fn malformed_client_final_messages() {
        let (exchange, _) = start(CLIENT_FIRST, Some(rfc_verifier()));
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        for (message, expected) in [
            (format!("c=biws,r={nonce}"), "no proof"),
            (format!("r={nonce},{proof}"), "no channel binding"),
            (format!("c=biws,{proof}"), "no nonce"),
            (
                format!("c=eSws,r={nonce},{proof}"),
                "channel binding differs from the GS2 header",
            ),
            (
                format!("c=!!,r={nonce},{proof}"),
                "channel binding is not base64",
            ),
            (format!("c=biws,r={nonce}x,{proof}"), "nonce differs"),
            (format!("c=biws,r={nonce},p=!!"), "proof is not base64"),
        ] {
            assert_eq!(
                exchange.finish(message.as_bytes()),
                Err(ScramError::Malformed(expected)),
                "{message}"
            );
        }
        // The right message still succeeds afterwards: the exchange is not consumed by errors.
        assert!(exchange.finish(CLIENT_FINAL.as_bytes()).is_ok());
    }

    #[test]
    fn server_nonces_are_random_and_valid() {
        let a = server_nonce().unwrap();
        let b = server_nonce().unwrap();
        assert_ne!(a, b);
        assert!(valid_nonce(&a) && a.len() == 24, "{a}");
    }
}
