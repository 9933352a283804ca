"""Audio: loader layouts and bad clips, decoding helpers, the log-mel front end, fit/load/predict on synthetic tones,
and a tiny subset of the real FSDD spoken digits (skipped where ../shared is absent)."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import headstart as hs
from headstart.backbones import create_backbone
from headstart.backbones.audio import MelBackbone, MelPreprocess
from headstart.cli import main
from headstart.config import FitConfig
from headstart.data import MODALITIES, resolve_modality
from headstart.data.audio import load_audio_data, load_clip, pad_crop, resample
from headstart.errors import UserError

from conftest import needs_shared

TONES = {"low": 200.0, "mid": 800.0, "high": 3000.0}
FAST = dict(image_size=64, head_epochs=10, epochs=1, batch_size=8, progress=False)


def write_tone(path, freq: float, seconds: float = 0.5, rate: int = 16000, rng=None, channels: int = 1) -> None:
    rng = rng or np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    f = freq * rng.uniform(0.97, 1.03)
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.01, t.shape)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(str(path), data.astype(np.float32), rate)


def make_tones(folder, classes=TONES, per_class: int = 10, seed: int = 0, rate: int = 16000):
    """Class folders of noisy sine tones, one pitch per class, 0.4-0.6 s, half wav and half flac."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "wav" if i % 2 == 0 else "flac"
            write_tone(folder / name / f"{name}_{i:02d}.{ext}", TONES[name], rng.uniform(0.4, 0.6), rate, rng)
    return folder


@pytest.fixture
def tones(tmp_path):
    return make_tones(tmp_path / "tones")


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    """One linear-probe fit on 8 kHz tones shared by the read-only tests (run dir, load, predict, CLI)."""
    root = tmp_path_factory.mktemp("audio_run")
    data = make_tones(root / "tones", per_class=12, rate=8000)
    run = hs.fit(str(data), strategy="linear-probe", out=str(root / "run"), cache_dir=str(root / "cache"), **FAST)
    return run, data


# --- loader ---------------------------------------------------------------------------------------------------

def test_class_folders_are_loaded_split_and_described(tones):
    data = load_audio_data(tones)
    assert data.modality == "audio" and data.layout == "class-folders" and data.classes == ["high", "low", "mid"]
    assert len(data.train) + len(data.val) + len(data.test) == 30 and data.val and data.test
    assert {p.rsplit(".", 1)[1] for p, _ in data.train} == {"wav", "flac"}
    assert 0.4 <= data.info["median_seconds"] <= 0.6 and data.info["native_sample_rate"] == 16000
    assert data.info["p95_seconds"] <= data.info["max_seconds"] <= 0.6


def test_split_folders(tmp_path):
    make_tones(tmp_path / "d" / "train", per_class=6)
    make_tones(tmp_path / "d" / "test", per_class=2, seed=1)
    data = load_audio_data(tmp_path / "d")
    assert data.layout == "splits" and len(data.test) == 6 and len(data.train) + len(data.val) == 18


def test_manifest_with_split_and_extra_columns_is_honoured(tones, tmp_path):
    rows = []
    for i, p in enumerate(sorted(tones.rglob("*.*"))):
        rows.append({"path": str(p.relative_to(tones)), "label": p.parent.name, "speaker": "x", "split": "test" if i % 5 == 0 else "train"})
    manifest = tones / "splits.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    data = load_audio_data(manifest)
    assert data.layout == "manifest"
    assert sorted(p for p, _ in data.test) == sorted(str(tones / r["path"]) for r in rows if r["split"] == "test")
    assert MODALITIES.get("audio").claims(manifest, None) and not MODALITIES.get("image").claims(manifest, None)
    rows[0]["split"] = "holdout"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(UserError, match="holdout"):
        load_audio_data(manifest)


def test_corrupt_and_empty_clips_are_skipped_and_listed(tones):
    (tones / "low" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(str(tones / "mid" / "silent.wav"), np.zeros(0, dtype=np.float32), 16000)
    data = load_audio_data(tones)
    assert len(data.train) + len(data.val) + len(data.test) == 30
    skipped = dict(data.skipped)
    assert set(skipped) == {str(tones / "low" / "broken.wav"), str(tones / "mid" / "silent.wav")}
    assert all(reason for reason in skipped.values())
    assert {s["where"] for s in data.summary()["skipped"]} == set(skipped)


def test_one_class_empty_class_and_no_clips_are_clear_errors(tmp_path):
    make_tones(tmp_path / "one", classes=["low"])
    assert load_audio_data(tmp_path / "one").classes == ["low"]  # readable (an update's new class); a fit refuses it
    with pytest.raises(UserError, match="only one class .'low'."):
        hs.fit(str(tmp_path / "one"), out=str(tmp_path / "run"), progress=False)
    make_tones(tmp_path / "two", classes=["low", "mid"])
    for p in (tmp_path / "two" / "mid").iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(UserError, match="'mid' has no readable training clips"):
        load_audio_data(tmp_path / "two")
    (tmp_path / "none" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no readable training clips"):
        load_audio_data(tmp_path / "none")


def test_audio_folder_is_detected_as_audio(tones):
    cfg = FitConfig(data=str(tones))
    assert resolve_modality(cfg).name == "audio"
    assert not MODALITIES.get("image").claims(tones, cfg)


# --- decoding and the front end --------------------------------------------------------------------------------

@pytest.mark.parametrize("native,target", [(8000, 16000), (44100, 16000), (16000, 16000), (22050, 8000)])
def test_resampling_gives_the_target_length(tmp_path, native, target):
    path = tmp_path / "t.wav"
    write_tone(path, 440, seconds=0.5, rate=native, channels=2)
    wave = load_clip(str(path), target)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 0.5 * target) <= 1
    assert len(resample(np.ones(native, dtype=np.float32), native, target)) == target


def test_stereo_is_mixed_down_to_mono(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(str(path), np.stack([np.full(100, 0.5), np.full(100, -0.1)], axis=1).astype(np.float32), 16000)
    assert np.allclose(load_clip(str(path), 16000), 0.2, atol=1e-4)


def test_pad_crop_center_and_random():
    wave = np.arange(1, 11, dtype=np.float32)
    assert pad_crop(wave, 4).tolist() == [4, 5, 6, 7]
    assert pad_crop(wave, 14).tolist() == [0, 0] + list(range(1, 11)) + [0, 0]
    torch.manual_seed(0)
    crops = [pad_crop(wave, 4, random=True) for _ in range(30)]
    assert all(len(c) == 4 and np.all(np.diff(c) == 1) for c in crops) and len({c[0] for c in crops}) > 1
    pads = [pad_crop(wave, 14, random=True) for _ in range(30)]
    assert all(len(p) == 14 and p.sum() == wave.sum() for p in pads) and len({int(np.argmax(p > 0)) for p in pads}) > 1


def test_spectrogram_shape_and_tone_pitch():
    body = create_backbone("mel-efficientnet_lite0")
    body.set_preprocess(MelPreprocess(sample_rate=16000, clip_seconds=0.5, image_size=64))
    t = torch.arange(8000) / 16000
    waves = torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 3000 * t)])
    spec = body.frontend.spectrogram(waves)
    assert spec.shape == (2, 128, 51) and spec.min() >= 0 and spec.max() <= 1
    peaks = spec.mean(dim=2).argmax(dim=1)
    assert peaks[0] < peaks[1] - 20, peaks  # the higher tone peaks in a higher mel band
    images = body.frontend(waves)
    assert images.shape == (2, 3, 64, 64)
    body.eval()
    with torch.no_grad():
        assert body.forward_features(waves).shape == (2, 1280)
    assert [len(g) for g in body.layer_groups()] == [len(g) for g in body.cnn.layer_groups()]
    wider = create_backbone("mel-efficientnet_lite2")  # every bundled image body has a mel twin, for `rank`
    assert wider.feature_dim == 1280 and wider.cnn.name == "efficientnet_lite2"


def test_hf_audio_offline_is_one_clear_error():
    with pytest.raises(UserError) as err:
        create_backbone("hf-audio:headstart-tests/no-such-audio-model")
    assert "no-such-audio-model" in str(err.value) and "--model mel-efficientnet_lite0" in str(err.value)
    assert "\n" not in str(err.value)


# --- fit / load / predict ----------------------------------------------------------------------------------------

def test_linear_probe_run_directory_and_accuracy(tone_run):
    run, _ = tone_run
    assert {"config.yaml", "model", "metrics.json", "history.csv", "data.json"} <= {p.name for p in run.path.iterdir()}
    spec = json.loads((run.path / "model" / "model.json").read_text())
    assert spec["modality"] == "audio" and spec["backbone"]["adapter"] == "mel-cnn"
    assert spec["preprocess"]["sample_rate"] == 16000 and spec["preprocess"]["f_max"] == 4000  # 8 kHz clips: nothing above 4 kHz
    resolved = FitConfig.from_yaml(run.path / "config.yaml").resolved
    assert resolved["modality"] == "audio" and resolved["clip_seconds"] == 0.6 and "mel" in resolved["input"]
    assert run.metrics["accuracy"] >= 0.9, run.metrics["accuracy"]


def test_load_round_trip_and_predict(tone_run):
    run, data = tone_run
    paths = sorted(str(p) for p in data.rglob("*.*"))[:12]
    before = run.predict_proba(paths)
    again = hs.load(run.path)
    assert isinstance(again.model.backbone, MelBackbone)
    assert np.abs(before - again.predict_proba(paths)).max() < 1e-5
    rows = again.predict(str(data / "high" / "high_00.wav"), top_k=2)
    assert len(rows) == 1 and rows[0]["predictions"][0]["label"] == "high" and len(rows[0]["predictions"]) == 2
    assert len(again.predict([str(data / "low")])) == 12
    assert run.evaluate(str(data), save=False)["accuracy"] >= 0.9


def test_rerun_reuses_cached_features(tone_run, tmp_path):
    run, data = tone_run
    cache = run.path.parent / "cache"
    again = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "again"), cache_dir=str(cache), **FAST)
    assert again.metrics["feature_cache"]["computed"] == 0


def test_two_stage_runs_both_stages(tmp_path):
    data = make_tones(tmp_path / "tones", per_class=14, rate=8000)
    run = hs.fit(str(data), strategy="two-stage", out=str(tmp_path / "run"), **FAST)
    with open(run.path / "history.csv") as f:
        assert {row["stage"] for row in csv.DictReader(f)} == {"head", "finetune"}
    assert run.metrics["stages"]["finetune"]["trainable_params"] > 3_000_000
    assert run.metrics["accuracy"] >= 0.8, run.metrics["accuracy"]
    paths = sorted(str(p) for p in data.rglob("*.*"))[:6]
    assert np.abs(run.predict_proba(paths) - hs.load(run.path).predict_proba(paths)).max() < 1e-5


def test_cli_fit_and_predict(tones, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tones), "--strategy", "linear-probe", "--out", str(out), "--image-size", "64",
                 "--clip-seconds", "0.5", "--no-progress"]) == 0
    assert "audio" in capsys.readouterr().out
    assert main(["predict", str(out), str(tones / "mid" / "mid_01.flac"), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("input,label_1") and lines[1].split(",")[1] == "mid"


# --- the real FSDD spoken digits (tiny subset) -------------------------------------------------------------------

def test_fsdd_subset_linear_probe(tmp_path):
    root = needs_shared("fsdd")
    with open(root / "splits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    picked, seen = [], {}
    for r in rows:  # 10 train and 5 test clips per digit, from the official split
        key = (r["label"], r["split"])
        if seen.get(key, 0) < (10 if r["split"] == "train" else 5):
            seen[key] = seen.get(key, 0) + 1
            picked.append({**r, "path": str(root / r["path"])})
    manifest = tmp_path / "fsdd.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    run = hs.fit(str(manifest), strategy="linear-probe", out=str(tmp_path / "run"), progress=False)
    data = json.loads((run.path / "data.json").read_text())
    assert data["layout"] == "manifest" and data["sizes"]["test"] == 50 and data["native_sample_rate"] == 8000
    assert run.metrics["accuracy"] >= 0.4, f"{run.metrics['accuracy']} (chance is 0.1)"


def test_a_cover_image_does_not_make_an_audio_folder_image_data(tmp_path):
    folder = make_tones(tmp_path / "album", per_class=3)
    Image.new("RGB", (16, 16)).save(folder / "cover.jpg")
    assert MODALITIES.get("audio").claims(folder, None) and not MODALITIES.get("image").claims(folder, None)
    assert len(load_audio_data(folder).train) > 0, "the picture is not taken for a clip"
