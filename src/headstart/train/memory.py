"""Out of memory while training: the stage starts again at half the batch with twice the accumulated steps.

The optimizer still steps on as many examples as asked (--batch-size), so the rates and the schedule stay the recipe's;
only memory changes. AutoGluon's reviewers asked for this ("auto-reduce batch-size", PR #1537); Lightning's
BatchSizeFinder searches for the largest batch instead, which changes the effective batch and so the recipe. Lightning
says what counts as out of memory (CUDA, cuDNN, the CPU allocator) and frees the cache.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, TypeVar

import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda, is_oom_error
from torch import nn

from headstart.errors import UserError
from headstart.train.engine import seed_stage

if TYPE_CHECKING:
    from headstart.train.context import FitContext

T = TypeVar("T")


def is_out_of_memory(error: BaseException) -> bool:
    """torch's own out-of-memory error (CUDA, XPU), or what Lightning recognises by its message (cuDNN, CPU allocator)."""
    return isinstance(error, torch.OutOfMemoryError) or is_oom_error(error)


def keeps_a_copy(device: torch.device) -> bool:
    """Whether a stage keeps a copy of its starting weights, to start again out of memory: on an accelerator, in host
    memory. On the CPU the copy would come out of the memory that ran short (MiniLM: +90 MB on every stage's peak),
    and there Linux's OOM killer, not an error, usually ends the process: the error names a smaller --batch-size."""
    return device.type != "cpu"


def halving_batches(attempt: Callable[[int], T], batch_size: int, refusal: Callable[[int], str | None],
                    start_again: Callable[[int], None]) -> tuple[T, int]:
    """(`attempt(batch)`, the batch it ran at): out of memory, `refusal(batch)` says why not to go on (a UserError), or
    `start_again(half)` puts back what the failed attempt changed and it runs again at half the batch."""
    batch = batch_size
    while True:
        try:
            return attempt(batch), batch
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            why = refusal(batch)
            if why:
                raise UserError(why) from error
        # Outside the except clause: the error's traceback, which holds the failed step's activations, is gone.
        garbage_collection_cuda()
        batch = math.ceil(batch / 2)
        start_again(batch)


def train_within_memory(ctx: "FitContext", stage_name: str, module: nn.Module, batch_size: int,
                        attempt: Callable[[int, int], None]) -> str | None:
    """Run `attempt(batch, accumulate)`, one whole training of a stage. Out of memory, the module's weights and
    buffers go back to where the stage started them, the stage's history rows are dropped, and it runs again with
    half the batch and twice the accumulation, down to one example a step (on an accelerator: `keeps_a_copy`).
    Returns what was changed, or None."""
    start = None
    if keeps_a_copy(ctx.device):  # before Lightning moves the module: host memory; LoRA's adapters included
        start = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    rows, done = len(ctx.history), [ctx.progress.done]

    def refusal(batch: int) -> str | None:
        where = f"out of {ctx.device.type.upper()} memory training {stage_name} at {batch} example(s) a step"
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return (f"{where} on one of several processes (they cannot shrink alone): give a smaller --batch-size "
                    f"(--batch-size {max(1, batch // 2)} is half)")
        if start is None:
            return f"{where}: give a smaller --batch-size (--batch-size {max(1, batch // 2)} is half)"
        if batch == 1:
            return (f"{where}: the model does not fit; try --precision bf16-mixed, a smaller --image-size or "
                    "--max-length, --strategy lora, or a smaller --model")
        return None

    def start_again(batch: int) -> None:
        module.load_state_dict(start)
        del ctx.history[rows:]
        ctx.progress.plan(ctx.progress.done - done[0])  # what the failed attempt did is to be done again: the ETA says so
        done[0] = ctx.progress.done
        print(f"headstart: out of memory in {stage_name}; starting it again at {batch} example(s) a step, "
              f"{math.ceil(batch_size / batch)} steps accumulated", flush=True)
        seed_stage(ctx.cfg.seed, stage_name)  # the new attempt draws as a first one would

    _, batch = halving_batches(lambda b: attempt(b, math.ceil(batch_size / b)), batch_size, refusal, start_again)
    if batch == batch_size:
        return None
    accumulate = math.ceil(batch_size / batch)
    return (f"out of memory at {batch_size} a step: trained {batch} a step x {accumulate} accumulated "
            f"({batch * accumulate} per optimizer step)")


def in_parts(fn: Callable, x) -> torch.Tensor:
    """`fn(x)` on a collated batch, in halves (and their halves) where the whole runs out of memory: inference has no
    state to put back, so the pass goes on instead of starting again. Rows stay in order."""
    try:
        return fn(x)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        if _rows(x) <= 1:
            raise UserError("out of memory running the model on a single input: it does not fit on this device; "
                            "try a smaller --image-size or --max-length, or run on the CPU") from error
    garbage_collection_cuda()
    half = _rows(x) // 2
    return torch.cat([in_parts(fn, _slice(x, 0, half)), in_parts(fn, _slice(x, half, None))])


def _rows(x) -> int:
    if isinstance(x, torch.Tensor):
        return len(x)
    values = list(x.values()) if isinstance(x, dict) else list(x)
    return _rows(values[0])


def _slice(x, start: int, stop: int | None):
    if isinstance(x, torch.Tensor):
        return x[start:stop]
    if isinstance(x, dict):
        return {k: _slice(v, start, stop) for k, v in x.items()}
    return type(x)(_slice(v, start, stop) for v in x)
