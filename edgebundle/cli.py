"""The ``edgebundle`` command: parse, build a plan, call the core, and map errors to exit codes here
and only here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from . import fleetcli, outputs
from .clikit import Edgebundle, echo, print_version, reporter, verbosity
from .errors import BudgetExceededError, ConfigError, DeviceError
from .recipe import bundled_recipes, load_recipe
from .target import bundled_targets, interpreters, load_target


@click.group(cls=Edgebundle, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Show the version and the pinned interpreter, NumPy, Pillow, PyInstaller and Nuitka.",
)
@click.option("--debug", is_flag=True, envvar="EDGEBUNDLE_DEBUG", help="Show tracebacks.")
@verbosity
def main(debug: bool) -> None:
    """Bundle a TFLite model and a preprocessing recipe into one executable for edge Linux.

    Shell completion: eval "$(_EDGEBUNDLE_COMPLETE=bash_source edgebundle)" (zsh_source,
    fish_source).

    Exit codes: 0 ok; 3 configuration; 4 model; 5 missing tool; 6 build failed; 7 budget exceeded;
    8 device; 9 an output cannot be written; 10 a binary whose model does not match its manifest;
    70 internal error (a bug); 128+N interrupted by signal N.
    """


@main.command()
@verbosity
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--recipe", "-r", required=True, help="Recipe file, or the name of a bundled recipe.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file (overrides the recipe).")
@click.option(
    "--target",
    "-t",
    default="host",
    show_default=True,
    envvar="EDGEBUNDLE_TARGET",
    help="host, x86_64/amd64, arm64/aarch64, a bundled target name or a target file.",
)
@click.option(
    "--backend",
    "-b",
    default="pyinstaller",
    show_default=True,
    envvar="EDGEBUNDLE_BACKEND",
    help="pyinstaller (smaller, less memory, any host) or nuitka (compiled, starts faster; builds on a "
    "host of the target's arch).",
)
@click.option(
    "--interpreter",
    help="Override the target's interpreter: litert (LiteRT's C API), tflite-runtime or ai-edge-litert.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the binary [default: dist/MODEL_STEM].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON on stdout (only).")
@click.option(
    "--json-out",
    "--report",
    "report",
    type=click.Path(path_type=Path),
    help="Also write the build report as JSON to this file (--report: the old name).",
)
@click.option("--keep-build-dir", is_flag=True, help="Keep the staging directory for inspection.")
@click.option(
    "--isolated",
    is_flag=True,
    envvar="EDGEBUNDLE_ISOLATED",
    help="Build inside a Debian root of the target's arch even when it is this host's (independent of "
    "this machine's Python). Foreign-arch targets always build in one.",
)
@click.option(
    "--system-libc",
    is_flag=True,
    envvar="EDGEBUNDLE_SYSTEM_LIBC",
    help="Use the device's glibc (at least the target's glibc_floor) instead of carrying the build "
    "environment's: ~1.2 MB smaller, but the binary no longer runs on older or C-library-free devices.",
)
def build(
    model: Path,
    recipe: str,
    labels: Path | None,
    target: str,
    backend: str,
    interpreter: str | None,
    output: Path | None,
    as_json: bool,
    report: Path | None,
    keep_build_dir: bool,
    isolated: bool,
    system_libc: bool,
) -> None:
    """Build MODEL (.tflite) with RECIPE into one executable file."""
    from .build import build as run_build
    from .plan import make_plan

    plan = make_plan(
        model=model,
        recipe=load_recipe(recipe, labels_override=labels),
        target=load_target(target, interpreter_override=interpreter),
        backend=backend,
        output=output,
        keep_build_dir=keep_build_dir,
        isolated=isolated,
        libc="system" if system_libc else "bundled",
    )
    if report is not None:
        outputs.check(report, "--json-out", inputs=[*plan.inputs, plan.output])
    ui = reporter()
    if ui.level == "verbose":
        ui.info(plan.summary())
    else:
        ui.info(plan.headline())
    result = run_build(plan, ui)
    if report is not None:
        outputs.write(report, json.dumps(result.to_json(), indent=2) + "\n")
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else result.summary())


@main.command(name="init", short_help="Draft a commented recipe for MODEL.")
@verbosity
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the recipe [default: MODEL_STEM.toml here].",
)
@click.option("--force", is_flag=True, help="Replace the recipe (and labels file) if they exist.")
def init_command(model: Path, output: Path | None, force: bool) -> None:
    """Draft a commented recipe for MODEL (.tflite) from what it says: its input's size, layout,
    dtype and quantization, its TFLite metadata (normalization; the labels file it carries, written
    next to the recipe) and a decoder guessed from its outputs. Each guess is one line on stderr."""
    from .init import write

    recipe_path, labels_path = write(model, output, force=force, echo=echo)
    click.echo(f"wrote {recipe_path}" + (f" and {labels_path}" if labels_path else ""))


@main.command(name="test", short_help="Measure BINARY on a device against its budgets.")
@verbosity
@click.argument("binary", type=click.Path(path_type=Path))
@click.option(
    "--device",
    "-d",
    "devices",
    multiple=True,
    default=("local",),
    show_default=True,
    envvar="EDGEBUNDLE_DEVICE",
    help="local; qemu (a foreign-arch binary through QEMU user-mode emulation, with the C library of "
    "the cached build root that made it; a native binary runs directly); or ssh://[user@]host[:port] "
    "through the system ssh, so ~/.ssh/config, agent and known_hosts apply (EDGEBUNDLE_SSH_COMMAND "
    "replaces 'ssh', e.g. 'ssh -F FILE'). Repeat it to measure several devices at once, with one "
    "combined report.",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(path_type=Path),
    help="Image (or .npy/.npz) for the latency runs [default: the binary's self-test image].",
)
@click.option(
    "--runs",
    "-n",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Warm starts, and timed inferences after one warm-up.",
)
@click.option(
    "--budgets",
    "--target",
    "target",
    metavar="TARGET",
    help="Check against the budgets of this target instead of those in the binary's manifest "
    "(--target: the old name).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (only).")
@click.option(
    "--json-out", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON."
)
@click.option(
    "--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML, a case per budget."
)
def device_test(
    binary: Path,
    devices: tuple[str, ...],
    input_file: Path | None,
    runs: int,
    target: str | None,
    as_json: bool,
    json_path: Path | None,
    junit_path: Path | None,
) -> None:
    """Run BINARY on a device; measure size, cold/warm start, whole-tree peak RSS and inference latency
    against the budgets of its target. Exits 7 when a budget fails, 8 when the device fails."""
    from .device.junit import junit_xml
    from .device.measurement import DeviceTestPlan, run_device_test

    inputs = [binary, *([input_file] if input_file else [])]
    if json_path is not None:
        outputs.check(json_path, "--json-out", inputs=inputs)
    if junit_path is not None:
        outputs.check(junit_path, "--junit", inputs=[*inputs, *([json_path] if json_path else [])])
    plans = [
        DeviceTestPlan(binary=binary, device=d, runs=runs, input=input_file, target=target)
        for d in dict.fromkeys(devices)
    ]
    ui = reporter()
    if len(plans) == 1:
        reports = [run_device_test(plans[0], echo=ui, progress=ui.progress)]
        errors: list[str] = []
        document: Any = reports[0].to_json()
    else:
        from .device.measurement import run_device_tests

        reports, errors = run_device_tests(plans, on_done=ui.info)
        document = {
            "ok": not errors and all(r.ok for r in reports),
            "devices": [r.to_json() for r in reports],
            "errors": errors,
        }
    if json_path is not None:
        outputs.write(json_path, json.dumps(document, indent=2) + "\n")
    if junit_path is not None:
        outputs.write(junit_path, junit_xml(*reports))
    click.echo(json.dumps(document, indent=2) if as_json else "\n\n".join(r.table() for r in reports))
    if errors:
        raise DeviceError("; ".join(errors))
    failed = [r for r in reports if r.failed()]
    if failed:
        raise BudgetExceededError(
            " / ".join(
                f"{len(r.failed())} budget(s) exceeded on {r.device}: "
                + "; ".join(b.describe() for b in r.failed())
                for r in failed
            )
        )


@main.command()
@verbosity
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def targets(as_json: bool) -> None:
    """List the bundled targets."""
    loaded = [load_target(name) for name in sorted(bundled_targets())]
    if as_json:
        click.echo(json.dumps([t.to_json() for t in loaded], indent=2))
        return
    for t in loaded:
        b = t.budgets
        click.echo(
            f"{t.name:16} {t.arch:8} py{t.python:5} {t.interpreter:15} glibc>={t.glibc_floor:5} "
            f"size<={b.max_size_mb}MB start<={b.max_startup_ms}ms rss<={b.max_rss_mb}MB"
        )


@main.command()
@verbosity
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def recipes(as_json: bool) -> None:
    """List the bundled recipes."""
    loaded = [load_recipe(path) for _, path in sorted(bundled_recipes().items())]
    if as_json:
        click.echo(json.dumps([{"path": str(r.path), **r.to_manifest()} for r in loaded], indent=2))
        return
    for r in loaded:
        i, o = r.input, r.output
        extra = f" top-{o.top_k}" if o.top_k else ""
        click.echo(
            f"{r.path.stem:20} {i.color:3} {i.resize:11} {i.interpolation:8} "
            f"softmax={str(o.softmax).lower()}{extra}"
        )


@main.command(name="inspect", short_help="Show what is inside a binary or a .tflite model.")
@verbosity
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_command(path: Path, as_json: bool) -> None:
    """Show what is inside a built binary (manifest, arch, size by component, glibc floor, bundled
    libraries) or a .tflite model (tensors, quantization, ops), without running it. Exits 10 when a
    binary's model does not match its manifest."""
    from .inspection import check_integrity, format_report, inspect_path

    report = inspect_path(path)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    check_integrity(report)


@main.command(name="interpreters")
@verbosity
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_interpreters(as_json: bool) -> None:
    """List the supported interpreter packages and their pins."""
    known = interpreters()
    if as_json:
        click.echo(json.dumps({k: list(v.requires) for k, v in known.items()}, indent=2))
        return
    for name, pins in known.items():
        click.echo(f"{name:15} python {','.join(pins.pythons):20} {' '.join(pins.requires)}")


@main.command(short_help="Print the CI build matrix as JSON.")
@verbosity
def matrix() -> None:
    """Print the CI build matrix (bundled targets x backends) as one line of JSON for GitHub Actions'
    fromJSON: each entry has name, target, arch, backend and the native runner."""
    from .plan import ci_matrix

    loaded = [load_target(name) for name in sorted(bundled_targets())]
    click.echo(json.dumps(ci_matrix(loaded), separators=(",", ":")))


@main.group(invoke_without_command=True, short_help="Show what is cached, with sizes; clean it.")
@verbosity
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def cache(ctx: click.Context, as_json: bool) -> None:
    """Show what edgebundle keeps between runs (build environments, NumPy wheels, runners, build
    roots, compile caches, runtimes unpacked by binaries, build logs, staging directories), with sizes.
    `edgebundle cache clean` removes it."""
    if ctx.invoked_subcommand is not None:
        return
    from .cache import KINDS, entries

    found = entries()
    if as_json:
        click.echo(json.dumps([e.to_json() for e in found], indent=2))
        return
    for kind in KINDS:
        mine = [e for e in found if e.kind == kind]
        size = sum(e.size_bytes for e in mine) / 1e6
        click.echo(f"{kind:9} {len(mine):3} {'entry' if len(mine) == 1 else 'entries':7} {size:8.1f} MB")
        for e in mine:
            click.echo(f"    {e.state:11} {e.size_bytes / 1e6:8.1f} MB  {e.path}")


@cache.command(name="clean")
@verbosity
@click.argument(
    "kinds",
    nargs=-1,
    type=click.Choice(["envs", "wheels", "runners", "roots", "nuitka", "runtimes", "logs", "staging"]),
)
@click.option("--all", "everything", is_flag=True, help="Remove every kind, in use excepted.")
def cache_clean(kinds: tuple[str, ...], everything: bool) -> None:
    """Remove cached KINDS entirely (entries in use excepted). Without KINDS: only what nothing can
    use again (scratch directories and partial entries of processes that are gone, interrupted and
    stale build roots)."""
    from .cache import KINDS, clean, default_selection

    chosen = KINDS if everything or not kinds else tuple(k for k in KINDS if k in kinds)
    removed, left = clean(
        (lambda _e: True) if everything or kinds else default_selection,
        echo,
        kinds=chosen,
    )
    for entry, why in left:
        echo(f"left {entry.path}: {why}")
    freed = sum(e.size_bytes for e in removed) / 1e6
    click.echo(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}, {freed:.1f} MB")


@main.group(short_help="Manage the cached Debian build roots.")
@verbosity
def toolchain() -> None:
    """Manage the cached Debian build roots that foreign-arch builds (and --isolated ones) run in."""


_BACKEND_OPTION = click.option(
    "--backend",
    "-b",
    default="pyinstaller",
    show_default=True,
    envvar="EDGEBUNDLE_BACKEND",
    help="The backend whose pins the root holds.",
)


@toolchain.command(name="install")
@verbosity
@click.argument("target_name", metavar="TARGET")
@_BACKEND_OPTION
def toolchain_install(target_name: str, backend: str) -> None:
    """Create TARGET's build root now (builds create it on first use) and print its root filesystem,
    e.g. for QEMU_LD_PREFIX. Does nothing but print when it exists already."""
    from .buildenv import debian_root
    from .plan import check_backend

    check_backend(backend)
    root = debian_root(load_target(target_name), backend)
    root.ensure(echo)
    echo(f"{root.describe()}: ready")
    click.echo(root.rootfs)


@toolchain.command(name="list")
@verbosity
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def toolchain_list(as_json: bool) -> None:
    """List the cached build roots: ready, stale (the pins changed since) or interrupted (rebuilt on
    next use)."""
    from .buildenv import current_root_names
    from .toolchains.roots import list_roots

    roots = list_roots(current_root_names())
    if as_json:
        click.echo(json.dumps([r.to_json() for r in roots], indent=2))
        return
    if not roots:
        echo("no build roots (edgebundle toolchain install TARGET creates one)")
    for r in roots:
        click.echo(f"{r.name:32} {r.state:11} {r.size_bytes / 1e6:7.0f} MB  {r.backend:12} {r.path}")


@toolchain.command(name="remove")
@verbosity
@click.argument("target_name", metavar="TARGET")
def toolchain_remove(target_name: str) -> None:
    """Delete every build root of TARGET (any backend, stale and interrupted ones included)."""
    from .toolchains.roots import remove_roots

    try:
        name = load_target(target_name).name
    except ConfigError:
        name = target_name  # a target file that is gone: its roots can still be removed by name
    removed = remove_roots(name, echo)
    if not removed:
        echo(f"no build roots of {name}")


for _command in fleetcli.COMMANDS:
    main.add_command(_command)
