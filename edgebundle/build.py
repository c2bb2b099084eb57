"""The build pipeline: BuildPlan -> staged app dir (runtime + model + manifest) -> backend -> binary.

The backend's part (the runner: launcher + the one-folder program, see backends/runners.py) does not
depend on the model and is cached; the binary is that runner with the model, manifest and self-test
files appended as a payload. A build with another model or recipe only appends.

Nothing is written at the plan's output path until the binary is complete and has passed its own
self-test (when it can run here); it then appears there in one atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import __version__, outputs, ui, workspace
from .backends import RUNTIME_PACKAGE, Stage, stage_runtime
from .backends.bundle import assemble
from .backends.runners import ensure_runner
from .buildenv import for_plan
from .errors import BuildError, ModelError, OutputError
from .modelcheck import check_file, parse_probe_error, validate
from .plan import BuildPlan
from .proc import TIMEOUT_S, Echo, stream
from .recipe import read_labels
from .runtime.manifest import Manifest
from .runtime.payload import check_digest
from .target import Arch, BackendName, Pins, interpreters
from .tflite import read_model
from .toolchains import Toolchain, cache_dir
from .toolchains.binfmt import qemu_cpu_env
from .toolchains.binfmt import registered as binfmt_registered

# build logs kept in the cache (one per output name and inputs; a few KB each)
KEEP_LOGS = 32


@dataclass(frozen=True, kw_only=True)
class BuildReport:
    path: str
    size_bytes: int
    sha256: str
    build_seconds: float
    target: str
    arch: Arch
    backend: BackendName
    interpreter: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"built {self.path}: {self.size_bytes / 1e6:.1f} MB ({self.size_bytes} bytes), "
            f"sha256 {self.sha256}, {self.build_seconds:.1f} s"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(plan: BuildPlan, echo: Echo) -> BuildReport:
    start = time.monotonic()
    check_file(plan.model)
    labels = read_labels(plan.recipe.output.labels) if plan.recipe.output.labels else None
    for orphan in outputs.sweep_partials(plan.output):
        echo(f"removed {orphan} (left by a build that was killed)")
    toolchain = for_plan(plan)
    with ui.step(echo, "build environment") as step:
        toolchain.ensure(echo)
        step.summary = toolchain.describe()
    # The same inputs always get the same staging path: paths end up in the frozen program, and a
    # random directory would make two builds of the same inputs differ (workspace.py).
    key = build_inputs_sha256(plan)[:16]
    log = _log_file(f"{plan.name}-{key}")
    with workspace.scratch(f"{plan.name}-{key}", keep=plan.keep_build_dir) as workdir:
        if plan.keep_build_dir:
            echo(f"build directory kept: {workdir}")
        return _build_in(plan, echo, toolchain, workdir, log, labels, start)


def _log_file(name: str) -> Path:
    """A build's log, outside its staging directory (which goes when the build ends, whatever the
    outcome), so that the log an error names is there to read; the newest KEEP_LOGS are kept."""
    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in old[KEEP_LOGS:]:
        stale.unlink(missing_ok=True)
    log = folder / f"{name}.log"
    log.write_text("")
    return log


def _build_in(
    plan: BuildPlan,
    echo: Echo,
    toolchain: Toolchain,
    workdir: Path,
    log: Path,
    labels: list[str] | None,
    start: float,
) -> BuildReport:
    pins = interpreters()[plan.target.interpreter]
    stage = Stage(
        workdir=workdir, name=plan.name, interpreter_module=pins.module, numpy=pins.numpy, log_file=log
    )
    stage_runtime(stage)
    model_file = stage.app / "model.tflite"
    shutil.copyfile(plan.model, model_file)
    with ui.step(echo, f"model check with {plan.target.interpreter}") as step:
        sig = _probe_signature(toolchain, pins.module, pins.distribution, plan.model, model_file, stage)
        if not sig["ops"] and not pins.numpy:
            # LiteRT's C API lists no ops: the file's own, as the Python APIs name them
            sig["ops"] = sorted({op.name for op in read_model(model_file).ops} - {"DELEGATE"})
        resolved = validate(plan.recipe, sig, labels)
        manifest = _manifest(plan, pins, sig, resolved.image_input, labels, model_file)
        manifest["recipe"]["output"].update(resolved.output)
        (stage.app / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        toolchain.run(
            [toolchain.python, "-m", f"{RUNTIME_PACKAGE}.buildtime", "reference", str(stage.app)],
            log=stage.log,
            what="computing the self-test reference",
            timeout=TIMEOUT_S["model probe"],
            cwd=stage.app,
        )
        step.summary = (
            f"{_plural(len(sig['inputs']), 'input')}, {_plural(len(sig['outputs']), 'output')}, "
            f"{_plural(len(sig['ops']), 'op')}, self-test reference computed"
        )
    with ui.step(echo, f"runner ({plan.backend})") as step:
        runner, built = ensure_runner(
            toolchain,
            plan.target,
            plan.backend,
            pins,
            echo,
            libc_mode=plan.libc,
            keep_build_dir=plan.keep_build_dir,
        )
        step.summary = ("built " if built else "cached, ") + runner.describe().removeprefix("runner ")
    # not named after the output: "-o app" would collide with the stage's app/ directory
    produced = workdir / "binary"
    assemble(
        runner.prefix,
        runner.runner_offset,
        runner.key,
        {p.name: p.read_bytes() for p in stage.data_files()},
        produced,
    )
    return _install(plan, produced, workdir, start, echo, toolchain)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_inputs_sha256(plan: BuildPlan) -> str:
    """One hash of everything a build depends on besides the pinned toolchain: edgebundle's version,
    the model's bytes, the resolved recipe, the labels' bytes, the target, the backend and where the
    C library comes from."""
    labels = plan.recipe.output.labels
    return hashlib.sha256(
        json.dumps(
            [
                __version__,
                sha256_file(plan.model),
                plan.recipe.to_manifest(),
                sha256_file(labels) if labels else None,
                plan.target.to_json(),
                plan.backend,
                plan.libc,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()


def _probe_signature(
    toolchain: Toolchain, module: str, distribution: str, model: Path, staged: Path, stage: Stage
) -> dict[str, Any]:
    """Load the staged copy of ``model`` with the target's interpreter inside the toolchain (under
    QEMU for a foreign arch); messages name ``model``, the user's file."""
    # Not through Toolchain.run because a refusal here is the user's model error, reported as such,
    # not a build failure. ``python -m`` from stage.app finds the runtime package there.
    inv = toolchain.invocation(
        [
            toolchain.python,
            "-m",
            f"{RUNTIME_PACKAGE}.buildtime",
            "signature",
            module,
            distribution,
            str(staged),
        ],
        cwd=stage.app,
    )
    env = {k: v for k, v in inv.env.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(stage.app)
    proc = stream(
        inv.argv,
        echo=None,
        env=env,
        cwd=inv.cwd,
        what=f"loading {model} with {distribution}",
        timeout=TIMEOUT_S["model probe"],
    )
    with open(stage.log, "a", encoding="utf-8") as log:
        log.write(f"signature probe: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        raise parse_probe_error(model, proc.stderr, proc.returncode, distribution)
    try:
        sig: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ModelError(f"{model}: the model probe printed no signature (see {stage.log})") from None
    return sig


def _manifest(
    plan: BuildPlan,
    pins: Pins,
    sig: dict[str, Any],
    image_input: str,
    labels: list[str] | None,
    model_file: Path,
) -> Manifest:
    recipe = plan.recipe.to_manifest()
    recipe["input"]["tensor"] = image_input
    return {
        "edgebundle_version": __version__,
        "target": plan.target.to_json(),
        "backend": plan.backend,
        "interpreter": {
            "name": plan.target.interpreter,
            "module": pins.module,
            "version": sig["interpreter_version"],
        },
        "python": sig["python"],
        "numpy": sig["numpy"] if pins.numpy else "",
        "pillow": sig["pillow"],
        "model": {
            "file": model_file.name,
            "source_name": plan.model.name,
            "sha256": sha256_file(model_file),
            # what the binary checks the model against at every start: BLAKE2b is ~3x faster than the
            # standard library's SHA-256 (runtime/payload.py)
            "check_digest": check_digest(model_file.read_bytes()),
            "size_bytes": model_file.stat().st_size,
            "inputs": sig["inputs"],
            "outputs": sig["outputs"],
            "ops": sig["ops"],
        },
        "recipe": recipe,
        "labels": labels,
        "labels_sha256": sha256_file(plan.recipe.output.labels) if plan.recipe.output.labels else None,
        # the Python distributions in the build environment that can end up in the binary
        "distributions": sig.get("distributions", {}),
        "build_inputs_sha256": build_inputs_sha256(plan),
        "selftest": {"image": "selftest.png", "reference": "selftest.npz"},
    }


def _install(
    plan: BuildPlan, produced: Path, workdir: Path, start: float, echo: Echo, toolchain: Toolchain
) -> BuildReport:
    """Copy the result next to the output, self-test it there, then rename it into place."""
    out = plan.output
    partial = outputs.partial_name(out)
    try:
        try:
            shutil.copyfile(produced, partial)
        except OSError as exc:
            raise OutputError(f"{out}: cannot write: {outputs.reason(exc)}") from None
        os.chmod(partial, 0o755)
        with ui.step(echo, "checks") as step:
            floor = _check_libc(plan, partial, echo)
            if plan.native:
                _self_test(partial, workdir, echo)
                tested = "self-test passed"
            elif toolchain.library_root is not None and binfmt_registered(plan.target.arch):
                # The binary needs the root's glibc and zlib: QEMU looks them up there first.
                emulation = {"QEMU_LD_PREFIX": str(toolchain.library_root), **qemu_cpu_env()}
                _self_test(partial, workdir, echo, emulation)
                tested = "self-test passed under QEMU"
            else:
                tested = (
                    f"self-test skipped: {plan.target.arch} binaries do not run on this host "
                    f"(no qemu-{plan.target.arch} registered with binfmt_misc)"
                )
                ui.warn(echo, tested)
            step.summary = f"{floor}; {tested}"
        digest = sha256_file(partial)
        size = partial.stat().st_size
        outputs.install(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return BuildReport(
        path=str(out),
        size_bytes=size,
        sha256=digest,
        build_seconds=round(time.monotonic() - start, 2),
        target=plan.target.name,
        arch=plan.target.arch,
        backend=plan.backend,
        interpreter=plan.target.interpreter,
    )


def _check_libc(plan: BuildPlan, binary: Path, echo: Echo) -> str:
    """A binary with its own glibc must not need a newer one than it carries (a wheel built for a
    newer glibc than the build environment's); with --system-libc the target promises its devices a
    glibc version: refuse a binary that needs a newer one (it would fail on the device with
    "version `GLIBC_2.38' not found")."""
    from .elf import version_key
    from .inspection import inspect_binary

    report = inspect_binary(binary)
    floor, culprit, libc = report["glibc_floor"], report["glibc_floor_set_by"], report["libc"]
    echo(f"glibc floor {floor} set by {culprit}")
    if libc["mode"] == "bundled":
        if floor and version_key(floor) > version_key(libc["glibc"]):
            raise BuildError(
                f"the binary needs glibc {floor} (set by {culprit}) but carries glibc {libc['glibc']}, its "
                "build environment's; pin a wheel built for an older glibc or build in a newer root"
            )
        return f"carries glibc {libc['glibc']} (runs on Linux >= {libc['kernel_floor']} with any C library)"
    if floor and version_key(floor) > version_key(plan.target.glibc_floor):
        raise BuildError(
            f"the binary needs glibc {floor} (set by {culprit}) but target {plan.target.name} has "
            f"glibc_floor {plan.target.glibc_floor}; build with --isolated (a Debian root with the "
            "target's glibc) or pin a wheel built for an older glibc"
        )
    return f"needs the device's glibc >= {floor} (target allows {plan.target.glibc_floor})"


def _self_test(binary: Path, workdir: Path, echo: Echo, extra_env: dict[str, str] | None = None) -> None:
    """Run the fresh binary's --self-test in an empty directory with a minimal environment (inside the
    staging directory, so that nothing of it outlives the build, even a killed one)."""
    empty = workdir / "selftest"
    empty.mkdir()
    proc = stream(
        [str(binary.resolve()), "--self-test"],
        echo=None,
        cwd=empty,
        env={"PATH": "/usr/bin:/bin", "HOME": str(empty), "TMPDIR": str(empty), **(extra_env or {})},
        what=f"{binary.name} --self-test",
        timeout=TIMEOUT_S["self-test"],
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:])
        raise BuildError(f"the built binary failed its self-test (exit {proc.returncode}): {tail}")
