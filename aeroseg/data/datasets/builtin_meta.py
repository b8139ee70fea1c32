"""Class orders, palettes and seen/unseen splits of the built-in datasets (docs/DESIGN.md, "Datasets").

The class index of a processed label is its position in ``*_CLASSES``; the unseen lists are the
paper's Table 1. Everything else derives from these constants.
"""
ISAID_CLASSES = [
    "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
    "ground track field", "bridge", "large vehicle", "small vehicle", "helicopter",
    "swimming pool", "roundabout", "soccer ball field", "plane", "harbor",
]
# RGB colour of each class in the iSAID semantic masks (background (0, 0, 0) is not a class).
ISAID_PALETTE = [
    (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191),
    (0, 63, 255), (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191),
    (0, 0, 255), (0, 191, 127), (0, 127, 191), (0, 127, 255), (0, 100, 155),
]
ISAID_UNSEEN = ["tennis court", "bridge", "small vehicle", "helicopter", "soccer ball field", "harbor"]

DLRSD_CLASSES = [
    "airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass",
    "mobile home", "pavement", "sand", "sea", "ship", "tanks", "trees", "water",
]
DLRSD_UNSEEN = ["airplane", "bare soil", "buildings", "cars", "pavement", "sea", "trees"]

OEM_CLASSES = [
    "bareland", "rangeland", "developed space", "road", "tree", "water", "agriculture land", "building",
]
OEM_UNSEEN = ["developed space", "tree", "water", "agriculture land"]

# name -> (classes, unseen classes); the folder below $AEROSEG_DATASETS is the same name.
BUILTIN_DATASETS = {
    "isaid": (ISAID_CLASSES, ISAID_UNSEEN),
    "dlrsd": (DLRSD_CLASSES, DLRSD_UNSEEN),
    "oem": (OEM_CLASSES, OEM_UNSEEN),
}
PREPARE_COMMANDS = {
    "isaid": "python datasets/prepare_isaid.py --src RAW_ISAID --dst {root}",
    "dlrsd": "python datasets/prepare_dlrsd.py --images UCMerced_LandUse/Images --labels DLRSD/Labels --dst {root}",
    "oem": "python datasets/prepare_oem.py --src OpenEarthMap_wo_xBD --dst {root}",
}
