import pytest
import torch

from aeroseg.config import get_cfg
from aeroseg.modeling import META_ARCH_REGISTRY, AerOSeg, build_model, count_parameters
from aeroseg.utils.errors import ConfigError
from conftest import BASE_CONFIG, build_tiny, random_batch, tiny_cfg


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
    assert model.head.back_projection is None
    model.train()
    assert set(model(random_batch())) == {"loss_bce"}


@pytest.mark.parametrize("target,channels", [("CLIP", 32), ("RGB", 3 * 8 * 8)])
def test_other_back_projection_targets(target, channels):
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", target)
    assert model.head.back_projection.mlp[-1].out_features == channels
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
        for p in model.head.text_guidance_proj.parameters():
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
    assert model.head.back_projection.mlp[0].weight.grad.abs().sum() > 0
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


def test_a_new_vocabulary_gives_what_a_model_built_for_it_gives():
    """Class names are data: after ``set_vocabulary`` the same weights must produce exactly what a
    model built with that vocabulary from the start produces, also when the new list has the
    same length as the old one (a stale text cache would go unnoticed by a shape check)."""
    six = ["building", "road", "tree", "water", "low vegetation", "car"]
    other_six = ["ship", "harbor", "bridge", "tennis court", "plane", "roundabout"]
    three = ["tennis court", "harbor", "building"]
    batch = random_batch(1)

    def predict(model):
        model.eval()
        with torch.no_grad():
            return model(batch)[0]["sem_seg"]

    switched = build_tiny("MODEL.AEROSEG.VOCABULARY", str(six), seed=0)
    before = predict(switched)
    results = {}
    for vocabulary in (other_six, three):
        switched.set_vocabulary(vocabulary)
        results[tuple(vocabulary)] = predict(switched)
    for vocabulary, got in results.items():
        fresh = build_tiny("MODEL.AEROSEG.VOCABULARY", str(list(vocabulary)), seed=0)
        assert fresh.vocabulary == list(vocabulary)
        torch.testing.assert_close(got, predict(fresh), rtol=1e-5, atol=1e-6)
    assert results[tuple(other_six)].shape == before.shape
    assert not torch.allclose(results[tuple(other_six)], before, atol=1e-4)  # the names matter
    assert results[tuple(three)].shape[0] == 3


def test_registered_model_and_from_config_build_the_same_weights():
    """The registry's class and ``from_config`` build identical state dicts, key for key (a
    ``zip()`` over two state dicts would stop at the shorter one)."""
    assert META_ARCH_REGISTRY.get("AerOSeg") is AerOSeg
    cfg = tiny_cfg()
    states = []
    for build in (lambda: build_model(cfg), lambda: AerOSeg(**AerOSeg.from_config(cfg))):
        torch.manual_seed(3)
        model = build()
        assert type(model) is AerOSeg
        states.append(model.state_dict())
    reference = states[0]
    assert len(reference) > 100
    for state in states[1:]:
        assert list(state) == list(reference)  # same names, same order, none missing or extra
        for name in reference:
            assert state[name].shape == reference[name].shape and torch.equal(state[name], reference[name]), name


def test_every_head_key_reaches_its_module():
    """from_config maps each MODEL.AEROSEG key to the right argument. The tiny config gives many
    keys equal values (heads 2 and 2, guidance dims 16 and 16), so swapped keys would pass
    unnoticed there; here every key has its own value and each is read back from the module."""
    model = build_tiny(
        "MODEL.AEROSEG.FEATURE_DIM", "24", "MODEL.AEROSEG.CORRELATION_KERNEL", "5",
        "MODEL.AEROSEG.NUM_REFINEMENT_BLOCKS", "1", "MODEL.AEROSEG.SPATIAL_GUIDANCE_DIM", "12",
        "MODEL.AEROSEG.TEXT_GUIDANCE_DIM", "20", "MODEL.AEROSEG.SPATIAL_NUM_HEADS", "3",
        "MODEL.AEROSEG.CLASS_NUM_HEADS", "4", "MODEL.AEROSEG.WINDOW_SIZE", "2", "MODEL.AEROSEG.MLP_RATIO", "3.0",
        "MODEL.AEROSEG.DECODER_DIMS", "[12, 6]", "MODEL.AEROSEG.DECODER_GUIDANCE_DIMS", "[10, 4]",
        "MODEL.AEROSEG.BACK_PROJECTION_HIDDEN_DIM", "40", "MODEL.AEROSEG.BCE_WEIGHT", "0.7",
        "MODEL.AEROSEG.SEM_WEIGHT", "0.3", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "254")
    head = model.head
    assert head.correlation_embed.conv.out_channels == 24 and head.correlation_embed.conv.kernel_size == (5, 5)
    assert len(head.refinement) == 1
    assert head.spatial_guidance_proj[0].out_channels == 12 and head.text_guidance_proj[0].out_features == 20
    spatial, classes = head.refinement[0].spatial.blocks[0], head.refinement[0].classes
    assert spatial.attn.num_heads == 3 and spatial.window_size == 2 and spatial.attn.qk.in_features == 24 + 12
    assert spatial.mlp[0].out_features == 72
    assert classes.attn.num_heads == 4 and classes.attn.qk.in_features == 24 + 20
    assert [s.conv2.out_channels for s in head.decoder.stages] == [12, 6]  # stage output width
    assert [s.guidance_proj[0].out_channels for s in head.decoder.stages] == [10, 4]
    assert head.back_projection.mlp[0].in_features == 6 * 24 and head.back_projection.mlp[0].out_features == 40
    assert (model.bce_weight, model.sem_weight, model.ignore_value) == (0.7, 0.3, 254)


def test_vocabulary_as_switches_and_restores_the_vocabulary_also_after_an_error():
    model = build_tiny()
    before = model.vocabulary
    with model.vocabulary_as(["swimming pool", "tennis court"]):
        assert model.vocabulary == ["swimming pool", "tennis court"]
    assert model.vocabulary == before
    with pytest.raises(RuntimeError, match="evaluation failed"):
        with model.vocabulary_as(["a", "b"]):
            raise RuntimeError("evaluation failed")
    assert model.vocabulary == before


def test_the_forward_is_encode_images_then_segment_encoded(monkeypatch):
    """One path: the inference forward is the image-only part followed by the class-dependent one,
    so an encoding kept aside answers a new vocabulary with exactly a fresh forward's numbers."""
    from aeroseg.modeling.meta_arch import ImageEncoding

    model = build_tiny().eval()
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    inputs = [{"image": images[0], "height": 80, "width": 90}, {"image": images[1]}]
    calls = []
    for name in ("encode_images", "segment_encoded"):
        original = getattr(model, name)
        monkeypatch.setattr(model, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    with torch.no_grad():
        encoding = model.encode_images(images)
        calls.clear()
        fresh = model(inputs)
        assert calls == ["encode_images", "segment_encoded"]  # the forward goes through the split
        assert isinstance(encoding, ImageEncoding) and len(encoding) == 2 and encoding.training_targets is None
        reused = model.segment_encoded(encoding, [(80, 90), (64, 64)])
        for a, b in zip(fresh, reused):
            assert torch.equal(a["sem_seg"], b["sem_seg"])
        # another vocabulary: the kept encoding gives exactly what a whole forward gives
        model.set_vocabulary(["ship", "swimming pool", "road"])
        fresh = model(inputs)
        reused = model.segment_encoded(encoding, [(80, 90), (64, 64)])
    assert fresh[0]["sem_seg"].shape == (3, 80, 90) and fresh[1]["sem_seg"].shape == (3, 64, 64)
    for a, b in zip(fresh, reused):
        assert torch.equal(a["sem_seg"], b["sem_seg"])
    # an inference encoding holds CLIP's dense features and the taps only
    expected = encoding.dense.nbytes + sum(t.nbytes for t in encoding.taps)
    assert encoding.nbytes == expected
    with pytest.raises(ValueError, match="3 output sizes for an encoding of 2 images"):
        model.segment_encoded(encoding, [(64, 64)] * 3)


def test_a_training_encoding_keeps_the_back_projection_targets():
    model = build_tiny().train()
    images = [b["image"] for b in random_batch(2)]
    encoding = model.encode_images(images)
    assert set(encoding.training_targets) == {"clip_images", "clip_dense", "sam"}
    assert encoding.training_targets["sam"] is encoding.taps[-1]  # SAM's last tap is its target
    # shared storage is counted once
    assert encoding.nbytes == (encoding.dense.nbytes + sum(t.nbytes for t in encoding.taps)
                               + encoding.training_targets["clip_images"].nbytes)


def test_a_vocabulary_longer_than_the_class_padding_keeps_the_top_classes_by_clip_score():
    """CAT-Seg's rule: per image, the CLASS_PAD_LEN classes with the highest CLIP correlation go
    through the head (as a vocabulary of only them would), the others get probability 0."""
    from aeroseg.modeling.head.correlation import correlation_volume

    model = build_tiny("MODEL.AEROSEG.CLASS_PAD_LEN", "3").eval()
    vocabulary = list(model.vocabulary)
    assert len(vocabulary) == 6
    batch = random_batch(n=2, size=64)
    with torch.no_grad():
        out = [o["sem_seg"] for o in model(batch)]
        images = [item["image"] for item in batch]
        dense = model.clip_backbone(model.clip_backbone.preprocess(images))["dense"]
        score = correlation_volume(dense, model.text_embeddings()).flatten(2).amax(dim=2)
    for b, probabilities in enumerate(out):
        assert probabilities.shape == (6, 64, 64)
        chosen = sorted(score[b].topk(3).indices.tolist())
        others = [i for i in range(6) if i not in chosen]
        assert probabilities[others].max() < 1e-30
        with torch.no_grad(), model.vocabulary_as([vocabulary[i] for i in chosen]):
            alone = model([batch[b]])[0]["sem_seg"]
        torch.testing.assert_close(probabilities[chosen], alone, atol=1e-5, rtol=1e-4)
    model.train()
    with pytest.raises(ConfigError, match="more than MODEL.AEROSEG.CLASS_PAD_LEN 3"):
        model(batch)
