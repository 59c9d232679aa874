//! 2,000 concurrent rumqttc clients on one broker: each subscribes to its own topic, publishes
//! QoS 1 messages to its neighbour's, and must receive exactly the ones meant for it. After
//! they all disconnect the broker holds no more sockets, and a second round leaves its memory
//! near where the first left it (glibc keeps the first peak's heap: see the comment in the test).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{Barrier, Semaphore};

use femtomq_e2e::{Broker, raise_open_file_limit, wait_until};

const CLIENTS: usize = 2000;
const MESSAGES: usize = 2;
/// Clients connecting at the same moment (the rest wait their turn; keeps the listen backlog
/// from overflowing into SYN retries).
const CONNECTING: usize = 100;

async fn client(
    port: u16,
    index: usize,
    connecting: Arc<Semaphore>,
    all_subscribed: Arc<Barrier>,
) -> Result<Vec<String>, String> {
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("client {index}: {what}: {e:?}");
    let mut options = MqttOptions::new(format!("many-{index}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(120));
    let (client, mut events) = AsyncClient::new(options, 16);

    let permit = connecting
        .acquire()
        .await
        .map_err(|e| fail("semaphore", &e))?;
    client
        .subscribe(format!("many/{index}"), QoS::AtLeastOnce)
        .await
        .map_err(|e| fail("subscribe", &e))?;
    loop {
        match events.poll().await.map_err(|e| fail("before SUBACK", &e))? {
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack.return_codes != [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)] {
                    return Err(fail("SUBACK", &ack));
                }
                break;
            }
            Event::Incoming(Packet::Publish(p)) => return Err(fail("early message", &p)),
            _ => {}
        }
    }
    drop(permit);
    all_subscribed.wait().await;

    let neighbour = (index + 1) % CLIENTS;
    for n in 0..MESSAGES {
        client
            .publish(
                format!("many/{neighbour}"),
                QoS::AtLeastOnce,
                false,
                format!("to-{neighbour}-from-{index}-{n}"),
            )
            .await
            .map_err(|e| fail("publish", &e))?;
    }
    let mut received = Vec::new();
    let mut acked = 0;
    while received.len() < MESSAGES || acked < MESSAGES {
        match events.poll().await.map_err(|e| fail("exchanging", &e))? {
            Event::Incoming(Packet::Publish(p)) => received.push(format!(
                "{} {}",
                p.topic,
                String::from_utf8_lossy(&p.payload)
            )),
            Event::Incoming(Packet::PubAck(_)) => acked += 1,
            _ => {}
        }
    }
    client
        .disconnect()
        .await
        .map_err(|e| fail("disconnect", &e))?;
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(Event::Incoming(Packet::Publish(p))) => return Err(fail("extra message", &p)),
            Ok(_) => {}
        }
    }
    Ok(received)
}

fn run_clients(port: u16) -> Vec<Result<Vec<String>, String>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let connecting = Arc::new(Semaphore::new(CONNECTING));
        let all_subscribed = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|index| {
                tokio::spawn(client(
                    port,
                    index,
                    connecting.clone(),
                    all_subscribed.clone(),
                ))
            })
            .collect();
        // A hang guard for the whole exchange, not a performance bound.
        tokio::time::timeout(Duration::from_secs(90), async {
            let mut results = Vec::with_capacity(CLIENTS);
            for task in tasks {
                results.push(task.await.expect("client task panicked"));
            }
            results
        })
        .await
        .expect("2,000 clients did not finish within 90 s")
    })
}

/// Each client got exactly the messages its neighbour sent it.
fn check_results(results: Vec<Result<Vec<String>, String>>) {
    for (index, result) in results.into_iter().enumerate() {
        let mut received = result.unwrap_or_else(|e| panic!("{e}"));
        received.sort();
        let from = (index + CLIENTS - 1) % CLIENTS;
        let expected: Vec<String> = (0..MESSAGES)
            .map(|n| format!("many/{index} to-{index}-from-{from}-{n}"))
            .collect();
        assert_eq!(received, expected, "client {index}");
    }
}

#[test]
fn two_thousand_concurrent_clients_lose_no_message_and_release_sockets_and_memory() {
    let files = raise_open_file_limit();
    assert!(
        files.is_none_or(|files| files >= CLIENTS as u64 + 256),
        "open file limit {files:?} is too low for {CLIENTS} sockets"
    );
    let broker = Broker::start(&[
        "--max-connections",
        &(CLIENTS + 100).to_string(),
        "--log-level",
        "warn",
    ]);
    let cold_rss = broker.rss_kb();
    let baseline_fds = broker.open_fds();

    let port = broker.port();
    // Warm-up: the same 2,000 clients once. The allocator keeps the heap their peak grew to
    // (measured: about 4 MB cold, 9 MB after the first round, whatever happens next), so the
    // memory bound below is relative to the RSS after this round: it catches memory that grows
    // with every round of clients (a leak), not glibc's high-water mark.
    check_results(run_clients(port));
    assert!(
        wait_until(Duration::from_secs(10), || broker.open_fds()
            <= baseline_fds),
        "broker still has {} descriptors open after the warm-up, {baseline_fds} before",
        broker.open_fds()
    );
    let warm_rss = broker.rss_kb();
    let results = run_clients(port);
    let peak_rss = broker.rss_kb();

    check_results(results);

    // Every socket closed: back to the descriptors it had before the clients came.
    assert!(
        wait_until(Duration::from_secs(10), || broker.open_fds()
            <= baseline_fds),
        "broker still has {} descriptors open, {baseline_fds} before",
        broker.open_fds()
    );
    let bound = warm_rss + warm_rss / 4 + 2048;
    wait_until(Duration::from_secs(5), || broker.rss_kb() <= bound);
    let after = broker.rss_kb();
    eprintln!(
        "broker RSS: {cold_rss} kB at start, {warm_rss} kB after a warm-up round, {peak_rss} kB \
         with {CLIENTS} clients again, {after} kB after they left"
    );
    assert!(
        after <= bound,
        "RSS {after} kB after the clients left, {warm_rss} kB after the warm-up (bound {bound} kB)"
    );
}
