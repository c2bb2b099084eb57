"""The gateway commands: ``edgebundle deploy``, ``status``, ``rollback`` and ``package`` (registered on
the ``edgebundle`` group by cli.py; errors become exit codes in clikit.py, as for every command)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .clikit import reporter, verbosity
from .errors import DeviceError

DEVICES_HELP = (
    "DEVICE is ssh://[user@]host[:port] (the system ssh: ~/.ssh/config, agent and known_hosts apply; "
    "EDGEBUNDLE_SSH_COMMAND replaces 'ssh'), or @FILE with one per line."
)


def name_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--name",
        required=True,
        help="The application's name: PREFIX/NAME on the device, unit edgebundle-NAME.",
    )(func)


def prefix_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--prefix", default="/opt/edgebundle", show_default=True, help="Where releases live on the device."
    )(func)


@click.command(short_help="Install BINARY on gateways over SSH, as a health-gated systemd service.")
@verbosity
@click.argument("binary", type=click.Path(path_type=Path))
@click.argument("devices", nargs=-1, required=True, metavar="DEVICE...")
@name_option
@prefix_option
@click.option(
    "--service", is_flag=True, help="Run it as edgebundle-NAME.service (--serve), gated on /readyz."
)
@click.option("--port", type=int, default=8080, show_default=True, help="--service: the port it serves on.")
@click.option("--host", default="0.0.0.0", show_default=True, help="--service: the address it listens on.")
@click.option("--keep", type=int, default=3, show_default=True, help="Releases kept on each device (>= 2).")
@click.option(
    "--ready-timeout",
    type=int,
    default=60,
    show_default=True,
    help="Seconds for a new release to become ready.",
)
@click.option("--parallel", type=int, default=4, show_default=True, help="Devices deployed to at once.")
@click.option(
    "--canary", type=int, default=0, help="Deploy to the first N devices first; go on only if all are ready."
)
@click.option(
    "--max-failures", type=int, default=0, show_default=True, help="Stop starting devices once more failed."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout (only)."
)
def deploy(
    binary: Path,
    devices: tuple[str, ...],
    name: str,
    prefix: str,
    service: bool,
    port: int,
    host: str,
    keep: int,
    ready_timeout: int,
    parallel: int,
    canary: int,
    max_failures: int,
    as_json: bool,
) -> None:
    """Install BINARY on each DEVICE: check the device (arch, kernel or glibc, disk), upload, verify its
    sha256, run its --self-test there, switch PREFIX/NAME/current; with --service, restart the unit
    and wait until /readyz answers 200, else switch back to the previous release. Exits 8 when a
    device failed or was rolled back.

    """
    from .deploy import DeployOptions, DeviceResult, check_options
    from .deploy.fleet import deploy_fleet, read_devices

    opts = DeployOptions(
        name=name,
        prefix=prefix,
        service=service,
        host=host,
        port=port,
        keep=keep,
        ready_timeout_s=ready_timeout,
        parallel=parallel,
        canary=canary,
        max_failures=max_failures,
    )
    check_options(opts)
    targets = read_devices(list(devices))
    ui = reporter()

    def said(result: DeviceResult) -> None:
        if len(targets) > 1:  # progress as devices finish; one device says it once, below
            ui.info(f"{result.device}: {result.outcome} ({result.message}, {result.seconds:.1f} s)")

    report = deploy_fleet(binary, targets, opts, echo=ui if ui.level == "verbose" else None, on_result=said)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.table())
    failed = [r for r in report.results if not r.ok]
    if len(report.results) == 1 and failed:
        raise DeviceError(f"{failed[0].outcome}: {failed[0].message}")
    if failed:
        raise DeviceError(
            f"{len(failed)} of {len(report.results)} devices not deployed: "
            + "; ".join(f"{r.device} {r.outcome}" for r in failed)
        )


deploy.help = (deploy.help or "") + DEVICES_HELP


@click.command(short_help="Show the release, service state and readiness of NAME on gateways.")
@verbosity
@click.argument("devices", nargs=-1, required=True, metavar="DEVICE...")
@name_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout (only).")
def status(devices: tuple[str, ...], name: str, prefix: str, as_json: bool) -> None:
    """Per device: the current release, the previous ones, the service's state, whether /readyz answers
    200, since when it runs and its resident memory."""
    from .deploy import DeployOptions, check_options
    from .deploy.fleet import read_devices, status_one

    check_options(DeployOptions(name=name, prefix=prefix))
    ui = reporter()
    rows = [
        status_one(d, name, prefix, ui if ui.level == "verbose" else None)
        for d in read_devices(list(devices))
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        rss = f"{row['rss_bytes'] / 1e6:.1f} MB" if row["rss_bytes"] else "-"
        ready = "-" if row["ready"] is None else "yes" if row["ready"] else "NO"
        previous = " ".join(row["previous"]) or "-"
        click.echo(
            f"{row['device']}: {name} {row['release'] or '(none)'}, service {row['service'] or '-'}, "
            f"ready {ready}, since {row['since'] or '-'}, RSS {rss}, previous {previous}"
        )


@click.command(short_help="Make the previous release of NAME current again on gateways.")
@verbosity
@click.argument("devices", nargs=-1, required=True, metavar="DEVICE...")
@name_option
@prefix_option
@click.option(
    "--ready-timeout", type=int, default=60, show_default=True, help="Seconds for it to become ready again."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout (only)."
)
def rollback(devices: tuple[str, ...], name: str, prefix: str, ready_timeout: int, as_json: bool) -> None:
    """Switch PREFIX/NAME/current back to the release before it; a service is restarted and must answer
    /readyz 200 again. Exits 8 when a device could not be rolled back."""
    from .deploy import DeployOptions, check_options
    from .deploy.fleet import FleetReport, read_devices, rollback_one

    opts = DeployOptions(name=name, prefix=prefix, ready_timeout_s=ready_timeout)
    check_options(opts)
    ui = reporter()
    echo = ui if ui.level == "verbose" else None
    report = FleetReport(results=[rollback_one(d, opts, echo) for d in read_devices(list(devices))])
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.table())
    failed = [r for r in report.results if not r.ok]
    if failed:
        raise DeviceError("; ".join(r.message for r in failed))


@click.command(short_help="Package BINARY for apt/dpkg (a .deb), optionally as a service.")
@verbosity
@click.argument("binary", type=click.Path(path_type=Path))
@name_option
@prefix_option
@click.option("--format", "fmt", type=click.Choice(["deb"]), default="deb", show_default=True)
@click.option("--service", is_flag=True, help="Install and start edgebundle-NAME.service (--serve).")
@click.option("--port", type=int, default=8080, show_default=True, help="--service: the port it serves on.")
@click.option("--host", default="0.0.0.0", show_default=True, help="--service: the address it listens on.")
@click.option(
    "--ready-timeout", type=int, default=60, show_default=True, help="--service: seconds to become ready."
)
@click.option(
    "--version", "version", help="The package version [default: 1.BUILDTIME+SHA12, newer builds sort higher]."
)
@click.option(
    "--maintainer",
    default="edgebundle <root@localhost>",
    show_default=True,
    help="The control file's Maintainer.",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Where to write NAME_VERSION_ARCH.deb.",
)
def package(
    binary: Path,
    name: str,
    prefix: str,
    fmt: str,
    service: bool,
    port: int,
    host: str,
    ready_timeout: int,
    version: str | None,
    maintainer: str,
    output_dir: Path,
) -> None:
    """Write a Debian package of BINARY: PREFIX/NAME/releases/SHA12/NAME and its current link, with
    --service the unit edgebundle deploy writes, enabled and restarted by the package's postinst (which
    fails, and dpkg says so, when the service does not start)."""
    from .deploy import DeployOptions, check_options
    from .deploy.deb import package_deb

    opts = DeployOptions(
        name=name, prefix=prefix, service=service, port=port, host=host, ready_timeout_s=ready_timeout
    )
    check_options(opts)
    click.echo(package_deb(binary, opts, output_dir, version, maintainer).summary())


COMMANDS = (deploy, status, rollback, package)
