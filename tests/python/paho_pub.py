"""Publish with paho-mqtt: one message per --message (or --payload-size bytes of a pattern).

MQTT 5 options: --user-property K=V (repeatable, sent in order), --expiry, --response-topic,
--correlation (hex), --alias N (the first message names the topic with Topic Alias N, the
following ones send an empty topic and the alias only). Prints {"event": "published", ...} per
acknowledged message and {"event": "done"} after a clean DISCONNECT.
"""

import argparse
import threading

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common import add_connection_args, connect, emit, fail, make_client


def main():
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--qos", type=int, default=0)
    parser.add_argument("--message", action="append", default=[])
    parser.add_argument("--payload-size", type=int, default=None)
    parser.add_argument("--retain", action="store_true")
    parser.add_argument("--user-property", action="append", default=[])
    parser.add_argument("--expiry", type=int, default=None)
    parser.add_argument("--response-topic", default=None)
    parser.add_argument("--correlation", default=None)
    parser.add_argument("--alias", type=int, default=None)
    args = parser.parse_args()

    payloads = [m.encode() for m in args.message]
    if args.payload_size is not None:
        payloads.append(bytes((i * 7 + 3) % 256 for i in range(args.payload_size)))
    if not payloads:
        fail("nothing to publish")

    client = make_client(args)
    acked = {}
    lock = threading.Lock()

    def on_publish(client, userdata, mid, reason_code, properties):
        with lock:
            acked[mid] = reason_code.value

    client.on_publish = on_publish
    connect(client, args)
    for index, payload in enumerate(payloads):
        properties = None
        topic = args.topic
        if args.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            for pair in args.user_property:
                key, value = pair.split("=", 1)
                properties.UserProperty = (key, value)
            if args.expiry is not None:
                properties.MessageExpiryInterval = args.expiry
            if args.response_topic is not None:
                properties.ResponseTopic = args.response_topic
            if args.correlation is not None:
                properties.CorrelationData = bytes.fromhex(args.correlation)
            if args.alias is not None:
                properties.TopicAlias = args.alias
                if index > 0:
                    topic = ""
        info = client.publish(topic, payload, qos=args.qos, retain=args.retain, properties=properties)
        info.wait_for_publish(args.timeout)
        if not info.is_published():
            fail("message %d not acknowledged" % index)
        with lock:
            code = acked.get(info.mid)
        emit(event="published", index=index, reason_code=code)
    client.disconnect()
    client.loop_stop()
    emit(event="done")


if __name__ == "__main__":
    main()
