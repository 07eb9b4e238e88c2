"""A conversation's tracker: a snapshot, the bounded tail of events after it, and the derived state.

Loading a conversation never replays its whole history (Rasa's trackers with 23,000 events got
slower with every message): stores keep a snapshot of the state every ``snapshot_every`` events
and the tail after it, always keeping the latest ``keep_turns`` user turns in the tail so that an
``undo`` can reach them. An ``undo`` that would reach back past the snapshot stops there.

Only :meth:`Tracker.append` changes a tracker; the state is the fold of the applied events.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from .events import ActionReverted, Event, UserUtteranceReverted, UserUttered
from .state import DialogueState, applied_events, apply, fold, initial_state


class EventVerbosity(enum.Enum):
    """How many events a tracker dump carries (Rasa's ``include_events``)."""

    NONE = "none"
    APPLIED = "applied"
    AFTER_RESTART = "after_restart"
    ALL = "all"

    @classmethod
    def parse(cls, value: str) -> EventVerbosity:
        try:
            return cls(value.lower())
        except ValueError:
            raise ValueError(f"events must be one of {[v.value for v in cls]}, got {value!r}") from None


class Tracker:
    """``base`` is the state over events ``[0, base_seq)``; ``tail`` holds events from ``base_seq`` on."""

    def __init__(self, conversation_id: str, base: DialogueState | None = None, base_seq: int = 0,
                 tail: list[Event] | None = None) -> None:
        self.conversation_id = conversation_id
        self.base = base or initial_state(conversation_id)
        self.base_seq = base_seq
        self.tail: list[Event] = list(tail or [])
        self.stored = base_seq + len(self.tail)  # events already persisted
        self._state = fold(applied_events(self.tail), self.base)

    @property
    def state(self) -> DialogueState:
        return self._state

    @property
    def is_new(self) -> bool:
        return self.stored == 0

    @property
    def event_count(self) -> int:
        return self.base_seq + len(self.tail)

    @property
    def new_events(self) -> list[Event]:
        return self.tail[self.stored - self.base_seq:]

    def append(self, event: Event) -> DialogueState:
        self.tail.append(event)
        if isinstance(event, UserUtteranceReverted | ActionReverted):
            self._state = fold(applied_events(self.tail), self.base)
        else:
            self._state = apply(self._state, event)
        return self._state

    def extend(self, events: list[Event]) -> DialogueState:
        for e in events:
            self.append(e)
        return self._state

    def mark_saved(self) -> None:
        self.stored = self.event_count

    def snapshot_point(self, every: int, keep_turns: int) -> tuple[int, DialogueState] | None:
        """Where a new snapshot would go (``seq``, state over ``[0, seq)``), or None if not due yet."""
        if len(self.tail) < every:
            return None
        seen = 0
        cut = 0
        for i in range(len(self.tail) - 1, -1, -1):
            if isinstance(self.tail[i], UserUttered):
                seen += 1
                if seen >= keep_turns:
                    cut = i
                    break
        if cut <= 0:
            cut = len(self.tail) - keep_turns * 4
        if cut <= 0:
            return None
        state = fold(applied_events(self.tail[:cut]), self.base)
        return self.base_seq + cut, state

    def rebase(self, seq: int, state: DialogueState) -> None:
        """Drop the in-memory tail before ``seq`` once a snapshot at ``seq`` is stored."""
        cut = seq - self.base_seq
        self.tail = self.tail[cut:]
        self.base = state
        self.base_seq = seq

    def dump(self, verbosity: EventVerbosity = EventVerbosity.NONE, events: list[Event] | None = None) -> dict[str, Any]:
        """JSON-ready view: state plus events (``events`` = the full log when the caller read it)."""
        out: dict[str, Any] = {"conversation_id": self.conversation_id, "event_count": self.event_count,
                               "state": msgspec.to_builtins(self.state)}
        if verbosity is EventVerbosity.NONE:
            return out
        log = events if events is not None else self.tail
        if verbosity is EventVerbosity.APPLIED:
            log = applied_events(log)
        elif verbosity is EventVerbosity.AFTER_RESTART:
            last = max((i for i, e in enumerate(log) if type(e).__name__ == "Restarted"), default=-1)
            log = log[last + 1:]
        out["events"] = msgspec.to_builtins(log)
        return out
