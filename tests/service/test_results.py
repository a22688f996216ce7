"""SPEC "Version 2 > Results": outscale, format, MAX_OUTPUT_PIXELS, PNG/WebP/HEIC inputs, previews,
metadata, the new photo fields and GET /photos/{id}/info, download headers (ETag, Range, Cache-Control),
nothing left on disk, and seed compatibility.  Inputs are small crops of real photos (about 48x40 px) so
each Real-ESRGAN job takes well under a second."""

import re
import uuid

import pytest
from PIL import Image, ImageFilter, ImageOps

from conftest import (PHOTO_KEYS, UUID_RE, Client, assert_422, assert_detail, assert_upscaled_of,
                      decode, encode_jpeg, jpeg, logged_in_client, mentions_number, photo_image,
                      psnr)
import results_images as ri

MAX_PIXELS = 16_000_000
SEED_UPLOAD_MESSAGE = "Upload successful, processing in background"
SEED_BESTCUT_MESSAGE = "Best cut selected, processing in background"
NEW_KEYS = {"outscale", "format", "width", "height", "upscaled_width", "upscaled_height"}
EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}
PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
TYPES = ("original", "upscaled", "thumbnail", "preview")

# The tuned server: small output limit and previews, so the cases stay tiny.
TUNED_MAX_OUTPUT = 100_000
TUNED_THUMBNAIL = 64
TUNED_PREVIEW = 100


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers(MAX_IMAGE_PIXELS=str(MAX_PIXELS))


@pytest.fixture(scope="module")
def tuned(module_servers):
    return module_servers(MAX_IMAGE_PIXELS=str(MAX_PIXELS), MAX_OUTPUT_PIXELS=str(TUNED_MAX_OUTPUT),
                          THUMBNAIL_SIZE=str(TUNED_THUMBNAIL), PREVIEW_SIZE=str(TUNED_PREVIEW))


# ---------------------------------------------------------------- helpers

def upload(c, data, filename="x.jpg", content_type="image/jpeg", **fields):
    """POST /upscale with the file and these form fields (values sent as given, as text)."""
    return c.post("/upscale", files={"file": (filename, data, content_type)},
                  data={k: str(v) for k, v in fields.items()})


def upload_ok(c, data, **kw):
    r = upload(c, data, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["message"] == SEED_UPLOAD_MESSAGE, body
    assert UUID_RE.match(body["id"]), body
    return body["id"]


def bestcut(c, shots, **fields):
    parts = [("files", (f"shot{i}.jpg", d, "image/jpeg")) for i, d in enumerate(shots)]
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    return c.post("/bestcut", files=parts)


def fetch(c, photo_id, kind, **kw):
    return c.get(f"/photos/{photo_id}", params={"type": kind}, **kw)


def fetch_ok(c, photo_id, kind, content_type="image/jpeg"):
    r = fetch(c, photo_id, kind)
    assert r.status_code == 200, (kind, r.status_code, r.text)
    assert r.headers["Content-Type"] == content_type, (kind, r.headers)
    return r.content


def info(c, photo_id):
    r = c.get(f"/photos/{photo_id}/info")
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    return r.json()


def size_of(data):
    with decode(data) as im:
        return im.size


def snapshot(server, client):
    return server.storage_files(), [p["id"] for p in client.photos()]


def files_of(server, photo_id):
    """Every file under the storage dir with the photo id anywhere in its path."""
    return [f for f in server.storage_files() if photo_id in f]


def assert_longest(size, expected_size, what):
    """size == expected_size on the longest side, the other side to within 1 px."""
    (w, h), (ew, eh) = size, expected_size
    if ew >= eh:
        assert w == round(ew) and abs(h - eh) <= 1, (what, size, expected_size)
    else:
        assert h == round(eh) and abs(w - ew) <= 1, (what, size, expected_size)


def assert_looks_like(data, reference, what, min_db=25):
    """The decoded image, resized to the reference, is the same picture (catches a wrong rotation)."""
    with decode(data) as im:
        back = im.convert("RGB").resize(reference.size, Image.BOX)
    q = psnr(back, reference.convert("RGB"))
    assert q >= min_db, f"{what}: does not look like its source ({q:.1f} dB)"


def assert_number(v, expected, what):
    assert isinstance(v, (int, float)) and not isinstance(v, bool), (what, v)
    assert v == pytest.approx(expected), (what, v, expected)


def check_fields(entry, photo_id, *, outscale, fmt, size, upscaled=None, original_ext="jpg", what=""):
    assert PHOTO_KEYS | NEW_KEYS <= set(entry), (what, sorted(entry))
    assert entry["id"] == photo_id
    assert entry["original_path"] == f"storage/originals/{photo_id}.{original_ext}", entry
    assert_number(entry["outscale"], outscale, "outscale")
    assert entry["format"] == fmt, entry
    for k, v in (("width", size[0]), ("height", size[1])):
        assert isinstance(entry[k], int) and not isinstance(entry[k], bool) and entry[k] == v, (what, k, v, entry)
    if entry["status"] == "completed":
        assert entry["upscaled_path"] == f"storage/upscaled/{photo_id}.{EXT[fmt]}", entry
        if upscaled is not None:
            assert (entry["upscaled_width"], entry["upscaled_height"]) == tuple(upscaled), entry
    else:
        assert entry["upscaled_path"] is None, entry
        assert entry["upscaled_width"] is None and entry["upscaled_height"] is None, entry


# ---------------------------------------------------------------- seed compatibility

def test_seed_upload_is_unchanged(server):
    """An upload with none of the new fields: the seed's message, a 4x JPEG, .jpg paths."""
    c = logged_in_client(server)
    original = jpeg(48, 40, "chelsea")
    r = upload(c, original)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["message"] == SEED_UPLOAD_MESSAGE and UUID_RE.match(body["id"]), body
    photo_id = body["id"]
    entry = c.wait_status(photo_id)
    assert PHOTO_KEYS <= set(entry), entry
    assert entry["original_path"] == f"storage/originals/{photo_id}.jpg", entry
    assert entry["upscaled_path"] == f"storage/upscaled/{photo_id}.jpg", entry
    up = fetch_ok(c, photo_id, "upscaled")
    assert c.get(f"/photos/{photo_id}").content == up
    assert_upscaled_of(up, original)  # JPEG, exactly 4x, the same picture
    assert fetch_ok(c, photo_id, "original") == original

    shots = [encode_jpeg(photo_image(48, 40, "coffee").filter(ImageFilter.GaussianBlur(2))),
             jpeg(48, 40, "coffee")]
    r = c.bestcut(shots)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["message"] == SEED_BESTCUT_MESSAGE and isinstance(body["score"], float), body
    entry = c.wait_status(body["id"])
    assert entry["upscaled_path"] == f"storage/upscaled/{body['id']}.jpg", entry
    assert_upscaled_of(fetch_ok(c, body["id"], "upscaled"), shots[1])


def test_seed_upload_has_the_new_defaults(server):
    c = logged_in_client(server)
    original = jpeg(48, 40, "grace_hopper")
    photo_id = upload_ok(c, original)
    explicit = upload_ok(c, original, outscale="4", format="jpeg")
    for pid in (photo_id, explicit):
        entry = c.wait_status(pid)
        check_fields(entry, pid, outscale=4, fmt="jpeg", size=(48, 40), upscaled=(192, 160))
    # outscale=4 is the network's own output, as with no field at all.
    a, b = fetch_ok(c, photo_id, "upscaled"), fetch_ok(c, explicit, "upscaled")
    assert size_of(a) == size_of(b) == (192, 160)
    with decode(a) as ia, decode(b) as ib:
        assert psnr(ia.convert("RGB"), ib.convert("RGB")) >= 40


# ---------------------------------------------------------------- outscale

OUTSCALES = ("2", "2.5", "3", "4", "4.0", "1.5", "1.25", "3.75", "1.01")


def test_outscale_sizes(server):
    """round(w * s) x round(h * s), halves up: 45x37 at 2.5 is 113x93 (112.5, 92.5), at 1.5 68x56."""
    c = logged_in_client(server)
    original = jpeg(45, 37, "chelsea")
    ids = {s: upload_ok(c, original, outscale=s) for s in OUTSCALES}
    with decode(original) as o:
        reference = o.convert("RGB")
    for s, photo_id in ids.items():
        want = (ri.scaled(45, s), ri.scaled(37, s))
        entry = c.wait_status(photo_id)
        check_fields(entry, photo_id, outscale=float(s), fmt="jpeg", size=(45, 37), upscaled=want)
        up = fetch_ok(c, photo_id, "upscaled")
        with decode(up) as im:
            assert im.format == "JPEG" and im.size == want, (s, im.format, im.size, want)
        assert_looks_like(up, reference, f"outscale {s}")
    assert (ri.scaled(45, "2.5"), ri.scaled(37, "2.5")) == (113, 93)


def test_outscale_and_format_invalid(server):
    c = logged_in_client(server)
    good = jpeg(48, 40, "coffee")
    before = snapshot(server, c)
    for bad in ("1", "1.0", "0.5", "0", "-2", "4.01", "5", "abc", "nan", "inf", "-inf", "", "2,5", "1e400"):
        assert_422(upload(c, good, outscale=bad), ["body", "outscale"])
        assert_422(bestcut(c, [good], outscale=bad), ["body", "outscale"])
    for bad in ("gif", "JPEG", "jpg", "Png", "tiff", "heic", ""):
        assert_422(upload(c, good, format=bad), ["body", "format"])
        assert_422(bestcut(c, [good], format=bad), ["body", "format"])
    # Every error at once, as FastAPI reports them.
    assert_422(upload(c, good, outscale="9", format="gif", lat="100"),
               ["body", "outscale"], ["body", "format"], ["body", "lat"])
    assert snapshot(server, c) == before, "a refused upload left something behind"


# ---------------------------------------------------------------- format

def test_output_formats(server):
    c = logged_in_client(server)
    original = jpeg(48, 40, "chelsea")
    with decode(original) as o:
        reference = o.convert("RGB")
    cases = [("jpeg", "4"), ("png", "4"), ("webp", "4"), ("png", "2.5"), ("webp", "3")]
    ids = [(fmt, s, upload_ok(c, original, format=fmt, outscale=s)) for fmt, s in cases]
    for fmt, s, photo_id in ids:
        want = (ri.scaled(48, s), ri.scaled(40, s))
        entry = c.wait_status(photo_id)
        check_fields(entry, photo_id, outscale=float(s), fmt=fmt, size=(48, 40), upscaled=want)
        assert entry["upscaled_path"].endswith("." + EXT[fmt]), entry
        data = fetch_ok(c, photo_id, "upscaled", MIME[fmt])
        assert c.get(f"/photos/{photo_id}").content == data
        with decode(data) as im:
            assert im.format == PIL_FORMAT[fmt] and im.size == want, (fmt, s, im.format, im.size)
        with open(server.path(entry["upscaled_path"]), "rb") as f:
            assert f.read() == data
        assert_looks_like(data, reference, f"{fmt} x{s}")
        # The original is still the uploaded JPEG.
        assert fetch_ok(c, photo_id, "original") == original


def test_bestcut_outscale_and_format(server):
    c = logged_in_client(server)
    img = photo_image(45, 37, "coffee")
    sharp = encode_jpeg(img, quality=92)
    blurred = encode_jpeg(img.filter(ImageFilter.GaussianBlur(2)), quality=92)
    r = bestcut(c, [blurred, sharp], outscale="2.5", format="webp")
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["message"] == SEED_BESTCUT_MESSAGE, body
    entry = c.wait_status(body["id"])
    check_fields(entry, body["id"], outscale=2.5, fmt="webp", size=(45, 37), upscaled=(113, 93))
    data = fetch_ok(c, body["id"], "upscaled", "image/webp")
    with decode(data) as im:
        assert im.format == "WEBP" and im.size == (113, 93), (im.format, im.size)
    assert fetch_ok(c, body["id"], "original") == sharp
    thumb = fetch_ok(c, body["id"], "thumbnail")
    assert size_of(thumb) == (45, 37)
    assert_looks_like(thumb, img, "best cut thumbnail")


# ---------------------------------------------------------------- MAX_OUTPUT_PIXELS

def numbers_in(text):
    return [float(m) for m in re.findall(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.])", text)]


def output_pixels(w, h, s):
    return ri.scaled(w, s) * ri.scaled(h, s)


def largest_outscale(w, h, limit):
    """The supremum of the outscales whose result fits (the product is monotone in s)."""
    lo, hi = 1.0, 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if round_half_up(w * mid) * round_half_up(h * mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def round_half_up(x):
    return int(x + 0.5)


def test_max_output_pixels(tuned):
    c = logged_in_client(tuned)
    w, h = 96, 80  # 4x: 384 x 320 = 122,880 > 100,000
    original = jpeg(w, h, "chelsea")
    before = snapshot(tuned, c)

    for fields in ({}, {"outscale": "4"}, {"outscale": "3.7", "format": "png"}):
        r = upload(c, original, **fields)
        detail = assert_detail(r, 413)
        assert isinstance(detail, str) and "outscale" in detail, (fields, detail)
    r = bestcut(c, [original, original])
    detail = assert_detail(r, 413)
    assert isinstance(detail, str) and "outscale" in detail, detail
    assert snapshot(tuned, c) == before, "a refused upload left something behind"

    # The detail names the largest outscale that fits: a number in (1, 4] that fits, close to the limit.
    best = largest_outscale(w, h, TUNED_MAX_OUTPUT)
    named = [n for n in numbers_in(detail) if 1 < n <= 4]
    assert named, f"no outscale in (1, 4] named in {detail!r}"
    fitting = [n for n in named
               if round_half_up(w * n) * round_half_up(h * n) <= TUNED_MAX_OUTPUT and n >= best - 0.1]
    assert fitting, f"none of {named} in {detail!r} fits {TUNED_MAX_OUTPUT} px (largest: {best:.4f})"
    s = repr(max(fitting))
    photo_id = upload_ok(c, original, outscale=s)
    want = (round_half_up(w * float(s)), round_half_up(h * float(s)))
    entry = c.wait_status(photo_id)
    check_fields(entry, photo_id, outscale=float(s), fmt="jpeg", size=(w, h), upscaled=want)
    assert size_of(fetch_ok(c, photo_id, "upscaled")) == want

    # A smaller outscale that fits is accepted for the same photo.
    ok = upload_ok(c, original, outscale="2")
    entry = c.wait_status(ok)
    check_fields(entry, ok, outscale=2.0, fmt="jpeg", size=(w, h), upscaled=(192, 160))


# ---------------------------------------------------------------- inputs

INPUTS = {
    # name: (bytes-maker, filename, content type, stored extension, content type answered)
    "png": (lambda: ri.png(48, 40, "chelsea"), "x.png", "image/png", "png", "image/png"),
    "png rgba": (lambda: ri.png(48, 40, "coffee", mode="RGBA"), "a.png", "image/png", "png", "image/png"),
    "png grayscale": (lambda: ri.png(48, 40, "grace_hopper", mode="L"), "g.png", "image/png", "png",
                      "image/png"),
    "webp lossy": (lambda: ri.webp(48, 40, "chelsea"), "x.webp", "image/webp", "webp", "image/webp"),
    "webp lossless": (lambda: ri.webp(48, 40, "coffee", lossless=True), "y.webp", "image/webp", "webp",
                      "image/webp"),
}


def test_png_and_webp_inputs(server):
    c = logged_in_client(server)
    made = {what: maker() for what, (maker, *_rest) in INPUTS.items()}
    ids = {}
    for what, (_, filename, ctype, _ext, _) in INPUTS.items():
        ids[what] = upload_ok(c, made[what], filename=filename, content_type=ctype)
    for what, (_, _fn, _ct, ext, answered) in INPUTS.items():
        photo_id, data = ids[what], made[what]
        entry = c.wait_status(photo_id)
        check_fields(entry, photo_id, outscale=4, fmt="jpeg", size=(48, 40), upscaled=(192, 160),
                     original_ext=ext)
        assert fetch_ok(c, photo_id, "original", answered) == data, what
        with open(server.path(entry["original_path"]), "rb") as f:
            assert f.read() == data, what
        up = fetch_ok(c, photo_id, "upscaled")
        with decode(up) as im:
            assert im.format == "JPEG" and im.size == (192, 160), (what, im.format, im.size)
        if what != "png rgba":  # how alpha is flattened is not specified
            with decode(data) as o:
                assert_looks_like(up, o.convert("RGB"), what)
        for kind, size in (("thumbnail", (48, 40)), ("preview", (192, 160))):
            with decode(fetch_ok(c, photo_id, kind)) as im:
                assert im.format == "JPEG" and im.size == size, (what, kind, im.format, im.size)


def test_heic_input(server):
    c = logged_in_client(server)
    source = ri.plain_image(48, 40, "chelsea")
    data = ri.heic_from(source)
    photo_id = upload_ok(c, data, filename="IMG_0001.HEIC", content_type="image/heic")
    entry = c.wait_status(photo_id)
    check_fields(entry, photo_id, outscale=4, fmt="jpeg", size=(48, 40), upscaled=(192, 160),
                 original_ext="heic")
    assert fetch_ok(c, photo_id, "original", "image/heic") == data
    up = fetch_ok(c, photo_id, "upscaled")
    with decode(up) as im:
        assert im.format == "JPEG" and im.size == (192, 160), (im.format, im.size)
    assert_looks_like(up, source, "heic")
    thumb = fetch_ok(c, photo_id, "thumbnail")
    assert size_of(thumb) == (48, 40)
    assert_looks_like(thumb, source, "heic thumbnail")


def test_other_types_are_refused(server):
    c = logged_in_client(server)
    before = snapshot(server, c)
    refusals = {
        "gif": (ri.gif(), "x.gif", "image/gif"),
        "bmp": (ri.bmp(), "x.bmp", "image/bmp"),
        "tiff": (ri.tiff(), "x.tiff", "image/tiff"),
        "text": (b"hello, this is a text file and not an image at all\n" * 20, "x.txt", "text/plain"),
        "gif named png": (ri.gif(), "x.png", "image/png"),
        "png signature only": (ri.PNG_SIGNATURE + b"\0" * 100, "x.png", "image/png"),
        "webp riff only": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 8, "x.webp", "image/webp"),
    }
    for what, (data, filename, ctype) in refusals.items():
        r = upload(c, data, filename=filename, content_type=ctype)
        detail = assert_detail(r, 400)
        assert isinstance(detail, str), (what, detail)
        if what in ("gif", "bmp", "tiff", "text", "gif named png"):
            for name in ("JPEG", "PNG", "WebP", "HEIC"):
                assert name in detail, (what, name, detail)
    r = bestcut(c, [jpeg(48, 40), ri.gif()])
    detail = assert_detail(r, 400)
    assert all(n in detail for n in ("JPEG", "PNG", "WebP", "HEIC")), detail
    assert snapshot(server, c) == before, "a refused upload left something behind"


def test_decompression_bombs_are_refused(server):
    """Mirrors test_limits' JPEG bombs: 400 or 413, the detail names MAX_IMAGE_PIXELS, nothing stored."""
    c = logged_in_client(server)
    before = snapshot(server, c)
    bombs = {
        "png header 60000x60000": (ri.png_bomb(60000, 60000), "b.png", "image/png"),
        "patched real png": (ri.patch_png_dimensions(ri.png(48, 40), 60000, 60000), "p.png", "image/png"),
        "png wide 16000x1001": (ri.patch_png_dimensions(ri.png(48, 40), 16000, 1001), "w.png", "image/png"),
        "webp vp8x canvas 16383x16383": (ri.webp_vp8x_bomb(16383, 16383), "b.webp", "image/webp"),
        "patched real webp 16383x16383": (ri.patch_webp_vp8_dimensions(ri.webp(48, 40), 16383, 16383),
                                          "p.webp", "image/webp"),
    }
    if ri.HEIF_ENC:
        bombs["patched real heic 60000x60000"] = (
            ri.patch_heif_dimensions(ri.heic_from(ri.plain_image(48, 40)), 60000, 60000), "b.heic", "image/heic")
    for what, (data, filename, ctype) in bombs.items():
        r = upload(c, data, filename=filename, content_type=ctype)
        assert r.status_code in (400, 413), (what, r.status_code, r.text)
        detail = assert_detail(r, r.status_code)
        assert isinstance(detail, str) and mentions_number(detail, MAX_PIXELS), (what, detail)
    assert snapshot(server, c) == before, "a refused upload left something behind"


# ---------------------------------------------------------------- previews

def test_previews_before_and_after_completion(start_server):
    """JOB_WORKERS=0 keeps every job queued: the thumbnail is there at once, the preview is 404
    (like upscaled) until a restarted server with a worker has completed the job."""
    server = start_server(JOB_WORKERS="0", MAX_IMAGE_PIXELS=str(MAX_PIXELS))
    c = logged_in_client(server)
    big = jpeg(400, 300, "chelsea")
    tiny = jpeg(40, 30, "coffee")
    rotated, _ = ri.with_metadata(80, 60, "JPEG", orientation=6)
    strip = ri.png(120, 40, "grace_hopper")
    ids = {
        "big": upload_ok(c, big),
        "tiny": upload_ok(c, tiny),
        "rotated": upload_ok(c, rotated),
        "strip": upload_ok(c, strip, filename="s.png", content_type="image/png", format="png"),
    }
    expected_thumb = {"big": (256, 192), "tiny": (40, 30), "rotated": (60, 80), "strip": (120, 40)}
    sources = {"big": big, "tiny": tiny, "rotated": rotated, "strip": strip}
    thumbs = {}
    for what, photo_id in ids.items():
        r = fetch(c, photo_id, "thumbnail")
        assert r.status_code == 200, (what, r.status_code, r.text)
        assert r.headers["Content-Type"] == "image/jpeg", r.headers
        with decode(r.content) as im:
            assert im.format == "JPEG", (what, im.format)
            assert im.size == expected_thumb[what], (what, im.size)
        with decode(sources[what]) as o:
            assert_looks_like(r.content, ImageOps.exif_transpose(o).convert("RGB"), f"{what} thumbnail")
        thumbs[what] = r.content
        for kind in ("preview", "upscaled"):
            assert_detail(fetch(c, photo_id, kind), 404)
        entry = info(c, photo_id)
        assert entry["status"] == "queued", entry
        oriented = expected_thumb[what] if what != "big" else (400, 300)
        check_fields(entry, photo_id, outscale=4, fmt="png" if what == "strip" else "jpeg", size=oriented,
                     original_ext="png" if what == "strip" else "jpg")
    for t in ("bogus", "Thumbnail", "PREVIEW", ""):
        assert_422(fetch(c, ids["tiny"], t), ["query", "type"])

    # A queued photo deleted: its thumbnail goes with it.
    assert files_of(server, ids["big"]), "the thumbnail or original is not under the storage dir"
    assert c.delete(f"/photos/{ids['big']}").status_code == 200
    assert files_of(server, ids["big"]) == []
    assert_detail(fetch(c, ids["big"], "thumbnail"), 404)
    del ids["big"]

    rc, _ = server.terminate()
    assert rc == 0
    server.overrides["JOB_WORKERS"] = "1"
    server.start()
    expected_result = {"tiny": (160, 120), "rotated": (240, 320), "strip": (480, 160)}
    for what, photo_id in ids.items():
        entry = c.wait_status(photo_id)
        assert (entry["upscaled_width"], entry["upscaled_height"]) == expected_result[what], entry
        up = fetch_ok(c, photo_id, "upscaled", "image/png" if what == "strip" else "image/jpeg")
        r = fetch(c, photo_id, "preview")
        assert r.status_code == 200, (what, r.status_code, r.text)
        assert r.headers["Content-Type"] == "image/jpeg", r.headers
        with decode(r.content) as im:
            assert im.format == "JPEG", (what, im.format)
            assert im.size == expected_result[what], (what, im.size)  # PREVIEW_SIZE 2048: never enlarged
        with decode(up) as u:
            assert_looks_like(r.content, u.convert("RGB"), f"{what} preview")
        # The thumbnail made at upload is the same bytes afterwards.
        assert fetch_ok(c, photo_id, "thumbnail") == thumbs[what], what


def test_preview_sizes_from_settings(tuned):
    """THUMBNAIL_SIZE=64, PREVIEW_SIZE=100: longest side min(size, source), aspect kept, never enlarged."""
    c = logged_in_client(tuned)
    landscape = jpeg(80, 60, "chelsea")      # thumbnail 64x48, result 320x240, preview 100x75
    portrait = jpeg(45, 70, "coffee")        # thumbnail 41x64, result 180x280, preview 64x100
    small = jpeg(40, 30, "grace_hopper")     # thumbnail 40x30, x2 result 80x60, preview 80x60
    cases = {
        "landscape": (landscape, {}, (64, 48), (320, 240), (100, 75)),
        "portrait": (portrait, {}, ri.fit_within((45, 70), 64), (180, 280), ri.fit_within((180, 280), 100)),
        "small": (small, {"outscale": "2"}, (40, 30), (80, 60), (80, 60)),
        "webp result": (landscape, {"format": "webp", "outscale": "1.25"}, (64, 48), (100, 75), (100, 75)),
    }
    ids = {}
    for what, (data, fields, thumb, _, _) in cases.items():
        ids[what] = upload_ok(c, data, **fields)
        t = fetch_ok(c, ids[what], "thumbnail")
        with decode(t) as im:
            assert im.format == "JPEG", (what, im.format)
            assert_longest(im.size, thumb, f"{what} thumbnail")
        with decode(data) as o:
            assert_looks_like(t, o.convert("RGB"), f"{what} thumbnail")
    for what, (data, fields, _, result, preview) in cases.items():
        entry = c.wait_status(ids[what])
        assert (entry["upscaled_width"], entry["upscaled_height"]) == result, (what, entry)
        p = fetch_ok(c, ids[what], "preview")
        with decode(p) as im:
            assert im.format == "JPEG", (what, im.format)
            assert_longest(im.size, preview, f"{what} preview")
        up = fetch_ok(c, ids[what], "upscaled", "image/webp" if "webp" in what else "image/jpeg")
        with decode(up) as u:
            assert u.size == result, (what, u.size)
            assert_looks_like(p, u.convert("RGB"), f"{what} preview")


# ---------------------------------------------------------------- metadata

def check_metadata(data, icc, size, what):
    """ICC profile as uploaded, EXIF Orientation 1, Make/Model/DateTimeOriginal kept, PixelX/YDimension
    the file's own size."""
    with decode(data) as im:
        assert im.size == size, (what, im.size, size)
        assert im.info.get("icc_profile") == icc, f"{what}: ICC profile not kept"
        ex = im.getexif()
        assert ex, f"{what}: no EXIF"
        assert ex.get(ri.TAG_ORIENTATION) == 1, (what, "Orientation", ex.get(ri.TAG_ORIENTATION))
        assert ex.get(ri.TAG_MAKE) == ri.MAKE, (what, "Make", ex.get(ri.TAG_MAKE))
        assert ex.get(ri.TAG_MODEL) == ri.MODEL, (what, "Model", ex.get(ri.TAG_MODEL))
        sub = ex.get_ifd(ri.TAG_EXIF_IFD)
        assert sub.get(ri.TAG_DATETIME_ORIGINAL) == ri.WHEN, (what, "DateTimeOriginal", dict(sub))
        # The upload's Exif IFD has PixelX/YDimension (its stored 48x40): kept, and updated.
        assert (sub.get(ri.TAG_PIXEL_X), sub.get(ri.TAG_PIXEL_Y)) == size, (what, "PixelX/YDimension", dict(sub))


METADATA_CASES = [
    # (input format, filename, content type, output format, outscale)
    ("JPEG", "m.jpg", "image/jpeg", "jpeg", "4"),
    ("JPEG", "m.jpg", "image/jpeg", "png", "4"),
    ("JPEG", "m.jpg", "image/jpeg", "webp", "4"),
    ("JPEG", "m.jpg", "image/jpeg", "webp", "2.5"),
    ("PNG", "m.png", "image/png", "jpeg", "2"),
    ("WEBP", "m.webp", "image/webp", "png", "3"),
]


def test_metadata_is_kept(server):
    """A 48x40 photo with EXIF Orientation 6 (shown as 40x48) and an sRGB profile: every output is the
    turned photo, Orientation 1, the same profile, Make/Model/DateTimeOriginal, its own pixel dimensions."""
    c = logged_in_client(server)
    uploads = []
    for in_fmt, filename, ctype, out_fmt, s in METADATA_CASES:
        data, icc = ri.with_metadata(48, 40, in_fmt, orientation=6)
        photo_id = upload_ok(c, data, filename=filename, content_type=ctype, format=out_fmt, outscale=s)
        uploads.append((in_fmt, out_fmt, s, data, icc, photo_id))
    for in_fmt, out_fmt, s, data, icc, photo_id in uploads:
        what = f"{in_fmt} -> {out_fmt} x{s}"
        with decode(data) as o:
            upright = ImageOps.exif_transpose(o).convert("RGB")
        assert upright.size == (40, 48)
        want = (ri.scaled(40, s), ri.scaled(48, s))
        entry = c.wait_status(photo_id)
        check_fields(entry, photo_id, outscale=float(s), fmt=out_fmt, size=(40, 48), upscaled=want,
                     original_ext={"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[in_fmt], what=what)
        assert fetch_ok(c, photo_id, "original", f"image/{in_fmt.lower()}") == data
        up = fetch_ok(c, photo_id, "upscaled", MIME[out_fmt])
        with decode(up) as im:
            assert im.format == PIL_FORMAT[out_fmt], (what, im.format)
        check_metadata(up, icc, want, f"{what} upscaled")
        assert_looks_like(up, upright, f"{what} upscaled")
        thumb = fetch_ok(c, photo_id, "thumbnail")
        check_metadata(thumb, icc, (40, 48), f"{what} thumbnail")
        assert_looks_like(thumb, upright, f"{what} thumbnail")
        preview = fetch_ok(c, photo_id, "preview")
        check_metadata(preview, icc, want, f"{what} preview")
        assert_looks_like(preview, upright, f"{what} preview")


# ---------------------------------------------------------------- photo fields and /info

def test_photo_fields_and_info(server):
    c = logged_in_client(server)
    other = logged_in_client(server)
    photo_id = upload_ok(c, jpeg(48, 40, "chelsea"), outscale="2.5", format="png")
    plain = upload_ok(c, jpeg(45, 37, "coffee"))

    early = info(c, photo_id)
    check_fields(early, photo_id, outscale=2.5, fmt="png", size=(48, 40), upscaled=(120, 100))
    entry = c.wait_status(photo_id)
    check_fields(entry, photo_id, outscale=2.5, fmt="png", size=(48, 40), upscaled=(120, 100))
    entry = c.wait_status(plain)
    check_fields(entry, plain, outscale=4, fmt="jpeg", size=(45, 37), upscaled=(180, 148))
    listed = {e["id"]: e for e in c.photos()}
    for pid in (photo_id, plain):
        assert info(c, pid) == listed[pid], "GET /photos/{id}/info differs from the list item"
    assert size_of(fetch_ok(c, photo_id, "upscaled", "image/png")) == (120, 100)

    # 404 as for downloads; 422 for a bad id; 401 without a token.
    assert_detail(other.get(f"/photos/{photo_id}/info"), 404)
    assert_detail(c.get(f"/photos/{uuid.uuid4()}/info"), 404)
    for bad in ("not-a-uuid", "123", str(uuid.uuid4())[:-1], str(uuid.uuid4()) + "0"):
        assert_422(c.get(f"/photos/{bad}/info"), ["path", "photo_id"])
    r = Client(server).get(f"/photos/{photo_id}/info")
    assert_detail(r, 401, "Not authenticated")
    assert other.photos() == []

    assert c.delete(f"/photos/{plain}").status_code == 200
    assert_detail(c.get(f"/photos/{plain}/info"), 404)


# ---------------------------------------------------------------- downloads

def check_download_headers(c, photo_id, kind, content_type):
    url = f"/photos/{photo_id}"
    params = {"type": kind}
    full = c.get(url, params=params)
    assert full.status_code == 200, (kind, full.status_code, full.text)
    body, size = full.content, len(full.content)
    assert size > 200, (kind, size)
    h = full.headers
    assert h["Content-Type"] == content_type, (kind, h)
    etag = h.get("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"') and len(etag) > 2, (kind, etag)
    assert not etag.startswith("W/"), (kind, etag)
    assert h.get("Accept-Ranges") == "bytes", (kind, h)
    assert h.get("Cache-Control") == "private, max-age=86400", (kind, h)

    again = c.get(url, params=params)
    assert again.status_code == 200 and again.content == body and again.headers.get("ETag") == etag, kind

    def get(**headers):
        return c.get(url, params=params, headers=headers)

    # Conditional GET: the tag, a list holding it, *, and its weak form (If-None-Match compares weakly).
    for inm in (etag, f'"x", {etag}', "*", f"W/{etag}"):
        r = get(**{"If-None-Match": inm})
        assert r.status_code == 304, (kind, inm, r.status_code)
        assert r.content == b"", (kind, inm, r.content[:50])
        assert r.headers.get("ETag") == etag, (kind, inm, r.headers)
        assert r.headers.get("Cache-Control") == "private, max-age=86400", (kind, inm, r.headers)
    for inm in ('"nope"', 'W/"nope"'):
        r = get(**{"If-None-Match": inm})
        assert r.status_code == 200 and r.content == body, (kind, inm, r.status_code)
    # If-None-Match is evaluated before Range (RFC 9110 13.2.2).
    r = get(**{"If-None-Match": etag, "Range": "bytes=0-9"})
    assert r.status_code == 304 and r.content == b"", (kind, r.status_code)

    # One range: a-b, a-, -n, and b past the end.
    for rng, first, last in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1),
                             ("bytes=-50", size - 50, size - 1), (f"bytes=0-{size + 1000}", 0, size - 1),
                             (f"bytes={size - 1}-{size - 1}", size - 1, size - 1)):
        r = get(Range=rng)
        assert r.status_code == 206, (kind, rng, r.status_code, r.text[:200])
        assert r.headers.get("Content-Range") == f"bytes {first}-{last}/{size}", (kind, rng, r.headers)
        assert r.content == body[first:last + 1], (kind, rng, len(r.content))
        assert int(r.headers["Content-Length"]) == last - first + 1, (kind, rng, r.headers)
        assert r.headers["Content-Type"] == content_type, (kind, rng, r.headers)
        assert r.headers.get("ETag") == etag, (kind, rng, r.headers)
        assert r.headers.get("Accept-Ranges") == "bytes", (kind, rng, r.headers)
        assert r.headers.get("Cache-Control") == "private, max-age=86400", (kind, rng, r.headers)

    # Unsatisfiable: 416 with bytes */size.
    for rng in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        r = get(Range=rng)
        assert r.status_code == 416, (kind, rng, r.status_code)
        assert r.headers.get("Content-Range") == f"bytes */{size}", (kind, rng, r.headers)

    # Malformed, several ranges or another unit: ignored (RFC 9110 14.2), the whole body.
    for rng in ("bytes=abc", "bytes=0-1,3-4", "items=0-5", "bytes", "bytes=--5"):
        r = get(Range=rng)
        assert r.status_code == 200, (kind, rng, r.status_code)
        assert r.content == body, (kind, rng)
    return etag


def test_download_headers_for_every_type(server):
    c = logged_in_client(server)
    photo_id = upload_ok(c, jpeg(64, 48, "chelsea"), format="webp")
    c.wait_status(photo_id)
    etags = {}
    for kind, ctype in (("original", "image/jpeg"), ("upscaled", "image/webp"), ("thumbnail", "image/jpeg"),
                        ("preview", "image/jpeg")):
        etags[kind] = check_download_headers(c, photo_id, kind, ctype)
    # The default type is upscaled, with the same tag.
    assert c.get(f"/photos/{photo_id}").headers.get("ETag") == etags["upscaled"]
    # Another user still gets 404, with or without a Range or a matching If-None-Match.
    other = logged_in_client(server)
    for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": etags["upscaled"]}):
        assert_detail(other.get(f"/photos/{photo_id}", headers=headers), 404)


def test_png_input_download_headers(server):
    c = logged_in_client(server)
    photo_id = upload_ok(c, ri.png(48, 40), filename="x.png", content_type="image/png", format="png")
    c.wait_status(photo_id)
    check_download_headers(c, photo_id, "original", "image/png")
    check_download_headers(c, photo_id, "upscaled", "image/png")


# ---------------------------------------------------------------- delete

def test_delete_removes_every_file(server):
    c = logged_in_client(server)
    ids = [upload_ok(c, jpeg(48, 40, "chelsea"), format=fmt) for fmt in ("jpeg", "png", "webp")]
    ids.append(upload_ok(c, ri.webp(48, 40), filename="x.webp", content_type="image/webp", outscale="2"))
    for photo_id in ids:
        c.wait_status(photo_id)
        for kind in TYPES:
            assert fetch(c, photo_id, kind).status_code == 200, kind
        assert len(files_of(server, photo_id)) >= 2, files_of(server, photo_id)
    for photo_id in ids:
        r = c.delete(f"/photos/{photo_id}")
        assert r.status_code == 200 and r.json() == {"message": "Deleted successfully"}, r.text
        assert files_of(server, photo_id) == [], files_of(server, photo_id)
        for kind in TYPES:
            assert_detail(fetch(c, photo_id, kind), 404)
    assert c.photos() == []
