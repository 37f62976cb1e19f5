#!/usr/bin/env python3
"""Reference vectors for the image decoding, resizing and image-processor tests.

Runs with Debian's python3-pil (Pillow 9.4) and python3-numpy only (no transformers): the two Hugging Face image
pipelines are re-implemented here with numpy + PIL following transformers' code step by step:

- CLIPImageProcessor (llava-1.5): convert("RGB"); shortest edge -> 336 with the long side int(336 * long / short);
  PIL BICUBIC; centre crop 336 (offsets (h - 336) // 2); float64 * (1/255) -> float32; (x - mean) / std in
  float32; CHW.
- Qwen2VLImageProcessor (Qwen2.5-VL / Omni): smart_resize(factor 28, min 3136, max 12845056) with Python round;
  PIL BICUBIC; rescale/normalise as above; CHW; repeat to 2 frames; reshape [gt, 2, 3, gh/2, 2, 14, gw/2, 2, 14],
  transpose (0, 3, 6, 4, 7, 2, 1, 5, 8) -> [gt * gh * gw, 1176].

Only small derived vectors are written (sizes, per-channel means, values at seeded positions, SHA-256 digests of
PIL resize outputs on synthetic images); no image data is copied.

Usage: python3 tests/reference/make_image_refs.py [--shared PATH_TO_SHARED] [--out tests/reference/image_refs.json]
"""

import argparse
import base64
import hashlib
import json
import math
import os
import sys

import numpy as np
import PIL
from PIL import Image

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SEED = 20240611
N_TENSOR = 500
N_UINT8 = 300

IMAGENET_FILES = [
    "n01530575_brambling.JPEG",
    "n01689811_alligator_lizard.JPEG",
    "n01704323_triceratops.JPEG",
    "n01796340_ptarmigan.JPEG",
    "n02096437_Dandie_Dinmont.JPEG",
    "n02104029_kuvasz.JPEG",
    "n03764736_milk_can.JPEG",
    "n04465501_tractor.JPEG",
]


# ----------------------------------------------------------------------------------------------------------------
# The Hugging Face steps, numpy + PIL


def to_rgb(im):
    """transformers convert_to_rgb: PIL convert("RGB") unless already RGB."""
    return im if im.mode == "RGB" else im.convert("RGB")


def pil_resize(arr, height, width, resample=3):
    """transformers image_transforms.resize on a uint8 HWC array: PIL resize, back to uint8 HWC."""
    return np.array(Image.fromarray(arr).resize((width, height), resample=resample))


def rescale_normalize_chw(arr, mean, std, scale=1 / 255):
    """rescale (float64 multiply, cast to float32) then normalize in float32, then HWC -> CHW."""
    x = (arr.astype(np.float64) * scale).astype(np.float32)
    m = np.array(mean, dtype=np.float32)
    s = np.array(std, dtype=np.float32)
    x = (x - m) / s
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def clip_output_size(height, width, shortest):
    """get_resize_output_image_size(default_to_square=False): (height, width)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest, int(shortest * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(arr, ch, cw):
    """transformers center_crop on HWC uint8, zero padding when the image is smaller."""
    h, w = arr.shape[:2]
    top = (h - ch) // 2
    left = (w - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= h and left + cw <= w:
        return arr[top:top + ch, left:left + cw]
    nh, nw = max(ch, h), max(cw, w)
    canvas = np.zeros((nh, nw) + arr.shape[2:], dtype=arr.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    canvas[tp:tp + h, lp:lp + w] = arr
    top += tp
    left += lp
    return canvas[max(0, top):min(nh, top + ch), max(0, left):min(nw, left + cw)]


def clip_pipeline(rgb, shortest=336, crop=336):
    h, w = rgb.shape[:2]
    oh, ow = clip_output_size(h, w, shortest)
    resized = pil_resize(rgb, oh, ow)
    cropped = center_crop(resized, *((crop, crop) if isinstance(crop, int) else crop))
    return resized, rescale_normalize_chw(cropped, CLIP_MEAN, CLIP_STD)


def smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=12845056):
    """transformers smart_resize (Python round = ties to even)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect ratio above 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_flatten(frames, patch=14, merge=2, temporal=2):
    """frames: [T, C, H, W] float32 -> ([rows, C * temporal * patch^2], (gt, gh, gw))."""
    if frames.shape[0] % temporal != 0:
        rep = np.repeat(frames[-1][np.newaxis], temporal - frames.shape[0] % temporal, axis=0)
        frames = np.concatenate([frames, rep], axis=0)
    t, c, h, w = frames.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = frames.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal * patch * patch), (gt, gh, gw)


def qwen_pipeline(frames_rgb):
    h, w = frames_rgb[0].shape[:2]
    rh, rw = smart_resize(h, w)
    resized = [pil_resize(f, rh, rw) for f in frames_rgb]
    chw = np.stack([rescale_normalize_chw(r, CLIP_MEAN, CLIP_STD) for r in resized])
    patches, grid = qwen_flatten(chw)
    return resized[0], patches, grid


# ----------------------------------------------------------------------------------------------------------------
# Sampling helpers


def sample(rng, arr, n):
    flat = arr.reshape(-1)
    idx = np.sort(rng.choice(flat.size, size=min(n, flat.size), replace=False))
    return idx, flat[idx]


def float_list(values):
    return [round(float(v), 6) for v in values]


def image_entry(rng, rel, path):
    with Image.open(path) as im:
        src_mode = im.mode
        rgb = np.array(to_rgb(im))
    h, w = rgb.shape[:2]
    d_idx, d_val = sample(rng, rgb, N_UINT8)

    resized, clip = clip_pipeline(rgb)
    r_idx, r_val = sample(rng, resized, N_UINT8)
    c_idx, c_val = sample(rng, clip, N_TENSOR)

    q_resized, patches, grid = qwen_pipeline([rgb])
    qr_idx, qr_val = sample(rng, q_resized, N_UINT8)
    q_idx, q_val = sample(rng, patches, N_TENSOR)
    q_mean = patches.reshape(patches.shape[0], 3, -1).astype(np.float64).mean(axis=(0, 2))

    return {
        "file": rel,
        "source_mode": src_mode,
        "decoded": {"width": w, "height": h, "idx": d_idx.tolist(), "values": d_val.tolist()},
        "clip": {
            "resized": {"width": resized.shape[1], "height": resized.shape[0]},
            "resized_idx": r_idx.tolist(),
            "resized_values": r_val.tolist(),
            "shape": list(clip.shape),
            "channel_mean": [float(v) for v in clip.astype(np.float64).mean(axis=(1, 2))],
            "idx": c_idx.tolist(),
            "values": float_list(c_val),
        },
        "qwen": {
            "resized": {"width": q_resized.shape[1], "height": q_resized.shape[0]},
            "resized_idx": qr_idx.tolist(),
            "resized_values": qr_val.tolist(),
            "grid_thw": list(grid),
            "shape": list(patches.shape),
            "channel_mean": [float(v) for v in q_mean],
            "idx": q_idx.tolist(),
            "values": float_list(q_val),
        },
    }


# ----------------------------------------------------------------------------------------------------------------
# Synthetic resize cases (inputs regenerated bit-exactly by the tests from the same integer formula)


def synthetic_image(width, height, seed):
    """Checkerboard of 8x8 blocks: smooth ramps alternating with integer-hash noise (uint8 HWC)."""
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    i = ((y * width + x) * 3 + c).astype(np.uint64)
    m = np.uint64(0xFFFFFFFF)
    n = ((i + np.uint64(seed)) * np.uint64(2654435761)) & m
    n ^= n >> np.uint64(15)
    n = (n * np.uint64(2246822519)) & m
    n ^= n >> np.uint64(13)
    noise = (n >> np.uint64(24)).astype(np.int64)
    ramp = (x * 7 + y * 5 + c * 40) % 256
    use_noise = ((x // 8 + y // 8) % 2) == 1
    return np.where(use_noise, noise, ramp).astype(np.uint8)


RESIZE_CASES = [
    # (src_w, src_h, seed, dst_w, dst_h, pil_filter)
    (37, 23, 1, 16, 11, 3),
    (37, 23, 1, 80, 50, 3),
    (37, 23, 1, 37, 9, 3),
    (37, 23, 1, 11, 23, 2),
    (37, 23, 1, 5, 3, 3),
    (120, 90, 7, 13, 37, 3),
    (120, 90, 7, 336, 252, 3),
    (120, 90, 7, 121, 91, 3),
    (120, 90, 7, 50, 40, 1),
    (120, 90, 7, 50, 40, 4),
    (120, 90, 7, 50, 40, 5),
    (120, 90, 7, 50, 40, 2),
    (64, 64, 3, 1, 1, 3),
    (1, 1, 3, 7, 5, 3),
]


def resize_cases():
    out = []
    for sw, sh, seed, dw, dh, f in RESIZE_CASES:
        src = synthetic_image(sw, sh, seed)
        dst = np.array(Image.fromarray(src).resize((dw, dh), resample=f))
        src_digest = hashlib.sha256(src.tobytes()).hexdigest()
        out.append({
            "src": [sw, sh, seed],
            "src_sha256": src_digest,
            "dst": [dw, dh],
            "filter": f,
            "dst_sha256": hashlib.sha256(dst.tobytes()).hexdigest(),
            "dst_head": base64.b64encode(dst.tobytes()[:96]).decode(),
        })
    return out


def digest(arr):
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def pipeline_cases():
    """Whole CLIP / Qwen pipelines on synthetic images: SHA-256 of the float32 outputs (little-endian)."""
    out = []
    for sw, sh, seed, shortest, crop in [(120, 90, 7, 336, (336, 336)), (90, 160, 5, 100, (120, 130)),
                                         (61, 47, 2, 30, (24, 40))]:
        _, x = clip_pipeline(synthetic_image(sw, sh, seed), shortest, crop)
        out.append({"kind": "clip", "frames": [[sw, sh, seed]], "shortest_edge": shortest, "crop": list(crop),
                    "shape": list(x.shape), "sha256": digest(x.astype("<f4"))})
    for frames in [[(120, 90, 7)], [(90, 120, 7), (90, 120, 8), (90, 120, 9)], [(33, 20, 4)]]:
        _, patches, grid = qwen_pipeline([synthetic_image(*f) for f in frames])
        out.append({"kind": "qwen", "frames": [list(f) for f in frames], "grid_thw": list(grid),
                    "shape": list(patches.shape), "sha256": digest(patches.astype("<f4"))})
    return out


# ----------------------------------------------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.normpath(os.path.join(here, "..", "..", "..", "shared")))
    ap.add_argument("--out", default=os.path.join(here, "image_refs.json"))
    args = ap.parse_args()

    img_dir = os.path.join(args.shared, "data", "images")
    files = [f"skimage/{f}" for f in sorted(os.listdir(os.path.join(img_dir, "skimage")))]
    files += [f"imagenet-sample/{f}" for f in IMAGENET_FILES]
    rng = np.random.default_rng(SEED)
    images = []
    for rel in files:
        images.append(image_entry(rng, rel, os.path.join(img_dir, rel)))
        print(f"{rel}: done", file=sys.stderr)

    smart = []
    for h, w in [(14, 14), (42, 42), (70, 98), (427, 640), (300, 451), (10, 1000), (1411, 1411), (8000, 6000),
                 (5000, 5000), (3, 600), (4000, 20), (126, 154), (1, 1), (2000, 11)]:
        try:
            smart.append({"in": [h, w], "out": list(smart_resize(h, w))})
        except ValueError:
            smart.append({"in": [h, w], "error": True})
    clip_sizes = [{"in": [h, w], "out": list(clip_output_size(h, w, 336))}
                  for h, w in [(427, 640), (640, 427), (336, 336), (300, 451), (1411, 1411), (100, 1000),
                               (1000, 999), (17, 23)]]

    doc = {
        "generator": "tests/reference/make_image_refs.py",
        "pil_version": PIL.__version__,
        "numpy_version": np.__version__,
        "seed": SEED,
        "clip": {"shortest_edge": 336, "crop": 336, "mean": CLIP_MEAN, "std": CLIP_STD},
        "qwen": {"factor": 28, "min_pixels": 3136, "max_pixels": 12845056, "patch": 14, "merge": 2,
                 "temporal": 2},
        "smart_resize": smart,
        "clip_output_size": clip_sizes,
        "resize_cases": resize_cases(),
        "pipeline_cases": pipeline_cases(),
        "images": images,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
