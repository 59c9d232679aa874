"""paho-mqtt 2.x over WebSocket (plain or TLS) or over TLS: subscribe or publish, printing JSON.

Subscriber (--sub TOPIC, repeatable): prints {"event": "connected"}, then {"event": "subscribed"}
once the SUBACK is in, one {"event": "message", ...} per message and {"event": "done"} after
--count messages (without --count it stays subscribed until killed or --timeout seconds pass). Publisher (--pub TOPIC --message M ...): publishes each message at --qos,
waits for every acknowledgement, prints {"event": "published", "count": N} and disconnects.
A refused connection prints {"event": "refused", "reason_code": N}; a connection that fails
prints {"event": "error", ...}. Exits 2 on error or timeout.
"""

import argparse
import ssl
import threading

import paho.mqtt.client as mqtt

from common import describe_message, emit, fail


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["5", "311"], default="5")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--transport", choices=["tcp", "websockets"], default="websockets")
    parser.add_argument("--path", default="/mqtt")
    parser.add_argument("--cafile", help="verify the broker against this CA (turns TLS on)")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client key (PEM)")
    parser.add_argument("--username")
    parser.add_argument("--sub", action="append", default=[])
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pub")
    parser.add_argument("--message", action="append", default=[])
    parser.add_argument("--qos", type=int, default=0)
    args = parser.parse_args()

    protocol = mqtt.MQTTv5 if args.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=protocol,
        transport=args.transport,
    )
    if args.transport == "websockets":
        client.ws_set_options(path=args.path)
    if args.cafile:
        client.tls_set(
            ca_certs=args.cafile,
            certfile=args.cert,
            keyfile=args.key,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    if args.username:
        client.username_pw_set(args.username, "ignored")

    connected = threading.Event()
    subscribed = threading.Event()
    enough = threading.Event()
    refused = {}
    received = []
    acked = []
    all_acked = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused["code"] = reason_code.value
        else:
            emit(event="connected")
        connected.set()

    def on_subscribe(client, userdata, mid, reason_code_list, properties):
        emit(event="subscribed", reason_codes=[code.value for code in reason_code_list])
        subscribed.set()

    def on_message(client, userdata, message):
        emit(**describe_message(message))
        received.append(message)
        if args.count and len(received) >= args.count:
            enough.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        acked.append(mid)
        if len(acked) >= len(args.message):
            all_acked.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    try:
        client.connect("127.0.0.1", args.port, keepalive=60)
    except Exception as error:  # TLS or WebSocket handshake refused
        fail("connect failed: %s: %s" % (type(error).__name__, error))
    client.loop_start()
    if not connected.wait(args.timeout):
        fail("no CONNACK")
    if "code" in refused:
        emit(event="refused", reason_code=refused["code"])
        client.loop_stop()
        return
    if args.sub:
        client.subscribe([(topic, args.qos) for topic in args.sub])
        if not subscribed.wait(args.timeout):
            fail("no SUBACK")
        if not args.count:
            # Stay subscribed until killed (or --timeout seconds pass).
            enough.wait(args.timeout)
        elif not enough.wait(args.timeout):
            fail("timed out after %d of %d messages" % (len(received), args.count))
        emit(event="done")
    if args.pub:
        for message in args.message:
            client.publish(args.pub, message, qos=args.qos)
        if args.message and not all_acked.wait(args.timeout):
            fail("only %d of %d messages sent" % (len(acked), len(args.message)))
        emit(event="published", count=len(acked))
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
