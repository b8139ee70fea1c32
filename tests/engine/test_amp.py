"""Mixed precision (SOLVER.AMP.ENABLED): the forward really runs in the low-precision dtype (observed
inside the model with forward hooks), not at all when off, and the fp16 path goes through the
GradScaler (scaled backward, unscaled update, scaler state checkpointed)."""
import copy

import pytest
import torch
from torch import nn

import aeroseg.engine.train_step as train_step_module
from aeroseg.engine import Trainer
from aeroseg.engine.train_step import amp_dtype
from conftest import random_batch, tiny_cfg


def _trainer(amp: bool, monkeypatch=None, dtype=None):
    if dtype is not None:
        monkeypatch.setattr(train_step_module, "amp_dtype", lambda device: dtype)
    cfg = tiny_cfg("SOLVER.AMP.ENABLED", str(amp), "MODEL.DEVICE", "cpu", "SOLVER.OPTIMIZER", "SGD",
                   "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
                   "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CLIP_GRADIENTS.ENABLED", "False")
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.model.train()
    return trainer


def _linear_output_dtypes(model: nn.Module):
    """Record the output dtype of every Linear / Conv2d that runs during a forward."""
    seen = {}

    def hook(module, args, output):
        seen.setdefault(module.__class__.__name__, set()).add(output.dtype)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return seen, handles


def test_amp_dtype_choice():
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16


def test_amp_dtype_falls_back_to_fp16_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda", 0)) == torch.float16


@pytest.mark.parametrize("amp", [True, False])
def test_forward_runs_in_bf16_only_with_amp(amp):
    trainer = _trainer(amp)
    assert not trainer.grad_scaler.is_enabled()  # bf16 needs no loss scaling
    seen, handles = _linear_output_dtypes(trainer.model)
    losses = trainer.run_step(random_batch(2))
    for h in handles:
        h.remove()
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    dtypes = set().union(*seen.values())
    if amp:
        assert seen["Linear"] == {torch.bfloat16} and torch.bfloat16 in seen["Conv2d"]
    else:
        assert dtypes == {torch.float32}
    # the master weights and their gradients stay fp32 either way
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params)
    assert all(p.grad.dtype == torch.float32 for p in params if p.grad is not None)


def test_fp16_uses_the_grad_scaler_and_updates_with_unscaled_gradients(monkeypatch):
    trainer = _trainer(True, monkeypatch, torch.float16)
    scaler = trainer.grad_scaler
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0
    assert "grad_scaler" in trainer.checkpointer.checkpointables  # resumes keep the loss scale
    batch = random_batch(2)

    # reference: the fp32 gradients (an unscaled fp16 backward would lose small ones to underflow)
    reference = copy.deepcopy(trainer.model)
    sum(reference(batch).values()).backward()
    grads = {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None}
    lr = {n: g["lr"] for g in trainer.optimizer.param_groups for n in g["param_names"]}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    seen, handles = _linear_output_dtypes(trainer.model)
    scaled_backward = []
    original_scale = scaler.scale
    monkeypatch.setattr(scaler, "scale", lambda x: scaled_backward.append(True) or original_scale(x))
    trainer.run_step(batch)
    for h in handles:
        h.remove()
    assert scaled_backward, "run_step did not scale the loss"
    assert torch.float16 in seen["Linear"]
    steps, expected = [], []
    for name, p in trainer.model.named_parameters():
        if name in grads:
            steps.append((before[name] - p.detach()).flatten())
            expected.append((lr[name] * grads[name]).flatten())
    steps, expected = torch.cat(steps), torch.cat(expected)
    # SGD moved the weights by lr x the *unscaled* gradient (fp16 rounding aside); an update with
    # still-scaled gradients would be 65536x larger, a skipped one zero
    assert (steps - expected).norm() < 0.05 * expected.norm()
    assert torch.nn.functional.cosine_similarity(steps, expected, dim=0) > 0.999
