"""The job process environment (agent.md §11). Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field

from pushjobs.protocol.compat import dataclass

# Job variables that change how programs load code or find files, or that the agent sets itself
# (security.md): a job variable on this list is renamed CHEF_PUSH_ENV_<name> unless the operator
# names it exactly in `allowed_overwritable_env_vars`. Entries ending in "*" are prefixes.
DENIED_ENV_VARS: tuple[str, ...] = (
    "LD_*",  # dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...
    "DYLD_*",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "PERL5*",
    "PERLLIB",
    "PYTHON*",
    "RUBY*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "LUA_INIT*",
    "LUA_PATH*",
    "LUA_CPATH*",
    "LESSOPEN",
    "LESSCLOSE",
    "GIT_*",
    "GEM_HOME",  # Ruby gems: chef-client is the most common whitelisted command
    "GEM_PATH",
    "BUNDLE_GEMFILE",
    "OPENSSL_CONF",  # can load engine/provider modules
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "ZDOTDIR",  # zsh reads $ZDOTDIR/.zshenv even when not interactive
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
)
_DENIED_EXACT = frozenset(n for n in DENIED_ENV_VARS if not n.endswith("*"))
_DENIED_PREFIXES = tuple(n[:-1] for n in DENIED_ENV_VARS if n.endswith("*"))


def is_denied_env_var(name: str) -> bool:
    """True when a job may set `name` only with the operator's explicit opt-in."""
    return name in _DENIED_EXACT or name.startswith(_DENIED_PREFIXES)


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
    """Build the job's environment; later steps override earlier ones (agent.md §11).

    A job variable is set as is when `allowed_overwritable` names it, or when there is no such
    list and the name is not on the deny-list; otherwise it arrives as CHEF_PUSH_ENV_<name>."""
    env = dict(base)
    if user is not None:
        env["HOME"] = user.home
        env["USER"] = user.name
        env["LOGNAME"] = user.name
    if job_env:
        allowed = set(allowed_overwritable or ())
        for name, value in job_env.items():
            if name in allowed or (allowed_overwritable is None and not is_denied_env_var(name)):
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
