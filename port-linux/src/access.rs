//! From the settings to the access rules the server enforces: reads the password and ACL files
//! of every listener (each file once), resolves the HTTP callout's URLs, and fails with the file
//! and line named when anything cannot be used. Also `femtomq passwd`.

#[cfg(feature = "auth")]
use std::collections::HashMap;
#[cfg(feature = "auth")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use femtomq_posix::auth::AclFile;
use femtomq_posix::{AccessRules, AuthFileError, ListenerRules};

use crate::config::{ConfigError, ListenerAuth, Settings};

fn file_error(error: AuthFileError) -> ConfigError {
    ConfigError {
        file: Some(error.file),
        line: error.line,
        key: None,
        message: error.message,
    }
}

/// Files read so far, so that a file named by several listeners is read once (a few files: a
/// list, not a HashMap, which would cost the minimal build a hash table and SipHash).
#[derive(Default)]
struct Loaded {
    acl: Vec<(PathBuf, Arc<AclFile>)>,
    #[cfg(feature = "auth")]
    passwords: HashMap<PathBuf, Arc<femtomq_posix::auth::PasswordFile>>,
}

impl Loaded {
    fn rules(
        &mut self,
        own: &ListenerAuth,
        name: &str,
        settings: &Settings,
    ) -> Result<ListenerRules, ConfigError> {
        let password_file = own
            .password_file
            .as_ref()
            .or(settings.password_file.as_ref());
        let acl_file = own.acl_file.as_ref().or(settings.acl_file.as_ref());
        let allow_anonymous = own
            .allow_anonymous
            .or(settings.allow_anonymous)
            .unwrap_or(password_file.is_none());
        let acl = match acl_file {
            Some(path) => Some(match self.acl.iter().find(|(loaded, _)| loaded == path) {
                Some((_, acl)) => acl.clone(),
                None => {
                    let acl = Arc::new(AclFile::load(path).map_err(file_error)?);
                    self.acl.push((path.clone(), acl.clone()));
                    acl
                }
            }),
            None => None,
        };
        #[cfg(feature = "auth")]
        let passwords = match password_file {
            Some(path) => Some(match self.passwords.get(path) {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(
                        femtomq_posix::auth::PasswordFile::load(path).map_err(file_error)?,
                    );
                    self.passwords.insert(path.clone(), file.clone());
                    file
                }
            }),
            None => None,
        };
        #[cfg(not(feature = "auth"))]
        if let Some(path) = password_file {
            return Err(ConfigError {
                file: Some(path.clone()),
                line: None,
                key: Some("password_file".into()),
                message: "this femtomq was built without the `auth` feature".into(),
            });
        }
        Ok(ListenerRules {
            name: name.to_string(),
            protocol_versions: own.protocol_versions,
            allow_anonymous,
            #[cfg(feature = "auth")]
            passwords,
            acl,
        })
    }
}

/// Reads every file the settings name. `listeners` is the number of listeners that will be
/// opened: when the settings have their own `[[listener]]`s, rules follow their order.
pub fn load(settings: &Settings) -> Result<AccessRules, ConfigError> {
    let mut loaded = Loaded::default();
    let fallback = loaded.rules(&ListenerAuth::default(), "", settings)?;
    let listeners = settings
        .listener_auth
        .iter()
        .enumerate()
        .map(|(index, own)| {
            let name = settings
                .listeners
                .get(index)
                .map(ToString::to_string)
                .unwrap_or_default();
            loaded.rules(own, &name, settings)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AccessRules {
        listeners,
        fallback,
        #[cfg(feature = "auth")]
        http: http(settings)?,
        #[cfg(feature = "auth")]
        throttle: Arc::new(femtomq_posix::auth::Throttle::new(settings.throttle)),
    })
}

#[cfg(feature = "auth")]
fn http(
    settings: &Settings,
) -> Result<Option<Arc<femtomq_posix::auth::HttpAuthConfig>>, ConfigError> {
    use femtomq_posix::auth::{HttpAuthConfig, HttpMethod, HttpUrl};
    let Some(http) = &settings.http_auth else {
        return Ok(None);
    };
    let url = |url: &Option<String>, key: &str| -> Result<Option<HttpUrl>, ConfigError> {
        url.as_deref()
            .map(|url| HttpUrl::parse(url).map_err(|e| ConfigError::flag(key, e)))
            .transpose()
    };
    Ok(Some(Arc::new(HttpAuthConfig {
        auth_url: url(&http.auth_url, "http_auth.auth_url")?,
        acl_url: url(&http.acl_url, "http_auth.acl_url")?,
        method: if http.post {
            HttpMethod::Post
        } else {
            HttpMethod::Get
        },
        params: http.params.clone(),
        timeout: std::time::Duration::from_millis(http.timeout_ms),
        cache_ttl: std::time::Duration::from_millis(http.cache_ttl_ms),
        cache_size: http.cache_size,
    })))
}

#[cfg(not(feature = "auth"))]
fn check_no_http(settings: &Settings) -> Result<(), ConfigError> {
    match settings.http_auth {
        Some(_) => Err(ConfigError::flag(
            "http_auth",
            "this femtomq was built without the `auth` feature",
        )),
        None => Ok(()),
    }
}

/// Refuses what a build without the `auth` feature cannot enforce.
pub fn check_features(settings: &Settings) -> Result<(), ConfigError> {
    #[cfg(not(feature = "auth"))]
    check_no_http(settings)?;
    let _ = settings;
    Ok(())
}

/// `femtomq passwd [-c] [-D] FILE USER`: adds, updates (`$7$`, as mosquitto_passwd 2 writes)
/// or deletes a user, keeping the other lines as they are. The password is read from the
/// terminal without echo (twice), or as one line from standard input when it is not a terminal.
///
/// With the `$7$` line goes the user's SCRAM-SHA-256 verifier line (`#SCRAM-SHA-256:...`, a
/// comment to Mosquitto), for MQTT 5 enhanced authentication; a password that is not printable
/// ASCII gets none, with a warning.
#[cfg(feature = "auth")]
pub fn passwd(file: &Path, user: &str, create: bool, delete: bool) -> Result<(), String> {
    use femtomq_posix::auth::PasswordHash;
    use femtomq_posix::auth::passwd::{DEFAULT_ITERATIONS, SALT_LEN};

    use femtomq_posix::auth::passwd::{SCRAM_PREFIX, scram_line};
    use femtomq_posix::auth::scram::{self, ScramVerifier};

    if user.is_empty() || user.contains([':', '\n', '\r']) || user.starts_with('#') {
        return Err(format!(
            "`{user}`: a user name cannot be empty, contain `:` or start with `#`"
        ));
    }
    if create && delete {
        return Err("-c and -D cannot be used together".into());
    }
    let existing = if create {
        String::new()
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    // Only a file that is valid is changed: its errors name their line.
    femtomq_posix::auth::PasswordFile::parse(&existing, file).map_err(|e| e.to_string())?;
    let is_user = |line: &str| line.split_once(':').is_some_and(|(name, _)| name == user);
    let is_scram = |line: &str| {
        line.strip_prefix(SCRAM_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(name, _)| name == user)
    };
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    lines.retain(|line| !is_scram(line));
    if delete {
        let before = lines.len();
        lines.retain(|line| !is_user(line));
        if lines.len() == before {
            return Err(format!("user `{user}` is not in {}", file.display()));
        }
    } else {
        let password = read_password()?;
        let mut salt = [0u8; SALT_LEN];
        rustix::rand::getrandom(&mut salt, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| format!("no random salt: {e}"))?;
        let hash = PasswordHash::new_pbkdf2(password.as_bytes(), salt, DEFAULT_ITERATIONS);
        let entry = format!("{user}:{}", hash.encode());
        let at = match lines.iter().position(|line| is_user(line)) {
            Some(at) => {
                lines[at] = entry;
                at
            }
            None => {
                lines.push(entry);
                lines.len() - 1
            }
        };
        let mut scram_salt = [0u8; scram::SALT_LEN];
        scram::fill_random(&mut scram_salt).map_err(|e| format!("no random salt: {e}"))?;
        match ScramVerifier::new(password.as_bytes(), &scram_salt, scram::DEFAULT_ITERATIONS) {
            Ok(verifier) => lines.insert(at + 1, scram_line(user, &hash, &verifier)),
            Err(why) => eprintln!("warning: {why}"),
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_replacing(file, text.as_bytes())
}

/// Writes `bytes` to a temporary file next to `file` and renames it over `file`: readers see
/// the old file or the new one, never half of one. A new file is readable by its owner only.
#[cfg(feature = "auth")]
fn write_replacing(file: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let name = file
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", file.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".tmp");
    let temporary = file.with_file_name(temporary_name);
    let mode = std::fs::metadata(file).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {}: {e}", file.display())
    })
}

/// The password: from the terminal without echo (asked twice), else one line of stdin.
#[cfg(feature = "auth")]
fn read_password() -> Result<String, String> {
    use std::io::{BufRead as _, Write as _};
    let stdin = std::io::stdin();
    if !rustix::termios::isatty(&stdin) {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err("no password on standard input".into());
        }
        return Ok(password);
    }
    let ask = |prompt: &str| -> Result<String, String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let saved = rustix::termios::tcgetattr(&stdin).map_err(|e| format!("terminal: {e}"))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(|e| format!("terminal: {e}"))?;
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        eprintln!();
        read.map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let password = ask("Password: ")?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    if ask("Reenter password: ")? != password {
        return Err("passwords do not match".into());
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_inherit_and_override_and_anonymous_follows_the_password_file() {
        let dir = std::env::temp_dir().join(format!("femtomq-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.acl"), "topic read #\n").unwrap();
        std::fs::write(
            dir.join("pw"),
            "alice:$6$MDEyMzQ1Njc4OWFi$qEXipeLbgxRlwd06QHfY5WITkUZg0jLg9SZbXzq3ifXjfj+v3GbJGrSfC5PAg3UNCS+UFfbhUIZX4bmIAs330w==\n",
        )
        .unwrap();
        let text = "acl_file = \"a.acl\"\n\
                    [[listener]]\nurl = \"127.0.0.1:0\"\n\
                    [[listener]]\nurl = \"127.0.0.1:0\"\npassword_file = \"pw\"\n\
                    [[listener]]\nurl = \"127.0.0.1:0\"\npassword_file = \"pw\"\nallow_anonymous = true\n";
        let settings = Settings::from_text(text, &dir.join("f.toml")).unwrap();
        let rules = load(&settings).unwrap();
        assert_eq!(rules.listeners.len(), 3);
        assert!(rules.fallback.allow_anonymous);
        assert!(rules.listeners[0].allow_anonymous);
        assert!(!rules.listeners[1].allow_anonymous);
        assert!(rules.listeners[2].allow_anonymous);
        assert!(rules.listeners.iter().all(|l| l.acl.is_some()));
        #[cfg(feature = "auth")]
        {
            assert!(rules.listeners[0].passwords.is_none());
            // The same file is read once and shared.
            let (a, b) = (&rules.listeners[1].passwords, &rules.listeners[2].passwords);
            assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
        }
        // A global password file turns anonymous access off by default.
        let settings =
            Settings::from_text("password_file = \"pw\"\n", &dir.join("f.toml")).unwrap();
        assert!(!load(&settings).unwrap().fallback.allow_anonymous);
        // A bad file names itself and its line.
        std::fs::write(dir.join("bad.acl"), "topic read #\nbogus\n").unwrap();
        let settings =
            Settings::from_text("acl_file = \"bad.acl\"\n", &dir.join("f.toml")).unwrap();
        let error = load(&settings).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}:2: ", dir.join("bad.acl").display())),
            "{error}"
        );
        let settings =
            Settings::from_text("acl_file = \"missing\"\n", &dir.join("f.toml")).unwrap();
        let error = load(&settings).unwrap_err().to_string();
        assert!(error.contains("missing: cannot read"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
