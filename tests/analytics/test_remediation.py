"""Remediation steps: templates filled and run for real, dry-run by default, holds, never twice, bad templates refused."""

from __future__ import annotations

import stat

import pytest

from c4.analytics.remediation import Hold, RemediationStep, apply_in_order, command_argv
from c4.config import CollectorConfig, ConfigError, load_config


def fault(fault_id: str = "xid:host2/gpu3", action: str = "replace_gpu", job: str = "train") -> dict:
    """A newly open fault row (the fields remediation reads)."""
    return {
        "fault_id": fault_id,
        "node": "host2",
        "job": job,
        "component": "host2/gpu3",
        "action": action,
        "state": "open",
    }


def script(tmp_path, body: str = 'echo "$@" >> "$(dirname "$0")/ran.txt"'):
    """A shell script that appends its arguments to ran.txt next to it."""
    path = tmp_path / "remedy.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def restart_step(template: str, **kw) -> RemediationStep:
    """A restart step for faults that drain or restart."""
    return RemediationStep("restart", template, ("replace_gpu", "restart_job"), needs_job=True, **kw)


def test_template_fills_every_placeholder_per_shell_word():
    argv = command_argv("requeue.sh --job {job} '{node} {fault_id}' {reason}", fault(), "train")
    assert argv == ["requeue.sh", "--job", "train", "host2 xid:host2/gpu3", "C4:xid:host2/gpu3"]


def test_dry_run_by_default_runs_nothing(tmp_path):
    s = script(tmp_path)
    rows = restart_step(f"{s} {{job}}").apply([fault()])
    assert [r["outcome"] for r in rows] == ["dry_run"]
    assert rows[0]["detail"] == f"would run: {s} train"
    assert not (tmp_path / "ran.txt").exists()


def test_real_run_once_per_fault_and_only_for_its_actions(tmp_path):
    s = script(tmp_path)
    step = restart_step(f"{s} {{job}} {{node}} {{fault_id}}", dry_run=False)
    rows = step.apply([fault(), fault("nic:x", action="replace_cable")])
    assert [(r["fault_id"], r["outcome"], r["sink"]) for r in rows] == [("xid:host2/gpu3", "ran", "restart")]
    assert step.apply([fault()]) == []  # the same fault re-detected next pass
    assert (tmp_path / "ran.txt").read_text() == "train host2 xid:host2/gpu3\n"


def test_a_restarted_collector_loads_what_was_taken_and_never_repeats_it(tmp_path):
    s = script(tmp_path)
    step = restart_step(f"{s} {{job}}", dry_run=False)
    step.load(["xid:host2/gpu3"])  # what taken_sql found in the actions table
    assert step.apply([fault()]) == []
    assert not (tmp_path / "ran.txt").exists()


def test_failure_keeps_the_stderr_excerpt_and_timeouts_fail(tmp_path):
    bad = script(tmp_path, 'echo "no such job $1" >&2; exit 3')
    rows = restart_step(f"{bad} {{job}}", dry_run=False).apply([fault()])
    assert rows[0]["outcome"] == "failed" and rows[0]["detail"] == "exit 3: no such job train"
    slow = script(tmp_path, "sleep 5")
    rows = restart_step(str(slow), dry_run=False, timeout_s=0.2).apply([fault()])
    assert rows[0]["outcome"] == "failed" and "timed out after 0.2 s" in rows[0]["detail"]


def test_held_job_is_recorded_once_and_not_restarted(tmp_path):
    s = script(tmp_path)
    step = restart_step(f"{s} {{job}}", dry_run=False, hold=Hold(jobs=frozenset({"train"})))
    rows = step.apply([fault()])
    assert rows[0]["outcome"] == "held" and "job train is held" in rows[0]["detail"]
    assert step.apply([fault()]) == []  # recorded once
    other = step.apply([fault("xid:host9/gpu0", job="other")])
    assert other[0]["outcome"] == "ran"  # only the held job waits
    everyone = restart_step(f"{s} {{job}}", dry_run=False, hold=Hold(cluster=True)).apply([fault()])
    assert everyone[0]["outcome"] == "held"
    assert (tmp_path / "ran.txt").read_text() == "other\n"


class SwitchableHold:
    """An operator's hold that is lifted while a pass is between its two steps."""

    def __init__(self) -> None:
        self.on = True

    def reason(self, job: str) -> str:
        return "held cluster-wide" if self.on else ""


def test_a_hold_lifted_between_steps_never_restarts_before_the_drain(tmp_path):
    s = script(tmp_path)
    hold = SwitchableHold()

    class ReleasedAfterIt(RemediationStep):
        def apply(self, faults):
            rows = super().apply(faults)
            hold.on = False  # the operator's release lands after this step saw the hold
            return rows

    drain = ReleasedAfterIt("isolation", f"{s} drain {{node}}", ("replace_gpu",), dry_run=False, hold=hold)
    restart = restart_step(f"{s} requeue {{job}}", dry_run=False, hold=hold)
    rows = apply_in_order([drain, restart], [fault()])
    assert [(r["sink"], r["outcome"]) for r in rows] == [("isolation", "held")]
    assert not (tmp_path / "ran.txt").exists()  # no restart of a job whose node was not drained
    rows = apply_in_order([drain, restart], [fault()])  # what the release does next
    assert [(r["sink"], r["outcome"]) for r in rows] == [("isolation", "ran"), ("restart", "ran")]
    assert (tmp_path / "ran.txt").read_text() == "drain host2\nrequeue train\n"


def test_while_held_both_steps_record_held(tmp_path):
    s = script(tmp_path)
    hold = Hold(cluster=True)
    drain = RemediationStep("isolation", f"{s} drain", ("replace_gpu",), dry_run=False, hold=hold)
    rows = apply_in_order([drain, restart_step(f"{s} {{job}}", dry_run=False, hold=hold)], [fault()])
    assert [(r["sink"], r["outcome"]) for r in rows] == [("isolation", "held"), ("restart", "held")]


def test_no_job_known_is_a_recorded_failure_not_a_command(tmp_path):
    s = script(tmp_path)
    rows = restart_step(f"{s} {{job}}", dry_run=False).apply([fault(job="")])
    assert rows[0]["outcome"] == "failed" and "no job known" in rows[0]["detail"]
    assert not (tmp_path / "ran.txt").exists()


def test_restart_modes_and_defaults():
    assert CollectorConfig().restart_template == ""
    assert CollectorConfig().restart_dry_run is True
    assert CollectorConfig(restart="slurm").restart_template == "scontrol requeue {job}"
    assert CollectorConfig(restart="kubernetes").restart_template == "kubectl delete pod -l job={job}"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('restart = "command"\nrestart_command = "requeue {jobid}"', "unknown placeholder {jobid}"),
        ('isolation_command = "drain {host}"', "unknown placeholder {host}"),
        ('restart = "command"\nrestart_command = "requeue {job"', "not a valid template"),
        ('restart = "command"', "needs restart_command"),
        ('restart = "pbs"', "restart"),
    ],
)
def test_bad_templates_are_refused_at_start(tmp_path, toml, message):
    path = tmp_path / "c4.toml"
    path.write_text("[collector]\n" + toml + "\n")
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_config(path, env={})
