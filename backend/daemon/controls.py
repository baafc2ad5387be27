"""The daemon's control socket: a registry of operations by name, and its server.

One JSON request per connection, `{"op": NAME, ...arguments}`, one JSON answer
(`{"ok": true, ...}` or `{"ok": false, "error": ...}`; backend.admin.control is the
client side). Two kinds of operations share the one table:

* the daemon's own (`ping`, `wake`, `status`, `drain`, `undrain`, `expect_origin`,
  `inject_fault`), handed in by the daemon and answered in its event loop;
* every operator command of backend.admin.registry that may run in the daemon: each
  runs in a worker thread of its own with a fresh `DaemonContext`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from backend.admin.control import bind
from backend.admin.registry import LOCAL, OPERATIONS, Operation
from backend.daemon.admin import DaemonContext
from backend.errors import ArchiveError

log = logging.getLogger("reelfs.daemon")

MAX_REQUEST = 4 * 1024 * 1024
#: how long a client may take to send its request
REQUEST_TIMEOUT = 30.0
Control = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """Serves the control socket with `own` (the daemon's operations) and the operator
    commands, each run with a context from `context()`."""

    def __init__(
        self,
        socket_path: Path,
        own: dict[str, Control],
        context: Callable[[threading.Event], DaemonContext],
    ) -> None:
        self.socket_path = socket_path
        self.own = own
        self.context = context
        # set as the event loop stops: commands waiting in worker threads give up
        self.stopping = threading.Event()
        clash = set(own) & set(OPERATIONS)
        assert not clash, f"operations defined twice: {clash}"

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.from_stdlib_socket(bind(self.socket_path))
        task_status.started()
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._serve, trio.SocketStream(conn))
            finally:
                # before the nursery waits for the commands still running
                self.stopping.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    while not buf.endswith(b"\n"):
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        buf += chunk
                        if len(buf) > MAX_REQUEST:
                            raise ValueError("request too large")
                answer = await self.dispatch(json.loads(buf))
                answer["ok"] = True
            except Exception as e:
                if not isinstance(e, ArchiveError | ValueError | OSError):
                    log.exception("control request failed")
                answer = {"ok": False, "error": str(e)}
            try:
                await stream.send_all(json.dumps(answer, default=str).encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        args = dict(req)
        name = args.pop("op", None)
        own = self.own.get(str(name))
        if own is not None:
            return await own(args)
        op = OPERATIONS.get(str(name))
        if op is None or op.where == LOCAL:
            raise ArchiveError(f"unknown control operation {name!r}")
        op.check(args)
        # a command waiting for a tape job gives up when `stopping` is set
        return await trio.to_thread.run_sync(functools.partial(self._run, op, args))

    def _run(self, op: Operation, args: dict[str, Any]) -> dict[str, Any]:
        ctx = self.context(self.stopping)
        try:
            return op.handler(ctx, **args)
        finally:
            ctx.close()
