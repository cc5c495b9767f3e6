"""The shipped example config parses with the real loader and builds every sampler it names."""

from pathlib import Path

from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.config import AgentConfig, CollectorConfig, QueryConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "c4.toml"


def test_example_config_loads_and_matches_defaults():
    cfg = load_config(EXAMPLE, env={})
    samplers = build_samplers(cfg.agent, context_from(cfg.agent, env={}))
    assert {s.sampler.name for s in samplers} == set(cfg.agent.samplers)
    # the example documents the defaults: every key it sets equals the default, except samplers/node
    defaults_agent = AgentConfig().model_dump(exclude={"node", "samplers"})
    assert cfg.agent.model_dump(exclude={"node", "samplers"}) == defaults_agent
    assert cfg.collector.model_dump() == CollectorConfig().model_dump()
    assert cfg.query.model_dump() == QueryConfig().model_dump()


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    for key in (
        list(AgentConfig.model_fields) + list(CollectorConfig.model_fields) + list(QueryConfig.model_fields)
    ):
        assert f"{key} =" in text or f"# {key} =" in text or key == "samplers", f"{key} not documented"
