"""espnet_ext: CIF ASR with hierarchical distillation and DR-KD internal-LM estimation for ESPnet2."""
from setuptools import find_packages, setup

# Pinned, tested versions (Python 3.11). torch 2.13 conflicts with espnet's setuptools<74 pin.
install_requires = [
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "espnet==202511",
    "transformers==5.23.0",
    "kaldiio==2.18.1",
    "sentencepiece==0.2.0",
    "pyyaml==6.0.3",
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
]
extras_require = {
    "test": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "hypothesis==6.170.15",
        "torch-cif==0.2.0",
    ],
}

setup(
    name="espnet_ext",
    version="0.1.0",
    description="ESPnet2 extension: CIF ASR + hierarchical KD, internal-LM estimation and DR-KD",
    packages=find_packages(include=["espnet_ext", "espnet_ext.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=install_requires,
    extras_require=extras_require,
)
