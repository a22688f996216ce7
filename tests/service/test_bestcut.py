"""POST /bestcut: the sharpest of a burst becomes the photo, scored as the original server did."""

import random

import pytest
from PIL import ImageFilter

from conftest import (UUID_RE, assert_422, assert_detail, assert_upscaled_of, encode_jpeg,
                      jpeg, laplacian_variance, logged_in_client, mentions_number, photo_image)


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers(MAX_BESTCUT_FILES="5")


def burst(w, h, name, radii=(1, 2, 4)):
    """A sharp shot and Gaussian-blurred copies of it, as JPEG bytes: (sharp, [blurred...])."""
    img = photo_image(w, h, name)
    sharp = encode_jpeg(img, quality=92, subsampling=0)
    blurred = [encode_jpeg(img.filter(ImageFilter.GaussianBlur(r)), quality=92, subsampling=0)
               for r in radii]
    return sharp, blurred


def test_bestcut_picks_the_sharpest(server):
    c = logged_in_client(server)
    sharp, blurred = burst(96, 72, "chelsea")
    shots = [sharp] + blurred
    random.Random(7).shuffle(shots)
    assert shots[0] != sharp  # the sharp one is not simply the first

    r = c.bestcut(shots, lat=35.1, lng=129.04)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"message", "id", "score"}, body
    assert body["message"] == "Best cut selected, processing in background"
    assert UUID_RE.match(body["id"])
    assert isinstance(body["score"], float), body

    expected = laplacian_variance(sharp)
    assert body["score"] == pytest.approx(expected, rel=0.01), (body["score"], expected)
    assert body["score"] > max(laplacian_variance(b) for b in blurred)

    photo_id = body["id"]
    [entry] = c.photos()
    assert entry["id"] == photo_id
    assert (entry["latitude"], entry["longitude"]) == (35.1, 129.04)
    assert entry["original_path"] == f"storage/originals/{photo_id}.jpg"
    # Only the chosen shot is stored.
    stored = [f for f in server.storage_files() if f.startswith("storage/originals/")]
    assert f"storage/originals/{photo_id}.jpg" in stored
    for f in stored:
        with open(server.path(f), "rb") as fh:
            assert fh.read() not in blurred, f

    r = c.get(f"/photos/{photo_id}", params={"type": "original"})
    assert r.status_code == 200
    assert r.content == sharp

    c.wait_status(photo_id)
    r = c.get(f"/photos/{photo_id}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    assert_upscaled_of(r.content, sharp)


def test_bestcut_single_file(server):
    c = logged_in_client(server)
    only = jpeg(64, 48, "coffee")
    r = c.bestcut([only])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] == pytest.approx(laplacian_variance(only), rel=0.01)
    [entry] = c.photos()
    assert (entry["latitude"], entry["longitude"]) == (0.0, 0.0)
    assert c.get(f"/photos/{body['id']}?type=original").content == only
    c.wait_status(body["id"])


def test_bestcut_bad_inputs(server):
    c = logged_in_client(server)
    good = jpeg(64, 48, "grace_hopper")
    # No files at all (only the plain fields).
    assert_422(c.post("/bestcut", files=[("lat", (None, "1.0"))]), ["body", "files"])
    # One of the burst is not a JPEG.
    assert_detail(c.bestcut([good, b"this is a text file, not a photo\n" * 4]), 400)
    assert_detail(c.bestcut([good, b""]), 400)
    assert_detail(c.bestcut([good, good[: len(good) // 2]]), 400)
    # Bad coordinates.
    assert_422(c.bestcut([good], lat=91), ["body", "lat"])
    assert_422(c.bestcut([good], lng="abc"), ["body", "lng"])
    # Too many files: MAX_BESTCUT_FILES=5.
    r = c.bestcut([good] * 6)
    assert r.status_code in (400, 413), (r.status_code, r.text)
    detail = assert_detail(r, r.status_code)
    assert isinstance(detail, str) and mentions_number(detail, 5), detail
    # Exactly the limit is fine ... but nothing of the refused requests stayed.
    assert c.photos() == []
    r = c.bestcut([good] * 5)
    assert r.status_code == 200, r.text
    assert [e["id"] for e in c.photos()] == [r.json()["id"]]
    c.wait_status(r.json()["id"])
