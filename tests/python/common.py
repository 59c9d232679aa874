"""Shared helpers of the paho-mqtt 2.x scripts the end-to-end tests run (tests/src/lib.rs).

Every script prints one JSON object per line on stdout, flushed, so the Rust side can follow
what happens as it happens.
"""

import json
import sys
import threading
import zlib

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_print_lock = threading.Lock()


def emit(**fields):
    with _print_lock:
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
        sys.stdout.flush()


def fail(message):
    emit(event="error", message=message)
    sys.exit(2)


def add_connection_args(parser):
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["5", "311"], default="5")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--timeout", type=float, default=20.0)


def make_client(args, clean=True, **kwargs):
    """A client for args.protocol; v3.1.1 takes clean_session here, v5 at connect()."""
    if args.protocol == "5":
        return mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=mqtt.MQTTv5,
            **kwargs,
        )
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
        **kwargs,
    )


def connect(client, args, clean=True, session_expiry=None, wait=True, announce=False):
    """Connects and starts the network thread; returns (session_present, reason code).

    With announce, prints {"event": "connected", "session_present": ...} from the CONNACK
    callback itself, so it comes before any message the broker sends right after CONNACK.
    """
    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["session_present"] = bool(flags.session_present)
        result["reason_code"] = reason_code.value
        if announce:
            emit(event="connected", session_present=bool(flags.session_present))
        done.set()

    client.on_connect = on_connect
    if args.protocol == "5":
        properties = None
        if session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        client.connect("127.0.0.1", args.port, keepalive=60, clean_start=clean, properties=properties)
    else:
        client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    if not wait:
        return None, None
    if not done.wait(args.timeout):
        fail("no CONNACK")
    if result["reason_code"] != 0:
        fail("connection refused: %d" % result["reason_code"])
    return result["session_present"], result["reason_code"]


def describe_message(message, with_payload=True):
    """A JSON-able description of a received message."""
    payload = message.payload
    fields = {
        "event": "message",
        "topic": message.topic,
        "qos": message.qos,
        "retain": bool(message.retain),
        "len": len(payload),
        "crc32": zlib.crc32(payload),
    }
    if with_payload:
        fields["payload"] = payload.decode("utf-8", "replace")
    properties = getattr(message, "properties", None)
    if properties is not None:
        fields["user_properties"] = [list(pair) for pair in getattr(properties, "UserProperty", [])]
        if hasattr(properties, "ResponseTopic"):
            fields["response_topic"] = properties.ResponseTopic
        if hasattr(properties, "CorrelationData"):
            fields["correlation_data"] = properties.CorrelationData.hex()
        if hasattr(properties, "MessageExpiryInterval"):
            fields["message_expiry"] = properties.MessageExpiryInterval
    return fields
