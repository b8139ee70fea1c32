from setuptools import find_packages, setup

SAM2 = "sam2==1.1.0; python_version >= '3.10'"
SUBMITIT = "submitit>=1.5"
# Console scripts (tests/test_packaging.py checks that each target exists and answers --help).
ENTRY_POINTS = [
    "aeroseg-train = aeroseg.engine.train_net:run",
    "aeroseg-predict = aeroseg.inference.cli:main",
    "aeroseg-demo = aeroseg.demo.app:main",
]
# The web demo (aeroseg-demo): Gradio 6 (the page uses its launch(css=..., footer_links=...)), which
# needs Python >= 3.10. Its browser test also needs selenium and Debian's chromium + chromium-driver
# (system packages; .ci/run installs them).
DEMO = ["gradio>=6.0; python_version >= '3.10'"]
SELENIUM = "selenium>=4.10; python_version >= '3.10'"

setup(
    name="aeroseg",
    version="0.1.0",
    description="AerOSeg: open-vocabulary semantic segmentation of remote-sensing imagery "
                "(CLIP correlation refined with SAM guidance)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # configs/ stays at the top of a checkout and is installed inside the package as
    # aeroseg.model_zoo.configs (aeroseg.model_zoo.get_config_file). The command-line programs live
    # in the package (console scripts below; tools/*.py are thin wrappers for checkouts).
    packages=find_packages(include=["aeroseg", "aeroseg.*"]) + ["aeroseg.model_zoo.configs"],
    package_dir={"aeroseg.model_zoo.configs": "configs"},
    package_data={"aeroseg.model_zoo.configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml", "*/*/*/*.yaml"]},
    entry_points={"console_scripts": ENTRY_POINTS},
    # timm is not declared: the refinement blocks' MLPs are nn.Sequential(Linear, act, Linear), the
    # computation of timm.layers.Mlp without dropout (CAT-Seg's DropPath and dropouts are 0), and
    # trunc_normal_ comes from torch; timm's Mlp would rename the checkpoint keys (mlp.0 -> mlp.fc1)
    # of every AerOSeg checkpoint. (open_clip still installs timm for itself.)
    install_requires=[
        "torch>=2.1",
        "rasterio>=1.3",
        "torchvision>=0.16",
        "open_clip_torch>=3.0",
        "segment-anything>=1.0",
        "einops>=0.7",
        "fvcore>=0.1.5.post20221221",
        "opencv-python-headless>=4.8",
        "pillow>=9.0",
        "numpy>=1.23",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "safetensors>=0.4",
    ],
    extras_require={
        # SAM 2 / 2.1 guidance encoders (paper Table 6). Optional: sam2 needs Python >= 3.10 and
        # torch >= 2.5.1, and its iopath>=0.1.10 clashes with detectron2's iopath<0.1.10 pin.
        "sam2": [SAM2],
        # Submitting runs to SLURM (--launcher slurm|local, docs/CLUSTER.md).
        "cluster": [SUBMITIT],
        "demo": DEMO,
        # Development: the test suite, which also covers the SAM 2 code paths, the launcher and
        # the web demo (in a real browser through selenium).
        "dev": ["pytest>=7.0", "ruff>=0.5", SAM2, SUBMITIT, *DEMO, SELENIUM],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
