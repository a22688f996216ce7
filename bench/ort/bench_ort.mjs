// ONNX Runtime (CPU) on one Real-ESRGAN .onnx and one binary PPM, as a peer in bench/bench_upscaler.py.
// node bench/ort/bench_ort.mjs --model M.onnx --image IN.ppm --threads T --repeat R --warmup W [--output OUT.ppm]
// Prints one JSON line like the other benches: {"impl", "size", "ms" (best), "ms_median", "peak_rss_mb", ...}.
import * as fs from 'node:fs';
import * as ort from 'onnxruntime-node';

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) =>
  (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []));

function readPpm(path) {  // P6, maxval 255, no comments
  const buf = fs.readFileSync(path);
  const fields = [];
  let pos = 0;
  while (fields.length < 4) {
    while (/\s/.test(String.fromCharCode(buf[pos]))) ++pos;
    let end = pos;
    while (!/\s/.test(String.fromCharCode(buf[end]))) ++end;
    fields.push(buf.toString('latin1', pos, end));
    pos = end;
  }
  if (fields[0] !== 'P6' || fields[3] !== '255') throw new Error(`${path}: not a binary 8-bit PPM`);
  const [w, h] = [Number(fields[1]), Number(fields[2])];
  return {w, h, rgb: buf.subarray(pos + 1, pos + 1 + 3 * w * h)};
}

const {w, h, rgb} = readPpm(args.image);
const planar = new Float32Array(3 * w * h);  // NCHW, /255
for (let i = 0; i < w * h; ++i)
  for (let c = 0; c < 3; ++c) planar[c * w * h + i] = rgb[3 * i + c] / 255;
const session = await ort.InferenceSession.create(args.model, {
  intraOpNumThreads: Number(args.threads), interOpNumThreads: 1, executionProviders: ['cpu'],
  graphOptimizationLevel: 'all'});
const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', planar, [1, 3, h, w])};
const times = [];
let out;
for (let i = 0; i < Number(args.warmup) + Number(args.repeat); ++i) {
  const t = performance.now();
  out = (await session.run(feeds))[session.outputNames[0]];
  if (i >= Number(args.warmup)) times.push(performance.now() - t);
}
if (args.output) {
  const [, , oh, ow] = out.dims;
  const px = Buffer.alloc(3 * ow * oh);
  for (let i = 0; i < ow * oh; ++i)
    for (let c = 0; c < 3; ++c)
      px[3 * i + c] = Math.round(Math.min(1, Math.max(0, out.data[c * ow * oh + i])) * 255);
  fs.writeFileSync(args.output, Buffer.concat([Buffer.from(`P6\n${ow} ${oh}\n255\n`, 'latin1'), px]));
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({
  impl: 'onnxruntime', runtime: `onnxruntime-node ${ort.env.versions.common}`, size: `${w}x${h}`,
  ms: Math.round(times[0] * 1000) / 1000, ms_median: Math.round(times[times.length >> 1] * 1000) / 1000,
  peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 102.4) / 10, threads: Number(args.threads)}));
