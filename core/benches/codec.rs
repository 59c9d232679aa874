//! Codec benchmark: cost of framing+decoding and of encoding a PUBLISH with a 64-byte and a
//! 16 KB payload, MQTT 3.1.1 and MQTT 5.0 (with a few properties, as real clients send).
//!
//! Run: `cargo bench -p femtomq-core --bench codec` (or `cargo xtask bench`). Prints the median
//! of 11 samples per case; results are recorded in BENCHMARKS.md.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use femtomq_core::ProtocolVersion;
use femtomq_core::codec::{
    Decoded, MAX_PACKET_SIZE, Packet, Publish, PublishProperties, QosPid, Repeated, UserProperty,
    decode,
};

const SAMPLES: usize = 11;
const SAMPLE_TIME: Duration = Duration::from_millis(200);

/// Median nanoseconds per call of `op`, each sample long enough to dwarf timer overhead.
fn median_ns(mut op: impl FnMut()) -> f64 {
    // Calibrate the batch so one sample takes about SAMPLE_TIME.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        if start.elapsed() >= SAMPLE_TIME / 4 {
            break;
        }
        batch *= 2;
    }
    batch *= 4;
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

fn main() {
    let user_properties = [UserProperty {
        name: "unit",
        value: "celsius",
    }];
    println!(
        "{:<10} {:>8} {:>14} {:>14} {:>14} {:>14}",
        "version", "payload", "decode ns", "decode MB/s", "encode ns", "encode MB/s"
    );
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for payload_len in [64usize, 16 * 1024] {
            let payload = vec![0xA5u8; payload_len];
            let properties = if version.is_v5() {
                PublishProperties {
                    message_expiry_interval: Some(3600),
                    payload_format_indicator: Some(false),
                    user_properties: Repeated::from_slice(&user_properties),
                    ..PublishProperties::default()
                }
            } else {
                PublishProperties::default()
            };
            let packet = Packet::Publish(Publish {
                dup: false,
                qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(7).unwrap()),
                retain: false,
                topic: "site/12/device/00042/telemetry",
                properties,
                payload: &payload,
            });
            let len = packet.encoded_len(version).unwrap();
            let mut bytes = vec![0u8; len];
            packet.encode(version, &mut bytes).unwrap();

            let decode_ns = median_ns(|| {
                let decoded = decode(black_box(&bytes), version, MAX_PACKET_SIZE).unwrap();
                // Touch the user properties too: they are parsed lazily when iterated.
                if let Decoded::Packet {
                    packet: Packet::Publish(publish),
                    ..
                } = decoded
                {
                    black_box(publish.properties.user_properties.iter().count());
                    black_box(publish);
                }
            });
            let mut out = vec![0u8; len];
            let encode_ns = median_ns(|| {
                black_box(black_box(&packet).encode(version, &mut out).unwrap());
            });
            let mb_per_s = |ns: f64| len as f64 / ns * 1e3;
            println!(
                "{:<10} {:>8} {:>14.1} {:>14.0} {:>14.1} {:>14.0}",
                format!("{version:?}"),
                payload_len,
                decode_ns,
                mb_per_s(decode_ns),
                encode_ns,
                mb_per_s(encode_ns)
            );
        }
    }
}
