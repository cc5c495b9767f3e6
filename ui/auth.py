"""Dashboard login: Streamlit's OpenID Connect (``st.login``) when the secrets hold an ``[auth]`` section.

Who may use the dashboard is then decided from the identity provider's ``email`` claim and the
optional ``[c4]`` section of the same file (``allowed_emails``, ``allowed_domains``); with neither
list every signed-in user is let in. Without ``[auth]`` there is no login of its own: the dashboard
listens on loopback and an authenticating reverse proxy publishes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st


def auth_configured() -> bool:
    """True when Streamlit's secrets configure an OIDC provider."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def email_allowed(
    email: str, allowed_emails: Sequence[str] = (), allowed_domains: Sequence[str] = ()
) -> bool:
    """Whether a signed-in user's email passes the lists (both empty: everyone; no email: nobody listed)."""
    if not allowed_emails and not allowed_domains:
        return True
    email = (email or "").strip().lower()
    if not email or "@" not in email:
        return False
    if email in {e.strip().lower() for e in allowed_emails}:
        return True
    domain = email.rpartition("@")[2]
    return domain in {d.strip().lower().lstrip("@") for d in allowed_domains}


def _policy() -> Mapping:
    try:
        return st.secrets.get("c4", {})
    except Exception:
        return {}


def require_login() -> None:
    """Stop the script with a login screen until an allowed user is signed in (no-op without [auth])."""
    if not auth_configured():
        return
    if not st.user.is_logged_in:
        st.title("C4")
        st.write("Sign in with your organisation's account to see the cluster's faults and bandwidth.")
        st.button("Log in", type="primary", on_click=st.login)
        st.stop()
    email = str(st.user.get("email") or "")
    policy = _policy()
    if not email_allowed(email, policy.get("allowed_emails", ()), policy.get("allowed_domains", ())):
        st.title("C4")
        st.error(f"{email or 'This account'} may not use this dashboard. Ask its operators to add you.")
        st.button("Log out", on_click=st.logout)
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {email or st.user.get('sub', 'unknown')}")
        st.button("Log out", on_click=st.logout)
