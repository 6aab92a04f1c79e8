"""Install with ``pip install -e .`` (tests: ``pip install -e ".[test]"``); see README for torch and
the embedded model."""

from setuptools import find_packages, setup

setup(
    name="medusa",
    version="0.1.0",
    description=(
        "Medusa multi-head parallel decoding for causal LMs, evaluated on IN22 Indic translation"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["medusa", "medusa.*"]),
    package_data={
        "medusa": [
            "samples/*",
            "embedded_default/*",
            "embedded_default/adapter/*",
            "embedded_default/faithful/*",
            "embedded_default/faithful/adapter/*",
        ]
    },
    py_modules=[],
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "sacrebleu>=2.4",
        "rouge-score>=0.1.2",
        "huggingface-hub>=1.0",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "accelerate>=1.0",
        "gguf>=0.10",
        "peft>=0.13",
        # imported by the course's starter code: submissions graded with --generator
        "jaxtyping>=0.2",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=8"]},
    entry_points={"console_scripts": ["medusa=medusa.cli:main"]},
)
