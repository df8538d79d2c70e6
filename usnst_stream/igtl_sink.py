"""Stylized frames as OpenIGTLink IMAGE messages, for PLUS / 3D Slicer (``--out igtl://127.0.0.1:18944``).

OpenIGTLink peers expect a TCP *server* on port 18944 that streams IMAGE messages: pixels plus a 4×4 ijk→world
matrix (the frame's pose when the simulator sends one, else the pixel spacing in mm on the diagonal) and a
timestamp. pyigtl (extra ``usnst[igtl]``) provides the
server. Its send queue is unbounded, so frames are only queued while a client is connected and at most a couple
are pending: a slow or absent viewer loses frames instead of growing the node's memory.
"""
from __future__ import annotations

import logging
import math
import signal
from urllib.parse import urlsplit

import numpy as np

from usnst_io import protocol
from usnst_stream.sockets import is_loopback

log = logging.getLogger(__name__)

MAX_PENDING = 2


def is_igtl(endpoint: str) -> bool:
    return endpoint.strip().lstrip("@").startswith("igtl://")


def _quiet_handler(base):
    """pyigtl's connection handler, but a client that goes away (BrokenPipe, reset) ends its connection with one
    log line instead of a traceback printed into the node's log: 3D Slicer closing is routine, not an error."""

    class QuietHandler(base):
        def handle(self):
            server = self.server
            server._connected = True
            self.request.settimeout(0.01)
            try:
                while not server.communication_thread_stop_requested:
                    while server._receive_message_from_socket(self.request):
                        if server.communication_thread_stop_requested:
                            return
                    while server._send_queued_message_from_socket(self.request):
                        pass
            except (ConnectionError, OSError) as exc:
                log.info("OpenIGTLink client disconnected (%s)", exc.__class__.__name__)
                server._communication_error_occurred()
            except Exception as exc:  # anything else: one line, and the server waits for the next client
                log.warning("OpenIGTLink connection ended: %s: %s", exc.__class__.__name__, exc)
                server._communication_error_occurred()

    return QuietHandler


class IgtlSink:
    """One OpenIGTLink server; ``send`` is called by the node's inference loop for every stylized frame."""

    def __init__(self, endpoint: str, device_name: str = "usnst", spacing_mm: tuple[float, float] = (1.0, 1.0)):
        """``spacing_mm``: (row, column) mm of frames whose meta gives no spacing."""
        if len(spacing_mm) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing_mm):
            raise ValueError(f"OpenIGTLink pixel spacing must be two finite numbers of mm above 0, got {spacing_mm}")
        try:
            import pyigtl
        except ImportError as exc:
            raise ValueError(f"{endpoint}: OpenIGTLink output needs pyigtl (`pip install usnst[igtl]`)") from exc
        parts = urlsplit(endpoint.strip().lstrip("@"))
        if not parts.port:
            raise ValueError(f"{endpoint}: give a port, e.g. igtl://127.0.0.1:18944")
        if not is_loopback(endpoint.strip().lstrip("@").replace("igtl://", "tcp://")):
            # pyigtl listens on loopback or on a named network interface (igtl://eth0:18944).
            log.warning("OpenIGTLink server on interface %s: any host that can reach it may connect", parts.hostname)
        self.pyigtl = pyigtl
        self.device_name, self.spacing_mm = device_name, spacing_mm
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        local = is_loopback("tcp://" + (parts.hostname or "") + ":1")
        self.server = pyigtl.OpenIGTLinkServer(port=parts.port, local_server=local,
                                               iface=None if local else parts.hostname)
        for s, handler in saved.items():  # pyigtl installs its own handlers; the node owns signal handling
            signal.signal(s, handler)
        self.server.RequestHandlerClass = _quiet_handler(self.server.RequestHandlerClass)
        self.endpoint = f"igtl://{self.server.host}:{parts.port}"
        self.sent = self.skipped = self.bad_spacing = 0

    def send(self, frame: protocol.Frame) -> bool:
        """Queue ``frame`` for the connected client; False (skipped) when none is connected or it lags behind."""
        if not self.server.is_connected() or len(self.server.outgoing_messages) >= MAX_PENDING:
            self.skipped += 1
            return False
        pixels = frame.pixels
        image = pixels[None, :, :, 0] if pixels.shape[2] == 1 else pixels[None]  # (k=1, j=rows, i=cols[, comp])
        matrix = self.placement(frame.meta)
        message = self.pyigtl.ImageMessage(np.ascontiguousarray(image), ijk_to_world_matrix=matrix,
                                           timestamp=frame.capture_ns / 1e9, device_name=self.device_name)
        self.server.send_message(message, wait=False)
        self.sent += 1
        return True

    def placement(self, meta: dict) -> np.ndarray:
        """The ijk→world matrix: the frame's pose (``meta.image_to_world``, the same convention: a pixel's
        (column, row, 0, 1) to world mm) when it sends a valid one, so the viewer shows the slice where the probe
        is; else the pixel spacing on the diagonal. A malformed pose is the node's to count (``bad_poses``)."""
        try:
            pose = protocol.image_to_world(meta)
        except ValueError:
            pose = None
        if pose is not None:
            return pose
        row_mm, col_mm = self.spacing(meta)
        return np.diag([col_mm, row_mm, 1.0, 1.0])

    def spacing(self, meta: dict) -> tuple[float, float]:
        """(row, column) pixel spacing in mm: the frame's ``meta.spacing_mm`` when it is two finite numbers above 0,
        else the configured spacing — a NaN or a string would otherwise reach the viewer's geometry. Counted in
        ``bad_spacing`` and logged once."""
        try:
            given = protocol.spacing_mm(meta)
        except ValueError as exc:
            given = None
            self.bad_spacing += 1
            if self.bad_spacing == 1:
                log.warning("%s: OpenIGTLink images get %s mm (--spacing-mm, else --igtl-spacing) instead", exc,
                            " x ".join(f"{v:g}" for v in self.spacing_mm))
        return given or tuple(self.spacing_mm)

    def close(self) -> None:
        self.server.stop()
