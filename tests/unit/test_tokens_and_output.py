"""Pure core: bootstrap tokens; shell output redaction (nothing secret reaches the terminal by accident)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubeboot.output import redact
from kubeboot.pki.tokens import (
    TOKEN_RE,
    deserialize_token,
    generate_token,
    parse_token,
    random_string,
    serialize_token,
    usable,
)


def test_generated_tokens_have_kubeadm_format(now) -> None:  # type: ignore[no-untyped-def]
    tokens = {str(generate_token(now)) for _ in range(200)}
    assert len(tokens) == 200
    assert all(TOKEN_RE.match(t) for t in tokens)


def test_bytes_at_or_above_252_are_discarded() -> None:
    feed = iter([bytes([255, 252, 0, 35, 36, 251] * 4)] * 10)
    # 255 and 252 dropped; 0->'0', 35->'z', 36->'0', 251->251%36=35->'z'
    assert random_string(4, lambda n: next(feed)) == "0z0z"


def test_token_round_trip_and_expiry(now) -> None:  # type: ignore[no-untyped-def]
    tok = generate_token(now)
    back = deserialize_token(serialize_token(tok))
    assert (back.id, back.secret, back.expires) == (tok.id, tok.secret, now + timedelta(hours=24))
    assert usable(back, now + timedelta(hours=22)) and not usable(back, now + timedelta(hours=23, minutes=30))
    assert tok.secret not in repr(tok)


@pytest.mark.parametrize("bad", ["abcdef.0123456789abcdeF", "abcde.0123456789abcdef", "abcdef0123456789abcdef", ""])
def test_malformed_tokens_are_rejected_without_echo(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_token(bad)
    assert bad == "" or bad not in str(info.value)


def test_redact_masks_every_secret_form() -> None:
    text = ("join --token abcdef.0123456789abcdef --certificate-key " + "a" * 64 + "\n"
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
            "client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=\n    token: abcdef.0123456789abcdef\n")
    out = redact(text)
    assert "0123456789abcdef" not in out and "a" * 64 not in out and "MIIE" not in out
    assert "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk" not in out
    assert "abcdef.<redacted>" in out  # the public token id stays, to tell tokens apart


def test_retry_forbidden_retries_a_403_until_allowed_and_raises_a_lasting_one() -> None:
    """kc.retry_forbidden on a client whose server answers 403 twice, then 200; and one that always answers 403."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from kubeboot.kube import client as kc

    calls: list[str] = []

    def flaky(method: str, url: str, *a: object, **kw: object) -> str:
        calls.append(url)
        if len(calls) <= 2:
            raise ApiException(status=403, reason="Forbidden")
        return "ok"

    api = k8s.ApiClient()
    api.rest_client.request = flaky  # type: ignore[method-assign]
    kc.retry_forbidden(api, timeout=10)
    assert api.rest_client.request("GET", "https://x/api") == "ok" and len(calls) == 3

    def denied(method: str, url: str, *a: object, **kw: object) -> str:
        raise ApiException(status=403, reason="Forbidden")

    api2 = k8s.ApiClient()
    api2.rest_client.request = denied  # type: ignore[method-assign]
    kc.retry_forbidden(api2, timeout=0)
    try:
        api2.rest_client.request("GET", "https://x/api")
    except ApiException as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a lasting 403 must be raised")
