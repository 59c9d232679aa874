//! The floor of the pairs benchmark: the least a broker can spend per message through sockets.
//!
//! `cargo xtask bench floor` runs the pairs scenario (1,000 publisher/subscriber pairs, 10 msg/s
//! each, 16 KB, QoS 1) against this relay, femtomq and Mosquitto in one run. The relay speaks
//! just enough MQTT 3.1.1 for `femtomq bench pairs` and does nothing a broker could skip: no
//! sessions, no wildcards, no packet ids of its own, no validation beyond framing. It answers
//! CONNECT, SUBSCRIBE (one exact topic per packet) and PINGREQ, acknowledges each QoS 1 PUBLISH
//! and forwards the publisher's bytes unchanged to the one subscriber of that topic (the
//! subscriber's PUBACK, which carries the publisher's packet id, is read and ignored). One
//! thread, level-triggered epoll, one read per readable socket into a 64 KB buffer, and one
//! write per connection per wake-up: the system calls a socket broker cannot avoid for a
//! message that arrives alone. What its CPU costs is the kernel's share plus almost nothing, so
//! a target below it cannot be met by any broker that reads and writes sockets.
//!
//! It is a measuring instrument, not a broker: it trusts its peers (the bench generator) and
//! closes a connection on anything it does not understand.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};

type Result<T = ()> = std::result::Result<T, String>;

/// The listener's key in the epoll set; connections use their slot index.
const LISTENER_KEY: u64 = u64::MAX;
/// Bytes read per readable socket: four 16 KB messages.
const READ_BYTES: usize = 64 * 1024;

struct Peer {
    stream: TcpStream,
    /// Bytes of an incomplete packet left from the previous read.
    input: Vec<u8>,
    output: Vec<u8>,
    /// Registered for writability because a write was short.
    waiting_to_write: bool,
}

/// Relays until `deadline` (the binary `floor-relay PORT [SECONDS]`, spawned by `bench floor`).
pub fn relay(listener: TcpListener, deadline: Instant) -> Result {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
    epoll::add(
        &epoll,
        &listener,
        epoll::EventData::new_u64(LISTENER_KEY),
        epoll::EventFlags::IN,
    )
    .map_err(|e| e.to_string())?;
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut topics: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut scratch = vec![0u8; READ_BYTES];
    let mut dirty: Vec<usize> = Vec::new();
    while Instant::now() < deadline {
        events.clear();
        let timeout = Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        match epoll::wait(&epoll, spare_capacity(&mut events), Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        for event in &events {
            let key = event.data.u64();
            if key == LISTENER_KEY {
                accept_all(&listener, &epoll, &mut peers, &mut free)?;
                continue;
            }
            let slot = key as usize;
            let flags = event.flags;
            let mut open = true;
            if flags.contains(epoll::EventFlags::OUT) {
                dirty.push(slot);
            }
            if flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR)
            {
                open = read_and_route(slot, &mut peers, &mut topics, &mut scratch, &mut dirty);
            }
            if !open {
                close(slot, &epoll, &mut peers, &mut free, &mut topics);
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for slot in dirty.drain(..) {
            if !flush(slot, &epoll, &mut peers) {
                close(slot, &epoll, &mut peers, &mut free, &mut topics);
            }
        }
    }
    Ok(())
}

fn accept_all(
    listener: &TcpListener,
    epoll: &impl std::os::fd::AsFd,
    peers: &mut Vec<Option<Peer>>,
    free: &mut Vec<usize>,
) -> Result {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Out of file descriptors or a connection reset before accept: not fatal.
            Err(_) => return Ok(()),
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            peers.push(None);
            peers.len() - 1
        });
        epoll::add(
            epoll,
            &stream,
            epoll::EventData::new_u64(slot as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| e.to_string())?;
        peers[slot] = Some(Peer {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            waiting_to_write: false,
        });
    }
}

/// One read; routes every whole packet. False when the connection is to be closed.
fn read_and_route(
    slot: usize,
    peers: &mut [Option<Peer>],
    topics: &mut HashMap<Vec<u8>, usize>,
    scratch: &mut [u8],
    dirty: &mut Vec<usize>,
) -> bool {
    let Some(peer) = peers.get_mut(slot).and_then(Option::as_mut) else {
        return true;
    };
    let count = match peer.stream.read(scratch) {
        Ok(0) => return false,
        Ok(count) => count,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return true;
        }
        Err(_) => return false,
    };
    let mut pending = std::mem::take(&mut peer.input);
    let bytes: &[u8] = if pending.is_empty() {
        &scratch[..count]
    } else {
        pending.extend_from_slice(&scratch[..count]);
        &pending
    };
    let mut at = 0;
    let mut open = true;
    while let Some((first, body_at, end)) = frame(&bytes[at..]) {
        let packet = &bytes[at..at + end];
        let body = &packet[body_at..];
        if !route(slot, first, packet, body, peers, topics, dirty) {
            open = false;
            break;
        }
        at += end;
    }
    // A remaining-length field longer than four bytes is not MQTT.
    if open && bytes.len() - at >= 5 && frame_length(&bytes[at..]).is_none() {
        open = false;
    }
    let left = bytes[at..].to_vec();
    if let Some(peer) = peers.get_mut(slot).and_then(Option::as_mut) {
        peer.input = left;
    }
    open
}

/// Remaining length of the packet at the start of `bytes`: (body offset, body length), or None
/// while incomplete or malformed.
fn frame_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for (index, &byte) in bytes.iter().enumerate().skip(1).take(4) {
        length |= usize::from(byte & 0x7f) << (7 * (index - 1));
        if byte & 0x80 == 0 {
            return Some((index + 1, length));
        }
    }
    None
}

/// (first byte, body offset, packet length) of a whole packet at the start of `bytes`.
fn frame(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (body_at, length) = frame_length(bytes)?;
    let end = body_at + length;
    (bytes.len() >= end).then(|| (bytes[0], body_at, end))
}

fn be16(bytes: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(*bytes.get(at)?) << 8 | usize::from(*bytes.get(at + 1)?))
}

/// Handles one packet from `slot`. False for a packet the relay does not serve.
fn route(
    slot: usize,
    first: u8,
    packet: &[u8],
    body: &[u8],
    peers: &mut [Option<Peer>],
    topics: &mut HashMap<Vec<u8>, usize>,
    dirty: &mut Vec<usize>,
) -> bool {
    match first >> 4 {
        // CONNECT (3.1.1): accepted, no session present.
        1 => send(peers, dirty, slot, &[0x20, 0x02, 0x00, 0x00]),
        // SUBSCRIBE: packet id, then one filter and its options byte.
        8 => {
            let (Some(length), Some(id)) = (be16(body, 2), body.get(..2)) else {
                return false;
            };
            let (Some(filter), Some(&options)) = (body.get(4..4 + length), body.get(4 + length))
            else {
                return false;
            };
            topics.insert(filter.to_vec(), slot);
            send(
                peers,
                dirty,
                slot,
                &[0x90, 0x03, id[0], id[1], options & 0x03],
            );
        }
        // PUBLISH: acknowledge at QoS 1, forward the same bytes to the topic's subscriber.
        3 => {
            let qos = (first >> 1) & 0x03;
            let Some(length) = be16(body, 0) else {
                return false;
            };
            let Some(topic) = body.get(2..2 + length) else {
                return false;
            };
            match qos {
                0 => {}
                1 => {
                    let Some(id) = body.get(2 + length..4 + length) else {
                        return false;
                    };
                    send(peers, dirty, slot, &[0x40, 0x02, id[0], id[1]]);
                }
                // QoS 2 would need the relay to keep state: not part of the floor.
                _ => return false,
            }
            if let Some(&subscriber) = topics.get(topic) {
                send(peers, dirty, subscriber, packet);
            }
        }
        // PUBACK from a subscriber: nothing to do.
        4 => {}
        // PINGREQ.
        12 => send(peers, dirty, slot, &[0xd0, 0x00]),
        // DISCONNECT, or anything else.
        _ => return false,
    }
    true
}

/// Queues `bytes` for the connection in `slot`, to be written after this wake-up's reads.
fn send(peers: &mut [Option<Peer>], dirty: &mut Vec<usize>, slot: usize, bytes: &[u8]) {
    if let Some(peer) = peers.get_mut(slot).and_then(Option::as_mut) {
        peer.output.extend_from_slice(bytes);
        dirty.push(slot);
    }
}

/// One write of the connection's pending output. False when the connection is to be closed.
fn flush(slot: usize, epoll: &impl std::os::fd::AsFd, peers: &mut [Option<Peer>]) -> bool {
    let Some(peer) = peers.get_mut(slot).and_then(Option::as_mut) else {
        return true;
    };
    if !peer.output.is_empty() {
        match peer.stream.write(&peer.output) {
            Ok(written) => {
                peer.output.drain(..written);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => return false,
        }
    }
    let wants_to_write = !peer.output.is_empty();
    if wants_to_write != peer.waiting_to_write {
        let interest = if wants_to_write {
            epoll::EventFlags::IN | epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        };
        if epoll::modify(
            epoll,
            &peer.stream,
            epoll::EventData::new_u64(slot as u64),
            interest,
        )
        .is_err()
        {
            return false;
        }
        peer.waiting_to_write = wants_to_write;
    }
    true
}

fn close(
    slot: usize,
    epoll: &impl std::os::fd::AsFd,
    peers: &mut [Option<Peer>],
    free: &mut Vec<usize>,
    topics: &mut HashMap<Vec<u8>, usize>,
) {
    if let Some(peer) = peers.get_mut(slot).and_then(Option::take) {
        let _ = epoll::delete(epoll, &peer.stream);
        topics.retain(|_, subscriber| *subscriber != slot);
        free.push(slot);
    }
}

/// `floor-relay PORT [SECONDS]`: the relay on 127.0.0.1:PORT for at most SECONDS (default 600).
pub fn relay_command(args: &[String]) -> Result {
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or("floor-relay: give the port to listen on")?;
    let seconds: u64 = match args.get(1) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("floor-relay: `{text}` is not a number of seconds"))?,
        None => 600,
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("floor-relay: cannot listen on 127.0.0.1:{port}: {e}"))?;
    relay(listener, Instant::now() + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn connect(port: u16, id: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut connect = vec![0x10, 0];
        connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
        connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
        connect.extend_from_slice(id.as_bytes());
        connect[1] = (connect.len() - 2) as u8;
        stream.write_all(&connect).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        stream
    }

    fn publish(topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        let mut packet = vec![0x32];
        let mut length = body.len();
        loop {
            let byte = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                packet.push(byte);
                break;
            }
            packet.push(byte | 0x80);
        }
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn forwards_each_publish_to_its_topics_subscriber_and_acknowledges_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = thread::spawn(move || {
            relay(listener, Instant::now() + Duration::from_secs(20)).unwrap()
        });
        let mut subscriber = connect(port, "sub");
        let mut subscribe = vec![0x82, 0, 0, 7];
        subscribe.extend_from_slice(&[0, 6]);
        subscribe.extend_from_slice(b"pair/1");
        subscribe.push(1);
        subscribe[1] = (subscribe.len() - 2) as u8;
        subscriber.write_all(&subscribe).unwrap();
        let mut suback = [0u8; 5];
        subscriber.read_exact(&mut suback).unwrap();
        assert_eq!(suback, [0x90, 3, 0, 7, 1]);

        let mut publisher = connect(port, "pub");
        // A 16 KB payload split across writes, then a message for a topic nobody subscribed.
        let payload: Vec<u8> = (0..16_384u32).map(|i| i as u8).collect();
        let first = publish("pair/1", 1, &payload);
        let (head, tail) = first.split_at(5_000);
        publisher.write_all(head).unwrap();
        publisher.flush().unwrap();
        thread::sleep(Duration::from_millis(50));
        publisher.write_all(tail).unwrap();
        publisher
            .write_all(&publish("pair/2", 2, b"nobody"))
            .unwrap();
        publisher
            .write_all(&publish("pair/1", 3, b"second"))
            .unwrap();

        let mut acks = [0u8; 12];
        publisher.read_exact(&mut acks).unwrap();
        assert_eq!(acks, [0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3]);
        let mut received = vec![0u8; first.len()];
        subscriber.read_exact(&mut received).unwrap();
        assert_eq!(received, first);
        let second = publish("pair/1", 3, b"second");
        let mut received = vec![0u8; second.len()];
        subscriber.read_exact(&mut received).unwrap();
        assert_eq!(received, second);

        // PINGREQ is answered; DISCONNECT closes.
        publisher.write_all(&[0xc0, 0]).unwrap();
        let mut pong = [0u8; 2];
        publisher.read_exact(&mut pong).unwrap();
        assert_eq!(pong, [0xd0, 0]);
        publisher.write_all(&[0xe0, 0]).unwrap();
        let mut rest = Vec::new();
        assert_eq!(publisher.read_to_end(&mut rest).unwrap(), 0);
        drop(subscriber);
        drop(relay);
    }
}
