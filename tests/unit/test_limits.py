from __future__ import annotations

import dataclasses

from proxy.config import ProxySettings
from proxy.limits import PENALTY_CAP, Limits


def settings(**kw: object) -> ProxySettings:
    base = dict(
        workers=1, trusted_networks=(), haproxy_trusted_networks=(), max_connections=5,
        max_connections_per_ip=2, auth_cache_ttl=0.0, plaintext_auth=False,
        auth_failure_delay=1.0, max_auth_failures=3, max_line=8192, max_literal=8192,
        preauth_timeout=60.0, idle_timeout=3600.0, shutdown_grace=1.0, log_level="info",
    )
    base.update(kw)
    return ProxySettings(**base)  # type: ignore[arg-type]


def test_per_ip_and_total_limits() -> None:
    limits = Limits(settings())
    assert limits.admit("10.0.0.1", False) and limits.admit("10.0.0.1", False)
    assert not limits.admit("10.0.0.1", False)  # third from one address
    assert limits.admit("10.0.0.1", True)  # trusted: no per-address limit
    assert limits.admit("10.0.0.2", False) and limits.admit("10.0.0.3", False)
    assert limits.total == 5 and not limits.admit("10.0.0.4", False)  # total reached
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.4", False)
    for ip in ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]:
        limits.release(ip)
    assert limits.total == 0 and limits._per_ip == {}


def test_penalty_grows_per_ip_and_per_login_and_resets() -> None:
    limits = Limits(settings())
    delays = [limits.failure_delay("10.0.0.1", "alice", False) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, PENALTY_CAP, PENALTY_CAP]
    # Another address guessing the same login is slowed down too.
    assert limits.failure_delay("10.9.9.9", "ALICE", False) == PENALTY_CAP
    limits.login_succeeded("10.0.0.1", "alice")
    assert limits.failure_delay("10.0.0.1", "alice", False) == 1.0  # counting starts afresh
    assert limits.failure_delay("10.0.0.7", "bob", True) == 1.0  # trusted: base delay only


def test_zero_base_delay_means_none() -> None:
    limits = Limits(dataclasses.replace(settings(), auth_failure_delay=0.0))
    assert [limits.failure_delay("1.2.3.4", "x", False) for _ in range(3)] == [0.0, 0.0, 0.0]
