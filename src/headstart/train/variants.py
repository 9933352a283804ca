"""Fine-tuning variants: what trains, at which rate, under which penalty. Each is a FineTune with its hooks set.

- GradualUnfreeze (ULMFiT, Howard & Ruder 2018): one more layer group per epoch from the top, rates divided
  by `--ulmfit-factor` (2.6) per group going down, slanted triangular schedule (cut_frac 0.1, ratio 32).
- BitFit (Ben Zaken et al. 2022): only biases and normalisation affine parameters of the body train.
- L2SP (Li et al. 2018): the body decays towards its pre-trained weights, alpha/2 * ||w - w0||^2, instead of
  towards zero; the head keeps plain (decoupled) weight decay.
- LoRA (Hu et al. 2021) through peft: low-rank adapters on the body's attention query/value projections
  (transformers) or its pointwise convolutions and linear layers (CNNs, MLPs); only adapters and head train.
  After training the adapters are merged into the base weights, so the saved model is the plain
  architecture: it loads and predicts like any other run, with no peft needed at inference (peft's own
  save/load path is where classification heads get lost, peft #310/#577). model.json records the LoRA rank,
  alpha and targets under "training".

All of them honour `--freeze-until` (groups below it never train, LoRA puts no adapters there) and `--bn`.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn

from headstart.errors import UserError
from headstart.train.module import TransferTask, slanted_triangular
from headstart.train.stages import FineTune, bn_mode

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def batch_norms(modules) -> list[nn.Module]:
    return [m for m in modules if isinstance(m, nn.modules.batchnorm._NormBase)]


# --------------------------------------------------------------------------------------------- ULMFiT


class GradualUnfreezing(L.Callback):
    """At each epoch's start the top `epoch + 1` trainable layer groups train; the others stay as frozen groups.

    `groups` is top first: (parameters, BatchNorm modules) of each layer group that may train. `fixed_eval`
    are the norms that stay in eval mode whatever happens (groups below --freeze-until, or all under
    --bn all-frozen). `live` records how many groups trained in each epoch.

    Locked parameters get no update: on one device they stop requiring gradients (no backward through
    them); under DDP every parameter registered at wrap time must take part in each gradient reduction, so
    they keep requiring gradients and their gradients are dropped after backward instead (AdamW skips a
    parameter without a gradient: no step, no decay, no moment update).
    """

    def __init__(self, groups: list[tuple[list[nn.Parameter], list[nn.Module]]], bn: str, fixed_eval: list[nn.Module]):
        self.groups, self.bn, self.fixed_eval = groups, bn, list(fixed_eval)
        self.live: list[int] = []
        self.locked: list[nn.Parameter] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        k = min(trainer.current_epoch + 1, len(self.groups))
        eval_norms, self.locked = list(self.fixed_eval), []
        for j, (params, norms) in enumerate(self.groups):
            live = j < k
            norm_params = {id(p) for m in norms for p in m.parameters(recurse=False)}
            for p in params:
                # --bn train: norm layers learn inside locked groups too (fastai's train_bn)
                trains = live or (self.bn == "train" and id(p) in norm_params)
                if not trains:
                    self.locked.append(p)
                p.requires_grad_(trains or trainer.world_size > 1)
            if live and self.bn != "all-frozen":
                for m in norms:
                    m.train()
            elif not live and self.bn == "frozen":
                eval_norms += norms
        pl_module.eval_norms = eval_norms
        self.live.append(k)

    def on_after_backward(self, trainer, pl_module) -> None:
        for p in self.locked:
            p.grad = None


class GradualUnfreeze(FineTune):
    """ULMFiT's classifier fine-tuning: gradual unfreezing, discriminative rates (factor per group), STLR."""

    name = "gradual"

    def __init__(self, cut_frac: float = 0.1, ratio: float = 32.0):
        super().__init__(discriminative=True)
        self.cut_frac, self.ratio = cut_frac, ratio
        self.unfreezing: GradualUnfreezing | None = None

    def _lr(self, cfg, i: int, n: int, pretrained: bool = True) -> float:
        if not pretrained:
            return cfg.lr
        return cfg.lr / cfg.ulmfit_factor ** (n - 1 - i)  # the top group at lr, each lower one divided by the factor

    def make_task(self, ctx, net, param_groups, eval_norms) -> TransferTask:
        cfg = ctx.cfg
        return TransferTask(net, ctx.task, param_groups, cfg.weight_decay, cfg.warmup, eval_norms, cfg.label_smoothing,
                            schedule=lambda total: slanted_triangular(total, self.cut_frac, self.ratio))

    def callbacks(self, ctx, task) -> list:
        groups = ctx.backbone.layer_groups()
        start = ctx.cfg.freeze_until or 0
        unfreezable = [([p for m in g for p in m.parameters(recurse=False)], batch_norms(g)) for g in groups[start:]]
        bn = bn_mode(ctx)
        fixed = list(task.eval_norms) if bn == "all-frozen" else [m for g in groups[:start] for m in batch_norms(g)]
        if bn == "train":
            fixed = []
        self.unfreezing = GradualUnfreezing(unfreezable[::-1], bn, fixed)
        return [self.unfreezing]

    def finish(self, ctx) -> None:
        ctx.stage_notes[self.name].update(
            groups_training_per_epoch=self.unfreezing.live, lr_factor=ctx.cfg.ulmfit_factor,
            schedule=f"slanted triangular (cut_frac {self.cut_frac}, ratio {self.ratio:g})")


# --------------------------------------------------------------------------------------------- BitFit


class BitFit(FineTune):
    """Only biases and normalisation affine parameters of the body train (with the whole head)."""

    name = "bitfit"

    def __init__(self, lr_scale: float = 1.0):
        super().__init__(discriminative=False, lr_scale=lr_scale)

    def body_params(self, modules: list[nn.Module]) -> list[nn.Parameter]:
        return [p for m in modules for name, p in m.named_parameters(recurse=False)
                if name == "bias" or isinstance(m, NORMS)]


# --------------------------------------------------------------------------------------------- L2-SP


class L2SPPenalty(nn.Module):
    """alpha/2 * sum ||w - w0||^2 over the given parameters, w0 their values now (the pre-trained starting point)."""

    name = "l2sp"

    def __init__(self, params: list[nn.Parameter], alpha: float):
        super().__init__()
        self.params, self.alpha = list(params), alpha
        for i, p in enumerate(self.params):
            self.register_buffer(f"w0_{i}", p.detach().clone(), persistent=False)  # moves with the net's device

    def forward(self) -> torch.Tensor:
        if not self.params:
            return torch.zeros(())
        total = sum(((p - getattr(self, f"w0_{i}")) ** 2).sum() for i, p in enumerate(self.params))
        return 0.5 * self.alpha * total


class L2SP(FineTune):
    """Two-stage's fine-tuning with the body's weight decay pulling towards the pre-trained weights, not zero."""

    name = "l2-sp"

    def __init__(self):
        super().__init__(discriminative=True)

    def param_groups(self, ctx):
        groups, eval_norms = super().param_groups(ctx)
        for g in groups[:-1]:  # body groups: the L2-SP penalty replaces weight decay; the head (last) keeps it
            g["weight_decay"] = 0.0
        return groups, eval_norms

    def make_task(self, ctx, net, param_groups, eval_norms) -> TransferTask:
        cfg = ctx.cfg
        body = [p for g in param_groups[:-1] for p in g["params"]]
        return TransferTask(net, ctx.task, param_groups, cfg.weight_decay, cfg.warmup, eval_norms, cfg.label_smoothing,
                            penalty=L2SPPenalty(body, cfg.l2sp_alpha))

    def finish(self, ctx) -> None:
        penalties = [r["train_l2sp"] for r in ctx.history if r.get("stage") == self.name and "train_l2sp" in r]
        ctx.stage_notes[self.name].update(alpha=ctx.cfg.l2sp_alpha, final_penalty=penalties[-1] if penalties else 0.0)


# --------------------------------------------------------------------------------------------- LoRA

# Attention projections LoRA adapts in transformers (Hu et al.: query and value): BERT, DistilBERT, GPT-2,
# LLaMA-style, MosaicBERT, and timm ViTs' fused qkv.
ATTENTION_TARGETS = ("query", "value", "q_lin", "v_lin", "q_proj", "v_proj", "qkv", "c_attn", "Wqkv")


def _pointwise(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return all(k == 1 for k in m.kernel_size) and m.groups == 1
    return False


def lora_targets(backbone: nn.Module, cfg) -> tuple[list[str], str]:
    """Names (relative to the backbone) of the layers that get adapters, and how they were chosen.

    `--lora-targets a,b` (module-name suffixes) wins; else a backbone's own `lora_targets` attribute; else
    attention query/value projections when the body has them, else every pointwise (1x1) convolution and
    linear layer. Layers in groups below --freeze-until get none.
    """
    named = dict(backbone.named_modules())
    owner_group = {id(m): i for i, g in enumerate(backbone.layer_groups()) for m in g}
    allowed = {name for name, m in named.items() if owner_group.get(id(m), -1) >= (cfg.freeze_until or 0)}
    wanted = cfg.lora_targets or getattr(backbone, "lora_targets", None)
    if wanted:
        suffixes = [s.strip() for s in (wanted.split(",") if isinstance(wanted, str) else wanted) if s.strip()]
        names = [n for n in named if any(n == s or n.endswith("." + s) for s in suffixes)]
        how = f"given: {', '.join(suffixes)}"
    else:
        names = [n for n, m in named.items() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in ATTENTION_TARGETS]
        how = "attention query/value projections"
        if not names:
            names = [n for n, m in named.items() if n and _pointwise(m)]
            how = "pointwise (1x1) convolutions and linear layers"
    names = [n for n in names if n in allowed]
    if not names:
        raise UserError(f"no layer of {getattr(backbone, 'name', 'the backbone')} to put LoRA adapters on ({how}"
                        + (f", at or above layer group {cfg.freeze_until}" if cfg.freeze_until else "") + "); "
                        "name some with --lora-targets (module-name suffixes, comma-separated)")
    return names, how


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer's weights and put the plain layer back; returns how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    named = dict(module.named_modules())
    wrapped = [(n, m) for n, m in named.items() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        layer.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(named[parent] if parent else module, child, layer.get_base_layer())
    return len(wrapped)


class LoRA(FineTune):
    """Low-rank adapters (peft) on the body; the body's own weights never change until the merge at the end."""

    name = "lora"

    def __init__(self, merge: bool = True, lr_scale: float = 1.0):
        super().__init__(discriminative=False, lr_scale=lr_scale)
        self.merge = merge
        self.info: dict = {}

    def prepare(self, ctx) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise UserError("--strategy lora needs the peft package: pip install peft") from None
        cfg = ctx.cfg
        names, how = lora_targets(ctx.backbone, cfg)
        config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none", target_modules=names)
        inject_adapter_in_model(config, ctx.backbone)
        self.info = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": how, "layers": len(names),
                     "examples": names[:3], "adapter_params": sum(p.numel() for n, p in ctx.backbone.named_parameters() if "lora_" in n)}

    def param_groups(self, ctx):
        cfg, bn = ctx.cfg, bn_mode(ctx)
        lr = cfg.lr * self.lr_scale
        adapters, norm_params = [], []
        norms = batch_norms(ctx.backbone.modules())
        norm_ids = {id(p) for m in norms for p in m.parameters(recurse=False)}
        for name, p in ctx.backbone.named_parameters():
            is_adapter = "lora_" in name
            trains = is_adapter or (bn == "train" and id(p) in norm_ids)
            p.requires_grad_(trains)
            (adapters if is_adapter else norm_params if trains else []).append(p)
        for p in ctx.head.parameters():
            p.requires_grad_(True)
        groups = [{"params": adapters, "lr": lr}, {"params": norm_params, "lr": lr}, {"params": list(ctx.head.parameters()), "lr": lr}]
        eval_norms = [] if bn == "train" else norms  # every base layer is frozen: its BN keeps its statistics
        return [g for g in groups if g["params"]], eval_norms

    def finish(self, ctx) -> None:
        if self.merge:
            merged = merge_lora(ctx.backbone)
            self.info["merged"] = merged == self.info["layers"]
        ctx.stage_notes[self.name].update(lora=self.info)
        ctx.model_notes["lora"] = {k: v for k, v in self.info.items() if k != "examples"}
