#!/usr/bin/python3
"""Peak memory of `petcam upscale` on a 12-megapixel photo (4000x3000), including the output buffer.

The photo is skimage's chelsea.png (a real cat photo) resized to 4000x3000 with Lanczos and saved as
JPEG quality 92. Prints wall time and the child's peak RSS (getrusage ru_maxrss).

  /usr/bin/python3 bench/peak_rss.py [--petcam build/release/petcam] [--model x4fast] [--precision auto]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from PIL import Image

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PHOTO = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--petcam", default=os.path.join(REPO_ROOT, "build", "release", "petcam"))
    ap.add_argument("--model", default="x4fast")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--engine", default="auto", help="auto, native or libtorch")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="peak_rss_") as d:
        src, dst = os.path.join(d, "photo.jpg"), os.path.join(d, "photo_x4.jpg")
        with Image.open(PHOTO) as im:
            im.convert("RGB").resize((w, h), Image.LANCZOS).save(src, quality=92)
        t0 = time.monotonic()
        r = subprocess.run([a.petcam, "upscale", src, dst, "--model", a.model, "--precision", a.precision,
                            "--engine", a.engine],
                           capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit(f"petcam failed: {r.stderr.strip()}")
        Image.MAX_IMAGE_PIXELS = None  # our own 192 MP output: read its header only
        with Image.open(dst) as out:
            size = out.size
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{a.model} {a.precision} engine {a.engine}: {w}x{h} ({w * h / 1e6:.1f} MP) -> {size[0]}x{size[1]}: "
          f"wall {wall:.1f} s, peak RSS {peak_mib:.0f} MiB ({peak_mib / 1024:.2f} GiB)")
    lines = r.stderr.strip().splitlines()
    print("\n".join(l for l in lines if l.startswith("engine:")) + "\n" + lines[-1])


if __name__ == "__main__":
    main()
