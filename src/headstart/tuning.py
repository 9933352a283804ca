"""lr-find: the learning-rate range test as a command, with a plot and a suggested rate (`--lr auto` uses it)."""
from __future__ import annotations

from pathlib import Path

from headstart.config import FitConfig
from headstart.errors import UserError
from headstart.io_utils import write_json, write_text
from headstart.rundir import default_out, prepare_run_dir


def lr_find(data: str | Path, model: str = "auto", out: str | Path | None = None, force: bool = False,
            steps: int = 100, **options) -> dict:
    """Head first (on cached features, as in two-stage), then the range test on all layers; writes lr_find.json/png."""
    from headstart.fit import build_context
    from headstart.train.lr_find import lr_range_test, plot_lr_find
    from headstart.train.stages import HeadOnFeatures

    unknown = set(options) - FitConfig.field_names()
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(sorted(unknown))}")
    cfg = FitConfig(data=str(data), model=model, **options)
    out_dir = prepare_run_dir(out or default_out(f"lr-find-{Path(str(data)).stem}"), force)
    ctx = build_context(cfg, progress=cfg.progress)
    HeadOnFeatures(required=False).run(ctx)
    result = lr_range_test(ctx, steps=steps)
    write_text(out_dir / "config.yaml", cfg.to_yaml())
    write_json(out_dir / "lr_find.json", result)
    plot_lr_find(result, out_dir / "lr_find.png")
    print(f"suggested learning rate (top layer group): {result['suggestion']:.2e}  "
          f"({len(result['lrs'])} steps; plot: {out_dir / 'lr_find.png'})", flush=True)
    return result


def resolve_auto_lr(ctx) -> None:
    """`--lr auto`: run the range test now (after the head stage) and fine-tune at its suggestion."""
    if ctx.cfg.lr != "auto":
        return
    from headstart.train.lr_find import lr_range_test

    result = lr_range_test(ctx)
    ctx.cfg.lr = result["suggestion"]
    ctx.cfg.resolved["lr"] = {"auto": result["suggestion"], "range_test_steps": len(result["lrs"])}
    ctx.stage_notes["lr_find"] = {"suggestion": result["suggestion"], "steps": len(result["lrs"])}
