"""Connect with a will, print {"event": "connected"}, then either hang until killed
(--then hang: the test kills the process, so the socket closes without DISCONNECT) or disconnect
cleanly (--then disconnect: normal DISCONNECT, the will must not be published)."""

import argparse
import time

from common import add_connection_args, connect, emit, make_client


def main():
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    parser.add_argument("--will-topic", required=True)
    parser.add_argument("--will-payload", required=True)
    parser.add_argument("--will-qos", type=int, default=1)
    parser.add_argument("--then", choices=["hang", "disconnect"], required=True)
    args = parser.parse_args()

    client = make_client(args)
    client.will_set(args.will_topic, args.will_payload, qos=args.will_qos)
    connect(client, args)
    emit(event="connected")
    if args.then == "hang":
        time.sleep(args.timeout)
        return
    client.disconnect()
    client.loop_stop()
    emit(event="done")


if __name__ == "__main__":
    main()
