"""Shared helpers for the PetCam upscaler model tests.

The binary under test comes from $PETCAM_BIN; the oracle is the plain PyTorch
reference in tests/reference/realesrgan_ref.py, imported in-process so its
models and results can be cached across tests (the suite has to stay small
on a 2-core machine).  Every subprocess call carries a timeout.

Run:  PETCAM_BIN=build/release/petcam /usr/bin/python3 -m pytest -s tests/model
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REF_DIR = os.path.join(REPO_ROOT, "tests", "reference")
REF_SCRIPT = os.path.join(REF_DIR, "realesrgan_ref.py")
MODELS_DIR = os.path.join(REPO_ROOT, "models")
PYTHON = "/usr/bin/python3"  # the Debian python that has torch

sys.path.insert(0, REF_DIR)
import realesrgan_ref  # noqa: E402

PHOTOS = {
    "chelsea": "/usr/lib/python3/dist-packages/skimage/data/chelsea.png",
    "coffee": "/usr/lib/python3/dist-packages/skimage/data/coffee.png",
    "grace_hopper": "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
}

THREADS = os.environ.get("PETCAM_THREADS", "2")
TIMEOUT_S = 300  # generous: a debug build of x4plus is slow, but nothing may hang forever
SCALE = 4


# ---------------------------------------------------------------- images

def cut(photo, x, y, w, h):
    """A w x h RGB crop of one of the real photos, top-left corner at (x, y)."""
    with Image.open(PHOTOS[photo]) as im:
        rgb = np.array(im.convert("RGB"))
    assert y + h <= rgb.shape[0] and x + w <= rgb.shape[1], "crop outside the photo"
    return rgb[y:y + h, x:x + w].copy()


def save(path, array, **kwargs):
    Image.fromarray(array).save(str(path), **kwargs)
    return str(path)


def load(path):
    """Decoded pixels exactly as stored (2-D for grayscale, H x W x C otherwise)."""
    with Image.open(str(path)) as im:
        return np.array(im)


def psnr(a, b):
    assert a.shape == b.shape, f"shape mismatch {a.shape} vs {b.shape}"
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


# Test inputs: one small crop per model, shared by the fp32 / tiling / bf16 tests
# so that each expensive upscale runs once per session.
MODEL_INPUTS = {
    # Cat fur and whiskers: dense texture, hard for the compact model.
    "x4fast": ("chelsea", 150, 80, 96, 80),
    # Cup rim: edges plus smooth areas.  (On pure fur, x4plus tiled-vs-untiled with
    # pad 10 is only ~35 dB even for Real-ESRGAN itself, see test_tiled_vs_untiled.)
    "x4plus": ("coffee", 200, 100, 64, 48),
}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    return {m: save(d / f"{m}_in.png", cut(*spec)) for m, spec in MODEL_INPUTS.items()}


# ---------------------------------------------------------------- processes

def run(cmd, timeout=TIMEOUT_S, **kwargs):
    """subprocess.run with captured text output and a mandatory timeout."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def petcam_bin():
    exe = os.environ.get("PETCAM_BIN")
    if not exe:
        pytest.fail("PETCAM_BIN is not set: export PETCAM_BIN=/path/to/the/petcam binary "
                    "(e.g. build/release/petcam) before running tests/model", pytrace=False)
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        pytest.fail(f"PETCAM_BIN={exe} is not an executable file", pytrace=False)
    return os.path.abspath(exe)


class Petcam:
    """Runs the binary; successful upscales are cached by their arguments."""

    def __init__(self, exe, workdir):
        self.exe, self.workdir, self._cache = exe, workdir, {}

    def run(self, *args, timeout=TIMEOUT_S, **kwargs):
        return run([self.exe, *args], timeout=timeout, **kwargs)

    def upscale(self, src, model="x4fast", precision="fp32", tile=0, tile_pad=None,
                ext=".png", extra=()):
        key = (str(src), str(model), precision, tile, tile_pad, ext, tuple(extra))
        if key not in self._cache:
            out = os.path.join(self.workdir, f"ours_{len(self._cache)}{ext}")
            args = ["upscale", src, out, "--model", model, "--precision", precision,
                    "--tile", str(tile), "--threads", THREADS, *extra]
            if tile_pad is not None:
                args += ["--tile-pad", str(tile_pad)]
            r = self.run(*args)
            assert r.returncode == 0, f"petcam {' '.join(map(str, args))} failed: {r.stderr}"
            assert os.path.isfile(out), f"petcam exited 0 but wrote no {out}"
            self._cache[key] = out
        return self._cache[key]


@pytest.fixture(scope="session")
def petcam(petcam_bin, tmp_path_factory):
    return Petcam(petcam_bin, str(tmp_path_factory.mktemp("ours")))


class Reference:
    """The PyTorch reference, in-process, with models and outputs cached."""

    def __init__(self):
        torch.set_num_threads(int(THREADS))
        self._models, self._cache = {}, {}

    def model(self, name):
        if name not in self._models:
            self._models[name] = realesrgan_ref.load_model(name)
        return self._models[name]

    def upscale(self, src, model, precision="fp32", tile=0, tile_pad=10):
        key = (str(src), model, precision, tile, tile_pad)
        if key not in self._cache:
            rgb = realesrgan_ref.read_rgb(src)
            self._cache[key] = realesrgan_ref.upscale(self.model(model), rgb, precision,
                                                      tile, tile_pad)
        return self._cache[key]


@pytest.fixture(scope="session")
def ref():
    return Reference()
