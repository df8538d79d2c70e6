"""Keeping a connecting input socket connected: libzmq gives up on a connection for good after a protocol error.

When a socket *connects* and its peer breaks the protocol — a message part over ``ZMQ_MAXMSGSIZE`` (the node's
frame limit) or a failed CURVE handshake — libzmq closes that connection and never reconnects (its session
ends; a peer that simply went away is reconnected). The node would then be deaf until restarted, without a word.
The socket monitor tells the cases apart: a disconnect that libzmq will repair is followed at once by a
``CONNECT_RETRIED`` event for the same endpoint; one it will not repair is not. ``LinkMonitor`` watches those events,
reports each abandoned connection once (why, and what to do), and reconnects the endpoint itself.

Where the node *binds*, the peer reconnects on its own and nothing is needed.
"""
from __future__ import annotations

import time
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | _HANDSHAKE_FAILED


class LinkMonitor:
    """Watches ``sock``: its connect ``endpoints`` for connections libzmq abandoned, every endpoint for failed
    handshakes. ``poll_item`` goes into the caller's poller and ``handle`` is called when it is readable; ``repair``
    (called often) reconnects what libzmq abandoned. Each event worth a user's attention goes to
    ``report(reason, detail)``: ``part_too_large`` (a connection dropped after its handshake) or
    ``handshake_failed`` (a CURVE key refused, by this side or by the other)."""

    # A repairable disconnect is followed by CONNECT_RETRIED within the same libzmq call; this is ample.
    SETTLE_S = 0.1
    # After a failed handshake the peer would refuse again at once: retry slowly instead of in a tight loop.
    HANDSHAKE_RETRY_S = 2.0

    def __init__(self, sock: zmq.Socket, endpoints: list[str], max_part_bytes: int,
                 report: Callable[[str, str], None]):
        self.sock = sock
        self.endpoints = set(endpoints)
        self.max_part_bytes = max_part_bytes
        self.report = report
        self.poll_item = sock.get_monitor_socket(_EVENTS)
        self._handshake_failed: set[str] = set()
        self._pending: dict[str, tuple[float, str, str]] = {}  # endpoint → (reconnect at, reason, detail)

    def handle(self) -> None:
        """Read every queued monitor event."""
        while self.poll_item.poll(0):
            event = parse_monitor_message(self.poll_item.recv_multipart())
            endpoint = event["endpoint"].decode(errors="replace")
            kind = event["event"]
            if kind & _HANDSHAKE_FAILED:  # on any endpoint: a refused client of a bound socket is news too
                self._report_handshake(endpoint, kind, event["value"])
                continue
            if endpoint not in self.endpoints:
                continue
            if kind == zmq.EVENT_DISCONNECTED:
                if endpoint in self._handshake_failed:
                    self._pending[endpoint] = (time.monotonic() + self.HANDSHAKE_RETRY_S, "", "")
                else:
                    self._pending[endpoint] = (
                        time.monotonic() + self.SETTLE_S, "part_too_large",
                        f"{endpoint} sent a message part over {self.max_part_bytes} bytes, more than the largest frame "
                        "the limits allow (--max-width/--max-height), or broke the ZeroMQ protocol; libzmq dropped "
                        "the connection for good, so the node reconnected it")
            elif kind == zmq.EVENT_CONNECT_RETRIED:  # libzmq repairs this one itself
                self._pending.pop(endpoint, None)
            elif kind == zmq.EVENT_CONNECTED:
                self._handshake_failed.discard(endpoint)

    def _report_handshake(self, endpoint: str, kind: int, value: int) -> None:
        why = _handshake_text(kind, value)
        if endpoint in self.endpoints:
            self._handshake_failed.add(endpoint)
            self.report("handshake_failed", f"the handshake with {endpoint} failed ({why}): check this side's "
                        "--curve-server and --curve-secret, and that the server's --curve-allow holds this side's key")
        else:
            self.report("handshake_failed", f"a peer's handshake on {endpoint} failed ({why}): refused — a client "
                        "whose key is not in --curve-allow, or one that uses another server key or no CURVE")

    def repair(self) -> None:
        """Reconnect every endpoint whose disconnect libzmq did not follow with a retry of its own."""
        now = time.monotonic()
        for endpoint, (due, reason, detail) in list(self._pending.items()):
            if due > now:
                continue
            del self._pending[endpoint]
            self.sock.disconnect(endpoint)
            self.sock.connect(endpoint)
            if reason:
                self.report(reason, detail)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.poll_item.close(linger=0)


def _handshake_text(kind: int, value: int) -> str:
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"refused by the server, ZAP status {value}"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "a security mechanism mismatch or bad handshake message"
    return "no detail from libzmq"
