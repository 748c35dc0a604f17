"""The replication link of a TLS cluster is TLS itself: it carries every password hash, so a
consumer must refuse a provider whose certificate it cannot verify rather than replicate in
the clear."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.ldapcluster import LdapCluster
from bench.pki import make_pki
from tests.integration.waiting import eventually


def test_consumer_replicates_only_from_a_provider_it_trusts(farm: Farm, tmp_path: Path) -> None:
    with LdapCluster(farm, consumers=1, pki=farm.pki, users=farm.users[:2]) as cluster:
        provider, consumer = cluster.provider, cluster.consumers[0]
        assert provider is not None and consumer.tls_dir is not None
        assert "starttls=critical" in consumer.conf.read_text()
        dn = farm.users[0].dn

        def caught_up() -> bool:
            return cluster.context_csn(consumer) == cluster.context_csn(provider)

        provider.modify(dn, {"description": ["over TLS"]})
        assert eventually(caught_up, timeout=15)

        # A consumer that trusts another CA gets no connection, hence no change.
        consumer.stop()
        stranger = make_pki(tmp_path / "stranger", ["127.0.0.1"])
        shutil.copyfile(stranger.ca_cert, consumer.tls_dir / "ca.crt")
        consumer.spawn()
        consumer.wait()
        provider.modify(dn, {"description": ["not for strangers"]})
        if eventually(caught_up, timeout=4):
            pytest.fail("the consumer replicated from a provider it cannot verify")
