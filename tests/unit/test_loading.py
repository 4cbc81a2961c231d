"""load_step: a Python step whose constructor fails is the user's error, said in one line."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from pipelines.errors import InvalidInput
from pipelines.loading import load_step
from pipelines.spec import StepSpec


class NeedsVocabulary:
    def __init__(self, config: dict[str, Any]) -> None:
        raise FileNotFoundError(f"{config['vocabulary']} is not in the step's code archive")

    def __call__(self, table: pa.Table) -> pa.Table:
        return table


class RefusesPlainly:
    def __init__(self, config: dict[str, Any]) -> None:
        raise InvalidInput("set 'threshold' between 0 and 1")

    def __call__(self, table: pa.Table) -> pa.Table:
        return table


def test_a_constructor_that_raises_names_the_step_the_error_and_the_fix() -> None:
    spec = StepSpec(name="feature", python=f"{__name__}:NeedsVocabulary", config={"vocabulary": "vocab.txt"})
    with pytest.raises(InvalidInput) as raised:
        load_step(spec)
    assert raised.value.message == (
        "step 'feature' could not load: FileNotFoundError: vocab.txt is not in the step's code archive. "
        "Fix the step's __init__ (its code or its config) and deploy again"
    )


def test_a_corral_error_from_a_constructor_is_passed_on_as_it_is() -> None:
    with pytest.raises(InvalidInput, match=r"^set 'threshold' between 0 and 1$"):
        load_step(StepSpec(name="feature", python=f"{__name__}:RefusesPlainly"))
