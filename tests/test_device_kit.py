"""benchmarks/device_kit.py: what a GPU call carries must be the data and weights the contenders would have read."""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import device_kit  # noqa: E402


def test_large_images_shrink_to_the_side_limit_and_the_rest_travel_byte_for_byte(tmp_path):
    src = tmp_path / "shared" / "bees" / "train" / "bee"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (600, 400, 3), dtype=np.uint8)).save(src / "big.png")  # shorter side 400
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(src / "small.png")
    (src.parents[1] / "SOURCE.md").write_text("where it came from")

    resized = device_kit.copy_set(tmp_path / "shared", "bees", tmp_path / "kit")

    out = tmp_path / "kit" / "bees"
    assert resized == 1
    with Image.open(out / "train" / "bee" / "big.jpg") as big:
        assert big.size == (device_kit.MAX_SIDE, round(600 * device_kit.MAX_SIDE / 400))  # (w, h): the aspect kept
    assert not (out / "train" / "bee" / "big.png").exists()  # one file per image, or a class would count it twice
    assert (out / "train" / "bee" / "small.png").read_bytes() == (src / "small.png").read_bytes()
    assert (out / "SOURCE.md").read_text() == "where it came from"


def test_weights_carried_as_fp16_come_back_as_fp32_within_fp16_rounding(tmp_path):
    weights = {"encoder.weight": torch.randn(64, 32), "position_ids": torch.arange(8)}
    path = tmp_path / "model.safetensors"
    save_file(weights, path)

    device_kit.cast_weights(path, "half")
    carried = load_file(path)
    assert carried["encoder.weight"].dtype == torch.float16 and carried["position_ids"].dtype == torch.int64
    device_kit.cast_weights(path, "float")
    back = load_file(path)

    assert back["encoder.weight"].dtype == torch.float32
    assert torch.equal(back["position_ids"], weights["position_ids"])
    torch.testing.assert_close(back["encoder.weight"], weights["encoder.weight"], rtol=2**-10, atol=1e-6)
    assert not torch.equal(back["encoder.weight"], weights["encoder.weight"])  # it did travel as fp16
