"""`pushjobs` entry point: argument parsing, dispatch, error reporting and exit codes (cli.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from pushjobs.cli import exitcodes
from pushjobs.cli.errors import CliError, UsageError
from pushjobs.protocol.limits import JOB_FILE_LIMIT
from pushjobs.protocol.version import installed_version

if TYPE_CHECKING:
    from pushjobs.cli.app import App

log = logging.getLogger("pushjobs.cli")


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 3, or 1 when knife-compatible) instead of exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage())


def _add_globals(p: argparse.ArgumentParser, top: bool) -> None:
    """Global options (cli.md §2): on the main parser with defaults, on subcommands suppressed."""
    d = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("global options")
    g.add_argument("--server-url", metavar="URL", help="organization URL of the server", **d)
    g.add_argument("-u", "--user", metavar="NAME", help="signing user or client", **d)
    g.add_argument("-k", "--key", metavar="FILE", help="private key", **d)
    g.add_argument("--profile", metavar="NAME", help="settings profile", **d)
    g.add_argument("--config", metavar="FILE", help="pushjobs config file", **d)
    g.add_argument("--ca-file", metavar="FILE", help="CA bundle", **d)
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates", **d)
    g.add_argument("--json", action="store_true", help="machine-readable output on stdout", **d)
    g.add_argument("--no-color", action="store_true", help="plain text", **d)
    g.add_argument("-v", "--verbose", action="count", help="log each HTTP request to stderr", **d)
    g.add_argument("--version", action="version", version=f"pushjobs {installed_version()}")


def _add_follow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--poll", action="store_true", help="poll instead of following the SSE feed")
    p.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="SECONDS", help="polling period"
    )
    p.add_argument(
        "--show-output",
        choices=("failed", "all"),
        help="print captured output of failed nodes or of every node that ran",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help='JSON lines only: every feed event, then {"event": "job", "data": JOB} last',
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="print every node's output lines as they arrive (progress goes to stderr)",
    )
    p.add_argument("--knife-compatible-exit", action="store_true", help="knife-push exit codes")


EPILOG = """\
settings (later ones win): knife's ~/.chef/credentials; a profile ([default]) of
$XDG_CONFIG_HOME/pushjobs/config.toml (default ~/.config/pushjobs/config.toml;
or $PUSHJOBS_CONFIG) with server_url, user and key; $PUSHJOBS_SERVER_URL,
$PUSHJOBS_USER, $PUSHJOBS_KEY; the options above. `pushjobs config show` tells
which ones apply.
server_url is the organization URL: https://push.example.com/organizations/ORG.

exit status of job start/watch: 0 every node succeeded, 1 the job ended but not
every node succeeded (or stopped: the error budget ran out), 2 quorum failed,
3 usage, HTTP or network error, 130 interrupted (the job goes on)."""


def _examples(*lines: str) -> str:
    """An epilog of `example:` lines (shown as written: RawDescriptionHelpFormatter)."""
    return "\n".join(f"example: {line}" for line in lines)


def build_parser() -> Parser:
    """The whole command tree."""
    parser = Parser(
        prog="pushjobs",
        description="Run commands on many nodes through a pushjobs (Chef Push Jobs) server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, top=True)
    groups = parser.add_subparsers(dest="group", metavar="{job,node,ui,config,completion}")

    def sub(sp: argparse._SubParsersAction, name: str, help: str, *examples: str) -> Parser:
        p: Parser = sp.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=_examples(*examples) if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_globals(p, top=False)
        return p

    job = sub(groups, "job", "start, follow and inspect jobs", "pushjobs job list --since 1d")
    jobs = job.add_subparsers(dest="action", metavar="{start,watch,list,status,output,abort}")

    p = sub(
        jobs,
        "start",
        "run a command on nodes",
        "pushjobs job start chef-client web1 web2",
        "pushjobs job start 'systemctl restart nginx' --nodes-file web.txt -q 95% "
        "--max-concurrency 10 --max-errors 3 --stream",
    )
    p.add_argument("command", nargs="?", metavar="COMMAND", help="a command of the whitelist")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="node names (or --nodes-file)")
    p.add_argument("--timeout", type=int, metavar="SECONDS", help="run timeout (integer)")
    p.add_argument(
        "-q", "--quorum", default="100%", metavar="N|P%", help="nodes that must commit (100%%)"
    )
    p.add_argument("-s", "--search", metavar="QUERY", help="nodes from a Chef Server search")
    p.add_argument(
        "--nodes-file", action="append", metavar="FILE", help="node names, one a line (- = stdin)"
    )
    p.add_argument(
        "--file", metavar="FILE", help=f"file sent to the nodes (at most {JOB_FILE_LIMIT} bytes)"
    )
    p.add_argument("--capture", action="store_true", help="capture stdout and stderr")
    p.add_argument("--with-env", metavar="JSON", help="environment, a JSON object of strings")
    p.add_argument("--as-user", metavar="USER", help="run as this user")
    p.add_argument("--in-dir", metavar="DIR", help="working directory")
    p.add_argument(
        "--max-concurrency",
        metavar="N|N%",
        help="at most this many nodes run at once (N%% of the nodes, rounded up)",
    )
    p.add_argument(
        "--max-errors",
        metavar="N|N%",
        help="stop starting nodes once more than this many failed (N%% of the nodes, rounded down)",
    )
    p.add_argument(
        "--where",
        action="append",
        metavar="SELECTOR",
        help="also the nodes whose labels match, e.g. role=web (repeatable: all must hold)",
    )
    p.add_argument("-b", "--nowait", action="store_true", help="print the job id and exit")
    _add_follow_options(p)
    p.set_defaults(handler="start")

    p = sub(
        jobs,
        "watch",
        "follow an existing job",
        "pushjobs job watch 0123456789abcdef0123456789abcdef --show-output failed",
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id (as `job start` printed it)")
    _add_follow_options(p)
    p.set_defaults(handler="watch")

    p = sub(
        jobs,
        "list",
        "list jobs, newest first",
        "pushjobs job list --status failed,crashed --since 7d",
        "pushjobs job list --node web1 --limit 10 --json",
    )
    p.add_argument("--status", metavar="S[,S...]", help="only jobs with these statuses")
    p.add_argument(
        "--node", action="append", metavar="NODE", help="only jobs with this node (repeatable)"
    )
    p.add_argument("--requested-by", metavar="NAME", help="only jobs this user or client created")
    p.add_argument(
        "--since", metavar="TIME", help="only jobs created since: 30m, 2h, 7d or an ISO 8601 time"
    )
    p.add_argument("--until", metavar="TIME", help="only jobs created before (same forms)")
    p.add_argument("--command", metavar="COMMAND", help="only jobs with exactly this command")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N jobs (default 50, 0 = all)"
    )
    p.add_argument("--offset", type=int, metavar="N", help="skip the newest N jobs")
    p.set_defaults(handler="list")

    p = sub(
        jobs, "status", "show a job", "pushjobs job status 0123456789abcdef0123456789abcdef --nodes"
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    p.add_argument("--nodes", action="store_true", help="add the per-node table")
    p.add_argument("--include-file", action="store_true", help="show the job file")
    p.set_defaults(handler="status")

    p = sub(
        jobs,
        "output",
        "captured output of nodes",
        "pushjobs job output 0123456789abcdef0123456789abcdef web1",
        "pushjobs job output 0123456789abcdef0123456789abcdef --all --follow",
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="nodes whose output to print")
    p.add_argument("--all", action="store_true", help="every node of the job")
    p.add_argument(
        "--channel", metavar="stdout|stderr|both", help="default stdout (both with --all)"
    )
    p.add_argument("--follow", action="store_true", help="stream live output until the end")
    p.set_defaults(handler="output")

    p = sub(
        jobs, "abort", "abort a running job", "pushjobs job abort 0123456789abcdef0123456789abcdef"
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    p.set_defaults(handler="abort")

    node = sub(groups, "node", "node availability", "pushjobs node status -l")
    nodes = node.add_subparsers(dest="action", metavar="{status}")
    p = sub(nodes, "status", "availability of nodes", "pushjobs node status web1 web2 --json")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="only these nodes (default: all)")
    p.add_argument("-l", "--long", action="store_true", help="add online/offline")
    p.add_argument(
        "--where",
        action="append",
        metavar="SELECTOR",
        help="only nodes whose labels match, e.g. dc!=fra2 (repeatable: all must hold)",
    )
    p.add_argument("--labels", action="store_true", help="add each node's labels")
    p.add_argument(
        "--all",
        action="store_true",
        help="also offline and never-connected nodes (adds status and last seen)",
    )
    p.set_defaults(handler="node_status")

    config = sub(groups, "config", "the CLI's own settings", "pushjobs config show")
    configs = config.add_subparsers(dest="action", metavar="{show}")
    p = sub(
        configs,
        "show",
        "effective settings and where each came from (key path only, never its contents)",
        "pushjobs config show",
        "pushjobs --profile prod config show --json",
    )
    p.set_defaults(handler="config_show")

    p = sub(
        groups,
        "completion",
        "print a shell completion script",
        "pushjobs completion bash > ~/.local/share/bash-completion/completions/pushjobs",
        "pushjobs completion zsh > ~/.zfunc/_pushjobs",
        "pushjobs completion fish > ~/.config/fish/completions/pushjobs.fish",
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to complete for")
    p.set_defaults(handler="completion")

    p = sub(
        groups,
        "ui",
        "a live web dashboard on 127.0.0.1 (needs the ui extra)",
        "pushjobs ui",
        "pushjobs --profile prod ui --port 8765 --no-browser",
    )
    p.add_argument("--port", type=int, default=0, metavar="N", help="local port (default: free)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(handler="ui")
    return parser


def _handlers() -> dict[str, Callable[[App], int]]:
    from pushjobs.cli.commands import config, jobs, nodes, output
    from pushjobs.cli.ui.command import cmd_ui

    return {
        "config_show": config.cmd_config_show,
        "completion": lambda app: config.cmd_completion(app, build_parser()),
        "start": jobs.cmd_job_start,
        "watch": jobs.cmd_job_watch,
        "list": jobs.cmd_job_list,
        "status": jobs.cmd_job_status,
        "output": output.cmd_job_output,
        "abort": jobs.cmd_job_abort,
        "node_status": nodes.cmd_node_status,
        "ui": cmd_ui,
    }


def _subparser_usage(parser: Parser, argv: Sequence[str]) -> str:
    """Usage of the deepest subcommand named on the command line (for `No job specified.`)."""
    current: argparse.ArgumentParser = parser
    for word in argv:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if actions and word in actions[0].choices:
            current = actions[0].choices[word]
    return current.format_usage()


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pushjobs: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


def run(argv: Sequence[str], app_factory: Callable[[argparse.Namespace], App] | None = None) -> int:
    """Parse `argv`, run the command and return the exit code; never raises for user errors."""
    knife = "--knife-compatible-exit" in argv
    try:
        from pushjobs.cli.app import App
        from pushjobs.cli.commands.jobs import Interrupted
    except ImportError as e:  # httpx/rich come with the `server` extra
        sys.stderr.write(
            f"ERROR: the pushjobs CLI needs {e.name or 'httpx and rich'}: "
            "pip install 'pushjobs[cli]'\n"
        )
        return exitcodes.error_exit_code(True, knife)
    app_factory = app_factory or App
    parser = build_parser()
    app: App | None = None
    try:
        args, extra = parser.parse_known_args(argv)
        handler = getattr(args, "handler", None)
        if extra:
            # argparse stops filling `NODE ...` at the first option; names after it are nodes too
            if isinstance(getattr(args, "nodes", None), list) and not any(
                e.startswith("-") for e in extra
            ):
                args.nodes.extend(extra)
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if handler is None:
            missing = "a command" if args.group is None else f"a '{args.group}' subcommand"
            raise UsageError(f"missing {missing}", usage=_subparser_usage(parser, argv))
        args.usage = _subparser_usage(parser, argv)
        _setup_logging(args.verbose or 0)
        app = app_factory(args)
        return _handlers()[handler](app)
    except CliError as e:
        sys.stderr.write(f"ERROR: {e.message}\n")
        if e.usage:
            sys.stderr.write(e.usage)
        return exitcodes.error_exit_code(e.is_usage, knife)
    except Interrupted as e:
        return _interrupted(e.job_id)
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as e:  # a bug or an unexpected answer: one line, no traceback unless -v
        if log.isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        sys.stderr.write(f"ERROR: unexpected error: {type(e).__name__}: {e}\n")
        return exitcodes.error_exit_code(False, knife)
    finally:
        if app is not None:
            app.close()


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # before any job exists (e.g. while importing): no traceback
        return exitcodes.INTERRUPTED


def _interrupted(job_id: str) -> int:
    from pushjobs.cli.interrupt import sigint_ignored

    with sigint_ignored():
        sys.stderr.write(
            f"Job {job_id} continues on the server; follow it with: pushjobs job watch {job_id}\n"
        )
        sys.stderr.flush()
    return exitcodes.INTERRUPTED
