"""Training-input throughput of the image-file backends on a generated ImageFolder of realistic JPEGs.

    python benchmarks/bench_data.py --device cpu --images 2000 --workers 2
    python benchmarks/bench_data.py --device cuda --images 2000

Each backend produces augmented training batches (random-resized crop to 224, flip, normalize,
float32 NCHW) from the same folder with the same worker count; untimed batches first (worker and
pipeline start, prefetch queues), then the time to produce ``--batches`` batches on the device
gives images/s (use enough images that the timed batches stay inside one epoch). CPU backends:
'torchvision' (PIL workers; the baseline) and 'dali' (DALI CPU-only, one thread per worker);
'nvjpeg' on the CPU is the same backend with libjpeg-turbo decode and the fused kernel's CPU
path. On CUDA: 'nvjpeg' (decode_jpeg on the GPU + the fused crop kernel), 'torchvision' (CPU
workers, copied to the GPU) and 'dali' (mixed decode, GPU ops) where installed.

The images: natural photos bundled with scikit-image (astronaut, coffee, chelsea, rocket, ...),
randomly cropped, rescaled to ImageNet-like sizes (about 500×375 either way round), mirrored,
tinted and grained, saved as JPEG quality 95: thousands of distinct files with real-photo
statistics. Without scikit-image (GPU machines) smooth random gradients with shapes and noise
stand in (PIL only).

Measured (CPU): 2-core x86-64 VM shared with other jobs (load average ~5 during the run),
torch 2.14.1, torchvision 0.29.1, Pillow 13.0, nvidia-dali-cuda130 2.4.0, 2026-11-26;
`python benchmarks/bench_data.py --device cpu --images 2000 --workers 2 --repeats 3
--backends torchvision,dali,nvjpeg` (2000 JPEGs of about 500×375 from scikit-image photos, 79 KB
mean; batch 64; medians of 3):

    backend      device workers   img/s vs torchvision  img/CPU-s vs torchvision
    torchvision  cpu          2     225           1.00        335           1.00
    dali         cpu          2     367           1.63        569           1.70
    nvjpeg       cpu          2     365           1.62        549           1.64

img/CPU-s counts the CPU time of the process and its loader workers (/proc): the per-core figure,
robust to the other load on the machine. On an H100 machine (2026-11-26, 16 workers,
2,048 JPEGs, no DALI there): torchvision 4,731 img/s (357 per CPU-second), nvJPEG + fused kernel
3,289 img/s (2,038 per CPU-second, 5.7x per core); see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from classy_fast.config import DataConfig  # noqa: E402
from classy_fast.data import build_data  # noqa: E402
from classy_fast.data.dali_pipeline import dali_import_error  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "hubble_deep_field",
          "cat", "retina")


def _photos():
    try:
        import skimage.data
    except ImportError:
        return None
    out = []
    for name in PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # a photo that needs a download: skip it
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return out or None


def _synthetic_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour field with shapes and sensor-like noise: compresses like a photo, not like noise."""
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 90 * np.sin(a * xx / 60 + b * yy / 45 + p * 6)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    arr = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


_PHOTOS = None  # loaded once per generating process


def _write_image(task) -> None:
    from PIL import Image

    global _PHOTOS
    path, seed = task
    if _PHOTOS is None:
        _PHOTOS = _photos() or []
    rng = np.random.default_rng(seed)
    out_h, out_w = (375, 500) if rng.random() < 0.7 else (500, 375)  # landscape mostly, like ImageNet
    out_h, out_w = int(out_h * rng.uniform(0.85, 1.15)), int(out_w * rng.uniform(0.85, 1.15))
    if not _PHOTOS:
        pixels = _synthetic_photo(rng, out_h, out_w)
    else:
        src = _PHOTOS[seed % len(_PHOTOS)]
        frac = rng.uniform(0.5, 1.0)
        ch, cw = max(16, int(src.shape[0] * frac)), max(16, int(src.shape[1] * frac))
        y0, x0 = int(rng.integers(0, src.shape[0] - ch + 1)), int(rng.integers(0, src.shape[1] - cw + 1))
        crop = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw]).resize((out_w, out_h), Image.BICUBIC)
        tint = rng.uniform(0.85, 1.15, 3)
        grain = rng.normal(0, 4, (out_h, out_w, 3))  # sensor-like noise: upscaled crops are too smooth
        pixels = np.clip(np.asarray(crop).astype(np.float32) * tint + grain, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=95)


def generate_folder(root: str, n: int, classes: int = 10) -> str:
    """ROOT/train/class_XX/img_NNNNN.jpg: n distinct ImageNet-sized JPEGs (kept for the next run)."""
    import multiprocessing

    stamp = os.path.join(root, f".complete_{n}")
    if os.path.exists(stamp):
        return root
    tasks = []
    for i in range(n):
        d = os.path.join(root, "train", f"class_{i % classes:02d}")
        os.makedirs(d, exist_ok=True)
        tasks.append((os.path.join(d, f"img_{i:05d}.jpg"), i))
    with multiprocessing.Pool(min(os.cpu_count() or 1, 16)) as pool:
        pool.map(_write_image, tasks, chunksize=16)
    os.makedirs(os.path.join(root, "val", "class_00"), exist_ok=True)  # the test split must exist to build
    open(stamp, "w").close()
    return root


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and all its live descendants (loader workers).

    Read from /proc, so it also counts workers that haven't exited (getrusage's RUSAGE_CHILDREN
    only counts reaped ones). On a shared machine this is the fair "per core" measure: wall-clock
    images/s depend on what else runs, CPU-seconds per image much less.
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    return sum(stats[pid][1] for pid in mine if pid in stats) / tick


def measure(root: str, backend: str, device: torch.device, workers: int, batch_size: int, batches: int,
            warmup: int):
    """(images/s wall clock, images per CPU-second) of ``batches`` training batches after ``warmup``."""
    cfg = DataConfig(name="image_folder", root=root, backend=backend, batch_size=batch_size, num_workers=workers,
                     prefetch=2, crop_size=224)
    data = build_data(cfg, "train", device=device, seed=0)
    needed = warmup + batches
    epochs, produced, t0, cpu0 = 0, 0, None, None
    while produced < needed:
        data.set_epoch(epochs)
        for x, _ in data:
            produced += 1
            if produced == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0, cpu0 = time.perf_counter(), cpu_seconds()
            if produced == needed:
                break
        epochs += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    data.close()
    images = batches * batch_size
    return images / wall, images / max(cpu, 1e-9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--images", type=int, default=1000, help="JPEGs to generate (distinct files)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="loader workers / DALI threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=None, help="timed batches per backend (default max(12, 4×workers))")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed batches first: worker start and the prefetch queues filled meanwhile "
                        "(default 2×workers + 2)")
    p.add_argument("--repeats", type=int, default=1, help="runs per backend; the median is reported")
    p.add_argument("--root", default=None, help="folder for the generated JPEGs (default: /tmp/classy_fast_bench_N)")
    p.add_argument("--backends", default=None, help="comma-separated subset of torchvision,dali,nvjpeg")
    args = p.parse_args(argv)

    args.batches = args.batches or max(12, 4 * args.workers)
    args.warmup = args.warmup if args.warmup is not None else 2 * args.workers + 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    root = generate_folder(args.root or f"/tmp/classy_fast_bench_{args.images}", args.images)
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "train")) for f in fs]
    mean_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1024
    default = ["torchvision", "dali"] if device.type == "cpu" else ["torchvision", "nvjpeg", "dali"]
    backends = args.backends.split(",") if args.backends else default
    dali_error = dali_import_error()
    print(f"{len(files)} JPEGs ({mean_kb:.0f} KB mean) in {root}; device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
          f"{args.workers} workers, batch {args.batch_size}, {args.batches} timed batches, {os.cpu_count()} CPUs")
    results = {}
    for backend in backends:
        if backend == "dali" and dali_error is not None:
            print(f"{backend}: skipped ({dali_error})")
            continue
        runs = [measure(root, backend, device, args.workers, args.batch_size, args.batches, args.warmup)
                for _ in range(args.repeats)]
        results[backend] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base = results.get("torchvision")
    print(f"\n{'backend':<12} {'device':<6} {'workers':>7} {'img/s':>7} {'vs torchvision':>14} "
          f"{'img/CPU-s':>10} {'vs torchvision':>14}")
    for backend, (ips, per_cpu) in results.items():
        wall_ratio = f"{ips / base[0]:.2f}" if base else "-"
        cpu_ratio = f"{per_cpu / base[1]:.2f}" if base else "-"
        print(f"{backend:<12} {device.type:<6} {args.workers:>7} {ips:>7.0f} {wall_ratio:>14} {per_cpu:>10.0f} "
              f"{cpu_ratio:>14}")
    if base and len(results) > 1:
        print(f"KEY: {device.type}, {args.workers} workers, img/s (img per CPU-second): "
              + ", ".join(f"{b} {v[0]:.0f} ({v[1]:.0f})" for b, v in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
