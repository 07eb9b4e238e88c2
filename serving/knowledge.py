"""The knowledge base in every conversation turn, and the arbitration fitted for it.

:class:`TenantKnowledge` is the dialogue's :class:`~lingxi.dialogue.knowledge.KnowledgeSource` over
the calling tenant's :class:`~lingxi.retrieval.service.KbService` — the same search as
``POST /v1/kb/search`` (channel visibility, visitor tags, recent pages and products, feedback-aware
ranking), reusing the intent model's e5 embedding of the message when the knowledge base encodes
with the same model. A knowledge base that is empty, still starting, rebuilding or unreachable
answers with no articles (the turn goes on with intents), never with an error.

:class:`ArbitrationStore` keeps one fitted :class:`~lingxi.dialogue.arbitration.Arbitration` per
tenant for the served model. Fits are saved in the model bundle's folder, keyed by the content of
the knowledge base they were fitted on (``<bundle>/arbitration/<digest>.json``): a server whose
knowledge base holds what the last fit saw loads it at once; when the knowledge base changed
materially (more than ``refit_share`` of its articles added, removed or edited) or another model is
served, the arbitration is fitted again in the background while the previous one keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lingxi.dialogue.arbitration import VERSION as ARBITRATION_VERSION
from lingxi.dialogue.arbitration import Arbitration
from lingxi.dialogue.knowledge import ArticleHit, KnowledgeQuery
from lingxi.dialogue.tenancy import DEFAULT_TENANT, current_tenant, tenant_scope
from lingxi.retrieval.answerability import (
    answer_features,
    calibration_probes,
    changed_share,
    content_hashes,
    short_answer,
)
from lingxi.retrieval.search import SearchRequest
from lingxi.retrieval.service import KbService

log = logging.getLogger("lingxi.serving")


def _tenant() -> str:
    return current_tenant.get() or DEFAULT_TENANT


class TenantKnowledge:
    """The current tenant's knowledge base as the dialogue sees it. ``kbs()`` returns the server's
    :class:`~lingxi.retrieval.tenants.KbTenants` (or None before the KB lifespan ran)."""

    def __init__(self, kbs: Callable[[], Any]) -> None:
        self._kbs = kbs

    def kb(self) -> KbService | None:
        tenants = self._kbs()
        if tenants is None:
            return None
        try:
            kb = tenants.get(_tenant())
            kb.live  # noqa: B018 - raises until the index is loaded
            return kb
        except Exception as exc:  # noqa: BLE001 - no knowledge base: the turn answers from intents
            log.warning("knowledge base of tenant %s unavailable for a conversation turn: %s", _tenant(), exc)
            return None

    def search(self, query: KnowledgeQuery, exclude_units: AbstractSet[int] = frozenset()) -> list[ArticleHit]:
        kb = self.kb()
        if kb is None or not query.text.strip():
            return []
        try:
            index, articles = kb.live
            if not articles:
                return []
            vector = query.vectors.get(kb.encoder.name)
            if vector is not None and query.normalized != kb.analyzer.normalize(query.text):
                vector = None  # embedded from other text: encode ours
            limit = kb.searcher.ranking.max_query_chars
            req = SearchRequest(query=query.text[:limit], channel=query.channel, visitor_tags=list(query.tags)[:50],
                                recent_pages=list(query.recent_pages)[:50],
                                recent_products=list(query.recent_products)[:50], intent=query.intent,
                                top_k=query.top_k)
            response = kb.search(req, query_vector=vector, record=False, exclude_units=exclude_units)
        except Exception as exc:  # noqa: BLE001 - rebuilding, store down …: no articles this turn
            log.warning("knowledge search failed in a conversation turn: %s", exc)
            return []
        hits = []
        for hit in response.results:
            article = articles.get(hit.article_id)
            if article is None:  # unpublished between the index read and now
                continue
            title, _ = article.in_language(query.language)
            hits.append(ArticleHit(article_id=hit.article_id, title=title, score=hit.score,
                                   snippet=hit.passage[:300],
                                   answer=short_answer(article, hit, language=query.language) or None,
                                   rank=hit.rank, search_id=response.search_id,
                                   features=answer_features(response.results, hit.rank)))
        return hits

    def get(self, article_id: str, language: str | None = None) -> ArticleHit | None:
        kb = self.kb()
        if kb is None:
            return None
        article = kb.live[1].get(article_id)
        if article is None:
            return None
        title, _ = article.in_language(language)
        return ArticleHit(article_id=article.id, title=title, answer=short_answer(article, language=language) or None)

    def probes(self) -> list[tuple[str, str, int]]:
        kb = self.kb()
        if kb is None:
            return []
        index, articles = kb.live
        return [(p.text, p.article_id, p.unit_id) for p in calibration_probes(index, articles)]

    def fingerprint(self) -> dict[str, str]:
        kb = self.kb()
        return content_hashes(kb.live[1].values()) if kb is not None else {}


def kb_digest(hashes: dict[str, str]) -> str:
    raw = json.dumps(sorted(hashes.items()), separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class ArbitrationStore:
    """One fitted arbitration per tenant for the served model (module docstring).

    ``fit(tenant)`` runs the calibration for the current model and the tenant's knowledge base
    (the dialogue engine's ``fit_arbitration``, under the tenant's scope); ``bundle_dir()`` is the
    served bundle's folder and ``model_version()`` its version.
    """

    def __init__(self, knowledge: TenantKnowledge, fit: Callable[[], Arbitration],
                 bundle_dir: Callable[[], Path | None], model_version: Callable[[], str | None],
                 refit_share: float = 0.1, check_every_s: float = 30.0) -> None:
        self.knowledge = knowledge
        self._fit = fit
        self._bundle_dir = bundle_dir
        self._model_version = model_version
        self.refit_share = refit_share
        self.check_every_s = check_every_s
        self._current: dict[str, Arbitration] = {}
        self._checked: dict[str, tuple[float, int | None, str | None]] = {}  # tenant → (when, kb revision, model)
        self._fitting: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # ------------------------------------------------------------ the turn's view
    def current(self) -> Arbitration | None:
        """The tenant's arbitration (never waits for a fit; schedules one when it is due)."""
        tenant = _tenant()
        arb = self._current.get(tenant)
        if self._due(tenant, arb):
            self._refresh(tenant, block=False)
            arb = self._current.get(tenant)
        return arb

    def ensure(self, tenant: str = DEFAULT_TENANT) -> Arbitration | None:
        """Load or fit the tenant's arbitration now (start-up, ``lingxi train``); returns it."""
        self._refresh(tenant, block=True)
        return self._current.get(tenant)

    # ------------------------------------------------------------ internals
    def _due(self, tenant: str, arb: Arbitration | None) -> bool:
        if tenant in self._fitting or time.monotonic() - self._failed_at.get(tenant, -1e9) < self.check_every_s:
            return False
        when, revision, model = self._checked.get(tenant, (0.0, None, None))
        if arb is None or model != self._model_version():
            return True
        if time.monotonic() - when < self.check_every_s:
            return False
        kb = self.knowledge.kb()
        now_revision = kb.live[0].revision_ if kb is not None else None
        if now_revision == revision:
            self._checked[tenant] = (time.monotonic(), revision, model)
            return False
        return True

    def _folder(self) -> Path | None:
        bundle = self._bundle_dir()
        return bundle / "arbitration" if bundle is not None else None

    def _saved(self, hashes: dict[str, str]) -> Arbitration | None:
        """A fit saved for this model on (nearly) this knowledge base, or None."""
        folder = self._folder()
        if folder is None or not folder.is_dir():
            return None
        exact = folder / f"{kb_digest(hashes)}.json"
        candidates = [exact] if exact.is_file() else sorted(folder.glob("*.json"))
        best: tuple[float, Arbitration] | None = None
        for path in candidates:
            try:
                arb = Arbitration.from_json(path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - a broken file is refitted, not fatal
                log.warning("ignoring unreadable arbitration %s: %s", path, exc)
                continue
            share = changed_share(dict(arb.fitted_on.get("kb_hashes") or {}), hashes)  # type: ignore[arg-type]
            if share <= self.refit_share and (best is None or share < best[0]):
                best = (share, arb)
        return best[1] if best else None

    def _save(self, arb: Arbitration, hashes: dict[str, str]) -> None:
        folder = self._folder()
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{kb_digest(hashes)}.json.tmp"
            tmp.write_bytes(arb.to_json())
            tmp.replace(folder / f"{kb_digest(hashes)}.json")
        except OSError as exc:  # a read-only bundle: the fit serves from memory
            log.warning("could not save the arbitration next to the model: %s", exc)

    def _refresh(self, tenant: str, block: bool) -> None:
        with self._lock:
            if tenant in self._fitting:
                return
            self._fitting.add(tenant)
        if block:
            self._load_or_fit(tenant)
        else:
            threading.Thread(target=self._load_or_fit, args=(tenant,), name=f"lingxi-arbitration-{tenant}",
                             daemon=True).start()

    def _load_or_fit(self, tenant: str) -> None:
        try:
            with tenant_scope(tenant):
                kb = self.knowledge.kb()
                revision = kb.live[0].revision_ if kb is not None else None
                hashes = self.knowledge.fingerprint()
                model = self._model_version()
                arb = self._saved(hashes)
                if arb is None or arb.fitted_on.get("model_version") != model \
                        or arb.fitted_on.get("version") != ARBITRATION_VERSION:
                    started = time.perf_counter()
                    arb = self._fit()
                    log.info("arbitration fitted for tenant %s in %.1f s (%s)", tenant, time.perf_counter() - started,
                             arb.report)
                    self._save(arb, hashes)
                self._current[tenant] = arb
                self._checked[tenant] = (time.monotonic(), revision, model)
                self.last_error = None
        except Exception as exc:  # noqa: BLE001 - keep the previous arbitration (or none) serving
            self.last_error = f"arbitration fit failed: {exc}"
            self._failed_at[tenant] = time.monotonic()
            log.exception("could not fit the answer arbitration for tenant %s", tenant)
        finally:
            with self._lock:
                self._fitting.discard(tenant)


@contextmanager
def served_knowledge(settings: Any, holder: Any, tenants: Any = None
                     ) -> Iterator[tuple[TenantKnowledge, Arbitration | None]]:
    """The knowledge base and the fitted arbitration ``lingxi serve`` would use with these settings
    and this model (for tools outside the server: ``lingxi train``, ``lingxi test conversations``).
    The arbitration is loaded from beside the bundle, or fitted and saved there. ``tenants``: knowledge
    bases already started (else the settings' are started, and closed afterwards)."""
    from lingxi.retrieval.tenants import KbTenants

    from .conversations import build_dialogue_service
    from .kb import kb_config_from_settings

    owned = tenants is None
    if tenants is None:
        tenants = KbTenants(kb_config_from_settings(settings), Path(getattr(settings, "home", ".lingxi")))
    try:
        tenants.get(DEFAULT_TENANT)
        svc = build_dialogue_service(_with(settings, dialogue_store="memory"), holder, kbs=lambda: tenants)
        try:
            with tenant_scope(DEFAULT_TENANT):
                arbitration = svc.arbitrations.ensure() if svc.arbitrations is not None else None
            yield TenantKnowledge(lambda: tenants), arbitration
        finally:
            svc.close()
    finally:
        if owned:
            tenants.close()


def calibrate_trained(settings: Any, models_dir: Path, bot: str, domain: Path | None = None) -> Arbitration | None:
    """Fit (or load) the answer arbitration of the newest bundle of ``bot`` against the server's
    knowledge base (the demo is seeded into an empty one), save it next to the bundle, and return
    it — what ``lingxi train`` runs so that the first ``lingxi serve`` starts with it fitted."""
    from .loading import ModelHolder

    holder = ModelHolder(Path(models_dir), bot)
    if holder.load_latest() is None:
        raise RuntimeError(holder.last_error or f"no model for {bot!r} in {models_dir}")
    if domain is not None:
        settings = _with(settings, dialogue_domain=str(domain))
    with served_knowledge(settings, holder) as (_, arbitration):
        return arbitration


def _with(settings: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(settings, **changes)
