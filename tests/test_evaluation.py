"""`moot eval`'s parts: Du et al.'s questions, reading answers, the interval, and each method's rules
(budget shared, majority taken), run on a model that computes its answer."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from moot import evaluation
from moot.models import ModelRequest
from moot.models.testing import FunctionModel


def test_arithmetic_questions_are_du_et_als_and_their_answers_are_right() -> None:
    questions = evaluation.arithmetic(5, seed=3)
    assert questions == evaluation.arithmetic(5, seed=3)
    for question in questions:
        a, b, c, d, e, f = map(int, re.findall(r"\d+", question.text))
        assert all(10 <= n <= 99 for n in (a, b, c, d, e, f))
        assert question.text == f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?"
        assert int(question.answer) == a + b * c + d - e * f


def test_answers_are_read_after_answer_else_the_last_number() -> None:
    assert evaluation.extract_answer("12 + 3 = 15, so... Answer: -1,204") == "-1204"
    assert evaluation.extract_answer("it is 7, no, 8") == "8"
    assert evaluation.extract_answer("Paris") == "Paris"
    assert (
        evaluation.same("15.0", "15") and evaluation.same("paris", "Paris") and not evaluation.same("1", "2")
    )
    assert evaluation.majority(["3", "4", "4", "3"]) == "3"  # a tie goes to the earliest


def test_the_wilson_interval() -> None:
    assert evaluation.wilson(0, 0) == (0.0, 1.0)
    low, high = evaluation.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = evaluation.wilson(7, 10)
    assert (low, high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))


def test_a_jsonl_file_of_questions(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "2+2?", "answer": 4}\n\n{"question": "Capital of France?", "answer": "Paris"}\n'
    )
    assert evaluation.load_jsonl(path) == [
        evaluation.Question("2+2?", "4"),
        evaluation.Question("Capital of France?", "Paris"),
    ]
    path.write_text('{"q": 1}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1: each line is an object with question and answer"):
        evaluation.load_jsonl(path)


async def test_every_method_shares_the_budget_and_a_model_that_computes_is_always_right() -> None:
    def compute(request: ModelRequest) -> str:
        text = " ".join(m.content for m in request.messages)
        found = re.search(r"(\d+)\+(\d+)\*(\d+)\+(\d+)-(\d+)\*(\d+)", text)
        a, b, c, d, e, f = map(int, found.groups()) if found else (0,) * 6
        value = a + b * c + d - e * f
        if request.schema_name == "ranking":  # a council member ranks the one other answer
            return '{"ranking": ["A"], "reason": "checked"}'
        if request.json_output:
            return f'{{"summary": "done", "decision_advice": "{value}", "consensus_points": [], "dissent_points": []}}'
        return f"Step by step. Answer: {value}"

    model = FunctionModel(compute)
    questions = evaluation.arithmetic(3)
    results = await evaluation.evaluate(model, questions, list(evaluation.METHODS), budget=300)
    assert [(r.method, r.correct, r.total) for r in results] == [
        ("single", 3, 3),
        ("vote", 3, 3),
        ("debate", 3, 3),
        ("board", 3, 3),
        ("council", 3, 3),
    ]
    limits = Counter(request.max_tokens for request in model.requests)
    # single: 300; vote: 3 x 100; debate: 3 agents x 2 rounds x 50; board: 4 spoken turns x 37, conclusion
    # 75 (and positions 75 where a summary lacks them); council: 2 answers x 75, 2 rankings and conclusion x 50
    assert limits == {300: 3, 100: 9, 50: 18 + 9, 37: 12, 75: 3 + 6}
    rankings = [r for r in model.requests if r.schema_name == "ranking"]
    assert len(rankings) == 6 and all(r.json_output and r.schema for r in rankings)
    assert "| single | 3/3 | 100% | 44%–100% |" in evaluation.table(results)
