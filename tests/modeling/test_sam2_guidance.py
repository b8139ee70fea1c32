"""SAM 2 / SAM 2.1 Hiera trunk as the guidance encoder (MODEL.GUIDANCE.ENCODER = "SAM2", Table 6)."""
import subprocess
import sys

import pytest
import torch
from fvcore.common.config import CfgNode

pytest.importorskip("sam2")

from aeroseg.config import get_cfg  # noqa: E402
from aeroseg.modeling import build_model  # noqa: E402
from aeroseg.modeling.guidance import (  # noqa: E402
    SAM2_VARIANTS,
    SAM2GuidanceEncoder,
    build_hiera_trunk,
    load_sam2_checkpoint,
)
from aeroseg.utils.errors import CheckpointError, ConfigError  # noqa: E402
from conftest import BASE_CONFIG, REPO, random_batch, tiny_cfg  # noqa: E402

# A tiny Hiera: 4 stages of 1, 1, 2, 1 blocks (8 -> 16 -> 32 -> 64 channels); at 64 px the
# stages run at 16x16, 8x8, 4x4 and 2x2 tokens. global_att_blocks are 0-based (sam2's convention).
TINY = dict(embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3],
            window_spec=[4, 2, 2, 2], window_pos_embed_bkg_spatial_size=[4, 4])


def _trunk(seed=0, **over):
    torch.manual_seed(seed)
    trunk = build_hiera_trunk("hiera_b+", dict(TINY, **over))
    with torch.no_grad():  # Hiera zero-inits its position embeddings; make every weight observable
        for p in trunk.parameters():
            p.normal_(0, 0.2)
    return trunk


def _sam2_cfg(*opts):
    cfg = tiny_cfg("MODEL.GUIDANCE.ENCODER", "SAM2", "MODEL.SAM2.INPUT_SIZE", "64", *opts)
    cfg.merge_from_other_cfg(CfgNode({"MODEL": {"SAM2": {"ARCH_OVERRIDES": dict(TINY)}}}))
    return cfg


def _images(n=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, size, size), generator=g).float() for _ in range(n)]


def test_tiny_aeroseg_with_sam2_guidance_trains_and_infers():
    torch.manual_seed(0)
    model = build_model(_sam2_cfg())
    guidance = model.guidance_encoder
    assert isinstance(guidance, SAM2GuidanceEncoder)
    assert guidance.tap_blocks == (2, 3, 5)  # default: 1/3, 2/3, 3/3 of the 5 blocks
    assert guidance.channels == [16, 32, 64] and guidance.strides == [8, 16, 32]
    model.train()
    losses = model(random_batch(2))
    assert set(losses) == {"loss_bce", "loss_sem"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in guidance.parameters())  # frozen trunk
    assert model.head.back_projection.mlp[-1].weight.shape[0] == 64  # reconstructs the last tap
    assert model.head.back_projection.mlp[-1].weight.grad is not None
    assert any(p.grad is not None for p in model.head.refinement.parameters())

    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 50, "width": 70}])
    assert out[0]["sem_seg"].shape == (6, 50, 70)
    assert torch.isfinite(out[0]["sem_seg"]).all()


def test_taps_are_the_outputs_of_the_chosen_blocks():
    trunk = _trunk()
    guidance = SAM2GuidanceEncoder(trunk, tap_blocks=(4, 2), frozen=True, input_size=64)
    images = _images()
    out = guidance(images)
    x = trunk.patch_embed(guidance.preprocess(images))
    x = x + trunk._get_pos_embed(x.shape[1:3])
    x2 = trunk.blocks[1](trunk.blocks[0](x))
    x4 = trunk.blocks[3](trunk.blocks[2](x2))
    torch.testing.assert_close(out["taps"][0], x4.permute(0, 3, 1, 2))  # order of tap_blocks kept
    torch.testing.assert_close(out["taps"][1], x2.permute(0, 3, 1, 2))
    assert out["target"] is out["taps"][-1]
    assert guidance.channels == [32, 16] == [t.shape[1] for t in out["taps"]]
    assert [t.shape[-1] for t in out["taps"]] == [64 // s for s in guidance.strides] == [4, 8]


def test_stage_end_taps_equal_hieras_own_forward():
    # sam2's Hiera.forward returns the output of every stage: our block loop (patch embedding +
    # resized positional embedding + blocks) must reproduce it exactly.
    trunk = _trunk()
    guidance = SAM2GuidanceEncoder(trunk, tap_blocks=[e + 1 for e in trunk.stage_ends], input_size=64)
    images = _images(1, size=80)
    with torch.no_grad():
        expected = trunk(guidance.preprocess(images))
        taps = guidance(images)["taps"]
    assert len(taps) == len(expected) == 4
    for got, want in zip(taps, expected):
        torch.testing.assert_close(got, want)


def test_preprocess_resizes_and_normalizes_with_imagenet_statistics():
    guidance = SAM2GuidanceEncoder(_trunk(), input_size=64)
    x = guidance.preprocess([torch.full((3, 40, 30), 255.0)])
    assert x.shape == (1, 3, 64, 64)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 10, 10], expected, rtol=1e-3, atol=1e-3)


def test_frozen_trunk_stays_in_eval_mode_without_gradients():
    guidance = SAM2GuidanceEncoder(_trunk(), tap_blocks=(1, 3), frozen=True, input_size=64)
    guidance.train()
    assert not guidance.trunk.training
    assert not any(p.requires_grad for p in guidance.parameters())
    assert not guidance(_images(1))["taps"][-1].requires_grad

    trainable = SAM2GuidanceEncoder(_trunk(), tap_blocks=(1, 3), frozen=False, input_size=64).train()
    assert trainable.trunk.training
    trainable(_images(1))["target"].sum().backward()
    assert trainable.trunk.blocks[2].mlp.layers[0].weight.grad is not None


@pytest.mark.parametrize("layout", ["release", "image_encoder", "trunk_only"])
def test_checkpoint_round_trip(tmp_path, layout):
    source = _trunk(seed=1)
    trunk_state = source.state_dict()
    if layout == "release":  # SAM 2 / 2.1 release file: the whole model under "model"
        state = {f"image_encoder.trunk.{k}": v for k, v in trunk_state.items()}
        state["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(4, 8, 1, 1)
        state["memory_encoder.fuser.layers.0.gamma"] = torch.zeros(4)
        state = {"model": state}
    elif layout == "image_encoder":
        state = {f"trunk.{k}": v for k, v in trunk_state.items()}
        state["neck.convs.0.conv.weight"] = torch.zeros(4, 8, 1, 1)
    else:
        state = dict(trunk_state)
    path = tmp_path / "sam2_tiny.pt"
    torch.save(state, path)
    target = _trunk(seed=2)
    load_sam2_checkpoint(target, str(path), "hiera_b+")
    loaded = target.state_dict()
    assert set(loaded) == set(trunk_state)
    for key, value in trunk_state.items():
        assert torch.equal(loaded[key], value), key


def test_checkpoint_through_the_config(tmp_path):
    source = _trunk(seed=3)
    path = tmp_path / "sam2.1_tiny.pt"
    torch.save({"model": {f"image_encoder.trunk.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(0)
    model = build_model(_sam2_cfg("MODEL.SAM2.CHECKPOINT", str(path)))
    for key, value in source.state_dict().items():
        assert torch.equal(model.guidance_encoder.trunk.state_dict()[key], value), key


def test_wrong_checkpoints_give_one_line_errors(tmp_path):
    target = _trunk()
    cases = {}
    cases["missing"] = (str(tmp_path / "missing.pt"), "does not exist")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 10)
    cases["garbage"] = (str(garbage), "could not be read")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    cases["not a dict"] = (str(listing), "is not a state dict of tensors")
    sam1 = tmp_path / "sam_vit_b.pth"  # a SAM (v1) checkpoint: no Hiera trunk inside
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, sam1)
    cases["sam1"] = (str(sam1), "holds no Hiera trunk weights")
    wider = tmp_path / "wider.pt"  # another variant's trunk
    torch.save({"model": {f"image_encoder.trunk.{k}": v for k, v in _trunk(embed_dim=12).state_dict().items()}},
               wider)
    cases["other variant"] = (str(wider), "does not match the Hiera trunk 'hiera_b\\+'.*shape mismatches")
    deeper = tmp_path / "deeper.pt"
    torch.save(_trunk(stages=[1, 1, 3, 1]).state_dict(), deeper)
    cases["more blocks"] = (str(deeper), "unexpected keys \\(e.g. blocks.5")
    for name, (path, message) in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_sam2_checkpoint(target, path, "hiera_b+")
        text = str(info.value)
        assert "\n" not in text and path in text, (name, text)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="MODEL.SAM2.VARIANT='hiera_xl'"):
        build_hiera_trunk("hiera_xl")
    with pytest.raises(ConfigError, match="unknown Hiera arguments \\['depth'\\]"):
        build_hiera_trunk("hiera_b+", dict(TINY, depth=3))
    with pytest.raises(ConfigError, match="window_spec"):
        build_hiera_trunk("hiera_b+", dict(TINY, window_spec=[4, 2]))
    with pytest.raises(ConfigError, match="global_att_blocks \\[7\\]"):
        build_hiera_trunk("hiera_b+", dict(TINY, global_att_blocks=[7]))
    with pytest.raises(ConfigError, match="MODEL.SAM2.TAP_BLOCKS=\\[0, 3\\]: expected distinct block numbers in 1..5"):
        SAM2GuidanceEncoder(_trunk(), tap_blocks=[0, 3], input_size=64)
    with pytest.raises(ConfigError, match="MODEL.SAM2.INPUT_SIZE=48 is not a positive multiple of 32"):
        SAM2GuidanceEncoder(_trunk(), input_size=48)


def test_missing_sam2_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2.modeling.backbones.hieradet", None)  # import now fails
    with pytest.raises(ConfigError, match="MODEL.GUIDANCE.ENCODER='SAM2' needs the sam2 package.*pip install sam2"):
        build_model(_sam2_cfg())


def test_aeroseg_imports_without_sam2():
    code = ("import sys; sys.modules['sam2'] = None\n"  # as if sam2 were not installed
            "import aeroseg.modeling, aeroseg.modeling.guidance as g\n"
            "assert 'SAM2' in g.GUIDANCE_ENCODER_REGISTRY\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_paper_hiera_b_plus_builds_on_the_meta_device():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    cfg.merge_from_list(["MODEL.CLIP.PRETRAINED", "", "MODEL.GUIDANCE.ENCODER", "SAM2",
                         "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "9"])
    assert cfg.MODEL.SAM2.VARIANT == "hiera_b+" and cfg.MODEL.SAM2.INPUT_SIZE == 1024
    with torch.device("meta"):
        model = build_model(cfg)
    guidance = model.guidance_encoder
    assert isinstance(guidance, SAM2GuidanceEncoder)
    assert len(guidance.trunk.blocks) == 24 and guidance.tap_blocks == (8, 16, 24)
    assert sum(p.numel() for p in guidance.parameters()) == 68_675_712  # Hiera-B+ trunk (no FPN neck)
    assert not any(p.requires_grad for p in guidance.parameters())
    assert guidance.channels == [448, 448, 896] and guidance.strides == [16, 16, 32]
    assert model.head.back_projection is not None  # L_sem target: the last tap (896 channels)
    with torch.no_grad():
        taps = guidance([torch.zeros(3, 256, 256, device="meta")])["taps"]
    assert [tuple(t.shape) for t in taps] == [(1, 448, 64, 64), (1, 448, 64, 64), (1, 896, 32, 32)]


def test_variant_table_matches_sam2s_configs():
    # The released configs (sam2 and sam2.1 alike) name only what differs from Hiera's defaults.
    import importlib.resources
    import inspect

    import yaml
    from sam2.modeling.backbones.hieradet import Hiera

    defaults = {k: v.default for k, v in inspect.signature(Hiera).parameters.items()}
    root = importlib.resources.files("sam2") / "configs"
    size = {"hiera_t": "t", "hiera_s": "s", "hiera_b+": "b+", "hiera_l": "l"}
    for variant, args in SAM2_VARIANTS.items():
        for name in (f"sam2/sam2_hiera_{size[variant]}.yaml", f"sam2.1/sam2.1_hiera_{size[variant]}.yaml"):
            trunk_cfg = yaml.safe_load((root / name).read_text())["model"]["image_encoder"]["trunk"]
            for key, value in args.items():
                want = trunk_cfg.get(key, defaults[key])
                want = tuple(want) if isinstance(want, (list, tuple)) else want
                assert value == want, (name, key, value, want)
