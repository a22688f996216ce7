#!/usr/bin/python3
"""PetCam upscaler vs the PyTorch reference: one table, one invocation.

For every model x precision x input it runs OUR bench binary and then the
reference's `bench` subcommand, each in its own subprocess (so peak RSS is per
run and neither warms the other's caches), one after another, never in
parallel.  Both print one JSON line:
  {"impl", "model", "precision", "size": "WxH", "ms" (best), "ms_median",
   "peak_rss_mb", "threads", ...}

Examples (run with the Debian python that has torch):
  /usr/bin/python3 bench/bench_upscaler.py                       # full matrix: slow!
  /usr/bin/python3 bench/bench_upscaler.py --models x4fast --sizes 128 --photo none
  /usr/bin/python3 bench/bench_upscaler.py --json bench.json
  bench/fetch-onnxruntime.sh && /usr/bin/python3 bench/bench_upscaler.py --precisions fp32 --onnx

Inputs: --sizes N are NxN centre crops of skimage's astronaut.png (the
reference's bench_input()); --photo is a real photo (retina.jpg, 1411x1411), centre-cropped to
--photo-size (1024x1024 = 1.05 MP by default).  Every input is
written once as a binary PPM and both sides get `--image F.ppm` and the
model's .param path, so they provably see the same pixels and the same model
(upscaler_bench reads only PPM).  Real-ESRGAN runs big
images tiled, and whole-image x4plus on the photo needs far more RAM than a
normal box has, so the reference gets --tile 512 --tile-pad 10 on the photo
row (see --ref-photo-tile); the table says so.  GFLOP/s always counts the
whole-image work (2 * MACs per input pixel * pixels), so a tiled run's
overlap is not credited.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REF_SCRIPT = os.path.join(REPO_ROOT, "tests", "reference", "realesrgan_ref.py")
DEFAULT_OURS = os.path.join(REPO_ROOT, "build", "release", "bench", "upscaler_bench")
DEFAULT_PHOTO = "/usr/lib/python3/dist-packages/skimage/data/retina.jpg"
ORT_DIR = os.path.join(REPO_ROOT, "bench", "ort")  # onnxruntime-node, fetched by bench/fetch-onnxruntime.sh

# Multiply-adds per input pixel for a x4 pass (convolutions only).
MAC_PER_PIXEL = {"x4plus": 17_926_848, "x4fast": 1_209_024}


def csv(kind):
    return lambda text: [kind(t) for t in text.split(",") if t]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--ours", default=DEFAULT_OURS, help="our bench binary")
    ap.add_argument("--python", default="/usr/bin/python3", help="python with torch")
    ap.add_argument("--models", type=csv(str), default=["x4fast", "x4plus"])
    ap.add_argument("--precisions", type=csv(str), default=["fp32", "bf16"])
    ap.add_argument("--sizes", type=csv(int), default=[128, 256, 512])
    ap.add_argument("--photo", default=DEFAULT_PHOTO, help="real photo row, or 'none'")
    ap.add_argument("--photo-size", default="1024x1024", metavar="WxH",
                    help="centre crop of the photo (1.05 MP by default; '' = whole 1411x1411)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds of all implementations; the fastest result counts")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="skip the tuned PyTorch variant (NHWC), run only plain NCHW PyTorch")
    ap.add_argument("--big-gflop", type=float, default=2000.0,
                    help="cases above this much work run once, without warmup")
    ap.add_argument("--skip-pytorch-above", type=int, default=None, metavar="PIXELS",
                    help="do not run the reference on inputs with more pixels")
    ap.add_argument("--ref-photo-tile", type=int, default=512,
                    help="reference --tile for the photo row (0 = whole image)")
    ap.add_argument("--ref-photo-tile-pad", type=int, default=10)
    ap.add_argument("--ours-tile", type=int, default=None,
                    help="pass --tile N to our binary (default: its own default)")
    ap.add_argument("--ours-engine", default=None, choices=["auto", "native", "libtorch"],
                    help="pass --engine to our binary (default: its own default, auto)")
    ap.add_argument("--onnx", action="store_true",
                    help="also ONNX Runtime (fp32 rows): the models exported from the reference, each checked "
                         "against PyTorch first; needs bench/fetch-onnxruntime.sh")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per run")
    ap.add_argument("--json", metavar="OUT", help="also save the rows as JSON")
    args = ap.parse_args(argv)
    for m in args.models:
        if m not in MAC_PER_PIXEL:
            ap.error(f"unknown model {m!r}; choose from {sorted(MAC_PER_PIXEL)}")
    return args


def write_inputs(args, workdir):
    """Materialise every input as a P6 PPM; returns [(label, path, pixels, is_photo)]."""
    from PIL import Image
    sys.path.insert(0, os.path.dirname(REF_SCRIPT))
    from realesrgan_ref import bench_input  # the exact --size construction

    inputs = []
    for n in args.sizes:
        path = os.path.join(workdir, f"astronaut_{n}.ppm")
        Image.fromarray(bench_input(size=n)).save(path)
        inputs.append((f"{n}x{n}", path, n * n, False))
    if args.photo and args.photo != "none":
        rgb = bench_input(image=args.photo)
        if args.photo_size:  # a centre crop keeps the slowest rows (x4plus) within minutes
            w, h = (int(v) for v in args.photo_size.split("x"))
            top, left = max(0, (rgb.shape[0] - h) // 2), max(0, (rgb.shape[1] - w) // 2)
            rgb = rgb[top:top + h, left:left + w].copy()
        path = os.path.join(workdir, "photo.ppm")
        Image.fromarray(rgb).save(path)
        label = f"{os.path.basename(args.photo)} {rgb.shape[1]}x{rgb.shape[0]}"
        inputs.append((label, path, rgb.shape[0] * rgb.shape[1], True))
    return inputs


def make_cases(args, inputs):
    for model in args.models:
        for precision in args.precisions:
            for label, path, pixels, is_photo in inputs:
                yield dict(model=model, precision=precision, input=label, pixels=pixels,
                           image=path, is_photo=is_photo,
                           gflop=2.0 * MAC_PER_PIXEL[model] * pixels / 1e9)


def run_json(cmd, timeout):
    """Run one bench process; returns (the JSON it printed, or None, and an error text)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    except OSError as e:
        return None, str(e)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit {r.returncode}: {tail}"
    try:
        return json.loads(lines[-1]), ""
    except json.JSONDecodeError as e:
        return None, f"bad JSON line: {e}"


def bench_flags(case, args):
    big = case["gflop"] > args.big_gflop
    repeat, warmup = (1, 0) if big else (args.repeat, args.warmup)
    model = os.path.join(REPO_ROOT, "models", f"realesrgan-{case['model']}.param")
    return ["--model", model, "--precision", case["precision"],
            "--threads", str(args.threads), "--image", case["image"],
            "--repeat", str(repeat), "--warmup", str(warmup)], big


IMPLS = ("ours", "pytorch", "pytorch_cl", "onnxruntime")


def commands(case, args, ours_ok):
    """The bench command of each implementation for this case (None: not run), and notes."""
    flags, big = bench_flags(case, args)
    notes = ["1 run" if big else f"best of {args.repeat} x {args.rounds} rounds"]
    cmds = dict.fromkeys(IMPLS)
    if ours_ok:
        cmds["ours"] = [args.ours, *flags]
        if args.ours_tile is not None:
            cmds["ours"] += ["--tile", str(args.ours_tile)]
        if args.ours_engine is not None:
            cmds["ours"] += ["--engine", args.ours_engine]
    if args.skip_pytorch_above is not None and case["pixels"] > args.skip_pytorch_above:
        notes.append(f"pytorch skipped (> {args.skip_pytorch_above} px)")
    else:
        ref = [args.python, REF_SCRIPT, "bench", *flags]
        if case["is_photo"] and args.ref_photo_tile > 0:
            ref += ["--tile", str(args.ref_photo_tile), "--tile-pad", str(args.ref_photo_tile_pad)]
            notes.append(f"pytorch tiled {args.ref_photo_tile}/{args.ref_photo_tile_pad}")
        cmds["pytorch"] = ref
        if not args.no_channels_last:
            cmds["pytorch_cl"] = ref + ["--channels-last"]
    onnx = args.onnx_models.get(case["model"]) if args.onnx else None
    if args.onnx and case["precision"] == "fp32" and not onnx:
        notes.append("onnxruntime not run (export or its check against PyTorch failed, see stderr)")
    if onnx and case["precision"] == "fp32":
        repeat, warmup = (1, 0) if big else (args.repeat, args.warmup)
        cmds["onnxruntime"] = ["node", os.path.join(ORT_DIR, "bench_ort.mjs"), "--model", onnx, "--image",
                               case["image"], "--threads", str(args.threads), "--repeat", str(repeat),
                               "--warmup", str(warmup)]
    return cmds, notes, big


def export_onnx(args, workdir):
    """{model: .onnx path} for every model whose ONNX Runtime output equals PyTorch's on a real crop (>= 60 dB)."""
    import numpy as np
    from PIL import Image
    from realesrgan_ref import bench_input
    check = os.path.join(workdir, "onnx_check.ppm")
    Image.fromarray(bench_input(size=40)).save(check)
    models = {}
    for m in args.models:
        onnx, ort_out, ref_out = (os.path.join(workdir, f"{m}{ext}") for ext in (".onnx", "_ort.ppm", "_ref.png"))
        steps = [[args.python, REF_SCRIPT, "export-onnx", m, onnx],
                 [args.python, REF_SCRIPT, "upscale", check, ref_out, "--model", m],
                 ["node", os.path.join(ORT_DIR, "bench_ort.mjs"), "--model", onnx, "--image", check,
                  "--threads", str(args.threads), "--repeat", "1", "--warmup", "0", "--output", ort_out]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if r.returncode != 0:
                print(f"bench_upscaler: {' '.join(cmd[:3])} failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
                break
        else:
            a, b = (np.asarray(Image.open(f), dtype=np.float64) for f in (ort_out, ref_out))
            mse = float(np.mean((a - b) ** 2)) if a.shape == b.shape else None
            psnr = None if mse is None else float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
            print(f"ONNX Runtime {m} vs PyTorch on a 40x40 crop: {psnr} dB", file=sys.stderr)
            if psnr is not None and psnr >= 60:
                models[m] = onnx
    return models


def run_case(case, args, ours_ok):
    """Runs the implementations in turn, `rounds` times (the box's speed drifts: interleaving
    gives each the same chances), keeping each one's fastest result."""
    cmds, notes, big = commands(case, args, ours_ok)
    row = dict(model=case["model"], precision=case["precision"], input=case["input"],
               pixels=case["pixels"], gflop=case["gflop"], **dict.fromkeys(IMPLS))
    for _ in range(1 if big else args.rounds):
        for impl, cmd in cmds.items():
            if cmd is None:
                continue
            result, err = run_json(cmd, args.timeout)
            if err:
                notes.append(f"{impl} failed ({err})")
                cmds[impl] = None
            elif row[impl] is None or result["ms"] < row[impl]["ms"]:
                row[impl] = result
    ours = row["ours"]
    if ours and ours.get("macs_per_px", MAC_PER_PIXEL[case["model"]]) != MAC_PER_PIXEL[case["model"]]:
        notes.append(f"ours reports macs_per_px {ours['macs_per_px']}")
    if ours and ours.get("tiles", 1) > 1 and ours.get("engine", "libtorch") == "libtorch":
        notes.append(f"ours tiled {ours.get('tile')}/{ours.get('tile_pad')}")
    if ours:
        notes.append("ours engine " + ours.get("engine", "libtorch"))
    row["note"] = "; ".join(notes)
    return row


def derived(row):
    """Table cells computed from the JSON results."""
    def ms(impl):
        return row[impl]["ms"] if row[impl] else None

    def ratio(a, b):
        return ms(a) / ms(b) if ms(a) and ms(b) else None

    def gflops(impl):
        return row["gflop"] / (ms(impl) / 1e3) if ms(impl) else None

    def rss(impl):
        return row[impl]["peak_rss_mb"] if row[impl] else None

    ours = ms("ours")
    return {
        "ours_ms": ours, "pytorch_ms": ms("pytorch"), "pytorch_cl_ms": ms("pytorch_cl"),
        "ratio": ratio("ours", "pytorch"), "ratio_cl": ratio("ours", "pytorch_cl"),
        "ort_ms": ms("onnxruntime"), "ratio_ort": ratio("ours", "onnxruntime"),
        "ours_mpix_s": row["pixels"] / 1e6 / (ours / 1e3) if ours else None,
        "ours_gflops": gflops("ours"), "pytorch_gflops": gflops("pytorch"),
        "pytorch_cl_gflops": gflops("pytorch_cl"),
        "ours_rss_mb": rss("ours"), "pytorch_rss_mb": rss("pytorch"), "pytorch_cl_rss_mb": rss("pytorch_cl"),
    }


COLUMNS = [  # (header, key, format)
    ("model", "model", "{}"), ("prec", "precision", "{}"), ("input", "input", "{}"),
    ("ours ms", "ours_ms", "{:.1f}"), ("pt ms", "pytorch_ms", "{:.1f}"), ("pt-CL ms", "pytorch_cl_ms", "{:.1f}"),
    ("ort ms", "ort_ms", "{:.1f}"),
    ("ours/pt", "ratio", "{:.2f}"), ("ours/pt-CL", "ratio_cl", "{:.2f}"), ("ours/ort", "ratio_ort", "{:.2f}"),
    ("MP/s ours", "ours_mpix_s", "{:.3f}"),
    ("GFLOP/s ours", "ours_gflops", "{:.0f}"), ("GFLOP/s pt", "pytorch_gflops", "{:.0f}"),
    ("GFLOP/s pt-CL", "pytorch_cl_gflops", "{:.0f}"),
    ("RSS ours MB", "ours_rss_mb", "{:.0f}"), ("RSS pt MB", "pytorch_rss_mb", "{:.0f}"),
    ("RSS pt-CL MB", "pytorch_cl_rss_mb", "{:.0f}"),
    ("note", "note", "{}"),
]


def print_table(rows, out=sys.stdout):
    cells = [[h for h, _, _ in COLUMNS]]
    for row in rows:
        flat = {**row, **derived(row)}
        cells.append(["-" if flat[k] is None else fmt.format(flat[k]) for _, k, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i in (0, 1, 2, len(r) - 1) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def cpu_line():
    """lscpu's model name and the SIMD flags that decide our kernels."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "lscpu: not available"
    fields = dict(l.split(":", 1) for l in text.splitlines() if ":" in l)
    flags = fields.get("Flags", "").split()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"]
    return (f"CPU: {fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs; flags: "
            + " ".join(f for f in wanted if f in flags))


def main(argv=None):
    args = parse_args(argv)
    print(cpu_line())
    ours_ok = os.path.isfile(args.ours) and os.access(args.ours, os.X_OK)
    if not ours_ok:
        print(f"bench_upscaler: our bench binary {args.ours} is missing or not executable "
              f"(build it, or pass --ours PATH); reporting the PyTorch reference only.",
              file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_upscaler_") as workdir:
        inputs = write_inputs(args, workdir)
        args.onnx_models = export_onnx(args, workdir) if args.onnx else {}
        for case in make_cases(args, inputs):
            row = run_case(case, args, ours_ok)
            rows.append(row)
            d = derived(row)
            print(f"[{len(rows)}] {row['model']} {row['precision']} {row['input']}: "
                  f"ours {d['ours_ms']} ms, pytorch {d['pytorch_ms']} ms, pytorch-CL {d['pytorch_cl_ms']} ms "
                  f"({row['note']})",
                  file=sys.stderr, flush=True)
    print(f"\nthreads={args.threads}; ms = best run; pt = plain PyTorch (NCHW, as Real-ESRGAN runs it), "
          f"pt-CL = PyTorch with channels_last model and input; ort = ONNX Runtime (--onnx, fp32); GFLOP = 2 x MAC x input pixels "
          f"(MAC/px: {', '.join(f'{m} {v:,}' for m, v in MAC_PER_PIXEL.items())})")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**r, **derived(r), "threads": args.threads} for r in rows], f, indent=1)
    return 1 if any("failed" in r["note"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
