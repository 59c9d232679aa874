"""MQTT 5 responder: subscribes to --topic, answers each request on its Response Topic with
its Correlation Data and the payload "answer:<request>", prints each request as JSON, and exits
after --count requests."""

import argparse
import threading

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common import add_connection_args, connect, describe_message, emit, fail, make_client


def main():
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    args.protocol = "5"

    client = make_client(args)
    subscribed = threading.Event()
    answered = threading.Semaphore(0)

    def on_subscribe(client, userdata, mid, reason_code_list, properties):
        emit(event="subscribed", reason_codes=[code.value for code in reason_code_list])
        subscribed.set()

    def on_message(client, userdata, message):
        emit(**describe_message(message))
        request = message.properties
        properties = Properties(PacketTypes.PUBLISH)
        if hasattr(request, "CorrelationData"):
            properties.CorrelationData = request.CorrelationData
        client.publish(request.ResponseTopic, b"answer:" + message.payload, qos=1, properties=properties)
        answered.release()

    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect(client, args)
    client.subscribe(args.topic, qos=1)
    if not subscribed.wait(args.timeout):
        fail("no SUBACK")
    for _ in range(args.count):
        if not answered.acquire(timeout=args.timeout):
            fail("no request")
    client.disconnect()
    client.loop_stop()
    emit(event="done")


if __name__ == "__main__":
    main()
