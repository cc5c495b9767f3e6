"""Dashboard login through OpenID Connect: a real OIDC provider on loopback, `c4 ui --auth`, chromium.

The provider is oidc-provider-mock (a complete OIDC server for tests: discovery, authorize form,
token and userinfo endpoints); Streamlit's own st.login does the code flow against it.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from test_ui_browser import ARTIFACTS, browser, wait_http_ok  # noqa: F401  (browser is a fixture)
from testkit.procs import C4, free_port

from c4.ui.cli import check_auth_file


def auth_toml(ui_port: int, idp_port: int, extra: str = "", **overrides: str) -> str:
    """An [auth] section for a dashboard on ui_port and an OIDC provider on idp_port."""
    values = {
        "redirect_uri": f"http://localhost:{ui_port}/oauth2callback",
        "cookie_secret": secrets.token_hex(24),
        "client_id": "c4-dashboard",
        "client_secret": secrets.token_hex(16),
        "server_metadata_url": f"http://localhost:{idp_port}/.well-known/openid-configuration",
        **overrides,
    }
    return "[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items()) + extra


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 1\n", "no [auth] section"),
        (
            '[auth]\nclient_id = "x"\n',
            "lacks redirect_uri, cookie_secret, client_secret, server_metadata_url",
        ),
        (auth_toml(1, 2, redirect_uri="http://localhost:1/"), "redirect_uri must be"),
        (auth_toml(1, 2, cookie_secret="short"), "cookie_secret is too short"),
        (auth_toml(1, 2, extra='[c4]\nallowed_domains = "example.com"\n'), "must be a list of strings"),
        ("[auth\n", "not valid TOML"),
    ],
)
def test_bad_auth_file_is_refused_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_auth_file(str(path))
    out = subprocess.run(C4 + ["ui", "--auth", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message.split(" [")[0] in out.stderr


def test_email_policy():
    from c4.ui.auth import email_allowed

    assert email_allowed("anyone@anywhere.test")  # no lists: every signed-in user
    assert email_allowed("Alice@Example.com", allowed_domains=["example.com"])
    assert not email_allowed("alice@example.com.evil.test", allowed_domains=["example.com"])
    assert email_allowed("bob@partner.test", ["bob@partner.test"], ["example.com"])
    assert not email_allowed("", allowed_domains=["example.com"])


@pytest.fixture(scope="module")
def login_dashboard(filled_collector, tmp_path_factory):
    """An OIDC provider with two users and `c4 ui --auth` letting in example.com only."""
    from oidc_provider_mock import User, run_server_in_thread

    users = [
        User(sub="alice", claims={"email": "alice@example.com", "name": "Alice"}),
        User(sub="mallory", claims={"email": "mallory@evil.test", "name": "Mallory"}),
    ]
    work = tmp_path_factory.mktemp("ui-login")
    with run_server_in_thread(user_claims=users) as idp:
        ui_port = free_port()
        auth = work / "auth.toml"
        auth.write_text(auth_toml(ui_port, idp.server_port, '[c4]\nallowed_domains = ["example.com"]\n'))
        with open(work / "ui.log", "ab") as log:
            proc = subprocess.Popen(
                C4
                + [
                    "ui",
                    "--collector",
                    filled_collector.address,
                    "--port",
                    str(ui_port),
                    "--auth",
                    str(auth),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_http_ok(f"http://127.0.0.1:{ui_port}/_stcore/health")
            yield f"http://localhost:{ui_port}/", work / "ui.log"
        finally:
            proc.terminate()
            proc.wait(20)


def _settled(page) -> None:
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=30_000)
    page.wait_for_timeout(500)


def _sign_in(browser, url: str, sub: str, screenshot: Path) -> str:  # noqa: F811
    """A fresh browser session: the login screen, then the provider's form as ``sub``; the page text after."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    try:
        page.goto(url, wait_until="networkidle", timeout=60_000)
        _settled(page)
        text = page.locator('[data-testid="stApp"]').inner_text()
        assert "Log in" in text and "Active faults" not in text, f"no login screen first:\n{text}"
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/oauth2/authorize**", timeout=30_000)  # the provider's own page
        page.get_by_role("button", name=sub, exact=True).click()
        page.wait_for_url(url + "**", timeout=60_000)
        _settled(page)
        page.wait_for_timeout(1500)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        return page.locator('[data-testid="stApp"]').inner_text()
    finally:
        context.close()


def test_login_lets_an_allowed_user_in(browser, login_dashboard):  # noqa: F811
    url, log = login_dashboard
    text = _sign_in(browser, url, "alice", ARTIFACTS / "login-alice.png")
    assert "Signed in as alice@example.com" in text, f"{text}\n{log.read_text()[-3000:]}"
    assert "Active faults" in text and "Log out" in text


def test_login_refuses_a_user_outside_the_allowed_domains(browser, login_dashboard):  # noqa: F811
    url, _ = login_dashboard
    text = _sign_in(browser, url, "mallory", ARTIFACTS / "login-refused.png")
    assert "mallory@evil.test may not use this dashboard" in text
    assert "Active faults" not in text


def test_ui_warns_when_published_without_login(tmp_path):
    proc = subprocess.Popen(
        C4 + ["ui", "--address", "0.0.0.0", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "without a login" in line, line
    finally:
        proc.terminate()
        proc.wait(20)
