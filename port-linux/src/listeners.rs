//! TLS and WebSocket listener settings: the `--cert`/`--key`/`--cafile`/`--require-certificate`/
//! `--use-identity-as-username` flags, and the checks every listener passes before startup (and
//! before a reload is accepted). Per-listener keys of the file are read in `config.rs`.

use std::path::PathBuf;

use femtomq_posix::{TlsFiles, Transport};

use crate::config::{ConfigError, Settings};

/// The TLS flags of `femtomq start`.
#[derive(Debug, Default)]
pub struct TlsFlags<'a> {
    /// `--cert FILE`.
    pub cert: Option<&'a PathBuf>,
    /// `--key FILE`.
    pub key: Option<&'a PathBuf>,
    /// `--cafile FILE`.
    pub cafile: Option<&'a PathBuf>,
    /// `--require-certificate`.
    pub require_certificate: bool,
    /// `--use-identity-as-username`.
    pub use_identity_as_username: bool,
}

/// Whether a listener speaks TLS.
pub fn is_tls(transport: Transport) -> bool {
    matches!(transport, Transport::Tls | Transport::WebSocketTls)
}

/// Applies the TLS flags to every `mqtts://` and `wss://` listener (over their file settings).
pub fn apply_tls_flags(settings: &mut Settings, flags: &TlsFlags<'_>) -> Result<(), ConfigError> {
    let given = flags.cert.is_some()
        || flags.key.is_some()
        || flags.cafile.is_some()
        || flags.require_certificate
        || flags.use_identity_as_username;
    if !given {
        return Ok(());
    }
    let mut applied = false;
    for listener in settings
        .listeners
        .iter_mut()
        .filter(|l| is_tls(l.transport))
    {
        let files = listener.tls.get_or_insert_with(TlsFiles::default);
        if let Some(cert) = flags.cert {
            files.cert = cert.clone();
        }
        if let Some(key) = flags.key {
            files.key = key.clone();
        }
        if let Some(cafile) = flags.cafile {
            files.cafile = Some(cafile.clone());
        }
        files.require_certificate |= flags.require_certificate;
        files.use_identity_as_username |= flags.use_identity_as_username;
        applied = true;
    }
    if !applied {
        return Err(ConfigError::flag(
            "--cert",
            "TLS options given but no TLS listener: add --listen mqtts://HOST:PORT or wss://HOST:PORT/PATH",
        ));
    }
    Ok(())
}

/// Refuses listeners this build cannot serve and TLS listeners without usable files.
pub fn check(settings: &Settings) -> Result<(), ConfigError> {
    for listener in &settings.listeners {
        if is_tls(listener.transport) && !cfg!(feature = "tls") {
            return Err(ConfigError::flag(
                "listener",
                format!(
                    "{listener}: this femtomq was built without TLS support (cargo feature `tls`)"
                ),
            ));
        }
        let websocket = matches!(
            listener.transport,
            Transport::WebSocket | Transport::WebSocketTls
        );
        if websocket && !cfg!(feature = "ws") {
            return Err(ConfigError::flag(
                "listener",
                format!(
                    "{listener}: this femtomq was built without WebSocket support (cargo feature `ws`)"
                ),
            ));
        }
        if !is_tls(listener.transport) {
            continue;
        }
        let files = listener.tls.as_ref().filter(|files| {
            !files.cert.as_os_str().is_empty() && !files.key.as_os_str().is_empty()
        });
        let Some(files) = files else {
            return Err(ConfigError::flag(
                "listener",
                format!(
                    "{listener}: a TLS listener needs a certificate and key: --cert FILE --key FILE, or cert and key in its [[listener]]"
                ),
            ));
        };
        // Read the files now, so that `check-config` and a reload catch what startup would.
        #[cfg(feature = "tls")]
        femtomq_posix::tls::load(files, &[])
            .map_err(|e| ConfigError::flag("listener", format!("{listener}: {e}")))?;
        #[cfg(not(feature = "tls"))]
        let _ = files;
    }
    Ok(())
}
