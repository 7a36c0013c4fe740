"""The message model: one frozen dataclass per message type (wire-protocol.md §13–§15).

`to_dict` emits the wire field order (the Ruby push client's for agent messages, pushy's
for server messages); `from_dict` validates types and raises `MessageError` naming the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Union, get_args

from .compat import KW_ONLY, dataclass
from .errors import MessageError
from .labels import label_problem
from .limits import OUTPUT_CHUNK_LIMIT
from .vocabulary import MessageType, OutputChannel

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; only the type checker reads it

_CHANNELS = frozenset(OutputChannel)
_MISSING = object()
# Integers are stored and compared as signed 64-bit values everywhere downstream.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _Fields:
    """Typed accessors over a decoded body; every failure is a MessageError."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        if not isinstance(d, Mapping):
            raise MessageError("message must be a map")
        self.d = d

    def _get(self, name: str, required: bool) -> Any:
        value = self.d.get(name, _MISSING)
        if value is _MISSING:
            if required:
                raise MessageError(f"missing field '{name}'")
            return None
        return value

    def text(self, name: str, required: bool = True) -> Any:
        value = self.d.get(name)
        if type(value) is str:  # the common case first: this runs for every field received
            return value
        value = self._get(name, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise MessageError(f"field '{name}' must be str")
        return value

    def integer(self, name: str, required: bool = True, minimum: int | None = None) -> Any:
        value = self.d.get(name)
        if (
            type(value) is int
            and _INT64_MIN <= value <= _INT64_MAX
            and (minimum is None or value >= minimum)
        ):
            return value
        value = self._get(name, required)
        if value is None and not required:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise MessageError(f"field '{name}' must be int")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise MessageError(f"field '{name}' is out of range")
        if minimum is not None and value < minimum:
            raise MessageError(f"field '{name}' must be >= {minimum}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.d.get(name, default)
        if not isinstance(value, bool):
            raise MessageError(f"field '{name}' must be bool")
        return value

    def binary(self, name: str) -> bytes:
        value = self._get(name, True)
        if not isinstance(value, bytes):
            raise MessageError(f"field '{name}' must be bytes")
        return value

    def str_map(self, name: str) -> dict[str, str] | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise MessageError(f"field '{name}' must be a map of str to str")
        return dict(value)

    def check_type(self, expected: MessageType) -> None:
        value = self.d.get("type", expected)
        if value != expected:
            raise MessageError(f"message type {value!r} is not {expected.value!r}")


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        out[name] = value


# ---------------------------------------------------------------- server → agent


@dataclass(frozen=True, slots=True)
class _ServerMessage:
    _: KW_ONLY
    sequence: int
    timestamp: str

    TYPE: ClassVar[MessageType]

    def _head(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "timestamp": self.timestamp, "type": self.TYPE}

    def to_dict(self) -> dict[str, Any]:
        """The body fields in wire order."""
        return self._head()

    @staticmethod
    def _common(f: _Fields) -> dict[str, Any]:
        return {"sequence": f.integer("sequence"), "timestamp": f.text("timestamp")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Build from a decoded body; MessageError when a field is missing or mistyped."""
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(**cls._common(f))


@dataclass(frozen=True, slots=True)
class ServerHeartbeat(_ServerMessage):
    server: str
    incarnation_id: str

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "timestamp": self.timestamp,
            "server": self.server,
            "type": self.TYPE,
            "incarnation_id": self.incarnation_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(f.text("server"), f.text("incarnation_id"), **cls._common(f))


@dataclass(frozen=True, slots=True)
class Abort(_ServerMessage):
    TYPE: ClassVar[MessageType] = MessageType.ABORT


@dataclass(frozen=True, slots=True)
class Ack(_ServerMessage):
    TYPE: ClassVar[MessageType] = MessageType.ACK


@dataclass(frozen=True, slots=True)
class Commit(_ServerMessage):
    job_id: str
    server: str
    command: str
    capture: bool
    user: str | None = None
    dir: str | None = None
    env: dict[str, str] | None = None
    file: str | None = None
    run_timeout: int | None = None

    TYPE: ClassVar[MessageType] = MessageType.COMMIT

    def to_dict(self) -> dict[str, Any]:
        out = self._head()
        out["job_id"] = self.job_id
        out["server"] = self.server
        out["command"] = self.command
        _put(out, "user", self.user)
        _put(out, "dir", self.dir)
        _put(out, "env", self.env)
        _put(out, "file", self.file)
        out["capture"] = self.capture
        _put(out, "run_timeout", self.run_timeout)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(
            f.text("job_id"),
            f.text("server"),
            f.text("command"),
            # Always sent by pushjobs; a sender that omits it means "no capture".
            f.flag("capture", False),
            user=f.text("user", False),
            dir=f.text("dir", False),
            env=f.str_map("env"),
            file=f.text("file", False),
            run_timeout=f.integer("run_timeout", False, minimum=0),
            **cls._common(f),
        )


@dataclass(frozen=True, slots=True)
class Run(_ServerMessage):
    job_id: str

    TYPE: ClassVar[MessageType] = MessageType.RUN

    def to_dict(self) -> dict[str, Any]:
        out = self._head()
        out["job_id"] = self.job_id
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(f.text("job_id"), **cls._common(f))


ServerMessage = Union[ServerHeartbeat, Abort, Ack, Commit, Run]

_SERVER_TYPES: dict[str, type[_ServerMessage]] = {
    cls.TYPE: cls for cls in (ServerHeartbeat, Abort, Ack, Commit, Run)
}


def parse_server_message(fields: dict[str, Any]) -> ServerMessage:
    """Validate a decoded server → agent body and build its message object."""
    f = _Fields(fields)
    msg_type = f.text("type")
    cls = _SERVER_TYPES.get(msg_type)
    if cls is None:
        raise MessageError(f"unknown message type {msg_type[:64]!r}")
    return cls.from_dict(fields)  # type: ignore[return-value]


# ---------------------------------------------------------------- agent → server


@dataclass(frozen=True, slots=True, kw_only=True)
class _AgentMessage:
    node: str
    org: str
    timestamp: str
    incarnation_id: str
    client: str | None = None
    sequence: int | None = None
    job_id: str | None = None
    protocol_version: str | None = None

    TYPE: ClassVar[MessageType]

    def _head(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node}
        _put(out, "client", self.client)
        _put(out, "protocol_version", self.protocol_version)
        out["org"] = self.org
        out["type"] = self.TYPE
        _put(out, "sequence", self.sequence)
        out["timestamp"] = self.timestamp
        out["incarnation_id"] = self.incarnation_id
        return out

    def to_dict(self) -> dict[str, Any]:
        """The body fields in the Ruby client's wire order."""
        out = self._head()
        out["job_id"] = self.job_id
        return out

    @staticmethod
    def _common(f: _Fields) -> dict[str, Any]:
        return {
            "node": f.text("node"),
            "org": f.text("org"),
            "timestamp": f.text("timestamp"),
            "incarnation_id": f.text("incarnation_id"),
            "client": f.text("client", False),
            "sequence": f.integer("sequence", False),
            "job_id": f.text("job_id", False),
            "protocol_version": f.text("protocol_version", False),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Build from a decoded body; MessageError when a field is missing or mistyped."""
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(**cls._common(f))


@dataclass(frozen=True, slots=True)
class AgentHeartbeat(_AgentMessage):
    job_state: str
    # 3.0 Extension (wire-protocol.md §15.1): the node's labels, on the first heartbeat of a
    # connection and when they change; absent otherwise.
    labels: dict[str, str] | None = None

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT

    def to_dict(self) -> dict[str, Any]:
        out = self._head()
        out["job_state"] = self.job_state
        out["job_id"] = self.job_id
        _put(out, "labels", self.labels)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        labels = d.get("labels")
        if labels is not None:
            problem = label_problem(labels)
            if problem is not None:
                raise MessageError(f"field 'labels': {problem}")
            labels = dict(labels)
        return cls(f.text("job_state"), labels=labels, **cls._common(f))


@dataclass(frozen=True, slots=True)
class AckCommit(_AgentMessage):
    TYPE: ClassVar[MessageType] = MessageType.ACK_COMMIT


@dataclass(frozen=True, slots=True)
class NackCommit(_AgentMessage):
    TYPE: ClassVar[MessageType] = MessageType.NACK_COMMIT


@dataclass(frozen=True, slots=True)
class AckRun(_AgentMessage):
    TYPE: ClassVar[MessageType] = MessageType.ACK_RUN


@dataclass(frozen=True, slots=True)
class NackRun(_AgentMessage):
    TYPE: ClassVar[MessageType] = MessageType.NACK_RUN


@dataclass(frozen=True, slots=True)
class Aborted(_AgentMessage):
    TYPE: ClassVar[MessageType] = MessageType.ABORTED


@dataclass(frozen=True, slots=True)
class _Result(_AgentMessage):
    exit_status: int | None = None
    signal: str | None = None
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    stdout: str | None = None
    stderr: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self._head()
        out["job_id"] = self.job_id
        if self.protocol_version == "3.0":
            # 3.0 results always carry both, null included (wire-protocol.md §15).
            out["exit_status"] = self.exit_status
            out["signal"] = self.signal
        else:
            _put(out, "exit_status", self.exit_status)
            _put(out, "signal", self.signal)
        _put(out, "stdout_bytes", self.stdout_bytes)
        _put(out, "stderr_bytes", self.stderr_bytes)
        _put(out, "stdout", self.stdout)
        _put(out, "stderr", self.stderr)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        return cls(
            exit_status=f.integer("exit_status", False),
            signal=f.text("signal", False),
            stdout_bytes=f.integer("stdout_bytes", False, minimum=0),
            stderr_bytes=f.integer("stderr_bytes", False, minimum=0),
            stdout=f.text("stdout", False),
            stderr=f.text("stderr", False),
            **cls._common(f),
        )


@dataclass(frozen=True, slots=True)
class Succeeded(_Result):
    TYPE: ClassVar[MessageType] = MessageType.SUCCEEDED


@dataclass(frozen=True, slots=True)
class Failed(_Result):
    TYPE: ClassVar[MessageType] = MessageType.FAILED


@dataclass(frozen=True, slots=True)
class Output(_AgentMessage):
    channel: str
    offset: int
    data: bytes
    omitted_bytes: int | None = None

    TYPE: ClassVar[MessageType] = MessageType.OUTPUT

    def to_dict(self) -> dict[str, Any]:
        out = self._head()
        out["job_id"] = self.job_id
        out["channel"] = self.channel
        out["offset"] = self.offset
        out["data"] = self.data
        _put(out, "omitted_bytes", self.omitted_bytes)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        f = _Fields(d)
        f.check_type(cls.TYPE)
        channel = f.text("channel")
        if channel not in _CHANNELS:
            raise MessageError("field 'channel' must be 'stdout' or 'stderr'")
        data = f.binary("data")
        if not 1 <= len(data) <= OUTPUT_CHUNK_LIMIT:
            raise MessageError(f"field 'data' must hold 1 to {OUTPUT_CHUNK_LIMIT} bytes")
        return cls(
            channel,
            f.integer("offset", minimum=0),
            data,
            omitted_bytes=f.integer("omitted_bytes", False, minimum=1),
            **cls._common(f),
        )


AgentMessage = Union[
    AgentHeartbeat,
    AckCommit,
    NackCommit,
    AckRun,
    NackRun,
    Succeeded,
    Failed,
    Aborted,
    Output,
]

_AGENT_TYPES: dict[str, type[_AgentMessage]] = {cls.TYPE: cls for cls in get_args(AgentMessage)}


def parse_agent_message(fields: dict[str, Any], version: str) -> AgentMessage:
    """Validate a decoded agent → server body of protocol `version` and build its message.

    3.0 requires `sequence`; `output` exists only in 3.0. A missing `job_id` is null.
    """
    f = _Fields(fields)
    msg_type = f.text("type")
    cls = _AGENT_TYPES.get(msg_type)
    if cls is None:
        raise MessageError(f"unknown message type {msg_type[:64]!r}")
    if version == "3.0":
        f.integer("sequence")
    elif cls is Output:
        raise MessageError("message type 'output' requires protocol 3.0")
    return cls.from_dict(fields)  # type: ignore[return-value]
