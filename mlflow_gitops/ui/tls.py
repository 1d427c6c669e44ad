"""A stand-in for the Gateway's HTTPS listener: TLS for the route hostname, terminated on 127.0.0.1.

In the cluster the browser speaks TLS to Envoy (Gateway `envoy-internal`, listener `https`), which
forwards the request to Service mlflow:80 with the Host and Origin headers the browser sent. Here
`TLSTerminator` accepts TLS with a throwaway self-signed certificate for the hostname (made with
Debian's openssl at run time, valid one day, never written to the repository) and pipes the
decrypted bytes to the pod runner's port-forward unchanged, so the server sees exactly the browser's
headers. The browser resolves the hostname to this listener (`--host-resolver-rules`) and trusts
only this certificate's key (`--ignore-certificate-errors-spki-list`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

OPENSSL = "openssl"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    spki_sha256: str  # base64 of the SHA-256 of the DER SubjectPublicKeyInfo (Chromium's pin format)


def self_signed(hostname: str, directory: Path) -> Certificate:
    """A P-256 certificate for `hostname` (subjectAltName DNS), valid one day, in `directory`."""
    cert, key = directory / f"{hostname}.crt", directory / f"{hostname}.key"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN={hostname}",
            "-addext", f"subjectAltName=DNS:{hostname}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    pubkey = subprocess.run(
        [OPENSSL, "x509", "-in", str(cert), "-pubkey", "-noout"], check=True, capture_output=True
    ).stdout
    der = subprocess.run(
        [OPENSSL, "pkey", "-pubin", "-outform", "der"], input=pubkey, check=True, capture_output=True
    ).stdout
    return Certificate(cert, key, base64.b64encode(hashlib.sha256(der).digest()).decode())


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TLSTerminator:
    """TLS on 127.0.0.1:<free port> with `certificate`, each connection piped to `upstream`.

    Runs its event loop in a thread for the `with` block; `port` is set once it listens.
    """

    def __init__(self, certificate: Certificate, upstream: tuple[str, int]) -> None:
        self.certificate, self.upstream = certificate, upstream
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-terminator", daemon=True)
        self._server: asyncio.Server | None = None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    async def _start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate.cert, self.certificate.key)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
