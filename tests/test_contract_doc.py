"""docs/contract.md against the code: every message the API can answer is written there, and
so is every field of the field table with its limits."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from ingest_api import errors
from ingest_api.fields import AI_FETCH_BODY, EVENT_BODY, BodyField

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = (ROOT / "docs" / "contract.md").read_text()
# The contract's text with markdown line breaks undone, as a reader sees it.
READ = re.sub(r"\s*\n\s*", " ", CONTRACT)
# Calls whose message argument is what a client reads.
ANSWERING = {"BadRequest": 0, "ApiError": 1, "_raw_answer": 1}


def answered_messages() -> tuple[set[str], list[str]]:
    """Every message argument of an answering call in ingest_api/ that evaluates with its
    module's names (constants and calls on them), and the source of those that do not (they
    take a field's name as a variable: ``per_field_messages`` covers them)."""
    messages, per_field = set(), []
    for path in sorted((ROOT / "ingest_api").glob("*.py")):
        module = importlib.import_module(f"ingest_api.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ANSWERING):
                continue
            position = ANSWERING[node.func.id]
            if len(node.args) <= position:
                messages.add(errors.BAD_BODY)  # BadRequest() says Bad request body
                continue
            for argument in branches(node.args[position]):
                try:
                    messages.add(eval(compile(ast.Expression(argument), str(path), "eval"), vars(module)))
                except NameError:
                    per_field.append(f"{path.name}: {ast.unparse(argument)}")
    return messages, per_field


def branches(expression: ast.expr) -> list[ast.expr]:
    """The messages an expression can be: both sides of ``a if condition else b``."""
    if isinstance(expression, ast.IfExp):
        return branches(expression.body) + branches(expression.orelse)
    return [expression]


def per_field_messages(field: BodyField) -> list[str]:
    """The messages the checks build from a field's row: its type, its length, its range."""
    implied = [errors.wrong_type(field.name, field.expected)] if field.json_type != "object" else []
    if field.max_length is not None:
        implied.append(errors.too_long(field.name, field.max_length))
    if field.minimum is not None and field.maximum is not None:
        implied.append(errors.out_of_range(field.name, field.minimum, field.maximum))
    return implied


def test_every_message_the_code_answers_with_is_in_the_contract() -> None:
    messages, _ = answered_messages()
    constants = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)}
    missing = sorted(message for message in messages | constants if message not in READ)
    assert not missing, "not in docs/contract.md: " + "; ".join(missing)


def test_the_messages_the_scan_cannot_evaluate_are_parameters_covered_elsewhere() -> None:
    """A new message built from a variable must be added here, and covered by a test above."""
    _, not_evaluated = answered_messages()
    assert sorted(not_evaluated) == [
        "ai_fetch.py: errors.out_of_range(name, 0, maximum)",  # response_ms, bytes_served
        "request.py: too_large",  # the callers' constants: Bad request body, batch.TOO_LARGE
        "request.py: too_large",
        "validation.py: errors.out_of_range(name, MIN_DIMENSION, MAX_DIMENSION)",  # per field
        "validation.py: errors.too_long(name, limit)",  # per field
        "validation.py: errors.too_long(name, limit)",
        "validation.py: errors.wrong_type(name, 'a UUID')",  # per field
        "validation.py: errors.wrong_type(name, _EXPECTED[name])",  # per field
        "validation.py: missing",  # the callers' constants: errors.MISSING_USER_AGENT, MISSING_NAME
    ]


@pytest.mark.parametrize("field", EVENT_BODY + AI_FETCH_BODY, ids=lambda field: field.name)
def test_every_field_and_the_messages_its_row_implies_are_in_the_contract(field: BodyField) -> None:
    assert f"| `{field.name}`" in CONTRACT or f"`{field.name}`," in CONTRACT
    missing = [message for message in per_field_messages(field) if message not in READ]
    assert not missing, missing


def test_the_starlette_answers_are_in_the_contract(api: Any) -> None:
    for path, method, status in [("/nope", "get", 404), ("/healthz", "post", 405)]:
        answer = getattr(api, method)(path)
        assert answer.status_code == status
        assert f"`{status}` | `{answer.json()['message']}`" in CONTRACT
