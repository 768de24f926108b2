"""Rendering backfill events: a live tqdm bar, text log lines or JSON lines.

:func:`backfill` emits plain dicts (``backfill_start``, ``backfill_progress``,
``backfill_complete``); these sinks turn them into what a person or a log
collector reads. In a terminal ``tqdm.auto`` draws the bar; in a notebook
:func:`notebook_bar` draws it as text in one display output that each redraw
replaces, so the saved notebook keeps the final state (a widget's saved text
would say ``0%``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import std
from tqdm.auto import tqdm

Event = dict[str, Any]
EventSink = Callable[[Event], None]

log = logging.getLogger("livermore_nb")


def format_event(event: Event) -> str:
    """One human line for an event: ``backfill_progress done=10/125 percent=8.0 …``."""
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k != "event" and v is not None)
    return f"{event['event']} {fields}"


class LogSink:
    """Writes events as log lines (text or one JSON object per line), progress throttled."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None, every_s: float = 1.0):
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last_progress = -float("inf")

    def __call__(self, event: Event) -> None:
        """Write ``event`` unless it is a progress tick within ``every_s`` of the last."""
        if event["event"] == "backfill_progress":
            final = event.get("done") == event.get("total")
            now = time.monotonic()
            if not final and now - self._last_progress < self.every_s:
                return
            self._last_progress = now
        if self.fmt == "json":
            line = json.dumps({"ts": round(time.time(), 3), **event}, separators=(",", ":"))
        else:
            line = f"{time.strftime('%H:%M:%S')} {format_event(event)}"
        # Through tqdm: a bar on the same terminal is cleared first and redrawn below the
        # line, instead of the line being glued to the bar's last frame.
        tqdm.write(line, file=self.stream)
        self.stream.flush()


class BarSink:
    """Drives a tqdm bar (terminal or notebook widget) from backfill events."""

    def __init__(self, *, tqdm_class: type[std.tqdm] = tqdm, **tqdm_kwargs: Any) -> None:
        self._tqdm = tqdm_class
        self._kwargs = {"unit": "series", "dynamic_ncols": True, **tqdm_kwargs}
        self._bar: Any = None

    def __call__(self, event: Event) -> None:
        """Open the bar on start, advance it on progress, close it on completion."""
        kind = event["event"]
        if kind == "backfill_start":
            self._bar = self._tqdm(total=event["series"], desc="backfill", **self._kwargs)
        elif kind == "backfill_progress" and self._bar is not None:
            self._bar.n = event["done"]
            self._bar.set_postfix(requests=event["requests"], errors=event["errors"], refresh=False)
            self._bar.refresh()
        elif kind == "backfill_complete" and self._bar is not None:
            self._bar.close()


class DisplayLine:
    """A text stream shown as one notebook display output, each line replacing the last.

    tqdm redraws its bar as a carriage return and the line; updating a display (rather than
    streaming text or driving a widget) keeps exactly the newest line, live and
    in the saved notebook.
    """

    encoding = "utf-8"  # tells tqdm it may draw Unicode blocks

    def __init__(self) -> None:
        self._handle: Any = None

    def write(self, text: str) -> int:
        """Show the last non-empty line of ``text`` in place of the previous one."""
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
        if not lines:
            return len(text)
        data = {"text/plain": lines[-1].rstrip()}
        if self._handle is None:  # the first line opens the output, so unused bars leave none
            from IPython.display import display  # only notebooks need IPython

            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def notebook_bar(**tqdm_kwargs: Any) -> BarSink:
    """A BarSink for a notebook cell: a text bar whose final state the saved notebook keeps."""
    kwargs = {"file": DisplayLine(), "dynamic_ncols": False, "ncols": 100, **tqdm_kwargs}
    return BarSink(tqdm_class=std.tqdm, **kwargs)


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that forwards every event to each of ``sinks``."""

    def sink(event: Event) -> None:
        for each in sinks:
            each(event)

    return sink
