"""The job process environment (agent.md §11). Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A passwd entry plus the supplementary groups of the user."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = field(default_factory=tuple)


def build_environment(
    base: Mapping[str, str],
    *,
    node_name: str,
    job_id: str,
    user: UserInfo | None = None,
    job_env: Mapping[str, str] | None = None,
    allowed_overwritable: Sequence[str] | None = None,
    file_path: str | None = None,
) -> dict[str, str]:
    """Build the job's environment; later steps override earlier ones (agent.md §11)."""
    env = dict(base)
    if user is not None:
        env["HOME"] = user.home
        env["USER"] = user.name
        env["LOGNAME"] = user.name
    if job_env:
        allowed = None if allowed_overwritable is None else set(allowed_overwritable)
        for name, value in job_env.items():
            if allowed is None or name in allowed:
                env[name] = value
            else:
                env[f"CHEF_PUSH_ENV_{name}"] = value
    env["CHEF_PUSH_NODE_NAME"] = node_name
    env["PUSHY_NODE_NAME"] = node_name
    env["CHEF_PUSH_JOB_ID"] = job_id
    env["PUSHY_JOB_ID"] = job_id
    if file_path is not None:
        env["CHEF_PUSH_JOB_FILE"] = file_path
        env["PUSHY_JOB_FILE"] = file_path
    return env


def env_problem(env: object) -> str | None:
    """Why a commit's `env` is unusable (agent.md §9 check 8), or None when it is fine."""
    if not isinstance(env, Mapping):
        return "env must be an object of strings"
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            return "env must be an object of strings"
        if not name or "=" in name or "\0" in name:
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name!r} contains a NUL character"
    return None
