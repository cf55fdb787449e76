"""Case study: Azure Key Vault key rotation failures, run with the real Azure SDK's local crypto.

1. The rotation policy of ``infra/azure`` (read from the Terraform with python-hcl2) is replayed on
   a model of Key Vault's documented policy semantics next to the classic trap and its fix.
2. Data still needs a version that is disabled: envelopes wrapped by ``saip_encryption``'s Key
   Vault provider through ``CryptographyClient.from_jwk`` (the SDK's local crypto, no service),
   ``keys audit`` before and after, ``rewrap`` to the new version, then the disable is safe.
   Disabling and deleting a version are emulated as the service reports them (empty key
   operations, ``ResourceNotFoundError``); that emulation is labelled in the output.
3. The CMK identity of Event Hubs/Storage: what the Terraform grants, and the tests that hold it.
Output is deterministic: key material is random but never printed; version names are fixed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
VAULT = "https://case-study.vault.azure.net"
CTX = {"dataset": "training-data", "purpose": "case-study"}

# ------------------------------------------------------------------------------ 1. the policy


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _days(duration: str | None) -> int | None:
    if not duration:
        return None
    m = re.fullmatch(r"P(\d+)D", duration)
    if not m:
        raise ValueError(f"unsupported ISO 8601 duration {duration!r} (whole days only)")
    return int(m.group(1))


def terraform_policy() -> dict[str, Any]:
    """The rotation policy of ``azurerm_key_vault_key.this`` with variable defaults resolved."""
    import hcl2

    main = _clean(hcl2.load((ROOT / "infra/azure/main.tf").open()))
    vars_ = _clean(hcl2.load((ROOT / "infra/azure/variables.tf").open()))
    defaults: dict[str, str] = {}
    for entry in vars_.get("variable", []):
        for name, body in entry.items():
            for field, value in re.findall(
                r'(\w+)\s*=\s*optional\(string,\s*"([^"]+)"\)', str(body.get("type", ""))
            ):
                defaults[f"var.{name}.{field}"] = value
            if isinstance(body.get("default"), str):
                defaults[f"var.{name}"] = body["default"]

    def resolve(expr: Any) -> Any:
        if isinstance(expr, str):
            m = re.fullmatch(r"\$\{(var\.[\w.]+)\}", expr)
            if m:
                return defaults.get(m.group(1), expr)
        return expr

    for entry in main.get("resource", []):
        key = entry.get("azurerm_key_vault_key", {}).get("this")
        if key is None:
            continue
        (policy,) = key.get("rotation_policy", [{}])
        auto = (policy.get("automatic") or [{}])[0]
        return {
            "expiration_date_on_key": "expiration_date" in key,
            "expire_after": resolve(policy.get("expire_after")),
            "notify_before_expiry": resolve(policy.get("notify_before_expiry")),
            "time_after_creation": resolve(auto.get("time_after_creation")),
            "time_before_expiry": resolve(auto.get("time_before_expiry")),
        }
    raise RuntimeError("azurerm_key_vault_key.this not found in infra/azure/main.tf")


def simulate(policy: dict[str, Any], horizon: int = 1095) -> list[str]:
    """Replay a rotation policy over ``horizon`` days on a MODEL of Key Vault's documented
    semantics (Key Vault key rotation policy: ``lifetimeActions`` Rotate/Notify triggered by
    ``timeAfterCreate`` or ``timeBeforeExpiry``; ``expiryTime`` applies to versions the policy
    creates). The first version is the one Terraform creates: it expires only if the key
    resource sets ``expiration_date`` (modelled as day 365)."""
    after = _days(policy.get("time_after_creation"))
    before = _days(policy.get("time_before_expiry"))
    notify = _days(policy.get("notify_before_expiry"))
    expire_after = _days(policy.get("expire_after"))
    events: list[str] = []
    created, expiry = 0, (365 if policy.get("expiration_date_on_key") else None)
    version = 1
    had_expiry = expiry is not None
    while True:
        rotate_at = None
        if after is not None:
            rotate_at = created + after
        elif before is not None and expiry is not None:
            rotate_at = expiry - before
        if (
            notify is not None
            and expiry is not None
            and expiry - notify <= horizon
            and (rotate_at is None or expiry - notify < rotate_at)
        ):
            events.append(f"day {expiry - notify:4}: Event Grid KeyNearExpiry for v{version}")
        if rotate_at is None or rotate_at > horizon:
            if expiry is not None and expiry <= horizon:
                events.append(f"day {expiry:4}: v{version} EXPIRES with no newer version")
            break
        version += 1
        events.append(f"day {rotate_at:4}: rotated, v{version} created")
        created = rotate_at
        expiry = created + expire_after if expire_after else None
        had_expiry |= expiry is not None
    if version == 1 and not any("EXPIRES" in e for e in events):
        events.append(f"day 0-{horizon}: the policy NEVER fires; v1 stays the only version")
    if not any("KeyNearExpiry" in e for e in events):
        events.append(
            "no KeyNearExpiry notice: every version is rotated before its notice window"
            if had_expiry
            else "no KeyNearExpiry notice is ever sent (no version has an expiry date)"
        )
    return events


TRAP = {
    "expiration_date_on_key": False,
    "expire_after": "P365D",
    "notify_before_expiry": "P29D",
    "time_after_creation": None,
    "time_before_expiry": "P30D",
}
NOTIFY_ONLY = {
    "expiration_date_on_key": True,
    "expire_after": "P365D",
    "notify_before_expiry": "P29D",
    "time_after_creation": None,
    "time_before_expiry": None,
}
FIXED = {
    "expiration_date_on_key": False,
    "expire_after": "P365D",
    "notify_before_expiry": "P29D",
    "time_after_creation": "P335D",
    "time_before_expiry": None,
}

# ------------------------------------------------------------------- 2. data needs a version


class LocalVault:
    """Versions of one key as JWKs, used through the real ``CryptographyClient.from_jwk``.

    EMULATED (not Key Vault): ``disable`` empties the version's key operations and ``delete``
    makes the resolver raise ``ResourceNotFoundError`` — the answers the service gives."""

    def __init__(self, name: str) -> None:
        self.key = f"{VAULT}/keys/{name}"
        self.versions: dict[str, Any] = {}
        self.disabled: set[str] = set()
        self.rotate()

    def rotate(self) -> str:
        from azure.keyvault.keys import JsonWebKey, KeyType
        from cryptography.hazmat.primitives.asymmetric import rsa

        kid = f"{self.key}/v{len(self.versions) + 1}"
        pn = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()

        def b(i: int) -> bytes:
            return i.to_bytes((i.bit_length() + 7) // 8, "big")

        self.versions[kid] = JsonWebKey(
            kid=kid,
            kty=KeyType.rsa,
            key_ops=["wrapKey", "unwrapKey"],
            n=b(pn.public_numbers.n),
            e=b(pn.public_numbers.e),
            d=b(pn.d),
            p=b(pn.p),
            q=b(pn.q),
            dp=b(pn.dmp1),
            dq=b(pn.dmq1),
            qi=b(pn.iqmp),
        )
        self.current = kid
        return kid

    def set_enabled(self, kid: str, enabled: bool) -> None:
        self.versions[kid].key_ops = ["wrapKey", "unwrapKey"] if enabled else []

    def client(self, key_id: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.keyvault.keys.crypto import CryptographyClient

        kid = self.current if key_id == self.key else key_id
        if kid not in self.versions:
            raise ResourceNotFoundError(f"A key with (name/id) {kid} was not found")
        return CryptographyClient.from_jwk(self.versions[kid])

    def provider(self) -> Any:
        from saip_encryption.providers import azure

        return azure.from_uri(f"azure-kv:{self.key}", client_for_version=self.client)


def header_signing() -> tuple[Any, Any]:
    """A Key Vault EC P-256 signing key through the SDK's local crypto, and its pinned verifier.

    RSA-OAEP wraps can be made by anyone holding the public key, so the envelope needs a header
    signature (ENC-16): ``(AzureKeyVaultSigner, HeaderVerifier)``."""
    from azure.keyvault.keys import JsonWebKey
    from azure.keyvault.keys.crypto import CryptographyClient
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from saip_encryption.signing import AzureKeyVaultSigner, HeaderVerifier

    priv = ec.generate_private_key(ec.SECP256R1())
    nums = priv.private_numbers()
    kid = f"{VAULT}/keys/header-signing/v1"
    jwk = JsonWebKey(
        kid=kid,
        kty="EC",
        crv="P-256",
        key_ops=["sign", "verify"],
        x=nums.public_numbers.x.to_bytes(32, "big"),
        y=nums.public_numbers.y.to_bytes(32, "big"),
        d=nums.private_value.to_bytes(32, "big"),
    )
    pem = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signer = AzureKeyVaultSigner(client=CryptographyClient.from_jwk(jwk))
    return signer, HeaderVerifier(scheme="azure-kv", key_id=kid, public_key=pem)


def _audit(root: Path) -> list[str]:
    from saip_encryption.rotation import audit

    report = audit([root])
    lines = [
        f"  {k.key.rsplit('/', 1)[-1]}/{k.version}: {len(k.files)} artifact(s)" for k in report.keys
    ]
    return sorted(lines) or ["  (no envelope depends on any key)"]


def data_needs_a_version(root: Path) -> list[str]:
    from saip_encryption import EnvelopeEncryptor
    from saip_encryption.errors import KeyProviderError
    from saip_encryption.rotation import rewrap_file

    out: list[str] = []
    vault = LocalVault("training-data")
    signer, verifier = header_signing()
    enc = EnvelopeEncryptor(vault.provider(), cache=False, signer=signer, verify_with=[verifier])
    plain = {f"snapshot-{i}.saip": bytes([i]) * 4096 for i in range(3)}
    for name, data in plain.items():
        (root / name).write_bytes(enc.encrypt(data, context=CTX))
    v1 = vault.current
    vault.rotate()
    (root / "snapshot-new.saip").write_bytes(enc.encrypt(b"new" * 1000, context=CTX))
    plain["snapshot-new.saip"] = b"new" * 1000
    out.append("3 snapshots written under v1, then the key rotated to v2 and 1 more written.")
    out.append("saip keys audit (headers only, no key used):")
    out.extend(_audit(root))

    out.append("")
    out.append("Mistake: v1 disabled now (EMULATED disable), 3 artifacts still need it:")
    vault.set_enabled(v1, False)
    for name in sorted(plain):
        try:
            enc.decrypt((root / name).read_bytes(), context=CTX)
            out.append(f"  {name}: decrypts")
        except KeyProviderError as exc:
            msg = str(exc).replace(VAULT, "<vault>")
            out.append(f"  {name}: KeyProviderError: {msg}")

    out.append("")
    out.append("Recovery: re-enable v1, rewrap onto v2 (header only), audit, then disable v1:")
    vault.set_enabled(v1, True)
    from saip_encryption.providers import azure

    v2_only = azure.from_uri(f"azure-kv:{vault.current}", client_for_version=vault.client)
    for name in sorted(plain):
        path = root / name
        before = path.read_bytes()
        rewrap_file(
            path, unwrap_with=[vault.provider()], wrap_with=[v2_only], verify_with=[verifier]
        )
        after = path.read_bytes()
        tail_same = before[-len(plain[name]) :] == after[-len(plain[name]) :]
        out.append(f"  rewrap {name}: payload bytes unchanged={tail_same}")
    out.extend(_audit(root))
    vault.set_enabled(v1, False)
    ok = all(enc.decrypt((root / n).read_bytes(), context=CTX) == d for n, d in plain.items())
    out.append(f"v1 disabled again: all {len(plain)} artifacts decrypt under v2: {ok}")
    return out


# ------------------------------------------------------------------------- 3. CMK identity


def cmk_identity() -> list[str]:
    import hcl2

    main = _clean(hcl2.load((ROOT / "infra/azure/main.tf").open()))
    res: dict[str, dict[str, Any]] = {}
    for entry in main.get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                res[f"{rtype}.{name}"] = body
    out = []
    cmk = res.get("azurerm_eventhub_namespace_customer_managed_key.this", {})
    out.append(f"Event Hubs CMK identity: {cmk.get('user_assigned_identity_id', '?')}")
    for addr, body in sorted(res.items()):
        if addr.startswith("azurerm_role_assignment.") and "cmk" in str(
            body.get("principal_id", "")
        ):
            out.append(f"{addr}: role {body.get('role_definition_name')!r} on {body.get('scope')}")
    storage = res.get("azurerm_storage_account.this", {})
    cmk_block = storage.get("customer_managed_key")
    out.append(
        f"storage account customer_managed_key block: {'present' if cmk_block else 'absent'}"
    )
    tests = [
        "tests/infra/test_infra_hcl.py::test_azure_event_hubs_namespace_secure",
        "tests/infra/test_infra_hcl.py::test_azure_roles_are_data_plane_and_scoped",
        "tests/infra/test_infra_hcl.py::test_azure_keys_rotate_and_are_hsm_backed",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    outcome = "all passed" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    out.append(f"Terraform HCL tests holding these settings ({len(tests)}): {outcome}")
    out.extend(f"  {t.split('::')[1]}" for t in tests)
    return out


def run() -> str:
    lines = ["== 1. Rotation policy: does it ever fire? (model of the documented semantics)"]
    tf = terraform_policy()
    shown = {k: v for k, v in tf.items() if v not in (None, False)}
    lines.append(
        "infra/azure as written: "
        + ", ".join(f"{k}={v}" for k, v in shown.items())
        + f", expiration_date on the key: {tf['expiration_date_on_key']}"
    )
    lines.extend(f"  {e}" for e in simulate(tf))
    lines.append("the trap (time_before_expiry, no expiration_date on the key):")
    lines.extend(f"  {e}" for e in simulate(TRAP))
    lines.append("expiration_date set on the key, Notify only (no automatic Rotate):")
    lines.extend(f"  {e}" for e in simulate(NOTIFY_ONLY))
    lines.append("the fix (time_after_creation P335D, expire_after P365D):")
    lines.extend(f"  {e}" for e in simulate(FIXED))
    lines.append("")
    lines.append("== 2. A disabled version still needed by data (real SDK local crypto)")
    with tempfile.TemporaryDirectory(prefix="saip-case-kv-") as tmp:
        lines.extend(data_needs_a_version(Path(tmp)))
    lines.append("")
    lines.append("== 3. The CMK identity of Event Hubs and Storage")
    lines.extend(cmk_identity())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(run())
