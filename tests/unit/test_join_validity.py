"""A control plane that joins issues its certificates for the cluster's certificateValidityPeriod (kubeadm-config),
as kubeadm join does, not for kubeboot's default year."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubeboot.join import _days
from kubeboot.config.load import single_control_plane
from kubeboot.pki.bundle import plan_pki


@pytest.mark.parametrize("text,days", [("1440h0m0s", 60), ("8760h", 365), ("87600h0m0s", 3650), ("36h", 1),
                                       (None, None), ("", None), ("1y", None)])
def test_go_durations_in_days(text: str | None, days: int | None) -> None:
    assert _days(text) == days


def test_joined_leaves_follow_the_clusters_validity(keygen, now) -> None:  # type: ignore[no-untyped-def]
    cfg = single_control_plane(name="cp2", address="10.0.0.12", endpoint="10.0.0.10:6443", version="1.37",
                               networking={}, key_algorithm="RSA-2048", cert_sans=[], validity_days=_days("1440h0m0s"),
                               ca_validity_days=_days("87600h0m0s"), source="kubeadm-config")
    pki, _ = plan_pki(cfg, {}, now, keygen)
    assert pki.leaves[("cp2", "apiserver")].cert.not_valid_after_utc == now + timedelta(days=60)
    assert pki.clients[("cp2", "admin.conf")].cert.not_valid_after_utc == now + timedelta(days=60)
