"""Visitors across channels: identities (channel user id, phone, device, email…) merge into one visitor.

A message may carry several identities (the app knows the user id *and* the verified phone; a
WeChat adapter knows the openid and, once bound, the phone). Any identity already known points to
its visitor; when the identities of one message point to *different* visitors, those visitors are
merged into the oldest one (its id survives, the others point to it), so the conversations the
customer had in the app show up when they continue on WeChat.

Records live in the tracker store's side table, so several replicas see the same visitors; merges
run under one store-wide lock.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence

import msgspec

from .stores import TrackerStore

MAX_CONVERSATIONS = 50
_LOCK_NAME = "visitor index"  # contains a space: can never collide with a conversation id


class Identity(msgspec.Struct, frozen=True):
    kind: str  # e.g. web_cookie | app_user | wechat_openid | phone | email | device
    value: str


class VisitorConversation(msgspec.Struct, frozen=True):
    conversation_id: str
    channel: str | None
    started_at: float


class Visitor(msgspec.Struct, kw_only=True):
    visitor_id: str
    created_at: float
    identities: list[Identity] = msgspec.field(default_factory=list)
    conversations: list[VisitorConversation] = msgspec.field(default_factory=list)
    merged_from: list[str] = msgspec.field(default_factory=list)
    merged_into: str | None = None


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Visitor)


def normalize_identity(kind: str, value: str) -> Identity:
    kind = kind.strip().lower()
    value = value.strip()
    if kind == "phone":
        digits = re.sub(r"\D", "", value)
        if digits.startswith("86") and len(digits) == 13:
            digits = digits[2:]
        value = digits
    elif kind == "email":
        value = value.lower()
    return Identity(kind, value)


class VisitorStore:
    def __init__(self, store: TrackerStore) -> None:
        self.store = store

    def _get(self, visitor_id: str) -> Visitor | None:
        raw = self.store.kv_get(f"visitor:{visitor_id}")
        return _dec.decode(raw) if raw else None

    def _put(self, visitor: Visitor) -> None:
        self.store.kv_set(f"visitor:{visitor.visitor_id}", _enc.encode(visitor))

    def _owner(self, ident: Identity) -> str | None:
        raw = self.store.kv_get(f"identity:{ident.kind}:{ident.value}")
        return raw.decode() if raw else None

    def get(self, visitor_id: str) -> Visitor | None:
        """The visitor, following merges to the surviving record."""
        seen = set()
        visitor = self._get(visitor_id)
        while visitor is not None and visitor.merged_into and visitor.visitor_id not in seen:
            seen.add(visitor.visitor_id)
            visitor = self._get(visitor.merged_into)
        return visitor

    def find(self, ident: Identity) -> Visitor | None:
        owner = self._owner(normalize_identity(ident.kind, ident.value))
        return self.get(owner) if owner else None

    def resolve(self, identities: Sequence[Identity], conversation_id: str | None = None,
                channel: str | None = None, now: float | None = None) -> tuple[Visitor, list[str]]:
        """The visitor these identities belong to (created, extended or merged); returns
        ``(visitor, merged_ids)``. ``conversation_id`` is recorded as one of theirs."""
        now = time.time() if now is None else now
        idents = list(dict.fromkeys(normalize_identity(i.kind, i.value) for i in identities if i.value.strip()))
        with self.store.lock(_LOCK_NAME):
            found: list[Visitor] = []
            for ident in idents:
                owner = self._owner(ident)
                visitor = self.get(owner) if owner else None
                if visitor and all(v.visitor_id != visitor.visitor_id for v in found):
                    found.append(visitor)
            merged: list[str] = []
            if not found:
                main = Visitor(visitor_id=f"v-{uuid.uuid4().hex[:16]}", created_at=now)
            else:
                found.sort(key=lambda v: (v.created_at, v.visitor_id))
                main = found[0]
                for other in found[1:]:
                    main.identities.extend(i for i in other.identities if i not in main.identities)
                    known = {c.conversation_id for c in main.conversations}
                    main.conversations.extend(c for c in other.conversations if c.conversation_id not in known)
                    main.merged_from.extend([other.visitor_id, *other.merged_from])
                    other.merged_into = main.visitor_id
                    self._put(other)
                    for ident in other.identities:
                        self.store.kv_set(f"identity:{ident.kind}:{ident.value}", main.visitor_id.encode())
                    merged.append(other.visitor_id)
                main.conversations.sort(key=lambda c: c.started_at)
            for ident in idents:
                if ident not in main.identities:
                    main.identities.append(ident)
                self.store.kv_set(f"identity:{ident.kind}:{ident.value}", main.visitor_id.encode())
            if conversation_id and all(c.conversation_id != conversation_id for c in main.conversations):
                main.conversations.append(VisitorConversation(conversation_id, channel, now))
            main.conversations = main.conversations[-MAX_CONVERSATIONS:]
            self._put(main)
            return main, merged
