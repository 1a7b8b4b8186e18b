#!/usr/bin/env python3
"""Submit a task to RIS over AMQP and wait for its reply and its completion event.

The wire contract is described in docs/integrating.md. Credentials come from the
201 response of `POST /v1/integrations`, passed in the environment:

    RIS_AMQP_URL   amqp://host:5672 (the response's amqp.url)
    RIS_VHOST      ris.<tenant>
    RIS_USERNAME   ris.<tenant>.int.<name>
    RIS_PASSWORD   the password, shown once
    RIS_SELECTOR   label selector of the agents to run on (e.g. "env=prod"), or
    RIS_AGENT_ID   a single agent's id
    RIS_TIMEOUT    seconds to wait (default 30)

Exit status: 0 when the task completed, 1 when it ended otherwise, 2 on timeout.
Requires pika (`pip install pika`).
"""

import json
import os
import sys
import time
import uuid
from urllib.parse import urlparse

import pika

SUBMIT_EXCHANGE = "ris.submit"
EVENTS_EXCHANGE = "ris.events"
TERMINAL = {"completed", "failed", "timed_out", "cancelled"}


def connect(url, vhost, username, password):
    parsed = urlparse(url)
    params = pika.ConnectionParameters(
        host=parsed.hostname or "localhost",
        port=parsed.port or 5672,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(username, password),
        heartbeat=20,
        client_properties={"connection_name": "submit_and_wait.py"},
    )
    return pika.BlockingConnection(params)


def main():
    username = os.environ["RIS_USERNAME"]
    # ris.<tenant>.int.<name>: tenant names contain no dot.
    name = username.split(".int.", 1)[1]
    prefix = f"ris.int.{name}."
    timeout = float(os.environ.get("RIS_TIMEOUT", "30"))
    if os.environ.get("RIS_AGENT_ID"):
        target = {"agent_id": os.environ["RIS_AGENT_ID"]}
    else:
        target = {"selector": os.environ.get("RIS_SELECTOR", "")}

    conn = connect(
        os.environ.get("RIS_AMQP_URL", "amqp://localhost:5672"),
        os.environ["RIS_VHOST"],
        username,
        os.environ["RIS_PASSWORD"],
    )
    channel = conn.channel()
    channel.confirm_delivery()  # basic_publish raises if the broker refuses the message

    # Our own queues, under our prefix (the only names we may declare). Exclusive: they
    # vanish with this connection.
    replies = prefix + "replies"
    events = prefix + "events"
    channel.queue_declare(replies, exclusive=True)
    channel.queue_declare(events, exclusive=True)
    channel.queue_bind(events, EVENTS_EXCHANGE, routing_key="task.#")

    task_id = str(uuid.uuid4())  # chosen by us: re-publishing it is harmless
    correlation_id = str(uuid.uuid4())
    got = {}

    def on_reply(ch, method, props, body):
        message = json.loads(body)
        if props.correlation_id == correlation_id and message.get("task_id") == task_id:
            got["reply"] = message
        ch.basic_ack(method.delivery_tag)

    def on_event(ch, method, props, body):
        event = json.loads(body)
        data = event.get("data", {})
        if data.get("task_id") == task_id and data.get("state") in TERMINAL:
            got["event"] = event
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(replies, on_reply)
    channel.basic_consume(events, on_event)

    submission = {
        "type": "task.submit",
        "v": 1,
        "task_id": task_id,
        "request": {
            "target": target,
            "task": {"kind": "shell", "argv": ["uname", "-s"]},
            "timeout_secs": 20,
            "queue_timeout_secs": 20,
        },
    }
    channel.basic_publish(
        SUBMIT_EXCHANGE,
        routing_key="",
        body=json.dumps(submission).encode(),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            reply_to=replies,
            correlation_id=correlation_id,
            user_id=username,  # required with reply_to; the broker checks it
            message_id=task_id,
        ),
        mandatory=True,
    )
    print(f"submitted task {task_id}", flush=True)

    deadline = time.monotonic() + timeout
    while ("reply" not in got or "event" not in got) and time.monotonic() < deadline:
        conn.process_data_events(time_limit=min(1.0, max(0.0, deadline - time.monotonic())))
    conn.close()

    if "reply" not in got or "event" not in got:
        print(f"timed out after {timeout:.0f} s; got {sorted(got)}", file=sys.stderr)
        return 2
    reply, event = got["reply"], got["event"]
    print("event: " + json.dumps(event))
    print("reply: " + json.dumps(reply))
    result = reply.get("result") or {}
    stdout = (result.get("output") or {}).get("stdout", "")
    print(f"task {task_id} {reply['state']}: {stdout.strip()}")
    return 0 if reply["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
