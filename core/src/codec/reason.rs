//! MQTT 5.0 reason codes, and their mapping to MQTT 3.1.1 return codes.

use super::PacketType;

/// An MQTT 5.0 reason code (§2.4). Several names share one value (0x00 is Success, Normal
/// disconnection and Granted QoS 0), so this is a byte with named constants, not an enum.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl ReasonCode {
            $(
                #[doc = $text]
                pub const $name: ReasonCode = ReasonCode($value);
            )*

            /// The specification's name of this code, or `None` for an undefined value.
            pub const fn name(self) -> Option<&'static str> {
                // The first name listed for a value wins (e.g. "Success" for 0x00).
                #[allow(unreachable_patterns)]
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success";
    NORMAL_DISCONNECTION = 0x00, "Normal disconnection";
    GRANTED_QOS_0 = 0x00, "Granted QoS 0";
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    DISCONNECT_WITH_WILL_MESSAGE = 0x04, "Disconnect with Will Message";
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    RE_AUTHENTICATE = 0x19, "Re-authenticate";
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    NOT_AUTHORIZED = 0x87, "Not authorized";
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    SERVER_BUSY = 0x89, "Server busy";
    BANNED = 0x8A, "Banned";
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    SERVER_MOVED = 0x9D, "Server moved";
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_PUBREC_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_PUBCOMP_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

impl ReasonCode {
    /// True for failures (0x80 and above).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// Whether the specification allows this code in a packet of type `kind` (MQTT 5.0).
    pub fn is_allowed_in(self, kind: PacketType) -> bool {
        let allowed = match kind {
            PacketType::ConnAck => CONNACK_CODES,
            PacketType::PubAck | PacketType::PubRec => PUBACK_PUBREC_CODES,
            PacketType::PubRel | PacketType::PubComp => PUBREL_PUBCOMP_CODES,
            PacketType::SubAck => SUBACK_CODES,
            PacketType::UnsubAck => UNSUBACK_CODES,
            PacketType::Disconnect => DISCONNECT_CODES,
            PacketType::Auth => AUTH_CODES,
            _ => return false,
        };
        allowed.contains(&self.0)
    }

    /// The MQTT 3.1.1 CONNACK return code for this reason (§3.2.2.3): 0 accepted,
    /// 1 unacceptable protocol version, 2 identifier rejected, 3 server unavailable,
    /// 4 bad user name or password, 5 not authorized. Codes 3.1.1 cannot express map to 3.
    pub const fn to_v3_connack(self) -> u8 {
        match self.0 {
            0x00 => 0,
            0x84 => 1,
            0x85 => 2,
            0x86 => 4,
            0x87 | 0x8A => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code; `None` for 6..=255 (reserved).
    pub const fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        match code {
            0 => Some(ReasonCode::SUCCESS),
            1 => Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            2 => Some(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            3 => Some(ReasonCode::SERVER_UNAVAILABLE),
            4 => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            5 => Some(ReasonCode::NOT_AUTHORIZED),
            _ => None,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub const fn to_v3_suback(self) -> u8 {
        match self.0 {
            0x00..=0x02 => self.0,
            _ => 0x80,
        }
    }
}

impl core::fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "0x{:02X} ({name})", self.0),
            None => write!(f, "0x{:02X} (undefined)", self.0),
        }
    }
}

impl core::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}
