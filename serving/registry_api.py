"""The model registry over HTTP, for the operator console: versions and aliases, the promotion log,
gate reports, and promote / roll back (the same operations as ``lingxi promote`` and ``lingxi rollback``).

Routes (``registry_router``) act on the bot this server serves (``settings.bot``) and, like model
reloads, are server-wide operations: only keys of the operator tenant may use them. Reading needs an
``editor`` key; moving ``champion`` needs ``admin``.

* ``GET  /v1/registry/versions`` — registered versions with their aliases, plus ``champion``/``challenger``.
* ``GET  /v1/registry/log`` — every alias move: who, when, why, with which gate result.
* ``GET  /v1/registry/versions/{version}/gates`` — the gate reports logged in that version's run
  (passed and failed ones; a failed promotion leaves its report there).
* ``POST /v1/registry/promote`` ``{version, reason}`` — run the eval gate against the champion and move
  ``champion`` only if it passes; a failed gate is 409 ``gate_failed`` with the report in ``details``.
* ``POST /v1/registry/rollback`` ``{reason}`` — ``champion`` back to the previous champion.

The registry and the gate thresholds come from ``app.state.registry`` / ``app.state.gate_config`` when
whoever builds the app put them there (tests do), else ``Registry(settings.tracking_uri)`` and the
default ``GateConfig``.

A server that follows the alias (``model_source = "registry"``) picks a moved champion up at its next
poll; a server in local mode keeps serving what it loaded.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State

from .auth import principal, require
from .errors import ApiError

_VERSION = re.compile(r"^\d{1,9}$")
_READ = [require("editor", operator=True)]
_MOVE = [require("admin", operator=True)]
_lock = threading.Lock()


class PromoteRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: str
    reason: str


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str


def _registry(state: State) -> Any:
    """One ``Registry`` per app, made on first use (importing MLflow takes a moment)."""
    reg = getattr(state, "registry", None)
    if reg is None:
        with _lock:
            reg = getattr(state, "registry", None)
            if reg is None:
                from lingxi.training.registry import Registry

                try:
                    reg = Registry(state.settings.tracking_uri)
                except Exception as exc:  # noqa: BLE001 - an unreachable tracking server is an answer
                    raise ApiError(503, "registry_unavailable",
                                   f"the model registry cannot be opened: {exc}") from None
                state.registry = reg
    return reg


def _reason(text: str) -> str:
    text = text.strip()
    if not text or len(text) > 500:
        raise ApiError(422, "invalid_reason", "`reason` must be 1..500 characters (it goes in the log)")
    return text


def _version(text: str) -> str:
    text = text.strip()
    if not _VERSION.match(text):
        raise ApiError(422, "invalid_version", "`version` is a registered version number, e.g. \"3\"")
    return text


def _refused(exc: Exception) -> ApiError:
    from lingxi.training.registry import GateFailed

    if isinstance(exc, GateFailed):
        return ApiError(409, "gate_failed", f"the gate refused the promotion; `champion` is unchanged. "
                        f"{exc.report.summary()}", {"report": exc.report.to_dict()})
    return ApiError(409, "registry_refused", str(exc))


def _guarded(fn, *args):
    """Registry calls: refusals are 409 with the registry's reason, an unreachable store is 503."""
    from lingxi.datasets.domain import DomainError
    from lingxi.training.bundle import BundleError
    from lingxi.training.registry import RegistryError

    try:
        return fn(*args)
    except (RegistryError, DomainError, BundleError) as exc:
        raise _refused(exc) from None
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types when its store is down
        raise ApiError(503, "registry_unavailable", f"the model registry did not answer: {exc}") from None


@get("/registry/versions", guards=_READ, sync_to_thread=True, tags=["models"])
def registry_versions(state: State) -> dict[str, Any]:
    """Registered versions of the served bot, oldest first, with their aliases."""
    from lingxi.training.registry import CHALLENGER, CHAMPION

    reg = _registry(state)
    bot = state.settings.bot
    versions = _guarded(reg.versions, bot)
    return {"bot": bot, "versions": versions, "champion": _guarded(reg.alias_version, bot, CHAMPION),
            "challenger": _guarded(reg.alias_version, bot, CHALLENGER)}


@get("/registry/log", guards=_READ, sync_to_thread=True, tags=["models"])
def registry_log(state: State) -> list[dict[str, Any]]:
    """The promotion log of the served bot, oldest first."""
    return [e.__dict__ for e in _guarded(_registry(state).history, state.settings.bot)]


@get("/registry/versions/{version:str}/gates", guards=_READ, sync_to_thread=True, tags=["models"])
def registry_gates(state: State, version: str) -> list[dict[str, Any]]:
    """Gate reports stored in the version's MLflow run (``gate/*.json``), newest name last."""
    reg = _registry(state)
    version = _version(version)

    def read() -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            run_id = reg.client.get_model_version(state.settings.bot, version).run_id
        except MlflowException:
            raise ApiError(404, "version_not_found",
                           f"{state.settings.bot!r} has no version {version}") from None
        out = []
        for item in sorted(reg.client.list_artifacts(run_id, "gate"), key=lambda a: a.path):
            if item.path.endswith(".json"):
                local = reg.client.download_artifacts(run_id, item.path)
                report = json.loads(Path(local).read_text("utf-8"))
                out.append({"name": Path(item.path).name, "report": report})
        return out

    return _guarded(read)


@post("/registry/promote", guards=_MOVE, sync_to_thread=True, tags=["models"], status_code=200)
def registry_promote(request: Request, state: State, data: PromoteRequest) -> dict[str, Any]:
    """Gate ``version`` against the champion on the domain's held-out set; move ``champion`` if it passes."""
    from lingxi.datasets.domain import demo_domain_path

    version, reason = _version(data.version), _reason(data.reason)
    domain = getattr(state.settings, "dialogue_domain", None) or str(demo_domain_path())
    actor = f"{principal(request).name} (console)"
    gate = getattr(state, "gate_config", None)  # the app's builder may set thresholds; default GateConfig()
    entry, report = _guarded(_registry(state).promote, state.settings.bot, version, domain, actor, reason,
                             gate)
    return {"entry": entry.__dict__, "report": report.to_dict()}


@post("/registry/rollback", guards=_MOVE, sync_to_thread=True, tags=["models"], status_code=200)
def registry_rollback(request: Request, state: State, data: RollbackRequest) -> dict[str, Any]:
    """Move ``champion`` back to the version it pointed at before the last move."""
    actor = f"{principal(request).name} (console)"
    entry = _guarded(_registry(state).rollback, state.settings.bot, actor, _reason(data.reason))
    return {"entry": entry.__dict__}


registry_router = Router(path="/v1", route_handlers=[registry_versions, registry_log, registry_gates,
                                                     registry_promote, registry_rollback])
