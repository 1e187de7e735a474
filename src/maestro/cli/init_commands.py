"""`maestro worker init` and `maestro orchestrator init`: what a spawned session runs (SPEC
§12.5). The work is done in `maestro.spawn.agent`."""

from __future__ import annotations

import typer

worker_app = typer.Typer(help="Commands run inside a worker session.", no_args_is_help=True)
orchestrator_app = typer.Typer(help="Commands run inside an orchestrator session.",
                               no_args_is_help=True)

_INIT_HELP = (
    "Start the agent of a spawned {role} session: read the manifest (MAESTRO_MANIFEST_PATH), "
    "mark its tasks as being worked on, write the task prompt to a file and run the agent CLI "
    "chosen by MAESTRO_AGENT (claude, codex, or a command line with {{prompt_file}} / "
    "{{manifest}} placeholders). Exit 1 on a bad manifest, 5 when the agent executable is "
    "missing, else the agent's own exit code. The agent takes over the terminal, so this "
    "command has no --json output.\n\n"
    "Example: MAESTRO_MANIFEST_PATH=~/.maestro/sessions/$MAESTRO_SESSION_ID/manifest.json "
    "maestro {role} init"
)


def _init(role: str) -> None:
    from ..spawn.agent import run_init

    raise typer.Exit(run_init(role))


@worker_app.command("init", help=_INIT_HELP.format(role="worker"))
def worker_init() -> None:
    _init("worker")


@orchestrator_app.command("init", help=_INIT_HELP.format(role="orchestrator"))
def orchestrator_init() -> None:
    _init("orchestrator")
