"""What every instrument shares: named measurement windows and the error they raise.

Instruments follow ml-energy/zeus: `begin_window(name)` marks a start, `end_window(name)`
returns a measurement object for the span. Windows are keyed by name so they may overlap or
nest (a whole repeat around per-stage windows); ending a window that was never begun is a
caller's mistake and raises rather than returning a zero that would look like a measurement.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from voxmeter.errors import VoxmeterError

T = TypeVar("T")


class MeasureError(VoxmeterError):
    """An instrument was used wrongly (window not begun, twice begun) or given bad input."""


class OpenWindows(Generic[T]):
    """Start state of each open window, by name. One per instrument instance, never shared."""

    def __init__(self, instrument: str) -> None:
        self._instrument = instrument
        self._open: dict[str, T] = {}

    def begin(self, name: str, state: T) -> None:
        if name in self._open:
            raise MeasureError(f"{self._instrument}: window {name!r} is already open")
        self._open[name] = state

    def end(self, name: str) -> T:
        try:
            return self._open.pop(name)
        except KeyError:
            open_now = ", ".join(self.names()) or "none"
            raise MeasureError(
                f"{self._instrument}: window {name!r} was never begun (open: {open_now})"
            ) from None

    def discard(self, name: str) -> None:
        """Forget a window whose measured code failed, so its name can be reused."""
        self._open.pop(name, None)

    def names(self) -> list[str]:
        return list(self._open)

    def values(self) -> list[T]:
        return list(self._open.values())

    def __contains__(self, name: str) -> bool:
        return name in self._open
