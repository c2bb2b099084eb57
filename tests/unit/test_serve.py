"""Pure pieces of the serving modes: HTTP parsing, multipart, metrics, error classification, batch
request lines. The real server and pipes are tested in tests/integration/test_serve.py and
test_batch.py."""

from __future__ import annotations

import argparse
import base64
import io
import sys
from typing import Any

import pytest
from PIL import Image

from edgebundle.runtime.app import check_options
from edgebundle.runtime.batch import parse_request
from edgebundle.runtime.http1 import HTTPError, frame, http_date, multipart_image, parse_head
from edgebundle.runtime.metrics import Histogram, Metrics
from edgebundle.runtime.preprocess import ImageError, decode, max_pixels
from edgebundle.runtime.serve import ROUTES
from edgebundle.runtime.workers import RequestError, classify


def test_parse_head_reads_method_path_headers_and_keep_alive() -> None:
    req = parse_head(b"\r\nPOST /v1/infer?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nConnection: Close")
    assert (req.method, req.path) == ("POST", "/v1/infer")
    assert req.headers["host"] == "a"
    assert req.headers["x-a"] == "1, 2"
    assert req.keep_alive is False
    assert parse_head(b"GET / HTTP/1.1").keep_alive is True
    assert parse_head(b"GET / HTTP/1.0").keep_alive is False
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive is True


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GET /",
        b"GET / HTTP/1.1 extra",
        b"GET / HTTP/2",
        b"G3T / HTTP/1.1",
        b"GET / HTTP/1.1\r\nbad",
        b"GET / HTTP/1.1\r\nA : b",
    ],
)
def test_parse_head_refuses_malformed_heads_with_400(head: bytes) -> None:
    with pytest.raises(HTTPError) as info:
        parse_head(head)
    assert info.value.error.status == 400
    assert info.value.close


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Length: 10\r\nContent-Length: 11", 400),
        ("Content-Length: 1e3", 400),
        ("Content-Length: +5", 400),
        ("Content-Length: 1001", 413),
        ("Content-Length: 99999999999999999999999999", 413),
        ("Transfer-Encoding: gzip", 501),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3", 400),
    ],
)
def test_frame_refuses_what_cannot_be_delimited_or_is_too_large(headers: str, status: int) -> None:
    req = parse_head(f"POST /v1/infer HTTP/1.1\r\n{headers}".encode())
    with pytest.raises(HTTPError) as info:
        frame(req, max_body=1000)
    assert info.value.error.status == status


def test_frame_accepts_lengths_and_chunked() -> None:
    req = parse_head(b"POST /v1/infer HTTP/1.1\r\nContent-Length: 1000")
    frame(req, max_body=1000)
    assert (req.length, req.chunked) == (1000, False)
    req = parse_head(b"POST /v1/infer HTTP/1.1\r\nTransfer-Encoding: Chunked")
    frame(req, max_body=1000)
    assert req.chunked


def _multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + b"--B--\r\n"


def _serve_options(**changes: Any) -> argparse.Namespace:
    opts = {
        "serve": True,
        "batch": False,
        "threads": None,
        "workers": None,
        "port": 8080,
        "timeout_ms": 10000.0,
        "read_timeout_ms": 10000.0,
        "max_body_mb": 16.0,
        "max_inflight_mb": 64.0,
        "max_megapixels": 40.0,
        "max_decode_mb": 128.0,
    }
    return argparse.Namespace(**{**opts, **changes})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, None),
        ({"workers": 0}, "--workers must be >= 1"),
        ({"port": 70000}, "--port must be 0..65535"),
        ({"max_inflight_mb": 0}, "--max-inflight-mb must be > 0"),
        ({"max_decode_mb": -1}, "--max-decode-mb must be > 0"),
        ({"max_body_mb": 128.0}, "--max-inflight-mb must be >= --max-body-mb"),
        ({"threads": 0}, "--threads must be >= 1"),
        ({"max_megapixels": 0}, "--max-megapixels must be > 0"),
        # --batch: the serving options it does not take are not its business
        ({"serve": False, "batch": True, "port": -1, "timeout_ms": 0, "max_body_mb": 128.0}, None),
        ({"serve": False, "batch": True, "workers": 0}, "--workers must be >= 1"),
        ({"serve": False, "batch": True, "max_body_mb": 0}, "--max-body-mb must be > 0"),
        ({"serve": False, "workers": 0}, None),
    ],
)
def test_serving_options_are_checked(changes: dict[str, Any], problem: str | None) -> None:
    found = check_options(_serve_options(**changes)) or ""
    assert found.startswith(problem or "")
    assert bool(found) == bool(problem)


def test_multipart_picks_the_image_field_then_a_file_then_the_first_part() -> None:
    ctype = 'multipart/form-data; boundary="B"'
    assert multipart_image(_multipart(("a", None, b"x"), ("image", None, b"IMG")), ctype) == b"IMG"
    assert multipart_image(_multipart(("a", None, b"x"), ("b", "f.png", b"F\r\n")), ctype) == b"F\r\n"
    assert multipart_image(_multipart(("a", None, b"x")), ctype) == b"x"
    for body, content_type in [
        (b"no delimiter", ctype),
        (b"--B\r\nno blank line\r\n--B--", ctype),
        (_multipart(("a", None, b"x")), "multipart/form-data"),
    ]:
        with pytest.raises(RequestError) as info:
            multipart_image(body, content_type)
        assert info.value.status == 400


def test_histogram_is_cumulative_with_inf_sum_and_count() -> None:
    h = Histogram()
    for seconds in (0.0001, 0.0005, 0.003, 100.0):
        h.observe(seconds)
    lines = dict(line.rsplit(" ", 1) for line in h.render("t", 'a="b"'))
    assert lines['t_bucket{a="b",le="0.0005"}'] == "2"
    assert lines['t_bucket{a="b",le="0.005"}'] == "3"
    assert lines['t_bucket{a="b",le="10.0"}'] == "3"
    assert lines['t_bucket{a="b",le="+Inf"}'] == "4"
    assert lines['t_count{a="b"}'] == "4"
    assert float(lines['t_sum{a="b"}']) == pytest.approx(100.0036)


def test_metrics_render_counts_by_route_and_status_and_labels_the_model() -> None:
    manifest: dict[str, Any] = {
        "model": {"sha256": "ab" * 32, "source_name": 'od"d.tflite'},
        "interpreter": {"name": "tflite-runtime", "version": "2.14.0"},
    }
    m = Metrics(manifest, workers=3, paths=ROUTES)
    m.count("/v1/infer", 200, 0.01)
    m.count("/v1/infer", 200, 0.02)
    m.count("/../etc", 404, None)
    text = m.render(ready=True, body_bytes=0)
    assert 'ebrt_http_requests_total{path="/v1/infer",code="200"} 2' in text
    assert 'ebrt_http_requests_total{path="other",code="404"} 1' in text  # no path label explosion
    assert 'ebrt_request_duration_seconds_count{path="/v1/infer"} 2' in text
    assert f'model_sha256="{"ab" * 32}",model_file="od\\"d.tflite"' in text
    assert "ebrt_workers 3" in text
    assert "ebrt_ready 1" in text


def test_http_date_is_rfc_9110_imf_fixdate() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1_700_000_000) == "Tue, 14 Nov 2023 22:13:20 GMT"


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_classify_maps_bombs_to_413_bad_images_to_400_and_bugs_to_500() -> None:
    saved = Image.MAX_IMAGE_PIXELS
    try:
        limit = max_pixels(0.001)  # 1000 pixels
        for size in ((40, 40), (1000, 1000)):
            with pytest.raises(ImageError) as info:
                decode(_png(*size), limit)
            err = classify(info.value)
            assert (err.status, err.code) == (413, "image_too_large"), size
            assert f"{size[0]}x{size[1]}" in err.message
            assert "--max-megapixels" in err.message
        decode(_png(30, 30), limit)
        Image.MAX_IMAGE_PIXELS = 1000  # Pillow's own check, if it is on, gives the same answer
        with pytest.raises(ImageError) as info:
            decode(_png(100, 100))
        assert classify(info.value).status == 413
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with pytest.raises(ImageError) as bad:
        decode(b"not an image")
    err = classify(bad.value)
    assert (err.status, err.code) == (400, "bad_image")
    assert "BytesIO" not in err.message
    assert classify(KeyError("x")).status == 500


def test_batch_request_lines() -> None:
    echo: dict[str, Any] = {}
    assert parse_request(b'{"path": "a.png", "id": [1]}', echo) == "a.png"
    assert echo == {"id": [1], "image": "a.png"}
    data = base64.b64encode(b"\x89PNG").decode()
    assert parse_request(f'{{"image_b64": "{data}"}}'.encode(), {}) == b"\x89PNG"
    for line in [
        b"",
        b"\xff",
        b"3",
        b"{}",
        b'{"path": ""}',
        b'{"path": 3}',
        b'{"image_b64": "*"}',
        b'{"image_b64": ""}',
    ]:
        with pytest.raises(RequestError) as info:
            parse_request(line, {})
        assert info.value.status == 400, line


def test_serving_modules_are_not_imported_by_the_plain_cli() -> None:
    import subprocess

    code = (
        "import sys, edgebundle.runtime.app;"
        "print(sorted(m for m in sys.modules if m.endswith(('.serve', '.batch', '.workers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_listen_on_localhost_without_a_hosts_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare root has no /etc/hosts: "localhost" is still loopback; another unknown name fails."""
    import socket

    from edgebundle.runtime import serve

    real = socket.getaddrinfo

    def no_hosts_file(host: object, *args: object, **kwargs: object) -> object:
        if host in (b"localhost", b"gateway.invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", no_hosts_file)
    sock = serve._listen("localhost", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    with pytest.raises(socket.gaierror):
        serve._listen("gateway.invalid", 0)
