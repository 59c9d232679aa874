//! `femtomq bench`: a load generator for any MQTT broker (like `nanomq_cli bench`).
//!
//! Threads on blocking sockets, one per client: simple, and cheap enough here because every
//! publisher writes its packets in batches and every subscriber reads 64 KB at a time, so the
//! generator's own CPU stays well below the broker's (it is reported, so this can be checked).
//! Payloads carry a send timestamp and a sequence number: subscribers measure latency and loss.
//! Given the broker's pid, its CPU seconds (utime + stime) and RSS are read from /proc.
//!
//! With `FEMTOMQ_BENCH_PERSISTENT_SUBSCRIBERS=1` in the environment, subscribers connect with
//! clean session 0, so the broker keeps (and, with persistence, stores) their sessions and
//! queues (`cargo xtask bench persist`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU16;
// AtomicUsize, not AtomicU64: 32-bit MIPS has no 64-bit atomics, and a bench run never counts
// near 2^32 messages or lasts 71 minutes (the microsecond clock below).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use femtomq_core::codec::{
    Ack, Connect, ConnectProperties, Decoded, MAX_PACKET_SIZE, Packet, Publish, PublishProperties,
    QosPid, Repeated, Subscribe, SubscribeProperties, Subscription, decode,
};
use femtomq_core::{ProtocolVersion, QoS, SubscriptionOptions};

/// The load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `publishers` clients publish to one topic, one subscriber receives everything.
    FanIn,
    /// One publisher, `subscribers` clients each receive everything.
    FanOut,
    /// `pairs` publisher/subscriber pairs on distinct topics.
    Pairs,
    /// `connections` idle connections held for the duration.
    Conns,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Broker address (`HOST:PORT`).
    pub address: String,
    /// The load shape.
    pub scenario: Scenario,
    /// Clients for the scenario (publishers for fanin, subscribers for fanout, pairs, connections).
    pub clients: usize,
    /// QoS of publications and subscriptions.
    pub qos: QoS,
    /// Payload bytes (at least 16: timestamp and sequence number).
    pub payload: usize,
    /// How long publishers publish.
    pub duration: Duration,
    /// Messages per second per publisher; 0 means as fast as the broker takes them.
    pub rate: u32,
    /// The broker's process id, to report its CPU and memory.
    pub broker_pid: Option<u32>,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Messages published.
    pub published: u64,
    /// Copies subscribers should have received.
    pub expected: u64,
    /// Copies they received.
    pub received: u64,
    /// Seconds from the first publish to the last copy received.
    pub seconds: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency in microseconds.
    pub p99_us: u64,
    /// Broker CPU seconds during the run.
    pub broker_cpu: Option<f64>,
    /// Broker RSS at its highest sample during the run, in KB.
    pub broker_rss_peak_kb: Option<u64>,
    /// Broker RSS before the clients connected and after they left (KB).
    pub broker_rss_before_kb: Option<u64>,
    /// Broker RSS after the clients left (KB).
    pub broker_rss_after_kb: Option<u64>,
    /// The generator's own CPU seconds.
    pub generator_cpu: f64,
}

impl BenchReport {
    /// Copies delivered per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Copies delivered per broker CPU-second.
    pub fn per_broker_cpu_second(&self) -> Option<f64> {
        self.broker_cpu
            .map(|cpu| self.received as f64 / cpu.max(1e-9))
    }

    /// One line of JSON, for `cargo xtask bench`.
    pub fn to_json(&self) -> String {
        let opt_f = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
        let opt_u = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        format!(
            "{{\"published\":{},\"expected\":{},\"received\":{},\"seconds\":{:.4},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"broker_cpu\":{},\"per_broker_cpu_second\":{},\"broker_rss_peak_kb\":{},\"broker_rss_before_kb\":{},\"broker_rss_after_kb\":{},\"generator_cpu\":{:.4}}}",
            self.published,
            self.expected,
            self.received,
            self.seconds,
            self.rate(),
            self.p50_us,
            self.p99_us,
            opt_f(self.broker_cpu),
            opt_f(self.per_broker_cpu_second()),
            opt_u(self.broker_rss_peak_kb),
            opt_u(self.broker_rss_before_kb),
            opt_u(self.broker_rss_after_kb),
            self.generator_cpu
        )
    }
}

const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;
/// QoS 1/2 messages a publisher keeps unacknowledged.
const WINDOW: u64 = 32;
/// Packets a publisher encodes into one write.
const BATCH: usize = 32;

fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) {
    let len = packet.encoded_len(VERSION).unwrap_or(0);
    let start = out.len();
    out.resize(start + len, 0);
    let _ = packet.encode(VERSION, &mut out[start..]);
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 / ticks)
}

/// Resident set size of a process in KB, from /proc/PID/status.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Connection {
    stream: TcpStream,
}

impl Connection {
    fn open(address: &str, client_id: &str, clean_start: bool) -> Result<Connection, String> {
        Connection::open_with_keep_alive(address, client_id, clean_start, 60)
    }

    fn open_with_keep_alive(
        address: &str,
        client_id: &str,
        clean_start: bool,
        keep_alive: u16,
    ) -> Result<Connection, String> {
        let stream = TcpStream::connect(address).map_err(|e| format!("connect {address}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut connection = Connection { stream };
        let mut out = Vec::new();
        encode(
            &Packet::Connect(Connect {
                version: VERSION,
                clean_start,
                keep_alive,
                properties: ConnectProperties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            }),
            &mut out,
        );
        connection
            .stream
            .write_all(&out)
            .map_err(|e| e.to_string())?;
        // CONNACK is four bytes in 3.1.1.
        let mut connack = [0u8; 4];
        connection
            .stream
            .read_exact(&mut connack)
            .map_err(|e| format!("CONNACK: {e}"))?;
        if connack[0] != 0x20 || connack[3] != 0 {
            return Err(format!("connection refused: {connack:02x?}"));
        }
        Ok(connection)
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), String> {
        let subscriptions = [Subscription {
            filter,
            options: SubscriptionOptions::with_qos(qos),
        }];
        let mut out = Vec::new();
        encode(
            &Packet::Subscribe(Subscribe {
                packet_id: NonZeroU16::MIN,
                properties: SubscribeProperties::default(),
                subscriptions: Repeated::from_slice(&subscriptions),
            }),
            &mut out,
        );
        self.stream.write_all(&out).map_err(|e| e.to_string())?;
        let mut suback = [0u8; 5];
        self.stream
            .read_exact(&mut suback)
            .map_err(|e| format!("SUBACK: {e}"))?;
        if suback[0] != 0x90 || suback[4] & 0x80 != 0 {
            return Err(format!("subscription refused: {suback:02x?}"));
        }
        Ok(())
    }
}

/// Shared counters and the latency samples of all subscribers.
#[derive(Default)]
struct Tally {
    published: AtomicUsize,
    received: AtomicUsize,
    last_receive_us: AtomicUsize,
    latencies_us: Mutex<Vec<u32>>,
}

fn subscriber(
    mut connection: Connection,
    qos: QoS,
    epoch: Instant,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let _ = connection
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut buffer = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let mut acks = Vec::new();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match connection.stream.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(_) => continue,
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let mut used = 0;
        let mut received = 0u64;
        while let Ok(Decoded::Packet { packet, len }) =
            decode(&buffer[used..filled], VERSION, MAX_PACKET_SIZE)
        {
            used += len;
            match packet {
                Packet::Publish(publish) => {
                    received += 1;
                    if let Some(sent) = publish.payload.get(..8) {
                        let sent_ns = u64::from_be_bytes(sent.try_into().unwrap_or_default());
                        latencies.push(
                            (now_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32,
                        );
                    }
                    match publish.qos_pid {
                        QosPid::AtMostOnce => {}
                        QosPid::AtLeastOnce(id) => {
                            encode(&Packet::PubAck(Ack::success(id)), &mut acks)
                        }
                        QosPid::ExactlyOnce(id) => {
                            encode(&Packet::PubRec(Ack::success(id)), &mut acks)
                        }
                    }
                }
                Packet::PubRel(ack) => {
                    encode(&Packet::PubComp(Ack::success(ack.packet_id)), &mut acks)
                }
                _ => {}
            }
        }
        buffer.copy_within(used..filled, 0);
        filled -= used;
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        if !acks.is_empty() {
            let _ = connection.stream.write_all(&acks);
            acks.clear();
        }
        if received > 0 {
            tally
                .received
                .fetch_add(received as usize, Ordering::Relaxed);
            tally
                .last_receive_us
                .fetch_max((now_ns / 1000) as usize, Ordering::Relaxed);
        }
    }
    let _ = qos;
    if let Ok(mut all) = tally.latencies_us.lock() {
        all.extend_from_slice(&latencies);
    }
}

/// Publishes until `deadline`, in batches (or at `rate` per second), keeping at most WINDOW
/// QoS 1/2 messages unacknowledged.
fn publisher(
    connection: Connection,
    topic: String,
    config: BenchConfig,
    epoch: Instant,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let writer = Arc::new(Mutex::new(match connection.stream.try_clone() {
        Ok(stream) => stream,
        Err(_) => return,
    }));
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The reader completes QoS 1/2 flows and wakes the publisher when its window opens.
    let publisher_thread = thread::current();
    let reader = {
        let (acked, done, writer) = (acked.clone(), done.clone(), writer.clone());
        let mut stream = connection.stream;
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        thread::spawn(move || {
            let mut buffer = vec![0u8; 16 * 1024];
            let mut filled = 0;
            let mut replies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match stream.read(&mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(count) => filled += count,
                    Err(_) => continue,
                }
                let mut used = 0;
                while let Ok(Decoded::Packet { packet, len }) =
                    decode(&buffer[used..filled], VERSION, MAX_PACKET_SIZE)
                {
                    used += len;
                    match packet {
                        Packet::PubAck(_) | Packet::PubComp(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            publisher_thread.unpark();
                        }
                        Packet::PubRec(ack) => {
                            encode(&Packet::PubRel(Ack::success(ack.packet_id)), &mut replies)
                        }
                        _ => {}
                    }
                }
                buffer.copy_within(used..filled, 0);
                filled -= used;
                if !replies.is_empty() {
                    if let Ok(mut writer) = writer.lock() {
                        let _ = writer.write_all(&replies);
                    }
                    replies.clear();
                }
            }
        })
    };
    let mut payload = vec![0xA5u8; config.payload.max(16)];
    let mut out = Vec::with_capacity(BATCH * (payload.len() + topic.len() + 8));
    let mut sequence = 0u64;
    let mut next_id = 1u16;
    let interval = (config.rate > 0).then(|| Duration::from_secs(1) / config.rate);
    let started = Instant::now();
    while Instant::now() < deadline {
        let batch = if interval.is_some() { 1 } else { BATCH };
        if config.qos != QoS::AtMostOnce {
            // Wait for room in the window.
            while sequence - acked.load(Ordering::Relaxed) as u64 + batch as u64 > WINDOW
                && Instant::now() < deadline
            {
                thread::park_timeout(Duration::from_millis(10));
            }
        }
        out.clear();
        for _ in 0..batch {
            payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            payload[8..16].copy_from_slice(&sequence.to_be_bytes());
            let id = NonZeroU16::new(next_id).unwrap_or(NonZeroU16::MIN);
            next_id = next_id.checked_add(1).unwrap_or(1);
            let qos_pid = match config.qos {
                QoS::AtMostOnce => QosPid::AtMostOnce,
                QoS::AtLeastOnce => QosPid::AtLeastOnce(id),
                QoS::ExactlyOnce => QosPid::ExactlyOnce(id),
            };
            encode(
                &Packet::Publish(Publish {
                    dup: false,
                    qos_pid,
                    retain: false,
                    topic: &topic,
                    properties: PublishProperties::default(),
                    payload: &payload,
                }),
                &mut out,
            );
            sequence += 1;
        }
        let written = writer
            .lock()
            .map(|mut w| w.write_all(&out).is_ok())
            .unwrap_or(false);
        if !written {
            break;
        }
        tally.published.fetch_add(batch, Ordering::Relaxed);
        if let Some(interval) = interval {
            let due = started + interval * sequence as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
    }
    // Let the last acknowledgements arrive.
    let settle = Instant::now();
    while config.qos != QoS::AtMostOnce
        && (acked.load(Ordering::Relaxed) as u64) < sequence
        && settle.elapsed() < Duration::from_secs(5)
    {
        thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.join();
}

/// Runs the benchmark and reports.
pub fn run(config: &BenchConfig) -> Result<BenchReport, String> {
    let generator_cpu_before = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let broker_rss_before = config.broker_pid.and_then(rss_kb);
    let mut report = match config.scenario {
        Scenario::Conns => conns(config)?,
        _ => traffic(config)?,
    };
    report.broker_rss_before_kb = broker_rss_before;
    report.generator_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - generator_cpu_before;
    Ok(report)
}

fn sample_rss(pid: Option<u32>, stop: Arc<AtomicBool>) -> thread::JoinHandle<Option<u64>> {
    thread::spawn(move || {
        let pid = pid?;
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kb(pid).unwrap_or(0));
            thread::sleep(Duration::from_millis(50));
        }
        Some(peak.max(rss_kb(pid).unwrap_or(0)))
    })
}

/// Whether subscribers keep their sessions (clean session 0): see the module documentation.
fn persistent_subscribers() -> bool {
    std::env::var_os("FEMTOMQ_BENCH_PERSISTENT_SUBSCRIBERS").is_some_and(|v| v == "1")
}

fn traffic(config: &BenchConfig) -> Result<BenchReport, String> {
    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let stop_subscribers = Arc::new(AtomicBool::new(false));
    let (publishers, subscribers, copies_per_message): (usize, usize, u64) = match config.scenario {
        Scenario::FanIn => (config.clients, 1, 1),
        Scenario::FanOut => (1, config.clients, config.clients as u64),
        _ => (config.clients, config.clients, 1),
    };
    let topic_of = |index: usize| match config.scenario {
        Scenario::Pairs => format!("bench/pair/{index}"),
        _ => "bench/topic".to_string(),
    };
    let mut subscriber_threads = Vec::new();
    for index in 0..subscribers {
        let mut connection = Connection::open(
            &config.address,
            &format!("bench-sub-{index}"),
            !persistent_subscribers(),
        )?;
        connection.subscribe(&topic_of(index), config.qos)?;
        let (tally, stop) = (tally.clone(), stop_subscribers.clone());
        let qos = config.qos;
        subscriber_threads.push(thread::spawn(move || {
            subscriber(connection, qos, epoch, tally, stop)
        }));
    }
    let mut connections = Vec::new();
    for index in 0..publishers {
        connections.push(Connection::open(
            &config.address,
            &format!("bench-pub-{index}"),
            true,
        )?);
    }
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(config.broker_pid, stop_sampler.clone());
    let broker_cpu_before = config.broker_pid.and_then(cpu_seconds);
    let start = Instant::now();
    let start_ns = epoch.elapsed().as_nanos() as u64;
    let deadline = start + config.duration;
    let publisher_threads: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, connection)| {
            let (topic, config, tally) = (topic_of(index), config.clone(), tally.clone());
            thread::spawn(move || publisher(connection, topic, config, epoch, deadline, tally))
        })
        .collect();
    for thread in publisher_threads {
        let _ = thread.join();
    }
    // Wait until every copy arrived, or nothing arrived for a second.
    let published = tally.published.load(Ordering::Relaxed) as u64;
    let expected = published * copies_per_message;
    let mut last = (
        tally.received.load(Ordering::Relaxed) as u64,
        Instant::now(),
    );
    while last.0 < expected && last.1.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(10));
        let now = tally.received.load(Ordering::Relaxed) as u64;
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let broker_cpu = config
        .broker_pid
        .and_then(cpu_seconds)
        .zip(broker_cpu_before)
        .map(|(after, before)| after - before);
    stop_subscribers.store(true, Ordering::Relaxed);
    for thread in subscriber_threads {
        let _ = thread.join();
    }
    stop_sampler.store(true, Ordering::Relaxed);
    let broker_rss_peak_kb = sampler.join().ok().flatten();
    thread::sleep(Duration::from_millis(300));
    let mut latencies = std::mem::take(&mut *tally.latencies_us.lock().map_err(|_| "poisoned")?);
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let last_ns = (tally.last_receive_us.load(Ordering::Relaxed) as u64 * 1000).max(start_ns + 1);
    Ok(BenchReport {
        published,
        expected,
        received: tally.received.load(Ordering::Relaxed) as u64,
        seconds: (last_ns - start_ns) as f64 / 1e9,
        p50_us: u64::from(percentile(0.50)),
        p99_us: u64::from(percentile(0.99)),
        broker_cpu,
        broker_rss_peak_kb,
        broker_rss_after_kb: config.broker_pid.and_then(rss_kb),
        ..BenchReport::default()
    })
}

/// Sends PINGREQ on every connection still alive, then reads each PINGRESP (a connection
/// without one is marked dead).
fn ping_all(connections: &mut [Connection], alive: &mut [bool]) {
    for (connection, alive) in connections.iter_mut().zip(alive.iter_mut()) {
        if *alive && connection.stream.write_all(&[0xC0, 0x00]).is_err() {
            *alive = false;
        }
    }
    for (connection, alive) in connections.iter_mut().zip(alive.iter_mut()) {
        let mut pingresp = [0u8; 2];
        if *alive
            && (connection.stream.read_exact(&mut pingresp).is_err() || pingresp != [0xD0, 0x00])
        {
            *alive = false;
        }
    }
}

/// Keep Alive of the `conns` connections, in seconds; each pings at half of it.
const CONNS_KEEP_ALIVE: u16 = 30;

fn conns(config: &BenchConfig) -> Result<BenchReport, String> {
    let broker_cpu_before = config.broker_pid.and_then(cpu_seconds);
    let mut connections = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        connections.push(Connection::open_with_keep_alive(
            &config.address,
            &format!("bench-idle-{index}"),
            true,
            CONNS_KEEP_ALIVE,
        )?);
    }
    let held = config.broker_pid.and_then(rss_kb);
    // Hold them, each sending PINGREQ at half its Keep Alive: a connection that gets no
    // PINGRESP (or was closed) counts as lost.
    let start = Instant::now();
    let every = Duration::from_secs(u64::from(CONNS_KEEP_ALIVE / 2));
    let mut alive = vec![true; connections.len()];
    let mut next_ping = start + every;
    while start.elapsed() < config.duration {
        let end = start + config.duration;
        thread::sleep(next_ping.min(end).saturating_duration_since(Instant::now()));
        if Instant::now() >= next_ping && Instant::now() < end {
            ping_all(&mut connections, &mut alive);
            next_ping += every;
        }
    }
    let held_end = config.broker_pid.and_then(rss_kb);
    let answering = alive.iter().filter(|&&a| a).count() as u64;
    let broker_cpu = config
        .broker_pid
        .and_then(cpu_seconds)
        .zip(broker_cpu_before)
        .map(|(after, before)| after - before);
    drop(connections);
    thread::sleep(Duration::from_millis(500));
    Ok(BenchReport {
        expected: config.clients as u64,
        received: answering,
        seconds: config.duration.as_secs_f64(),
        broker_cpu,
        broker_rss_peak_kb: held.max(held_end),
        broker_rss_after_kb: config.broker_pid.and_then(rss_kb),
        ..BenchReport::default()
    })
}
