"""Keys from the environment carry a role (including ``server``) and, optionally, a tenant."""

from __future__ import annotations

import pytest

from lingxi.serving.settings import SettingsError, load_settings


def test_lingxi_api_keys_take_a_tenant_and_the_server_role(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LINGXI_API_KEYS", "widget:read:k1,shop-a/backend:server:k:2,ops:admin:k3")
    monkeypatch.setenv("LINGXI_IDENTITY_SECRETS", "shop-a:0123456789abcdef-secret")
    s = load_settings()
    got = [(k.name, k.role, k.tenant, k.key) for k in s.api_keys]
    assert got == [("widget", "read", "default", "k1"), ("backend", "server", "shop-a", "k:2"),
                   ("ops", "admin", "default", "k3")]
    assert s.identity_secrets == {"shop-a": "0123456789abcdef-secret"}
    for bad in ("x:owner:k", "Shop A/x:read:k"):
        monkeypatch.setenv("LINGXI_API_KEYS", bad)
        with pytest.raises(SettingsError):
            load_settings()
    monkeypatch.setenv("LINGXI_API_KEYS", "widget:read:k1")
    monkeypatch.setenv("LINGXI_IDENTITY_SECRETS", "shop-a:short")
    with pytest.raises(SettingsError):
        load_settings()
