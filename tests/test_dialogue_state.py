"""Events, the pure reducer, reverts, and the tracker's snapshot + bounded tail."""

from __future__ import annotations

import msgspec
import pytest

from lingxi.dialogue.events import (
    ActionReverted,
    BotUttered,
    Button,
    ClarificationAsked,
    FlowEnded,
    FlowStarted,
    FlowStepped,
    HandedOff,
    HandoffReleased,
    Option,
    ParseSummary,
    Restarted,
    SessionStarted,
    SlotSet,
    TurnDecided,
    UserUtteranceReverted,
    UserUttered,
    decode_event,
    decode_events,
    encode_event,
    event_name,
)
from lingxi.dialogue.state import applied_events, decode_state, encode_state, initial_state, replay
from lingxi.dialogue.tracker import EventVerbosity, Tracker


def test_events_round_trip_with_stable_wire_names():
    events = [
        SessionStarted(ts=1.0, channel="web"),
        UserUttered(ts=2.0, text="我要退款", parse=ParseSummary(intent="refund_apply", confidence=0.9, decision="rule")),
        BotUttered(ts=2.0, text="请提供订单号", buttons=(Button("取消", "取消"),), kind="prompt"),
        SlotSet(ts=3.0, name="order_id", value="DD202311240001"),
        HandedOff(ts=4.0, reason="explicit_request", skill_group="after_sales"),
    ]
    raw = msgspec.json.encode(events)
    assert decode_events(raw) == events
    assert [event_name(e) for e in events] == ["session_started", "user", "bot", "slot", "handoff"]
    assert b'"event":"user"' in encode_event(events[1])
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"event":"no_such_event","ts":1}')
    with pytest.raises(AttributeError):
        events[1].text = "changed"  # frozen


def test_reducer_is_pure_and_state_is_a_fold():
    s0 = initial_state("c")
    s1 = replay("c", [SlotSet(ts=1.0, name="a", value=1)], s0)
    assert s0.slots == {} and s1.slots == {"a": 1}
    s2 = replay("c", [SlotSet(ts=2.0, name="a", value=None)], s1)
    assert s2.slots == {} and s1.slots == {"a": 1}


def test_flow_stack_push_step_and_pop():
    events = [FlowStarted(ts=1.0, flow="refund", step="ask_order"),
              FlowStarted(ts=2.0, flow="order_logistics", step="ask_order"),
              FlowStepped(ts=3.0, flow="order_logistics", step="lookup")]
    s = replay("c", events)
    assert [f.flow for f in s.flow_stack] == ["refund", "order_logistics"]
    assert s.active_flow.step == "lookup"
    s = replay("c", [FlowEnded(ts=4.0, flow="order_logistics")], s)
    assert s.active_flow.flow == "refund" and s.active_flow.step == "ask_order"
    s = replay("c", [FlowEnded(ts=5.0, flow="refund", outcome="cancelled")], s)
    assert s.flow_stack == ()


def test_fallback_count_resets_on_an_understood_turn_and_handoff_is_an_event():
    s = replay("c", [TurnDecided(ts=1.0, decision="fallback"), TurnDecided(ts=2.0, decision="fallback")])
    assert s.fallback_count == 2
    s = replay("c", [TurnDecided(ts=3.0, decision="answer")], s)
    assert s.fallback_count == 0
    s = replay("c", [FlowStarted(ts=4.0, flow="refund", step="a"), HandedOff(ts=5.0, reason="x")], s)
    assert s.handoff is not None and s.handoff.reason == "x" and s.flow_stack == ()
    s = replay("c", [HandoffReleased(ts=6.0)], s)
    assert s.handoff is None and s.handoffs == 1


def test_offered_buttons_and_clarification_last_until_the_next_user_message():
    opts = (Option("login_failed", "无法登录", "/login_failed"),)
    s = replay("c", [ClarificationAsked(ts=1.0, kind="intent", question="?", options=opts),
                     BotUttered(ts=1.0, text="?", buttons=(Button("无法登录", "/login_failed"),))])
    assert s.offered == ("/login_failed",) and s.clarification.options == opts
    s = replay("c", [UserUttered(ts=2.0, text="无法登录")], s)
    assert s.offered == () and s.clarification is None


def test_undo_removes_the_last_user_turn_and_what_followed():
    events = [UserUttered(ts=1.0, text="a"), SlotSet(ts=1.0, name="x", value=1),
              UserUttered(ts=2.0, text="b"), SlotSet(ts=2.0, name="y", value=2), BotUttered(ts=2.0, text="ok"),
              UserUtteranceReverted(ts=3.0)]
    applied = applied_events(events)
    assert [type(e).__name__ for e in applied] == ["UserUttered", "SlotSet"]
    s = replay("c", events)
    assert s.slots == {"x": 1} and s.user_turns == 1
    s = replay("c", [*events[:-1], ActionReverted(ts=3.0)])
    assert s.slots == {"x": 1, "y": 2}  # rewind only drops the bot message
    assert len(applied_events([*events[:-1], ActionReverted(ts=3.0)])) == 4


def test_restart_keeps_identity_and_drops_the_rest():
    s = replay("c", [SessionStarted(ts=1.0, channel="app", visitor_id="v1"), SlotSet(ts=2.0, name="a", value=1),
                     Restarted(ts=3.0)])
    assert s.slots == {} and s.channel == "app" and s.visitor_id == "v1"


def test_state_encodes_and_decodes():
    s = replay("c", [SessionStarted(ts=1.0, channel="web"), SlotSet(ts=2.0, name="a", value=[1, 2]),
                     FlowStarted(ts=3.0, flow="f", step="s")])
    assert decode_state(encode_state(s)) == s


def test_tracker_snapshot_keeps_a_bounded_tail_and_the_same_state():
    t = Tracker("c")
    for i in range(40):
        t.append(UserUttered(ts=float(i), text=f"m{i}"))
        t.append(SlotSet(ts=float(i), name=f"k{i}", value=i))
    full_state = t.state
    point = t.snapshot_point(every=20, keep_turns=3)
    assert point is not None
    seq, snap_state = point
    t.rebase(seq, snap_state)
    assert len(t.tail) == 6 and t.base_seq == 74 and t.event_count == 80
    assert t.state == full_state
    reloaded = Tracker("c", snap_state, seq, list(t.tail))
    assert reloaded.state == full_state
    reloaded.append(UserUtteranceReverted(ts=99.0))
    assert "k39" not in reloaded.state.slots and reloaded.state.user_turns == 39


def test_dump_verbosity():
    t = Tracker("c")
    t.extend([UserUttered(ts=1.0, text="a"), Restarted(ts=2.0), UserUttered(ts=3.0, text="b"),
              UserUtteranceReverted(ts=4.0)])
    assert "events" not in t.dump(EventVerbosity.NONE)
    assert len(t.dump(EventVerbosity.ALL)["events"]) == 4
    assert [e["event"] for e in t.dump(EventVerbosity.APPLIED)["events"]] == ["user", "restart"]
    assert [e["event"] for e in t.dump(EventVerbosity.AFTER_RESTART)["events"]] == ["user", "undo"]
    with pytest.raises(ValueError, match="events must be one of"):
        EventVerbosity.parse("some")
