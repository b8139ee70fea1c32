#!/usr/bin/env python
"""Golden fixture for the dense CLIP path: CAT-Seg's ``forward_dense`` on a tiny ViT.

    python tools/dev/reference_fixtures_clip.py --catseg-root /path/to/CAT-Seg --out-dir tests/fixtures

Imports ``cat_seg/third_party/model_vpt.py`` of a CAT-Seg checkout by file path (it needs only
torch, not detectron2; OVRS ships the identical file), builds its ``VisualTransformer`` with a
fixed seed at small widths, randomises every parameter (CAT-Seg initialises biases to zero, which
would hide a wrong bias), runs the dense path on a fixed input and saves to
``OUT_DIR/dense_clip.pt``:

* ``config``: sizes, to rebuild the same open_clip tower;
* ``input``: (N, 3, S, S) normalised images;
* ``visual_state_dict``: the weights in open_clip's ``VisionTransformer`` naming (packed
  ``in_proj_weight``), so the test needs neither CAT-Seg nor a conversion;
* ``dense``: (N, 1 + L, D) CAT-Seg's ``encode_image(x, dense=True)`` output (class token first).

``tests/parity/test_catseg_dense_clip_parity.py`` rebuilds our backbone from it and compares to 1e-5.
"""
import argparse
import importlib.util
import os
from collections import OrderedDict
from typing import Dict

import torch

__all__ = ["make_dense_clip_fixture", "DENSE_CLIP_CONFIG"]

# Small widths keep the fixture tiny (~100 KB); two blocks so the dense path follows a normal one.
DENSE_CLIP_CONFIG = {
    "image_size": 32,
    "patch_size": 8,
    "width": 32,
    "layers": 2,
    "heads": 2,
    "output_dim": 16,
    "batch": 2,
    "seed": 0,
}


def _load_model_vpt(catseg_root: str):
    path = os.path.join(catseg_root, "cat_seg", "third_party", "model_vpt.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: --catseg-root must be a CAT-Seg (or OVRS) checkout")
    spec = importlib.util.spec_from_file_location("catseg_model_vpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter random: LayerNorm gains near 1, everything else small and non-zero."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if (".ln_" in name or name.startswith("ln_")) and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                fan_in = param.shape[-1] if param.ndim > 1 else 16
                param.copy_(noise / fan_in ** 0.5)


def _to_open_clip_names(catseg_state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """CAT-Seg's split q/k/v_proj_weight -> open_clip's packed attn.in_proj_weight."""
    out = OrderedDict()
    for key, value in catseg_state.items():
        if key.endswith(".attn.q_proj_weight"):
            prefix = key[: -len("q_proj_weight")]
            out[prefix + "in_proj_weight"] = torch.cat(
                [catseg_state[prefix + f"{p}_proj_weight"] for p in "qkv"], dim=0)
        elif key.endswith((".attn.k_proj_weight", ".attn.v_proj_weight")):
            continue
        else:
            out[key] = value
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in out.items())


def make_dense_clip_fixture(catseg_root: str, out_dir: str) -> str:
    """Write ``out_dir/dense_clip.pt`` (see module docstring); returns its path."""
    c = DENSE_CLIP_CONFIG
    model_vpt = _load_model_vpt(catseg_root)
    torch.manual_seed(c["seed"])
    visual = model_vpt.VisualTransformer(
        input_resolution=c["image_size"], patch_size=c["patch_size"], width=c["width"], layers=c["layers"],
        heads=c["heads"], output_dim=c["output_dim"], prompt_depth=0, prompt_length=0,
    ).eval()
    generator = torch.Generator().manual_seed(c["seed"])
    _randomise(visual, generator)
    images = torch.randn(c["batch"], 3, c["image_size"], c["image_size"], generator=generator)
    with torch.no_grad():
        dense = visual(images, dense=True)
    fixture = {
        "config": dict(c),
        "input": images,
        "visual_state_dict": _to_open_clip_names(visual.state_dict()),
        "dense": dense.detach().clone(),
        "source": "CAT-Seg cat_seg/third_party/model_vpt.py VisualTransformer(dense=True)",
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "dense_clip.pt")
    torch.save(fixture, path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catseg-root", required=True, help="a CAT-Seg (or OVRS) checkout")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    args = parser.parse_args(argv)
    path = make_dense_clip_fixture(args.catseg_root, args.out_dir)
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
