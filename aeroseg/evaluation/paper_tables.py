"""The paper's result tables (Tables 2-8): rows, the configs that reproduce them, published numbers.

Numbers are percentages as printed in the paper. ``configs`` maps a dataset to the config file
(relative to the repository) that reproduces the row on it; rows of other methods have none
and are shown for reference only.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

__all__ = ["DATASETS", "TEST_SETS", "Row", "Table", "TABLES", "config_id"]

DATASETS = {"isaid": "iSAID", "dlrsd": "DLRSD", "oem": "OEM"}
TEST_SETS = {"isaid": "isaid_val", "dlrsd": "dlrsd_val", "oem": "oem_val"}
SUH = ("s-mIoU", "u-mIoU", "h-mIoU")


@dataclass(frozen=True)
class Row:
    name: str
    paper: Dict[str, Tuple[float, ...]]  # dataset key or "avg" -> values in the table's metric order
    configs: Dict[str, str] = field(default_factory=dict)

    @property
    def reproducible(self) -> bool:
        return bool(self.configs)


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    datasets: Tuple[str, ...]
    metrics: Tuple[str, ...]
    rows: Tuple[Row, ...]
    average: bool = True  # the paper prints an "Average" column (mean of the per-dataset values)


def _per_dataset(path: str, datasets=("isaid", "dlrsd", "oem")) -> Dict[str, str]:
    return {d: path.format(d=d) for d in datasets}


MAIN = _per_dataset("configs/{d}/aeroseg_vitb.yaml")


def _h(isaid: float, dlrsd: float, oem: float, avg: float) -> Dict[str, Tuple[float, ...]]:
    return {"isaid": (isaid,), "dlrsd": (dlrsd,), "oem": (oem,), "avg": (avg,)}


TABLES: Dict[str, Table] = {
    "2": Table("2", "Table 2: comparison with the state of the art", ("isaid", "dlrsd", "oem"), SUH, (
        Row("SAN", {"isaid": (62.28, 35.77, 45.44), "dlrsd": (50.18, 12.62, 20.17), "oem": (45.36, 15.19, 22.76),
                    "avg": (52.61, 21.19, 29.46)}),
        Row("SCAN", {"isaid": (44.31, 35.55, 39.45), "dlrsd": (25.86, 20.10, 22.62), "oem": (31.85, 16.53, 21.77),
                     "avg": (34.01, 24.06, 27.95)}),
        Row("SED", {"isaid": (74.37, 36.00, 48.51), "dlrsd": (77.73, 27.00, 40.08), "oem": (57.46, 46.95, 51.68),
                    "avg": (69.85, 36.65, 46.76)}),
        Row("CAT-Seg", {"isaid": (72.57, 42.64, 53.70), "dlrsd": (52.79, 24.39, 33.36), "oem": (49.33, 39.51, 43.87),
                        "avg": (58.23, 35.51, 43.64)}),
        Row("OVRS", {"isaid": (75.85, 49.27, 59.73), "dlrsd": (61.00, 31.86, 41.86), "oem": (51.20, 47.23, 49.13),
                     "avg": (62.68, 42.79, 50.24)}),
        Row("AerOSeg (Ours)", {"isaid": (75.48, 51.46, 61.20), "dlrsd": (60.37, 39.12, 47.48),
                               "oem": (51.27, 48.16, 49.66), "avg": (62.37, 46.25, 52.78)}, MAIN),
    )),
    "3": Table("3", "Table 3: ablation of the components (h-mIoU)", ("isaid", "dlrsd", "oem"), ("h-mIoU",), (
        Row("Baseline", _h(57.88, 28.69, 46.86, 44.47), _per_dataset("configs/{d}/ablations/baseline.yaml")),
        Row("Config-A", _h(58.10, 39.93, 50.46, 49.49), _per_dataset("configs/{d}/ablations/config_a.yaml")),
        Row("Config-B", _h(59.32, 42.34, 47.16, 49.60), _per_dataset("configs/{d}/ablations/config_b.yaml")),
        Row("Config-C (Ours)", _h(61.20, 47.48, 49.66, 52.78), MAIN),
    )),
    "4": Table("4", "Table 4: fine-tuned vs frozen guidance encoder (h-mIoU)", ("isaid", "dlrsd", "oem"), ("h-mIoU",), (
        Row("Fine-tune", _h(61.56, 44.41, 47.03, 51.00), _per_dataset("configs/{d}/ablations/sam_finetune.yaml")),
        Row("Frozen (Ours)", _h(61.20, 47.48, 49.66, 52.78), MAIN),
    )),
    "5": Table("5", "Table 5: back-projection reconstruction target (h-mIoU)", ("isaid", "dlrsd", "oem"), ("h-mIoU",), (
        Row("RGB", _h(14.93, 40.03, 38.21, 31.06), _per_dataset("configs/{d}/ablations/target_rgb.yaml")),
        Row("CLIP features", _h(53.27, 42.10, 48.55, 47.97), _per_dataset("configs/{d}/ablations/target_clip.yaml")),
        Row("SAM features (Ours)", _h(61.20, 47.48, 49.66, 52.78), MAIN),
    )),
    "6": Table("6", "Table 6: guidance encoders on iSAID", ("isaid",), SUH, (
        Row("SAM ViT-L", {"isaid": (75.48, 51.46, 61.20)}, {"isaid": MAIN["isaid"]}),
        Row("SAM ViT-H", {"isaid": (74.90, 52.81, 61.94)}, {"isaid": "configs/isaid/guidance/sam_vith.yaml"}),
        Row("SAM2 Hiera-Base+", {"isaid": (77.63, 53.32, 63.22)},
            {"isaid": "configs/isaid/guidance/sam2_hiera_bplus.yaml"}),
        Row("SAM2.1 Hiera-Base+", {"isaid": (77.06, 53.93, 63.45)},
            {"isaid": "configs/isaid/guidance/sam2.1_hiera_bplus.yaml"}),
    ), average=False),
    "7": Table("7", "Table 7 (supplementary): vision-language backbones on iSAID", ("isaid",), SUH, (
        Row("CLIP ViT-B", {"isaid": (75.48, 51.46, 61.20)}, {"isaid": MAIN["isaid"]}),
        Row("CLIP ViT-L", {"isaid": (79.85, 66.80, 72.74)}, {"isaid": "configs/isaid/backbones/clip_vitl14.yaml"}),
        Row("GeoRSCLIP ViT-L", {"isaid": (75.47, 50.32, 60.38)},
            {"isaid": "configs/isaid/backbones/georsclip_vitl14.yaml"}),
        Row("SkyCLIP ViT-L", {"isaid": (66.75, 57.79, 61.95)},
            {"isaid": "configs/isaid/backbones/skyclip_vitl14.yaml"}),
    ), average=False),
    "8": Table("8", "Table 8 (supplementary): mIoU over all classes", ("isaid", "dlrsd", "oem"), ("mIoU",), (
        Row("SegEarth-OV", {"isaid": (17.87,), "dlrsd": (18.92,), "oem": (29.72,)}),
        Row("AerOSeg (Ours)", {"isaid": (65.87,), "dlrsd": (51.62,), "oem": (49.71,)}, MAIN),
    ), average=False),
}


def config_id(config_path: str) -> str:
    """``configs/isaid/ablations/baseline.yaml`` -> ``isaid/ablations/baseline`` (its results folder)."""
    path = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    return path[: -len(".yaml")] if path.endswith(".yaml") else path


def lookup(table: str, row: str) -> Optional[Row]:
    return next((r for r in TABLES[table].rows if r.name == row), None)
