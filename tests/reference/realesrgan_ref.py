#!/usr/bin/python3
"""Plain PyTorch reference for the Real-ESRGAN x4 models used by PetCam.

This file is deliberately independent of the C++ code: it reads the ncnn
.param/.bin pair with numpy, rebuilds the basicsr network (RRDBNet for
x4plus, SRVGGNetCompact for x4fast) with the basicsr parameter names and
runs it with stock PyTorch ops in NCHW.  It is the oracle the C++ tests and
benchmarks compare against, so it favours obviousness over speed.

Run with /usr/bin/python3 (Debian python3-torch).  Subcommands:
  upscale IN OUT --model PATH [--precision fp32|bf16] [--tile N] [--tile-pad N] [--threads N]
  export-pth MODEL OUT.pth --key params_ema|params|plain
  bench --model PATH --precision fp32|bf16 --threads N (--size N | --image F) [...]
  check-graph --model PARAM [--size N]   (executes the raw ncnn graph and compares)
"""

import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_DIR = os.path.join(REPO_ROOT, "models")
BENCH_PHOTO = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png"

NCNN_MAGIC = 7767517
# Tags that precede a "type 0" weight blob in an ncnn .bin (little-endian uint32).
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x0002C056
TAG_RAW_FP32 = 0x00000000

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ModelError(Exception):
    """A model file is malformed or does not match the expected network."""


# --------------------------------------------------------------------------
# ncnn .param / .bin reader (numpy only)
# --------------------------------------------------------------------------

@dataclass
class Layer:
    type: str
    name: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)   # int id -> int | float | list
    weights: dict = field(default_factory=dict)  # "weight"/"bias"/"slope" -> np.ndarray

    def get(self, key, default=None):
        return self.params.get(key, default)


def _parse_value(text):
    # ncnn treats a value containing '.' or an exponent as float, else int.
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _parse_params(tokens, where):
    params = {}
    for tok in tokens:
        key_text, sep, value = tok.partition("=")
        if not sep:
            raise ModelError(f"{where}: malformed parameter {tok!r}")
        key = int(key_text)
        if key <= -23300:
            # Array parameter: key is -23300-id, value is "count,v1,v2,...".
            items = value.split(",")
            count = int(items[0])
            if count != len(items) - 1:
                raise ModelError(f"{where}: array parameter {tok!r} has wrong length")
            params[-key - 23300] = [_parse_value(v) for v in items[1:]]
        else:
            params[key] = _parse_value(value)
    return params


def parse_param(path):
    """Parse an ncnn text .param file into a list of Layers (file order)."""
    with open(path, "r", encoding="ascii") as f:
        lines = [ln.split() for ln in f if ln.strip()]
    if not lines or lines[0] != [str(NCNN_MAGIC)]:
        raise ModelError(f"{path}: not an ncnn .param file (bad magic)")
    if len(lines) < 2 or len(lines[1]) != 2:
        raise ModelError(f"{path}: missing 'layer_count blob_count' line")
    layer_count = int(lines[1][0])
    body = lines[2:]
    if len(body) != layer_count:
        raise ModelError(f"{path}: header says {layer_count} layers, file has {len(body)}")
    layers = []
    for toks in body:
        if len(toks) < 4:
            raise ModelError(f"{path}: truncated layer line {' '.join(toks)!r}")
        ltype, name, n_in, n_out = toks[0], toks[1], int(toks[2]), int(toks[3])
        blobs = toks[4:4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise ModelError(f"{path}: layer {name}: missing blob names")
        params = _parse_params(toks[4 + n_in + n_out:], f"{path}: layer {name}")
        layers.append(Layer(ltype, name, blobs[:n_in], blobs[n_in:], params))
    return layers


class _BinCursor:
    """Sequential little-endian reader over the .bin bytes with bounds checks."""

    def __init__(self, data, path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, nbytes, what):
        if self.pos + nbytes > len(self.data):
            raise ModelError(
                f"{self.path}: truncated while reading {what}: need {nbytes} bytes at "
                f"offset {self.pos}, file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def fp32(self, count, what):
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count, what):
        """ncnn 'type 0' blob: a uint32 tag says how the values are stored."""
        tag = int(np.frombuffer(self.take(4, what + " tag"), dtype="<u4")[0])
        if tag == TAG_FP16:
            # fp16 payload is padded to a multiple of 4 bytes.
            nbytes = 2 * count
            raw = self.take((nbytes + 3) & ~3, what)
            return np.frombuffer(raw[:nbytes], dtype="<f2").astype(np.float32)
        if tag in (TAG_FP32, TAG_RAW_FP32):
            return self.fp32(count, what)
        raise ModelError(f"{self.path}: {what}: bad weight tag 0x{tag:08X} at offset "
                         f"{self.pos - 4}: the .bin does not match the .param, or holds "
                         f"int8/quantized weights (not supported)")


def _check_conv_params(layer):
    """Only the plain KxK / stride 1 / 'same'-padded convolutions the two models use."""
    p = layer.params
    num_output, kernel, size = p.get(0, 0), p.get(1, 0), p.get(6, 0)
    # ncnn defaults: *_h follows the w value, pad_right/top follow pad_left, pad_bottom pad_top.
    pad = p.get(4, 0)
    pads = (pad, p.get(15, pad), p.get(14, pad), p.get(16, p.get(14, pad)))
    fixed = {"kernel_h": (p.get(11, kernel), kernel), "dilation": (p.get(2, 1), 1),
             "dilation_h": (p.get(12, p.get(2, 1)), 1), "stride": (p.get(3, 1), 1),
             "stride_h": (p.get(13, p.get(3, 1)), 1), "int8_scale_term": (p.get(8, 0), 0),
             "dynamic_weight": (p.get(19, 0), 0), "activation": (p.get(9, 0) in (0, 2), True)}
    for what, (have, want) in fixed.items():
        if have != want:
            raise ModelError(f"layer {layer.name}: unsupported Convolution {what} ({have})")
    if any(q != kernel // 2 for q in pads):
        raise ModelError(f"layer {layer.name}: only symmetric 'same' padding is supported")
    if num_output <= 0 or kernel <= 0 or size <= 0 or size % (num_output * kernel * kernel):
        raise ModelError(
            f"layer {layer.name}: weight_data_size {size} is not a multiple of "
            f"num_output*kernel*kernel = {num_output}*{kernel}*{kernel}")


def read_bin(layers, bin_path):
    """Attach the .bin weights to the Convolution/PReLU layers, in .param order."""
    with open(bin_path, "rb") as f:
        cur = _BinCursor(f.read(), bin_path)
    for layer in layers:
        p = layer.params
        if layer.type == "Convolution":
            _check_conv_params(layer)
            num_output, kernel, size = p[0], p[1], p[6]
            in_ch = size // (num_output * kernel * kernel)
            w = cur.tagged(size, f"layer {layer.name} weights")
            layer.weights["weight"] = w.reshape(num_output, in_ch, kernel, kernel)
            if p.get(5, 0):
                layer.weights["bias"] = cur.fp32(num_output, f"layer {layer.name} bias")
        elif layer.type == "PReLU":
            layer.weights["slope"] = cur.fp32(p.get(0, 1), f"layer {layer.name} slopes")
        elif layer.type not in ("Input", "Split", "Concat", "Eltwise", "BinaryOp",
                                "Interp", "PixelShuffle"):
            # Any other type may carry weights we would silently skip.
            raise ModelError(f"layer {layer.name}: unsupported layer type {layer.type}")
    if cur.pos != len(cur.data):
        raise ModelError(f"{bin_path}: {len(cur.data) - cur.pos} unexpected trailing bytes "
                         f"(the .bin does not match the .param)")
    return layers


def load_ncnn(param_path):
    """Read <name>.param and the <name>.bin beside it."""
    layers = parse_param(param_path)
    bin_path = os.path.splitext(param_path)[0] + ".bin"
    if not os.path.isfile(bin_path):
        raise ModelError(f"{bin_path}: missing (expected next to {param_path})")
    return read_bin(layers, bin_path)


# --------------------------------------------------------------------------
# basicsr networks (same module / parameter names as basicsr)
# --------------------------------------------------------------------------

def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        g = num_grow_ch
        self.conv1 = _conv3x3(num_feat, g)
        self.conv2 = _conv3x3(num_feat + g, g)
        self.conv3 = _conv3x3(num_feat + 2 * g, g)
        self.conv4 = _conv3x3(num_feat + 3 * g, g)
        self.conv5 = _conv3x3(num_feat + 4 * g, num_feat)

    def forward(self, x):
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x  # residual scaling from ESRGAN


class RRDB(nn.Module):
    def __init__(self, num_feat, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """basicsr RRDBNet, scale 4 only (scale 1/2 variants pixel-unshuffle the input)."""

    scale = 4
    # Convs followed by LeakyReLU(0.2); ncnn fuses these (9=2).
    LEAKY_SUFFIXES = (".conv1", ".conv2", ".conv3", ".conv4")
    LEAKY_NAMES = ("conv_up1", "conv_up2", "conv_hr")

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        self.conv_first = _conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1 = _conv3x3(num_feat, num_feat)
        self.conv_up2 = _conv3x3(num_feat, num_feat)
        self.conv_hr = _conv3x3(num_feat, num_feat)
        self.conv_last = _conv3x3(num_feat, num_out_ch)

    @classmethod
    def conv_has_leaky(cls, name):
        return name in cls.LEAKY_NAMES or name.endswith(cls.LEAKY_SUFFIXES)

    def forward(self, x):
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact VGG-style net (realesr-*-x4v3 / 'x4fast'), PReLU only."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4):
        super().__init__()
        self.scale = upscale
        layers = [_conv3x3(num_in_ch, num_feat), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [_conv3x3(num_feat, num_feat), nn.PReLU(num_parameters=num_feat)]
        layers.append(_conv3x3(num_feat, num_out_ch * upscale * upscale))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @staticmethod
    def conv_has_leaky(name):
        return False

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        # The net predicts a residual over a nearest-neighbour upscale of the input.
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


# --------------------------------------------------------------------------
# Building models from ncnn layers or a .pth state dict
# --------------------------------------------------------------------------

def _arch_from_ncnn(layers):
    types = [l.type for l in layers]
    convs = [l for l in layers if l.type == "Convolution"]
    if "PReLU" in types or "PixelShuffle" in types:
        shuffles = [l for l in layers if l.type == "PixelShuffle"]
        if len(shuffles) != 1:
            raise ModelError("SRVGG model must have exactly one PixelShuffle layer")
        up = shuffles[0].get(0, 1)
        num_feat = convs[0].get(0)
        return SRVGGNetCompact(num_in_ch=convs[0].weights["weight"].shape[1],
                               num_out_ch=convs[-1].get(0) // (up * up),
                               num_feat=num_feat, num_conv=len(convs) - 2, upscale=up)
    # RRDBNet: conv_first + 15 convs per RRDB + conv_body/up1/up2/hr/last.
    if (len(convs) - 6) % 15 or len(convs) < 21:
        raise ModelError(f"{len(convs)} convolutions do not fit an RRDBNet layout")
    if types.count("Interp") != 2 or convs[0].weights["weight"].shape[1] != 3:
        raise ModelError("only the scale-4 RRDBNet (two x2 upsamplings, 3 input channels) "
                         "is supported")
    return RRDBNet(num_in_ch=3, num_out_ch=convs[-1].get(0), num_feat=convs[0].get(0),
                   num_block=(len(convs) - 6) // 15, num_grow_ch=convs[1].get(0))


def _state_dict_from_ncnn(model, layers):
    """Zip the weighted ncnn layers with the module's Conv2d/PReLU modules in order."""
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    weighted = [l for l in layers if l.type in ("Convolution", "PReLU")]
    if len(modules) != len(weighted):
        raise ModelError(f"ncnn model has {len(weighted)} weighted layers, "
                         f"{type(model).__name__} expects {len(modules)}")
    sd = {}
    for (name, mod), layer in zip(modules, weighted):
        if isinstance(mod, nn.Conv2d):
            if layer.type != "Convolution":
                raise ModelError(f"layer {layer.name}: expected a Convolution for {name}")
            # The fused activation must be where the PyTorch module applies one.
            act = layer.get(9, 0)
            slope = (layer.get(10) or [0.0])[0]
            want_leaky = model.conv_has_leaky(name)
            if (act == 2 and abs(slope - 0.2) < 1e-6) != want_leaky or act == 1:
                raise ModelError(f"layer {layer.name}: activation {act} does not match {name}")
            pairs = [("weight", mod.weight, layer.weights["weight"]),
                     ("bias", mod.bias, layer.weights.get("bias"))]
        else:
            if layer.type != "PReLU":
                raise ModelError(f"layer {layer.name}: expected a PReLU for {name}")
            pairs = [("weight", mod.weight, layer.weights["slope"])]
        for pname, ref, arr in pairs:
            if arr is None:
                raise ModelError(f"layer {layer.name}: has no {pname} (bias_term=0?)")
            if tuple(arr.shape) != tuple(ref.shape):
                raise ModelError(f"layer {layer.name}: {pname} shape {tuple(arr.shape)} does not "
                                 f"match {name}.{pname} {tuple(ref.shape)}")
            sd[f"{name}.{pname}"] = torch.from_numpy(np.ascontiguousarray(arr))
    return sd


def _check_ncnn_glue(layers):
    """The parameter-free layers must be the ones the basicsr forward() hard-codes."""
    for l in layers:
        if l.type == "Eltwise" and (l.get(0) != 1 or l.get(1) != [0.2, 1.0]):
            raise ModelError(f"layer {l.name}: expected Eltwise sum 0.2*a + 1.0*b")
        if l.type == "BinaryOp" and l.get(0, 0) != 0:
            raise ModelError(f"layer {l.name}: only BinaryOp add is supported")
        if l.type == "Interp" and l.get(0) != 1:
            raise ModelError(f"layer {l.name}: only nearest Interp is supported")
        if l.type == "PixelShuffle" and l.get(1, 0) != 0:
            raise ModelError(f"layer {l.name}: only PixelShuffle mode 0 is supported")
        if l.type == "Concat" and l.get(0, 0) != 0:
            raise ModelError(f"layer {l.name}: only channel Concat is supported")


def model_from_ncnn(param_path):
    layers = load_ncnn(param_path)
    _check_ncnn_glue(layers)
    model = _arch_from_ncnn(layers)
    model.load_state_dict(_state_dict_from_ncnn(model, layers), strict=True)
    return model.eval()


def _unwrap_state_dict(obj):
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):  # Real-ESRGAN release .pth layouts
            if key in obj:
                return obj[key]
    return obj


def model_from_state_dict(sd):
    if "conv_first.weight" in sd:
        num_feat, in_ch = sd["conv_first.weight"].shape[:2]
        if in_ch != 3:
            raise ModelError("only the scale-4 RRDBNet (3 input channels) is supported")
        blocks = {k.split(".")[1] for k in sd if k.startswith("body.")}
        model = RRDBNet(num_in_ch=3, num_out_ch=sd["conv_last.weight"].shape[0],
                        num_feat=num_feat, num_block=len(blocks),
                        num_grow_ch=sd["body.0.rdb1.conv1.weight"].shape[0])
    elif "body.0.weight" in sd:
        convs = sorted(int(k.split(".")[1]) for k in sd
                       if k.endswith(".weight") and sd[k].dim() == 4)
        if "body.1.weight" not in sd:
            raise ModelError("only SRVGGNetCompact with PReLU activations is supported")
        first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
        out_ch = first.shape[1]  # Real-ESRGAN SRVGG models output as many channels as they take
        up = math.isqrt(last.shape[0] // out_ch)
        model = SRVGGNetCompact(num_in_ch=first.shape[1], num_out_ch=out_ch,
                                num_feat=first.shape[0], num_conv=len(convs) - 2, upscale=up)
    else:
        raise ModelError("state dict is neither RRDBNet nor SRVGGNetCompact")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def resolve_model_path(spec):
    """'x4plus' / 'x4fast' name the bundled models, anything else is a path."""
    if not os.path.exists(spec) and os.sep not in spec and "." not in spec:
        return os.path.join(MODEL_DIR, f"realesrgan-{spec}.param")
    return spec


def load_model(path):
    """Load a .param (+ .bin beside it) or a .pth; returns an eval() fp32 module."""
    path = resolve_model_path(path)
    if path.endswith(".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch without weights_only
            obj = torch.load(path, map_location="cpu")
        return model_from_state_dict(_unwrap_state_dict(obj))
    return model_from_ncnn(path)


# --------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------

def prepare(model, precision, channels_last=False):
    """Return the model in the requested dtype (and memory format); copies so the fp32 weights survive."""
    dtype = DTYPES[precision]
    if next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def _tiled_forward(net, x, tile, tile_pad, scale):
    """RealESRGANer.tile_process: tile the input, pad each tile with context, crop it back."""
    _, _, h, w = x.shape
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            # Context around the tile, clipped to the image (no padding at image borders).
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            t = net(x[:, :, py0:py1, px0:px1])
            if out is None:
                out = t.new_zeros(1, t.shape[1], h * scale, w * scale)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                t[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def upscale(model, rgb, precision="fp32", tile=0, tile_pad=10, pre_pad=0, channels_last=False):
    """uint8 HxWx3 RGB -> uint8 (scale*H)x(scale*W)x3 RGB.

    channels_last=False is plain PyTorch as Real-ESRGAN runs it (NCHW); True is the tuned
    variant (NHWC activations and weights, which oneDNN needs to skip its reorders)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    dtype = DTYPES[precision]
    net = prepare(model, precision, channels_last)
    scale = net.scale
    h, w = rgb.shape[:2]
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        x = x.to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if pre_pad:
            # Real-ESRGAN reflect-pads right/bottom to give the border some context.
            x = F.pad(x, (0, pre_pad, 0, pre_pad), mode="reflect")
        y = _tiled_forward(net, x, tile, tile_pad, scale) if tile > 0 else net(x)
        y = y[:, :, :h * scale, :w * scale].float()
        y = (y * 255.0).clamp_(0, 255).round_().to(torch.uint8)
    return y[0].permute(1, 2, 0).contiguous().numpy()


# --------------------------------------------------------------------------
# Raw ncnn graph executor (self-check of the module mapping)
# --------------------------------------------------------------------------

def run_ncnn_graph(layers, x):
    """Execute the ncnn graph literally, layer by layer, with torch ops."""
    blobs = {}
    for l in layers:
        ins = [blobs[b] for b in l.inputs]
        if l.type == "Input":
            out = [x]
        elif l.type == "Split":
            out = ins * len(l.outputs)
        elif l.type == "Concat":
            out = [torch.cat(ins, 1)]
        elif l.type == "Eltwise":
            coef = l.get(1, [1.0] * len(ins))
            out = [sum(c * t for c, t in zip(coef, ins))]
        elif l.type == "BinaryOp":
            out = [ins[0] + ins[1]]
        elif l.type == "Interp":
            out = [F.interpolate(ins[0], scale_factor=(l.get(1), l.get(2)), mode="nearest")]
        elif l.type == "PixelShuffle":
            out = [F.pixel_shuffle(ins[0], l.get(0))]
        elif l.type == "PReLU":
            out = [F.prelu(ins[0], torch.from_numpy(l.weights["slope"]))]
        elif l.type == "Convolution":
            b = l.weights.get("bias")
            y = F.conv2d(ins[0], torch.from_numpy(l.weights["weight"]),
                         None if b is None else torch.from_numpy(b), padding=l.get(4, 0))
            if l.get(9, 0) == 2:
                y = F.leaky_relu(y, l.get(10)[0])
            out = [y]
        else:
            raise ModelError(f"layer {l.name}: cannot execute {l.type}")
        blobs.update(zip(l.outputs, out))
    return blobs[layers[-1].outputs[0]]


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def read_rgb(path):
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        # Honour EXIF orientation like a photo viewer would.
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


def write_png(path, rgb):
    from PIL import Image
    Image.fromarray(rgb).save(path, format="PNG")


def bench_input(size=None, image=None):
    """Bench image: a real photo, centre-cropped to NxN (resized if N exceeds the photo)."""
    from PIL import Image
    if image:
        return read_rgb(image)
    with Image.open(BENCH_PHOTO) as im:
        im = im.convert("RGB")
        w, h = im.size
        if size <= min(w, h):
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        else:
            im = im.resize((size, size), Image.BICUBIC)
        return np.array(im)


def cmd_upscale(a):
    model = load_model(a.model)
    out = upscale(model, read_rgb(a.input), a.precision, a.tile, a.tile_pad, a.pre_pad)
    write_png(a.output, out)


def cmd_export_pth(a):
    # An OrderedDict of fp32 tensors, optionally wrapped in a one-key dict: exactly what
    # basicsr's save_network() writes for the Real-ESRGAN release .pth files.
    sd = load_model(a.model).state_dict()
    torch.save(sd if a.key == "plain" else {a.key: sd}, a.output)


def cmd_export_onnx(a):
    # fp32, NCHW, height and width free: what ONNX Runtime gets in bench/bench_upscaler.py --onnx.
    model = load_model(a.model).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.onnx.export(model, x, a.output, input_names=["input"], output_names=["output"], opset_version=13,
                          dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "H", 3: "W"}})


def cmd_bench(a):
    # convert once, outside the timing
    model = prepare(load_model(a.model), a.precision, a.channels_last)
    rgb = bench_input(a.size, a.image)
    times = []
    for i in range(a.warmup + a.repeat):
        t0 = time.perf_counter()
        upscale(model, rgb, a.precision, a.tile, a.tile_pad, channels_last=a.channels_last)
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({
        "impl": "pytorch-cl" if a.channels_last else "pytorch",
        "model": os.path.splitext(os.path.basename(resolve_model_path(a.model)))[0],
        "precision": a.precision,
        "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "ms": round(min(times), 3),
        "ms_median": round(statistics.median(times), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "threads": a.threads,
        "tile": a.tile,
    }), flush=True)


def cmd_check_graph(a):
    layers = load_ncnn(resolve_model_path(a.model))
    model = model_from_ncnn(resolve_model_path(a.model))
    x = torch.from_numpy(bench_input(a.size)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        ref, mod = run_ncnn_graph(layers, x), model(x)
    diff = (ref - mod).abs().max().item()
    print(json.dumps({"max_abs_diff": diff, "shape": list(mod.shape)}))
    if diff > 1e-4:
        raise ModelError(f"module output differs from the raw ncnn graph by {diff}")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add_common(p, need_threads=False):
        p.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
        p.add_argument("--tile", type=int, default=0, help="tile size in input px, 0 = whole image")
        p.add_argument("--tile-pad", type=int, default=10)
        p.add_argument("--threads", type=int, required=need_threads,
                       default=None if need_threads else os.cpu_count())

    p = sub.add_parser("upscale", help="upscale one image to a PNG")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", required=True, help="x4plus, x4fast, a .param or a .pth")
    p.add_argument("--pre-pad", type=int, default=0)
    add_common(p)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("export-pth", help="save an ncnn model as a basicsr .pth")
    p.add_argument("model")
    p.add_argument("output")
    p.add_argument("--key", choices=["params_ema", "params", "plain"], required=True)
    p.set_defaults(func=cmd_export_pth, threads=1)

    p = sub.add_parser("export-onnx", help="save a model as ONNX (fp32, any input size)")
    p.add_argument("model")
    p.add_argument("output")
    p.set_defaults(func=cmd_export_onnx, threads=1)

    p = sub.add_parser("bench", help="time upscale() and print one JSON line")
    p.add_argument("--model", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--size", type=int)
    src.add_argument("--image")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC model and input (default: plain NCHW, as Real-ESRGAN runs)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    add_common(p, need_threads=True)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check-graph", help="compare the module with the raw ncnn graph")
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=24)
    p.set_defaults(func=cmd_check_graph, threads=os.cpu_count())
    return ap


def main(argv=None):
    a = build_parser().parse_args(argv)
    torch.set_num_threads(a.threads)  # Debian's torch starts with 1 thread
    try:
        a.func(a)
    except (ModelError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
