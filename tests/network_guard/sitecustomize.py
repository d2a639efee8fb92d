"""Loaded by every Python process of a guarded test run (PYTHONPATH): refuses and records any network
connection or name lookup that is not loopback. Only for tests."""

import os
import socket

_LOG = os.environ.get("MNIST_XAI_NETWORK_LOG")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    return host in _LOOPBACK_NAMES or host.startswith("127.") or host in ("::1", "0:0:0:0:0:0:0:1")


def _refuse(what: str):
    # the log named by the environment now, not at import: a stage served by a fork of the stage server runs in
    # its own client's environment, while this module was imported once, by whichever guarded stage started the
    # server (two guarded tests share one server: they have the same PYTHONPATH)
    log_path = os.environ.get("MNIST_XAI_NETWORK_LOG") or _LOG
    if log_path:
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()} {what}\n")
    raise ConnectionRefusedError(f"network guard: {what} is not loopback")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse(f"connect {address}")
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse(f"connect {address}")
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host):
        _refuse(f"lookup {host}")
    return _getaddrinfo(host, *args, **kwargs)


if _LOG:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo
