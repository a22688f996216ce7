"""Uploads are checked before anything is stored: size, signature, header, pixel count, fields."""

import io
import os

import pytest

from conftest import (assert_422, assert_detail, encode_jpeg, jpeg, logged_in_client,
                      mentions_number, patch_jpeg_dimensions, photo_image)

MAX_UPLOAD = 100_000
MAX_REQUEST = 200_000
MAX_PIXELS = 16_000_000


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers(MAX_UPLOAD_BYTES=str(MAX_UPLOAD), MAX_REQUEST_BYTES=str(MAX_REQUEST),
                          MAX_IMAGE_PIXELS=str(MAX_PIXELS), MAX_BESTCUT_FILES="3")


def png_bytes():
    buf = io.BytesIO()
    photo_image(64, 48, "chelsea").save(buf, format="PNG")
    return buf.getvalue()


def minimal_jpeg_header(width, height):
    """SOI + SOF0 (8-bit, 3 components) declaring width x height + EOI: a header and nothing else."""
    sof = bytes([0xFF, 0xC0, 0x00, 0x11, 0x08]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") \
        + bytes([0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01])
    return b"\xff\xd8" + sof + b"\xff\xd9"


def big_jpeg(size):
    """A real photo as a JPEG of exactly `size` bytes: zeros after its EOI (decoders ignore them)."""
    data = encode_jpeg(photo_image(320, 240, "coffee"), quality=90)
    assert len(data) < size
    return data + b"\0" * (size - len(data))


def originals(server):
    d = server.path("storage/originals")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_bad_uploads_are_refused_and_leave_nothing(server):
    c = logged_in_client(server)
    real = jpeg(80, 60, "chelsea")
    assert len(real) < MAX_UPLOAD

    refusals = {
        "gif": b"GIF89a" + bytes(200),
        "bmp": b"BM" + bytes(200),
        "text": b"hello, this is a text file and not a JPEG at all\n" * 20,
        "empty": b"",
        "truncated": real[: len(real) // 2],
        "jpeg signature only": b"\xff\xd8\xff\xe0" + b"\0" * 200,
    }
    for what, data in refusals.items():
        r = c.upload(data)
        assert r.status_code == 400, (what, r.status_code, r.text)
        detail = assert_detail(r, 400)
        assert isinstance(detail, str) and detail, (what, detail)
    # The content decides, not the declared type or name.
    assert_detail(c.upload(b"GIF89a" + bytes(200), filename="x.jpg", content_type="image/jpeg"), 400)

    for what, data in {"patched real jpeg": patch_jpeg_dimensions(real, 60000, 60000),
                       "bare header": minimal_jpeg_header(60000, 60000),
                       "wide": patch_jpeg_dimensions(real, 16000, 1001)}.items():
        r = c.upload(data)
        assert r.status_code in (400, 413), (what, r.status_code, r.text)
        detail = assert_detail(r, r.status_code)
        assert isinstance(detail, str) and mentions_number(detail, MAX_PIXELS), (what, detail)

    # Over the per-file limit (but not over the request limit).
    r = c.upload(big_jpeg(MAX_UPLOAD * 3 // 2))
    detail = assert_detail(r, 413)
    assert isinstance(detail, str) and detail

    # Coordinates out of range or not numbers.
    for field, value in (("lat", 91), ("lat", -90.5), ("lng", 181), ("lng", -180.01),
                         ("lat", "nan"), ("lat", "inf"), ("lng", "-inf"), ("lat", "abc"),
                         ("lng", "1,5")):
        kw = {field: value}
        assert_422(c.upload(real, **kw), ["body", field])

    # The file field is missing.
    assert_422(c.post("/upscale", files={"lat": (None, "10")}), ["body", "file"])
    assert_422(c.post("/upscale", files={"photo": ("x.jpg", real, "image/jpeg")}), ["body", "file"])

    # Best cut: too many files (MAX_BESTCUT_FILES=3), and a body over MAX_REQUEST_BYTES made of
    # files that are each under MAX_UPLOAD_BYTES.
    r = c.bestcut([real] * 4)
    assert r.status_code in (400, 413), (r.status_code, r.text)
    detail = assert_detail(r, r.status_code)
    assert isinstance(detail, str) and mentions_number(detail, 3), detail
    piece = big_jpeg(90_000)
    assert len(piece) * 3 > MAX_REQUEST
    assert_detail(c.bestcut([piece, piece, piece]), 413)

    # Nothing of any of these was stored.
    assert originals(server) == []
    assert c.photos() == []

    # ... and the server still works for a good upload.
    r = c.upload(real)
    assert r.status_code == 200, r.text
    assert originals(server) == [f"{r.json()['id']}.jpg"]
    c.wait_status(r.json()["id"])


def test_upscale_without_multipart_is_422(server):
    # FastAPI reads a urlencoded or empty body as a form without `file`: 422, not 400.
    c = logged_in_client(server)
    assert_422(c.post("/upscale", data={"lat": "1"}), ["body", "file"])
    assert_422(c.post("/upscale"), ["body", "file"])
    assert_422(c.post("/bestcut", data={"lat": "1"}), ["body", "files"])
    assert c.photos() == []


def test_request_body_limit_answers_413(server):
    c = logged_in_client(server)
    body = big_jpeg(1_000_000)
    # requests must be able to read the answer: the connection is not simply dropped.
    r = c.upload(body)
    detail = assert_detail(r, 413)
    assert isinstance(detail, str) and detail
    # Same without a filename-looking part, as raw bytes to /bestcut.
    r = c.post("/bestcut", data=b"x" * 1_000_000,
               headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert_detail(r, 413)
    # A JSON body over the limit on /register is refused the same way.
    r = c.post("/register", data=b"{\"username\": \"" + b"a" * 1_000_000 + b"\"}",
               headers={"Content-Type": "application/json"})
    assert r.status_code in (413, 422), (r.status_code, r.text)
    assert_detail(r, r.status_code)
    # The server is still fine afterwards, and nothing was stored.
    assert c.photos() == []
    assert c.get("/health", auth=False).status_code == 200
