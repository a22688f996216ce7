#!/usr/bin/env python3
"""Ours (upscaler_bench, libtorch C++) against Python PyTorch on one GPU, same tiles, one run.

Called by bench/gpu_run.sh after it has built upscaler_bench against the PyTorch wheel's libtorch.
Inputs come from bench/make_gpu_inputs.sh (made beforehand on a CPU machine): two photos as PPM, the
model files, and for each photo and model our CPU fp32 output of a 256x256 window (with its context),
which the GPU outputs are compared against (PSNR).

For every model x image: ours fp16, ours fp32 (cuDNN may use TF32, PyTorch's default), and PyTorch fp16
channels_last with the reference's networks (tests/reference/realesrgan_ref.py) tiled exactly as ours
(balanced cores of --tile, --tile-pad context), timed from 8-bit pixels in host memory to 8-bit pixels in
host memory. Needs only torch (and numpy, which the reference imports). Writes gpu_results.json and
gpu_results.txt into --out.

--device cpu --precisions fp32 runs the same plumbing on the CPU (a smoke test of this script).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))

GOAL_X4PLUS_1080P_MS = 500.0
GOAL_RATIO = 0.7
PADS = {"x4plus": 64, "x4fast": 34}  # our seamless defaults (DESIGN.md)


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    parts, pos = [], 0
    while len(parts) < 4:  # magic, width, height, maxval, separated by whitespace
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        parts.append(data[pos:end])
        pos = end
    pos += 1
    if parts[0] != b"P6" or parts[3] != b"255":
        raise ValueError(f"{path}: not an 8-bit P6 PPM")
    w, h = int(parts[1]), int(parts[2])
    return torch.frombuffer(bytearray(data[pos:pos + w * h * 3]), dtype=torch.uint8).reshape(h, w, 3)


def psnr(a, b):
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def split(n, parts, k):
    return n * k // parts


def tiles(w, h, tile, pad):
    """Our TileGrid (src/upscaler/tiling.h): balanced cores, each grown by pad, clipped to the image."""
    nx = -(-w // tile) if tile > 0 else 1
    ny = -(-h // tile) if tile > 0 else 1
    for ty in range(ny):
        for tx in range(nx):
            x0, x1 = split(w, nx, tx), split(w, nx, tx + 1)
            y0, y1 = split(h, ny, ty), split(h, ny, ty + 1)
            yield (x0, y0, x1, y1), (max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad))


def pytorch_upscale(net, rgb, tile, pad, dtype, device, scale):
    h, w, _ = rgb.shape
    x = rgb.to(device).permute(2, 0, 1)[None].float().div_(255.0).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty((h * scale, w * scale, 3), dtype=torch.uint8, device=device)
    for (x0, y0, x1, y1), (px0, py0, px1, py1) in tiles(w, h, tile, pad):
        t = net(x[:, :, py0:py1, px0:px1])
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        t = t[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale].float()
        out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
            (t * 255.0).clamp_(0, 255).round_().to(torch.uint8)[0].permute(1, 2, 0)
    res = out.cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return res


def bench_pytorch(model_path, rgb, tile, pad, precision, device, repeat, warmup):
    import realesrgan_ref as ref
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    t0 = time.perf_counter()
    net = ref.load_model(model_path).to(device=device, dtype=dtype).to(memory_format=torch.channels_last).eval()
    times, out = [], None
    with torch.inference_mode():
        for i in range(warmup + repeat):
            t = time.perf_counter()
            out = pytorch_upscale(net, rgb, tile, pad, dtype, device, net.scale)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1000.0)
    load_ms = (time.perf_counter() - t0) * 1000.0 - sum(times)
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    times.sort()
    return {"ms": round(times[0], 1), "ms_median": round(times[len(times) // 2], 1),
            "load_and_warmup_ms": round(load_ms, 1)}, out


def run_ours(ours, model_path, image, out_ppm, precision, device, tile, pad, repeat, warmup, threads):
    cmd = [ours, "--model", model_path, "--image", image, "--precision", precision, "--device", device,
           "--tile", str(tile), "--tile-pad", str(pad), "--repeat", str(repeat), "--warmup", str(warmup),
           "--threads", str(threads), "--output", out_ppm]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip()[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def window_psnr(full_out, window, ref_path, scale):
    if not os.path.exists(ref_path):
        return None
    ref_img = read_ppm(ref_path)
    x, y, w, h = window["core"]
    return round(psnr(full_out[y * scale:(y + h) * scale, x * scale:(x + w) * scale], ref_img), 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True, help="upscaler_bench binary")
    ap.add_argument("--inputs", default=os.path.join(REPO, "bench", "gpu_inputs"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cuda | cpu (smoke test)")
    ap.add_argument("--precisions", default="fp16,fp32", help="ours")
    ap.add_argument("--ref-precision", default="fp16", help="PyTorch's")
    ap.add_argument("--models", default="x4plus,x4fast")
    ap.add_argument("--images", default="", help="names in inputs/manifest.json (default: all)")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.inputs, "manifest.json")) as f:
        manifest = json.load(f)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: torch.cuda.is_available() is False")
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "tile": a.tile}
    images = [i for i in manifest["images"] if not a.images or i["name"] in a.images.split(",")]
    rows, lines = [], []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    say(f"# {json.dumps(env)}")
    for model in a.models.split(","):
        model_path = os.path.join(a.inputs, "models", f"realesrgan-{model}.param")
        pad = PADS[model]
        for img in images:
            image = os.path.join(a.inputs, img["file"])
            rgb = read_ppm(image)
            h, w, _ = rgb.shape
            mp = w * h / 1e6
            ref_path = os.path.join(a.inputs, img["refs"][model]) if model in img.get("refs", {}) else ""
            row = {"model": model, "image": img["name"], "size": f"{w}x{h}", "tile": a.tile, "tile_pad": pad}
            for prec in a.precisions.split(","):
                out_ppm = os.path.join(a.out, f"ours_{model}_{img['name']}_{prec}.ppm")
                r = run_ours(a.ours, model_path, image, out_ppm, prec, a.device, a.tile, pad, a.repeat, a.warmup,
                             a.threads)
                if "error" not in r:
                    r["psnr_vs_cpu_fp32"] = window_psnr(read_ppm(out_ppm), img["window"], ref_path, 4)
                    r["mp_per_s"] = round(mp / (r["ms"] / 1000.0), 3)
                    os.remove(out_ppm)  # 100 MB each at 1080p: keep the figures, not the pixels
                row[f"ours_{prec}"] = r
            try:
                r, out = bench_pytorch(model_path, rgb, a.tile, pad, a.ref_precision, device, a.repeat, a.warmup)
                r["psnr_vs_cpu_fp32"] = window_psnr(out, img["window"], ref_path, 4)
                r["mp_per_s"] = round(mp / (r["ms"] / 1000.0), 3)
            except Exception as e:  # noqa: BLE001 - report it and go on with the other rows
                r = {"error": f"{type(e).__name__}: {e}"}
            row[f"pytorch_{a.ref_precision}_cl"] = r
            rows.append(row)

            say(f"\n{model} {img['name']} {w}x{h} ({mp:.2f} MP), tile {a.tile}+{pad}, {a.device}")
            for key, r in row.items():
                if not isinstance(r, dict):
                    continue
                if "error" in r:
                    say(f"  {key:18s} ERROR {r['error']}")
                    continue
                extra = f", {r['fp32_redos']} tile(s) redone in fp32" if r.get("fp32_redos") else ""
                say(f"  {key:18s} {r['ms']:9.1f} ms  {r['mp_per_s']:8.3f} MP/s  "
                    f"PSNR vs our CPU fp32 {r['psnr_vs_cpu_fp32']} dB{extra}")
            ours16 = row.get("ours_fp16", {})
            ref16 = row.get(f"pytorch_{a.ref_precision}_cl", {})
            if "ms" in ours16 and "ms" in ref16:
                ratio = ours16["ms"] / ref16["ms"]
                row["ratio_ours_fp16_to_pytorch"] = round(ratio, 3)
                say(f"  ours fp16 / PyTorch {a.ref_precision}: {ratio:.2f}x (goal <= {GOAL_RATIO}x: "
                    f"{'met' if ratio <= GOAL_RATIO else 'NOT met'})")
            if model == "x4plus" and (w, h) == (1920, 1080) and "ms" in ours16:
                say(f"  x4plus 1080p ours fp16 {ours16['ms']:.0f} ms (goal <= {GOAL_X4PLUS_1080P_MS:.0f} ms: "
                    f"{'met' if ours16['ms'] <= GOAL_X4PLUS_1080P_MS else 'NOT met'})")

    with open(os.path.join(a.out, "gpu_results.json"), "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    with open(os.path.join(a.out, "gpu_results.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
