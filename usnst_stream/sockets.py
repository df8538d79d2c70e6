"""Opening ZeroMQ sockets from endpoint strings.

Endpoints follow CZMQ's convention: ``@tcp://127.0.0.1:5555`` binds, ``>tcp://127.0.0.1:5555`` connects,
and a bare endpoint does what the socket's role usually does (publishers bind, subscribers connect).
Several endpoints may be given separated by commas.
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import zmq

from usnst_stream.security import CurveConfig, secure

log = logging.getLogger(__name__)

# The default endpoints of a live setup on one machine, written only here.
SIMULATOR_ENDPOINT = "tcp://127.0.0.1:5555"  # simulators publish input frames here (they bind)
STYLIZED_ENDPOINT = "tcp://127.0.0.1:5556"  # the node publishes stylized frames here (it binds)
ENDPOINT_HELP = "'@' binds, '>' connects (e.g. @tcp://127.0.0.1:5556, >ipc:///tmp/sim); comma-separate several"


def binding(endpoint: str) -> str:
    return "@" + endpoint


def connecting(endpoint: str) -> str:
    return ">" + endpoint


def split_endpoint(spec: str, default_bind: bool) -> tuple[bool, str]:
    spec = spec.strip()
    if spec.startswith("@"):
        return True, spec[1:]
    if spec.startswith(">"):
        return False, spec[1:]
    return default_bind, spec


SCHEMES = ("tcp", "ipc", "inproc")


def check_endpoints(spec: str, schemes: tuple[str, ...] = SCHEMES) -> list[tuple[bool, str]]:
    """Parse an endpoint list, refusing what ZeroMQ would misread instead of failing: a tcp port outside 1–65535
    (libzmq takes port 99999 modulo 65536 and binds 34463) or with trailing characters ('17605x' binds 17605), a
    missing scheme or host. Returns (bind?, endpoint) per entry; called before anything slow starts. ``schemes``:
    the transports the caller serves (the node's output adds OpenIGTLink, ``igtl``)."""
    roles = []
    for one in spec.split(","):
        bind, endpoint = split_endpoint(one, True)
        scheme, sep, rest = endpoint.partition("://")
        if not sep or scheme not in schemes:
            raise ValueError(f"{endpoint!r} is not an endpoint: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
                             + (" or igtl://HOST:PORT" if "igtl" in schemes else ""))
        if scheme in ("tcp", "igtl"):
            host, colon, port = rest.rpartition(":")
            if not colon or not host:
                raise ValueError(f"{endpoint!r}: a tcp endpoint needs HOST:PORT")
            if port != "*" and not (port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"{endpoint!r}: the port must be a number in 1-65535, or * for any free port "
                                 f"(got {port!r})")
        elif not rest:
            raise ValueError(f"{endpoint!r}: {scheme} endpoints need a name after {scheme}://")
        roles.append((bind, endpoint))
    return roles


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc and tcp on 127.0.0.0/8, ::1 or localhost."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names, host names: not loopback


def attach(sock: zmq.Socket, spec: str, default_bind: bool, curve: CurveConfig | None = None) -> list[str]:
    """Bind or connect ``sock`` to every endpoint in ``spec``; returns the endpoints actually used
    (tcp://127.0.0.1:* binds to a free port, and the chosen port is returned). With ``curve`` the socket is
    secured first, as CURVE server if it binds and client if it connects (one role per socket)."""
    check_endpoints(spec)
    roles = [split_endpoint(one, default_bind) for one in spec.split(",")]
    if curve is not None:
        if len({bind for bind, _ in roles}) > 1:
            raise ValueError(f"{spec}: with CURVE a socket either binds or connects, not both")
        secure(sock, curve, roles[0][0])
    used = []
    for bind, endpoint in roles:
        if urlsplit(endpoint).netloc.startswith("["):  # an IPv6 literal: libzmq needs IPv6 on ("No such device")
            sock.setsockopt(zmq.IPV6, 1)
        if bind:
            if not is_loopback(endpoint):
                log.warning("listening beyond loopback on %s: any host that can reach it may connect", endpoint)
            sock.bind(endpoint)
            used.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        else:
            sock.connect(endpoint)
            used.append(endpoint)
    return used


_fresh = itertools.count()
TRANSPORTS = ("tcp", "ipc")


def loopback_endpoints(transport: str, label: str = "usnst") -> tuple[str, str]:
    """A pair of fresh bind endpoints (input side, output side) for an in-process chain: tcp on ephemeral
    loopback ports, or ipc paths unique to this process and call."""
    if transport == "tcp":
        return "@tcp://127.0.0.1:*", "@tcp://127.0.0.1:*"
    if transport == "ipc":
        base = Path(tempfile.gettempdir()) / f"{label}-{os.getpid()}-{next(_fresh)}"
        return f"@ipc://{base}-in", f"@ipc://{base}-out"
    raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
