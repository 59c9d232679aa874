//! Password files in the format of Mosquitto's `mosquitto_passwd`, so users can bring theirs.
//!
//! One `USER:HASH` per line; blank lines and lines starting with `#` are ignored. `HASH` is
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 of the password with the salt, `ITERATIONS`
//!   rounds (mosquitto_passwd 2.0 writes 101 and a 12-byte salt), 64-byte hash; or
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (older files).
//!
//! `SALT` and `HASH` are standard base64 with padding (RFC 4648 §4, `+` and `/`). Plain-text
//! passwords and anything else are refused with the line named. Hashes are compared in
//! constant time, and an unknown user costs as much as a known one.
//!
//! A user may also have a SCRAM-SHA-256 verifier (see [`super::scram`]), on a line that
//! Mosquitto reads as a comment and `mosquitto_passwd` keeps as it is:
//! `#SCRAM-SHA-256:USER:ITERATIONS:SALT:STOREDKEY:SERVERKEY:BINDING`. `BINDING` is a digest of
//! the user's own `USER:HASH` line: a verifier whose user was deleted, or whose password was
//! changed by `mosquitto_passwd` (which does not know about verifiers), no longer matches and is
//! ignored with a warning, so SCRAM never accepts a password the file no longer holds.
//! `femtomq passwd` writes both lines. The verifier holds StoredKey and ServerKey, never the
//! SaltedPassword: a leaked file does not let anyone log in with SCRAM (see the README on why
//! no SCRAM-SHA-512 is served from the `$7$` hashes, which are SaltedPasswords).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

use super::AuthFileError;
use super::scram::ScramVerifier;

/// The start of a SCRAM-SHA-256 verifier line.
pub const SCRAM_PREFIX: &str = "#SCRAM-SHA-256:";

/// Rounds `femtomq passwd` uses, as mosquitto_passwd 2.0 does.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Bytes of salt `femtomq passwd` uses, as mosquitto_passwd does.
pub const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Rounds.
        iterations: u32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// The 64-byte derived key.
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512 of password then salt.
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// The 64-byte digest.
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes into logs.
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash::Pbkdf2Sha512({iterations} rounds)")
            }
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512"),
        }
    }
}

impl PasswordHash {
    /// Parses the part after `USER:`.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let decode = |field: &str, what: &str| {
            STANDARD
                .decode(field)
                .map_err(|e| format!("the {what} is not valid base64: {e}"))
        };
        let check_hash = |hash: Vec<u8>| {
            if hash.len() == HASH_LEN {
                Ok(hash)
            } else {
                Err(format!("the hash has {} bytes, not {HASH_LEN}", hash.len()))
            }
        };
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut fields = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err("a $7$ hash is $7$ITERATIONS$SALT$HASH".into());
            };
            let iterations: u32 = iterations
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("`{iterations}` is not a number of iterations"))?;
            let salt = decode(salt, "salt")?;
            if salt.is_empty() {
                return Err("the salt is empty".into());
            }
            Ok(PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash: check_hash(decode(hash, "hash")?)?,
            })
        } else if let Some(rest) = text.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err("a $6$ hash is $6$SALT$HASH".into());
            };
            let salt = decode(salt, "salt")?;
            Ok(PasswordHash::Sha512 {
                salt,
                hash: check_hash(decode(hash, "hash")?)?,
            })
        } else {
            Err(
                "not a $7$ or $6$ hash (plain-text passwords are not accepted: hash the file \
                 with `femtomq passwd` or `mosquitto_passwd -U`)"
                    .into(),
            )
        }
    }

    /// A new `$7$` hash of `password`.
    pub fn new_pbkdf2(password: &[u8], salt: [u8; SALT_LEN], iterations: u32) -> PasswordHash {
        let mut hash = vec![0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt: salt.to_vec(),
            hash,
        }
    }

    /// The hash as written in the file (after `USER:`).
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
        }
    }

    /// Whether `password` is the one hashed, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0u8; HASH_LEN];
        let stored = match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                hash
            }
            PasswordHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                computed.copy_from_slice(&digest.finalize());
                hash
            }
        };
        constant_time_eq(&computed, stored)
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimizer from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

/// The `BINDING` field of a verifier line: ties the verifier to the user's hash line.
pub fn scram_binding(hash: &PasswordHash) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(b"femtomq SCRAM binding\0")
        .chain_update(hash.encode().as_bytes())
        .finalize();
    STANDARD.encode(&digest[..12])
}

/// The verifier line of `user`, whose hash line holds `hash`.
pub fn scram_line(user: &str, hash: &PasswordHash, verifier: &ScramVerifier) -> String {
    format!(
        "{SCRAM_PREFIX}{user}:{}:{}",
        verifier.encode(),
        scram_binding(hash)
    )
}

/// A parsed password file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    scram: HashMap<String, ScramVerifier>,
}

impl PasswordFile {
    /// Reads and parses `path`; errors name the file and line.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthFileError::new(path, None, format!("cannot read: {e}")))?;
        PasswordFile::parse(&text, path)
    }

    /// Parses password file `text` (named `path` in errors).
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, AuthFileError> {
        let mut users = HashMap::new();
        // User -> (line, verifier, binding).
        let mut verifiers: HashMap<String, (usize, ScramVerifier, String)> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches(['\r', ' ', '\t']);
            let error = |message: String| AuthFileError::new(path, Some(index + 1), message);
            if let Some(rest) = line.strip_prefix(SCRAM_PREFIX) {
                let parsed = rest.split_once(':').and_then(|(user, rest)| {
                    let (verifier, binding) = rest.rsplit_once(':')?;
                    Some((user, verifier, binding))
                });
                let Some((user, verifier, binding)) = parsed.filter(|(u, ..)| !u.is_empty()) else {
                    return Err(error(format!(
                        "expected {SCRAM_PREFIX}USER:ITERATIONS:SALT:STOREDKEY:SERVERKEY:BINDING"
                    )));
                };
                let verifier = ScramVerifier::parse(verifier)
                    .map_err(|e| error(format!("SCRAM-SHA-256 verifier of `{user}`: {e}")))?;
                let entry = (index + 1, verifier, binding.to_string());
                if verifiers.insert(user.to_string(), entry).is_some() {
                    return Err(error(format!(
                        "user `{user}` has a second SCRAM-SHA-256 verifier"
                    )));
                }
                continue;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(error("expected USER:HASH".into()));
            };
            if user.is_empty() {
                return Err(error("empty user name".into()));
            }
            let hash =
                PasswordHash::parse(hash).map_err(|e| error(format!("user `{user}`: {e}")))?;
            if users.insert(user.to_string(), hash).is_some() {
                return Err(error(format!("user `{user}` appears twice")));
            }
        }
        let mut scram = HashMap::new();
        for (user, (line, verifier, binding)) in verifiers {
            match users.get(&user) {
                Some(hash)
                    if constant_time_eq(scram_binding(hash).as_bytes(), binding.as_bytes()) =>
                {
                    scram.insert(user, verifier);
                }
                Some(_) => log::warn!(
                    "{}:{line}: the SCRAM-SHA-256 verifier of `{user}` was made for another \
                     password (changed by mosquitto_passwd?): ignored, run `femtomq passwd` \
                     to make a new one",
                    path.display()
                ),
                None => log::warn!(
                    "{}:{line}: SCRAM-SHA-256 verifier of `{user}`, who has no password line: \
                     ignored",
                    path.display()
                ),
            }
        }
        Ok(PasswordFile { users, scram })
    }

    /// `user`'s SCRAM-SHA-256 verifier, if the file has a valid one.
    pub fn scram(&self, user: &str) -> Option<&ScramVerifier> {
        self.scram.get(user)
    }

    /// `user`'s hash line, if any.
    pub fn hash(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// Checks `user`'s password: `None` when the file has no such user (after the same work as
    /// for a known one, so that timing does not tell which users exist).
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<bool> {
        match self.users.get(user) {
            Some(hash) => Some(hash.verify(password)),
            None => {
                let dummy = PasswordHash::Pbkdf2Sha512 {
                    iterations: DEFAULT_ITERATIONS,
                    salt: vec![0; SALT_LEN],
                    hash: vec![0; HASH_LEN],
                };
                let _ = std::hint::black_box(dummy.verify(password));
                None
            }
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -b -c FILE alice secret` (Mosquitto 2.0.11).
    const MOSQUITTO_7: &str = "alice:$7$101$OeW5M5Jj/jiYlPHR$PuVj9vFRY8mevwKRIia3Av6IBD+nHwUfszP3go7xD02kIUP9A6wsT4JfJK1LM4xc+/fJ6tkxWHBycFJ0Ig6I+Q==";

    /// A `$6$` line: SHA-512("secret" || salt) with the salt bytes b"0123456789ab",
    /// computed independently with Python's hashlib.
    const SHA512_6: &str = "bob:$6$MDEyMzQ1Njc4OWFi$qEXipeLbgxRlwd06QHfY5WITkUZg0jLg9SZbXzq3ifXjfj+v3GbJGrSfC5PAg3UNCS+UFfbhUIZX4bmIAs330w==";

    fn file(text: &str) -> PasswordFile {
        PasswordFile::parse(text, Path::new("pw")).unwrap()
    }

    #[test]
    fn a_mosquitto_passwd_line_verifies() {
        let pw = file(MOSQUITTO_7);
        assert_eq!(pw.verify("alice", b"secret"), Some(true));
        assert_eq!(pw.verify("alice", b"Secret"), Some(false));
        assert_eq!(pw.verify("alice", b""), Some(false));
        assert_eq!(pw.verify("mallory", b"secret"), None);
    }

    #[test]
    fn a_sha512_line_verifies() {
        let pw = file(SHA512_6);
        assert_eq!(pw.verify("bob", b"secret"), Some(true));
        assert_eq!(pw.verify("bob", b"secret2"), Some(false));
    }

    #[test]
    fn new_hashes_round_trip_through_the_file_format() {
        let hash = PasswordHash::new_pbkdf2(b"pa:ss word", *b"saltsaltsalt", DEFAULT_ITERATIONS);
        let line = format!("carol:{}", hash.encode());
        assert!(line.starts_with("carol:$7$101$c2FsdHNhbHRzYWx0$"), "{line}");
        let pw = file(&format!("# comment\n\n{line}\n{MOSQUITTO_7}\n"));
        assert_eq!(pw.len(), 2);
        assert_eq!(pw.verify("carol", b"pa:ss word"), Some(true));
        assert_eq!(pw.verify("carol", b"pa:ss"), Some(false));
    }

    #[test]
    fn pbkdf2_sha512_matches_a_known_vector() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1 round) starts 867f70cf1ade02cf (RFC 6070
        // style vector, checked with Python's hashlib).
        let mut derived = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"password", b"salt", 1, &mut derived);
        assert_eq!(
            derived[..8],
            [0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line() {
        for (text, line, words) in [
            ("alice\n", 1, "expected USER:HASH"),
            ("# c\nalice:secret\n", 2, "plain-text"),
            ("a:$7$x$AAAA$AAAA\n", 1, "iterations"),
            ("a:$7$0$AAAA$AAAA\n", 1, "iterations"),
            ("a:$7$101$!!$AAAA\n", 1, "base64"),
            ("a:$7$101$AAAA$AAAA\n", 1, "3 bytes, not 64"),
            ("a:$7$101$AAAA\n", 1, "$7$ITERATIONS$SALT$HASH"),
            ("a:$6$AAAA\n", 1, "$6$SALT$HASH"),
            (":$6$AAAA$AAAA\n", 1, "empty user name"),
            (&format!("{MOSQUITTO_7}\n{MOSQUITTO_7}\n"), 2, "twice"),
        ] {
            let error = PasswordFile::parse(text, Path::new("pw")).unwrap_err();
            assert_eq!(error.line, Some(line), "{text:?}: {error}");
            assert!(error.to_string().contains(words), "{text:?}: {error}");
            assert!(error.to_string().starts_with(&format!("pw:{line}: ")));
        }
    }

    #[test]
    fn scram_verifier_lines_bind_to_the_user_line() {
        let hash = PasswordHash::new_pbkdf2(b"pencil", *b"saltsaltsalt", DEFAULT_ITERATIONS);
        let verifier = ScramVerifier::new(b"pencil", b"0123456789abcdef", 4096).unwrap();
        let user_line = format!("user:{}", hash.encode());
        let scram = scram_line("user", &hash, &verifier);
        assert!(scram.starts_with("#SCRAM-SHA-256:user:4096:MDEyMzQ1Njc4OWFiY2RlZg==:"));
        // Either order; the verifier is kept.
        for text in [
            format!("{user_line}\n{scram}\n"),
            format!("{scram}\n{user_line}\n"),
        ] {
            let pw = file(&text);
            assert_eq!(pw.scram("user"), Some(&verifier));
            assert_eq!(pw.verify("user", b"pencil"), Some(true));
        }
        // The password changed by another tool: the verifier no longer counts.
        let other = PasswordHash::new_pbkdf2(b"other", *b"saltsaltsalt", DEFAULT_ITERATIONS);
        let pw = file(&format!("user:{}\n{scram}\n", other.encode()));
        assert_eq!(pw.scram("user"), None);
        // The user deleted: nor does it.
        let pw = file(&format!("{scram}\n{MOSQUITTO_7}\n"));
        assert_eq!(pw.scram("user"), None);
        assert_eq!(pw.len(), 1);
        // Malformed or repeated verifier lines are errors, with their line.
        for (text, line, words) in [
            (
                "#SCRAM-SHA-256:user\n".to_string(),
                1,
                "expected #SCRAM-SHA-256:USER",
            ),
            (
                "#SCRAM-SHA-256::1:AA==:AA==:AA==:x\n".to_string(),
                1,
                "expected",
            ),
            (
                "#SCRAM-SHA-256:user:1:AA==:AA==:AA==:x\n".to_string(),
                1,
                "StoredKey is not 32 bytes",
            ),
            (
                format!("{scram}\n{scram}\n"),
                2,
                "second SCRAM-SHA-256 verifier",
            ),
        ] {
            let error = PasswordFile::parse(&text, Path::new("pw")).unwrap_err();
            assert_eq!(error.line, Some(line), "{text:?}: {error}");
            assert!(error.to_string().contains(words), "{text:?}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_hashes() {
        let pw = file(MOSQUITTO_7);
        assert!(!format!("{pw:?}").contains("PuVj9"));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
