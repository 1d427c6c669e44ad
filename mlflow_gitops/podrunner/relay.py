"""TCP relaying: one accepted connection joined to a new connection to its target, bytes copied
both ways until each side closes, as the pod's forwarders (namespaces.cmd_forward) and the tests'
Service stand-in do."""

from __future__ import annotations

import socket
import threading


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy `src` to `dst` until `src` closes or fails, then half-close `dst` (end of stream)."""
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    """Join `client` to a new connection to `target` (10 s to connect; on failure the client is
    closed at once) and copy both ways until both directions have ended; then close both."""
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()
