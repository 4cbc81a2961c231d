"""Assay spec models (the public contract): which logged column to watch, against what baseline, how often.

```yaml
pipeline: fraud
target: out.probability          # or in.<column>
baseline: {start: ..., end: ...} # a window of logged history, or {values: [...]}
window: {width: 1h, interval: 1h, start: ...}
metric: psi                      # psi | maxdiff | sumdiff
bins: {mode: quantile, count: 5} # quantile | equal | provided (edges: [...]); + two outlier bins
thresholds: {warning: 0.1, alert: 0.25}
alert_webhook: http://...        # optional; POSTed on each Alert
```

Pure: pydantic and stdlib only, so the CLI and the API edge can validate a spec without Ray.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipelines.errors import InvalidInput
from pipelines.spec import check_name

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HINT = "use a duration such as 30s, 10m, 1h, 1d or a number of seconds"
_TARGET_RE = re.compile(r"^(in|out)\.\S+$")


def parse_duration(value: str | int | float, what: str = "duration") -> float:
    """Seconds in `value`: `30s`, `10m`, `1h`, `1d`, or a number of seconds (also as a string).

    Raises `InvalidInput` when the value is unparsable, not finite, zero or negative; `what` names
    the value in the message (e.g. "window width").
    """
    # bool is an int subclass; `width: true` is a typo, not one second.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{what} {value!r} is not a duration: {_DURATION_HINT}")
    seconds: float
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        else:
            try:
                seconds = float(value)
            except ValueError:
                raise InvalidInput(f"{what} {value!r} is not a duration: {_DURATION_HINT}") from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise InvalidInput(f"{what} {value!r} is not a finite duration: {_DURATION_HINT}")
    if seconds <= 0:
        raise InvalidInput(f"{what} {value!r} must be positive: {_DURATION_HINT}")
    return seconds


def as_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime; a naive one is taken to be UTC already (log times are UTC)."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _duration_field(what: str, value: Any) -> float:
    # pydantic only turns ValueError into a ValidationError; InvalidInput would escape as a 500-ish crash.
    try:
        return parse_duration(value, what)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class Baseline(BaseModel):
    """What "normal" looks like: a window of logged history (`start`, `end`) or literal `values`."""

    model_config = ConfigDict(extra="forbid")

    start: datetime | None = None
    end: datetime | None = None
    values: list[float] | None = None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else as_utc(v)

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("baseline.values is empty: give at least one number, or use baseline {start, end}")
        bad = next((x for x in v if not math.isfinite(x)), None)
        if bad is not None:
            raise ValueError(f"baseline.values contains {bad!r}: every value must be a finite number")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> Baseline:
        both_forms = (
            "give either baseline {start, end} (a window of logged history) or baseline {values: [...]}, not both"
        )
        has_window = self.start is not None or self.end is not None
        if self.values is not None:
            if has_window:
                raise ValueError(f"baseline has both a time window and values: {both_forms}")
            return self
        if self.start is None or self.end is None:
            raise ValueError(f"baseline needs both start and end, or values: {both_forms}")
        if self.end <= self.start:
            raise ValueError(
                f"baseline end {self.end.isoformat()} is not after start {self.start.isoformat()}: swap or widen them"
            )
        return self


class Window(BaseModel):
    """The assay windows: each covers `width` seconds, a new one every `interval` seconds from `start`."""

    model_config = ConfigDict(extra="forbid")

    width: float = Field(description="seconds; accepts 30s, 10m, 1h, 1d")
    # None is replaced by the width (back-to-back windows), so after validation this is always a float.
    interval: float = Field(default=None, validate_default=True, description="seconds; defaults to width")
    start: datetime | None = None

    @field_validator("width", mode="before")
    @classmethod
    def _width(cls, v: Any) -> float:
        return _duration_field("window width", v)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, v: Any, info: ValidationInfo) -> float:
        if v is None:
            width = info.data.get("width")
            if width is None:
                # width failed and is reported, so this model never validates; one error is clearer than two.
                return math.nan
            return float(width)
        return _duration_field("window interval", v)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else as_utc(v)


class Bins(BaseModel):
    """How values are bucketed: `count` interior bins (or the given `edges`) plus two outlier bins."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["quantile", "equal", "provided"] = "quantile"
    count: int = Field(default=5, ge=1, le=100)
    edges: list[float] | None = None

    @model_validator(mode="after")
    def _edges(self) -> Bins:
        if self.mode != "provided":
            if self.edges is not None:
                raise ValueError(
                    f"bins.edges is only used with mode 'provided' (mode is {self.mode!r}): "
                    "drop edges, or set mode: provided"
                )
            return self
        if self.edges is None or len(self.edges) < 2:
            raise ValueError("bins mode 'provided' needs edges: give at least two increasing numbers, e.g. [0, 0.5, 1]")
        if not all(math.isfinite(e) for e in self.edges):
            raise ValueError(f"bins.edges {self.edges} must be finite numbers (outliers get their own bins)")
        if any(b <= a for a, b in pairwise(self.edges)):
            raise ValueError(f"bins.edges {self.edges} must be strictly increasing: sort them and drop duplicates")
        return self


class Thresholds(BaseModel):
    """Score levels: at or above `warning` the window is a warning, at or above `alert` an alert."""

    model_config = ConfigDict(extra="forbid")

    warning: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    alert: float = Field(default=0.25, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warning > self.alert:
            raise ValueError(
                f"thresholds.warning ({self.warning}) is above alert ({self.alert}): lower warning or raise alert"
            )
        return self


class AssaySpec(BaseModel):
    """A drift assay: compare the distribution of `target` in each window with the baseline."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str
    target: str
    baseline: Baseline
    window: Window
    metric: Literal["psi", "maxdiff", "sumdiff"] = "psi"
    bins: Bins = Field(default_factory=Bins)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    alert_webhook: str | None = None
    active: bool = True

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return check_name("pipeline", v)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not _TARGET_RE.match(v):
            raise ValueError(
                f"target {v!r} is not a logged column: use in.<input column> or out.<output column>, "
                "e.g. out.probability"
            )
        return v

    @field_validator("alert_webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError(f"alert_webhook {v!r} must be an http:// or https:// URL")
        return v
