"""Run the collector on a loopback port in a background thread (demos and tests)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from edgepersona.sdk import PersonaError

__all__ = ["LoopbackServer"]

_START_TIMEOUT = 20.0  # seconds


class LoopbackServer:
    """uvicorn serving an ASGI app on 127.0.0.1 and an ephemeral port, stopped on exit.

    The socket is bound before the server starts (no port race) with
    ``IPPROTO_TCP``, so asyncio sets TCP_NODELAY as it does for uvicorn's own
    sockets (otherwise every response waits for delayed ACKs, ~40 ms).
    """

    def __init__(self, app: Any) -> None:
        """Prepare the server.

        Args:
            app: the ASGI app (e.g. from ``create_app``).
        """
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                     lifespan="off", server_header=False))
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.__exit__(None, None, None)
                raise PersonaError("the loopback collector did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(_START_TIMEOUT)
        self._socket.close()
