"""The binary's command line: the two commonest forms skip argparse (common_args) and must give
exactly what argparse gives; every other form is argparse's."""

from __future__ import annotations

import pytest

from edgebundle.runtime.app import build_parser, common_args


@pytest.mark.parametrize(
    "argv",
    [["--self-test"], ["a.png"], ["a.png", "b.jpg", "c"], ["with space.png"], ["x.npz", "y.npy"]],
)
def test_the_common_command_lines_are_argparses(argv: list[str]) -> None:
    fast = common_args(argv)
    assert fast is not None
    assert vars(fast) == vars(build_parser("app").parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--self-test", "a.png"],
        ["-"],
        ["a.png", "--threads", "2"],
        ["--info"],
        ["--self"],  # argparse's abbreviations stay argparse's
        ["--", "a.png"],
        ["-h"],
        ["--self-test", "--self-test"],
    ],
)
def test_every_other_command_line_is_argparses(argv: list[str]) -> None:
    assert common_args(argv) is None
