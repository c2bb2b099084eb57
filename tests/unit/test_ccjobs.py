"""cc-jobs, the compiler front that lets a root's source build compile on every core: run for real
with the host's gcc, on its own and under setuptools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgebundle.toolchains import ccjobs

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture
def cc(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "root"
    ccjobs.install(root)
    script = root / ccjobs.CC_JOBS.relative_to("/")
    env = {
        **os.environ,
        **ccjobs.environment(cores=2),
        "CC": str(script),  # in a root: ccjobs.CC_JOBS
        "EDGEBUNDLE_CC_STATE": str(tmp_path / "state"),
    }
    return script, env


def _sources(where: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        f = where / f"f{i}.c"
        f.write_text(f"int f{i}(void) {{ return {i}; }}\n")
        files.append(f)
    main = where / "main.c"
    calls = " + ".join(f"f{i}()" for i in range(n))
    decls = "".join(f"int f{i}(void);\n" for i in range(n))
    main.write_text(f"{decls}int main(void) {{ return ({calls}) == {sum(range(n))} ? 0 : 1; }}\n")
    return [*files, main]


def test_compiles_return_at_once_and_the_link_waits_for_them(
    cc: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    script, env = cc
    objects = []
    for source in _sources(tmp_path, 6):
        obj = source.with_suffix(".o")
        subprocess.run([script, "-O2", "-c", source, "-o", obj], env=env, check=True)
        objects.append(obj)
    program = tmp_path / "program"
    subprocess.run([script, *objects, "-o", program], env=env, check=True)
    assert subprocess.run([program], check=False).returncode == 0
    assert not list((tmp_path / "state").iterdir())  # every job's output read and removed


def test_a_failed_compile_fails_the_link_with_its_message(
    cc: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    script, env = cc
    sources = _sources(tmp_path, 3)
    sources[1].write_text("int f1(void) { return nope; }\n")
    for source in sources:  # each compile "succeeds": it only started
        subprocess.run([script, "-c", source, "-o", source.with_suffix(".o")], env=env, check=True)
    link = subprocess.run(
        [script, *(s.with_suffix(".o") for s in sources), "-o", tmp_path / "program"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert link.returncode == 1
    assert "nope" in link.stderr
    assert "undeclared" in link.stderr
    assert "cc-jobs: a compile failed" in link.stderr
    assert not (tmp_path / "program").exists()


def test_setuptools_builds_an_extension_through_it(cc: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """As in a root: CC alone makes setuptools compile and link through cc-jobs."""
    pytest.importorskip("setuptools")
    _, env = cc
    project = tmp_path / "project"
    project.mkdir()
    names = [f"part{i}" for i in range(5)]
    for i, name in enumerate(names):
        (project / f"{name}.c").write_text(f"int {name}(void) {{ return {i + 1}; }}\n")
    decls = "".join(f"int {name}(void);\n" for name in names)
    total = " + ".join(f"{name}()" for name in names)
    (project / "mod.c").write_text(
        textwrap.dedent(
            """\
            #include <Python.h>
            %s
            static PyObject *total(PyObject *self, PyObject *args) { return PyLong_FromLong(%s); }
            static PyMethodDef methods[] = {{"total", total, METH_NOARGS, NULL}, {NULL}};
            static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mod", NULL, -1, methods};
            PyMODINIT_FUNC PyInit_mod(void) { return PyModule_Create(&module); }
            """
        )
        % (decls, total)
    )
    sources = ", ".join(repr(f"{n}.c") for n in ["mod", *names])
    (project / "setup.py").write_text(
        "from setuptools import setup, Extension\n"
        f"setup(name='mod', ext_modules=[Extension('mod', [{sources}])])\n"
    )
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import mod; print(mod.total())"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.strip() == "15", out.stderr
    assert (tmp_path / "state").is_dir()  # it went through cc-jobs


def test_links_at_once_each_take_their_own_reports(cc: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """setuptools links several extensions at once: no link may fail on a report another took."""
    script, env = cc
    programs = []
    for k in range(4):
        where = tmp_path / f"p{k}"
        where.mkdir()
        objects = []
        for source in _sources(where, 4):
            subprocess.run([script, "-c", source, "-o", source.with_suffix(".o")], env=env, check=True)
            objects.append(source.with_suffix(".o"))
        programs.append((objects, where / "program"))
    links = [
        subprocess.Popen([script, *objects, "-o", program], env=env, stderr=subprocess.PIPE, text=True)
        for objects, program in programs
    ]
    for link in links:
        _, err = link.communicate()
        assert link.returncode == 0, err
    for _, program in programs:
        assert subprocess.run([program], check=False).returncode == 0
    assert not list((tmp_path / "state").iterdir())
