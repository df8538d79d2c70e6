"""ZeroMQ CURVE encryption and client authentication for usnst sockets.

CURVE roles follow the socket, not the data direction: the side that *binds* is the CURVE server (it holds an
allow-list of client public keys, checked by a ZAP authenticator), the side that *connects* is a client (it must
know the server's public key). A client whose key is not on the list is refused during the handshake and receives
nothing; traffic between allowed peers is encrypted. Keys are ZeroMQ certificate files written by ``usnst keys``:
``NAME.key`` (public, to share) and ``NAME.key_secret`` (secret, stays with its owner).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveConfig:
    """One side's CURVE material: its own certificate (with secret key), and, depending on the socket's role,
    the folder of public keys allowed to connect (when binding) or the server's public key (when connecting)."""

    secret_key: str
    allow_dir: str | None = None
    server_key: str | None = None


def generate_keys(out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret in ``out_dir``. The pair is made in a private folder (mode 700) and the
    secret set to mode 600 there, then linked into place: no moment exists at which another user could read the
    secret, and an existing key is never replaced (the link fails)."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"key name {name!r} must be a plain file name (no folders, no '..'): the files go in --out")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (out / (name + suffix)).exists():
            raise FileExistsError(f"{out / (name + suffix)} exists; refusing to overwrite a key")
    with tempfile.TemporaryDirectory(dir=out, prefix=".usnst-keys-") as private:  # mkdtemp: mode 700
        public, secret = zmq.auth.create_certificates(private, name)
        os.chmod(secret, 0o600)
        placed = []
        try:
            for made in (secret, public):
                os.link(made, out / Path(made).name)
                placed.append(out / Path(made).name)
        except FileExistsError:
            for p in placed:
                p.unlink()
            raise FileExistsError(f"{out / Path(made).name} appeared while writing; refusing to overwrite a key") \
                from None
    return out / Path(public).name, out / Path(secret).name


def _load(path: str, want_secret: bool) -> tuple[bytes, bytes | None]:
    if not Path(path).is_file():
        raise ValueError(f"CURVE key file not found: {path} (make keys with `usnst keys`)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a ZeroMQ certificate file: {exc}") from exc
    if want_secret and secret is None:
        raise ValueError(f"{path} holds only a public key; give this side's NAME.key_secret file")
    if want_secret and os.name == "posix" and os.stat(path).st_mode & 0o077:
        log.warning("CURVE secret key %s is readable by other users (mode %o): anyone who reads it can pose as this "
                    "side; chmod 600 %s", path, os.stat(path).st_mode & 0o777, path)
    return public, secret


_authenticators: dict[int, ThreadAuthenticator] = {}


class _RefusalsLoud(logging.LoggerAdapter):
    """pyzmq's authenticator logs everything at DEBUG; a refused client is worth a warning at the default level
    (its key is in the line, so an operator can tell a misconfigured viewer from a stranger)."""

    def debug(self, msg, *args, **kwargs):
        denied = str(msg).startswith("DENIED") or (args and args[0] == "DENIED")  # "%s (CURVE) …" % ("DENIED", …)
        self.log(logging.WARNING if denied else logging.DEBUG, msg, *args, **kwargs)


def _authenticator(context: zmq.Context) -> ThreadAuthenticator:
    auth = _authenticators.get(id(context))
    if auth is None:
        auth = ThreadAuthenticator(context, log=_RefusalsLoud(logging.getLogger("usnst.zap"), {}))
        auth.start()
        _authenticators[id(context)] = auth
    return auth


def stop_authenticator(context: zmq.Context) -> None:
    """Stop the ZAP authenticator of ``context`` (its sockets would keep ``context.term()`` waiting)."""
    auth = _authenticators.pop(id(context), None)
    if auth is not None:
        auth.stop()


def secure(sock: zmq.Socket, curve: CurveConfig, bind: bool) -> None:
    """Make ``sock`` a CURVE server (``bind``) or client; must run before it binds or connects."""
    public, secret = _load(curve.secret_key, want_secret=True)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    if bind:
        if not curve.allow_dir or not Path(curve.allow_dir).is_dir():
            raise ValueError("a CURVE socket that binds needs --curve-allow DIR: a folder with the public keys "
                             f"(NAME.key) of the clients allowed in (got {curve.allow_dir!r})")
        allowed = sorted(p.name for p in Path(curve.allow_dir).glob("*.key"))
        if not allowed:
            log.warning("CURVE allow-list %s holds no .key files: every client will be refused", curve.allow_dir)
        # One ZAP domain per allow-list, so sockets of one process can admit different clients.
        domain = "usnst-" + hashlib.sha1(os.path.abspath(curve.allow_dir).encode()).hexdigest()[:12]
        _authenticator(sock.context).configure_curve(domain=domain, location=str(curve.allow_dir))
        sock.zap_domain = domain.encode()
        sock.curve_server = True
        log.info("CURVE server: %d allowed client key(s) from %s", len(allowed), curve.allow_dir)
    else:
        if not curve.server_key:
            raise ValueError("a CURVE socket that connects needs --curve-server FILE: the server's public key")
        sock.curve_serverkey = _load(curve.server_key, want_secret=False)[0]
