"""Out of memory: training starts the stage again at half the batch (accumulated), inference runs the batch in halves."""
from __future__ import annotations

import pytest
import torch

import headstart as hs
from headstart.errors import UserError
from headstart.model import TransferModel
from headstart.train import memory
from headstart.train.memory import in_parts


def out_of_memory() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity)")


def test_in_parts_splits_a_batch_that_does_not_fit_and_keeps_row_order():
    calls = []

    def model(x):
        rows = len(x["input_ids"])
        calls.append(rows)
        if rows > 3:
            raise out_of_memory()
        return x["input_ids"].float().sum(1, keepdim=True) * 10 + x["attention_mask"].float().sum(1, keepdim=True)

    batch = {"input_ids": torch.arange(20).reshape(10, 2), "attention_mask": torch.ones(10, 2, dtype=torch.long)}
    whole = batch["input_ids"].float().sum(1, keepdim=True) * 10 + 2
    assert torch.equal(in_parts(model, batch), whole)
    assert max(calls[1:]) <= 5 and all(rows <= 3 for rows in calls if rows != 10 and rows != 5)


def test_in_parts_passes_other_errors_and_names_a_single_input_that_does_not_fit():
    with pytest.raises(ValueError):
        in_parts(lambda x: (_ for _ in ()).throw(ValueError("shape")), torch.zeros(4, 3))

    def never_fits(x):
        raise out_of_memory()

    with pytest.raises(UserError, match="single input"):
        in_parts(never_fits, torch.zeros(4, 3))


@pytest.fixture
def as_on_an_accelerator(monkeypatch):
    """These CPU fits keep their starting weights as a GPU fit does (in host memory), so they can start again."""
    monkeypatch.setattr(memory, "keeps_a_copy", lambda device: True)


def fit_running_out_at(monkeypatch, tmp_path, images, nth_large_step: int | None, name: str):
    """A fine-tuning fit whose training steps above 4 images run out of memory from the `nth_large_step`-th on."""
    forward, large = TransferModel.forward, []

    def limited(self, x):
        if nth_large_step is not None and torch.is_grad_enabled() and len(x) > 4:
            large.append(len(x))
            if len(large) >= nth_large_step:
                raise out_of_memory()
        return forward(self, x)

    monkeypatch.setattr(TransferModel, "forward", limited)
    run = hs.fit(str(images), strategy="finetune", out=str(tmp_path / name), image_size=32, epochs=2, batch_size=8,
                 refit="never", progress=False)
    monkeypatch.setattr(TransferModel, "forward", forward)
    return run, large


def test_training_out_of_memory_starts_the_stage_again_from_its_weights_at_half_the_batch(monkeypatch, tmp_path, tiny_images, capsys,
                                                                                          as_on_an_accelerator):
    # Out of memory on the first step (nothing trained yet) and on the second (one step already taken): the stage
    # must start again from the same weights either way, so both fits end with the same model.
    at_once, large_once = fit_running_out_at(monkeypatch, tmp_path, tiny_images, 1, "at_once")
    later, large_later = fit_running_out_at(monkeypatch, tmp_path, tiny_images, 2, "later")
    assert large_once == [8] and large_later == [8, 8], "the first attempt stopped where memory ran out, then 4 a step"
    for run in (at_once, later):
        note = run.metrics["stages"]["finetune"]
        assert note["memory"] == "out of memory at 8 a step: trained 4 a step x 2 accumulated (8 per optimizer step)"
        assert note["epochs_run"] == 2
        assert "Stage finetune: out of memory at 8 a step" in (run.path / "report.html").read_text()
    a, b = at_once.model.state_dict(), later.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the retry started from the weights the stage began with"
    epochs = [row["epoch"] for row in later.history if row["stage"] == "finetune"]
    assert epochs == sorted(set(epochs)), "the failed attempt's history rows were dropped"
    out = capsys.readouterr().out
    assert "starting it again at 4 example(s) a step, 2 steps accumulated" in out
    assert "trained 4 a step x 2 accumulated" in out.split("headstart fit:")[-1], "the summary says so"


def test_training_that_does_not_fit_one_example_is_a_clear_error(monkeypatch, tmp_path, tiny_images, as_on_an_accelerator):
    def never_fits(self, x):
        if torch.is_grad_enabled():
            raise out_of_memory()
        return forward(self, x)

    forward = TransferModel.forward
    monkeypatch.setattr(TransferModel, "forward", never_fits)
    with pytest.raises(UserError, match="at 1 example.*does not fit.*--precision bf16-mixed"):
        hs.fit(str(tiny_images), strategy="finetune", out=str(tmp_path / "run"), image_size=32, epochs=1,
               batch_size=4, refit="never", progress=False)


def test_setfit_pairs_out_of_memory_train_at_half_the_pairs_a_step(monkeypatch, tmp_path, tiny_images, as_on_an_accelerator):
    from headstart.train.contrastive import PairTask

    step = PairTask.training_step

    def limited(self, batch, batch_idx):
        if len(batch[-1]) > 4:  # pairs in the batch
            raise out_of_memory()
        return step(self, batch, batch_idx)

    monkeypatch.setattr(PairTask, "training_step", limited)
    run = hs.fit(str(tiny_images), strategy="setfit", out=str(tmp_path / "run"), image_size=32, pair_batch_size=8,
                 pair_rounds=2, refit="never", progress=False)
    note = run.metrics["stages"]["pairs"]
    assert note["memory"] == "out of memory at 8 a step: trained 4 a step x 2 accumulated (8 per optimizer step)"
    assert note["steps"] == -(-note["pairs"] // 8), "one optimizer step per 8 pairs, as asked"


def test_on_the_cpu_out_of_memory_names_a_smaller_batch_instead(monkeypatch, tmp_path, tiny_images):
    """No copy of the weights is kept on the CPU (it would come out of the memory that ran short): a clear error."""
    forward = TransferModel.forward

    def limited(self, x):
        if torch.is_grad_enabled() and len(x) > 4:
            raise torch.OutOfMemoryError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes")
        return forward(self, x)

    monkeypatch.setattr(TransferModel, "forward", limited)
    with pytest.raises(UserError, match="out of CPU memory training finetune at 8 example.*--batch-size 4 is half"):
        hs.fit(str(tiny_images), strategy="finetune", out=str(tmp_path / "run"), image_size=32, epochs=1, batch_size=8,
               refit="never", progress=False)


def test_the_failed_attempts_work_is_planned_again_and_its_weights_put_back(monkeypatch):
    from types import SimpleNamespace

    from headstart.progress import RunProgress

    monkeypatch.setattr(memory, "keeps_a_copy", lambda device: True)
    progress = RunProgress(False)
    progress.plan(100.0)
    ctx = SimpleNamespace(history=[], progress=progress, device=torch.device("cpu"), cfg=SimpleNamespace(seed=0))
    layer = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    calls = []

    def attempt(batch, accumulate):
        calls.append((batch, accumulate))
        progress.advance(0, 30.0)
        ctx.history.append({"epoch": len(calls)})
        if batch > 2:
            with torch.no_grad():
                layer.weight.add_(1.0)  # a step taken before memory ran out
            raise out_of_memory()

    note = memory.train_within_memory(ctx, "finetune", layer, 8, attempt)
    assert calls == [(8, 1), (4, 2), (2, 4)]
    assert note == "out of memory at 8 a step: trained 2 a step x 4 accumulated (8 per optimizer step)"
    assert all(torch.equal(start[k], v) for k, v in layer.state_dict().items()), "each retry began from the start"
    assert ctx.history == [{"epoch": 3}], "only the attempt that finished left history rows"
    assert (progress.done, progress.total) == (90.0, 160.0), "two failed attempts' 60 units planned again"
