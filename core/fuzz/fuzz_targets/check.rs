//! The property checked by the `decode` fuzz target and by the replay of its past findings
//! (`core/tests/fuzz_regressions.rs`): fed any bytes as a stream, for every protocol version,
//! the decoder never panics, and every packet it accepts encodes again, to exactly the size it
//! announces, as bytes that decode to the same packet.

use femtomq_core::ProtocolVersion;
use femtomq_core::codec::{Decoded, Packet, decode, decode_packet};

/// Largest packet the checks accept, so that a length prefix cannot make them buffer much.
const MAX_PACKET_SIZE: usize = 1 << 20;

/// Runs the property over `data`; panics (which the fuzzer reports) when it does not hold.
pub fn check_stream(data: &[u8]) {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut rest = data;
        while let Ok(Decoded::Packet { packet, len }) = decode(rest, version, MAX_PACKET_SIZE) {
            let version = match packet {
                Packet::Connect(connect) => connect.version,
                _ => version,
            };
            let size = packet
                .encoded_len(version)
                .expect("a decoded packet has a size");
            let mut buf = vec![0u8; size];
            let written = packet
                .encode(version, &mut buf)
                .expect("a decoded packet encodes");
            assert_eq!(written, size, "encoded_len disagrees with encode");
            assert_eq!(
                decode_packet(&buf, version),
                Ok(packet),
                "re-encoded packet differs"
            );
            rest = &rest[len..];
        }
    }
}
