"""Shell: API-server calls through the official Kubernetes client library (no hand-built HTTP).

Idempotent object management (create, or update when different), bootstrap tokens, upload/download of
the encrypted control-plane certificates, and token discovery exactly as kubeadm performs it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from cryptography import x509
from kubernetes import client as k8s
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from kubeboot.errors import (
    CAPinMismatchError,
    CertsUnavailableError,
    JoinError,
    KubebootError,
    TokenRejectedError,
)
from kubeboot.kube import objects
from kubeboot.pki.protocol import jws_valid, pins_match
from kubeboot.pki.tokens import BootstrapToken

T = TypeVar("T")
API_TIMEOUT = 60.0  # kubeadm KubernetesAPICall timeout
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # discovery's first GET is unverified by design


class ApiError(KubebootError):
    exit_code = 6


def from_kubeconfig_data(data: bytes, server: str | None = None) -> k8s.ApiClient:
    """A client from kubeconfig bytes (kubeboot up: the admin.conf rendered from the state directory), with its
    server replaced when this process reaches the API elsewhere than the nodes do."""
    doc = yaml.safe_load(data)
    if server is not None:
        for c in doc.get("clusters") or []:
            c["cluster"]["server"] = server
    api: k8s.ApiClient = kconfig.new_client_from_config_dict(doc)  # type: ignore[no-untyped-call]
    return api


def from_kubeconfig(path: Path) -> k8s.ApiClient:
    try:
        api: k8s.ApiClient = kconfig.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        return api
    except Exception as exc:  # noqa: BLE001 - the library raises many types for a bad file
        raise ApiError(f"cannot use kubeconfig {path}: {exc}") from None


def _client(endpoint: str, ca_pem: bytes | None, token: str | None = None) -> k8s.ApiClient:
    conf = k8s.Configuration()
    conf.host = f"https://{endpoint}"
    if ca_pem is None:
        conf.verify_ssl = False
    else:
        fh = tempfile.NamedTemporaryFile(prefix="kubeboot-ca-", suffix=".crt", delete=False)
        fh.write(ca_pem)
        fh.close()
        conf.ssl_ca_cert = fh.name  # urllib3 wants a path; removed when kubeboot exits, not left in /tmp
        atexit.register(_remove, fh.name)
    if token:
        conf.api_key = {"authorization": f"Bearer {token}"}
    conf.retries = 0
    return k8s.ApiClient(conf)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def retry(fn: Callable[[], T], timeout: float = API_TIMEOUT, interval: float = 0.5,
          retry_on: Callable[[Exception], bool] = lambda e: True) -> T:
    """Call fn until it succeeds or the deadline passes; the last error is reported."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - decided by retry_on
            if time.monotonic() >= deadline or not retry_on(exc):
                raise
            time.sleep(interval)


# --- generic objects --------------------------------------------------------------------------------

_COMPARED = ("data", "type", "rules", "roleRef", "subjects")
FIELD_MANAGER = "kubeboot"


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object without what the server changes on every write (for comparing a dry-run apply's result)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("managedFields", "resourceVersion", "generation")}
    out["metadata"] = meta
    return out


class Objects:
    """Create-or-update for plain dict objects; reports what changed so re-runs can say "no changes"."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self._dyn: DynamicClient | None = None

    def _resource(self, obj: Mapping[str, Any]) -> Any:
        if self._dyn is None:
            self._dyn = DynamicClient(self.api)  # type: ignore[no-untyped-call]
        return self._dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def get(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        try:
            found = self._resource(obj).get(name=meta["name"], namespace=meta.get("namespace"))
            result: dict[str, Any] = found.to_dict()
            return result
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        except Exception as exc:  # dynamic client wraps errors in its own types
            if getattr(exc, "status", None) == 404:
                return None
            raise

    @staticmethod
    def _same(current: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
        if all(current.get(k) == obj.get(k) for k in _COMPARED if k in obj or k in current):
            want_ann = obj["metadata"].get("annotations") or {}
            have_ann = (current.get("metadata") or {}).get("annotations") or {}
            return all(have_ann.get(k) == v for k, v in want_ann.items())
        return False

    def would_apply(self, obj: Mapping[str, Any]) -> str:
        """What apply would do, without doing it: create | update | unchanged."""
        current = self.get(obj)
        return "create" if current is None else "unchanged" if self._same(current, obj) else "update"

    def apply(self, obj: Mapping[str, Any]) -> str:
        """created | updated | unchanged"""
        res = self._resource(obj)
        meta = obj["metadata"]
        current = self.get(obj)
        if current is None:
            res.create(body=dict(obj), namespace=meta.get("namespace"))
            return "created"
        if self._same(current, obj):
            return "unchanged"
        if obj.get("roleRef") and current.get("roleRef") != obj.get("roleRef"):
            res.delete(name=meta["name"], namespace=meta.get("namespace"))  # roleRef is immutable
            res.create(body=dict(obj), namespace=meta.get("namespace"))
            return "updated"
        body = dict(obj)
        body["metadata"] = {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        res.replace(body=body, namespace=meta.get("namespace"))
        return "updated"

    def server_apply(self, obj: Mapping[str, Any], dry_run: bool = False) -> str:
        """Server-side apply as field manager "kubeboot" (workloads: the addons, the CNI, the user's manifests):
        created | configured | unchanged (an apply that changes nothing leaves the resourceVersion alone)."""
        meta = obj["metadata"]
        current = self.get(obj)
        if dry_run and current is None:
            return "created"
        kw: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        res = self._resource(obj)
        out = res.server_side_apply(body=dict(obj), name=meta["name"], namespace=meta.get("namespace"),
                                    field_manager=FIELD_MANAGER, force_conflicts=True, **kw).to_dict()
        if current is None:
            return "created"
        if dry_run:
            return "unchanged" if _comparable(out) == _comparable(current) else "configured"
        same = out["metadata"].get("resourceVersion") == current["metadata"].get("resourceVersion")
        return "unchanged" if same else "configured"

    def delete(self, obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        try:
            self._resource(obj).delete(name=meta["name"], namespace=meta.get("namespace"))
            return True
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 404:
                return False
            raise


def ensure_admin_binding(admin: k8s.ApiClient, super_admin: k8s.ApiClient | None) -> str:
    """kubeadm's EnsureAdminClusterRoleBinding: try with admin.conf; Forbidden (expected before the binding
    exists) -> create it with super-admin.conf."""
    body = objects.cluster_admins_binding()

    def attempt() -> str:
        try:
            return Objects(admin).apply(body)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 403 and super_admin is not None:
                return Objects(super_admin).apply(body)
            raise

    outcome = retry(attempt, retry_on=lambda e: getattr(e, "status", 0) != 403)
    wait_cluster_admin(admin)
    return outcome


def retry_forbidden(api: k8s.ApiClient, timeout: float) -> k8s.ApiClient:
    """The client, with every request that the API server answers 403 retried each second for up to `timeout`
    seconds before the 403 is raised. For a control plane whose API servers are being replaced (upgrade): a request
    through the load balancer was denied to the cluster admin right after the last one was replaced, and allowed
    again moments later (kubeadm retries every call). A real denial still fails, `timeout` seconds later."""
    rest = api.rest_client
    plain = rest.request

    def request(*args: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return plain(*args, **kw)  # type: ignore[no-untyped-call]
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    rest.request = request  # type: ignore[method-assign]
    return api


def wait_cluster_admin(api: k8s.ApiClient, timeout: float = API_TIMEOUT) -> None:
    """Until the credentials may do everything: right after an API server starts, the binding can exist before
    the RBAC post-start hook has created the `cluster-admin` ClusterRole it refers to (kubeadm retries every
    call; kubeboot waits once, bounded, here)."""
    review = k8s.V1SelfSubjectAccessReview(spec=k8s.V1SelfSubjectAccessReviewSpec(
        resource_attributes=k8s.V1ResourceAttributes(verb="*", group="*", resource="*")))

    def allowed() -> None:
        res = k8s.AuthorizationV1Api(api).create_self_subject_access_review(review)
        if not (res.status and res.status.allowed):
            raise ApiException(status=403, reason="not yet a cluster admin")

    retry(allowed, timeout=timeout)


# --- bootstrap tokens --------------------------------------------------------------------------------

def create_token(api: k8s.ApiClient, token: BootstrapToken, description: str = "",
                 usages: Sequence[str] = ("signing", "authentication"),
                 groups: Sequence[str] = (objects.DEFAULT_GROUP,)) -> str:
    return Objects(api).apply(objects.token_secret(token, description=description, usages=usages, groups=groups))


@dataclass(frozen=True)
class TokenInfo:
    id: str
    expires: str
    usages: tuple[str, ...]
    groups: tuple[str, ...]
    description: str


def list_tokens(api: k8s.ApiClient) -> list[TokenInfo]:
    core = k8s.CoreV1Api(api)
    out = []
    secrets = core.list_namespaced_secret("kube-system", field_selector="type=bootstrap.kubernetes.io/token")
    for s in secrets.items:
        d = {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
        usages = tuple(sorted(k.removeprefix("usage-bootstrap-") for k, v in d.items()
                              if k.startswith("usage-bootstrap-") and v == "true"))
        out.append(TokenInfo(d.get("token-id", "?"), d.get("expiration", "<forever>"), usages,
                             tuple(g for g in d.get("auth-extra-groups", "").split(",") if g), d.get("description", "")))
    return sorted(out, key=lambda t: t.id)


def delete_token(api: k8s.ApiClient, token_id: str) -> bool:
    try:
        k8s.CoreV1Api(api).delete_namespaced_secret(f"bootstrap-token-{token_id}", "kube-system")
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


# --- control-plane certificates ----------------------------------------------------------------------

def upload_certs(api: k8s.ApiClient, encrypted: Mapping[str, bytes], proxy_token: BootstrapToken) -> None:
    """Proxy token (2 h, no usages, no groups) owns kubeadm-certs, so both expire together."""
    objs = Objects(api)
    objs.apply(objects.token_secret(proxy_token, description=objects.CERTS_TOKEN_DESCRIPTION, usages=(), groups=()))
    owner = k8s.CoreV1Api(api).read_namespaced_secret(f"bootstrap-token-{proxy_token.id}", "kube-system")
    assert owner.metadata is not None and owner.metadata.uid is not None
    objs.apply(objects.kubeadm_certs_secret(encrypted, proxy_token.id, str(owner.metadata.uid)))
    for o in objects.kubeadm_certs_rbac():
        objs.apply(o)


def fetch_kubeadm_certs(api: k8s.ApiClient) -> dict[str, bytes]:
    try:
        s = k8s.CoreV1Api(api).read_namespaced_secret("kubeadm-certs", "kube-system")
    except ApiException as exc:
        if exc.status in (403, 404):
            raise CertsUnavailableError("the kubeadm-certs Secret is gone (it expires 2 hours after upload) or not readable",
                            hint="run `kubeboot init phase upload-certs --upload-certs` on a control plane and use "
                                 "the new certificate key") from None
        raise
    return {k: base64.b64decode(v) for k, v in (s.data or {}).items()}


# --- discovery -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Discovered:
    server: str
    ca_pem: bytes
    kubeconfig: str  # cluster-info's content, verified


def _read_cluster_info(api: k8s.ApiClient) -> dict[str, str]:
    cm = k8s.CoreV1Api(api).read_namespaced_config_map("cluster-info", "kube-public", _request_timeout=10)
    return dict(cm.data or {})


def discover(endpoint: str, token: BootstrapToken, pins: Sequence[str], unsafe_skip_ca_verification: bool = False,
             timeout: float = 300.0, interval: float = 5.0) -> Discovered:
    """kubeadm token discovery: unverified anonymous read of cluster-info, JWS check with the token, CA pin
    check, then a second read over TLS verified with that CA which must return the same bytes."""
    if not pins and not unsafe_skip_ca_verification:
        raise JoinError("token discovery without --discovery-token-ca-cert-hash is unsafe",
                        hint="pass --discovery-token-ca-cert-hash sha256:<hash> (or, knowingly, "
                             "--discovery-token-unsafe-skip-ca-verification)")
    insecure = _client(endpoint, None)
    key = f"jws-kubeconfig-{token.id}"
    deadline = time.monotonic() + timeout
    data: dict[str, str] = {}
    last_error = ""
    reached = False
    while True:
        try:
            data = _read_cluster_info(insecure)
            reached = True
            if key in data and "kubeconfig" in data:
                break
            last_error = f"cluster-info has no signature for token {token.id} (unknown, expired or not a signing token)"
        except ApiException as exc:
            reached = True
            last_error = f"cluster-info: HTTP {exc.status}"
        except Exception as exc:  # noqa: BLE001 - connection errors of any kind
            last_error = f"cannot reach https://{endpoint}: {type(exc).__name__}"
        if time.monotonic() + interval > deadline:
            if reached:
                raise TokenRejectedError(f"discovery via {endpoint} failed after {timeout:.0f}s: {last_error}",
                                         hint="check the token on a control plane (`kubeboot token list`) or "
                                              "create one (`kubeboot token create --print-join-command`)")
            raise JoinError(f"discovery via {endpoint} failed after {timeout:.0f}s: {last_error}",
                            hint="check the endpoint address and port, and that an API server answers there")
        time.sleep(interval)
    content = data["kubeconfig"]
    if not jws_valid(data[key], content, token.id, token.secret):
        raise TokenRejectedError(f"the cluster-info signature does not match token {token.id}.<secret>",
                        hint="the token secret is wrong; create a token with `kubeboot token create`")
    doc = yaml.safe_load(content)
    clusters = doc.get("clusters") or []
    if len(clusters) != 1:
        raise JoinError(f"cluster-info holds {len(clusters)} clusters, expected exactly one")
    cluster = clusters[0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    server = str(cluster["server"])
    if unsafe_skip_ca_verification:
        return Discovered(server, ca_pem, content)
    certs = x509.load_pem_x509_certificates(ca_pem)
    if not pins_match(certs, pins):
        raise CAPinMismatchError("the cluster CA does not match --discovery-token-ca-cert-hash",
                        hint="use the hash `kubeboot init` printed (or recompute it from /etc/kubernetes/pki/ca.crt)")
    verified = _client(endpoint, ca_pem)
    again = _read_cluster_info(verified)
    if again.get("kubeconfig") != content:
        raise JoinError("cluster-info changed between the unverified and the verified read")
    return Discovered(server, ca_pem, content)


def token_api(server: str, token: BootstrapToken, ca_pem: bytes) -> k8s.ApiClient:
    """A client authenticated with the bootstrap token, verifying the discovered CA."""
    return _client(server.removeprefix("https://"), ca_pem, str(token))


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


