"""Build the profiler plugin, its debug build, the empty baseline and the driver once per session."""

import pytest

from c4.agent.plugin_build import build_driver, build_empty, build_plugin


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin")
    return {
        "plugin": build_plugin(out),
        "debug": build_plugin(out / "debug", debug=True),
        "empty": build_empty(out),
        "driver": build_driver(out),
    }
