"""Installable GMP-TL recipe: the shared ``lobes`` package (the recipes import it)."""

from setuptools import find_packages, setup

setup(
    name="gmp-tl",
    version="0.1.0",
    description="GMP-TL speech emotion recognition as a SpeechBrain recipe",
    packages=find_packages(include=["lobes", "lobes.*"]),
    python_requires=">=3.11",
    # Exact pins live in requirements.txt (installed by `make venv`); these are the floors.
    install_requires=[
        "torch>=2.9",
        "torchaudio>=2.9",
        "speechbrain>=1.1.2",
        "transformers",
        "scikit-learn",
        "faiss-cpu",
        "hyperpyyaml",
        "numpy",
        "scipy",
        "soundfile",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        # gmptl-export --onnx and gmptl-classify --backend onnx (onnxruntime alone runs a model)
        "onnx": ["onnx", "onnxruntime"],
        # gmptl-app, the local browser page
        "app": ["gradio"],
        # the Slurm launcher (lobes.runner.launchers.slurm) queues jobs through submitit
        "slurm": ["submitit>=1.5"],
    },
    entry_points={
        "console_scripts": [
            "gmptl-export=lobes.deploy.export:main",
            "gmptl-classify=lobes.deploy.classify_cli:main",
            "gmptl-compare=lobes.runner.compare_cli:main",
            "gmptl-app=lobes.deploy.app:main",
        ],
    },
)
