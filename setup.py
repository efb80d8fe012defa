from setuptools import find_packages, setup

setup(
    name="dcdc",
    version="0.1.0",
    description="Dual Complementary Dynamic Convolution (DCDC) and DCDC-ResNets for Detectron2",
    python_requires=">=3.10",
    package_dir={"dcdc": "projects/DCDC"},
    packages=["dcdc"] + [f"dcdc.{p}" for p in find_packages("projects/DCDC")],
    # torch/torchvision/detectron2 are installed by `make install` (see README): detectron2 is not
    # on PyPI, and a user's own detectron2 / CUDA torch must be kept.
    install_requires=["pycocotools", "opencv-python-headless", "matplotlib", "tabulate"],
)
