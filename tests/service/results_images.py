"""Image files the Version 2 "Results" tests upload, made at test time from the harness's real photos:
PNG, WebP and HEIC inputs, JPEGs with real EXIF and an ICC profile, GIF/BMP/TIFF refusals, and headers
that declare huge canvases (PNG IHDR, WebP VP8X and VP8, HEIF ispe) for decompression-bomb checks."""

import io
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from fractions import Fraction
from math import floor

import pytest
from PIL import Image, ImageCms

from conftest import photo_image

HEIF_ENC = shutil.which("heif-enc")

MAKE = "PetCam Test Make"
MODEL = "PetCam Model 7"
WHEN = "2024:05:06 07:08:09"

TAG_ORIENTATION = 0x0112
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_EXIF_IFD = 0x8769
TAG_DATETIME_ORIGINAL = 0x9003
TAG_PIXEL_X = 0xA002
TAG_PIXEL_Y = 0xA003


# ---------------------------------------------------------------- sizes

def scaled(n, outscale_text):
    """round(n * outscale), halves up, computed exactly from the decimal text the client sends."""
    exact = floor(Fraction(outscale_text) * n + Fraction(1, 2))
    # The test values are chosen so that double arithmetic gives the same answer: no test depends on
    # whether the server computes in binary or decimal.
    assert floor(n * float(outscale_text) + 0.5) == exact, (n, outscale_text)
    return exact


def fit_within(size, longest):
    """(w, h) scaled so the longest side is min(longest, max(w, h)): the expected preview size
    (the other side to within 1 px: a server may round or truncate)."""
    w, h = size
    m = max(w, h)
    if m <= longest:
        return w, h
    return (longest, h * longest / w) if w >= h else (w * longest / h, longest)


# ---------------------------------------------------------------- encoders

def plain_image(w, h, name="chelsea", mode="RGB"):
    """A real photo at w x h, without the ICC profile the source PNG carries."""
    img = photo_image(w, h, name)
    img.info.clear()
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize((w, h))
        img = img.convert("RGBA")
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def encode(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png(w, h, name="chelsea", mode="RGB", **kw):
    return encode(plain_image(w, h, name, mode), "PNG", **kw)


def webp(w, h, name="chelsea", lossless=False, **kw):
    return encode(plain_image(w, h, name), "WEBP", quality=90, lossless=lossless, **kw)


def heic_from(image):
    """HEIC bytes made by libheif's heif-enc from `image` (skips the test where heif-enc is absent)."""
    if not HEIF_ENC:
        pytest.skip("heif-enc (Debian's libheif-examples) is not installed")
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "in.png"), os.path.join(d, "out.heic")
        image.save(src, format="PNG")
        subprocess.run([HEIF_ENC, "-q", "90", src, "-o", out], check=True, capture_output=True, timeout=60)
        with open(out, "rb") as f:
            return f.read()


def exif_bytes(orientation=6, pixel_size=None):
    ex = Image.Exif()
    ex[TAG_ORIENTATION] = orientation
    ex[TAG_MAKE] = MAKE
    ex[TAG_MODEL] = MODEL
    sub = {TAG_DATETIME_ORIGINAL: WHEN}
    if pixel_size:
        sub[TAG_PIXEL_X], sub[TAG_PIXEL_Y] = pixel_size
    ex[TAG_EXIF_IFD] = sub  # a dict: Pillow writes it as the Exif sub-IFD
    return ex.tobytes()


def srgb_profile():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def with_metadata(w, h, fmt="JPEG", orientation=6, name="chelsea"):
    """(bytes, icc) of a real photo with EXIF (Orientation, Make, Model, DateTimeOriginal,
    PixelX/YDimension of the stored pixels) and an sRGB ICC profile."""
    icc = srgb_profile()
    kw = {"exif": exif_bytes(orientation, (w, h)), "icc_profile": icc}
    if fmt == "JPEG":
        kw["quality"] = 92
    elif fmt == "WEBP":
        kw["quality"] = 92
    return encode(plain_image(w, h, name), fmt, **kw), icc


# ---------------------------------------------------------------- not accepted

def gif(w=48, h=40):
    return encode(plain_image(w, h), "GIF")


def bmp(w=48, h=40):
    return encode(plain_image(w, h), "BMP")


def tiff(w=48, h=40):
    return encode(plain_image(w, h), "TIFF")


# ---------------------------------------------------------------- headers declaring huge canvases

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width, height):
    """A well-formed PNG (signature, IHDR with a valid CRC, a little IDAT, IEND) declaring width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * 64) * 4)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def patch_png_dimensions(data, width, height):
    """The same PNG with its IHDR claiming width x height (CRC recomputed)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    body = bytearray(data[16:29])
    body[0:8] = struct.pack(">II", width, height)
    return data[:8] + png_chunk(b"IHDR", bytes(body)) + data[33:]


def riff_chunks(data):
    """[(fourcc, payload)] of a WebP file."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    out, i = [], 12
    while i + 8 <= len(data):
        kind = data[i:i + 4]
        size = struct.unpack("<I", data[i + 4:i + 8])[0]
        out.append((kind, data[i + 8:i + 8 + size]))
        i += 8 + size + (size & 1)
    return out


def riff(chunks):
    body = b"WEBP"
    for kind, payload in chunks:
        body += kind + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8x_bomb(width=16383, height=16383):
    """A real lossy WebP's VP8 bitstream behind a VP8X header whose canvas is width x height."""
    [vp8] = [c for c in riff_chunks(webp(48, 40)) if c[0] == b"VP8 "]
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff([(b"VP8X", vp8x), vp8])


def patch_webp_vp8_dimensions(data, width, height):
    """A simple lossy WebP whose VP8 key frame header claims width x height (14 bits each)."""
    chunks = riff_chunks(data)
    out = []
    for kind, payload in chunks:
        if kind == b"VP8 ":
            p = bytearray(payload)
            assert p[3:6] == b"\x9d\x01\x2a", "not a VP8 key frame"
            p[6:8] = struct.pack("<H", width & 0x3FFF)
            p[8:10] = struct.pack("<H", height & 0x3FFF)
            payload = bytes(p)
        out.append((kind, payload))
    return riff(out)


def patch_heif_dimensions(data, width, height):
    """The same HEIF with every `ispe` (image spatial extents) box claiming width x height."""
    b = bytearray(data)
    i = b.find(b"ispe")
    assert i > 0, "no ispe box"
    while i > 0:
        b[i + 8:i + 16] = struct.pack(">II", width, height)  # after the version/flags word
        i = b.find(b"ispe", i + 4)
    return bytes(b)
