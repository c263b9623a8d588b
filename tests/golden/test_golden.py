"""Golden: the example inventory renders to the reviewed tree under tests/golden/example/.

Every file is compared except what must differ between runs: key material, serials and times. Certificates
are compared by a description (subject, issuer, SANs, usages, validity length, key type), kubeconfigs with
their embedded data replaced by such descriptions. Regenerate after a deliberate change with
`KUBEBOOT_UPDATE_GOLDEN=1 pytest tests/golden` and review the diff.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import yaml
from cryptography import x509

from kubeboot.pki.certs import alt_names_of, is_ca, subject_cn, subject_orgs, usages_of
from kubeboot.pki.keys import key_algorithm_of, load_private_key
from tests.conftest import EXAMPLE, KeyPool

GOLDEN = Path(__file__).resolve().parent / "example"


def describe_cert(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    alt = alt_names_of(cert)
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    alg = key_algorithm_of(cert.public_key())  # type: ignore[arg-type]
    return "\n".join([
        f"certificate CN={subject_cn(cert)} O={','.join(subject_orgs(cert)) or '-'}",
        f"issuer {cert.issuer.rfc4514_string()}",
        f"ca {is_ca(cert)}",
        f"usages {','.join(sorted(u._name for u in usages_of(cert))) or '-'}",
        f"dns {','.join(alt.dns) or '-'}",
        f"ips {','.join(str(i) for i in alt.ips) or '-'}",
        f"validity {days} days",
        f"key {alg.value if alg else '?'}",
    ]) + "\n"


def normalize(path: str, content: bytes) -> str:
    if path.endswith(".crt"):
        return describe_cert(content)
    if path.endswith(".key"):
        alg = key_algorithm_of(load_private_key(content))
        return f"private key {alg.value if alg else '?'}\n"
    if path.endswith("sa.pub"):
        return "public key\n"
    if path.endswith(".conf") and path.startswith("/etc/kubernetes/"):
        doc = yaml.safe_load(content)
        for c in doc["clusters"]:
            c["cluster"]["certificate-authority-data"] = describe_cert(
                base64.b64decode(c["cluster"]["certificate-authority-data"])).splitlines()[0]
        for u in doc["users"]:
            user = u["user"]
            if "client-certificate-data" in user:
                user["client-certificate-data"] = describe_cert(base64.b64decode(user["client-certificate-data"]))
                user["client-key-data"] = "<private key>"
            if "token" in user:
                user["token"] = "<bootstrap token>"
        return yaml.safe_dump(doc, sort_keys=False)
    return content.decode()


def render_normalized(tmp: Path) -> dict[str, str]:
    from kubeboot.offline import render

    inv = tmp / "inventory.yaml"
    inv.write_text(EXAMPLE.read_text())
    result = render(inv, tmp / "state", keygen=KeyPool())
    files: dict[str, str] = {}
    modes: list[str] = []
    for host, arts in result.hosts.items():
        for a in arts:
            files[f"{host}{a.path}"] = normalize(a.path, a.content)
            modes.append(f"{a.mode:04o} {host}{a.path}")
    files["MODES"] = "\n".join(modes) + "\n"
    return files


def test_example_renders_to_the_reviewed_tree(tmp_path: Path) -> None:
    files = render_normalized(tmp_path)
    if os.environ.get("KUBEBOOT_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, text in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
    expected = {p.relative_to(GOLDEN).as_posix(): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(expected), "file set differs from tests/golden/example"
    for rel in sorted(files):
        assert files[rel] == expected[rel], f"{rel} differs from the golden copy"
