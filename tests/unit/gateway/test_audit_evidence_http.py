"""Evidence over HTTP: an officer or auditor without host access asks the audit search for proofs and
hands the answer, saved as it came, to audit.md's check_evidence.py, which knows nothing of Courier
Guard. The search answered records only, the head route another format than the script reads (hex
signature, RFC 3339 time, other names), and the proofs took one request per entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import World

DOCS = Path(__file__).resolve().parents[3] / "docs"
W1 = "YT0000000000001"
# The script run as an outsider would: isolated from PYTHONPATH, and with courierguard blocked even
# where the virtualenv holds it (an editable install), so it can use nothing of the service.
OUTSIDER = (
    "import runpy, sys; sys.modules['courierguard'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _script(folder: Path) -> Path:
    text = (DOCS / "audit.md").read_text(encoding="utf-8")
    script = text.split("```python\n# check_evidence.py", 1)[1].split("```", 1)[0]
    path = folder / "check_evidence.py"
    path.write_text("# check_evidence.py" + script, encoding="utf-8")
    return path


def _check(folder: Path, key: str, *files: str) -> subprocess.CompletedProcess[str]:
    run = [sys.executable, "-I", "-c", OUTSIDER, str(_script(folder)), key, *files]
    return subprocess.run(run, check=False, cwd=folder, capture_output=True, text=True, timeout=60)


def _search(world: World, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = world.client.post("/v1/audit/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_an_officer_hands_over_a_search_with_proofs_that_the_script_checks(
    world: World, tmp_path: Path
) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    c1, x1 = world.login("C1"), world.login("X1")
    for _ in range(3):
        r = world.client.post(
            f"/v1/waybills/{W1}/reveal",
            json={"fields": ["recipient.phone"], "purpose": "delivery_contact"},
            headers=c1,
        )
        assert r.status_code == 200, r.text
    key = world.deployment.core.keys.signer().public_key.hex()  # pinned, handed over out of band
    evidence = _search(world, x1, {"waybills": [W1], "proofs": True})
    records = evidence["records"]
    reveals = [r for r in records if r["body"].get("action") == "waybill.reveal"]
    assert len(reveals) == 3 and all("proof" in r for r in records)
    head = evidence["head"]
    assert set(head) >= {"size", "root", "timestamp_ms", "signature"}
    assert {r["proof_tree_size"] for r in records} == {head["size"]}
    (tmp_path / "evidence.json").write_text(json.dumps(evidence, ensure_ascii=False), encoding="utf-8")
    ok = _check(tmp_path, key, "evidence.json")
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: {len(records)} entries"), ok.stderr
    # The search was recorded as before, proofs or not.
    searches = [b for b in world.access_events() if str(b.get("purpose", "")).startswith("audit.search")]
    assert [s["actor"]["id"] for s in searches] == ["X1"]

    # An entry edited after it left the service: the script fails.
    tampered = json.loads(json.dumps(evidence))
    tampered["records"][-1]["body"]["purpose"] = "investigation"
    (tmp_path / "tampered.json").write_text(json.dumps(tampered, ensure_ascii=False), encoding="utf-8")
    bad = _check(tmp_path, key, "tampered.json")
    assert bad.returncode == 1 and "is not what was logged" in bad.stderr
    # Signed by another key: fails too.
    assert _check(tmp_path, "00" * 31 + "01", "evidence.json").returncode == 1


def test_proofs_in_a_head_the_analyst_already_holds(world: World, tmp_path: Path) -> None:
    world.step(W1, "out_for_delivery", assignee="C1")
    x1 = world.login("X1")
    first = _search(world, x1, {"waybills": [W1], "proofs": True})
    held = first["head"]
    world.step(W1, "delivered", assignee="C1")  # the trail moves on
    later = _search(world, x1, {"waybills": [W1], "proofs": True, "head_size": held["size"]})
    assert later["head"]["size"] == held["size"] and later["head"]["root"] == held["root"]
    proven = [r for r in later["records"] if "proof" in r]
    assert proven and all(r["proof_tree_size"] == held["size"] for r in proven)
    (tmp_path / "held.json").write_text(json.dumps(held), encoding="utf-8")
    (tmp_path / "later.json").write_text(
        json.dumps({"records": proven}, ensure_ascii=False), encoding="utf-8"
    )
    key = world.deployment.core.keys.signer().public_key.hex()
    ok = _check(tmp_path, key, "held.json", "later.json")
    assert ok.returncode == 0, ok.stderr
    # An entry appended after the held head has no proof in it: evidence that does not prove
    # every entry it holds fails, naming the entry.
    unproven = [r for r in later["records"] if "proof" not in r]
    assert unproven
    (tmp_path / "partial.json").write_text(json.dumps(later, ensure_ascii=False), encoding="utf-8")
    partial = _check(tmp_path, key, "partial.json")
    assert partial.returncode == 1 and f"entry {unproven[0]['index']} has no proof" in partial.stderr


def test_head_size_without_proofs_and_an_unknown_head_are_refused(world: World) -> None:
    x1 = world.login("X1")
    r = world.client.post("/v1/audit/search", json={"waybills": [W1], "head_size": 3}, headers=x1)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = world.client.post(
        "/v1/audit/search", json={"waybills": [W1], "proofs": True, "head_size": 10**9}, headers=x1
    )
    assert r.status_code == 422 and "head_size" in r.text
    plain = _search(world, x1, {"waybills": [W1]})
    assert "head" not in plain and all("proof" not in r for r in plain["records"])


def test_who_may_not_search_gets_no_evidence(world: World) -> None:
    c1 = world.login("C1")
    r = world.client.post("/v1/audit/search", json={"waybills": [W1], "proofs": True}, headers=c1)
    assert r.status_code == 403 and "proof" not in r.text


def test_a_phone_search_that_finds_nothing_is_still_an_evidence_file(world: World, tmp_path: Path) -> None:
    """'This phone appears nowhere on the trail' is evidence too: the answer names the head it was
    searched under, and the script checks it (it failed with a TypeError: the answer had no head)."""
    x1 = world.login("X1")
    evidence = _search(world, x1, {"phone": "+8613900000000", "proofs": True})
    assert evidence["records"] == [] and evidence["head"]["size"] > 0
    (tmp_path / "none.json").write_text(json.dumps(evidence), encoding="utf-8")
    key = world.deployment.core.keys.signer().public_key.hex()
    ok = _check(tmp_path, key, "none.json")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 0 entries"), (ok.stdout, ok.stderr)
