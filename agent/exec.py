"""Remote exec on this agent, as Consul's agent does it (`consul exec`'s other half).

A ``_rexec`` user event that passed this agent's filters (`agent.events`) carries JSON
``{"Prefix": ..., "Session": ...}``. The job spec is the JSON at ``<Prefix>/<Session>/job`` in
the KV store (``Command`` run by the shell, or ``Args`` run directly, or ``Script`` — base64
bytes — spilled to a temporary file and run; ``Wait``, nanoseconds, the heartbeat period).
The agent then writes, each under ``<Prefix>/<Session>/<node>/`` with a lock on the session
(so nothing lands once the session is gone): ``ack`` (empty), the output as ``out/%05x``
chunks of at most 4 KiB (stdout and stderr together, flushed after 500 ms without output; an
empty chunk is a heartbeat when nothing came for ``Wait``), then ``exit`` (the exit code as
text, 255 when the job could not run or a write failed).

Only when `disable_remote_exec` is false: Consul 1.8.7's default is true, and then the event
is logged and ignored. The spec is read stale first, then consistently if missing, as Consul.
A malformed event or spec is logged and dropped (no ack), never raised.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import txaio
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.protocol import ProcessProtocol

from agent.events import Event
from agent.fsm.commands import KVOperation
from agent.rpc import queries
from agent.rpc.options import CONSISTENT, STALE, QueryOptions, WriteRequest
from agent.structs import KVEntry

__all__ = ["OUTPUT_CHUNK", "OUTPUT_IDLE", "RemoteExec", "job_key", "parse_spec"]

txaio.use_twisted()

OUTPUT_CHUNK = 4 * 1024  # Consul's remoteExecOutputSize
OUTPUT_IDLE = 0.5  # Consul's remoteExecOutputDeadline
DEFAULT_WAIT = 2.0  # `consul exec`'s default -wait; used when a spec gives none
FAILED = 255


class JobSpec:
    """Consul's remoteExecSpec."""

    __slots__ = ("command", "args", "script", "wait")

    def __init__(self, command: str, args: list[str], script: bytes, wait: float) -> None:
        self.command, self.args, self.script, self.wait = command, args, script, wait


def go_path_join(*parts: str) -> str:
    """Go's path.Join: the non-empty parts joined by "/", then cleaned."""
    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    clean = posixpath.normpath(joined)
    return clean[1:] if clean.startswith("//") else clean


def job_key(prefix: str, session: str) -> str:
    return go_path_join(prefix, session, "job")


def parse_event(payload: bytes) -> tuple[str, str]:
    """(Prefix, Session) from the event's JSON payload; ValueError when malformed."""
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    prefix, session = body.get("Prefix") or "", body.get("Session") or ""
    if not isinstance(prefix, str) or not isinstance(session, str) or not session:
        raise ValueError("Prefix and Session must be strings, Session not empty")
    return prefix, session


def parse_spec(data: bytes) -> JobSpec:
    """The job spec from its JSON; ValueError when malformed."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    command = body.get("Command") or ""
    args = body.get("Args") or []
    script = body.get("Script") or ""
    wait = body.get("Wait") or 0
    if not isinstance(command, str) or not isinstance(script, str):
        raise ValueError("Command and Script must be strings")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("Args must be a list of strings")
    if isinstance(wait, bool) or not isinstance(wait, int):
        raise ValueError("Wait must be an integer (nanoseconds)")
    try:
        raw_script = base64.b64decode(script, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Script is not base64") from None
    # A zero Wait would make Consul heartbeat without pause; use the CLI's default instead.
    return JobSpec(command, args, raw_script, wait / 1e9 if wait > 0 else DEFAULT_WAIT)


class _JobProcess(ProcessProtocol):
    """Collects output into chunks of OUTPUT_CHUNK, flushing a partial one after OUTPUT_IDLE."""

    def __init__(self, reactor, on_chunk: Callable[[bytes], None]) -> None:
        self._reactor = reactor
        self._on_chunk = on_chunk
        self._buf = bytearray()
        self._idle = None
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= OUTPUT_CHUNK:
            chunk, self._buf = bytes(self._buf[:OUTPUT_CHUNK]), self._buf[OUTPUT_CHUNK:]
            self._on_chunk(chunk)
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = self._reactor.callLater(OUTPUT_IDLE, self.flush) if self._buf else None

    def flush(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self._buf:
            chunk, self._buf = bytes(self._buf), bytearray()
            self._on_chunk(chunk)

    def processEnded(self, reason) -> None:
        self.flush()
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(FAILED if code is None else code)  # None: killed by a signal


class RemoteExec:
    """Runs `_rexec` jobs for this agent. `read`/`write` are the server endpoints' seams;
    `enabled()` reads `disable_remote_exec` now (a reload may change it)."""

    log = txaio.make_logger()

    def __init__(self, reactor, node_name: str, *, read: Callable, write: Callable,
                 enabled: Callable[[], bool], env: dict[str, str] | None = None) -> None:
        self._reactor = reactor
        self.node_name = node_name
        self._read = read
        self._write = write
        self._enabled = enabled
        self._env = dict(os.environ if env is None else env)
        self._running: set = set()  # process transports, killed when the agent stops

    def handle(self, event: Event) -> Deferred | None:
        """Take a `_rexec` event; returns the job's Deferred (fires with the exit code
        written, or None when nothing ran), or None when remote exec is disabled."""
        if not self._enabled():
            self.log.info("agent: ignoring remote exec event ({id}), disabled.", id=event.id)
            return None
        self.log.debug("agent: received remote exec event (ID: {id})", id=event.id)
        try:
            prefix, session = parse_event(event.payload)
        except ValueError as exc:
            self.log.error("agent: failed to decode remote exec event: {e}", e=str(exc))
            return None
        return self._job(prefix, session).addErrback(self._crashed)

    def _crashed(self, failure) -> None:
        self.log.failure("agent: remote exec failed", failure=failure)

    def stop(self) -> None:
        for transport in list(self._running):
            try:
                transport.signalProcess("KILL")
            except Exception:  # already gone
                pass

    # --- the job --------------------------------------------------------------------

    @inlineCallbacks
    def _job(self, prefix: str, session: str):
        spec = yield self._get_spec(prefix, session)
        if spec is None:
            return None
        if not (yield self._put(prefix, session, "ack", None)):
            self.log.error("agent: failed to ack remote exec job")
            return None
        code = yield self._run(prefix, session, spec)
        if not (yield self._put(prefix, session, "exit", str(code).encode())):
            self.log.error("agent: failed to write exit code for remote exec job")
        return code

    @inlineCallbacks
    def _get_spec(self, prefix: str, session: str):
        key = job_key(prefix, session)
        for consistency in (STALE, CONSISTENT):  # stale for scale, then sure
            try:
                result = yield maybeDeferred(self._read, queries.KVGet(key),
                                             QueryOptions(consistency=consistency))
            except Exception as exc:
                self.log.error("agent: failed to get remote exec job: {e}", e=str(exc))
                return None
            if result.value is not None:
                try:
                    return parse_spec(result.value.value or b"")
                except ValueError as exc:
                    self.log.error("agent: failed to decode remote exec spec: {e}", e=str(exc))
                    return None
        self.log.debug("agent: remote exec aborted, job spec missing")
        return None

    def _put(self, prefix: str, session: str, suffix: str, value: bytes | None) -> Deferred:
        """Write one key under our node's directory, holding the session's lock; fires with
        whether it was written."""
        key = go_path_join(prefix, session, self.node_name, suffix)
        entry = KVEntry(key=key, value=value, session=session)

        def written(result: Any) -> bool:
            return bool(getattr(result, "value", result))

        def failed(failure) -> bool:
            self.log.error("agent: remote exec write of {key} failed: {e}", key=key,
                           e=failure.getErrorMessage())
            return False
        return maybeDeferred(self._write, KVOperation("lock", entry), WriteRequest()) \
            .addCallbacks(written, failed)

    @inlineCallbacks
    def _run(self, prefix: str, session: str, spec: JobSpec):
        script_path = None
        try:
            if spec.script:
                script_path = self._spill(spec.script)
                if script_path is None:
                    return FAILED
            argv = self._argv(spec, script_path)
            if argv is None:
                return FAILED
            self.log.info("agent: remote exec '{what}'",
                          what=script_path or spec.command or " ".join(spec.args))
            return (yield self._stream(prefix, session, spec, argv))
        finally:
            if script_path is not None:
                try:
                    os.remove(script_path)
                except OSError:
                    pass

    def _spill(self, script: bytes) -> str | None:
        try:
            fd, path = tempfile.mkstemp(prefix="rexec")
            with os.fdopen(fd, "wb") as handle:
                handle.write(script)
            os.chmod(path, 0o750)
            return path
        except OSError as exc:
            self.log.debug("agent: failed to make tmp file: {e}", e=str(exc))
            return None

    def _argv(self, spec: JobSpec, script_path: str | None) -> list[str] | None:
        if spec.args:
            program = shutil.which(spec.args[0], path=self._env.get("PATH"))
            if program is None:
                self.log.debug("agent: failed to start remote exec: {p} not found",
                               p=spec.args[0])
                return None
            return [program, *spec.args[1:]]
        shell = self._env.get("SHELL") or "/bin/sh"  # as Consul's exec.Script
        return [shell, "-c", script_path or spec.command]

    @inlineCallbacks
    def _stream(self, prefix: str, session: str, spec: JobSpec, argv: list[str]):
        """Run `argv`, uploading its output in order (and heartbeats); the exit code, or
        FAILED when an upload failed."""
        queue: list[bytes | None] = []
        state = {"num": 0, "failed": False, "busy": False, "beat": None}
        drained: list[Deferred] = []

        def beat() -> None:
            state["beat"] = None
            if not queue and not state["busy"]:
                enqueue(None)  # a heartbeat: nothing came for `Wait`

        def arm() -> None:
            if state["beat"] is not None and state["beat"].active():
                state["beat"].cancel()
            state["beat"] = self._reactor.callLater(spec.wait, beat)

        def enqueue(chunk: bytes | None) -> None:
            if state["failed"]:
                return
            queue.append(chunk)
            if not state["busy"]:
                pump()

        def pump() -> None:
            if not queue:
                state["busy"] = False
                if not state["failed"]:
                    arm()
                while drained:
                    drained.pop().callback(None)
                return
            state["busy"] = True
            chunk = queue.pop(0)
            suffix = go_path_join("out", f"{state['num']:05x}")
            state["num"] += 1

            def done(ok: bool) -> None:
                if not ok:
                    state["failed"] = True
                    queue.clear()
                pump()
            self._put(prefix, session, suffix, chunk).addCallback(done)

        proto = _JobProcess(self._reactor, enqueue)
        try:
            transport = self._reactor.spawnProcess(proto, argv[0], argv, env=self._env)
        except OSError as exc:
            self.log.debug("agent: failed to start remote exec: {e}", e=str(exc))
            return FAILED
        self._running.add(transport)
        arm()
        try:
            code = yield proto.ended
        finally:
            self._running.discard(transport)
        if state["busy"] or queue:
            waiting: Deferred = Deferred()
            drained.append(waiting)
            yield waiting
        if state["beat"] is not None and state["beat"].active():
            state["beat"].cancel()
        return FAILED if state["failed"] else code
