"""Gradient clipping (SOLVER.CLIP_GRADIENTS): every mode against hand-computed gradients, and
``Trainer.run_step`` really applying it to the update.

The hand-made case has two parameters whose gradients make the three modes disagree:
g1 = (3, -4) (L2 norm 5, largest entry 4) and g2 = (0.5, 0) (norm 0.5), clipped at 1.0.
  * value:      every entry clamped to [-1, 1]       -> g1 = (1, -1),     g2 = (0.5, 0)
  * norm:       each parameter's own norm <= 1       -> g1 = (0.6, -0.8), g2 = (0.5, 0)
  * full_model: one norm over both, sqrt(25.25) -> 1 -> both divided by sqrt(25.25)
"""
import copy
import math

import pytest
import torch

from aeroseg.engine import Trainer
from aeroseg.engine.train_step import TrainingStep
from aeroseg.utils.errors import ConfigError
from conftest import random_batch, tiny_cfg

G1, G2 = (3.0, -4.0), (0.5, 0.0)
FULL = math.sqrt(25.25)
EXPECTED = {
    "value": ((1.0, -1.0), (0.5, 0.0)),
    "norm": ((0.6, -0.8), (0.5, 0.0)),
    "full_model": ((3.0 / FULL, -4.0 / FULL), (0.5 / FULL, 0.0)),
}


def _clip_opts(enabled=True, clip_type="full_model", value=1.0, norm_type=2.0):
    return ("SOLVER.CLIP_GRADIENTS.ENABLED", str(enabled), "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip_type,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", str(value), "SOLVER.CLIP_GRADIENTS.NORM_TYPE", str(norm_type))


def _hand_made_step(*opts, scaler_enabled=False, scale=1.0):
    """The training step of the config ``opts`` over two hand-set gradients (``clip_gradients`` alone)."""
    p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    # two groups, as the real optimizer has (CLIP / head): clipping must see across groups
    optimizer = torch.optim.SGD([{"params": [p1]}, {"params": [p2], "lr": 0.5}], lr=1.0)
    step = TrainingStep(**TrainingStep.from_config(tiny_cfg(*opts), None, optimizer, torch.device("cpu")))
    step.grad_scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=scaler_enabled)
    loss = (p1 * torch.tensor(G1)).sum() + (p2 * torch.tensor(G2)).sum()  # d loss / d p = G
    step.grad_scaler.scale(loss).backward()
    assert p1.grad.tolist() == [g * (scale if scaler_enabled else 1.0) for g in G1]
    return step, p1, p2


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_each_clip_mode_gives_the_hand_computed_gradients(clip_type):
    step, p1, p2 = _hand_made_step(*_clip_opts(clip_type=clip_type))
    step.clip_gradients()
    e1, e2 = EXPECTED[clip_type]
    torch.testing.assert_close(p1.grad, torch.tensor(e1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p2.grad, torch.tensor(e2), rtol=1e-5, atol=1e-6)


def test_norm_type_is_used():
    # L1 norm over both parameters: 3 + 4 + 0.5 = 7.5 -> everything divided by 7.5
    step, p1, p2 = _hand_made_step(*_clip_opts(clip_type="full_model", norm_type=1.0))
    step.clip_gradients()
    torch.testing.assert_close(p1.grad, torch.tensor(G1) / 7.5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p2.grad, torch.tensor(G2) / 7.5, rtol=1e-5, atol=1e-6)


def test_disabled_or_large_threshold_leaves_gradients_alone_and_bad_type_is_reported():
    step, p1, p2 = _hand_made_step(*_clip_opts(enabled=False, value=1e-3))
    step.clip_gradients()
    assert p1.grad.tolist() == list(G1) and p2.grad.tolist() == list(G2)
    step, p1, p2 = _hand_made_step(*_clip_opts(clip_type="full_model", value=100.0))
    step.clip_gradients()
    assert p1.grad.tolist() == list(G1) and p2.grad.tolist() == list(G2)
    with pytest.raises(ConfigError, match="CLIP_TYPE='global'"):  # when the step is built, before training
        _hand_made_step(*_clip_opts(clip_type="global"))


def test_clipping_acts_on_unscaled_gradients_when_a_grad_scaler_is_used():
    """fp16 training: gradients are multiplied by the loss scale; clipping must unscale first."""
    step, p1, p2 = _hand_made_step(*_clip_opts(clip_type="norm"), scaler_enabled=True, scale=1024.0)
    step.clip_gradients()
    e1, e2 = EXPECTED["norm"]
    torch.testing.assert_close(p1.grad, torch.tensor(e1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p2.grad, torch.tensor(e2), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- run_step
def _sgd_trainer(*opts):
    """A real Trainer (tiny model, no datasets) with plain SGD so an update is lr x gradient."""
    cfg = tiny_cfg("SOLVER.OPTIMIZER", "SGD", "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0",
                   "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.BASE_LR", "0.5", "SOLVER.CLIP_MULTIPLIER", "0.1",
                   "SOLVER.WARMUP_ITERS", "0", "SOLVER.AMP.ENABLED", "False", "MODEL.DEVICE", "cpu", *opts)
    torch.manual_seed(0)
    return Trainer(cfg)


def _named_trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_run_step_updates_with_the_clipped_gradient():
    """One SGD step of run_step moves every weight by -lr x (gradient clipped over the whole model)."""
    trainer = _sgd_trainer(*_clip_opts(clip_type="full_model", value=0.05))
    batch = random_batch(2)
    # the raw gradients, from an identical copy of the model
    reference = copy.deepcopy(trainer.model)
    reference.train()
    sum(reference(batch).values()).backward()
    grads = {n: p.grad.clone() for n, p in _named_trainable(reference).items() if p.grad is not None}
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
    assert total > 0.05 * 5  # clipping is far from a no-op here
    clipped = {n: g * min(1.0, 0.05 / (total.item() + 1e-6)) for n, g in grads.items()}
    lr = {n: group["lr"] for group in trainer.optimizer.param_groups for n in group["param_names"]}
    before = {n: p.detach().clone() for n, p in _named_trainable(trainer.model).items()}

    trainer.model.train()
    trainer.run_step(batch)
    for name, p in _named_trainable(trainer.model).items():
        if name not in clipped:
            continue
        expected = before[name] - lr[name] * clipped[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-6, msg=name)
    # and so the step differs from an unclipped one, which would move the weights >5x further
    moved = torch.linalg.vector_norm(torch.stack([(p.detach() - before[n]).norm()
                                                  for n, p in _named_trainable(trainer.model).items()]))
    assert moved <= max(lr.values()) * 0.05 * 1.001
