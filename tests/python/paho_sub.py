"""Subscribe with paho-mqtt and print each message as JSON.

Prints {"event": "subscribed", ...} once the SUBACK is in, one {"event": "message", ...} per
message, {"event": "disconnected", "reason_code": N} if the broker drops the connection, and
{"event": "done"} after a clean DISCONNECT once --count messages have arrived. Exits 2 on timeout.
"""

import argparse
import threading
import time

from common import add_connection_args, connect, describe_message, emit, fail, make_client


def main():
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    parser.add_argument("--topic", action="append", default=[])
    parser.add_argument("--qos", type=int, default=0)
    parser.add_argument("--count", type=int, default=0, help="messages to wait for")
    parser.add_argument("--keep-session", action="store_true", help="clean session/start off")
    parser.add_argument("--session-expiry", type=int, default=None)
    parser.add_argument("--no-payload", action="store_true", help="print length and CRC only")
    parser.add_argument("--stay", action="store_true", help="stay connected until killed or dropped")
    args = parser.parse_args()

    clean = not args.keep_session
    client = make_client(args, clean=clean)
    received = []
    enough = threading.Event()
    dropped = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, message):
        emit(**describe_message(message, with_payload=not args.no_payload))
        received.append(message)
        if args.count and len(received) >= args.count:
            enough.set()

    def on_subscribe(client, userdata, mid, reason_code_list, properties):
        emit(event="subscribed", reason_codes=[code.value for code in reason_code_list])
        subscribed.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not enough.is_set():
            emit(event="disconnected", reason_code=reason_code.value)
            dropped.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    connect(client, args, clean=clean, session_expiry=args.session_expiry, announce=True)
    if args.topic:
        client.subscribe([(topic, args.qos) for topic in args.topic])
        if not subscribed.wait(args.timeout):
            fail("no SUBACK")
    if args.stay:
        deadline = time.monotonic() + args.timeout
        while not dropped.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        client.loop_stop()
        return
    if args.count and not enough.wait(args.timeout):
        fail("timed out after %d of %d messages" % (len(received), args.count))
    enough.set()  # our own DISCONNECT is not a drop
    client.disconnect()
    client.loop_stop()
    emit(event="done")


if __name__ == "__main__":
    main()
