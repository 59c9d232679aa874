//! The log and snapshot files: torn and corrupt tails, corrupt snapshots, compaction, the cap.

use super::*;
use femtomq_core::QoS;
use femtomq_core::broker::{Config, Message};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("femtomq-persist-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn deleted(topic: &str) -> Record {
    Record::RetainedDeleted {
        topic: topic.into(),
    }
}

fn topics(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            Record::RetainedDeleted { topic } => topic.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A store with three blocks: [a], [b, c], [d, e, f]; returns the offsets of the blocks.
fn three_blocks(dir: &Path) -> Vec<u64> {
    let (mut store, records, _) = FileStore::open(dir, 0).expect("open");
    assert!(records.is_empty());
    let mut offsets = Vec::new();
    for block in [vec!["a"], vec!["b", "c"], vec!["d", "e", "f"]] {
        offsets.push(store.log_bytes());
        let records: Vec<Record> = block.into_iter().map(deleted).collect();
        let mut bytes = Vec::new();
        encode_block(&records, &mut bytes);
        store.append(&bytes).expect("append");
    }
    store.sync().expect("sync");
    offsets
}

#[test]
fn records_survive_a_reopen() {
    let dir = temp_dir("reopen");
    three_blocks(&dir);
    let (_, records, report) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(topics(&records), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(report.truncated, None);
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let dir = temp_dir("torn");
    let offsets = three_blocks(&dir);
    let path = log_path(&dir, 0);
    let len = fs::metadata(&path).expect("log").len();
    let file = OpenOptions::new().write(true).open(&path).expect("log");
    file.set_len(len - 5).expect("cut");
    let (store, records, report) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(topics(&records), ["a", "b", "c"]);
    assert_eq!(report.truncated, Some((offsets[2], 3)));
    assert_eq!(fs::metadata(&path).expect("log").len(), offsets[2]);
    assert_eq!(store.log_bytes(), offsets[2]);
    // Appending after the cut works and survives.
    drop(store);
    let (mut store, _, _) = FileStore::open(&dir, 0).expect("open");
    let mut bytes = Vec::new();
    encode_block(&[deleted("g")], &mut bytes);
    store.append(&bytes).expect("append");
    let (_, records, report) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(topics(&records), ["a", "b", "c", "g"]);
    assert_eq!(report.truncated, None);
}

#[test]
fn flipped_bytes_are_caught_by_the_crc() {
    for target in 0..2 {
        let dir = temp_dir(&format!("flip{target}"));
        let offsets = three_blocks(&dir);
        let path = log_path(&dir, 0);
        let mut bytes = fs::read(&path).expect("log");
        // A byte inside block 2: its header (count) or its payload.
        let position = offsets[1] as usize + if target == 0 { 5 } else { 20 };
        bytes[position] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        let (_, records, report) = FileStore::open(&dir, 0).expect("open");
        assert_eq!(topics(&records), ["a"], "flip at {position}");
        assert_eq!(report.truncated.map(|t| t.0), Some(offsets[1]));
    }
}

#[test]
fn a_corrupt_snapshot_is_refused_and_kept() {
    let dir = temp_dir("snap");
    let (mut store, _, _) = FileStore::open(&dir, 0).expect("open");
    store
        .compact(&[deleted("x"), deleted("y")])
        .expect("compact");
    drop(store);
    let path = snap_path(&dir, 0);
    let mut bytes = fs::read(&path).expect("snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&path, &bytes).expect("write");
    let error = FileStore::open(&dir, 0).expect_err("a corrupt snapshot is refused");
    let message = error.to_string();
    assert!(
        message.contains("worker-0.snap") && message.contains("corrupt"),
        "{message}"
    );
    assert_eq!(
        fs::read(&path).expect("kept"),
        bytes,
        "the snapshot is left as it is"
    );
}

#[test]
fn compaction_keeps_the_latest_state_and_ignores_the_old_log() {
    let dir = temp_dir("compact");
    three_blocks(&dir);
    let old_log = fs::read(log_path(&dir, 0)).expect("log");
    let (mut store, records, _) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(records.len(), 6);
    // The state after those records, as the engine's snapshot would give it.
    store.compact(&[deleted("state")]).expect("compact");
    assert_eq!(store.log_bytes(), LOG_HEADER);
    let mut bytes = Vec::new();
    encode_block(&[deleted("after")], &mut bytes);
    store.append(&bytes).expect("append");
    drop(store);
    let (_, records, _) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(topics(&records), ["state", "after"]);
    // A crash between the snapshot's rename and the log's reset leaves the old log: it is of
    // the previous generation, and ignored.
    fs::write(log_path(&dir, 0), &old_log).expect("old log back");
    let (_, records, _) = FileStore::open(&dir, 0).expect("open");
    assert_eq!(topics(&records), ["state"]);
    assert!(!dir.join("worker-0.snap.tmp").exists());
}

fn wait_for_news(store: &Store) {
    store
        .wake
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 64];
    let _ = (&store.wake).read(&mut byte);
}

fn retained(topic: &str, size: usize) -> Message {
    Message::new(topic, &vec![b'x'; size], QoS::AtLeastOnce, true, Instant(0))
}

#[test]
fn the_cap_marks_the_store_full_and_the_broker_keeps_running() {
    let dir = temp_dir("cap");
    let config = PersistConfig {
        dir: dir.clone(),
        sync: SyncMode::Always,
        max_bytes: 4096,
        compact_every_bytes: 1 << 20,
    };
    let mut opened = open_all(&config, 1).expect("open");
    let (file, records) = opened.workers.remove(0);
    let engine = Config {
        persistence: config.persistence(),
        ..Config::default()
    };
    let mut broker = Broker::new(engine, 1);
    let mut store =
        Store::start(&mut broker, file, records, &config, 1, Instant(0)).expect("start");
    let mut now = Instant(0);
    for i in 0..20 {
        now = now.plus_millis(1);
        broker.publish(retained(&format!("r/{i}"), 1000), now);
        store.collect(&mut broker);
        let sent = broker.last_record();
        // Each round: wait until the writer reported this record durable.
        for _ in 0..100 {
            wait_for_news(&store);
            store.update(&mut broker, now);
            if store.status.durable.load() >= sent {
                break;
            }
        }
        if broker.store_full() {
            break;
        }
    }
    assert!(
        broker.store_full(),
        "20 KB of retained messages fill a 4 KB store"
    );
    // Still serving: messages are routed, deletions are written, and they make room.
    for i in 0..20 {
        let mut delete = retained(&format!("r/{i}"), 0);
        delete.payload = Box::new([]);
        broker.publish(delete, now);
    }
    assert_eq!(broker.retained_count(), 0);
    store.collect(&mut broker);
    for _ in 0..100 {
        wait_for_news(&store);
        store.update(&mut broker, now);
        if !broker.store_full() {
            break;
        }
    }
    assert!(
        !broker.store_full(),
        "compaction of an empty state makes room"
    );
    let durable = store.flush(&mut broker);
    assert_eq!(durable, broker.last_record());
}

#[test]
fn workers_take_their_sessions_from_the_files_of_any_worker_count() {
    let dir = temp_dir("workers");
    let (mut store, _, _) = FileStore::open(&dir, 3).expect("open");
    let mut bytes = Vec::new();
    let sessions: Vec<Record> = (0..8)
        .map(|i| Record::SessionDeleted {
            client_id: format!("client-{i}").into(),
        })
        .chain([deleted("t")])
        .collect();
    encode_block(&sessions, &mut bytes);
    store.append(&bytes).expect("append");
    drop(store);
    let config = PersistConfig {
        dir: dir.clone(),
        sync: SyncMode::Never,
        max_bytes: u64::MAX,
        compact_every_bytes: u64::MAX,
    };
    let opened = open_all(&config, 2).expect("open");
    assert_eq!(opened.workers.len(), 2);
    for (worker, (_, records)) in opened.workers.iter().enumerate() {
        for record in records {
            match record.client_id() {
                Some(id) => assert_eq!(usize::from(client_owner(id, 2)), worker),
                None => assert_eq!(worker, 0, "retained records go to worker 0"),
            }
        }
    }
    let total: usize = opened.workers.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(total, 9);
    assert!(
        !log_path(&dir, 3).exists(),
        "files of a former worker are folded in"
    );
}

#[test]
fn the_file_size_limit_is_read_and_leaves_a_reserve() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max file size             262144               unlimited            bytes     \n";
    assert_eq!(parse_file_size_limit(limits), Some(262_144));
    let unlimited = limits.replace("262144 ", "unlimited");
    assert_eq!(parse_file_size_limit(&unlimited), None);
    assert_eq!(file_cap(262_144), 262_144 - 32_768);
    assert_eq!(file_cap(16 * 1024), 12 * 1024);
    assert_eq!(file_cap(1 << 30), (1 << 30) - (1 << 20));
}
