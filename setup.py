import glob
import os
import shutil
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# configs/ is shipped inside the package as dcdc/model_zoo/configs (as detectron2 ships its model
# zoo's configs in detectron2/model_zoo/configs), so that dcdc.model_zoo.get_config() finds them
# in an installed copy; an editable install reads the repository's configs/ instead.
CONFIGS = "configs"
PACKAGE_CONFIGS = os.path.join("dcdc", "model_zoo", "configs")


def config_files():
    """The YAML and LazyConfig files of configs/, relative to it."""
    files = glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True) + glob.glob(
        os.path.join(CONFIGS, "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(f, CONFIGS) for f in files)


class BuildPyWithConfigs(build_py):
    """build_py that also copies configs/ into the built package (wheel, sdist install); an
    editable install (editable_mode) leaves them where they are."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = os.path.join(self.build_lib, PACKAGE_CONFIGS)
        if os.path.isdir(dest):
            shutil.rmtree(dest)  # no stale config from an earlier build
        for name in config_files():
            target = os.path.join(dest, name)
            self.mkpath(os.path.dirname(target))
            self.copy_file(os.path.join(CONFIGS, name), target)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [os.path.join(self.build_lib, PACKAGE_CONFIGS, f) for f in config_files()]


def native_extension_kwargs():
    """The optional native CPU kernels ``dcdc._C`` (LSA aggregation, the kernel generator's
    depth-wise convs; C++ with OpenMP), the ``native`` backend of the ``torch.ops.dcdc`` ops.

    It is built with torch.utils.cpp_extension when torch and a C++ compiler are available,
    unless the build-time variable ``DCDC_BUILD_NATIVE=0`` (default 1) says not to. Any failure
    (no torch at build time, no compiler, compile error) only logs a warning: the package then
    installs without ``dcdc._C`` and CPU tensors use the PyTorch composite, which gives the same
    results. Which backend runs is chosen at run time by ``DCDC_BACKEND`` (see
    ``dcdc/layers/dispatch.py``).
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


native = native_extension_kwargs()
native["cmdclass"] = {**native.get("cmdclass", {}), "build_py": BuildPyWithConfigs}

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
    **native,
)
