"""lr-find: the learning-rate range test as a command, with a plot and a suggested rate (`--lr auto` uses it)."""
from __future__ import annotations

from pathlib import Path

from headstart.config import FitConfig
from headstart.errors import UserError
from headstart.io_utils import write_json, write_text
from headstart.rundir import default_out, prepare_run_dir


def lr_find(data: str | Path, model: str = "auto", out: str | Path | None = None, force: bool = False,
            steps: int = 100, **options) -> dict:
    """Head first (on cached features), then the range test on what `strategy`'s fine-tuning stage trains (two-stage's
    discriminative groups for strategies without one, e.g. auto); writes lr_find.json/png."""
    from lightning import seed_everything

    from headstart.fitting import build_context
    from headstart.strategies import STRATEGIES
    from headstart.train.engine import seed_stage
    from headstart.train.lr_find import lr_range_test, plot_lr_find
    from headstart.train.stages import FineTune, HeadOnFeatures, run_stage

    FitConfig.check_options(options, "lr-find")
    cfg = FitConfig(data=str(data), model=model, **options)
    out_dir = prepare_run_dir(out or default_out(f"lr-find-{Path(str(data)).stem}"), force, keep=[data, model])
    seed_everything(cfg.seed, workers=True, verbose=False)
    ctx = build_context(cfg, progress=cfg.progress)
    run_stage(HeadOnFeatures(required=False), ctx)
    stage = next((s for s in STRATEGIES.get(cfg.strategy).stages() if isinstance(s, FineTune)), None)
    seed_stage(cfg.seed, stage.name if stage else FineTune.name)  # the draws `--lr auto` makes in that stage of a fit
    if stage is not None:
        stage.prepare(ctx)  # LoRA: its adapters, the parameters that will train
    result = lr_range_test(ctx, steps=steps, stage=stage)
    write_text(out_dir / "config.yaml", cfg.to_yaml())
    write_json(out_dir / "lr_find.json", result)
    plot_lr_find(result, out_dir / "lr_find.png")
    print(f"suggested learning rate (top layer group): {result['suggestion']:.2e}  "
          f"({len(result['lrs'])} steps; plot: {out_dir / 'lr_find.png'})", flush=True)
    return result


def resolve_auto_lr(ctx, stage=None) -> None:
    """`--lr auto`: run the range test now (after the head stage), on the parameter groups of the fine-tuning
    `stage` that will train (prepared: LoRA's adapters in place), and fine-tune at its suggestion."""
    if ctx.cfg.lr != "auto":
        return
    from headstart.train.lr_find import lr_range_test

    result = lr_range_test(ctx, stage=stage)
    ctx.cfg.lr = result["suggestion"]
    ctx.cfg.resolved["lr"] = {"auto": result["suggestion"], "range_test_steps": len(result["lrs"]), "stage": result["stage"]}
    ctx.stage_notes["lr_find"] = {"suggestion": result["suggestion"], "steps": len(result["lrs"]), "stage": result["stage"],
                                  "trainable_params": result["trainable_params"]}


SEARCH_SPACE = ("strategy; lr (log 1e-5..1e-2), batch size (16, 32, 64), epochs (2..15) and weight decay (log "
                "1e-5..0.1) where the strategy reads them")


def tune(data: str | Path, trials: int = 20, model: str = "auto", strategies: str | list[str] = "two-stage,finetune,linear-probe",
         out: str | Path | None = None, force: bool = False, storage: str | None = None, study_name: str | None = None,
         timeout: float | None = None, **options) -> dict:
    """Optuna search over the fit's training options, minimising the validation error of the model each trial
    keeps (`trial_value`), with per-epoch pruning on validation loss.

    The study lives in SQLite inside the output folder unless `storage` names a shared database (then
    several machines can run `tune` on one study at once). The best trial is refit and saved as a normal run
    in OUT/best.
    """
    import optuna

    from headstart.fitting import fit_config
    from headstart.strategies import STRATEGIES

    strategies = [s.strip() for s in (strategies.split(",") if isinstance(strategies, str) else strategies) if s.strip()]
    for name in strategies:
        STRATEGIES.get(name)
    if trials < 1:  # else a study was created and "no trial completed ... try more --trials" blamed the trials
        raise UserError(f"--trials must be at least 1 (got {trials})")
    FitConfig.check_options(options)
    if options.get("resume"):
        raise UserError("tune goes on by trials: the same --storage and --study-name continue a study; --resume is fit's")
    if options.get("val_fraction") == 0:
        raise UserError("tune compares trials on validation rows, and --val-fraction 0 leaves none; leave it out")
    strategies = _strategies_for_body(data, model, strategies, options)
    out_dir = Path(out or default_out(f"tune-{Path(str(data)).stem}"))
    if not storage:
        out_dir = prepare_run_dir(out_dir, force, keep=[data, model])
        storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # before the study: its "[I ...] A new study created" line
    study = optuna.create_study(study_name=study_name or f"headstart-{Path(str(data)).stem}", storage=storage,
                                direction="minimize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    fixed = {k: v for k, v in options.items() if v is not None}  # an option the user sets is not searched

    def objective(trial: "optuna.Trial") -> float:
        space = {
            "lr": lambda: trial.suggest_float("lr", 1e-5, 1e-2, log=True),
            "batch_size": lambda: trial.suggest_categorical("batch_size", [16, 32, 64]),
            "epochs": lambda: trial.suggest_int("epochs", 2, 15),
            "weight_decay": lambda: trial.suggest_float("weight_decay", 1e-5, 0.1, log=True),
        }
        params = {} if "strategy" in fixed else {"strategy": trial.suggest_categorical("strategy", strategies)}
        used = options_used_by(fixed.get("strategy") or params["strategy"])
        params |= {name: suggest() for name, suggest in space.items() if name in used and name not in fixed}
        earlier = _same_trial(study, trial.number, params)
        if earlier is not None:  # a probe has nothing to vary: fitting it again would only repeat that trial
            trial.set_user_attr("said", earlier.user_attrs.get("said", ""))
            trial.set_user_attr("val_loss", earlier.user_attrs.get("val_loss"))
            print(f"trial {trial.number}: {params} -> as trial {earlier.number} (not refitted): "
                  f"{earlier.user_attrs.get('said', '')}", flush=True)
            return earlier.value
        cfg = FitConfig(data=str(data), model=model, out=str(out_dir / "trials" / f"{trial.number:03d}"), force=True,
                        # trials compare on validation; the best one alone is adapted (--adapt-to)
                        **{**fixed, **params, "progress": False, "refit": "never", "adapt_to": None})
        run = fit_config(cfg, callbacks=[prune_callback(trial)], checkpoints=False)
        notes = [n for n in run.metrics["stages"].values() if "best_val_loss" in n]
        value, said = trial_value(notes[-1], by_score=run.model.task.select_by_score)
        trial.set_user_attr("val_loss", notes[-1]["best_val_loss"])
        trial.set_user_attr("said", said)
        print(f"trial {trial.number}: {params} -> {said}", flush=True)
        return value

    study.optimize(objective, n_trials=trials, timeout=timeout, catch=(RuntimeError,))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UserError(f"no trial of {study.study_name} completed (all pruned or failed); try more --trials")
    best = study.best_trial
    print(f"best trial {best.number}: {best.params} (objective {best.value:.4f}); refitting into {out_dir / 'best'}", flush=True)
    cfg = FitConfig(data=str(data), model=model, out=str(out_dir / "best"), force=True, **{**fixed, **best.params})
    cfg.progress = fixed.get("progress", True)
    fit_config(cfg)
    summary = {"study": study.study_name, "storage": storage, "search_space": SEARCH_SPACE, "best": best.params,
               "objective": OBJECTIVE, "best_value": best.value, "best_val_loss": best.user_attrs.get("val_loss"),
               "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value}
                          for t in study.trials]}
    write_json(out_dir / "tune.json", summary)
    print(f"tune: {len(study.trials)} trial(s) in {out_dir / 'tune.json'}; the best trial refitted as a run in "
          f"{out_dir / 'best'}", flush=True)
    return summary


SEARCHED = ("lr", "batch_size", "epochs", "weight_decay")


def options_used_by(strategy: str) -> set[str]:
    """The searched options that `strategy`'s stages read. A solved head (linear-probe) reads none of them and setfit's
    pair pass neither batch size nor epochs: drawn anyway, they made trials that differed only in unused numbers."""
    from headstart.strategies import STRATEGIES
    from headstart.train.contrastive import ContrastiveBody
    from headstart.train.stages import FineTune

    if strategy == "auto":  # it may pick any strategy
        return set(SEARCHED)
    used: set[str] = set()
    for stage in STRATEGIES.get(strategy).stages():
        if isinstance(stage, ContrastiveBody):  # a FineTune too, but steps in --pair-batch-size pairs, one pass
            used |= {"lr", "weight_decay"}
        elif isinstance(stage, FineTune):
            used |= set(SEARCHED)
    return used


def _same_trial(study, number: int, params: dict):
    """A finished trial with exactly these parameters, if any (its fit would be this one's)."""
    import optuna

    return next((t for t in study.trials if t.number != number and t.params == params
                 and t.state == optuna.trial.TrialState.COMPLETE), None)


def _strategies_for_body(data, model: str, strategies: list[str], options: dict) -> list[str]:
    """The strategies that can train `model` on `data`: an untrained body (a table's mlp) has no pre-trained features
    for setfit's pairs to reshape, so that strategy would fail every trial it was drawn for (Stage.accepts)."""
    from headstart.backbones import create_backbone
    from headstart.data import resolve_modality
    from headstart.strategies import STRATEGIES

    cfg = FitConfig(data=str(data), model=model, **options)
    name = model if model != "auto" else resolve_modality(cfg).default_backbone
    body = create_backbone(name, cfg.weights)
    if body.pretrained:
        return strategies
    usable = [s for s in strategies if all(st.accepts(body) for st in STRATEGIES.get(s).stages())]
    if not usable:
        raise UserError(f"{name} is an untrained body and none of --strategies {','.join(strategies)} trains one; "
                        f"include finetune, or reuse a trained body with --model run:DIR")
    if len(usable) < len(strategies):
        print(f"{name} is an untrained body: searching {', '.join(usable)} (not {', '.join(sorted(set(strategies) - set(usable)))})",
              flush=True)
    return usable


OBJECTIVE = ("validation error of the kept model (1 - accuracy; 1 - F1 for multi-label) + 1e-6 x its validation "
             "loss, so the loss only breaks ties; regression: validation loss")


def trial_value(note: dict, *, by_score: bool) -> tuple[float, str]:
    """What a trial scored (lower is better), as fit keeps its best weights: the task score first, then the loss.

    Trials of different strategies end on models trained towards different targets (a solved head without label
    smoothing, a fine-tune with it), whose losses do not compare; their validation scores do (BestWeights).
    """
    from headstart.train.stage import note_score

    loss = note["best_val_loss"]
    score = note_score(note)
    if score is None or not by_score:  # the task's rule (regression: its MAE is a loss; 1 - MAE ranked worse first)
        return loss, (f"val {score[0]} {score[1]:.4f}, " if score else "") + f"val loss {loss:.4f}"
    name, value = score
    return (1.0 - value) + 1e-6 * loss, f"val {name} {value:.4f}, val loss {loss:.4f}"


def prune_callback(trial):
    """A Lightning callback: report each validation loss to Optuna and stop a hopeless trial."""
    import lightning as L
    import optuna

    class PruneTrial(L.Callback):
        step = 0

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
                return
            trial.report(float(trainer.callback_metrics["val_loss"]), self.step)
            self.step += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at validation {self.step}")

    return PruneTrial()
