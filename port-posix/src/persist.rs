//! The file store of persistence records (feature `persist`): an append-only log of CRC'd
//! records written in blocks, compacted into a snapshot, replayed at startup.
//!
//! Each worker owns two files in the store directory: `worker-N.snap` (the state at the last
//! compaction) and `worker-N.log` (the records since). Sessions never move between workers, so
//! a worker's files hold its sessions; worker 0's also hold the retained messages of all.
//!
//! * Log: a 16-byte header (`FMQLOG01`, the generation it follows) and blocks. A block is
//!   `payload length (u32 LE) | record count (u32 LE) | CRC-32 of both and the payload | payload`,
//!   the payload being record frames (`femtomq_core::broker::persist::encode_frame`, each with
//!   its own CRC). Everything the engine emitted in one call goes into one block, so a crash
//!   keeps or loses it whole. A torn or corrupt tail is truncated at startup with a warning
//!   naming the offset and the records lost.
//! * Snapshot: `FMQSNP01`, generation (u64), record count (u64), the frames, and a CRC-32 of
//!   everything before it. Written to `worker-N.snap.tmp`, fsynced, read back and checked,
//!   renamed, and the directory fsynced; then the log restarts empty with the new generation
//!   (a log of an older generation is ignored: the snapshot holds it). A corrupt snapshot stops
//!   startup with an error naming it; it is left as it is.
//!
//! Writes happen on a writer thread per worker, fed with batches after every call into the
//! engine. With `sync = always` the writer fsyncs (`fdatasync`) each round of batches it
//! gathered (group commit) and then reports the last record durable, which releases the
//! acknowledgements the engine held back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use femtomq_core::Instant;
use femtomq_core::broker::persist::{FrameError, crc32, decode_frame, encode_frame};
use femtomq_core::broker::{Broker, Persistence, Record, client_owner};
use log::{error, info, warn};

const LOG_MAGIC: &[u8; 8] = b"FMQLOG01";
const SNAP_MAGIC: &[u8; 8] = b"FMQSNP01";
const LOG_HEADER: u64 = 16;
const BLOCK_HEADER: usize = 12;

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After every group of records, before their acknowledgements go out.
    Always,
    /// At most this long after a record is written; acknowledgements go out at once.
    Interval(Duration),
    /// Never (the OS writes back when it likes); acknowledgements go out at once.
    Never,
}

/// Where and how records are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistConfig {
    /// The store directory (created if missing).
    pub dir: PathBuf,
    /// The fsync policy.
    pub sync: SyncMode,
    /// Cap on the store's bytes (snapshot and log of all workers): above it, new persistent
    /// messages are refused with 0x97.
    pub max_bytes: u64,
    /// The log is compacted into a snapshot when it grows past this.
    pub compact_every_bytes: u64,
}

impl PersistConfig {
    /// The engine's persistence mode for this policy.
    pub fn persistence(&self) -> Persistence {
        match self.sync {
            SyncMode::Always => Persistence::Durable,
            _ => Persistence::Records,
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// What loading a log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// Records replayed.
    pub records: usize,
    /// The offset where a torn or corrupt tail was cut, and the records lost there.
    pub truncated: Option<(u64, usize)>,
}

/// One worker's snapshot and log.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    worker: usize,
    log: File,
    log_bytes: u64,
    snapshot_bytes: u64,
    generation: u64,
}

fn snap_path(dir: &Path, worker: usize) -> PathBuf {
    dir.join(format!("worker-{worker}.snap"))
}

fn log_path(dir: &Path, worker: usize) -> PathBuf {
    dir.join(format!("worker-{worker}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a snapshot: its generation and records. Any damage is an error naming the file.
pub fn read_snapshot(path: &Path) -> io::Result<(u64, Vec<Record>)> {
    let bytes = fs::read(path)?;
    let bad = |what: &str| {
        invalid(format!(
            "snapshot {} is corrupt ({what}); it is left as it is: move it away to start \
             without it",
            path.display()
        ))
    };
    if bytes.len() < 28 || &bytes[..8] != SNAP_MAGIC {
        return Err(bad("no snapshot header"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32(0, body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let generation = u64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
    let count = u64::from_le_bytes(body[16..24].try_into().unwrap_or_default());
    let mut records = Vec::new();
    let mut rest = &body[24..];
    while !rest.is_empty() {
        let offset = body.len() - rest.len();
        match decode_frame(rest) {
            Ok((_, record, used)) => {
                records.push(record);
                rest = &rest[used..];
            }
            Err(_) => return Err(bad(&format!("bad record at offset {offset}"))),
        }
    }
    if records.len() as u64 != count {
        return Err(bad("record count mismatch"));
    }
    Ok((generation, records))
}

/// Encodes a snapshot file's bytes.
fn encode_snapshot(generation: u64, records: &[Record]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64 + records.len() * 64);
    bytes.extend_from_slice(SNAP_MAGIC);
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for record in records {
        encode_frame(0, record, &mut bytes);
    }
    let crc = crc32(0, &bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Encodes one block of records.
pub fn encode_block(records: &[Record], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; BLOCK_HEADER]);
    for record in records {
        encode_frame(0, record, out);
    }
    let len = (out.len() - start - BLOCK_HEADER) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&(records.len() as u32).to_le_bytes());
    let mut crc = crc32(0, &out[start..start + 8]);
    crc = crc32(crc, &out[start + BLOCK_HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the blocks of a log body (after its header): the records, and where and how many
/// were lost if the tail is torn or corrupt.
pub fn decode_blocks(bytes: &[u8], base: u64) -> (Vec<Record>, Option<(u64, usize)>) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let offset = base + at as u64;
        let Some(header) = rest.get(..BLOCK_HEADER) else {
            return (records, Some((offset, 0)));
        };
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (len, count, crc) = (word(0) as usize, word(4) as usize, word(8));
        // A count the length cannot hold means the header itself is damaged.
        let lost = if count <= len / 9 + 1 { count } else { 0 };
        let Some(payload) = rest.get(BLOCK_HEADER..BLOCK_HEADER + len) else {
            return (records, Some((offset, lost)));
        };
        if crc32(crc32(0, &header[..8]), payload) != crc {
            return (records, Some((offset, lost)));
        }
        let mut block = Vec::with_capacity(count);
        let mut inner = payload;
        while !inner.is_empty() {
            match decode_frame(inner) {
                Ok((_, record, used)) => {
                    block.push(record);
                    inner = &inner[used..];
                }
                Err(FrameError::Truncated | FrameError::Corrupt) => {
                    return (records, Some((offset, lost)));
                }
            }
        }
        records.append(&mut block);
        at += BLOCK_HEADER + len;
    }
    (records, None)
}

impl FileStore {
    /// Opens (or creates) worker `worker`'s files in `dir` and returns the store with the
    /// records to restore (snapshot, then log). A torn or corrupt log tail is truncated with a
    /// warning; a corrupt snapshot is an error.
    pub fn open(dir: &Path, worker: usize) -> io::Result<(FileStore, Vec<Record>, LogReport)> {
        fs::create_dir_all(dir)?;
        let snap = snap_path(dir, worker);
        let (generation, mut records, snapshot_bytes) = if snap.exists() {
            let (generation, records) = read_snapshot(&snap)?;
            (generation, records, fs::metadata(&snap)?.len())
        } else {
            (0, Vec::new(), 0)
        };
        let path = log_path(dir, worker);
        let mut log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut report = LogReport::default();
        let current = bytes.len() >= LOG_HEADER as usize
            && &bytes[..8] == LOG_MAGIC
            && bytes[8..16] == generation.to_le_bytes();
        let log_bytes = if current {
            let (replayed, truncated) = decode_blocks(&bytes[LOG_HEADER as usize..], LOG_HEADER);
            report.records = replayed.len();
            records.extend(replayed);
            match truncated {
                Some((offset, lost)) => {
                    warn!(
                        "persistence log {}: torn or corrupt tail at offset {offset} truncated, \
                         {lost} records lost ({} bytes cut)",
                        path.display(),
                        bytes.len() as u64 - offset
                    );
                    report.truncated = Some((offset, lost));
                    log.set_len(offset)?;
                    log.sync_all()?;
                    offset
                }
                None => bytes.len() as u64,
            }
        } else {
            if !bytes.is_empty() {
                // A log of an older generation: the snapshot already holds it.
                info!(
                    "persistence log {}: older than the snapshot, restarted",
                    path.display()
                );
            }
            log.set_len(0)?;
            log.seek(SeekFrom::Start(0))?;
            log.write_all(LOG_MAGIC)?;
            log.write_all(&generation.to_le_bytes())?;
            log.sync_all()?;
            LOG_HEADER
        };
        log.seek(SeekFrom::Start(log_bytes))?;
        let store = FileStore {
            dir: dir.to_path_buf(),
            worker,
            log,
            log_bytes,
            snapshot_bytes,
            generation,
        };
        Ok((store, records, report))
    }

    /// Bytes of the snapshot and the log.
    pub fn size(&self) -> u64 {
        self.snapshot_bytes + self.log_bytes
    }

    /// Bytes of the log since the last compaction.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Appends an encoded block (see [`encode_block`]). On error the log is cut back to where
    /// it was, so a later retry appends the block whole.
    pub fn append(&mut self, block: &[u8]) -> io::Result<()> {
        match self.log.write_all(block) {
            Ok(()) => {
                self.log_bytes += block.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.log.set_len(self.log_bytes);
                let _ = self.log.seek(SeekFrom::Start(self.log_bytes));
                Err(e)
            }
        }
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// Replaces snapshot and log by a snapshot of `records` (the whole state) and an empty log.
    /// On failure the previous snapshot and log stay in force.
    pub fn compact(&mut self, records: &[Record]) -> io::Result<()> {
        let generation = self.generation + 1;
        let bytes = encode_snapshot(generation, records);
        let snap = snap_path(&self.dir, self.worker);
        let tmp = snap.with_extension("snap.tmp");
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            // Read back what the storage kept before it replaces the previous snapshot.
            let (kept, back) = read_snapshot(&tmp)?;
            if kept != generation || back.len() != records.len() {
                return Err(invalid("snapshot read back differs".into()));
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &snap)?;
        sync_dir(&self.dir)?;
        self.generation = generation;
        self.snapshot_bytes = bytes.len() as u64;
        let path = log_path(&self.dir, self.worker);
        let tmp = path.with_extension("log.tmp");
        let mut log = File::create(&tmp)?;
        log.write_all(LOG_MAGIC)?;
        log.write_all(&generation.to_le_bytes())?;
        log.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let mut log = OpenOptions::new().read(true).write(true).open(&path)?;
        log.seek(SeekFrom::Start(LOG_HEADER))?;
        self.log = log;
        self.log_bytes = LOG_HEADER;
        Ok(())
    }
}

/// The stores of all workers, opened before they start, with the records each restores.
#[derive(Debug)]
pub struct Opened {
    /// One per worker: its store and the records of its sessions (and for worker 0 the
    /// retained messages).
    pub workers: Vec<(FileStore, Vec<Record>)>,
}

/// Opens the store for `workers` workers. Records of files of other worker counts are handed
/// to the worker that owns each client now (`client_owner`); retained ones to worker 0. The QoS 2
/// flows a worker stored copies of (`Record::RemoteFlow`) stay with it, and are dropped when the
/// worker count changes (a flow open at that restart may then have its message stored twice).
pub fn open_all(config: &PersistConfig, workers: usize) -> io::Result<Opened> {
    let mut opened = Vec::new();
    let mut moved: Vec<(usize, Record)> = Vec::new();
    fs::create_dir_all(&config.dir)?;
    // Files of every worker count ever used: `worker-N.snap` and `worker-N.log`.
    let mut found = workers;
    // One more than the highest worker number of the files: the worker count that wrote them.
    let mut written_by_count = 0;
    for entry in fs::read_dir(&config.dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let number = name
            .strip_prefix("worker-")
            .and_then(|rest| {
                rest.strip_suffix(".snap")
                    .or_else(|| rest.strip_suffix(".log"))
            })
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(number) = number {
            found = found.max(number + 1);
            written_by_count = written_by_count.max(number + 1);
        }
    }
    for index in 0..found {
        let exists =
            snap_path(&config.dir, index).exists() || log_path(&config.dir, index).exists();
        if index >= workers && !exists {
            continue;
        }
        let (store, records, _) = FileStore::open(&config.dir, index)?;
        if index < workers {
            opened.push((store, Vec::new()));
        } else {
            drop(store);
        }
        moved.extend(records.into_iter().map(|record| (index, record)));
    }
    let total = moved.len();
    let same_count = written_by_count == workers;
    for (written_by, record) in moved {
        if record.stays_with_its_worker() {
            if same_count {
                opened[written_by].1.push(record);
            }
            continue;
        }
        let owner = record
            .client_id()
            .map_or(0, |id| usize::from(client_owner(id, workers as u16)));
        opened[owner].1.push(record);
    }
    // Every worker compacts what it restored before serving; files of workers that are no
    // longer there go once worker 0's snapshot holds their retained messages and their
    // sessions are in their new owners' snapshots (see `Store::start`).
    for (store, records) in &mut opened {
        store.compact(records)?;
    }
    for stale in workers..found {
        let _ = fs::remove_file(snap_path(&config.dir, stale));
        let _ = fs::remove_file(log_path(&config.dir, stale));
    }
    if total > 0 {
        info!(
            "persistence: {total} records loaded from {}",
            config.dir.display()
        );
    }
    Ok(Opened { workers: opened })
}

// ----- the writer thread ------------------------------------------------------------------------

enum Command {
    Append(Vec<Record>, u64),
    Compact(Vec<Record>, u64),
    Flush(mpsc::Sender<()>),
}

/// A sequence number shared by the writer thread and its worker. A mutex rather than an
/// `AtomicU64`, which 32-bit MIPS does not have; it is written once per sync and read once per
/// loop turn, so the lock costs nothing measurable.
#[derive(Debug, Default)]
struct SharedSequence(std::sync::Mutex<u64>);

impl SharedSequence {
    fn load(&self) -> u64 {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn store(&self, value: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }
}

/// What the writer tells its worker.
#[derive(Debug, Default)]
struct Status {
    durable: SharedSequence,
    full: AtomicBool,
    compact: AtomicBool,
    refused_logged: AtomicBool,
}

/// A worker's handle on its store's writer thread.
pub struct Store {
    sender: mpsc::Sender<Command>,
    status: Arc<Status>,
    /// Readable when the writer has news (durable records, full, compaction wanted).
    pub wake: UnixStream,
    batch: Vec<Record>,
    sent: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Restores `broker` from `records`, then starts the writer thread of `store`.
    pub fn start(
        broker: &mut Broker,
        store: FileStore,
        records: Vec<Record>,
        config: &PersistConfig,
        workers: usize,
        now: Instant,
    ) -> io::Result<Store> {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        broker.set_wall_clock(unix_ms, now);
        let summary = broker.restore(records, now);
        if summary != Default::default() {
            info!(
                "persistence: restored {} sessions with {} messages and {} retained messages \
                 ({} sessions and {} messages had expired, {} wills published)",
                summary.sessions,
                summary.messages,
                summary.retained,
                summary.expired_sessions,
                summary.expired_messages,
                summary.wills_published
            );
        }
        let (wake, signal) = UnixStream::pair()?;
        signal.set_nonblocking(true)?;
        let (sender, receiver) = mpsc::channel();
        let status = Arc::new(Status::default());
        let handle = Store {
            sender,
            status: status.clone(),
            wake,
            batch: Vec::new(),
            sent: broker.last_record(),
        };
        // The restored state (expired parts dropped, wills published) is the first snapshot.
        let mut snapshot = Vec::new();
        let seq = broker.snapshot(&mut snapshot);
        let _ = handle.sender.send(Command::Compact(snapshot, seq));
        let writer = Writer {
            store,
            sync: config.sync,
            max_bytes: config.max_bytes / workers.max(1) as u64,
            compact_every: config.compact_every_bytes,
            status,
            signal,
            durable: seq,
            written: seq,
            pending: Vec::new(),
            pending_seq: 0,
            file_cap: file_size_limit().map_or(u64::MAX, file_cap),
            failing: false,
            cap_logged: false,
            compact_failed: false,
        };
        std::thread::Builder::new()
            .name("femtomq-store".into())
            .spawn(move || writer.run(receiver))?;
        Ok(handle)
    }

    /// After a call into the engine: its records go to the writer as one block.
    pub fn collect(&mut self, broker: &mut Broker) {
        let last = broker.take_records(&mut self.batch);
        if !self.batch.is_empty() {
            self.sent = last;
            let batch = std::mem::take(&mut self.batch);
            let _ = self.sender.send(Command::Append(batch, last));
        }
    }

    /// When the writer has news: tells the engine what is durable and whether the store is
    /// full, and compacts when the writer asks.
    pub fn update(&mut self, broker: &mut Broker, now: Instant) {
        let full = self.status.full.load(Ordering::Acquire);
        if full != broker.store_full() {
            if full {
                error!(
                    "persistence: store full (max_bytes, disk or file size limit); new persistent messages are refused with 0x97"
                );
            } else {
                info!("persistence: store has room again");
            }
            broker.set_store_full(full);
        }
        if self.status.compact.swap(false, Ordering::AcqRel) {
            self.collect(broker);
            let mut snapshot = Vec::new();
            let seq = broker.snapshot(&mut snapshot);
            let _ = self.sender.send(Command::Compact(snapshot, seq));
        }
        broker.durable(self.status.durable.load(), now);
        let refused = broker.stats().persist_refused;
        if refused > 0 && !self.status.refused_logged.swap(true, Ordering::AcqRel) {
            warn!(
                "persistence: PUBLISH refused with 0x97 (store full), counted in persist_refused"
            );
        }
    }

    /// Writes and syncs everything sent so far (at shutdown); returns the last durable record.
    pub fn flush(&mut self, broker: &mut Broker) -> u64 {
        self.collect(broker);
        let (done, wait) = mpsc::channel();
        if self.sender.send(Command::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
        self.status.durable.load()
    }
}

struct Writer {
    store: FileStore,
    sync: SyncMode,
    max_bytes: u64,
    compact_every: u64,
    status: Arc<Status>,
    signal: UnixStream,
    /// Last record synced, and last written.
    durable: u64,
    written: u64,
    /// A block that could not be written (disk full), retried.
    pending: Vec<u8>,
    pending_seq: u64,
    /// Log size above which the store counts as full: the file size limit (RLIMIT_FSIZE) less
    /// a reserve for the blocks of messages accepted before the engine learns it is full. A
    /// write that fails holds every acknowledgement until it succeeds, so the store must say
    /// it is full before the write fails.
    file_cap: u64,
    /// Whether the last write failed (logged once per episode), the file cap was logged, the
    /// last compaction failed (not asked for again until one succeeds).
    failing: bool,
    cap_logged: bool,
    compact_failed: bool,
}

/// The soft file size limit of this process (RLIMIT_FSIZE, from `/proc/self/limits`); `None`
/// if unlimited or unknown.
fn file_size_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    parse_file_size_limit(&limits)
}

/// The soft "Max file size" of a `/proc/PID/limits` text.
pub fn parse_file_size_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max file size"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The log size at which a file size limit of `limit` bytes makes the store full: an eighth
/// of it (4 KiB to 1 MiB) stays in reserve.
pub fn file_cap(limit: u64) -> u64 {
    limit.saturating_sub((limit / 8).clamp(4096, 1 << 20))
}

impl Writer {
    fn notify(&self) {
        let _ = (&self.signal).write(&[1]);
    }

    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        let mut deadline: Option<std::time::Instant> = None;
        loop {
            let timeout = match (&self.sync, deadline, self.pending.is_empty()) {
                (_, _, false) => Some(Duration::from_millis(100)),
                (SyncMode::Interval(_), Some(at), _) => {
                    Some(at.saturating_duration_since(std::time::Instant::now()))
                }
                _ => None,
            };
            let first = match timeout {
                Some(timeout) => match receiver.recv_timeout(timeout) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return self.finish(),
                },
                None => match receiver.recv() {
                    Ok(command) => Some(command),
                    Err(_) => return self.finish(),
                },
            };
            // Group commit: everything that arrived meanwhile goes out with one sync.
            let mut commands: Vec<Command> = first.into_iter().collect();
            commands.extend(receiver.try_iter());
            let mut block = std::mem::take(&mut self.pending);
            let mut last = self.pending_seq.max(self.written);
            let mut flushes = Vec::new();
            for command in commands {
                match command {
                    Command::Append(records, seq) => {
                        encode_block(&records, &mut block);
                        last = seq;
                    }
                    Command::Compact(records, seq) => {
                        self.write(&mut block, last);
                        if self.pending.is_empty() {
                            self.compact(&records, seq);
                        }
                        last = last.max(seq);
                    }
                    Command::Flush(done) => flushes.push(done),
                }
            }
            self.write(&mut block, last);
            let must_sync = match self.sync {
                SyncMode::Always => true,
                SyncMode::Interval(every) => {
                    let now = std::time::Instant::now();
                    match deadline {
                        Some(at) if now >= at => true,
                        Some(_) => false,
                        None => {
                            deadline = Some(now + every);
                            false
                        }
                    }
                }
                SyncMode::Never => false,
            } || !flushes.is_empty();
            if must_sync && self.written > self.durable {
                match self.store.sync() {
                    Ok(()) => self.durable = self.written,
                    Err(e) => error!("persistence: sync failed: {e}"),
                }
                deadline = None;
            } else if self.sync != SyncMode::Always {
                // Nothing is held for these modes: report at once.
                self.durable = self.written;
            }
            self.status.durable.store(self.durable);
            let over = self.store.size() > self.max_bytes;
            let capped = self.store.log_bytes() > self.file_cap;
            if capped && !self.cap_logged {
                warn!(
                    "persistence: log at {} bytes, near the file size limit (RLIMIT_FSIZE, {} \
                     bytes usable); the store counts as full",
                    self.store.log_bytes(),
                    self.file_cap
                );
            }
            self.cap_logged = capped;
            if self.store.log_bytes() > self.compact_every
                || over
                || (capped && !self.compact_failed)
            {
                self.status.compact.store(true, Ordering::Release);
            }
            let full = !self.pending.is_empty() || over || capped;
            self.status.full.store(full, Ordering::Release);
            self.notify();
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, block: &mut Vec<u8>, last: u64) {
        if block.is_empty() {
            return;
        }
        match self.store.append(block) {
            Ok(()) => {
                self.written = last;
                self.pending.clear();
                block.clear();
                if self.failing {
                    info!("persistence: write succeeded again");
                    self.failing = false;
                }
            }
            Err(e) => {
                if !self.failing {
                    error!(
                        "persistence: write failed ({e}); retrying every 100 ms, new persistent \
                         messages refused"
                    );
                    self.failing = true;
                }
                self.pending = std::mem::take(block);
                self.pending_seq = last;
            }
        }
    }

    fn compact(&mut self, records: &[Record], seq: u64) {
        match self.store.compact(records) {
            Ok(()) => {
                self.written = self.written.max(seq);
                // A snapshot is synced: everything it holds is durable.
                self.durable = self.durable.max(seq);
                self.compact_failed = false;
            }
            Err(e) => {
                self.compact_failed = true;
                error!("persistence: compaction failed ({e}); the previous snapshot is kept");
            }
        }
    }

    fn finish(mut self) {
        let _ = self.store.sync();
        self.durable = self.written;
        self.status.durable.store(self.durable);
    }
}

#[cfg(test)]
mod tests;
