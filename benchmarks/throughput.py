"""Throughput benchmark: images/s and texts/s for feature extraction, training and inference, and the decode-once cache.

    python benchmarks/throughput.py                      # efficientnet_lite0 at 128 and 224 px, minilm-l6; CPU or the GPU
    python benchmarks/throughput.py --sizes 224 --skip-text --seconds 5

Per body, on the machine's device (a GPU when there is one: bf16 autocast as `fit` uses it; `--compile` adds
torch.compile to the training step there):

- features: frozen-body features through headstart's own batching (`map_batches`, the path stage 1 of a fit
  takes) from the files (hymenoptera JPEGs, decode included: a fresh per-run image cache) or SST-2 sentences
  (length-sorted batches), batch --batch x 2;
- train step: forward + backward + AdamW step of body + linear head on in-memory batches (--batch items; text
  padded to a fixed --text-length tokens), channels_last as the backbone runs;
- inference: body + head forward in eval mode on in-memory batches of 1 and of 64, eager PyTorch and ONNX Runtime
  side by side (the graph `headstart export` writes: body + head + softmax; ONNX Runtime's CUDA provider where
  onnxruntime-gpu and a GPU are there, else its CPU provider with as many threads as torch; the table names the
  provider; `--skip-onnx` leaves it out);
- decode once: the fine-tuning data pipeline alone (training loader with augmentation, the machine's default
  DataLoader workers, and 0 workers with the cache) for a few epochs over hymenoptera's train folder, with the
  per-run uint8 image cache and without it (HEADSTART_IMAGE_CACHE_GB=0 behaviour), side by side in one process.
  Epoch 1 includes building the loader (with the cache: decoding every image once, in threads).

Prints a markdown table with the date and the machine, for benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402 - the benchmarks' shared scaffolding
WORDS = ("the film is a quietly moving and often very funny story about family , loss and the small things that "
         "keep people together even when the plot drags in its middle third").split()


def timed(fn, items_per_call: int, seconds: float, warmup: int = 1) -> float:
    """Items/s of `fn()` over at least `seconds` (and 2 calls), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    sync()
    return calls * items_per_call / (time.perf_counter() - start)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def image_paths(limit: int) -> list[str]:
    root = SHARED / "hymenoptera"
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    if not paths:
        sys.exit(f"benchmark images not found under {root}")
    return paths[:limit]


def sentences(limit: int) -> list[str]:
    path = SHARED / "sst2" / "validation.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        return (texts * (limit // max(1, len(texts)) + 1))[:limit]
    # synthetic sentences of 8 to 30 words when SST-2 is absent
    return [" ".join(WORDS[(i * 7) % 10: (i * 7) % 10 + 8 + i % 23]) for i in range(limit)]


def train_step_rate(net: nn.Module, make_batch, n: int, device, seconds: float, compile_: bool) -> float:
    net.train().to(device)
    head_out = net[-1].out_features
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    step_net = torch.compile(net) if compile_ and device.type == "cuda" else net
    x, y = make_batch(n), torch.randint(0, head_out, (n,), device=device)

    def step():
        with autocast(device):
            loss = nn.functional.cross_entropy(step_net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, n, seconds, warmup=2)


@torch.no_grad()
def inference_rate(net: nn.Module, make_batch, n: int, device, seconds: float) -> float:
    net.eval().to(device)
    x = make_batch(n)

    def forward():
        with autocast(device):
            net(x)

    return timed(forward, n, seconds)


def onnx_rates(backbone, make_batch, args) -> tuple[float, float, str]:
    """Items/s of ONNX Runtime on headstart's export of body + linear head, batches of 1 and 64, and the provider."""
    from headstart.deploy import OnnxRunner, export_onnx
    from headstart.heads import build_head
    from headstart.model import TransferModel
    from headstart.train.batches import to_device

    model = TransferModel(backbone, build_head("linear", backbone.feature_dim, 2), ["a", "b"])
    folder = Path(tempfile.mkdtemp(prefix="hs-throughput-")) / "export"
    export_onnx(model, folder)
    runner = OnnxRunner(folder)
    cpu = torch.device("cpu")
    one, many = to_device(make_batch(1), cpu), to_device(make_batch(64), cpu)
    rates = timed(lambda: runner(one), 1, args.seconds / 2), timed(lambda: runner(many), 64, args.seconds)
    return (*rates, runner.provider.removesuffix("ExecutionProvider"))


def onnx_columns(rates: tuple[float, float, str] | None) -> str:
    return f"{rates[0]:.1f} ({rates[2]}) | {rates[1]:.1f} ({rates[2]})" if rates else "– | –"


class Body(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.forward_features(x)


def image_rows(size: int, args, device) -> list[dict]:
    from headstart.backbones import create_backbone
    from headstart.train.batches import map_batches

    backbone = create_backbone("efficientnet_lite0")
    backbone.preprocess = backbone.preprocess.with_size(size)
    paths = image_paths(args.images)
    workers = default_workers()
    start = time.perf_counter()
    map_batches(backbone.forward_features, backbone.eval().to(device), paths, 2 * args.batch, device, workers)
    sync()
    features = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()  # the same images again: decoded already (the run's cache), compute and normalising only
    map_batches(backbone.forward_features, backbone, paths, 2 * args.batch, device, workers)
    sync()
    features_cached = len(paths) / (time.perf_counter() - start)

    net = nn.Sequential(Body(backbone), nn.Linear(backbone.feature_dim, 2))

    def batch(n):
        return torch.randn(n, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    train = train_step_rate(net, batch, args.batch, device, args.seconds, args.compile)
    infer1 = inference_rate(net, batch, 1, device, args.seconds / 2)
    infer64 = inference_rate(net, batch, 64, device, args.seconds)
    onnx = None if args.skip_onnx else onnx_rates(backbone, batch, args)
    return [{"body": f"efficientnet_lite0 @ {size} px", "unit": "img/s",
             "features": f"{features:.1f} (again, decoded: {features_cached:.1f})",
             "train": train, "infer1": infer1, "infer64": infer64, "onnx": onnx}]


def text_rows(args, device) -> list[dict]:
    from headstart.backbones import create_backbone
    from headstart.train.batches import map_batches

    backbone = create_backbone("minilm-l6")
    texts = sentences(args.texts)
    backbone.preprocess = backbone.preprocess.with_length(args.text_length)
    start = time.perf_counter()
    map_batches(backbone.forward_features, backbone.eval().to(device), texts, 2 * args.batch, device, 0)
    sync()
    features = len(texts) / (time.perf_counter() - start)

    net = nn.Sequential(Body(backbone), nn.Linear(backbone.feature_dim, 2))
    fixed = [t for t in texts if len(t.split()) >= args.text_length] or texts

    def batch(n):  # n texts padded / truncated to exactly --text-length tokens
        enc = backbone.tokenizer((fixed * n)[:n], truncation=True, max_length=args.text_length, padding="max_length",
                                 return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items() if k in backbone.input_names}

    train = train_step_rate(net, batch, args.batch, device, args.seconds, args.compile)
    infer1 = inference_rate(net, batch, 1, device, args.seconds / 2)
    infer64 = inference_rate(net, batch, 64, device, args.seconds)
    onnx = None if args.skip_onnx else onnx_rates(backbone, batch, args)
    return [{"body": f"minilm-l6 @ {args.text_length} tokens", "unit": "texts/s",
             "features": f"{features:.1f} (SST-2, sorted)" if (SHARED / "sst2").is_dir() else f"{features:.1f} (synthetic)",
             "train": train, "infer1": infer1, "infer64": infer64, "onnx": onnx}]


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))  # as FitContext.num_workers


def decode_once_rows(size: int, args) -> list[dict]:
    """Epoch times of the fine-tuning data pipeline alone, with and without the per-run image cache."""
    from headstart.backbones import create_backbone
    from headstart.data.image_cache import ImageCache
    from headstart.train.batches import labeled_loader

    backbone = create_backbone("efficientnet_lite0")
    backbone.preprocess = backbone.preprocess.with_size(size)
    paths = sorted(str(p) for p in (SHARED / "hymenoptera" / "train").rglob("*.jpg"))
    targets = torch.zeros(len(paths), dtype=torch.long)
    workers = default_workers()
    rows = []
    runs = [("no cache (decode every epoch)", 0, workers), ("decode once (uint8 cache)", None, workers)]
    if workers:
        runs.append(("decode once, in the main process", None, 0))
    for label, budget, workers in runs:
        loader_args = {"num_workers": workers, "persistent_workers": workers > 0}
        backbone.image_cache = ImageCache(budget)
        times = []
        start = time.perf_counter()
        loader = labeled_loader(backbone, paths, targets, True, args.batch, **loader_args)  # the cache fills here
        setup = time.perf_counter() - start
        for epoch in range(args.epochs):
            start = time.perf_counter()
            for _ in loader:
                pass
            times.append(time.perf_counter() - start + (setup if epoch == 0 else 0.0))
        del loader
        rows.append({"size": size, "pipeline": label, "n": len(paths), "workers": workers, "epochs": times,
                     "cache_mb": backbone.image_cache.bytes / 2 ** 20})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,224", help="image input sizes in px ('' for none: text only)")
    parser.add_argument("--batch", type=int, default=32, help="training batch (feature extraction uses twice this)")
    parser.add_argument("--images", type=int, default=64, help="hymenoptera images for the feature-extraction pass")
    parser.add_argument("--texts", type=int, default=512, help="sentences for the feature-extraction pass")
    parser.add_argument("--text-length", type=int, default=64, help="tokens per text for train/inference steps")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the decode-once data pass")
    parser.add_argument("--seconds", type=float, default=8.0, help="minimum timed seconds per measurement")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (GPU only)")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true", help="leave out the ONNX Runtime columns")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    rows, decode = [], []
    for size in [int(s) for s in args.sizes.split(",") if s]:  # --sizes '': text only
        rows += image_rows(size, args, device)
        print(f"{rows[-1]}", flush=True)
        if not args.skip_decode:
            decode += decode_once_rows(size, args)
            print(f"{decode[-2:]}", flush=True)
    if not args.skip_text:
        rows += text_rows(args, device)
        print(f"{rows[-1]}", flush=True)

    load = ", load average {:.1f} {:.1f} {:.1f} (shared machine)".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"\n{machine_line()}{load}; device {device.type}" + (", bf16 autocast" if device.type == "cuda" else ", float32")
          + (", torch.compile" if args.compile and device.type == "cuda" else ""))
    print(f"\n| body | unit | features (from files, batch {2 * args.batch}) | train step (batch {args.batch}) | "
          "inference batch 1 | inference batch 64 | ONNX Runtime batch 1 | ONNX Runtime batch 64 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['body']} | {r['unit']} | {r['features']} | {r['train']:.1f} | {r['infer1']:.1f} | {r['infer64']:.1f} | "
              f"{onnx_columns(r['onnx'])} |")
    if decode:
        print("\n| input px | fine-tune data pass (hymenoptera train, augmentation) | images | workers | "
              + " | ".join(f"epoch {i + 1} s" for i in range(args.epochs)) + " | img/s after epoch 1 | cache MB |")
        print("|---|---|---|---|" + "---|" * args.epochs + "---|---|")
        for r in decode:
            later = r["epochs"][1:] or r["epochs"]
            print(f"| {r['size']} | {r['pipeline']} | {r['n']} | {r['workers']} | "
                  + " | ".join(f"{t:.2f}" for t in r["epochs"])
                  + f" | {r['n'] * len(later) / sum(later):.0f} | {r['cache_mb']:.0f} |")


if __name__ == "__main__":
    main()
