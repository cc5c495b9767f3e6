"""c4 plan against hostile input: unsafe names refused, scripts quoted, bad values exit 2 before anything is written."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from c4.cli import main
from c4.traffic.apply.launchers import k8s_script, slurm_script
from c4.traffic.apply.writer import ApplyError, file_stems, write_apply
from c4.traffic.collectives import Job, job_flows, load_job_yaml
from c4.traffic.names import is_host_name, is_job_name, is_label_value
from c4.traffic.planner import Planner
from c4.traffic.topology import Host, NicPort, Topology

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
LEAF_SPINE = str(EXAMPLES / "topology-leaf-spine.yaml")
MARK = "/pwned"

SPEC = """name: {name}
leaves: [{leaf}, leaf1]
spines: [spine0]
hosts:
  {host}: {{gpus: 2, nics: [[{{leaf: {leaf}, ip: 10.0.0.1}}]]}}
  h1: {{gpus: 2, nics: [[{{leaf: leaf1, ip: 10.0.0.2}}]]}}
links: [[{leaf}, spine0, 400], [leaf1, spine0, 400]]
"""


def plan(tmp_path, topo_text=None, job_text=None, *extra, topology=None):
    """Run c4 plan on the given topology/job YAML text in tmp_path; returns the exit code."""
    if topology is None:
        (tmp_path / "t.yaml").write_text(topo_text)
        topology = str(tmp_path / "t.yaml")
    (tmp_path / "j.yaml").write_text(job_text or "jobs: [{name: j, hosts: [hx, h1]}]\n")
    args = ["plan", "--topology", topology, "--job", str(tmp_path / "j.yaml")]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "p.json")]
    return main(args + list(extra))


def spec(name="fab", leaf="leaf0", host="hx"):
    """A two-host spec with the given fabric, first-leaf and first-host names (YAML scalars)."""
    return SPEC.format(name=name, leaf=leaf, host=host)


@pytest.mark.parametrize(
    "kw, bad",
    [
        ({"host": '"h$(touch /tmp/x)"'}, "h$(touch /tmp/x)"),
        ({"host": '"hA\\ntouch /tmp/x"'}, "hA\\ntouch /tmp/x"),
        ({"host": '"h2 --all"'}, "h2 --all"),
        ({"leaf": "'leaf0;touch /tmp/x'"}, "leaf0;touch /tmp/x"),
        ({"name": '"evil$(id)"'}, "evil$(id)"),
    ],
)
def test_unsafe_names_in_a_spec_are_refused(tmp_path, capsys, kw, bad):
    assert plan(tmp_path, spec(**kw)) == 2
    err = capsys.readouterr().err
    assert "t.yaml" in err and bad in err
    assert not (tmp_path / "p.json").exists()


def test_example_jobs_load():
    for f in ("job-ring.yaml", "job-mixed.yaml", "job-small.yaml"):
        assert load_job_yaml(EXAMPLES / f)
    assert [j.extra for j in load_job_yaml(EXAMPLES / "job-mixed.yaml")][-1] == {"stages": 4}


def test_name_rules():
    assert is_host_name("host0") and is_host_name("gpu-01.dc1.example.com") and is_host_name("leaf0_1")
    assert not any(map(is_host_name, ["", "a b", "a;b", "a\nb", "-a", "a..b", "x" * 254, 5]))
    assert is_label_value("leaf0_1") and not is_label_value("x" * 64) and not is_label_value("a$b")
    assert is_job_name("llm-pretrain") and not is_job_name("j\nx") and not is_job_name("")


@pytest.mark.parametrize(
    "job, words",
    [
        ("{name: a, hosts: []}", ["job 'a'", "at least two"]),
        ("{name: a, hosts: [host0]}", ["at least two"]),
        ("{name: a, hosts: '0..3', channels: 0}", ["channels"]),
        ("{name: a, hosts: '0..3', channels: -2}", ["channels"]),
        ("{name: a, hosts: '0..3', channels: many}", ["channels"]),
        ("{name: a, hosts: '0..3', message_bytes: -5}", ["message_bytes"]),
        ("{name: a, hosts: '0..3', message_bytes: .nan}", ["message_bytes"]),
        ("{name: a, hosts: '0..3', message_bytes: .inf}", ["message_bytes"]),
        ("{name: a, hosts: '0..3', gpus_per_host: 0}", ["gpus_per_host"]),
        ("{name: a, hosts: '0..3', gpus_per_host: -8}", ["gpus_per_host"]),
        ("{name: a, hosts: '0..3', qps: 0}", ["qps", "1..128"]),
        ("{name: a, hosts: '0..3', qps: 129}", ["qps"]),
        ("{name: a, hosts: '5..2'}", ["first <= last"]),
        ("{name: a, hosts: 'x..y'}", ["first..last"]),
        ("{name: a, hosts: 5}", ["hosts"]),
        ("{name: a, hosts: '0..3', color: red}", ["unknown keys", "color"]),
        ("{name: a, hosts: '0..3', collective: pipeline, stages: 9}", ["stages", "2..4"]),
        ("{name: a, hosts: [host0, host0, host1]}", ["host0", "twice"]),
        ("{name: a, hosts: ['h$(id)', host1]}", ["not a valid host name"]),
        ('{name: "j\\nx", hosts: "0..3"}', ["control"]),
        ("{name: a, hosts: '0..3'}, {name: a, hosts: '4..7'}", ["two jobs", "'a'"]),
    ],
)
def test_bad_jobs_exit_2_naming_file_and_field(tmp_path, capsys, job, words):
    assert plan(tmp_path, None, f"jobs: [{job}]\n", topology=LEAF_SPINE) == 2
    err = capsys.readouterr().err
    assert "j.yaml" in err and all(w in err for w in words), err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    "text, words",
    [
        (spec().replace("name: fab", "name: fab\nhost_gbps: fast"), ["host_gbps", "fast"]),
        (
            spec().replace("gpus: 2, nics: [[{leaf: leaf0", "gpus: eight, nics: [[{leaf: leaf0"),
            ["gpus", "eight"],
        ),
        (
            spec().replace("gpus: 2, nics: [[{leaf: leaf0", "gpu: 2, nics: [[{leaf: leaf0"),
            ["unknown keys", "gpu"],
        ),
        (
            spec().replace("  h1:", "  hx: {gpus: 2, nics: [[{leaf: leaf1, ip: 10.0.0.3}]]}\n  h1:"),
            ["line 6: duplicate key 'hx'"],
        ),
    ],
)
def test_bad_topologies_exit_2(tmp_path, capsys, text, words):
    assert plan(tmp_path, text) == 2
    err = capsys.readouterr().err
    assert "t.yaml" in err and all(w in err for w in words), err


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seeds", "0"], ["--seeds"]),
        (["--seeds", "-1"], ["--seeds"]),
        (["--max-qps", "0"], ["--max-qps"]),
        (["--max-qps", "-3"], ["--max-qps"]),
        (["--links", "-5"], ["--links"]),
        (["--out", "/tmp"], ["--out", "directory"]),
        (["--out", "/nonexistent-dir/p.json"], ["--out"]),
        (["--apply-as", ""], ["--apply-as"]),
        (["--apply-as", ",,,"], ["--apply-as"]),
        (["--apply-dir", "."], ["--apply-dir needs --apply-as"]),
    ],
)
def test_bad_flags_exit_2(tmp_path, capsys, flags, words):
    assert plan(tmp_path, None, "jobs: [{name: a, hosts: '0..3'}]\n", *flags, topology=LEAF_SPINE) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


@contextlib.contextmanager
def read_only_dir(path):
    """A directory this user cannot write: mode 0500, or for root (who writes anyway) a read-only tmpfs."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_unwritable_apply_dir_and_out_exit_2(tmp_path, capsys):
    with read_only_dir(tmp_path / "ro") as ro:
        job = "jobs: [{name: a, hosts: '0..3'}]\n"
        assert (
            plan(tmp_path, None, job, "--apply-as", "hostfile", "--apply-dir", str(ro), topology=LEAF_SPINE)
            == 2
        )
        assert "not writable" in capsys.readouterr().err
        assert plan(tmp_path, None, job, "--out", str(ro / "p.json"), topology=LEAF_SPINE) == 2
        assert "not writable" in capsys.readouterr().err


def test_colliding_file_names_are_refused(tmp_path, capsys):
    jobs = [Job("a/b", ["h0", "h1"]), Job("a_b", ["h0", "h1"])]
    with pytest.raises(ApplyError, match="a_b"):
        file_stems(jobs)
    job = "jobs: [{name: a/b, hosts: '0..3'}, {name: a_b, hosts: '4..7'}]\n"
    assert (
        plan(tmp_path, None, job, "--apply-as", "hostfile", "--apply-dir", str(tmp_path), topology=LEAF_SPINE)
        == 2
    )
    assert "rename one" in capsys.readouterr().err and not (tmp_path / "p.json").exists()


def test_dot_or_dash_job_name_makes_no_hidden_or_option_file():
    jobs = [Job(n, ["h0", "h1"]) for n in (".hidden", "..", "-n")]
    assert file_stems(jobs) == {".hidden": "_hidden", "..": "_.", "-n": "_n"}


def evil_topology():
    """A fabric built in Python (no YAML checks) whose host and leaf names need quoting."""
    hosts = ["h$(touch MARK)", "h2;touch MARK", "h3'`touch MARK`\""]
    leaf = "l$(touch MARK)"
    topo = Topology(name="f$(touch MARK)", tiers=2)
    topo.leaves, topo.spines = [leaf], ["s0"]
    for i, h in enumerate(hosts):
        port = NicPort(h, 0, 0, leaf, f"10.0.0.{i + 1}")
        topo.hosts[h] = Host(h, 2, [[port]])
        topo.add_link(port.name, leaf, 400)
    topo.add_link(leaf, "s0", 400)
    return topo, hosts


def fake_bin(tmp_path):
    """A PATH dir whose kubectl and srun only echo their arguments."""
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ("kubectl", "srun"):
        (b / tool).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        (b / tool).chmod(0o755)
    return b


def run_sh(script: Path, cwd: Path, bin_dir: Path) -> str:
    """Run a generated script with the fake tools first on PATH; its stdout."""
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", str(script)], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def test_generated_scripts_quote_every_value(tmp_path):
    topo, hosts = evil_topology()
    job = Job("j\n touch MARK", hosts, channels=1, gpus_per_host=2)
    plan_ = Planner(topo, max_qps=2).plan(job_flows(job, topo))
    out = tmp_path / "out dir; $(touch MARK)"
    out.mkdir()
    write_apply(["slurm", "k8s", "torchrun", "hostfile"], out, plan_, "p", [job])
    bin_dir = fake_bin(tmp_path)
    for script in sorted(out.glob("*.sh")):
        subprocess.run(["sh", "-n", str(script)], check=True)
        printed = run_sh(script, tmp_path, bin_dir)
        assert not (tmp_path / "MARK").exists(), script.name
        assert hosts[0] in printed  # the name arrives as one intact argument
    srun = next(out.glob("*.srun.sh")).read_text()
    assert (
        srun.startswith("#!/bin/sh\n") and srun.count("\n") == 4
    )  # the job-name newline stays in the comment
    labels = run_sh(out / "k8s-labels.sh", tmp_path, bin_dir).splitlines()
    assert labels[:4] == ["label", "node", hosts[0], f"fabric.topograph.run/tier-0={topo.leaves[0]}"]


def test_srun_script_finds_its_hostfile_from_a_dir_with_spaces(tmp_path):
    d = tmp_path / "a b"
    d.mkdir()
    (d / "x.srun.sh").write_text(slurm_script("x", ["h0", "h1"], 1, "x y.hostfile"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\necho "$SLURM_HOSTFILE"\n')
    (bin_dir / "srun").chmod(0o755)
    assert run_sh(d / "x.srun.sh", tmp_path, bin_dir).strip() == f"{d}/x y.hostfile"


def test_k8s_script_quotes_host_and_label():
    topo, _ = evil_topology()
    assert "kubectl label node 'h$(touch MARK)' 'fabric.topograph.run/tier-0=l$(touch MARK)'" in k8s_script(
        topo
    )


def test_symlink_in_apply_dir_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "nccl.env").symlink_to(victim)
    job = "jobs: [{name: a, hosts: '0..3'}]\n"
    assert (
        plan(tmp_path, None, job, "--apply-as", "nccl-env", "--apply-dir", str(out), topology=LEAF_SPINE) == 0
    )
    assert victim.read_text() == "precious\n"
    assert (
        not (out / "nccl.env").is_symlink() and "NCCL_IB_QPS_PER_CONNECTION" in (out / "nccl.env").read_text()
    )
    assert [p.name for p in out.iterdir()] == ["nccl.env"]  # no temp file left behind


def test_good_plan_still_writes(tmp_path):
    job = "jobs: [{name: .a, hosts: '0..3'}]\n"
    assert (
        plan(tmp_path, None, job, "--apply-as", "slurm", "--apply-dir", str(tmp_path), topology=LEAF_SPINE)
        == 0
    )
    assert json.loads((tmp_path / "p.json").read_text())["pieces"]
    assert (tmp_path / "_a.srun.sh").exists() and not list(tmp_path.glob(".a*"))


def test_broken_pipe_exits_quietly(tmp_path):
    (tmp_path / "j.yaml").write_text("jobs: [{name: a, hosts: '0..3'}]\n")
    c4 = Path(os.sys.executable).with_name("c4")
    cmd = [
        str(c4),
        "plan",
        "--topology",
        LEAF_SPINE,
        "--job",
        str(tmp_path / "j.yaml"),
        "--out",
        str(tmp_path / "p.json"),
    ]
    cmd += ["--links", "500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "BrokenPipe" not in err and "Traceback" not in err
    assert (tmp_path / "p.json").exists()


def test_gpus_per_host_follows_the_topology(tmp_path, capsys):
    assert plan(tmp_path, spec(), None, "--apply-as", "hostfile", "--apply-dir", str(tmp_path)) == 0
    assert (tmp_path / "j.hostfile").read_text().split("\n")[0].endswith(" slots=2")
    job = "jobs: [{name: j, hosts: [hx, h1], gpus_per_host: 4}]\n"
    assert plan(tmp_path, spec(), job) == 2
    assert "gpus_per_host 4 exceeds host 'hx''s 2 GPUs" in capsys.readouterr().err
    assert plan(tmp_path, spec(), "jobs: [{name: j, hosts: [hx, nohost]}]\n") == 2
    assert "'nohost' is not in the topology" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arg, words",
    [
        ("host_gbps: fast", ["host_gbps", "positive number"]),
        ("oversubscription: 0", ["oversubscription"]),
        ("nics_per_host: 2.5", ["nics_per_host", "positive integer"]),
        ("gpus_per_host: eight", ["gpus_per_host"]),
        ("gpus_per_host: 0", ["gpus_per_host"]),
        ("rail_optimized: maybe", ["rail_optimized", "true or false"]),
    ],
)
def test_bad_generator_args_exit_2(tmp_path, capsys, arg, words):
    text = f"name: g\ngenerator: leaf_spine\nargs: {{hosts: 8, leaves: 2, spines: 2, {arg}}}\n"
    assert plan(tmp_path, text, "jobs: [{name: a, hosts: '0..3'}]\n") == 2
    err = capsys.readouterr().err
    assert "t.yaml: leaf_spine" in err and all(w in err for w in words), err


@pytest.mark.parametrize(
    "extra", ["tiers: x", "tiers: 3\ncores: [c0]\npods: {leaf0: x, leaf1: 0, spine0: 0}"]
)
def test_bad_tiers_and_pods_exit_2(tmp_path, capsys, extra):
    assert plan(tmp_path, spec() + extra + "\n") == 2
    assert "t.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["fast", "-5", ".nan"])
def test_bad_failure_rate_exits_2(tmp_path, capsys, rate):
    text = "name: g\ngenerator: leaf_spine\nargs: {hosts: 8, leaves: 2, spines: 2}\n"
    text += f"failures: [{{link: [leaf0, spine0], state: degraded, rate_gbps: {rate}}}]\n"
    assert plan(tmp_path, text, "jobs: [{name: a, hosts: '0..3'}]\n") == 2
    assert (
        "t.yaml: failures[0]: link leaf0<->spine0: a degraded link needs a positive rate_gbps"
        in capsys.readouterr().err
    )
