"""The Helm chart, rendered by Helm's own Go engine (helm-python-sdk) and validated against the Kubernetes schemas."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from c4.cli import build_parser
from c4.collector.auth import check_server_security
from c4.config import Config

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "c4"
KUBE_VERSION = "1.30.0"
HAS_UI = importlib.util.find_spec("c4.ui.cli") is not None
SECURE = {"tls": {"secretName": "c4-tls"}, "tokens": {"secretName": "c4-tokens"}}
CASES = {
    "insecure": {"insecure": True},
    "tls+tokens": SECURE,
    "mtls, no kmsg, hostPath spool": {
        "tls": {"secretName": "c4-tls", "clientSecretName": "c4-agent-tls"},
        "tokens": {"secretName": "c4-tokens"},
        "agent": {"kmsg": False, "spoolHostPath": "/var/lib/c4/spool"},
    },
    "ui with OIDC login": {**SECURE, "ui": {"auth": {"secretName": "c4-ui-auth"}}},
    "no ui, external collector": {
        **SECURE,
        "ui": {"enabled": False},
        "collector": {"address": "c4.example.org:443"},
    },
}


def render(values: dict, name: str = "c4", namespace: str = "monitoring") -> dict[str, list[dict]]:
    """kind -> rendered documents."""
    with helm.Chart.load(str(CHART)) as chart:
        merged = chart.merge_values(values)
        chart.validate_schema(merged)
        out = chart.render(merged, name=name, namespace=namespace, is_install=True)
    docs: dict[str, list[dict]] = {}
    for path, text in out.items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.setdefault(doc["kind"], []).append(doc)
    return docs


def one(docs: dict, kind: str, component: str | None = None) -> dict:
    found = [
        d
        for d in docs.get(kind, [])
        if component is None or d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"{kind}/{component}: {len(found)} documents"
    return found[0]


def mounts(pod: dict, container: str) -> dict[str, dict]:
    c = next(c for c in pod["containers"] if c["name"] == container)
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volume(pod: dict, name: str) -> dict:
    return next(v for v in pod["volumes"] if v["name"] == name)


def test_chart_lints_clean():
    report = helm.lint(str(CHART), {"insecure": True}, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_the_chart_refuses_to_render_without_tls_and_tokens():
    with pytest.raises(helm.HelmRenderError, match="tls.secretName is empty"):
        render({})
    with pytest.raises(helm.HelmRenderError, match="tokens.secretName is empty"):
        render({"tls": {"secretName": "c4-tls"}})
    # mutual TLS is no substitute: the agent pods share one certificate, which names one node
    with pytest.raises(helm.HelmRenderError, match="tokens.secretName is empty"):
        render({"tls": {"secretName": "c4-tls", "clientSecretName": "c4-agent-tls"}})
    with pytest.raises(helm.HelmError):  # values.schema.json: a port is a number
        render({"insecure": True, "collector": {"port": "grpc"}})


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_are_valid_kubernetes(case):
    values = CASES[case]
    docs = render(values)
    for kind_docs in docs.values():
        for doc in kind_docs:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    want = {"ConfigMap", "DaemonSet", "StatefulSet", "Service"} | (
        {"Deployment"} if values.get("ui", {}).get("enabled", True) else set()
    )
    assert want <= set(docs)

    # selectors select the pod templates; Services select the pods they front
    pods, claims = {}, {}
    for kind in ("DaemonSet", "StatefulSet", "Deployment"):
        for w in docs.get(kind, []):
            sel = w["spec"]["selector"]["matchLabels"]
            labels = w["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= labels.items(), f"{kind} selector does not match its pods"
            comp = w["metadata"]["labels"]["app.kubernetes.io/component"]
            pods[comp] = w["spec"]["template"]
            claims[comp] = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    for svc in docs["Service"]:
        comp = svc["spec"]["selector"]["app.kubernetes.io/component"]
        assert svc["spec"]["selector"].items() <= pods[comp]["metadata"]["labels"].items()
        for port in svc["spec"]["ports"]:
            named = {p["name"] for c in pods[comp]["spec"]["containers"] for p in c.get("ports", [])}
            assert port.get("targetPort", port["port"]) in named | {port["port"]}

    # every container's command line parses with the real c4 CLI; every volume mount has a volume
    for comp, pod in pods.items():
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        names = {v["name"] for v in spec["volumes"]} | claims[comp]
        for c in spec["containers"]:
            if c["args"][0] != "ui" or HAS_UI:
                build_parser().parse_args(c["args"])
            assert {m["name"] for m in c["volumeMounts"]} <= names
            assert c["resources"]["limits"]["memory"]

    # the ConfigMap holds configs the real loader accepts, and a collector that would start
    cm = one(docs, "ConfigMap")["data"]
    for key in ("collector.toml", "agent.toml", "ui.toml"):
        Config.model_validate(tomllib.loads(cm[key]))
    collector_cfg = Config.model_validate(tomllib.loads(cm["collector.toml"])).collector
    check_server_security(collector_cfg)
    agent_cfg = Config.model_validate(tomllib.loads(cm["agent.toml"])).agent
    assert agent_cfg.collector == (
        values.get("collector", {}).get("address") or "c4-collector.monitoring.svc:7070"
    )
    assert agent_cfg.samplers["nic"]["sysfs_root"] == "/host/sys"

    # collector: a StatefulSet with its data volume, non-root, probed, and scraped
    sts = one(docs, "StatefulSet")
    cpod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert mounts(cpod, "collector")["/var/lib/c4/data"]["name"] == "data"
    assert collector_cfg.db.parent == Path("/var/lib/c4/data")
    assert cpod["securityContext"]["runAsNonRoot"] is True and cpod["securityContext"]["runAsUser"] != 0
    cc = cpod["containers"][0]
    assert (
        cc["securityContext"]["readOnlyRootFilesystem"]
        and not cc["securityContext"]["allowPrivilegeEscalation"]
    )
    assert cc["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(cc)
    svc = next(s for s in docs["Service"] if s["metadata"]["name"] == "c4-collector")
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(
        collector_cfg.metrics_listen.rsplit(":", 1)[1]
    )

    # agent: host /sys and the kernel log read-only, node and job from the downward API
    ds = one(docs, "DaemonSet")
    apod = ds["spec"]["template"]["spec"]
    am = mounts(apod, "agent")
    assert am["/host/sys"]["readOnly"] is True and volume(apod, "host-sys")["hostPath"]["path"] == "/sys"
    for path, m in am.items():
        vol = volume(apod, m["name"])
        if "hostPath" in vol and path != "/var/lib/c4/spool":
            assert m.get("readOnly") is True, f"host path {vol['hostPath']['path']} mounted writable"
        if "secret" in vol or "configMap" in vol:
            assert m.get("readOnly") is True
    env = {e["name"]: e for e in apod["containers"][0]["env"]}
    assert env["C4_AGENT_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['c4.io/job']"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    asc = apod["containers"][0]["securityContext"]
    assert asc["readOnlyRootFilesystem"] is True
    if values.get("agent", {}).get("kmsg", True):
        assert am["/dev/kmsg"]["readOnly"] is True
        assert volume(apod, "kmsg")["hostPath"] == {"path": "/dev/kmsg", "type": "CharDevice"}
        assert agent_cfg.samplers["xid_kmsg"]["kmsg_path"] == "/dev/kmsg"
    else:
        assert "/dev/kmsg" not in am and "xid_kmsg" not in agent_cfg.samplers
        assert apod["securityContext"]["runAsNonRoot"] is True and "privileged" not in asc
        assert asc["capabilities"]["drop"] == ["ALL"] and asc["allowPrivilegeEscalation"] is False
    assert apod["runtimeClassName"] == "nvidia"

    # TLS and tokens reach the right places: agents get the CA and their token, never the server key
    if "tls" in values:
        assert collector_cfg.tls_cert == "/etc/c4/tls/tls.crt" and agent_cfg.tls_ca == "/etc/c4/tls/ca.crt"
        assert [i["key"] for i in volume(apod, "tls")["secret"]["items"]] == ["ca.crt"]
        assert am["/etc/c4/tls"]["readOnly"] is True
    if values.get("tls", {}).get("clientSecretName"):
        assert collector_cfg.tls_client_ca == "/etc/c4/tls/ca.crt" and agent_cfg.tls_cert
    if "tokens" in values:
        assert collector_cfg.tokens_file == "/etc/c4/tokens/tokens" and agent_cfg.token_file.endswith(
            "agent.token"
        )
        assert [i["key"] for i in volume(apod, "tokens")["secret"]["items"]] == ["agent.token"]
    else:
        assert not agent_cfg.token_file

    # the dashboard: non-root, probed, reads with the reader token only
    if "ui" in pods:
        upod = pods["ui"]["spec"]
        assert upod["securityContext"]["runAsNonRoot"] is True
        uc = upod["containers"][0]
        assert uc["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
        assert {e["name"]: e["value"] for e in uc["env"]}["C4_CONFIG"] == "/etc/c4/ui.toml"
        ui_cfg = Config.model_validate(tomllib.loads(cm["ui.toml"])).query
        if "tokens" in values:
            assert ui_cfg.token_file == "/etc/c4/tokens/reader.token"
            assert [i["key"] for i in volume(upod, "tokens")["secret"]["items"]] == ["reader.token"]

    # the dashboard's OIDC settings: mounted read-only from their Secret and passed to `c4 ui --auth`
    if "ui" in pods:
        upod = pods["ui"]["spec"]
        args = upod["containers"][0]["args"]
        if values.get("ui", {}).get("auth", {}).get("secretName"):
            path = Path(args[args.index("--auth") + 1])
            assert mounts(upod, "ui")[str(path.parent)]["readOnly"] is True
            assert volume(upod, "ui-auth")["secret"] == {
                "secretName": "c4-ui-auth",
                "items": [{"key": "auth.toml", "path": path.name}],
            }
        else:
            assert "--auth" not in args
