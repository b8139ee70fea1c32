import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.config import get_cfg
from aeroseg.data import DatasetCatalog, MetadataCatalog

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo" / "tiny_cpu.yaml"
# The demo with a random 2-block CLIP at 64 px: what the tests of code paths build (no pretraining).
TINY_CONFIG = REPO / "tests" / "fixtures" / "tiny_random_clip.yaml"
# Golden tensors of the reference code (tests/parity) and other small files the tests read.
FIXTURES = REPO / "tests" / "fixtures"
BASE_CONFIG = REPO / "configs" / "Base-AerOSeg.yaml"
# Real raw-dataset sample files (iSAID PNGs, an OpenEarthMap GeoTIFF). Their licences keep them out
# of the repository: $AEROSEG_SAMPLES names the folder, default ../shared/data/samples next to the
# checkout. Tests that need them call require_samples(), which skips with the reason when absent.
SAMPLES = Path(os.environ.get("AEROSEG_SAMPLES", REPO.parent / "shared" / "data" / "samples")).resolve()

# open_clip warns about random initialisation on every tiny build; that is intended here.
logging.getLogger().setLevel(logging.ERROR)


def tiny_cfg(*opts, with_datasets: bool = False):
    """The tiny config; by default without datasets (the model then uses its 6-class vocabulary)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    if not with_datasets:
        cfg.merge_from_list(["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    cfg.merge_from_list(list(opts))
    return cfg


def require_samples(*parts: str) -> Path:
    """``SAMPLES/parts...``, or skip the calling test saying where the samples were looked for."""
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset samples not found at {path}: set AEROSEG_SAMPLES to the folder "
                    f"holding isaid/ and openearthmap/ (they live outside the repository)")
    return path


class PointwiseModel(torch.nn.Module):
    """Scores depend on each pixel only: stitched windows must equal the whole-image result."""

    vocabulary = ["a", "b"]

    def forward(self, inputs):
        out = []
        for item in inputs:
            img = item["image"].float() / 255
            out.append({"sem_seg": torch.stack([img[0] * img[1], img[2]])})
        return out


def build_tiny(*opts, seed: int = 0):
    from aeroseg.modeling import build_model

    torch.manual_seed(seed)
    return build_model(tiny_cfg(*opts))


def random_batch(n: int = 2, size: int = 64, num_classes: int = 6, seed: int = 0, ignore_fraction: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        label = torch.randint(0, num_classes, (size, size), generator=g)
        label[torch.rand(size, size, generator=g) < ignore_fraction] = 255
        batch.append({"image": image, "sem_seg": label, "height": size, "width": size})
    return batch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def config_leaves(node) -> dict:
    """{"A.B.C": value} for every non-node entry of a (nested) CfgNode."""
    from aeroseg.engine.run_folder import flatten

    return flatten(node)


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """One $AEROSEG_DATASETS folder per test module (the synthetic set is generated once there)."""
    return tmp_path_factory.mktemp("datasets")


def run_train_net(out, *opts, flags=(), config=TINY_CONFIG):
    """``tools/train_net.py [flags] --config-file <config> OUTPUT_DIR out opts...`` in-process; its exit code."""
    from aeroseg.engine import train_net

    return train_net.run([*flags, "--config-file", str(config), "OUTPUT_DIR", str(out), *opts])


# ----------------------------------------------------------------------------- fabricated datasets
# The synthetic dataset's classes, for folder datasets the tests make themselves.
CLASSES = ["building", "road", "tree", "water", "low vegetation", "car"]
UNSEEN = ["water", "car"]


@pytest.fixture
def datasets_env(datasets_dir, monkeypatch):
    """$AEROSEG_DATASETS set to the module's datasets folder (use with pytest.mark.usefixtures)."""
    monkeypatch.setenv("AEROSEG_DATASETS", str(datasets_dir))


def fabricate_folder_dataset(root, n_train=4, n_val=4, size=64, seed=0):
    """A 6-class folder dataset (root/{train,val}/{images,labels}); labels use all 6 classes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("images", "labels"):
            os.makedirs(root / split / sub, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{split}{i}.png")
            label = (np.arange(size)[None, :].repeat(size, 0) * 6 // size).astype(np.uint8)
            Image.fromarray(label).save(root / split / "labels" / f"{split}{i}.png")
    return root


@pytest.fixture
def fab(tmp_path):
    """(dataset name, root, config opts registering it as DATASETS.CUSTOM and using it)."""
    root = fabricate_folder_dataset(tmp_path / "fab")
    name = f"fab{abs(hash(str(tmp_path))) % 10 ** 8}"
    custom = repr([{"NAME": name, "ROOT": str(root), "CLASSES": CLASSES, "UNSEEN": UNSEEN}])
    opts = ("DATASETS.CUSTOM", custom, "DATASETS.TRAIN", f"('{name}_train',)",
            "DATASETS.TEST", f"('{name}_val',)", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "0")
    yield name, root, opts
    for split in ("train", "val"):
        if f"{name}_{split}" in DatasetCatalog:
            DatasetCatalog.remove(f"{name}_{split}")
            MetadataCatalog.remove(f"{name}_{split}")


def error_line(capsys) -> str:
    """The one-line ``error: ...`` a command printed to stderr (after any tqdm bars)."""
    err = capsys.readouterr().err.strip().rsplit("\r", 1)[-1].strip()  # after tqdm's progress bars
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def poison_label(root, split, stem, values):
    path = root / split / "labels" / f"{stem}.png"
    label = np.asarray(Image.open(path)).copy()
    for i, v in enumerate(values):
        label[i, :5] = v
    Image.fromarray(label).save(path)
    return path


# ----------------------------------------------------------------------------- the web demo
DEMO_MAX_PIXELS = 40_000  # the test server's --max-pixels


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_scene(path, rows: int = 2, cols: int = 3, seed: int = 0):
    """A mosaic of rows x cols 64-px synthetic aerial tiles, saved to ``path`` (PNG); the array."""
    from aeroseg.data.datasets.synthetic import render_synthetic_scene

    rng = np.random.default_rng(seed)
    image = np.concatenate([np.concatenate([render_synthetic_scene(rng, 64)[0] for _ in range(cols)], 1)
                            for _ in range(rows)], 0)
    Image.fromarray(image).save(path)
    return image


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """The web demo around the tiny model (random weights), served on a free local port.

    Yields ``(url, session)``; the server runs in a thread of the test process. Skips when
    Gradio is not installed.
    """
    pytest.importorskip("gradio", reason='the web demo needs Gradio: pip install "aeroseg[demo]"')
    from aeroseg.demo import DemoSession
    from aeroseg.demo.app import build_app, launch
    from aeroseg.inference import SlidingWindowPredictor

    torch.manual_seed(0)
    predictor = SlidingWindowPredictor.from_config_file(
        str(TINY_CONFIG), opts=["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"], batch_size=2, cache_mb=64)
    session = DemoSession(predictor, max_pixels=DEMO_MAX_PIXELS, work_dir=str(tmp_path_factory.mktemp("demo")))
    app = build_app(session)
    port = free_port()
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", session
    app.close()
    session.close()
