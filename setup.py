import os
import warnings

from setuptools import find_packages, setup


def native_extension_kwargs():
    """The optional native CPU kernels ``dcdc._C`` (LSA aggregation, the kernel generator's
    depth-wise convs; C++ with OpenMP), the ``native`` backend of the ``torch.ops.dcdc`` ops.

    It is built with torch.utils.cpp_extension when torch and a C++ compiler are available,
    unless the build-time variable ``DCDC_BUILD_NATIVE=0`` (default 1) says not to. Any failure
    (no torch at build time, no compiler, compile error) only logs a warning: the package then
    installs without ``dcdc._C`` and CPU tensors use the PyTorch composite, which gives the same
    results. Which backend runs is chosen at run time by ``DCDC_BACKEND`` (see
    ``dcdc/layers/backend.py``).
    """
    if os.environ.get("DCDC_BUILD_NATIVE", "1").strip() in ("0", "false", "no"):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        warnings.warn("torch is not importable at build time: dcdc._C not built, "
                      "the pure-PyTorch aggregation will be used.")
        return {}

    class OptionalBuildExtension(BuildExtension):
        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # compiler missing or failing: keep the pure-PyTorch path
                warnings.warn(f"building {ext.name} failed ({e!r}); dcdc will use the "
                              "pure-PyTorch LSA aggregation (same results, slower on CPU).")

    ext = CppExtension(
        "dcdc._C",
        ["projects/DCDC/dcdc/layers/csrc/lsa_aggregate.cpp", "projects/DCDC/dcdc/layers/csrc/depthwise_conv.cpp",
         "projects/DCDC/dcdc/layers/csrc/pointwise_conv.cpp"],
        depends=["projects/DCDC/dcdc/layers/csrc/simd.h", "projects/DCDC/dcdc/layers/csrc/depthwise_conv.h",
                 "projects/DCDC/dcdc/layers/csrc/pointwise_conv.h",
                 "projects/DCDC/dcdc/layers/csrc/output.h"],
        # OpenMP drives at::parallel_for; the runtime resolves to the libgomp torch loaded.
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [ext],
            "cmdclass": {"build_ext": OptionalBuildExtension.with_options(use_ninja=False)}}


setup(
    name="dcdc",
    version="0.1.0",
    description="Dual Complementary Dynamic Convolution (DCDC) and DCDC-ResNets for Detectron2",
    python_requires=">=3.10",
    # detectron2's project layout: projects/<Name>/<package>/ (folder name = import name)
    package_dir={"": "projects/DCDC"},
    packages=find_packages("projects/DCDC"),
    # torch/torchvision/detectron2 are installed by `make install` (see README): detectron2 is not
    # on PyPI, and a user's own detectron2 / CUDA torch must be kept.
    install_requires=["pycocotools", "opencv-python-headless", "matplotlib", "tabulate"],
    **native_extension_kwargs(),
)
