import pytest
import torch
from safetensors.torch import save_file

from headstart.backbones import bundled, create_backbone
from headstart.backbones.weights import load_body_weights
from headstart.data.images import eval_transform
from headstart.errors import UserError


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_bundled_weights_are_real_imagenet_weights(name):
    """The unchanged ImageNet classifier recognises scikit-image's cat and coffee cup."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    model = bundled.imagenet_classifier("efficientnet_lite0")
    backbone = create_backbone("efficientnet_lite0")
    x = eval_transform(backbone.preprocess)(Image.fromarray(getattr(skimage_data, name)()))[None]
    with torch.no_grad():
        top = int(model(x).argmax())
    expected = {"chelsea": range(281, 286), "coffee": (967, 968)}[name]
    assert top in expected, f"{name} classified as ImageNet class {top}"


def test_bundled_backbone_contract():
    backbone = create_backbone("efficientnet_lite0")
    assert backbone.feature_dim == 1280
    assert backbone.preprocess.input_size == 224
    assert backbone.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    groups = backbone.layer_groups()
    assert len(groups) == 8  # stem, then 7 block stages (timm puts the head conv with the last)
    assert groups[0][0] is backbone.model.conv_stem
    assert any(m is backbone.model.conv_head for m in groups[-1])
    seen = [id(p) for g in groups for m in g for p in m.parameters(recurse=False)]
    assert len(seen) == len(set(seen)) == len(list(backbone.parameters())), "every parameter in exactly one group"
    out = backbone.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1280)


def test_order_mapping_fails_loudly_on_shape_mismatch():
    import timm

    model = timm.create_model("efficientnet_lite0", num_classes=0)
    state = {f"k{i}": v.clone() for i, v in enumerate(model.state_dict().values())}
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    with pytest.raises(UserError, match="shape"):
        load_body_weights(model, state, source="bad.pth")


def test_unknown_timm_model_is_one_clear_error():
    with pytest.raises(UserError, match="timm has no model"):
        create_backbone("timm:resnet_does_not_exist")


def test_unknown_backbone_lists_choices():
    with pytest.raises(UserError, match="efficientnet_lite0"):
        create_backbone("mystery_net")


def test_offline_timm_download_names_model_and_alternatives(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise ConnectionError("no route to host")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError) as err:
        create_backbone("timm:resnet18")
    message = str(err.value)
    assert "'resnet18'" in message and "--weights" in message and "efficientnet_lite0" in message
    assert "\n" not in message


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_file_for_timm_model(tmp_path, fmt):
    import timm

    source = timm.create_model("resnet18", num_classes=0)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    backbone = create_backbone("timm:resnet18", weights=str(path))
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert backbone.feature_dim == 512


class Evil:
    """Any class a pickle could instantiate: weights_only loading must refuse it."""


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(UserError, match="cannot read weights"):
        create_backbone("timm:resnet18", weights=str(path))
