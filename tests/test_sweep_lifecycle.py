"""A model's life after its first fit, as a user drives it: pretrain, reuse with run:DIR, update, --adapt-to, setfit.

Each test holds a mistake a user makes (a pretrain run given to update, text data for an image run, a typo in
--adapt-to) or a summary that must tell the truth, on tiny data: seconds each.
"""
import pytest

import headstart as hs
from headstart.errors import UserError

from conftest import make_images


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    data = make_images(root / "colors", per_class=8)
    run = hs.fit(str(data), strategy="linear-probe", out=str(root / "run"), image_size=32, progress=False)
    return run, root, data


def test_pretrain_from_a_run_names_that_run_as_the_body_to_beat(image_run, capsys):
    run, root, data = image_run
    pre = hs.pretrain(str(data), model=f"run:{run.path}", out=str(root / "pre"), image_size=32, epochs=1, batch_size=8,
                      progress=False)
    out = capsys.readouterr().out
    assert f"from run:{run.path}" in out
    # the comparison that tells whether pre-training helped is against the run's body, not ImageNet's
    assert f"--models run:{run.path},run:{pre.path}" in out and "--models efficientnet_lite0" not in out


def test_update_refuses_a_pretrained_body_by_name(image_run, tmp_path):
    run, root, data = image_run
    pre = hs.pretrain(str(data), out=str(tmp_path / "pre"), image_size=32, epochs=1, batch_size=8, progress=False)
    # it read the pretrain's unlabeled inputs as the old labeled data and failed on them
    with pytest.raises(UserError, match=f"{pre.path} is a pre-trained body .* --model run:{pre.path}"):
        hs.update(pre.path, str(data), out=str(tmp_path / "updated"), progress=False)
    assert not (tmp_path / "updated").exists()


def test_update_refuses_new_data_of_another_kind(image_run, tmp_path):
    run, root, _ = image_run
    texts = tmp_path / "reviews.csv"
    texts.write_text("text,label\n" + "".join(f"a fine review {i},{'good' if i % 2 else 'bad'}\n" for i in range(20)))
    # read as an image manifest, it failed with "a manifest needs columns path,label"
    with pytest.raises(UserError, match=f"reviews.csv holds text data, but {run.path} is a model of image data"):
        hs.update(run.path, str(texts), out=str(tmp_path / "updated"), progress=False)


def test_update_refuses_a_negative_replay(image_run, tmp_path):
    run, _, data = image_run
    with pytest.raises(UserError, match="--replay is a number of old training rows to rehearse, 0 or more, not -5"):
        hs.update(run.path, str(data), out=str(tmp_path / "updated"), replay=-5, progress=False)  # was read as 0


def test_a_typo_in_adapt_to_fails_before_the_fit_trains(tiny_images, tmp_path):
    with pytest.raises(UserError, match="--adapt-to phone_photo does not exist"):
        hs.fit(str(tiny_images), adapt_to="phone_photo", out=str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()  # it failed after training, leaving a half-written folder
    with pytest.raises(UserError, match="--adapt-to target/missing.csv does not exist"):
        hs.fit(str(tiny_images), adapt_to=[str(tiny_images), "target/missing.csv"], out=str(tmp_path / "run"),
               progress=False)


def test_adapt_to_texts_themselves_are_not_taken_for_missing_paths():
    from headstart.adaptation import check_target_paths

    check_target_paths([f"review{i}" for i in range(20)] + ["a phone review with spaces"])  # texts, not paths


def test_setfit_with_one_example_per_class_says_it_had_no_same_class_pairs(tmp_path):
    for split, n in (("train", 1), ("val", 2)):
        make_images(tmp_path / "data" / split, classes=("red", "blue"), per_class=n, seed=len(split))
    run = hs.fit(str(tmp_path / "data"), strategy="setfit", out=str(tmp_path / "run"), image_size=32, refit="never",
                 progress=False)
    note = run.metrics["stages"]["pairs"]
    assert note["positive_pairs"] == 0 and "no same-class pairs" in note["summary"]


def test_update_warns_of_a_new_class_spelled_like_an_old_one(image_run, tmp_path, capsys):
    run, _, _ = image_run
    new = make_images(tmp_path / "new", classes=("red",), per_class=6, seed=7)
    (new / "red").rename(new / "Red")
    updated = hs.update(run.path, str(new), out=str(tmp_path / "updated"), strategy="linear-probe", progress=False)
    assert updated.metrics["update"]["classes_added"] == ["Red"]  # learned apart, as given ...
    assert "classes 'red', 'Red' differ only in case or spacing" in capsys.readouterr().err  # ... and said (was silent)


def test_pretrain_reads_an_input_reached_twice_once(tmp_path, capsys):
    inputs = make_images(tmp_path / "unlabeled", per_class=4)
    run = hs.pretrain([str(inputs), str(inputs / "red"), f"{inputs}/./blue"], out=str(tmp_path / "pre"), image_size=32,
                      epochs=1, batch_size=8, progress=False)
    # the red and blue squares were each trained on twice, and could be held out and trained on at once
    assert run.metrics["duplicates_dropped"] == 8
    assert sum(run.metrics["inputs"].values()) == 12
    assert "8 repeated input(s) dropped" in capsys.readouterr().out


def test_adapt_to_names_the_target_inputs_it_could_not_read(tiny_images, tmp_path, capsys):
    target = make_images(tmp_path / "phone", per_class=7, seed=9)
    (target / "red" / "broken.png").write_bytes(b"not an image")
    run = hs.fit(str(tiny_images), strategy="linear-probe", adapt_to=str(target), out=str(tmp_path / "run"),
                 image_size=32, progress=False)
    adaptation = run.metrics["adaptation"]
    assert adaptation["skipped"] == 1 and adaptation["unreadable"][0]["where"].endswith("broken.png")  # was a count
    assert "--adapt-to: 1 unreadable input(s) skipped" in capsys.readouterr().err


def test_pretrain_refuses_a_batch_of_one(tmp_path):
    inputs = make_images(tmp_path / "unlabeled", per_class=4)
    with pytest.raises(UserError, match="--batch-size 1: .* a batch of one has none"):  # trained on a loss of 0
        hs.pretrain(str(inputs), out=str(tmp_path / "pre"), batch_size=1, progress=False)
    assert not (tmp_path / "pre").exists()


def test_run_dir_says_what_a_folder_of_another_command_holds(tmp_path, tiny_images):
    (tmp_path / "rank").mkdir()
    (tmp_path / "rank" / "rank.json").write_text("[]")
    (tmp_path / "tune" / "best" / "model").mkdir(parents=True)
    (tmp_path / "tune" / "best" / "model" / "model.json").write_text("{}")
    # each said only "no headstart run there"
    with pytest.raises(UserError, match="it holds a rank's scores, not a model"):
        hs.fit(str(tiny_images), model=f"run:{tmp_path / 'rank'}", out=str(tmp_path / "a"), progress=False)
    with pytest.raises(UserError, match=f"it is a tune's folder: its best trial, refit, is run:{tmp_path / 'tune' / 'best'}"):
        hs.fit(str(tiny_images), model=f"run:{tmp_path / 'tune'}", out=str(tmp_path / "b"), progress=False)


def test_pretrain_refuses_inputs_of_another_kind_than_its_body(tmp_path):
    images = make_images(tmp_path / "unlabeled", per_class=4)
    texts = tmp_path / "texts.csv"
    texts.write_text("text\n" + "".join(f"a sentence number {i}\n" for i in range(12)))
    # read as the body's kind, each was "too few readable inputs" (a folder's name one text; no image in a CSV)
    with pytest.raises(UserError, match="texts.csv holds text data, but --model efficientnet_lite0 reads image"):
        hs.pretrain(str(texts), model="efficientnet_lite0", out=str(tmp_path / "a"), progress=False)
    with pytest.raises(UserError, match="unlabeled holds image data, but --model minilm-l6 reads text"):
        hs.pretrain(str(images), model="minilm-l6", out=str(tmp_path / "b"), progress=False)
    with pytest.raises(UserError, match="texts.csv holds text inputs, but --model efficientnet_lite0 reads image"):
        hs.pretrain([str(images), str(texts)], model="efficientnet_lite0", out=str(tmp_path / "c"), progress=False)
