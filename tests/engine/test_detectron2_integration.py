"""AerOSeg inside a real detectron2 (docs/DESIGN.md: detectron2-native when it is installed).

Every test here runs only where detectron2 is importable; elsewhere the module is skipped.
"""
import itertools

import pytest
import torch

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

import detectron2.config as d2_config  # noqa: E402
import detectron2.modeling as d2_modeling  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import SimpleTrainer  # noqa: E402

from aeroseg.checkpoint import AerOSegCheckpointer  # noqa: E402
from aeroseg.config import add_aeroseg_config, configurable, get_cfg  # noqa: E402
from aeroseg.compat.config_defaults import _C as STANDALONE_DEFAULTS  # noqa: E402
from aeroseg.modeling import AerOSeg  # noqa: E402
from aeroseg.modeling import META_ARCH_REGISTRY as AEROSEG_META_ARCH_REGISTRY  # noqa: E402
from aeroseg.compat import detectron2_available  # noqa: E402
from conftest import REPO, TINY_CONFIG, random_batch, tiny_cfg  # noqa: E402
from conftest import config_leaves as _leaves  # noqa: E402

NUM_CLASSES = 6  # len(MODEL.AEROSEG.VOCABULARY) in configs/demo/tiny_cpu.yaml



def _nodes(node, prefix=""):
    """[("A.B", node)] for every sub-node of a CfgNode, itself included as ""."""
    out = [(prefix.rstrip("."), node)]
    for key, value in node.items():
        if isinstance(value, dict):
            out.extend(_nodes(value, f"{prefix}{key}."))
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _standalone_cfg():
    """The config aeroseg builds where detectron2 is absent (its defaults + AerOSeg's keys)."""
    cfg = STANDALONE_DEFAULTS.clone()
    add_aeroseg_config(cfg)
    return cfg


def _d2_tiny_model(seed: int):
    torch.manual_seed(seed)
    return d2_modeling.build_model(tiny_cfg("MODEL.DEVICE", "cpu"))


def _inference(model, batch):
    model.eval()
    with torch.no_grad():
        return [out["sem_seg"] for out in model([{k: v for k, v in x.items() if k != "sem_seg"} for x in batch])]


# ---------------------------------------------------------------------------------------- config
def test_aeroseg_uses_detectron2():
    assert detectron2_available()
    assert configurable is d2_config.configurable
    assert AEROSEG_META_ARCH_REGISTRY is d2_modeling.META_ARCH_REGISTRY


def test_get_cfg_is_a_detectron2_cfgnode_with_all_keys():
    cfg = get_cfg()
    # Every node, not only the root, must be detectron2's CfgNode: yacs refuses to merge a
    # detectron2 node from a YAML file into an fvcore node ("Type mismatch").
    wrong = [name or "<root>" for name, node in _nodes(cfg) if type(node) is not d2_config.CfgNode]
    assert not wrong, f"config nodes that are not detectron2 CfgNodes: {wrong}"

    keys = set(_leaves(cfg))
    missing_d2 = sorted(set(_leaves(d2_config.get_cfg())) - keys)
    assert not missing_d2, f"detectron2 keys missing from aeroseg.config.get_cfg(): {missing_d2[:10]}"
    missing_aeroseg = sorted(set(_leaves(_standalone_cfg())) - keys)
    assert not missing_aeroseg, f"AerOSeg keys missing under detectron2: {missing_aeroseg[:10]}"
    for key in ["MODEL.CLIP.NAME", "MODEL.SAM.TAP_LAYERS", "MODEL.AEROSEG.FEATURE_DIM",
                "MODEL.AEROSEG.BACK_PROJECTION_TARGET", "SOLVER.CLIP_MULTIPLIER", "INPUT.RANDOM_ROTATE_90"]:
        assert key in keys
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"  # detectron2's default; AerOSeg is set by Base-AerOSeg.yaml


def _pruned_like(node, template):
    """A copy of ``node`` holding only the keys that ``template`` has (recursively)."""
    out = type(node)()
    for key, value in template.items():
        out[key] = _pruned_like(node[key], value) if isinstance(value, dict) else node[key]
    return out


def test_standalone_get_cfg_equals_detectron2_get_cfg_plus_add_aeroseg_config():
    # What a detectron2 user builds (detectron2's get_cfg + add_aeroseg_config) and what AerOSeg
    # builds without detectron2 must be the same config: same YAML dump on every key the stand-in
    # declares (it declares a subset of detectron2's keys, not its R-CNN heads), and the same
    # AerOSeg keys. So a YAML means the same thing in both environments.
    d2_user_cfg = d2_config.get_cfg()
    add_aeroseg_config(d2_user_cfg)
    assert get_cfg().dump() == d2_user_cfg.dump()  # aeroseg.config.get_cfg() is exactly that here
    standalone = _standalone_cfg()
    assert _pruned_like(d2_user_cfg, standalone).dump() == standalone.dump()
    # add_aeroseg_config only adds keys: detectron2's own values are untouched
    plain = _leaves(d2_config.get_cfg())
    extended = _leaves(d2_user_cfg)
    assert {k: extended[k] for k in plain} == plain
    assert d2_user_cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and d2_user_cfg.INPUT.FORMAT == "BGR"


def test_the_three_lines_of_a_detectron2_user():
    # docs/ENGINES.md, "detectron2": get_cfg, add_aeroseg_config, merge_from_file; then detectron2 builds AerOSeg.
    import aeroseg

    cfg = d2_config.get_cfg()
    aeroseg.add_aeroseg_config(cfg)
    cfg.merge_from_file(str(TINY_CONFIG))
    assert cfg.MODEL.META_ARCHITECTURE == "AerOSeg" and cfg.INPUT.FORMAT == "RGB" and cfg.SOLVER.BASE_LR == 0.001
    assert type(d2_modeling.build_model(cfg)) is aeroseg.AerOSeg
    from detectron2.data import DatasetCatalog as D2DatasetCatalog

    assert {"isaid_train", "isaid_val", "synthetic_aerial_train"} <= set(D2DatasetCatalog.list())


def test_tiny_config_with_base_merges_into_the_detectron2_config():
    cfg = tiny_cfg("MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "7", "MODEL.AEROSEG.FEATURE_DIM", "24")
    assert isinstance(cfg, d2_config.CfgNode)
    assert cfg.MODEL.CLIP.IMAGE_SIZE == 64 and cfg.MODEL.SAM.VARIANT == "vit_b"  # tiny_cpu.yaml
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.CLIP_MULTIPLIER == 0.01  # Base (_BASE_)
    assert cfg.MODEL.CLIP.PROMPT_TEMPLATES[0] == "A satellite image of a {}"  # Base
    assert cfg.MODEL.CLIP.ARCH_OVERRIDES.vision_cfg.layers == 2  # new_allowed node
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.AEROSEG.FEATURE_DIM == 24  # command-line opts
    assert "RPN" in cfg.MODEL and "ROI_HEADS" in cfg.MODEL  # detectron2's own keys are kept
    # detectron2's dump/load round trip (what its trainer writes to OUTPUT_DIR/config.yaml)
    reloaded = get_cfg()
    reloaded.merge_from_other_cfg(d2_config.CfgNode.load_cfg(cfg.dump()))
    a, b = _leaves(reloaded), _leaves(cfg)
    assert set(a) == set(b) and all(_same(a[k], b[k]) for k in a)  # YAML turns tuples into lists


def test_unknown_key_is_rejected_under_detectron2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  AEROSEG:\n    FEATUR_DIM: 3\n')
    with pytest.raises(KeyError, match="FEATUR_DIM"):
        get_cfg().merge_from_file(str(bad))


# ----------------------------------------------------------------------------------------- model
def test_meta_architecture_registered_in_detectron2():
    assert "AerOSeg" in d2_modeling.META_ARCH_REGISTRY
    assert d2_modeling.META_ARCH_REGISTRY.get("AerOSeg") is AerOSeg


def test_detectron2_build_model_trains_and_infers_on_cpu():
    cfg = tiny_cfg("MODEL.DEVICE", "cpu")
    model = d2_modeling.build_model(cfg)
    assert type(model) is AerOSeg
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.vocabulary == list(cfg.MODEL.AEROSEG.VOCABULARY)

    # one step of detectron2's own training loop
    batch = random_batch(n=2, size=64, num_classes=NUM_CLASSES)
    model.train()
    losses = model(batch)
    assert set(losses) == {"loss_bce", "loss_sem"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())

    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    trainer = SimpleTrainer(model, itertools.repeat(batch), optimizer)
    trainer.train(0, 1)
    assert trainer.iter == 1  # detectron2 leaves iter = max_iter after the loop
    history = trainer.storage.histories()
    assert {"total_loss", "loss_bce", "loss_sem"} <= set(history)
    assert torch.isfinite(torch.tensor(history["total_loss"].latest()))
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, trainable)), "nothing was trained"

    # inference: [{"sem_seg": (K, height, width)}], resized to the requested output size
    model.eval()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        outputs = model([{"image": image, "height": 80, "width": 96},
                         {"image": image, "height": 64, "width": 64}])
    assert isinstance(outputs, list) and len(outputs) == 2
    assert set(outputs[0]) == {"sem_seg"}
    assert tuple(outputs[0]["sem_seg"].shape) == (NUM_CLASSES, 80, 96)
    assert tuple(outputs[1]["sem_seg"].shape) == (NUM_CLASSES, 64, 64)
    assert torch.isfinite(outputs[0]["sem_seg"]).all()


def test_detectron2_and_aeroseg_build_model_agree():
    from aeroseg.modeling import build_model as aeroseg_build_model

    cfg = tiny_cfg("MODEL.DEVICE", "cpu")
    torch.manual_seed(3)
    a = d2_modeling.build_model(cfg)
    torch.manual_seed(3)
    b = aeroseg_build_model(cfg)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # detectron2's @configurable: from a config or from explicit arguments
    assert type(AerOSeg(cfg)) is AerOSeg and type(AerOSeg(cfg=cfg)) is AerOSeg
    assert type(AerOSeg(**AerOSeg.from_config(cfg))) is AerOSeg


# ----------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("writer,reader", [
    (AerOSegCheckpointer, DetectionCheckpointer),
    (DetectionCheckpointer, AerOSegCheckpointer),
], ids=["aeroseg-to-detectron2", "detectron2-to-aeroseg"])
def test_checkpoints_load_across_checkpointers(tmp_path, writer, reader):
    source, target = _d2_tiny_model(seed=1), _d2_tiny_model(seed=2)
    batch = random_batch(n=2, size=64, num_classes=NUM_CLASSES, seed=5)
    expected = _inference(source, batch)
    assert not all(torch.equal(a, b) for a, b in zip(expected, _inference(target, batch))), \
        "the two random models must differ for the test to mean anything"

    optimizer = torch.optim.AdamW([p for p in source.parameters() if p.requires_grad], lr=1e-3)
    writer(source, str(tmp_path), optimizer=optimizer).save("model_0000004", iteration=4)
    path = tmp_path / "model_0000004.pth"
    assert path.is_file() and (tmp_path / "last_checkpoint").read_text().strip() == path.name
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "iteration"} <= set(raw) and raw["iteration"] == 4

    fresh_optimizer = torch.optim.AdamW([p for p in target.parameters() if p.requires_grad], lr=1e-3)
    checkpointer = reader(target, str(tmp_path), optimizer=fresh_optimizer)
    assert checkpointer.has_checkpoint() and checkpointer.get_checkpoint_file() == str(path)
    extra = checkpointer.resume_or_load(str(path), resume=True)
    assert extra.get("iteration") == 4
    assert fresh_optimizer.state_dict()["param_groups"][0]["lr"] == 1e-3
    for a, b in zip(expected, _inference(target, batch)):
        assert torch.equal(a, b)
    assert list(REPO.glob("*.pth")) == []  # nothing written into the repository


def test_train_net_on_detectron2_default_trainer(tmp_path, monkeypatch):
    """--engine detectron2 trains with DefaultTrainer; its checkpoint evaluates on our engine."""
    import json
    from conftest import TINY_CONFIG

    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path / "datasets"))
    from aeroseg.engine import train_net

    out = tmp_path / "d2"
    assert train_net.run(["--engine", "detectron2", "--config-file", str(TINY_CONFIG), "OUTPUT_DIR", str(out),
                          "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2"]) == 0
    assert (out / "model_final.pth").is_file() and (out / "model_0000001.pth").is_file()
    d2_metrics = json.loads((out / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").read_text())
    ev = tmp_path / "ours"
    assert train_net.run(["--eval-only", "--config-file", str(TINY_CONFIG), "OUTPUT_DIR", str(ev),
                          "MODEL.WEIGHTS", str(out / "model_final.pth")]) == 0
    ours = json.loads((ev / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").read_text())
    assert ours["metrics"] == d2_metrics["metrics"]


# ------------------------------------------------------------------- the two engines are one
# Every run below is deterministic on the CPU, so "the same weights" means bit-identical tensors.
ENGINE_OPTS = ("SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "0")


@pytest.fixture
def train_net(tmp_path, monkeypatch):
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path / "datasets"))
    from aeroseg.engine import train_net as module

    return module


def _train(train_net, out, *opts, engine="aeroseg", flags=()):
    argv = ["--engine", engine, *flags, "--config-file", str(TINY_CONFIG), "OUTPUT_DIR", str(out), *opts]
    assert train_net.run(argv) == 0, f"train_net {' '.join(argv)} failed"
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)


def _assert_same_weights(a, b):
    assert list(a["model"]) == list(b["model"])
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _changed(a, b) -> bool:
    return any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_engines_give_the_same_weights_plain_clipped_and_bf16(train_net, tmp_path):
    runs = {}
    unclipped = ("SOLVER.CLIP_GRADIENTS.ENABLED", "False")
    for variant, opts in [
        ("plain", unclipped),
        # full-model norm clipping at 0.01 changes every step (the gradient norm is far above it)
        ("clipped", ("SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
                     "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.01")),
        ("bf16", (*unclipped, "SOLVER.AMP.ENABLED", "True")),  # bf16 autocast on the CPU, as the own engine
    ]:
        ours = _train(train_net, tmp_path / f"{variant}-own", *ENGINE_OPTS, *opts)
        theirs = _train(train_net, tmp_path / f"{variant}-d2", *ENGINE_OPTS, *opts, engine="detectron2")
        _assert_same_weights(ours, theirs)
        assert {"model", "optimizer", "scheduler", "iteration", "rng"} <= set(theirs)  # one checkpoint format
        assert theirs["iteration"] == ours["iteration"] == 2
        runs[variant] = ours
    # the options took effect (otherwise the comparisons above would prove nothing about them)
    assert _changed(runs["plain"], runs["clipped"]) and _changed(runs["plain"], runs["bf16"])


def test_engines_give_the_same_weights_with_two_processes(train_net, tmp_path):
    opts = (*ENGINE_OPTS, "SOLVER.MAX_ITER", "2")
    ours = _train(train_net, tmp_path / "own", *opts, flags=("--num-gpus", "2"))
    theirs = _train(train_net, tmp_path / "d2", *opts, engine="detectron2", flags=("--num-gpus", "2"))
    assert (tmp_path / "d2" / "log.txt.rank1").is_file()  # two processes did run
    _assert_same_weights(ours, theirs)


def _record_local_group(path):
    """Run in each launched process: what detectron2's comm reports about the local group."""
    from detectron2.utils import comm as d2_comm

    with open(f"{path}.{d2_comm.get_rank()}", "w") as f:
        f.write(f"{d2_comm.get_local_rank()} {d2_comm.get_local_size()} {d2_comm.get_world_size()}")


def test_launch_creates_detectron2_local_process_group(tmp_path):
    import socket

    from aeroseg.engine import launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch(_record_local_group, 2, dist_url=f"tcp://127.0.0.1:{port}", args=(str(tmp_path / "rank"),))
    assert [(tmp_path / f"rank.{r}").read_text() for r in (0, 1)] == ["0 2 2", "1 2 2"]


def test_launch_under_torchrun_creates_detectron2_local_process_group(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from aeroseg.engine import launch\n"
        "from detectron2.utils import comm\n"
        "def main(path):\n"
        "    with open(f'{path}.{comm.get_rank()}', 'w') as f:\n"
        "        f.write(f'{comm.get_local_rank()} {comm.get_local_size()} {comm.get_world_size()}')\n"
        "launch(main, 1, args=(sys.argv[1],))\n")  # --num-gpus is ignored under torchrun, as in train_net
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(port), str(script), str(tmp_path / "rank")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [(tmp_path / f"rank.{r}").read_text() for r in (0, 1)] == ["0 2 2", "1 2 2"]


@pytest.mark.parametrize("first,second", [("aeroseg", "detectron2"), ("detectron2", "aeroseg"),
                                          ("detectron2", "detectron2")])
def test_resume_continues_exactly_across_engines(train_net, tmp_path, first, second):
    """A 6-iteration run of ``first``, interrupted after its iteration-2 checkpoint and resumed
    with ``second``, ends with the weights of the uninterrupted own-engine run."""
    import shutil

    opts = ("SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()")
    reference = _train(train_net, tmp_path / "reference", *opts)
    run = tmp_path / "run"
    if first == "aeroseg":
        shutil.copytree(tmp_path / "reference", run)
    else:
        _assert_same_weights(_train(train_net, run, *opts, engine=first), reference)
    # the state of an interruption right after the checkpoint of iteration 2
    (run / "model_final.pth").unlink()
    (run / "last_checkpoint").write_text("model_0000002.pth")
    resumed = _train(train_net, run, *opts, engine=second, flags=("--resume",))
    _assert_same_weights(resumed, reference)
    midway = torch.load(run / "model_0000002.pth", map_location="cpu", weights_only=True)
    assert _changed(midway, reference)  # the resumed run did train iterations 3..5


def test_resume_refuses_a_plain_detectron2_checkpoint(train_net, tmp_path, capsys):
    model = _d2_tiny_model(seed=0)
    out = tmp_path / "plain-d2"
    out.mkdir()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    trainer = SimpleTrainer(model, [], optimizer)  # DefaultTrainer's format: states under "trainer"
    DetectionCheckpointer(model, str(out), trainer=trainer).save("model_0000002", iteration=2)
    before = (out / "model_0000002.pth").read_bytes()
    opts = ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()"]
    # The run's own config.yaml, so that the run-folder check passes and the checkpoint is what is refused.
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(opts)
    (out / "config.yaml").write_text(cfg.dump())
    for engine in ("aeroseg", "detectron2"):
        argv = ["--engine", engine, "--resume", "--config-file", str(TINY_CONFIG), *opts]
        assert train_net.run(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, errors  # one line
        err = errors[0]
        assert "DefaultTrainer" in err and "MODEL.WEIGHTS" in err and "model_0000002.pth" in err
    assert (out / "model_0000002.pth").read_bytes() == before and not (out / "model_final.pth").exists()


# ------------------------------------------------------------------------------ evaluation
def test_test_honours_overrides_and_detectron2_sem_seg_evaluator(tmp_path, monkeypatch):
    from detectron2.evaluation import SemSegEvaluator

    from aeroseg.data import MetadataCatalog, build_test_loader
    from aeroseg.engine.detectron2_trainer import Detectron2Trainer

    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path / "datasets"))
    cfg = tiny_cfg("MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out"), with_datasets=True)
    name = cfg.DATASETS.TEST[0]
    calls = []

    class Custom(Detectron2Trainer):
        @classmethod
        def build_test_loader(cls, cfg, dataset_name):
            calls.append(("loader", dataset_name))
            return build_test_loader(cfg, dataset_name)

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            calls.append(("evaluator", dataset_name))
            return SemSegEvaluator(dataset_name, distributed=False, output_dir=str(tmp_path / "d2eval"))

    model = _d2_tiny_model(seed=4)
    vocabulary = list(model.vocabulary)
    theirs = Custom.test(cfg, model)
    assert sorted(calls) == [("evaluator", name), ("loader", name)]
    assert model.vocabulary == vocabulary  # restored after evaluation on the test set's classes
    ours = Detectron2Trainer.test(cfg, model)  # AerOSeg's open-vocabulary evaluator
    # the same predictions scored by two evaluators: the overall mIoU must agree
    num_classes = len(MetadataCatalog.get(name).stuff_classes)
    assert len([k for k in theirs["sem_seg"] if k.startswith("IoU-")]) == num_classes
    assert theirs["sem_seg"]["mIoU"] == pytest.approx(ours["sem_seg"]["mIoU"], abs=1e-6)
