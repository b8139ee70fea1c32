"""AerOSeg's head modules against tensors computed by CAT-Seg / OVRS (golden fixtures).

The fixtures were written by ``tools/dev/make_reference_fixtures.py`` from the reference code
(which is not needed here): each holds the kwargs to build our module, the reference weights
already mapped to our names, the inputs and the reference output.
"""
import os

import pytest
import torch

from aeroseg.modeling.head.class_refinement import ClassRefinementBlock
from aeroseg.modeling.head.decoder import AttentionAwareUpsampling
from aeroseg.modeling.head.refinement import CorrelationRefinementBlock
from aeroseg.modeling.head.spatial_refinement import SpatialRefinementBlock
from conftest import FIXTURES as CONFTEST_FIXTURES

FIXTURES = str(CONFTEST_FIXTURES)
TOLERANCE = 1e-5


def _load(name):
    return torch.load(os.path.join(FIXTURES, f"{name}.pt"), weights_only=True)


def _build(cls, fixture):
    module = cls(**fixture["kwargs"]).eval()
    module.load_state_dict(fixture["state_dict"], strict=True)
    return module


def _assert_matches(out, expected):
    assert out.shape == expected.shape
    err = (out - expected).abs().max().item()
    assert err <= TOLERANCE, f"max |ours - reference| = {err:.3g}"


@pytest.mark.parametrize("name", ["catseg_class_transformer_pad", "catseg_class_transformer_nopad"])
def test_class_refinement_matches_catseg_class_transformer_layer(name):
    fx = _load(name)
    block = _build(ClassRefinementBlock, fx)
    with torch.no_grad():
        _assert_matches(block(fx["inputs"]["x"], fx["inputs"]["text"]), fx["output"])
    if fx["kwargs"]["pad_len"]:
        block.materialize_padding = True
        with torch.no_grad():
            _assert_matches(block(fx["inputs"]["x"], fx["inputs"]["text"]), fx["output"])


def test_spatial_refinement_matches_catseg_swin_wrapper():
    fx = _load("catseg_swin_guidance")
    block = _build(SpatialRefinementBlock, fx)
    with torch.no_grad():
        _assert_matches(block(fx["inputs"]["x"], fx["inputs"]["guidance"]), fx["output"])


def test_refinement_block_matches_catseg_aggregator_layer():
    fx = _load("catseg_aggregator_layer")
    block = _build(CorrelationRefinementBlock, fx)
    i = fx["inputs"]
    with torch.no_grad():
        _assert_matches(block(i["x"], i["spatial_guidance"], i["text_guidance"]), fx["output"])


def test_decoder_stage_matches_ovrs_attention_aware_up():
    fx = _load("ovrs_up")
    stage = _build(AttentionAwareUpsampling, fx)
    with torch.no_grad():
        _assert_matches(stage.fuse(fx["inputs"]["x"], fx["inputs"]["guidance"]), fx["output"])


def test_fixtures_stay_small():
    total = sum(os.path.getsize(os.path.join(FIXTURES, f)) for f in os.listdir(FIXTURES))
    assert total < 2 * 1024 * 1024, f"tests/fixtures holds {total / 1e6:.2f} MB (limit 2 MB)"
