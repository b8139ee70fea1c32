"""Dense CLIP features against CAT-Seg's ``forward_dense`` (golden fixture, no CAT-Seg needed).

The fixture is written by ``tools/dev/reference_fixtures_clip.py`` from CAT-Seg's
``model_vpt.py``; here the same weights go into an open_clip tower and through our backbone.
"""

import open_clip
import pytest
import torch

from aeroseg.modeling.backbone import CLIPBackbone, build_clip_model, split_qkv_for_finetuning
from conftest import FIXTURES

FIXTURE = FIXTURES / "dense_clip.pt"


def _ours(fixture, dense_features: str, split_qkv: bool) -> CLIPBackbone:
    c = fixture["config"]
    # QuickGELU, as OpenAI CLIP and CAT-Seg's copy of it.
    overrides = {"embed_dim": c["output_dim"],
                 "vision_cfg": {"layers": c["layers"], "width": c["width"],
                                "head_width": c["width"] // c["heads"], "patch_size": c["patch_size"]},
                 "text_cfg": {"layers": 1, "width": 16, "heads": 2}}
    clip = build_clip_model("ViT-B-16-quickgelu", "", c["image_size"], overrides)
    clip.visual.load_state_dict(fixture["visual_state_dict"], strict=True)
    if split_qkv:  # the re-parametrization used for q/v fine-tuning must not change the outputs
        split_qkv_for_finetuning(clip, trainable=("q", "v"))
    backbone = CLIPBackbone(clip, open_clip.get_tokenizer("ViT-B-16"), image_size=c["image_size"],
                            pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, rotations=(0,),
                            dense_features=dense_features)
    return backbone.eval()


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("split_qkv", [False, True])
def test_value_dense_features_match_catseg(fixture, split_qkv):
    ours = _ours(fixture, "value", split_qkv)
    with torch.no_grad():
        dense = ours(fixture["input"])["dense"][:, 0]  # (N, D, h, w)
    n, d, h, w = dense.shape
    reference = fixture["dense"][:, 1:]  # (N, h*w, D), CAT-Seg's class token dropped
    assert reference.shape == (n, h * w, d)
    ours_tokens = dense.flatten(2).transpose(1, 2)
    torch.testing.assert_close(ours_tokens, reference, rtol=0, atol=1e-5)


def test_fixture_discriminates_the_two_dense_modes(fixture):
    # The ordinary last-block tokens are far from CAT-Seg's dense features: the comparison above
    # would catch a "value" path that silently fell back to them.
    ours = _ours(fixture, "tokens", split_qkv=False)
    with torch.no_grad():
        dense = ours(fixture["input"])["dense"][:, 0].flatten(2).transpose(1, 2)
    assert (dense - fixture["dense"][:, 1:]).abs().max() > 1e-2


def test_fixture_is_small():
    assert FIXTURE.stat().st_size < 300 * 1024
