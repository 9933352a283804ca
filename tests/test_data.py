import re

import numpy as np

import pytest

import headstart as hs
from headstart.data.images import collect_image_files, load_image_data, load_labeled_items
from headstart.data.sizing import choose_preprocess
from headstart.backbones.base import Preprocess
from headstart.errors import UserError

from conftest import make_images


def test_one_folder_is_split_stratified(tiny_images):
    data = load_image_data(tiny_images, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert data.layout == "class-folders" and data.classes == ["blue", "green", "red"]
    assert len(data.train) + len(data.val) + len(data.test) == 36
    for split in (data.val, data.test):
        assert sorted({y for _, y in split}) == [0, 1, 2], "every class in every split"
    assert not set(data.train) & set(data.val) and not set(data.train) & set(data.test)
    again = load_image_data(tiny_images, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert again.test == data.test, "same seed, same split"
    assert data.info["native_size"] == 32


def test_imagefolder_splits_are_used_as_given(tmp_path):
    make_images(tmp_path / "d" / "train", per_class=6)
    make_images(tmp_path / "d" / "val", per_class=2, seed=1)
    make_images(tmp_path / "d" / "test", per_class=3, seed=2)
    data = load_image_data(tmp_path / "d")
    assert data.layout == "splits"
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 9)



def test_a_class_in_val_or_test_but_not_in_train_says_what_to_do(tmp_path):
    make_images(tmp_path / "d" / "train", per_class=4, classes=("red", "blue"))
    make_images(tmp_path / "d" / "valid", per_class=2, seed=1, classes=("red", "blue", "green"))
    with pytest.raises(UserError) as err:
        load_image_data(tmp_path / "d")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "d" / "valid" / "green")), "names the folder"
    assert "no folder in" in message and str(tmp_path / "d" / "train" / "green") in message, "says what to add"
    assert "model's classes" not in message, "no model exists yet at fit time"

def test_manifest_csv(tmp_path):
    make_images(tmp_path / "imgs", per_class=5)
    rows = ["path,label"] + [f"imgs/{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = load_image_data(tmp_path / "m.csv", val_fraction=0.2, test_fraction=0.2)
    assert data.layout == "manifest" and data.classes == ["blue", "red"]
    assert len(data.train) + len(data.val) + len(data.test) == 10


def test_a_manifest_labels_from_the_column_named_by_label_column(tmp_path, capsys):
    make_images(tmp_path / "imgs", per_class=5)
    rows = ["path,species"] + [f"imgs/{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = load_image_data(tmp_path / "m.csv", val_fraction=0.2, test_fraction=0.2, label_column="species")
    assert data.layout == "manifest" and data.classes == ["blue", "red"]
    with pytest.raises(UserError, match="a manifest needs columns path,label "):
        load_image_data(tmp_path / "m.csv")
    items, _, _ = load_labeled_items(tmp_path / "m.csv", ["blue", "red"], column="species")  # evaluate, as fitted
    assert sorted(y for _, y in items) == [0] * 5 + [1] * 5
    load_image_data(tmp_path / "imgs", label_column="species")  # class folders: the folder names are the classes
    assert "--label-column species names a CSV manifest's column" in capsys.readouterr().err


def test_manifest_of_missing_files_names_the_first_and_why(tmp_path):
    make_images(tmp_path / "imgs", per_class=5)
    # paths relative to the working directory rather than to the manifest's folder: none of them is found
    rows = ["path,label"] + [f"elsewhere/{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    first = tmp_path / "elsewhere" / "red" / "red_000.png"
    with pytest.raises(UserError, match=re.escape(f"no readable training images (10 unreadable, first {first}: FileNotFoundError")):
        load_image_data(tmp_path / "m.csv", val_fraction=0.2, test_fraction=0.2)


def test_manifest_with_unknown_columns_is_one_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(UserError, match="path,label"):
        load_image_data(tmp_path / "m.csv")


def test_corrupt_image_is_skipped_and_listed(tiny_images):
    bad = tiny_images / "red" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    truncated = tiny_images / "blue" / "truncated.png"
    truncated.write_bytes((tiny_images / "blue" / "blue_000.png").read_bytes()[:60])
    data = load_image_data(tiny_images)
    skipped = {p for p, _ in data.skipped}
    assert skipped == {str(bad), str(truncated)}
    assert len(data.train) + len(data.val) + len(data.test) == 36
    assert data.summary()["skipped"][0]["reason"]


def test_empty_class_is_one_clear_error(tiny_images):
    (tiny_images / "purple").mkdir()
    with pytest.raises(UserError, match="'purple' has no readable training images"):
        load_image_data(tiny_images)



def test_wide_and_rotated_images_decode_as_a_viewer_shows_them(tmp_path):
    """Pillow's own RGB conversion turns a 16-bit PNG black and white and a 0-1 float TIFF black; a camera's EXIF
    rotation is applied."""
    from PIL import Image

    from headstart.data.images import open_rgb

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(24, 40)).astype(np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "unit.tiff")
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "bytes.tiff")
    Image.fromarray(grey.astype(np.int32), mode="I").save(tmp_path / "int.tiff")
    for name in ("wide.png", "unit.tiff", "bytes.tiff", "int.tiff"):
        rgb = np.asarray(open_rgb(str(tmp_path / name))).astype(int)
        assert rgb.shape == (24, 40, 3) and np.abs(rgb - grey[..., None]).max() <= 1, name

    photo = np.zeros((20, 30, 3), dtype=np.uint8)
    photo[:, :10] = 255  # a bright left edge, stored sideways: orientation 6 means "rotate 90 degrees clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(open_rgb(str(tmp_path / "phone.jpg")))
    assert upright.shape == (30, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50, "the left edge is now the top"

    cutout = np.zeros((10, 10, 4), dtype=np.uint8)  # transparent black, a red square in the middle
    cutout[3:7, 3:7] = (220, 20, 20, 255)
    Image.fromarray(cutout, mode="RGBA").save(tmp_path / "cutout.png")
    Image.fromarray(cutout, mode="RGBA").convert("P").save(tmp_path / "palette.png", transparency=0)
    for name in ("cutout.png", "palette.png"):
        rgb = np.asarray(open_rgb(str(tmp_path / name)))
        assert (rgb[0, 0] == 255).all() and rgb[5, 5, 0] > 200 and rgb[5, 5, 1] < 60, name  # on white, as viewers show it


def test_wrapper_folders_of_an_unpacked_archive_are_looked_through(tmp_path):
    make_images(tmp_path / "photos" / "photos" / "data", per_class=4)  # photos/photos/data/<class>/*
    (tmp_path / "photos" / "__MACOSX").mkdir()
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"junk")
    data = load_image_data(tmp_path / "photos")
    assert data.classes == ["blue", "green", "red"] and data.layout == "class-folders in photos/data"
    make_images(tmp_path / "wrapped" / "inner" / "train", per_class=4)
    make_images(tmp_path / "wrapped" / "inner" / "test", per_class=2, seed=1)
    assert load_image_data(tmp_path / "wrapped").layout == "splits in inner"
    items, _, _ = load_labeled_items(tmp_path / "wrapped", ["blue", "green", "red"])
    assert len(items) == 6, "evaluate reads the wrapped test split too"

def test_single_class_is_one_clear_error(tmp_path):
    make_images(tmp_path / "one", classes=("red",))
    assert load_image_data(tmp_path / "one").classes == ["red"]  # readable: an update's new class comes alone
    with pytest.raises(UserError, match="only one class .'red'.; a classifier needs at least two .* headstart update RUN"):
        hs.fit(str(tmp_path / "one"), out=str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_no_images_is_one_clear_error(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="no readable training images"):
        load_image_data(tmp_path / "empty")


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_data(tmp_path / "nope")


def test_labeled_items_reject_unknown_class(tiny_images):
    with pytest.raises(UserError, match="not one of the model's classes .*move that folder out .*headstart update RUN DATA"):
        load_labeled_items(tiny_images, ["red", "green"])


def test_collect_image_files_from_files_and_folders(tiny_images):
    one = str(tiny_images / "red" / "red_000.png")
    files = collect_image_files([one, tiny_images / "blue"])
    assert files[0] == one and len(files) == 13


@pytest.mark.parametrize("native,expected", [(8, 96), (20, 128), (32, 160), (50, 224), (500, 224)])
def test_input_size_rule(native, expected):
    default = Preprocess(224, (0.5,) * 3, (0.5,) * 3)
    pre, reason = choose_preprocess(default, native, None)
    assert pre.input_size == expected and "auto" in reason
    assert pre.crop_pct == (1.0 if native < expected else 0.875)
    assert choose_preprocess(default, native, 160)[0].input_size == 160


def test_input_size_on_a_gpu_is_the_backbones_own():
    default = Preprocess(224, (0.5,) * 3, (0.5,) * 3)
    pre, reason = choose_preprocess(default, 32, None, gpu=True)
    assert pre.input_size == 224 and "GPU" in reason and pre.crop_pct == 1.0  # 32-px images are resized whole
    assert choose_preprocess(default, 32, 96, gpu=True)[0].input_size == 96, "a requested size still wins"


def test_input_size_of_a_body_trained_below_the_floor_says_so():
    pre, reason = choose_preprocess(Preprocess(64, (0.5,) * 3, (0.5,) * 3), 8, None)  # a run: body fitted at 64 px
    assert pre.input_size == 64 and "64 px" in reason and "[96" not in reason


def test_a_macos_zips_resource_folder_is_no_class(tmp_path):
    make_images(tmp_path / "zip")
    for name in ("red", "blue"):  # what unzip leaves beside the classes: AppleDouble stubs named like the images
        (tmp_path / "zip" / "__MACOSX" / name).mkdir(parents=True)
        (tmp_path / "zip" / "__MACOSX" / name / f"._{name}_000.png").write_bytes(b"\x00\x05\x16\x07")
    assert load_image_data(tmp_path / "zip").classes == ["blue", "green", "red"]


def test_a_manifest_without_its_header_names_says_what_to_write(tmp_path):
    from headstart.config import FitConfig
    from headstart.data import resolve_modality

    files = sorted(make_images(tmp_path / "imgs").rglob("*.png"))
    rows = "".join(f"{f},{f.parent.name}\n" for f in files)
    (tmp_path / "named.csv").write_text("filename,class\n" + rows)
    (tmp_path / "bare.csv").write_text(rows)
    with pytest.raises(UserError, match=r"name the manifest's columns path,label \(found: filename, class; 'filename' holds"):
        resolve_modality(FitConfig(data=str(tmp_path / "named.csv")))
    with pytest.raises(UserError, match="its first row is a file name, not a header"):
        resolve_modality(FitConfig(data=str(tmp_path / "bare.csv")))


def _classes_data(counts: list[int], names=None, task_chosen="auto", **info):
    from headstart.data.base import LabeledData

    names = names or [f"c{i}" for i in range(len(counts))]
    items = [(f"x{i}-{j}", i) for i, n in enumerate(counts) for j in range(n)]
    return LabeledData("image", "classification", names, items, [], [], "manifest", info=info, task_chosen=task_chosen)


def test_mostly_one_example_classes_are_refused_saying_what_the_labels_look_like(tmp_path):
    from headstart.data.base import check_classes

    numbers = [f"{0.1 * i:.3f}" for i in range(12)]
    with pytest.raises(UserError, match="d.csv: 10 of 12 classes have one example.*all numbers: pass --task regression"):
        check_classes(_classes_data([1] * 10 + [3, 3], numbers), "d.csv")
    with pytest.raises(UserError, match=r"12 of 12 classes have one example.*check --label-column \(it read 'text'\)"):
        check_classes(_classes_data([1] * 12, label_column="text"), "t.csv")
    check_classes(_classes_data([2, 2, 2]), "small.csv")  # 3 classes of 2: a legitimate small set
    check_classes(_classes_data([1] * 9), "few.csv")  # under 10 classes: too few to tell a label mistake
    check_classes(_classes_data([1] * 6 + [5] * 6), "half.csv")  # rare classes beside common ones, not most
    check_classes(_classes_data([1] * 12, task_chosen="classification"), "asked.csv")  # --task classification: as told
    check_classes(_classes_data([1] * 12, task_chosen="multilabel"), "sets.csv")  # label sets are split into labels


def test_a_numeric_manifest_fitted_without_a_task_is_refused_before_training(tmp_path):
    files = sorted(make_images(tmp_path / "imgs", per_class=5).rglob("*.png"))
    (tmp_path / "values.csv").write_text("path,label\n" + "".join(f"{f},{i * 0.5:.2f}\n" for i, f in enumerate(files)))
    with pytest.raises(UserError, match="15 of 15 classes have one example.*pass --task regression"):
        hs.fit(str(tmp_path / "values.csv"), out=str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
