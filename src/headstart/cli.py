"""The `headstart` command: parse flags, call the API, print. No logic of its own."""
from __future__ import annotations

import argparse
import re
import sys

from headstart.config import (ACCELERATORS, BALANCE_MODES, BN_MODES, FLIP_MODES, NOT_PRETRAIN_OPTIONS, PRECISIONS,
                              PRETRAIN_EPOCHS, REFIT_MODES, SERVE_MAX_INPUTS, TASKS, FitConfig, PretrainConfig)
from headstart.errors import UserError

DEFAULTS = FitConfig(data="")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults for the options that take a value. A flag's default is that it is not given: argparse showed the
    stored value, `--no-progress ... (default: True)` and `--multi-label ... (default: auto)`."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 else super()._get_help_string(action)


def _add_fit_arguments(p: argparse.ArgumentParser, saves_a_model: bool = True) -> None:
    from headstart.heads import HEADS
    from headstart.strategies import STRATEGIES

    d = DEFAULTS
    p.add_argument("--model", default=d.model, help="backbone: auto (the data's default), a bundled name (see `headstart models`), "
                   "timm:NAME, hf:NAME, or run:DIR (the body of an earlier run)")
    p.add_argument("--weights", default=None, help="local backbone weights (.safetensors, or .pth read with weights_only)")
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES.names(),
                   help="; ".join(f"{s.name}: {s.summary}" for s in map(STRATEGIES.get, STRATEGIES.names())))
    p.add_argument("--head", default=d.head, choices=HEADS.names(), help="the new top (default %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default runs/<data>-<time>)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty run directory")
    g = p.add_argument_group("data")
    g.add_argument("--modality", default=d.modality, help="image, text, audio, tabular, or auto (detected from the data)")
    g.add_argument("--task", default=d.task, choices=list(TASKS),
                   help="default (auto): classification; multilabel where labels are names joined by --label-separator "
                        "('cat', 'dog', 'cat;dog'); regression for a numeric tabular target with many values. regression "
                        "on numeric labels of an image/text manifest; multilabel as --multi-label; classification keeps "
                        "joined labels whole")
    g.add_argument("--multi-label", dest="task", action="store_const", const="multilabel",
                   help="several labels per example, separated by --label-separator in the label column (sigmoid head, BCE)")
    g.add_argument("--label-separator", default=d.label_separator, help="multi-label separator (default %(default)r)")
    g.add_argument("--balance", default=None, choices=list(BALANCE_MODES),
                   help="class imbalance: weights = loss weighted by inverse class frequency (classification, "
                        "multi-label); sampler = class-balanced batches (classification)")
    g.add_argument("--text-column", default=d.text_column, help="text: the column holding the text")
    g.add_argument("--label-column", default=d.label_column, help="text: the column holding the label; several, comma-separated "
                   "(topic,stars), fit a head each on one body (multi-task; also an image/audio manifest's columns)")
    g.add_argument("--target", default=None, help="tabular: the column to predict (makes a CSV/Parquet tabular data); several, "
                   "comma-separated (price,category), fit a head each on one body (multi-task)")
    g.add_argument("--max-length", type=int, default=None, help="text: tokens per text (default: from the training texts)")
    g.add_argument("--clip-seconds", type=float, default=None, help="audio: clip length (default: from the clips)")
    g.add_argument("--sample-rate", type=int, default=d.sample_rate, help="audio: resample everything to this rate")
    if saves_a_model:
        p.add_argument("--resume", action="store_true",
                       help="continue the interrupted fit in --out with the same options: epochs saved before the stop "
                            "are kept (an epoch is saved when a minute has passed since the last save)")
        g.add_argument("--adapt-to", action="append", default=None, metavar="INPUTS",
                       help="unlabeled inputs (files, folders, a text or table file; repeatable) of the domain the model "
                            "will predict on, when it differs from the labeled data's: the saved head is aligned to their "
                            "features (assumes about the training class proportions there)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help="split off for validation when there is no val/ (default %(default)s)")
    g.add_argument("--test-fraction", type=float, default=d.test_fraction, help="split off for testing when the data is one folder of classes (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed for splits, initialisation and shuffling (default %(default)s)")
    g.add_argument("--image-size", type=int, default=None, help="input side in px (default: from the images' native size)")
    g.add_argument("--flip", default=d.flip, choices=list(FLIP_MODES),
                   help="images: horizontal flips while fine-tuning; auto = on unless the trained head reads mirrored "
                        "validation images clearly worse (digits, text, ...) (default %(default)s)")
    g.add_argument("--crop-scale", default=d.crop_scale,
                   help="images: fine-tuning's random crops keep this to all of the area; auto = 0.35, or 0.8 when the "
                        "trained head reads 0.35 crops clearly worse (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=None, help="(default: the backbone's, else 32)")
    g.add_argument("--num-workers", type=int, default=None, help="data-loading processes (default: from the machine)")
    g = p.add_argument_group("training")
    g.add_argument("--head-epochs", type=int, default=None, help="max epochs of the head on cached features (default: the backbone's, else 60)")
    g.add_argument("--head-lr", type=float, default=None, help="(default: the backbone's, else 0.003)")
    g.add_argument("--epochs", type=int, default=None, help="max fine-tuning epochs (default: the backbone's, else 10)")
    g.add_argument("--lr", default=None, help="peak fine-tuning rate of the top group and head or auto (range test after the head stage; default: the backbone's, else 0.001)")
    g.add_argument("--lr-mult", type=float, default=None, help="discriminative rates: stem gets lr/lr-mult (default: the backbone's, else 10.0)")
    g.add_argument("--weight-decay", type=float, default=None, help="AdamW decoupled weight decay (default: the backbone's, else 0.01)")
    g.add_argument("--label-smoothing", type=float, default=None, help="fine-tuning loss only (default: the backbone's, else 0.1)")
    g.add_argument("--patience", type=int, default=None, help="stop fine-tuning after N epochs without a lower validation loss; 0: off, the whole schedule runs and its best epoch is kept (default: the backbone's, else 0)")
    g.add_argument("--bn", default=d.bn, choices=list(BN_MODES),
                   help="BatchNorm while fine-tuning: auto = all-frozen when a trained head starts it, else frozen (default); "
                        "frozen = BN of frozen groups keeps its pre-trained statistics, BN of trainable groups trains; "
                        "all-frozen = every BN layer keeps them (Keras); train = BN trains inside frozen groups too (fastai's train_bn)")
    g.add_argument("--freeze-until", type=int, default=None, help="keep layer groups with index < N frozen while fine-tuning")
    g.add_argument("--ulmfit-factor", type=float, default=d.ulmfit_factor, help="ulmfit: rate divisor per layer group going down (default %(default)s)")
    g.add_argument("--l2sp-alpha", type=float, default=d.l2sp_alpha, help="l2-sp: strength of the pull towards the pre-trained weights (default %(default)s)")
    g.add_argument("--refit", default=d.refit, choices=list(REFIT_MODES),
                   help="when no stage chooses anything on the validation split (a solved linear head; setfit's pair pass), "
                        "the saved model learns from train + val: with a test split in one fit, else refit after a validated "
                        "train-only fit; auto = when the smallest class has fewer than 20 training examples (default); always; never")
    g.add_argument("--pair-rounds", type=int, default=d.pair_rounds, help="setfit: same-class and other-class partners drawn per training example (default %(default)s)")
    g.add_argument("--pair-batch-size", type=int, default=None,
                   help="setfit: pairs per optimizer step (default: the body's; text 16, SetFit's; else 32)")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank, help="lora: adapter rank (default %(default)s)")
    g.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="lora: adapter scaling alpha (default %(default)s)")
    g.add_argument("--lora-targets", default=None, help="lora: module-name suffixes to adapt, comma-separated "
                   "(default: attention query/value, else pointwise convs and linear layers)")
    g.add_argument("--cache-dir", default=None, help="feature cache (default $HEADSTART_CACHE or ~/.cache/headstart)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (shown by default)")
    g = p.add_argument_group("engine (as in Lightning)")
    g.add_argument("--accelerator", default=d.accelerator, help=f"{', '.join(ACCELERATORS)} (default %(default)s)")
    g.add_argument("--devices", default=d.devices, help="number of devices, -1 (all), device indices (0,1) or 'auto' (default %(default)s)")
    g.add_argument("--num-nodes", type=int, default=d.num_nodes, help="machines for multi-node DDP (default %(default)s)")
    g.add_argument("--precision", default=d.precision, help="auto (bf16-mixed on GPU, and for a transformer on a CPU with native bf16; else 32-true), "
                   f"{', '.join(PRECISIONS[1:])}")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the image body (timm) for fine-tuning; GPU only, ignored on the CPU. Compiling takes "
                        "a minute or more once, so it pays on long fine-tuning runs")


def cmd_models(args) -> None:
    from headstart.api import models

    rows = models()
    extra = [("timm:NAME", "any timm architecture; pretrained weights from the hub when online, or --weights FILE"),
             ("hf:NAME", "any Hugging Face text model (pooled as its sentence-transformers config says, else mean), from the hub when online"),
             ("hf-audio:NAME", "any Hugging Face audio model (e.g. an AST or wav2vec2 checkpoint), from the hub when online"),
             ("run:DIR", "the body of an earlier headstart run (any modality): develop a source model, then reuse it")]
    width = max(len(name) for name in [r["name"] for r in rows] + [name for name, _ in extra]) + 2
    print(f"{'name':<{width}}{'modality':<9} {'params':>9} {'input':>11} {'offline':>8}  source")
    for r in rows:
        print(f"{r['name']:<{width}}{r['modality']:<9} {r['params'] / 1e6:8.2f}M {r['input']:>11} {'yes' if r['offline'] else 'no':>8}  {r['source']}")
    for name, what in extra:
        print(f"{name:<{width}}{what}")


def cmd_fit(args) -> None:
    from headstart.api import fit

    options = {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in ("data", "model", "strategy")}
    fit(args.data, model=args.model, strategy=args.strategy, **options)


def cmd_evaluate(args) -> None:
    from headstart.api import load

    run = load(args.run)
    metrics = run.evaluate(args.data)
    print(f"scored: {metrics['scored']}")
    print(run.summarize(metrics))
    if metrics.get("warning"):  # the fit's training rows among those scored: said beside the numbers they inflate
        print(f"warning: {metrics['warning']}")
    if metrics.get("skipped"):
        shown = "; ".join(f"{s['where']}: {s['reason']}" for s in metrics["skipped"][:5])
        more = f"; ... ({len(metrics['skipped']) - 5} more in metrics.json)" if len(metrics["skipped"]) > 5 else ""
        print(f"{len(metrics['skipped'])} item(s) not scored: {shown}{more}")
    print(f"saved to {metrics['saved_to']}")


def cmd_predict(args) -> None:
    from headstart.api import load
    from headstart.predict import format_rows

    rows = load(args.run).predict(args.inputs, top_k=args.top_k, engine=args.engine, progress=True)
    text = format_rows(rows, args.format)
    if args.output:
        from headstart.io_utils import write_text

        write_text(args.output, text + ("\n" if not text.endswith("\n") else ""))
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def cmd_export(args) -> None:
    from headstart.api import export

    print(f"exporting {args.run} to ONNX and checking it with ONNX Runtime ...", flush=True)
    spec = export(args.run, out=args.out, format=args.format, opset=args.opset, force=args.force)
    inputs = ", ".join(f"{i['name']} {i['dtype']}[{', '.join(map(str, i['shape']))}]" for i in spec["inputs"])
    print(f"wrote {spec['saved_to']}/{spec['file']}: inputs {inputs} -> {spec['output']['name']}; "
          f"ONNX Runtime matches PyTorch within {spec['check']['max_abs_difference']:.2g}")


def cmd_rank(args) -> None:
    from headstart.api import rank

    # --strategy stays: --fit-best fits with it (it was dropped, and the winner was fitted with auto)
    options = {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in ("data", "model", "out", "force")}
    options = {k: v for k, v in options.items() if v is not None}
    rank(args.data, args.models, score=args.score, out=args.out, force=args.force, fit_best=args.fit_best, **options)


def cmd_compare(args) -> None:
    from headstart.api import compare

    options = {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in ("data", "model", "strategy", "out", "force")}
    options = {k: v for k, v in options.items() if v is not None}
    compare(args.data, model=args.model, strategy=args.strategy, fractions=args.fractions, out=args.out, force=args.force, **options)


def cmd_lr_find(args) -> None:
    from headstart.api import lr_find

    options = {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in ("data", "model", "out", "force")}
    options = {k: v for k, v in options.items() if v is not None}
    lr_find(args.data, model=args.model, out=args.out, force=args.force, steps=args.steps, **options)


def cmd_tune(args) -> None:
    from headstart.api import tune

    skip = ("data", "model", "out", "force", "strategy")
    options = {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in skip and v is not None}
    # --strategy X fixes the strategy as any option given is fixed (it was dropped, and the search drew others)
    strategies = args.strategy if args.strategy != DEFAULTS.strategy else args.strategies
    tune(args.data, trials=args.trials, model=args.model, strategies=strategies, out=args.out, force=args.force,
         storage=args.storage, study_name=args.study_name, timeout=args.timeout, **options)


def cmd_serve(args) -> None:
    from headstart.api import serve

    serve(args.run, host=args.host, port=args.port, engine=args.engine, max_inputs=args.max_inputs)


def cmd_monitor(args) -> int:
    from headstart.api import monitor
    from headstart.drift import verdict

    report = monitor(args.run, args.inputs, reference=args.reference, alpha=args.alpha, out=args.out)
    print(verdict(report))
    for row in report["unlike_reference"]:
        print(f"  unlike the reference: {row['input']} (distance {row['distance']:.2f}, "
              f"threshold {report['novel_threshold']:.2f})")
    if report["skipped"]:
        print(f"  {len(report['skipped'])} input(s) could not be read (listed in monitor.json)")
    print(f"saved to {report['saved_to']}")
    return 1 if args.fail_on_drift and report["drift"] else 0


def _carried_options(args) -> dict:
    """The fit options given on an update command line (the others keep the run's)."""
    if "model" in vars(args):
        raise UserError(f"{args.command} starts from the run's own model; --model does not apply (fit --model run:DIR does)")
    return {k: v for k, v in vars(args).items() if k in FitConfig.field_names() and k not in ("data", "model")}


def cmd_update(args) -> None:
    from headstart.api import update

    update(args.run, args.data, old_data=args.old_data, replay=args.replay, **_carried_options(args))


def cmd_pretrain(args) -> None:
    from headstart.api import pretrain

    options = {k: v for k, v in vars(args).items() if k in PretrainConfig.field_names() and k not in ("data", "model", "inputs", "out")}
    pretrain(args.inputs, model=args.model, out=args.out, **options)


def _add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """fit's options that apply without labels, and pretrain's own; the others are hidden, and refused when given."""
    _add_fit_arguments(p)
    helps = {
        "model": "the body to continue pre-training: a bundled name (see `headstart models`), timm:NAME, hf:NAME, or run:DIR",
        "out": "run directory (default runs/pretrain-<inputs>-<time>)",
        "flip": "images: horizontal flips among the views (auto = on: without labels nothing can check them; "
                "off for digits, letters, charts)",
        "crop_scale": "images: the views are random crops keeping this to all of the area (auto = 0.35; 0.8 where a "
                      "small crop hides what matters: digits, small images)",
        "target": "tables: the inputs' label column, where they have one: left out of the features (a later fit "
                  "predicts it)",
        "epochs": f"passes over the inputs (default: the body's, {PRETRAIN_EPOCHS} for the bundled ones)",
        "lr": "peak rate; the body trains at lr x 0.4 (default: the backbone's, else 0.001)",
        "resume": "continue the interrupted pretrain in --out with the same options: epochs saved before the stop are "
                  "kept (an epoch is saved when a minute has passed since the last save)",
    }
    for action in p._actions:
        if action.dest in NOT_PRETRAIN_OPTIONS:
            action.default, action.help = argparse.SUPPRESS, argparse.SUPPRESS
        elif action.dest in helps:
            action.help = helps[action.dest]
    defaults = PretrainConfig(data="")
    g = p.add_argument_group("self-supervised")
    g.add_argument("--temperature", type=float, default=defaults.temperature,
                   help="NT-Xent temperature: lower sharpens the choice among the batch's other inputs (default %(default)s)")
    g.add_argument("--holdout", type=float, default=defaults.holdout,
                   help="share of the inputs held out; their loss picks the epoch kept (default %(default)s)")
    g.add_argument("--colour", "--color", dest="colour", type=float, default=defaults.colour,
                   help="images: colour distortion of the views, SimCLR's strength (jitter with p 0.8, grey with p 0.2; "
                        "0 = none, 1 = SimCLR's ImageNet; default %(default)s)")
    g.add_argument("--blur", type=float, default=defaults.blur,
                   help="images: probability of a Gaussian blur on each view (default %(default)s)")


def cmd_demo(args) -> None:
    from headstart.api import fit
    from headstart.demo import export_digits, raw_pixel_baseline, verdict

    data = export_digits(args.data)
    baseline = raw_pixel_baseline(data, DEFAULTS.val_fraction, DEFAULTS.test_fraction, DEFAULTS.seed)
    run = fit(str(data), model="efficientnet_lite0", strategy=args.strategy, out=args.out, force=args.force)
    acc = run.metrics["accuracy"]
    picked = run.metrics["stages"].get("auto", {}).get("picked")
    strategy = f"{args.strategy} -> {picked}" if picked else args.strategy
    print(f"\ndigits test accuracy: headstart {strategy} {acc:.4f} vs raw-pixel logistic regression {baseline:.4f}: "
          f"{verdict(acc, baseline, run.metrics['n'])}")


def _add_carried_fit_arguments(p: argparse.ArgumentParser) -> None:
    """fit's options, for commands that start from a run: one not given keeps the run's (config.yaml), not fit's default."""
    _add_fit_arguments(p)
    for action in p._actions:
        if action.dest in FitConfig.field_names():
            action.default = argparse.SUPPRESS
            action.help = re.sub(r"%\(default\)[sr]", "the run's", action.help or "")
        if action.dest in ("model", "weights"):  # the run's own body: not listed, and refused by name when given
            action.help = argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headstart", description="Give a small labeled dataset a head start from a pre-trained model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the backbones: name, params, input size, offline?")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fit", help="transfer a pre-trained backbone to labeled data (new head, freeze, train, fine-tune)",
                       formatter_class=DefaultsFormatter)
    p.add_argument("data", help="images or audio: DATA/{train,val,test}/<class>/*, one folder of class folders, or a CSV "
                   "manifest path,label[,split]; text: CSV/TSV/JSONL or a folder of train/val/test.csv; tabular: CSV/Parquet with --target")
    _add_fit_arguments(p)
    p.set_defaults(func=cmd_fit)

    from headstart.select.scores import SCORES

    p = sub.add_parser("rank", help="score candidate backbones on your data before training (LogME, kNN, linear probe)")
    p.add_argument("data", help="labeled data, as for fit")
    p.add_argument("--models", required=True, help="comma-separated backbones: bundled names, timm:NAME, hf:NAME, run:DIR")
    p.add_argument("--score", default="logme", choices=list(SCORES), help="sort by: " + "; ".join(f"{k}: {v}" for k, v in SCORES.items()))
    p.add_argument("--fit-best", action="store_true", help="then fit the winner (into OUT/fit) with the options given")
    _add_fit_arguments(p, saves_a_model=False)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("compare", help="transfer vs the same model from scratch vs a classical baseline: curves, start/slope/asymptote")
    p.add_argument("data", help="labeled data, as for fit (needs a test split: test/ or --test-fraction)")
    p.add_argument("--fractions", default="0.1,0.25,0.5,1", help="training-set fractions for the data curve (default %(default)s)")
    _add_fit_arguments(p, saves_a_model=False)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("lr-find", help="learning-rate range test on the fine-tuning setup: plot and suggested --lr")
    p.add_argument("data", help="labeled data, as for fit")
    p.add_argument("--steps", type=int, default=100, help="mini-batches in the test (default %(default)s)")
    _add_fit_arguments(p, saves_a_model=False)
    p.set_defaults(func=cmd_lr_find)

    from headstart.tuning import SEARCH_SPACE

    p = sub.add_parser("tune", help=f"Optuna search ({SEARCH_SPACE}), pruned per epoch; the best trial is refit as a normal run")
    p.add_argument("data", help="labeled data, as for fit")
    p.add_argument("--trials", type=int, default=20, help="trials to run here (default %(default)s)")
    p.add_argument("--strategies", default="two-stage,finetune,linear-probe", help="strategies to search (default %(default)s)")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by several machines (default: SQLite in OUT/study.db)")
    p.add_argument("--study-name", default=None, help="join or create this study (default headstart-<data>)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    _add_fit_arguments(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="metrics of a run on any labeled folder or manifest")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("data", help="labeled data in the run's modality (class folders, a manifest, a CSV)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predictions for new data: image/audio files and folders, text or table CSV files, or texts")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("inputs", nargs="+", help="files and/or folders (images, audio), a CSV of texts or rows, or literal texts")
    p.add_argument("--top-k", type=int, default=1, help="classes per input (default %(default)s)")
    p.add_argument("--format", choices=["json", "csv"], default="json", help="default %(default)s")
    p.add_argument("--output", help="write to this file instead of stdout")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: ONNX Runtime on the run's export (`headstart export RUN` first); default %(default)s")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="the model as an ONNX graph (body, head and softmax/scale), checked against PyTorch "
                       "with ONNX Runtime")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("--out", default=None, help="folder for model.onnx + export.json (default RUN/export)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="default %(default)s")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="the run's predictions over HTTP (FastAPI): POST /predict (texts, table rows as JSON), "
                       "/predict/files (images, audio, files); GET /info, /health, /docs")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: ONNX Runtime on the run's export (`headstart export RUN` first); default %(default)s")
    p.add_argument("--max-inputs", type=int, default=SERVE_MAX_INPUTS, help="inputs per request at most (default %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("monitor", help="have new inputs drifted from what the run was scored on? feature, output and "
                       "predicted-class tests, and the inputs unlike any reference input")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("inputs", nargs="+", help="new inputs, as predict reads them: files, folders, CSV files of texts or rows")
    p.add_argument("--reference", nargs="+", default=None,
                   help="inputs to compare with (default: the held-out rows the fit kept in model/reference.safetensors)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the drift verdict (default %(default)s)")
    p.add_argument("--out", default=None, help="folder for monitor.json, inputs.csv, drift.png (default RUN/monitor-<inputs>-<time>)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit with status 1 when drift is found (for cron and CI)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("update", help="learn new labeled data (new classes too) from a run's model, rehearsing its old "
                       "data, L2-SP towards its weights (without the old data: its held-out rows' features, body kept); "
                       "forgetting measured on the old test rows")
    p.add_argument("run", help="a run directory (the --out of a fit)")
    p.add_argument("data", help="the new labeled data, as for fit")
    p.add_argument("--old-data", default=None, help="where the run's data is now (default: the path in its config.yaml)")
    p.add_argument("--replay", type=int, default=None,
                   help="old training rows to rehearse (default: all of them). 0, or no old data: the run's held-out "
                        "rows' features (its monitor reference) are replayed to the head instead, the body kept as it "
                        "is (--strategy linear-probe; give another strategy for no replay at all)")
    _add_carried_fit_arguments(p)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("pretrain", help="continue a body's pre-training on unlabeled inputs (self-supervised, "
                       "contrastive: SimCLR, SimCSE), for `fit --model run:OUT`; source and target inputs together adapt it "
                       "to a new domain")
    p.add_argument("inputs", nargs="+", help="unlabeled inputs, as predict reads them: image or audio files and folders "
                   "(class folders are read through, labels ignored), text files (.txt lines, a CSV's text column)")
    _add_pretrain_arguments(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="the offline demo: scikit-learn's digits as images, the default fit vs a raw-pixel baseline")
    p.add_argument("--data", default="demo_data/digits", help="where to export the digits (default %(default)s)")
    p.add_argument("--out", default="runs/digits-demo", help="run directory (default %(default)s)")
    p.add_argument("--strategy", default=DEFAULTS.strategy, help="default %(default)s (the fit default)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except UserError as err:
        print(f"headstart: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headstart: interrupted (a fit's folder is incomplete: the same command with --resume goes on, "
              "--force starts afresh)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `headstart predict ... | head`: the reader left; no traceback (Python's documented recipe)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
