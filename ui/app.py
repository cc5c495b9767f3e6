"""The C4 dashboard: `streamlit run` this file (or `c4 ui --collector HOST:PORT`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from c4.ui.auth import require_login
from c4.ui.data import collector_address

HERE = Path(__file__).resolve().parent
#: (file under app_pages/, title, icon); the first is the default page.
PAGES = [
    ("overview.py", "Overview", ":material/dashboard:"),
    ("faults.py", "Faults", ":material/report:"),
    ("jobs.py", "Jobs", ":material/model_training:"),
    ("goodput.py", "Goodput", ":material/speed:"),
    ("bandwidth.py", "Bandwidth", ":material/network_check:"),
    ("collectives.py", "Collectives", ":material/grid_on:"),
    ("traffic.py", "Traffic", ":material/alt_route:"),
    ("sql.py", "SQL", ":material/terminal:"),
]


def main() -> None:
    """Set up the page and run the selected one."""
    st.set_page_config(page_title="C4", page_icon=":material/hub:", layout="wide")
    require_login()  # OIDC when configured: nothing below runs for a visitor who is not signed in
    pages = [
        st.Page(str(HERE / "app_pages" / f), title=t, icon=i, default=(k == 0))
        for k, (f, t, i) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    with st.sidebar:
        st.caption(f"Collector `{collector_address()}`")
        st.caption("Read-only: every panel is a SQL query over the collector's Query RPC.")
    nav.run()


main()
