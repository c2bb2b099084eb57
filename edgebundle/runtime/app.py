"""The binary's command line: ``APP IMAGE...``, ``--save-outputs``, ``--info``, ``--self-test``,
``--batch`` (batch.py) and ``--serve`` (serve.py); those two are imported only when asked for.

Hidden, for ``edgebundle test`` on a device that has nothing but a shell: ``--eb-measure ...`` (times
and measures whole runs of a command, see measure.py; handled before anything else is imported so
that the measurer stays small) and ``--eb-bench N [IMAGE]`` (inference latency inside this process).

Exit codes: 0 success; 1 self-test failed, or (``--info``, ``--self-test``) the model's bytes do not
match the manifest; 2 an input (or argument) was bad, the others were still processed; 3 the bundled
model could not be loaded; 70 an unexpected internal error (one line on stderr; EDGEBUNDLE_DEBUG=1
shows the traceback), or the launcher could not start the runtime at all. The same list is the
``--help`` epilog and the README's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import types
from typing import TYPE_CHECKING, Any

from .exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_MODEL

# When the runtime's Python code began (the entry script imports this module first), and when the
# launcher started (it passes the time): the start-up split of --eb-bench.
ENTERED_NS = time.monotonic_ns()
T0_ENV = "_EDGEBUNDLE_T0"

if TYPE_CHECKING:
    import argparse

    from .manifest import Manifest


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(prog: str) -> argparse.ArgumentParser:
    import argparse  # not for APP IMAGE... and APP --self-test: common_args

    # argparse passes every message through gettext, which imports locale and probes the locale
    # directories for a catalog at each of them (~25 per start); a binary carries no catalogs, so the
    # messages are what they would be anyway.
    argparse._ = lambda message: message  # type: ignore[attr-defined]
    argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore[attr-defined]

    class Formatter(argparse.HelpFormatter):
        """argparse's formatter at the width shutil.get_terminal_size gives (COLUMNS, else the
        terminal, else 80), found without importing shutil (argparse makes one per option)."""

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_columns())

    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=Formatter,
        description="Run the bundled TFLite model on images. One JSON line per image on stdout.",
        epilog="exit codes: 0 ok; 1 self-test failed, or the model does not match the manifest; 2 a bad "
        "input or argument (the other images are still processed); 3 the model cannot be loaded; "
        "70 internal error (EDGEBUNDLE_DEBUG=1 shows why) or the runtime cannot be started",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files (.npy/.npz: raw)")
    parser.add_argument("--save-outputs", metavar="OUT.npz", help="write raw output tensors")
    parser.add_argument(
        "--annotate", metavar="OUT.png", help="detection models, one IMAGE: draw the detections on it"
    )
    parser.add_argument("--info", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--self-test", action="store_true", help="check the embedded sample (health check)")
    parser.add_argument("--version", action="store_true", help="what this binary is and was built with")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (at most the CPUs)")
    parser.add_argument(
        "--score-threshold", type=float, metavar="S", help="detection models: the recipe's score threshold"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=40,
        help="refuse larger images from their header, before decoding (default %(default)s)",
    )
    parser.add_argument("--eb-bench", type=int, metavar="N", help=argparse.SUPPRESS)
    modes = parser.add_argument_group("batch and service modes")
    modes.add_argument(
        "--batch",
        action="store_true",
        help='JSON lines on stdin ({"path": ...} or {"image_b64": ..., "id": ...}), a result line each',
    )
    modes.add_argument(
        "--serve",
        action="store_true",
        help="HTTP: POST /v1/infer (image body or multipart field 'image'), GET /healthz, /readyz, "
        "/metrics, /v1/info; SIGTERM drains",
    )
    modes.add_argument("--host", default="127.0.0.1", help="address (default %(default)s)")
    modes.add_argument("--port", type=int, default=8080, help="0 = any free (default %(default)s)")
    modes.add_argument("--workers", type=int, help="interpreters (default: --serve CPUs, --batch 1)")
    modes.add_argument("--timeout-ms", type=float, default=10000, help="504 after (default %(default)s)")
    modes.add_argument("--read-timeout-ms", type=float, default=10000, help="408 after (default %(default)s)")
    modes.add_argument("--max-body-mb", type=float, default=16, help="413 over (default %(default)s)")
    modes.add_argument(
        "--max-inflight-mb",
        type=float,
        default=64,
        help="all bodies read at once; 503 over (default %(default)s)",
    )
    modes.add_argument(
        "--max-decode-mb",
        type=float,
        default=128,
        help="memory for decoding images, all workers together; more waits (default %(default)s)",
    )
    modes.add_argument("--access-log", action="store_true", help="log every request, not only errors")
    return parser


# What argparse gives for the two commonest command lines, APP IMAGE... and APP --self-test (a
# health check every few seconds), kept equal to build_parser's defaults by a test.
DEFAULTS: dict[str, Any] = {
    "images": [],
    "save_outputs": None,
    "annotate": None,
    "info": False,
    "self_test": False,
    "version": False,
    "threads": None,
    "score_threshold": None,
    "max_megapixels": 40,
    "eb_bench": None,
    "batch": False,
    "serve": False,
    "host": "127.0.0.1",
    "port": 8080,
    "workers": None,
    "timeout_ms": 10000,
    "read_timeout_ms": 10000,
    "max_body_mb": 16,
    "max_inflight_mb": 64,
    "max_decode_mb": 128,
    "access_log": False,
}


def common_args(args_list: list[str]) -> Any:
    """The options of ``APP IMAGE...`` (no argument starting with "-") and ``APP --self-test`` without
    argparse, which costs a start ~6 ms of imports (argparse, gettext, locale) and building the
    parser; None for any other command line, which argparse parses."""
    if args_list == ["--self-test"]:
        return types.SimpleNamespace(**{**DEFAULTS, "self_test": True})
    if args_list and not any(a.startswith("-") for a in args_list):
        return types.SimpleNamespace(**{**DEFAULTS, "images": list(args_list)})
    return None


def main(argv: list[str] | None = None) -> int:
    prog = os.path.basename(sys.argv[0]) or "app"
    launched = os.environ.pop(T0_ENV, "")
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--eb-measure"]:
        from .measure import main as measure_main

        return measure_main(args_list[1:], prog=prog)
    args = common_args(args_list)
    if args is None:
        args = build_parser(prog).parse_args(args_list)
    problem = check_options(args)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from .payload import open_bundle
    from .session import bundle_dir, read_manifest

    # The payload appended to the binary (passed by the launcher), else the files next to the runtime.
    root = open_bundle(bundle_dir())
    manifest = read_manifest(root)
    if args.version:
        print(_version(prog, manifest))
        return 0
    if args.info or args.self_test:
        # The model bytes the binary really carries against the manifest, BEFORE the interpreter
        # sees them: a tampered or damaged model can crash it.
        digest = root.check_digest(manifest["model"]["file"])
        intact = digest == manifest["model"]["check_digest"]
        if args.info:
            manifest["model_check"] = {"blake2b_256": digest, "matches_manifest": intact}
            _print_json(manifest)
        if not intact:
            print(
                f"{prog}: error: the model's BLAKE2b digest {digest} does not match the manifest "
                "(the binary was tampered with or damaged)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if args.info:
            return 0
    if args.score_threshold is not None:
        from .session import is_detection

        if not is_detection(manifest) or not math.isfinite(args.score_threshold):
            print(
                f"{prog}: error: --score-threshold takes a number, for detection models only", file=sys.stderr
            )
            return EXIT_BAD_INPUT
        if args.serve:
            build_parser(prog).error("--serve takes ?score_threshold= per request, not --score-threshold")
    from .session import cap_threads, default_threads

    # More interpreter threads than CPUs only thrash (and --threads 100000 never finished starting).
    args.threads, capped = cap_threads(args.threads or default_threads())
    if capped and not args.serve:  # --serve logs it as JSON, like everything it says
        print(f"{prog}: warning: {capped}", file=sys.stderr)
    args.threads_capped = capped
    if args.serve or args.batch:
        if (args.serve and args.batch) or args.images or args.self_test or args.save_outputs or args.annotate:
            build_parser(prog).error("--serve and --batch take no IMAGE and no other mode")
        if args.serve:
            from .serve import main as serve_main

            return serve_main(prog, root, manifest, args)
        from .batch import main as batch_main

        return batch_main(prog, root, manifest, args)
    if not args.images and not args.self_test and args.eb_bench is None:
        build_parser(prog).print_usage(sys.stderr)
        print(f"{prog}: error: give IMAGE files, --self-test or --info", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.save_outputs and len(args.images) != 1:
        print(f"{prog}: error: --save-outputs takes exactly one IMAGE", file=sys.stderr)
        return EXIT_BAD_INPUT
    annotate = None
    if args.annotate:
        from .session import is_detection

        if not is_detection(manifest):
            print(f"{prog}: error: --annotate draws detections: for detection models only", file=sys.stderr)
            return EXIT_BAD_INPUT
        if len(args.images) != 1 or args.images[0].endswith((".npy", ".npz")):
            print(f"{prog}: error: --annotate takes exactly one IMAGE (not raw tensors)", file=sys.stderr)
            return EXIT_BAD_INPUT
        from .npz import AtomicOutput, OutputError

        others = [args.images[0], *([args.save_outputs] if args.save_outputs else [])]
        if any(_same_file(args.annotate, other) for other in others):
            print(f"{prog}: error: {args.annotate}: --annotate names an input or output too", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:  # before any work, as --save-outputs
            annotate = AtomicOutput(args.annotate, refuse=_own_files(root))
        except OutputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    output = None
    if args.save_outputs:
        from .npz import AtomicOutput, OutputError

        try:  # before any work: a path that cannot be written is known now, not after inferring
            output = AtomicOutput(args.save_outputs, refuse=_own_files(root))
        except OutputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    from .model import ModelLoadError
    from .preprocess import max_pixels
    from .session import Session

    if args.eb_bench is not None:  # the interpreter's import counted with the others, not the load
        import importlib

        importlib.import_module(manifest["interpreter"]["module"])
    imported_ns = time.monotonic_ns()
    try:
        try:
            session = Session(root, manifest, args.threads, max_pixels(args.max_megapixels))
        except ModelLoadError as exc:
            print(f"{prog}: error: cannot load the bundled model: {exc}", file=sys.stderr)
            return EXIT_MODEL
        if args.eb_bench is not None:
            split = _startup_split(launched, imported_ns, time.monotonic_ns())
            return _bench(prog, session, args.images, args.eb_bench, split)
        if args.self_test:
            return _self_test(prog, session)
        session.score_threshold = args.score_threshold
        return _run_images(prog, session, args.images, output, annotate)
    finally:
        for out in (output, annotate):
            if out is not None:
                out.discard()


def check_options(opts: argparse.Namespace) -> str | None:
    """The first problem with the values of the options (of every mode, checked here only), or None."""
    if opts.threads is not None and opts.threads < 1:
        return "--threads must be >= 1"
    if opts.max_megapixels <= 0:
        return "--max-megapixels must be > 0"
    if not (opts.serve or opts.batch):
        return None
    if opts.workers is not None and opts.workers < 1:
        return "--workers must be >= 1"
    if opts.serve and not 0 <= opts.port <= 65535:
        return "--port must be 0..65535"
    serve_only = ("timeout_ms", "read_timeout_ms", "max_inflight_mb")
    for name in ("timeout_ms", "read_timeout_ms", "max_body_mb", "max_inflight_mb", "max_decode_mb"):
        if (opts.serve or name not in serve_only) and getattr(opts, name) <= 0:
            return f"--{name.replace('_', '-')} must be > 0"
    if opts.serve and opts.max_inflight_mb < opts.max_body_mb:
        return "--max-inflight-mb must be >= --max-body-mb (a single largest body must fit)"
    return None


def _own_files(root: Any) -> set[tuple[int, int]]:
    """(device, inode) of this program's files: the binary (its payload's descriptor), the
    unpacked runner, and the program as invoked."""
    stats = []
    fd = getattr(root, "fd", None)
    if fd is not None:
        stats.append(os.fstat(fd))
    for path in ("/proc/self/exe", sys.executable, sys.argv[0] if "/" in sys.argv[0] else ""):
        with contextlib.suppress(OSError):
            stats.append(os.stat(path))
    return {(st.st_dev, st.st_ino) for st in stats}


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _run_images(prog: str, session: Any, images: list[str], output: Any, annotate: Any = None) -> int:
    from .preprocess import ImageError

    status = 0
    for path in images:
        try:
            feeds = session.feeds_for_file(path)
        except ImageError as exc:
            print(f"{prog}: error: {path}: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        values, ms = session.infer(feeds)
        if output is not None:
            from .model import named_outputs
            from .npz import OutputError, save_npz

            try:
                save_npz(output, named_outputs(session.outputs, values))
            except OutputError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
        result: dict[str, Any] = {"image": path}
        result.update(session.result(values))
        result["latency_ms"] = round(ms, 3)
        if annotate is not None:
            status = _annotate(prog, session, path, result["detections"], annotate) or status
        _print_json(result)
    return status


def _annotate(prog: str, session: Any, path: str, detections: list[Any], out: Any) -> int:
    """Draw ``detections`` on the image at ``path`` into ``out`` (an AtomicOutput); 0 or the exit
    code of the failure (said in one line)."""
    from .annotate import annotate, save
    from .npz import OutputError
    from .preprocess import ImageError

    try:
        img = annotate(path, detections, session.max_pixels)
        out.commit(lambda f: save(img, f, out.path))
    except ImageError as exc:
        print(f"{prog}: error: {path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OutputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _startup_split(launched: str, imported_ns: int, loaded_ns: int) -> dict[str, float | None]:
    """ms of each start-up phase: the launcher, the bootloader and Python's initialisation (``runtime``,
    None without the launcher's time), the imports (NumPy, Pillow, the interpreter's module), the
    model's load into the interpreter (``model_load``, TFLite's "init")."""

    def ms(ns: int) -> float:
        return round(ns / 1e6, 3)

    return {
        "runtime": ms(ENTERED_NS - int(launched)) if launched.isdigit() else None,
        "imports": ms(imported_ns - ENTERED_NS),
        "model_load": ms(loaded_ns - imported_ns),
    }


def _bench(prog: str, session: Any, images: list[str], runs: int, split: dict[str, float | None]) -> int:
    from .measure import bench
    from .preprocess import ImageError

    if len(images) > 1 or runs < 1:
        print(f"{prog}: error: --eb-bench N takes N >= 1 and at most one IMAGE", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        feeds = session.feeds_for_file(images[0]) if images else session.selftest_feeds()
    except ImageError as exc:
        print(f"{prog}: error: {images[0] if images else 'self-test image'}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return bench(lambda: float(session.infer(feeds)[1]), runs, startup=split)


def _self_test(prog: str, session: Any) -> int:
    from .selftest import run_self_test

    result = run_self_test(session)
    _print_json(result)
    if result["problems"]:
        print(f"{prog}: self-test failed: {'; '.join(result['problems'])}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _version(prog: str, manifest: Manifest) -> str:
    model, interp = manifest["model"], manifest["interpreter"]
    return (
        f"{prog}: model {model['source_name']} (sha256 {model['sha256'][:12]}), "
        f"recipe {manifest['recipe'].get('name', '?')}, target {manifest['target']['name']}; "
        f"built by edgebundle {manifest['edgebundle_version']} with {manifest['backend']}, "
        f"{interp['name']} {interp['version']}, Python {manifest['python']}, "
        f"{'NumPy ' + manifest['numpy'] if manifest['numpy'] else 'no NumPy'}, Pillow {manifest['pillow']}"
    )


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def entry() -> None:
    """The frozen program's entry point: no traceback reaches the user unless EDGEBUNDLE_DEBUG=1."""
    from .deferred import install

    install()  # before Pillow, NumPy and the interpreter: deferred.DEFERRED only when used
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:
        if os.environ.get("EDGEBUNDLE_DEBUG"):
            raise
        prog = os.path.basename(sys.argv[0])
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_INTERNAL
    leave(code)


def leave(code: int) -> None:
    """Exit with ``code`` once stdout and stderr are flushed, without Python's finalization: tearing
    down every module and freeing every object is ~7 ms of a ~50 ms start (the face detector, lean
    target) and has nothing left to do here. Python exits as usual (sys.exit) while another
    non-daemon thread is alive, which it would wait for, or when a stream cannot be flushed."""
    threading = sys.modules.get("threading")
    if threading is not None and any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
    ):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            continue  # the reader is gone, nothing more to deliver (as main's own BrokenPipeError)
        except (OSError, ValueError):
            sys.exit(code)  # Python says what it could not write
    os._exit(code)
