"""aeroseg.compat is the one place that chooses between detectron2 and AerOSeg's own equivalents."""
import ast

import pytest

import aeroseg.compat as compat
from aeroseg.compat import catalog, config_decorator, evaluator
from conftest import REPO

# Modules that are detectron2 code by purpose: the detectron2 engine (imported only when
# --engine detectron2 is chosen) and the command line that refuses that engine without it.
DETECTRON2_ENGINE = {"aeroseg/engine/detectron2_trainer.py", "aeroseg/engine/train_net.py"}


def _detectron2_uses(path):
    """(line, what) of every detectron2 import and detectron2_available() call in a source file."""
    tree = ast.parse(path.read_text(), str(path))
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            uses += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "detectron2"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "detectron2":
            uses.append((node.lineno, f"from {node.module}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) \
                == "detectron2_available":
            uses.append((node.lineno, "detectron2_available()"))
    return uses


def test_only_compat_branches_on_detectron2():
    found = {}
    for path in sorted((REPO / "aeroseg").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("aeroseg/compat/") or rel in DETECTRON2_ENGINE:
            continue
        uses = _detectron2_uses(path)
        if uses:
            found[rel] = uses
    assert not found, f"detectron2 is chosen outside aeroseg/compat: {found}"
    assert _detectron2_uses(REPO / "aeroseg" / "compat" / "__init__.py")  # the check sees real uses


def test_each_name_is_bound_to_detectron2_or_to_the_fallback():
    names = {
        "DatasetCatalog": ("detectron2.data", catalog.DatasetCatalog),
        "MetadataCatalog": ("detectron2.data", catalog.MetadataCatalog),
        "Metadata": ("detectron2.data.catalog", catalog.Metadata),
        "configurable": ("detectron2.config", config_decorator.configurable),
        "DatasetEvaluator": ("detectron2.evaluation", evaluator.DatasetEvaluator),
        "DatasetEvaluators": ("detectron2.evaluation", evaluator.DatasetEvaluators),
        "META_ARCH_REGISTRY": ("detectron2.modeling", None),
    }
    for name, (d2_module, fallback) in names.items():
        bound = getattr(compat, name)
        if compat.detectron2_available():  # pragma: no cover - only where detectron2 is installed
            assert bound is getattr(pytest.importorskip(d2_module), name), name
        elif fallback is not None:
            assert bound is fallback, name
    from aeroseg.modeling.build import META_ARCH_REGISTRY

    assert META_ARCH_REGISTRY is compat.META_ARCH_REGISTRY and "AerOSeg" in compat.META_ARCH_REGISTRY


def test_base_config_is_a_fresh_copy_of_detectron2s_keys():
    first, second = compat.base_config(), compat.base_config()
    assert first.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and first.SOLVER.IMS_PER_BATCH == 16
    assert not hasattr(first.MODEL, "AEROSEG")  # AerOSeg's keys are added by get_cfg, not here
    first.SOLVER.IMS_PER_BATCH = 4
    assert second.SOLVER.IMS_PER_BATCH == 16


def test_the_fallback_catalog_refuses_a_second_registration_and_a_changed_metadata():
    datasets, metadata = catalog._DatasetCatalog(), catalog._MetadataCatalog()
    datasets.register("a", lambda: [{"file_name": "x"}])
    with pytest.raises(AssertionError, match="already registered"):
        datasets.register("a", list)
    assert datasets.get("a") == [{"file_name": "x"}] and "a" in datasets
    metadata.get("a").set(stuff_classes=["road"])
    metadata.get("a").set(stuff_classes=["road"])  # the same value again is fine
    with pytest.raises(AssertionError, match="cannot be set to a different value"):
        metadata.get("a").stuff_classes = ["tree"]
