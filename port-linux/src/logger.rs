//! A small logger for `log`: stderr, an appended file, or syslog (a Unix datagram socket,
//! `/dev/log` unless `[log] syslog_path` names another). The level is
//! `log::max_level`, so a reload changes it without touching the logger.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogTarget;

enum Sink {
    Stderr,
    File(Mutex<File>),
    Syslog(UnixDatagram),
}

struct Logger {
    sink: Sink,
}

/// Installs the logger for `target` at `level`. Fails if the file or syslog cannot be opened.
pub fn init(target: &LogTarget, level: LevelFilter) -> Result<(), String> {
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::File(path) => Sink::File(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
        )),
        LogTarget::Syslog(path) => {
            let socket = UnixDatagram::unbound().map_err(|e| format!("syslog: {e}"))?;
            socket
                .connect(path)
                .map_err(|e| format!("cannot reach syslog at {}: {e}", path.display()))?;
            Sink::Syslog(socket)
        }
    };
    log::set_boxed_logger(Box::new(Logger { sink })).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time since the Unix epoch (civil-from-days, UTC).
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Stderr => {
                let line = format!(
                    "{} {:5} {}\n",
                    timestamp(SystemTime::now()),
                    record.level(),
                    record.args()
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::File(file) => {
                let line = format!(
                    "{} {:5} {}\n",
                    timestamp(SystemTime::now()),
                    record.level(),
                    record.args()
                );
                if let Ok(mut file) = file.lock() {
                    let _ = file.write_all(line.as_bytes());
                }
            }
            Sink::Syslog(socket) => {
                // RFC 3164 with facility daemon (3).
                let severity = match record.level() {
                    Level::Error => 3,
                    Level::Warn => 4,
                    Level::Info => 6,
                    Level::Debug | Level::Trace => 7,
                };
                let line = format!(
                    "<{}>femtomq[{}]: {}",
                    3 * 8 + severity,
                    std::process::id(),
                    record.args()
                );
                let _ = socket.send(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        if let Sink::File(file) = &self.sink {
            if let Ok(mut file) = file.lock() {
                let _ = file.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2026-11-22T04:05:06.789Z
        let when = UNIX_EPOCH + Duration::from_millis(1_795_320_306_789);
        assert_eq!(timestamp(when), "2026-11-22T04:05:06.789Z");
        // A leap day.
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
