import pytest
import torch

from aeroseg.config import get_cfg
from aeroseg.modeling import build_model, count_parameters
from aeroseg.utils.errors import ConfigError
from conftest import BASE_CONFIG, build_tiny, random_batch


def test_training_returns_both_losses_and_inference_the_sem_seg_contract():
    model = build_tiny()
    model.train()
    losses = model(random_batch())
    assert set(losses) == {"loss_bce", "loss_sem"}
    assert all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    model.eval()
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "height": 100, "width": 140}, {"image": image}])
    assert out[0]["sem_seg"].shape == (6, 100, 140) and out[1]["sem_seg"].shape == (6, 50, 70)
    assert 0 <= out[0]["sem_seg"].min() and out[0]["sem_seg"].max() <= 1


def test_no_back_projection_loss_when_target_is_none():
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "NONE")
    assert model.back_projection is None
    model.train()
    assert set(model(random_batch())) == {"loss_bce"}


@pytest.mark.parametrize("target,channels", [("CLIP", 32), ("RGB", 3 * 8 * 8)])
def test_other_back_projection_targets(target, channels):
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", target)
    assert model.back_projection.mlp[-1].out_features == channels
    model.train()
    assert torch.isfinite(model(random_batch())["loss_sem"])


def test_clip_guidance_baseline_builds_without_sam():
    model = build_tiny("MODEL.GUIDANCE.ENCODER", "CLIP", "MODEL.CLIP.GUIDANCE_LAYERS", "[0, 1]",
                       "MODEL.AEROSEG.BACK_PROJECTION_TARGET", "NONE")
    assert not any("encoder.blocks" in n for n, _ in model.named_parameters())
    model.train()
    assert set(model(random_batch())) == {"loss_bce"}
    with pytest.raises(ConfigError, match="needs MODEL.GUIDANCE.ENCODER='SAM'"):
        build_tiny("MODEL.GUIDANCE.ENCODER", "CLIP", "MODEL.CLIP.GUIDANCE_LAYERS", "[0, 1]")
    with pytest.raises(ConfigError, match=r"MODEL.CLIP.GUIDANCE_LAYERS=\[3, 7\]: blocks \[3, 7\] do not exist"):
        build_tiny("MODEL.GUIDANCE.ENCODER", "CLIP", "MODEL.AEROSEG.BACK_PROJECTION_TARGET", "NONE")


def test_permuted_vocabulary_permutes_the_output():
    model = build_tiny()
    model.eval()
    batch = random_batch(1)
    names = model.vocabulary
    perm = [3, 0, 5, 1, 4, 2]
    with torch.no_grad():
        ref = model(batch)[0]["sem_seg"]
        model.set_vocabulary([names[i] for i in perm])
        permuted = model(batch)[0]["sem_seg"]
    torch.testing.assert_close(permuted, ref[perm], rtol=1e-4, atol=1e-5)


def test_text_embeddings_are_cached_until_the_vocabulary_changes(monkeypatch):
    model = build_tiny()
    model.eval()
    calls = []
    original = model.clip_backbone.encode_text
    monkeypatch.setattr(model.clip_backbone, "encode_text", lambda names: calls.append(list(names)) or original(names))
    batch = random_batch(1)
    with torch.no_grad():
        model(batch)
        model(batch)
        assert len(calls) == 1
        model.set_vocabulary(model.vocabulary)  # same names: nothing to recompute
        model(batch)
        assert len(calls) == 1
        model.set_vocabulary(["ship", "plane"])
        model(batch)
        model(batch)
    assert calls == [["building", "road", "tree", "water", "low vegetation", "car"], ["ship", "plane"]]
    # in training the text encoder is being tuned: embeddings are recomputed with gradients
    model.set_vocabulary(["building", "road", "tree", "water", "low vegetation", "car"])
    model.train()
    model(random_batch())
    model(random_batch())
    assert len(calls) == 4


def test_vocabulary_errors():
    model = build_tiny("MODEL.AEROSEG.VOCABULARY", "[]", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")
    assert model.vocabulary == []
    with pytest.raises(ConfigError, match="no vocabulary"):
        model(random_batch())
    with pytest.raises(ValueError, match="duplicate"):
        model.set_vocabulary(["a", "b", "a"])
    with pytest.raises(TypeError):
        model.set_vocabulary("ship")
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        build_tiny("MODEL.AEROSEG.VOCABULARY", "[]")


def test_training_label_outside_vocabulary_is_reported():
    model = build_tiny()
    model.train()
    batch = random_batch(1)
    batch[0]["sem_seg"][0, 0] = 7
    with pytest.raises(ValueError, match="label value 7 is outside the vocabulary of 6 classes"):
        model(batch)


def _grad_norms(module):
    return {n: (p.grad.abs().sum().item() if p.grad is not None else None) for n, p in module.named_parameters()}


def test_gradients_reach_exactly_the_intended_parameters():
    model = build_tiny()
    model.train()
    losses = model(random_batch())
    sum(losses.values()).backward()
    sam = _grad_norms(model.guidance_encoder)
    assert sam and all(g is None for g in sam.values())
    clip = {n: g for n, g in _grad_norms(model.clip_backbone).items()}
    # q/v projection weights (not the biases); the last image block's q is unused in "value" mode
    last_q = "clip.visual.transformer.resblocks.1.attn.parametrizations.in_proj_weight.original0"
    tuned = {n for n in clip if ".parametrizations.in_proj_weight" in n and n[-1] in "02" and n != last_q}
    assert last_q in clip and len(tuned) == 2 * 4 - 1 and all(clip[n] > 0 for n in tuned)
    assert all(g is None for n, g in clip.items() if n not in tuned)
    head = {n: g for n, g in _grad_norms(model).items()
            if not n.startswith(("clip_backbone.", "guidance_encoder."))}
    assert len(head) > 50
    assert all(g is not None and g > 0 for g in head.values()), [n for n, g in head.items() if not g]


def test_text_tower_is_trained_through_the_correlation_volume():
    """The correlation (Eq. 3) back-propagates into CLIP's text q/v, not only the text guidance.

    With the guidance projection P_t zeroed, the guidance path carries no gradient to the text
    embeddings; the text tower's q/v must still receive one, through the correlation volume.
    """
    model = build_tiny()
    model.train()
    with torch.no_grad():
        for p in model.text_guidance_proj.parameters():
            p.zero_()
    losses = model(random_batch())
    sum(losses.values()).backward()
    text_qv = {n: g for n, g in _grad_norms(model.clip_backbone.clip.transformer).items()
               if ".parametrizations.in_proj_weight" in n and n[-1] in "02"}
    assert len(text_qv) == 4 and all(g is not None and g > 0 for g in text_qv.values()), text_qv


def test_semantic_loss_does_not_flow_into_the_sam_target():
    # Fine-tuned SAM: its features also guide the head (a legitimate gradient path), so the target
    # is replaced by a separate leaf to observe the L_sem path alone.
    model = build_tiny("MODEL.SAM.FROZEN", "False")
    model.train()
    leaves = []

    def swap_target(module, inputs, output):
        leaf = output["target"].detach().clone().requires_grad_(True)
        leaves.append(leaf)
        return dict(output, target=leaf)

    model.guidance_encoder.register_forward_hook(swap_target)
    losses = model(random_batch())
    losses["loss_sem"].backward()
    assert leaves[0].grad is None
    assert model.back_projection.mlp[0].weight.grad.abs().sum() > 0
    # and the SAM encoder, when fine-tuned, does receive gradients through its guidance role
    model.zero_grad()
    losses = model(random_batch())
    losses["loss_bce"].backward()
    assert model.guidance_encoder.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_a_few_steps_on_one_batch_reduce_the_loss():
    model = build_tiny()
    model.train()
    batch = random_batch(2, ignore_fraction=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    history = []
    for _ in range(15):
        losses = model(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert history[-1] < 0.7 * history[0], history


def test_paper_config_parameter_counts_on_meta_device():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    cfg.merge_from_list(["MODEL.CLIP.PRETRAINED", "", "MODEL.SAM.CHECKPOINT", "",
                         "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "9"])
    with torch.device("meta"):
        model = build_model(cfg)
    clip = count_parameters(model.clip_backbone)
    sam = count_parameters(model.guidance_encoder)
    head = count_parameters(model) - clip - sam
    assert 145e6 < clip < 155e6  # CLIP ViT-B/16 at 384 px
    assert 300e6 < sam < 315e6  # SAM ViT-L image encoder (without the unused neck)
    assert 1e6 < head < 10e6
    trainable_clip = count_parameters(model.clip_backbone, trainable_only=True)
    # W_q/W_v of both towers, without biases, less the last image block's W_q (unused by the dense path)
    assert trainable_clip == (12 * 2 - 1) * 768 * 768 + 12 * 2 * 512 * 512
    assert count_parameters(model.guidance_encoder, trainable_only=True) == 0


def test_cuda_device_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    with pytest.raises(ConfigError, match="MODEL.DEVICE='cuda' but no CUDA device is available"):
        build_tiny("MODEL.DEVICE", "cuda")
