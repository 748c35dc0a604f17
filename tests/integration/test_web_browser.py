"""The console in a real browser (Debian's chromium, headless, via chromium-driver), as the
help desk, an admin and a customer's domain admin use it; a screenshot of every step goes
to artifacts/screenshots/.

Each flow checks the farm itself afterwards (an IMAP login through the proxy, a backend's
mailbox, named-checkzone on the exported zone), not only what the page says.
"""

from __future__ import annotations

import imaplib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import Connection, Server
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from bench.farm import Farm
from tests.integration import provision_helpers as helpers
from tests.integration.browser import Browser
from tests.integration.console_helpers import ConsoleFarm, console
from tests.integration.provision_helpers import (
    HOSTS,
    Admin,
    backend_login,
    fill_mailbox,
    make_messages,
)

admin = helpers.admin  # fixtures
console = console
SOURCE, TARGET = HOSTS


@pytest.fixture(scope="module")
def browser(console: ConsoleFarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = Browser(console.web.url, tmp_path_factory.mktemp("chromium-profile"))
    yield started
    started.quit()


@pytest.fixture
def fresh(browser: Browser) -> Browser:
    """Signed out: no cookie from the flow before."""
    browser.open("/console/signin")
    browser.driver.delete_all_cookies()
    return browser


def imap_refused(console: ConsoleFarm, login: str, password: str) -> bool:
    try:
        console.imap(login, password).logout()
    except imaplib.IMAP4.error:
        return True
    return False


def wait_for(browser: Browser, css: str, text: str, seconds: float = 120) -> None:
    """Until ``css`` shows ``text``, across the page's own refreshes."""

    def shows(_: object) -> bool:
        try:
            return text in browser.find(css).text
        except WebDriverException:  # between two refreshes
            return False

    WebDriverWait(browser.driver, seconds, poll_frequency=0.2).until(shows)


def test_help_desk_flow(fresh: Browser, console: ConsoleFarm, admin: Admin) -> None:
    b = fresh
    b.sign_in("hal", "hal-pw")
    assert "hal (helpdesk)" in b.text("#me")
    wait_for(b, "#backends", "up")
    b.shot("helpdesk-01-dashboard")

    # A domain by just a few clicks.
    domain = f"desk-{secrets.token_hex(3)}.co.uk"
    b.open("/console/domains")
    b.fill("#domain-name", domain)
    b.submit("#add-domain-button")
    assert f"Domain {domain} added." in b.text()
    assert b.path == f"/console/domains/{domain}/users"
    b.shot("helpdesk-02-domain-added")

    # A user, who then logs in through mailfarm's IMAP proxy with that password.
    address, first, second = f"bob@{domain}", "first-Pw-1", "second-Pw-2"
    b.fill("#new-address", "bob")
    b.fill("#new-password", first)
    Select(b.find("#new-host")).select_by_value(SOURCE)
    b.submit("#add-user-button")
    assert f"User {address} added on {SOURCE}." in b.text()
    b.shot("helpdesk-03-user-added")
    console.imap(address, first).logout()

    # Reset the password: the old one is refused at once, the new one works.
    b.fill("#reset-password", second)
    b.submit("#reset-button")
    assert "Password changed." in b.text()
    b.shot("helpdesk-04-password-reset")
    assert imap_refused(console, address, first)
    console.imap(address, second).logout()

    # Move the user to another backend and watch the progress reach 100 %.
    uid = b.text("#user-facts").split("uid ", 1)[1].split()[0]
    fill_mailbox(admin.settings, SOURCE, uid, {"INBOX": make_messages("INBOX", 40, seed=5)})
    Select(b.find("#move-to")).select_by_value(TARGET)
    b.submit("#move-button")
    assert b.path.startswith("/console/jobs/")
    b.shot("helpdesk-05-move-started")
    wait_for(b, "#job-percent", "100 %")
    wait_for(b, "#job-state", "done")
    assert f"to {TARGET}: 40 messages" in b.text("#job-result")
    b.shot("helpdesk-06-move-done")
    session = console.imap(address, second)
    assert session.select("INBOX") == ("OK", [b"40"])
    backend_login(admin.farm, TARGET, uid, second).logout()

    # Kick the session from the sessions page.
    b.open("/console/sessions")
    rows = [r for r in b.all("#sessions tr.session") if address in r.text]
    assert rows, b.text("#sessions")
    assert TARGET in rows[0].text
    b.shot("helpdesk-07-sessions")
    b.click(rows[0].find_element(By.CSS_SELECTOR, "button.kick"))
    assert f"Sessions of {address} kicked." in b.text()
    b.shot("helpdesk-08-kicked")
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        session.noop()
        session.noop()

    # The help desk may not delete domains: the page does not offer it, the server refuses.
    b.open(f"/console/domains/{domain}/users")
    assert "Delete domain" not in b.text()
    admin.run("domain", "del", domain, "--force")


def test_admin_edits_mx_and_deletes_a_domain(
    fresh: Browser, console: ConsoleFarm, admin: Admin, tmp_path: Path
) -> None:
    b = fresh
    domain = f"dns-{secrets.token_hex(3)}.test"
    admin.ok("domain", "add", domain)
    b.sign_in("ada", "ada-pw")
    b.open(f"/console/domains/{domain}/dns")
    serial = int(b.text("#soa-serial"))
    zone_before = b.text("#zone")
    b.shot("admin-01-dns")
    row = next(r for r in b.all("#records tr") if " MX " in f" {r.text} ")
    field = row.find_element(By.CSS_SELECTOR, "input.edit-value")
    field.clear()
    field.send_keys(f"20 mx2.{domain}")
    b.click(row.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "MX record at @ changed" in b.text()
    zone = b.text("#zone")
    assert zone != zone_before and f"20 mx2.{domain}." in zone
    assert "mx1.mailfarm.test" not in zone.split("MX", 1)[1].split("\n", 1)[0]
    assert int(b.text("#soa-serial")) > serial
    b.shot("admin-02-mx-edited")
    zone_file = tmp_path / f"{domain}.zone"
    zone_file.write_text(zone + "\n")
    checked = subprocess.run(
        ["named-checkzone", domain, str(zone_file)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # An invalid value: a clear error, the typed value still in its field.
    row = next(r for r in b.all("#records tr") if " MX " in f" {r.text} ")
    field = row.find_element(By.CSS_SELECTOR, "input.edit-value")
    field.clear()
    field.send_keys("not an mx")
    b.click(row.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert b.find("#error").text
    assert any(
        f.get_attribute("value") == "not an mx" for f in b.all("#records input.edit-value")
    )
    b.shot("admin-03-mx-invalid")

    # Deleting a domain takes its name typed again.
    b.open(f"/console/domains/{domain}/delete")
    b.fill("#confirm", "wrong.test")
    b.submit("#delete-domain-button")
    assert "Type the domain's name" in b.text("#error")
    b.shot("admin-04-delete-unconfirmed")
    b.fill("#confirm", domain)
    b.submit("#delete-domain-button")
    assert f"Domain {domain} deleted" in b.text()
    assert domain not in b.text("#domains")
    b.shot("admin-05-domain-deleted")


def test_domain_admin_sees_only_its_domain(fresh: Browser, farm: Farm) -> None:
    b = fresh
    b.sign_in("dora", "dora-pw")
    assert b.path == "/console/domains"  # no dashboard for a customer
    listed = [a.text for a in b.all("#domains a[href$='/users']")]
    assert listed == ["example.co.uk"]
    b.shot("domain-admin-01-own-domains")
    other = next(u for u in farm.users if u.address.endswith("@example.com"))
    for path in (
        "/console/domains/example.com/users",
        "/console/domains/example.com/dns",
        f"/console/users/{other.address}",
    ):
        b.open(path)
        assert "no such" in b.text("#error")
        assert other.backend not in b.text()
    b.shot("domain-admin-02-other-domain-refused")
    own = next(u for u in farm.users if u.address.endswith("@example.co.uk"))
    b.open(f"/console/users/{own.address}")
    assert own.address in b.text("#user-facts")
    assert not b.all("#move-form")  # a customer does not choose backends
    b.shot("domain-admin-03-own-user")


def test_markup_renders_as_text(fresh: Browser, farm: Farm) -> None:
    marked = "<script>alert(1)</script><b>bold</b>"
    dn = f"dc={marked},ou=domains,{farm.base_dn}"
    ldap = Connection(Server(farm.ldap_uri), farm.admin_dn, farm.admin_password, auto_bind=True)
    assert ldap.add(dn, ["dNSDomain", "domainRelatedObject"], {"associatedDomain": "y.invalid"})
    try:
        b = fresh
        b.sign_in("ada", "ada-pw")
        b.open("/console/domains")
        names = [a.text for a in b.all("#domains a[href$='/users']")]
        assert marked.lower() in names
        assert not b.all("#domains b")  # no element made from the name
        with pytest.raises(NoAlertPresentException):
            _ = b.driver.switch_to.alert.text
        b.shot("escaping-01-markup-domain")
    finally:
        ldap.delete(dn)
        ldap.unbind()
