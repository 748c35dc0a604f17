"""``mailfarm import FILE.csv``: bulk creation that is safe to run again."""

from __future__ import annotations

from pathlib import Path

from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    HOSTS,
    Admin,
    backend_login,
)

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture


def test_import_twice_creates_each_user_once(
    farm,
    admin: Admin,
    domain: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text(
        "address,password,host\n"
        f"one@{domain},pw one,{HOSTS[1]}\n"
        f'two@{domain},"pw, with comma"\n'
        "\n"
        f"# a comment\nthree@{domain},pw3\n"
    )
    first = admin.ok("import", str(csv))
    assert (first["created"], first["skipped"], first["failed"]) == (3, 0, 0)
    assert [r["status"] for r in first["rows"]] == ["created"] * 3
    assert first["rows"][0]["host"] == HOSTS[1]
    second = admin.ok("import", str(csv))
    assert (second["created"], second["skipped"], second["failed"]) == (0, 3, 0)
    users = admin.ok("user", "list", "--domain", domain)["users"]
    assert sorted(u["mail"] for u in users) == [f"{n}@{domain}" for n in ("one", "three", "two")]
    two = next(u for u in users if u["mail"] == f"two@{domain}")
    client = backend_login(farm, two["mailHost"], two["uid"], "pw, with comma")
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    assert "pw one" not in (admin.run("import", str(csv)).stdout)  # never echoed


def test_bad_rows_fail_alone(admin: Admin, domain: str, tmp_path: Path) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text(
        f"good@{domain},pw\n"
        "not-an-address,pw\n"
        f"nopassword@{domain}\n"
        f"good@{domain},pw\n"
        "someone@no-such-domain.test,pw\n"
    )
    result = admin.run("import", str(csv), "--json")
    assert result.code == 2, result  # the worst failure: a malformed row
    data = result.json
    assert [r["status"] for r in data["rows"]] == [
        "created", "failed", "failed", "failed", "failed",
    ]  # fmt: skip
    errors = [r.get("error", "") for r in data["rows"]]
    assert "not a mail address" in errors[1]
    assert "address,password" in errors[2]
    assert "twice" in errors[3]
    assert "does not exist" in errors[4]
    missing = admin.run("import", str(tmp_path / "nothere.csv"))
    assert missing.code == 2 and "nothere.csv" in missing.stderr
