"""Every AerOSeg-specific config key, with its paper default and a one-line meaning."""
from fvcore.common.config import CfgNode

# The four remote-sensing prompt templates of the paper (Sec. 3.1, after Li et al.), as printed
# there (no full stop).
REMOTE_SENSING_TEMPLATES = [
    "A satellite image of a {}",
    "A land use image of a {}",
    "A remote sensing image of a {}",
    "An aerial image of a {}",
]
# The single generic template of the Baseline / Config-A / Config-B ablations (Table 3): CAT-Seg's
# and OVRS's "single" prompt, which the paper quotes in Sec. 3.1 (its Sec. 4.5 says "in a scene").
GENERIC_TEMPLATES = ["A photo of a {} in the scene"]

# OpenAI CLIP and SAM pixel statistics on the 0..255 RGB scale.
CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]
SAM_PIXEL_MEAN = [123.675, 116.28, 103.53]
SAM_PIXEL_STD = [58.395, 57.12, 57.375]


def add_aeroseg_config(cfg: CfgNode) -> None:
    """Add AerOSeg's keys (paper defaults) to ``cfg`` in place; detectron2's keys are not touched.

    ``cfg`` is ``detectron2.config.get_cfg()`` or, without detectron2, its stand-in
    :mod:`aeroseg.compat.config_defaults`. Like Mask2Former's and CAT-Seg's ``add_*_config`` this only
    adds keys: AerOSeg's values of detectron2's keys (``MODEL.META_ARCHITECTURE: "AerOSeg"``,
    ``INPUT.FORMAT: "RGB"``, ``SOLVER.BASE_LR``, ...) are in ``configs/Base-AerOSeg.yaml``. New
    nodes are created with the config's own class (yacs refuses to merge a detectron2 node into an
    fvcore one).
    """
    CN = type(cfg)
    cfg.CPU_ALLOCATOR = "retain"  # CPU runs: "retain" keeps freed memory in the process (no page faults), or "system"
    # torch.compile the transformer blocks and head modules (same outputs; first calls compile)
    cfg.MODEL.COMPILE = False
    cfg.MODEL.COMPILE_BACKEND = "inductor"  # torch.compile backend used when MODEL.COMPILE is True
    cfg.SOLVER.CLIP_MULTIPLIER = 0.01  # lr of CLIP's trainable params = BASE_LR x this (2e-6 / 2e-4)
    cfg.SOLVER.GUIDANCE_MULTIPLIER = 0.1  # lr of the guidance encoder when it is fine-tuned (Table 4: 2e-5)
    cfg.SOLVER.OPTIMIZER = "ADAMW"  # the paper trains with AdamW
    cfg.SOLVER.POLY_LR_POWER = 0.9  # exponent of SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR"
    cfg.TEST.IMS_PER_BATCH = 1  # images per model call in evaluation (speed only; results do not depend on it)
    cfg.INPUT.RANDOM_ROTATE_90 = False  # training augmentation: rotate by a random multiple of 90 degrees
    # training augmentation: SSD photometric distortions of the image (CAT-Seg's COLOR_AUG_SSD)
    cfg.INPUT.COLOR_AUG_SSD = False
    # Extra datasets: [{NAME, ROOT, CLASSES, UNSEEN}] registered as NAME_train / NAME_val
    # (see docs/GETTING_STARTED.md, "Datasets").
    cfg.DATASETS.CUSTOM = []
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False  # training: skip (and count) unreadable samples instead of stopping
    cfg.DATALOADER.OUT_OF_RANGE_LABELS = "error"  # label values >= #classes (not ignore): "error" or "ignore" (counted)

    # ---------------------------------------------------------------- vision-language backbone
    cfg.MODEL.CLIP = CN()
    cfg.MODEL.CLIP.NAME = "ViT-B-16"  # open_clip architecture name
    # open_clip pretrained tag, a local checkpoint file, "synthetic_aerial" (pretrained here, the CPU demo) or "" for
    # random init
    cfg.MODEL.CLIP.PRETRAINED = "openai"
    cfg.MODEL.CLIP.IMAGE_SIZE = 384  # CLIP input side; 384 / patch 16 = 24x24 dense tokens
    # open_clip model-config entries that replace the named architecture's (e.g. a tiny test model).
    cfg.MODEL.CLIP.ARCH_OVERRIDES = CN(new_allowed=True)
    # "attention_qv" (paper: q/v projection weights), "none" (frozen) or "full"
    cfg.MODEL.CLIP.FINETUNE = "attention_qv"
    # Dense image features: "value" (CAT-Seg/OVRS: last block without token mixing) or "tokens" (its ordinary output).
    cfg.MODEL.CLIP.DENSE_FEATURES = "value"
    cfg.MODEL.CLIP.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)  # CLIP normalisation mean (0..255 RGB)
    cfg.MODEL.CLIP.PIXEL_STD = list(CLIP_PIXEL_STD)  # CLIP normalisation std (0..255 RGB)
    cfg.MODEL.CLIP.ROTATIONS = [0, 90, 180, 270]  # degrees (multiples of 90) the image is rotated by
    # "batched": one forward over all rotations; "sequential": one per rotation
    cfg.MODEL.CLIP.ROTATION_BATCHING = "batched"
    cfg.MODEL.CLIP.PROMPT_TEMPLATES = list(REMOTE_SENSING_TEMPLATES)  # "{}" is replaced by the class name
    # 0-based CLIP blocks whose outputs guide refinement/decoder when MODEL.GUIDANCE.ENCODER = "CLIP".
    cfg.MODEL.CLIP.GUIDANCE_LAYERS = [3, 7]

    # ---------------------------------------------------------------- guidance encoder
    cfg.MODEL.GUIDANCE = CN()
    # "SAM" (paper), "SAM2" (SAM 2 / 2.1 Hiera, Table 6) or "CLIP" (Baseline: CLIP's own features guide)
    cfg.MODEL.GUIDANCE.ENCODER = "SAM"

    cfg.MODEL.SAM = CN()
    cfg.MODEL.SAM.VARIANT = "vit_l"  # segment-anything image encoder: "vit_b", "vit_l" or "vit_h"
    cfg.MODEL.SAM.CHECKPOINT = ""  # SAM .pth (full SAM or encoder-only state dict); "" = random init
    # SAM input side; positional embeddings are resized if it differs from the checkpoint
    cfg.MODEL.SAM.INPUT_SIZE = 1024
    # 1-based blocks whose outputs are F1, F2, F3 (F3 = spatial guidance + L_sem target)
    cfg.MODEL.SAM.TAP_LAYERS = [8, 16, 24]
    cfg.MODEL.SAM.FROZEN = True  # keep the guidance encoder frozen (paper); False fine-tunes it (Table 4)
    # pass the last tap through SAM's neck (256 channels) instead of the raw block output
    cfg.MODEL.SAM.USE_NECK = False
    cfg.MODEL.SAM.PIXEL_MEAN = list(SAM_PIXEL_MEAN)  # SAM normalisation mean (0..255 RGB)
    cfg.MODEL.SAM.PIXEL_STD = list(SAM_PIXEL_STD)  # SAM normalisation std (0..255 RGB)
    # "sdpa": fused scaled_dot_product_attention (same result); "reference": segment-anything's forward
    cfg.MODEL.SAM.ATTENTION = "sdpa"
    # ImageEncoderViT arguments that replace the variant's (embed_dim, depth, num_heads, ...), e.g. a tiny test encoder.
    cfg.MODEL.SAM.ARCH_OVERRIDES = CN(new_allowed=True)

    # SAM 2 / SAM 2.1 Hiera trunk, used when MODEL.GUIDANCE.ENCODER = "SAM2" (needs the sam2 package).
    cfg.MODEL.SAM2 = CN()
    # Hiera trunk: "hiera_t", "hiera_s", "hiera_b+" or "hiera_l" (same for SAM 2 and 2.1)
    cfg.MODEL.SAM2.VARIANT = "hiera_b+"
    # SAM 2 or 2.1 .pt (release {"model": ...} or trunk-only state dict); "" = random init
    cfg.MODEL.SAM2.CHECKPOINT = ""
    cfg.MODEL.SAM2.INPUT_SIZE = 1024  # SAM 2 input side (a multiple of 32 for the released trunks)
    # 1-based trunk blocks whose outputs are F1, F2, F3; [] = 1/3, 2/3, 3/3 of the depth (B+: 8, 16, 24)
    cfg.MODEL.SAM2.TAP_BLOCKS = []
    cfg.MODEL.SAM2.FROZEN = True  # keep the SAM 2 trunk frozen (as SAM in the paper); False fine-tunes it
    cfg.MODEL.SAM2.PIXEL_MEAN = list(SAM_PIXEL_MEAN)  # SAM 2 normalisation mean (ImageNet, 0..255 RGB; same as SAM's)
    cfg.MODEL.SAM2.PIXEL_STD = list(SAM_PIXEL_STD)  # SAM 2 normalisation std (ImageNet, 0..255 RGB; same as SAM's)
    # Hiera arguments that replace the variant's (embed_dim, num_heads, stages, window_spec, ...),
    # e.g. a tiny test trunk.
    cfg.MODEL.SAM2.ARCH_OVERRIDES = CN(new_allowed=True)

    # ---------------------------------------------------------------- correlation + refinement head
    cfg.MODEL.AEROSEG = CN()
    cfg.MODEL.AEROSEG.VOCABULARY = []  # class names used when no dataset metadata provides them
    cfg.MODEL.AEROSEG.FEATURE_DIM = 128  # d_F: channels of the embedded correlation volume
    cfg.MODEL.AEROSEG.CORRELATION_KERNEL = 7  # kernel of the conv embedding of the correlation volume
    cfg.MODEL.AEROSEG.NUM_REFINEMENT_BLOCKS = 2  # (spatial + class) refinement blocks
    cfg.MODEL.AEROSEG.SPATIAL_GUIDANCE_DIM = 128  # channels the guidance (F3) is projected to by P_v
    cfg.MODEL.AEROSEG.TEXT_GUIDANCE_DIM = 128  # channels the prompt-averaged text embedding is projected to by P_t
    cfg.MODEL.AEROSEG.SPATIAL_NUM_HEADS = 4  # heads of the Swin (shifted-)window attention
    cfg.MODEL.AEROSEG.WINDOW_SIZE = 12  # Swin window side in tokens
    cfg.MODEL.AEROSEG.CLASS_NUM_HEADS = 4  # heads of the linear attention across classes
    cfg.MODEL.AEROSEG.MLP_RATIO = 4.0  # hidden/in ratio of the MLPs inside refinement blocks
    # avg-pool window before the class attention, upsampled after (CAT-Seg ViT-B/L: 2x2; [1, 1] = off)
    cfg.MODEL.AEROSEG.CLASS_POOLING_SIZE = [2, 2]
    # class axis padded to this length by a learnable token, in closed form (CAT-Seg: 256; 0 = no padding)
    cfg.MODEL.AEROSEG.CLASS_PAD_LEN = 256
    # LayerNorm on the projected guidance before it joins the Swin q/k (CAT-Seg)
    cfg.MODEL.AEROSEG.SPATIAL_GUIDANCE_NORM = True
    # Swin relative-position bias in the spatial refinement (not in CAT-Seg)
    cfg.MODEL.AEROSEG.SPATIAL_RELATIVE_POSITION_BIAS = False
    cfg.MODEL.AEROSEG.DECODER_DIMS = [64, 32]  # channels of the attention-aware upsampling stages (each x2)
    cfg.MODEL.AEROSEG.DECODER_GUIDANCE_DIMS = [32, 16]  # channels the guidance of each decoder stage is projected to
    cfg.MODEL.AEROSEG.DECODER_GUIDANCE_TAPS = [0, 1]  # which guidance tap (0 = F1, 1 = F2) feeds each decoder stage
    # decoder attention weights: "none" = conv(avgpool) as paper Eqs. 8-9 / OVRS, or "sigmoid"
    cfg.MODEL.AEROSEG.DECODER_ATTENTION_ACTIVATION = "none"
    # L_sem target: "SAM" (F3 of SAM or SAM 2), "CLIP" (dense CLIP), "RGB" (pixels), "NONE"
    cfg.MODEL.AEROSEG.BACK_PROJECTION_TARGET = "SAM"
    cfg.MODEL.AEROSEG.BACK_PROJECTION_HIDDEN_DIM = 512  # hidden width of the 3-layer back-projection MLP
    cfg.MODEL.AEROSEG.BCE_WEIGHT = 1.0  # weight of L_bce
    # Ignored pixels in L_bce: "negative" (CAT-Seg/OVRS: all-zero target for every class) or "exclude" (dropped).
    cfg.MODEL.AEROSEG.BCE_IGNORED = "negative"
    cfg.MODEL.AEROSEG.SEM_WEIGHT = 1.0  # weight of L_sem (paper: L = L_bce + L_sem)
