#!/bin/bash
# Makes bench/gpu_inputs/ (gitignored) for bench/gpu_run.sh, on a CPU machine with the normal build:
#   - photo1080.ppm: a real photo (skimage's coffee, 600x400, resized bicubic to 1920x1280 and centre-cropped
#     to 1920x1080: no Debian package ships a real photo that large) and crop512.ppm (skimage's astronaut,
#     a real 512x512 photo);
#   - models/: copies of the x4plus and x4fast .param/.bin (the device run gets no models/ symlink);
#   - for each photo and model, our CPU fp32 output of the centre 256x256 window, computed from that window
#     plus 64 px of context on every side (>= both models' seamless pad, so it stands for the whole-image
#     output there) and cropped back to the window's 1024x1024: the PSNR reference;
#   - manifest.json describing all of it.
# ~27 MB of PPM + 36 MB of models: inside the device tool's 64 MiB carry.
#
#   bench/make_gpu_inputs.sh [BENCH_BINARY]     (default build/release/bench/upscaler_bench)
#   bench/make_gpu_inputs.sh --smoke            only a 64x64 photo, x4fast: for gpu_run.sh --cpu-smoke
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
BENCH=${1:-build/release/bench/upscaler_bench}
DIR=bench/gpu_inputs
[ "$SMOKE" = 1 ] && DIR=bench/gpu_inputs_smoke
PY=/usr/bin/python3   # Debian's, with PIL
mkdir -p "$DIR/models" "$DIR/windows"
for m in x4plus x4fast; do
  [ "$SMOKE" = 1 ] && [ "$m" = x4plus ] && continue
  cp -L "models/realesrgan-$m.param" "models/realesrgan-$m.bin" "$DIR/models/"
done

SMOKE=$SMOKE DIR=$DIR "$PY" - <<'EOF'
import json, os
from PIL import Image

data = "/usr/lib/python3/dist-packages/skimage/data"
d, smoke = os.environ["DIR"], os.environ["SMOKE"] == "1"
CTX, WIN = 64, 256

def save_ppm(path, im):
    w, h = im.size
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h) + im.tobytes())

images = []
if smoke:
    photos = [("tiny64", Image.open(f"{data}/chelsea.png").convert("RGB").crop((180, 60, 244, 124)), 16)]
else:
    coffee = Image.open(f"{data}/coffee.png").convert("RGB").resize((1920, 1280), Image.BICUBIC)
    photos = [("photo1080", coffee.crop((0, 100, 1920, 1180)), WIN),
              ("crop512", Image.open(f"{data}/astronaut.png").convert("RGB"), WIN)]
for name, im, win in photos:
    w, h = im.size
    save_ppm(f"{d}/{name}.ppm", im)
    x, y = (w - win) // 2, (h - win) // 2
    ctx = (max(0, x - CTX), max(0, y - CTX), min(w, x + win + CTX), min(h, y + win + CTX))
    save_ppm(f"{d}/windows/{name}_context.ppm", im.crop(ctx))
    images.append({"name": name, "file": f"{name}.ppm", "size": [w, h],
                   "window": {"core": [x, y, win, win], "context": list(ctx)},
                   "context_file": f"windows/{name}_context.ppm", "refs": {}})
with open(f"{d}/manifest.json", "w") as f:
    json.dump({"images": images}, f, indent=1)
EOF

# Our CPU fp32 output of each window's context crop, whole (no tiling), cropped to the window.
for m in x4plus x4fast; do
  [ "$SMOKE" = 1 ] && [ "$m" = x4plus ] && continue
  for name in $("$PY" -c "import json; print(' '.join(i['name'] for i in json.load(open('$DIR/manifest.json'))['images']))"); do
    echo "CPU fp32 reference: $m $name" >&2
    nice -n 10 "$BENCH" --model "$DIR/models/realesrgan-$m.param" --image "$DIR/windows/${name}_context.ppm" \
      --device cpu --precision fp32 --tile 0 --repeat 1 --warmup 0 --output "$DIR/windows/${name}_context_$m.ppm" >&2
    DIR=$DIR M=$m NAME=$name "$PY" - <<'EOF'
import json, os
from PIL import Image
d, m, name = os.environ["DIR"], os.environ["M"], os.environ["NAME"]
man = json.load(open(f"{d}/manifest.json"))
img = next(i for i in man["images"] if i["name"] == name)
x, y, w, h = img["window"]["core"]
cx, cy = img["window"]["context"][:2]
out = Image.open(f"{d}/windows/{name}_context_{m}.ppm")
ref = out.crop(((x - cx) * 4, (y - cy) * 4, (x - cx + w) * 4, (y - cy + h) * 4))
rel = f"windows/{name}_{m}_cpu_fp32.ppm"
with open(f"{d}/{rel}", "wb") as f:
    f.write(b"P6\n%d %d\n255\n" % ref.size + ref.tobytes())
os.remove(f"{d}/windows/{name}_context_{m}.ppm")
img["refs"][m] = rel
json.dump(man, open(f"{d}/manifest.json", "w"), indent=1)
EOF
  done
done
du -sh "$DIR"
