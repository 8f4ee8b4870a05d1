"""Turns the event stream into a terminal view: text as it streams, live rows for speakers who talk at once.

The view keeps only what it needs to draw (names, colours, the text of turns in flight); everything it shows
comes from events, so what a person sees is what a JSON client would get.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.errors import StyleSyntaxError
from rich.live import Live
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.spinner import Spinner
from rich.style import Style
from rich.table import Table
from rich.text import Text

from moot.cli._labels import EN, Labels, labels
from moot.events import (
    AgentInfo,
    AgentState,
    ChoiceRequested,
    EstimatesAggregated,
    Event,
    HistoryCompressed,
    InterventionAdded,
    PositionsRecorded,
    RankingsAggregated,
    RoomCompleted,
    RoomConcluded,
    RoomFailed,
    RoomPaused,
    RoomStarted,
    RoomWarning,
    RoundCompleted,
    RoundProgress,
    RoundStarted,
    SpeakerSelected,
    TurnCompleted,
    TurnDelta,
    TurnFailed,
    TurnRestarted,
    TurnStarted,
)
from moot.models import Usage

MAX_WIDTH = 100
_HANG = 4  # cells kept free at the end of a line for punctuation such as "），"
_NO_BREAK_BEFORE = frozenset("，。、；：！？）》」』”’,.;:!?)")  # never start a line with these
_ICONS: dict[AgentState, tuple[str, str]] = {
    "pending": ("○", "dim"),
    "streaming": ("●", "bold cyan"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
}


def agent_style(colour: str | None) -> Style:
    """The agent's colour as a style; a colour the terminal cannot parse falls back to plain bold."""
    try:
        return Style.parse(f"bold {colour}") if colour else Style(bold=True)
    except StyleSyntaxError:
        return Style(bold=True)


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


class _Wrapper:
    """Word-wraps text that arrives in pieces, so no word is cut at the edge and no line opens with "，".

    Chinese text breaks between any two characters, English at spaces; a word is held back until it is
    known to be whole. `feed` and `finish` return what is ready to print.
    """

    def __init__(self, width: int, prefix: Text, first: Text | None = None) -> None:
        self.width = width
        self.prefix = prefix
        self.next_prefix = first if first is not None else prefix
        self.col = 0
        self.word = ""
        self.space = False
        self.out = Text()

    def feed(self, text: str) -> Text:
        for char in text:
            if char == "\n":
                self._flush_word()
                self._newline()
            elif char.isspace():
                self._flush_word()
                self.space = self.col > 0
            elif _wide(char) and char not in _NO_BREAK_BEFORE:
                self._flush_word()
                self.word = char
                self._flush_word()
            else:
                self.word += char
        return self._take()

    def finish(self) -> Text:
        """The last word, and the end of the line."""
        self._flush_word()
        if self.col > 0:
            self._newline()
        return self._take()

    def _flush_word(self) -> None:
        if not self.word:
            return
        size = cell_len(self.word)
        gap = 1 if self.space else 0
        # words stop short of the edge, so closing punctuation can hang there rather than open a line
        fits = self.col + gap + size <= self.width - _HANG or self.word[0] in _NO_BREAK_BEFORE
        if self.col > 0 and not fits:
            self._newline()
        elif gap:
            self.out.append(" ")
            self.col += 1
        if self.col == 0:
            self.out.append_text(self.next_prefix)
            self.col = self.next_prefix.cell_len
            self.next_prefix = self.prefix
        self.out.append(self.word)
        self.col += size
        self.word, self.space = "", False

    def _newline(self) -> None:
        self.out.append("\n")
        self.col, self.space = 0, False

    def _take(self) -> Text:
        out, self.out = self.out, Text()
        return out


def _wrap(text: str, width: int, prefix: Text | None = None, first: Text | None = None) -> Text:
    """A whole text wrapped the same way as streamed text (rich would break before Chinese punctuation)."""
    wrapper = _Wrapper(width, prefix or Text(), first)
    out = wrapper.feed(text)
    out.append_text(wrapper.finish())
    out.rstrip()
    return out


@dataclass
class _Speaker:
    name: str
    state: AgentState = "pending"
    text: str = ""
    note: str = ""


@dataclass
class _Together:
    """A step whose turns run at once: drawn live, printed in turn order when every turn has ended."""

    round: int
    speakers: dict[str, _Speaker]
    total: int
    completed: int = 0
    texts: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


class Renderer:
    """Draws a run for a person: call `handle` for each event, and `close` when the stream ends."""

    def __init__(self, console: Console, *, saved: bool = True, save_hint: bool = False) -> None:
        """`saved`: the run is stored and a pause can be resumed; else a pause is said to be a stop, with
        `save_hint` telling how to make the next run resumable."""
        self.console = console
        self.saved = saved
        self.save_hint = save_hint
        self.width = min(console.width, MAX_WIDTH)
        self.t: Labels = EN
        self.agents: dict[str, AgentInfo] = {}
        self.show_models = False
        self.wrapper: _Wrapper | None = None
        self.together: _Together | None = None
        self.live: Live | None = None
        self._make_live: Callable[[], Live] | None = None  # how to draw the live view again after `suspend`
        self._suspended = False

    # ---- the pieces of the view ------------------------------------------------------------------------

    def name(self, speaker: str) -> Text:
        agent = self.agents.get(speaker)
        text = Text()
        if agent and agent.avatar and len(agent.avatar) <= 2 and not agent.avatar.isascii():
            text.append(f"{agent.avatar} ")
        text.append(speaker, style=agent_style(agent.colour if agent else None))
        return text

    def _header(self, event: RoomStarted) -> RenderableType:
        t = self.t
        parts: list[RenderableType] = []
        simulated = [a.name for a in event.agents if a.model.startswith("simulated:")]
        if event.simulated and simulated:
            notice = t.simulated_all if len(simulated) == len(event.agents) else t.simulated_some
            parts += [
                Text(f" {notice.format(names=', '.join(simulated))} ", style="bold black on yellow"),
                Text(),
            ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row(t.task, Text(event.task))
        protocol = t.protocols.get(event.protocol, event.protocol)
        grid.add_row(t.protocol, Text(f"{protocol} · {t.rounds(event.max_rounds)}"))
        if not self.show_models:
            grid.add_row(t.model, Text(event.agents[0].model))
        agents = Table.grid(padding=(0, 2))
        agents.add_column(no_wrap=True)
        agents.add_column(no_wrap=True)
        if self.show_models:
            agents.add_column(no_wrap=True)
        agents.add_column(overflow="fold")
        for agent in event.agents:
            role = t.moderator if agent.role == "moderator" else t.member
            if not agent.active:
                role += f" ({t.inactive})"
            model = [Text(agent.model, style="dim")] if self.show_models else []
            agents.add_row(
                self.name(agent.name),
                Text(role, style="italic" if agent.role == "moderator" else ""),
                *model,
                Text(agent.persona, style="dim"),
            )
        parts += [grid, Text(), agents]
        return Panel(
            Group(*parts),
            title=Text(event.title, style="bold") if event.title else None,
            title_align="left",
            width=self.width,
            border_style="bright_black",
            padding=(0, 1),
        )

    def _turn_header(self, speaker: str, note: str = "", model: str = "", *, always: bool = False) -> Text:
        """The speaker's name; the model too in a room of several models, or where another model spoke."""
        text = self.name(speaker)
        if note:
            text.append(f"  {note}", style="italic")
        if model and (self.show_models or always):
            text.append(f"  {model}", style="dim")
        return text

    def _prefix(self, speaker: str, kind: str) -> Text:
        if kind == "summary":
            agent = self.agents.get(speaker)
            return Text("┃ ", style=agent_style(agent.colour if agent else None))
        return Text("  ")

    def _print_text(self, speaker: str, kind: str, text: str) -> None:
        self._write(_wrap(text, self.width, self._prefix(speaker, kind)))
        self.console.print()

    def _write(self, text: Text) -> None:
        if text:
            self.console.print(text, end="", soft_wrap=True, highlight=False)

    # ---- live rows for turns that run at once (L6) --------------------------------------------------------

    def _together_view(self) -> RenderableType:
        group = self.together
        if group is None:
            return Text()
        t = self.t
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(t.together.format(n=group.total), style="bold"),
            ProgressBar(total=group.total, completed=group.completed, width=20),
            Text(t.done.format(done=group.completed, total=group.total), style="dim"),
        )
        rows = Table.grid(padding=(0, 1))
        states = list(t.states.values())
        fixed = (
            2  # the left pad and the icon
            + max(self.name(name).cell_len for name in group.speakers)
            + max(cell_len(state) for state in states)
            + 3  # the gaps between columns
        )
        for speaker in group.speakers.values():
            icon, style = _ICONS[speaker.state]
            tail = (
                Text(speaker.note, style="yellow")
                if speaker.note
                else _tail(speaker.text, self.width - fixed)
            )
            tail.stylize("dim")
            rows.add_row(
                Text(icon, style=style),
                self.name(speaker.name),
                Text(t.states[speaker.state], style=style),
                tail,
            )
        return Padding(Group(head, rows), (0, 0, 0, 1))

    def _start_together(self, event: RoundProgress) -> None:
        speakers = {name: _Speaker(name, state) for name, state in event.states.items()}
        self.together = _Together(event.round, speakers, event.total, event.completed)
        if self.console.is_terminal:
            self._start_live(
                lambda: Live(
                    get_renderable=self._together_view,
                    console=self.console,
                    refresh_per_second=12,
                    transient=True,
                )
            )
        else:
            self.console.print(Text(self.t.together.format(n=event.total), style="dim"))
            self.console.print()

    def _end_together(self) -> None:
        group = self.together
        assert group is not None
        self._stop_live()
        self.together = None
        for name in group.speakers:
            if name in group.texts:
                model = group.models[name]
                own = self.agents[name].model if name in self.agents else model
                self.console.print(self._turn_header(name, model=model, always=model != own))
                self._print_text(name, "speech", group.texts[name])
            else:
                failure = f"  ✗ {self.t.failed}: {group.failures.get(name, '')}"
                self.console.print(self._turn_header(name).append(failure, "red"))
            self.console.print()

    def _start_live(self, make: Callable[[], Live]) -> None:
        self._make_live = make
        if not self._suspended:
            self.live = make()
            self.live.start()

    def _stop_live(self, *, keep: bool = False) -> None:
        """Ends the live view; `keep` leaves its last frame on screen (where a paused run stopped)."""
        self._make_live = None
        if self.live is not None:
            self.live.transient = not keep
            self.live.stop()
            self.live = None

    # ---- a person typing below the view ------------------------------------------------------------------

    @property
    def column(self) -> int:
        """Where the cursor stands on a streamed line not yet finished; 0 at the start of a line."""
        return self.wrapper.col if self.wrapper is not None else 0

    def suspend(self) -> None:
        """Takes the live view off the screen, so a line can be drawn under the text; `resume` redraws it."""
        self._suspended = True
        if self.live is not None:
            self.live.transient = True
            self.live.stop()
            self.live = None

    def resume(self) -> None:
        self._suspended = False
        if self._make_live is not None and self.live is None:
            self.live = self._make_live()
            self.live.start()

    # ---- events -------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, RoomStarted):
            self.t = labels(event.language)
            self.agents = {a.name: a for a in event.agents}
            self.show_models = len({a.model for a in event.agents}) > 1
            self.console.print(self._header(event))
        elif isinstance(event, RoundStarted):
            title = self.t.round.format(n=event.round, m=event.max_rounds)
            self.console.print(Rule(Text(title, style="bold")))
            self.console.print()
        elif isinstance(event, RoundProgress):
            self._progress(event)
        elif isinstance(event, TurnStarted):
            self._turn_started(event)
        elif isinstance(event, TurnDelta):
            self._delta(event)
        elif isinstance(event, TurnRestarted):
            self._restarted(event)
        elif isinstance(event, TurnCompleted):
            self._completed(event)
        elif isinstance(event, TurnFailed):
            self._failed(event)
        elif isinstance(event, RoundCompleted):
            self.console.print(Rule(Text(self.t.round_done.format(n=event.round), style="dim"), style="dim"))
        else:
            self._room_event(event)

    def _room_event(self, event: Event) -> None:
        t = self.t
        if isinstance(event, RoomWarning):
            self.console.print(Text(f"⚠ {event.message}", style="yellow"))
        elif isinstance(event, InterventionAdded):
            line = Text("✋ ")
            line.append(t.you if event.author == "user" else event.author, style="bold")
            line.append(f" {t.stepped_in}: ", style="dim")
            line.append(event.text)
            if event.stop:
                line.append(f"  ({t.stop})", style="yellow")
            self.console.print(line)
        elif isinstance(event, HistoryCompressed):
            message = t.compressed.format(
                entries=event.entries, before=event.tokens_before, after=event.tokens_after
            )
            self.console.print(Text(f"⋯ {message}", style="dim"))
        elif isinstance(event, RoomConcluded):
            self.console.print(self._conclusion(event))
        elif isinstance(event, RankingsAggregated):
            lines = ", ".join(
                f"{a.agent} {a.mean_rank:g} ({a.first_places})"
                for a in event.answers
                if a.mean_rank is not None
            )
            self.console.print(Text(f"◆ {t.ranked.format(lines=lines or '-')}", style="dim"))
        elif isinstance(event, ChoiceRequested):
            self.console.print(Text(f"? {event.prompt}", style="bold yellow"))
        elif isinstance(event, SpeakerSelected):
            chosen = t.selected.format(speaker=event.speaker, by=event.by, reason=event.reason)
            self.console.print(Text(f"→ {chosen}", style="dim"))
        elif isinstance(event, EstimatesAggregated):
            if event.median is not None and event.low is not None and event.high is not None:
                said = t.estimates.format(n=event.round, median=event.median, low=event.low, high=event.high)
                self.console.print(Text(f"◆ {said}", style="dim"))
        elif isinstance(event, PositionsRecorded):
            leading = t.stances.get(event.leading, event.leading)
            score = t.consensus_score.format(n=event.round, score=event.consensus, leading=leading)
            self.console.print(Text(f"◆ {score}", style="dim"))
        elif isinstance(event, RoomCompleted):
            self._stop_live()
            reason = t.reasons.get(event.stop_reason, event.stop_reason)
            self.console.print()
            self.console.print(
                Text(t.finished.format(rounds=t.rounds(event.rounds_run), reason=reason), style="bold green")
            )
            self.console.print(self._usage(event.usage_by_agent, event.usage))
        elif isinstance(event, RoomPaused):
            self.close(keep=True)
            self.console.print()
            paused = t.pause(event.round, event.reason, saved=self.saved, save_hint=self.save_hint)
            self.console.print(Text(paused, style="bold yellow"))
        elif isinstance(event, RoomFailed):
            self.close()
            self.console.print(
                Panel(
                    Text(event.error),
                    title=Text(t.room_failed, style="bold"),
                    border_style="red",
                    width=self.width,
                )
            )

    def _progress(self, event: RoundProgress) -> None:
        if self.together is None or self.together.round != event.round:
            self._start_together(event)
        group = self.together
        assert group is not None
        group.completed = event.completed
        for name, state in event.states.items():
            if name in group.speakers:
                group.speakers[name].state = state
        if event.completed >= event.total:
            self._end_together()

    def _turn_started(self, event: TurnStarted) -> None:
        if self.together is not None and event.speaker in self.together.speakers:
            return
        if event.kind == "conclusion":
            self.console.print()
            message = Text(self.t.concluding.format(name=event.speaker), style="italic")
            if self.console.is_terminal:
                self._start_live(lambda: Live(Spinner("dots", message), console=self.console, transient=True))
            else:
                self.console.print(message)
            return
        if event.kind == "opening":
            self.console.print(Rule(Text(self.t.opening, style="bold")))
            self.console.print()
        note = self.t.summary_of.format(n=event.round) if event.kind == "summary" else ""
        self.console.print(self._turn_header(event.speaker, note, event.model))
        self.wrapper = _Wrapper(self.width, self._prefix(event.speaker, event.kind))

    def _delta(self, event: TurnDelta) -> None:
        if self.together is not None and event.speaker in self.together.speakers:
            self.together.speakers[event.speaker].text += event.text
            self.together.speakers[event.speaker].note = ""
        elif self.wrapper is not None:
            self._write(self.wrapper.feed(event.text))

    def _restarted(self, event: TurnRestarted) -> None:
        message = f"↻ {event.speaker}: {event.reason}"
        if self.together is not None and event.speaker in self.together.speakers:
            speaker = self.together.speakers[event.speaker]
            speaker.text, speaker.note = "", self.t.retrying
        elif self.wrapper is not None:
            self._write(self.wrapper.finish())
            if event.discard:
                message += f" ({self.t.discarded})"
            self.wrapper = _Wrapper(self.width, self.wrapper.prefix)
        self.console.print(Text(message, style="yellow"))

    def _completed(self, event: TurnCompleted) -> None:
        if self.together is not None and event.speaker in self.together.speakers:
            self.together.texts[event.speaker] = event.text
            self.together.models[event.speaker] = event.model
            return
        if event.kind == "conclusion":
            self._stop_live()
            return
        if self.wrapper is not None:
            self._write(self.wrapper.finish())
            self.wrapper = None
        self.console.print()

    def _failed(self, event: TurnFailed) -> None:
        if self.together is not None and event.speaker in self.together.speakers:
            self.together.failures[event.speaker] = event.error
            return
        if self.wrapper is not None:
            self._write(self.wrapper.finish())
            self.wrapper = None
        line = self.name(event.speaker).append(f"  ✗ {self.t.failed}: {event.error}", style="red")
        self.console.print(line)
        self.console.print()

    # ---- the end -------------------------------------------------------------------------------------------

    def _conclusion(self, event: RoomConcluded) -> RenderableType:
        t = self.t
        parts: list[RenderableType] = []

        width = self.width - 8  # the panel's border and padding, and the sections' indent
        bullet, indent = Text("• ", style="bold"), Text("  ")

        def section(title: str, body: Text, style: str) -> None:
            if parts:
                parts.append(Text())
            parts.append(Text(title, style=f"bold {style}"))
            parts.append(Padding(body, (0, 0, 0, 2)))

        def bullets(points: list[str]) -> Text:
            if not points:
                return Text(t.none, style="dim")
            return Text("\n").join(_wrap(point, width, indent, bullet) for point in points)

        section(t.summary, _wrap(event.summary, width), "cyan")
        section(t.advice, _wrap(event.decision_advice or t.none, width), "magenta")
        section(t.consensus, bullets(event.consensus_points), "green")
        section(t.dissent, bullets(event.dissent_points), "yellow")
        if event.positions:
            lines = [
                f"{p.agent}: {t.stances.get(p.stance, p.stance)} ({p.confidence:.0%})"
                + (f" — {p.reason}" if p.reason and p.reason != "-" else "")
                for p in event.positions
            ]
            section(t.positions, bullets(lines), "blue")
        title = Text(f"{t.conclusion} · ", style="bold").append_text(self.name(event.speaker))
        return Panel(
            Group(*parts),
            title=title,
            title_align="left",
            subtitle=Text(t.fallback, style="yellow") if event.fallback else None,
            border_style="yellow" if event.fallback else "green",
            width=self.width,
            padding=(1, 2),
        )

    def _usage(self, by_agent: dict[str, Usage], total: Usage) -> RenderableType:
        t = self.t
        table = Table(title=t.usage, title_justify="left", title_style="bold", box=None, padding=(0, 2))
        table.add_column(t.agent)
        for header in (t.input, t.output, t.total):
            table.add_column(header, justify="right")
        priced = total.cost_usd > 0  # free models (local, simulated) show no cost column
        if priced:
            table.add_column(t.cost, justify="right")
        estimated = False

        def count(usage: Usage, value: int) -> str:
            return f"~{value:,}" if usage.estimated else f"{value:,}"

        for name, usage in by_agent.items():
            estimated = estimated or usage.estimated
            label = self.name(name) if name in self.agents else Text(name)
            table.add_row(
                label,
                count(usage, usage.input_tokens),
                count(usage, usage.output_tokens),
                count(usage, usage.total_tokens),
                *([f"${usage.cost_usd:,.4f}"] if priced else []),
            )
        table.add_row(
            Text(t.total, style="bold"),
            count(total, total.input_tokens),
            count(total, total.output_tokens),
            Text(count(total, total.total_tokens), style="bold"),
            *([Text(f"${total.cost_usd:,.4f}", style="bold")] if priced else []),
        )
        if not estimated:
            return table
        return Group(table, Text(t.estimated, style="dim"))

    def close(self, *, keep: bool = False) -> None:
        """Ends what is still in flight when the run stops mid-step; `keep` leaves the live rows on screen."""
        self._stop_live(keep=keep and self.together is not None)
        if self.wrapper is not None:
            self._write(self.wrapper.finish())
            self.wrapper = None


def _tail(text: str, width: int, lines: int = 2) -> Text:
    """The last lines of a text as it would wrap at `width`: what a speaker in flight said most recently."""
    recent = " ".join(text[-width * lines * 2 :].split())
    wrapped = _wrap(recent, width + _HANG).plain.split("\n")
    shown = wrapped[-lines:]
    if len(wrapped) > lines or len(recent) < len(text.strip()):
        shown[0] = "…" + shown[0][1:]
    return Text("\n".join(shown))
