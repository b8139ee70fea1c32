#!/usr/bin/env python
"""Write the golden tensors that ``tests/parity/`` (test_catseg_ovrs_head_parity.py) compares AerOSeg against.

The reference modules are imported from checkouts of CAT-Seg (github cvlab-kaist/CAT-Seg) and
OVRS (github caoql98/OVRS) *by file path*: their ``model.py`` needs only torch, einops and timm,
so neither detectron2 nor the ``cat_seg`` package has to import. Nothing of their code is copied
into this repository; only the tensors they compute are saved.

Each fixture maker builds one reference module with fixed seeds at small sizes, perturbs every
norm/bias/padding parameter (the reference initialises many of them to 0 or 1, which would hide
a swapped or missing weight), copies the weights into the corresponding AerOSeg module with the
mapping below, runs both on the same random inputs, checks they agree, and saves
``{"kwargs", "inputs", "output", "state_dict"}`` (``state_dict`` already in AerOSeg's names) as
``tests/fixtures/<name>.pt``. The tests rebuild our module from ``kwargs``, load ``state_dict``
strictly and compare the output to ``output``.

Weight mapping (reference -> AerOSeg):

CAT-Seg ``ClassTransformerLayer`` -> :class:`aeroseg.modeling.head.class_refinement.ClassRefinementBlock`
    attention.q.{weight,bias}, attention.k.{weight,bias} -> attn.qk (rows [q; k] concatenated)
    attention.v                                        -> attn.v
    norm1, norm2                                       -> norm1, norm2
    MLP.0, MLP.2                                       -> mlp.0, mlp.2
    padding_tokens (1, 1, C), padding_guidance (1, 1, C_g) -> padding_token (C,), padding_guidance (C_g,)
    layout: x (B, C, T, H, W) there, (B, T, C, H, W) here.

CAT-Seg ``SwinTransformerBlockWrapper`` (``AggregatorLayer.swin_block``) ->
:class:`aeroseg.modeling.head.spatial_refinement.SpatialRefinementBlock`
    guidance_norm                                      -> guidance_norm
    block_{1,2}.norm1, .norm2                          -> blocks.{0,1}.norm1, .norm2
    block_{1,2}.attn.q, .attn.k                        -> blocks.{0,1}.attn.qk ([q; k])
    block_{1,2}.attn.v, .attn.proj                     -> blocks.{0,1}.attn.v, .attn.proj
    block_{1,2}.mlp.fc1, .mlp.fc2                      -> blocks.{0,1}.mlp.0, .mlp.2

CAT-Seg ``AggregatorLayer`` -> :class:`aeroseg.modeling.head.refinement.CorrelationRefinementBlock`
    swin_block.* -> spatial.* (as above), attention.* -> classes.* (as above)

OVRS ``Up`` (``cat_seg/modeling/transformer/model_attention.py``, the attention-aware variant) ->
:meth:`aeroseg.modeling.head.decoder.AttentionAwareUpsampling.fuse` (projected guidance in)
    up                                                 -> upsample
    cconv, sconv                                       -> channel_attention, spatial_attention
    conv.double_conv.{0,1,3,4}                         -> conv1, norm1, conv2, norm2
    (guidance_proj is not part of ``Up``: it keeps its own random init and is unused by ``fuse``)

Other makers register with :func:`register`; ``tools/dev/reference_fixtures_clip.py``'s
``make_dense_clip_fixture(catseg_root, out_dir)`` is called when that file exists.

Usage (from the repository root):
    python tools/dev/make_reference_fixtures.py --catseg /work/ref/CAT-Seg --ovrs /work/ref/OVRS
"""
import argparse
import importlib.util
import os
import sys
import warnings
from typing import Callable, Dict

import torch
from aeroseg.modeling.head.class_refinement import ClassRefinementBlock
from aeroseg.modeling.head.decoder import AttentionAwareUpsampling
from aeroseg.modeling.head.refinement import CorrelationRefinementBlock
from aeroseg.modeling.head.spatial_refinement import SpatialRefinementBlock

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# name -> maker(roots, out_dir) -> path written; roots = {"catseg": path, "ovrs": path or None}
FIXTURE_MAKERS: Dict[str, Callable[[Dict[str, str], str], str]] = {}
TOLERANCE = 1e-5


def register(name: str):
    def wrap(fn):
        FIXTURE_MAKERS[name] = fn
        return fn
    return wrap


def import_by_path(path: str, module_name: str):
    """Import one reference file without importing its package (no detectron2 needed)."""
    if not os.path.isfile(path):
        sys.exit(f"error: {path} does not exist (is the checkout path right?)")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


def catseg_model(roots):
    return import_by_path(os.path.join(roots["catseg"], "cat_seg", "modeling", "transformer", "model.py"),
                          "_reference_catseg_model")


def perturb_(module: torch.nn.Module, seed: int) -> None:
    """Randomise the 1-d parameters (biases, norm affines, padding) around their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() <= 1 or p.shape[:2] == (1, 1):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def packed_qk(ref_q: torch.nn.Linear, ref_k: torch.nn.Linear) -> Dict[str, torch.Tensor]:
    return {"weight": torch.cat([ref_q.weight, ref_k.weight]), "bias": torch.cat([ref_q.bias, ref_k.bias])}


def map_class_layer(ref) -> Dict[str, torch.Tensor]:
    """CAT-Seg ClassTransformerLayer state -> ClassRefinementBlock state."""
    a = ref.attention
    sd = {f"attn.qk.{k}": v for k, v in packed_qk(a.q, a.k).items()}
    sd.update({"attn.v.weight": a.v.weight, "attn.v.bias": a.v.bias})
    for name in ("norm1", "norm2"):
        sd.update({f"{name}.{k}": v for k, v in getattr(ref, name).state_dict().items()})
    sd.update({f"mlp.{i}.{k}": v for i in (0, 2) for k, v in ref.MLP[i].state_dict().items()})
    if ref.padding_tokens is not None:
        sd["padding_token"] = ref.padding_tokens.reshape(-1)
        sd["padding_guidance"] = ref.padding_guidance.reshape(-1)
    return {k: v.detach().clone() for k, v in sd.items()}


def map_swin_wrapper(ref) -> Dict[str, torch.Tensor]:
    """CAT-Seg SwinTransformerBlockWrapper state -> SpatialRefinementBlock state."""
    sd = {f"guidance_norm.{k}": v for k, v in ref.guidance_norm.state_dict().items()}
    for i, block in enumerate((ref.block_1, ref.block_2)):
        p = f"blocks.{i}."
        sd.update({p + f"attn.qk.{k}": v for k, v in packed_qk(block.attn.q, block.attn.k).items()})
        for ours, theirs in (("attn.v", block.attn.v), ("attn.proj", block.attn.proj), ("norm1", block.norm1),
                             ("norm2", block.norm2), ("mlp.0", block.mlp.fc1), ("mlp.2", block.mlp.fc2)):
            sd.update({p + f"{ours}.{k}": v for k, v in theirs.state_dict().items()})
    return {k: v.detach().clone() for k, v in sd.items()}


def map_up(ref) -> Dict[str, torch.Tensor]:
    """OVRS Up state -> AttentionAwareUpsampling state (without guidance_proj)."""
    sd = {}
    for ours, theirs in (("upsample", ref.up), ("channel_attention", ref.cconv), ("spatial_attention", ref.sconv),
                         ("conv1", ref.conv.double_conv[0]), ("norm1", ref.conv.double_conv[1]),
                         ("conv2", ref.conv.double_conv[3]), ("norm2", ref.conv.double_conv[4])):
        sd.update({f"{ours}.{k}": v for k, v in theirs.state_dict().items()})
    return {k: v.detach().clone() for k, v in sd.items()}


def save(out_dir: str, name: str, payload: Dict) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.pt")
    torch.save(payload, path)
    return path


def check(name: str, ours: torch.Tensor, reference: torch.Tensor) -> None:
    err = (ours - reference).abs().max().item()
    print(f"{name}: max |ours - reference| = {err:.3g}")
    if err > TOLERANCE:
        sys.exit(f"error: {name} differs from the reference by {err:.3g} (> {TOLERANCE}); fixture not written")


def check_and_save(out_dir: str, name: str, ours: torch.nn.Module, state: Dict, kwargs: Dict, x: torch.Tensor,
                   expected: torch.Tensor, guidances: Dict[str, torch.Tensor]) -> str:
    """Load ``state`` into ``ours``, compare it with CAT-Seg's ``expected`` and write the fixture.

    CAT-Seg's correlation features are (B, C, T, H, W), ours (B, T, C, H, W): ``x`` and ``expected``
    are given in CAT-Seg's layout and stored in ours. ``guidances`` are the remaining inputs, in
    ``forward`` order.
    """
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x_ours = x.permute(0, 2, 1, 3, 4).contiguous()
    expected_ours = expected.permute(0, 2, 1, 3, 4).contiguous()
    with torch.no_grad():
        check(name, ours(x_ours, *guidances.values()), expected_ours)
    return save(out_dir, name, {"kwargs": kwargs, "inputs": {"x": x_ours, **guidances}, "output": expected_ours,
                                "state_dict": state})


def _class_layer_fixture(roots, out_dir, name, pad_len, seed):
    model = catseg_model(roots)
    torch.manual_seed(seed)
    # B=2, C=16, T=5, 7x6 map (odd height: the 2x2 pool floors, the upsampling restores 7x6)
    dim, guidance_dim, heads, pooling = 16, 8, 4, (2, 2)
    ref = model.ClassTransformerLayer(hidden_dim=dim, guidance_dim=guidance_dim, nheads=heads,
                                      attention_type="linear", pooling_size=pooling, pad_len=pad_len).eval()
    perturb_(ref, seed)
    x = torch.randn(2, dim, 5, 7, 6)
    guidance = torch.randn(2, 5, guidance_dim)
    with torch.no_grad():
        expected = ref(x, guidance)  # (B, C, T, H, W)
    kwargs = dict(dim=dim, guidance_dim=guidance_dim, num_heads=heads, mlp_ratio=4.0, pooling_size=pooling,
                  pad_len=pad_len)
    return check_and_save(out_dir, name, ClassRefinementBlock(**kwargs), map_class_layer(ref), kwargs, x, expected,
                          {"text": guidance})


@register("catseg_class_transformer_pad")
def make_class_layer_padded(roots, out_dir):
    """ClassTransformerLayer with a 12-long padded class axis (5 classes + 7 padding tokens)."""
    return _class_layer_fixture(roots, out_dir, "catseg_class_transformer_pad", pad_len=12, seed=1)


@register("catseg_class_transformer_nopad")
def make_class_layer_unpadded(roots, out_dir):
    """ClassTransformerLayer with pad_len=0."""
    return _class_layer_fixture(roots, out_dir, "catseg_class_transformer_nopad", pad_len=0, seed=2)


@register("catseg_swin_guidance")
def make_swin_wrapper(roots, out_dir):
    """AggregatorLayer's spatial part (guidance LayerNorm + W-MSA + SW-MSA), 8x8 map, window 4."""
    model = catseg_model(roots)
    torch.manual_seed(3)
    dim, guidance_dim, heads, res, window = 16, 8, 4, (8, 8), 4
    layer = model.AggregatorLayer(hidden_dim=dim, text_guidance_dim=8, appearance_guidance=guidance_dim,
                                  nheads=heads, input_resolution=res, pooling_size=(2, 2),
                                  window_size=window, attention_type="linear", pad_len=0).eval()
    ref = layer.swin_block
    perturb_(ref, 3)
    x = torch.randn(2, dim, 3, *res)
    guidance = torch.randn(2, guidance_dim, *res)
    with torch.no_grad():
        expected = ref(x, guidance)
    kwargs = dict(dim=dim, guidance_dim=guidance_dim, num_heads=heads, window_size=window, mlp_ratio=4.0,
                  guidance_norm=True, relative_position_bias=False)
    return check_and_save(out_dir, "catseg_swin_guidance", SpatialRefinementBlock(**kwargs), map_swin_wrapper(ref),
                          kwargs, x, expected, {"guidance": guidance})


@register("catseg_aggregator_layer")
def make_aggregator_layer(roots, out_dir):
    """A whole AggregatorLayer (spatial + class, padded to 10) vs CorrelationRefinementBlock."""
    model = catseg_model(roots)
    torch.manual_seed(4)
    dim, sg_dim, tg_dim, heads, res, window, pad = 16, 8, 12, 4, (8, 8), 4, 10
    ref = model.AggregatorLayer(hidden_dim=dim, text_guidance_dim=tg_dim, appearance_guidance=sg_dim,
                                nheads=heads, input_resolution=res, pooling_size=(2, 2), window_size=window,
                                attention_type="linear", pad_len=pad).eval()
    perturb_(ref, 4)
    x = torch.randn(1, dim, 4, *res)
    spatial_guidance = torch.randn(1, sg_dim, *res)
    text_guidance = torch.randn(1, 4, tg_dim)
    with torch.no_grad():
        expected = ref(x, spatial_guidance, text_guidance)
    kwargs = dict(dim=dim, spatial_guidance_dim=sg_dim, text_guidance_dim=tg_dim, spatial_heads=heads,
                  window_size=window, class_heads=heads, mlp_ratio=4.0, class_pooling_size=(2, 2),
                  class_pad_len=pad, spatial_guidance_norm=True, relative_position_bias=False)
    state = {f"spatial.{k}": v for k, v in map_swin_wrapper(ref.swin_block).items()}
    state.update({f"classes.{k}": v for k, v in map_class_layer(ref.attention).items()})
    return check_and_save(out_dir, "catseg_aggregator_layer", CorrelationRefinementBlock(**kwargs), state, kwargs, x,
                          expected, {"spatial_guidance": spatial_guidance, "text_guidance": text_guidance})


@register("ovrs_up")
def make_ovrs_up(roots, out_dir):
    """OVRS's attention-aware Up: in 48 ch, guidance 16 ch, out 32 ch, 5x5 -> 10x10, B=2, T=3."""
    if not roots.get("ovrs"):
        print("ovrs_up: skipped (no --ovrs checkout given)")
        return ""
    model = import_by_path(os.path.join(roots["ovrs"], "cat_seg", "modeling", "transformer", "model_attention.py"),
                           "_reference_ovrs_model_attention")
    torch.manual_seed(5)
    in_dim, out_dim, guidance_dim = 48, 32, 16
    ref = model.Up(in_dim, out_dim, guidance_dim).eval()
    perturb_(ref, 5)
    x = torch.randn(2 * 3, in_dim, 5, 5)
    guidance = torch.randn(2, guidance_dim, 10, 10)
    with torch.no_grad():
        expected = ref(x, guidance)
    kwargs = dict(in_dim=in_dim, out_dim=out_dim, guidance_in_dim=guidance_dim, guidance_dim=guidance_dim,
                  attention_activation="none")
    ours = AttentionAwareUpsampling(**kwargs).eval()
    state = map_up(ref)
    state.update({f"guidance_proj.{k}": v.detach().clone() for k, v in ours.guidance_proj.state_dict().items()})
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        check("ovrs_up", ours.fuse(x, guidance), expected)
    return save(out_dir, "ovrs_up", {"kwargs": kwargs, "inputs": {"x": x, "guidance": guidance},
                                     "output": expected, "state_dict": state})


def _register_optional_makers() -> None:
    """Makers that live in their own files (written by other work), if present."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_fixtures_clip.py")
    if os.path.isfile(path):
        module = import_by_path(path, "_aeroseg_reference_fixtures_clip")
        FIXTURE_MAKERS["dense_clip"] = lambda roots, out_dir: module.make_dense_clip_fixture(roots["catseg"], out_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catseg", required=True, help="CAT-Seg checkout (the folder holding cat_seg/)")
    parser.add_argument("--ovrs", default="", help="OVRS checkout (for the attention-aware Up); skipped if empty")
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"), help="output folder")
    parser.add_argument("--only", nargs="*", default=None, help="fixture names to (re)make (default: all)")
    args = parser.parse_args(argv)
    _register_optional_makers()
    roots = {"catseg": os.path.abspath(args.catseg), "ovrs": os.path.abspath(args.ovrs) if args.ovrs else None}
    names = args.only or list(FIXTURE_MAKERS)
    unknown = sorted(set(names) - set(FIXTURE_MAKERS))
    if unknown:
        sys.exit(f"error: --only {unknown}: unknown fixture(s); known: {sorted(FIXTURE_MAKERS)}")
    torch.set_num_threads(1)
    for name in names:
        path = FIXTURE_MAKERS[name](roots, args.out)
        if path:
            print(f"  wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
