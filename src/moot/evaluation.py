"""`moot eval`: does discussion help? The same questions, the same model, the same output-token budget per
question, answered by one agent, by a majority vote of independent answers (self-consistency), by a
parallel debate (Du et al. 2023: N agents, R rounds, final majority), and by Moot's board and council
protocols.

Tasks are generated arithmetic as in Du et al. (six two-digit numbers, `a+b*c+d-e*f`) or any JSONL file of
`{"question": ..., "answer": ...}` lines (numeric answers compare as numbers, others exactly).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from moot import tracing
from moot.models import Completion, Message, Model, ModelRequest, Usage

__all__ = [
    "METHODS",
    "MethodResult",
    "Question",
    "arithmetic",
    "evaluate",
    "extract_answer",
    "load_jsonl",
    "table",
    "wilson",
]

ANSWER = "End with the line 'Answer: N'."
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    answer: str


@dataclass(slots=True)
class MethodResult:
    method: str
    correct: int = 0
    total: int = 0
    tokens: int = 0  # input and output
    output_tokens: int = 0  # what the budget bounds
    seconds: float = 0.0
    answers: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def arithmetic(n: int, seed: int = 0) -> list[Question]:
    """Du et al.'s arithmetic: `a+b*c+d-e*f` with six two-digit numbers."""
    rng = random.Random(seed)
    questions = []
    for _ in range(n):
        a, b, c, d, e, f = (rng.randint(10, 99) for _ in range(6))
        text = f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?"
        questions.append(Question(text, str(a + b * c + d - e * f)))
    return questions


def load_jsonl(path: Path) -> list[Question]:
    """Questions from a JSONL file: one `{"question": ..., "answer": ...}` object a line."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            data = orjson.loads(line)
            if not isinstance(data, dict) or "question" not in data or "answer" not in data:
                raise ValueError(f"{path}:{number}: each line is an object with question and answer")
            questions.append(Question(str(data["question"]), str(data["answer"])))
    return questions


def extract_answer(text: str) -> str:
    """The answer in a reply: after the last 'Answer:', else its last number, else the whole text."""
    tail = text.rpartition("Answer:")[2] if "Answer:" in text else text
    numbers = _NUMBER.findall(tail.replace(",", ""))
    return numbers[-1] if numbers else tail.strip()


def same(answer: str, reference: str) -> bool:
    try:
        return math.isclose(float(answer), float(reference), rel_tol=1e-9, abs_tol=1e-9)
    except ValueError:
        return answer.strip().casefold() == reference.strip().casefold()


def majority(answers: Sequence[str]) -> str:
    """The most common answer; the earliest among ties."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a))) if answers else ""


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion: sound at small n and at 0 or 1, unlike the normal one."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


async def _ask(model: Model, system: str, prompt: str, max_tokens: int, temperature: float) -> Completion:
    request = ModelRequest(
        system=system, messages=(Message("user", prompt),), max_tokens=max_tokens, temperature=temperature
    )
    completion: Completion | None = None
    async for item in model.stream(request):
        if isinstance(item, Completion):
            completion = item
    assert completion is not None
    return completion


SYSTEM = "You solve problems step by step and give the final number."


async def single(model: Model, question: Question, budget: int) -> tuple[str, Usage]:
    reply = await _ask(model, SYSTEM, f"{question.text} {ANSWER}", budget, 0.0)
    return extract_answer(reply.text), reply.usage


async def vote(model: Model, question: Question, budget: int, samples: int = 3) -> tuple[str, Usage]:
    usage, answers = Usage(), list[str]()
    for _ in range(samples):
        reply = await _ask(model, SYSTEM, f"{question.text} {ANSWER}", budget // samples, 0.8)
        usage, answers = usage + reply.usage, [*answers, extract_answer(reply.text)]
    return majority(answers), usage


async def debate(
    model: Model, question: Question, budget: int, agents: int = 3, rounds: int = 2
) -> tuple[str, Usage]:
    """Du et al.: each agent answers; then each reads the others' answers and answers again; majority."""
    each = budget // (agents * rounds)
    usage = Usage()
    replies: list[str] = []
    for round_ in range(rounds):
        new: list[str] = []
        for index in range(agents):
            if round_ == 0:
                prompt = f"{question.text} {ANSWER}"
            else:
                others = "\n\n".join(f"One agent said: {r}" for i, r in enumerate(replies) if i != index)
                prompt = (
                    f"{question.text}\n\nThese are the solutions of other agents:\n{others}\n\n"
                    f"Using their reasoning as additional advice, give your updated answer. {ANSWER}"
                )
            reply = await _ask(model, SYSTEM, prompt, each, 0.8)
            usage, new = usage + reply.usage, [*new, reply.text]
        replies = new
    return majority([extract_answer(r) for r in replies]), usage


async def _meeting(
    model: Model, question: Question, protocol: str, limits: dict[str, int]
) -> tuple[str, Usage]:
    """A Moot room of a chair and two members, one round; the answer is read from the conclusion."""
    from moot.engine import Run
    from moot.spec import RoomSpec

    room = RoomSpec.from_data(
        {
            "task": f"{question.text} {ANSWER} Put the final number in decision_advice.",
            "protocol": protocol,
            "max_rounds": 1,
            "models": {"m": {"provider": "simulated"}},  # stands in for the declaration; `model` speaks
            "limits": {**limits, "conclusion_retries": 0},
            "agents": [
                {
                    "name": "Chair",
                    "role": "moderator",
                    "persona": "a careful chair who checks the arithmetic",
                },
                {"name": "Ana", "persona": "a mathematician"},
                {"name": "Ben", "persona": "an accountant who recomputes every step"},
            ],
        }
    )
    run = Run(room, models=dict.fromkeys(("Chair", "Ana", "Ben"), model))
    with tracing.room_run(run.room_id) as span:  # a child of the evaluation's span
        with span.starting(protocol):
            run.start()
        result = await run.wait()
        span.ended(result.status, result.error, result.rounds_run)
    conclusion = result.conclusion
    text = f"{conclusion.decision_advice} {conclusion.summary}" if conclusion else ""
    return extract_answer(text), result.usage


async def board(model: Model, question: Question, budget: int) -> tuple[str, Usage]:
    """Moot's board meeting. Four spoken turns (opening, two speeches, summary) share half the budget; the
    structured answers, the conclusion and the members' positions where the summary lacks them, a quarter
    each at most; the conclusion is not asked again: the meeting stays within the budget, as every method's
    does."""
    return await _meeting(
        model, question, "board", {"reply_tokens": budget // 8, "structured_tokens": budget // 4}
    )


async def council(model: Model, question: Question, budget: int) -> tuple[str, Usage]:
    """Moot's council: the two members answer on their own (a quarter of the budget each), rank each other's
    answer, and the chair concludes; the two rankings and the conclusion have a sixth each at most."""
    return await _meeting(
        model, question, "council", {"reply_tokens": budget // 4, "structured_tokens": budget // 6}
    )


Method = Callable[[Model, Question, int], Awaitable[tuple[str, Usage]]]
METHODS: dict[str, Method] = {
    "single": single,
    "vote": vote,
    "debate": debate,
    "board": board,
    "council": council,
}


async def evaluate(
    model: Model,
    questions: Sequence[Question],
    methods: Sequence[str],
    budget: int,
    progress: Callable[[str], None] | None = None,
) -> list[MethodResult]:
    """Every method on every question, in turn; tokens are input and output as the model reported them.

    With tracing on (moot.tracing), the evaluation is one span and each room it runs a child of it."""
    with tracing.evaluation(model.label, methods, len(questions), budget) as span:
        results = await _evaluate(model, questions, methods, budget, progress)
        span.results({r.method: (r.correct, r.total) for r in results})
    return results


async def _evaluate(
    model: Model,
    questions: Sequence[Question],
    methods: Sequence[str],
    budget: int,
    progress: Callable[[str], None] | None,
) -> list[MethodResult]:
    results = {name: MethodResult(name) for name in methods}
    for number, question in enumerate(questions, 1):
        for name in methods:
            started = time.perf_counter()
            answer, usage = await METHODS[name](model, question, budget)
            result = results[name]
            result.seconds += time.perf_counter() - started
            result.tokens += usage.total_tokens
            result.output_tokens += usage.output_tokens
            result.total += 1
            result.correct += same(answer, question.answer)
            result.answers.append(answer)
            if progress is not None:
                progress(
                    f"question {number}/{len(questions)} {name}: {answer!r} (expected {question.answer})"
                )
    return list(results.values())


def table(results: Sequence[MethodResult]) -> str:
    """A Markdown table: accuracy with its 95% interval, tokens and seconds per question."""
    lines = [
        "| method | correct | accuracy | 95% CI | output tokens / question | all tokens / question "
        "| seconds / question |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        low, high = wilson(r.correct, r.total)
        per = max(r.total, 1)
        lines.append(
            f"| {r.method} | {r.correct}/{r.total} | {r.accuracy:.0%} | {low:.0%}–{high:.0%} | "
            f"{r.output_tokens / per:,.0f} | {r.tokens / per:,.0f} | {r.seconds / per:.1f} |"
        )
    return "\n".join(lines)


def plot(results: Sequence[MethodResult], path: Path, title: str) -> bool:
    """Accuracy with 95% intervals as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    names = [r.method for r in results]
    accuracy = [r.accuracy for r in results]
    intervals = [wilson(r.correct, r.total) for r in results]
    errors = [[a - low for a, (low, _) in zip(accuracy, intervals, strict=True)],
              [high - a for a, (_, high) in zip(accuracy, intervals, strict=True)]]  # fmt: skip
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.bar(names, accuracy, yerr=errors, capsize=6, color="#4363d8")
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy (95% CI)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
