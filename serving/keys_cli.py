"""``lingxi keys create|list|revoke``: manage the API keys in the key database (``keys_url``).

``create`` prints the new key once (it is stored only as a SHA-256 digest); ``--json`` prints
machine-readable output for scripts. Revocation holds at once on every running worker and replica
sharing the database. Exit status: 0 done, 2 bad input (unknown key, bad tenant or role).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import msgspec

from .settings import ROLES


def _store(args):
    from lingxi.serving.keys import KeyStore
    from lingxi.serving.settings import load_settings

    return KeyStore.from_settings(load_settings(getattr(args, "config", None))).create_schema()


def keys_exist(settings) -> bool:
    """Whether the server will demand keys (config-file keys, or any key ever created in the database)."""
    from lingxi.serving.keys import KeyCache, KeyStore

    return bool(settings.api_keys) or KeyCache(KeyStore.from_settings(settings)).has_keys()


def cmd_keys(args) -> int:
    from lingxi.serving.keys import KeyProblem

    store = _store(args)
    try:
        if args.action == "create":
            record, key = store.create(args.name, args.tenant, args.role,
                                       created_by=os.environ.get("USER") or "cli")
            if args.json:
                print(json.dumps({"key": key, **msgspec.to_builtins(record)}))
            else:
                print(key)
                print(f"created key {record.key_id} ({record.name}, tenant {record.tenant}, role {record.role}); "
                      "the key above is shown only now", file=sys.stderr)
        elif args.action == "list":
            records = store.list(args.tenant, include_revoked=args.all)
            if args.json:
                print(json.dumps(msgspec.to_builtins(records)))
            for r in [] if args.json else records:
                revoked = f"  revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else ""
                print(f"{r.key_id}  {r.tenant:<16} {r.role:<8} {r.name}  created {r.created_at:%Y-%m-%d %H:%M}"
                      f"{revoked}")
        else:
            record = store.revoke(args.key_id, args.tenant)
            print(f"revoked {record.key_id} ({record.name}, tenant {record.tenant})")
    except KeyProblem as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        store.dispose()
    return 0


def add_keys_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys (stored hashed in the key database)")
    ksub = p.add_subparsers(dest="action", required=True)
    c = ksub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True, help="who or what uses the key, e.g. 'web widget'")
    c.add_argument("--tenant", default="default", help="the tenant whose data the key may touch")
    c.add_argument("--role", default="read", choices=list(ROLES))
    c.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    c.set_defaults(func=cmd_keys)
    lst = ksub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--tenant", help="only this tenant's keys")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_keys)
    r = ksub.add_parser("revoke", help="revoke a key by its id (the part after lx_)")
    r.add_argument("key_id")
    r.add_argument("--tenant", help="refuse unless the key belongs to this tenant")
    r.set_defaults(func=cmd_keys)
