#!/usr/bin/env python
"""Draw the LSA and GSI kernels of one DCDC operator for one image (paper Fig. 5).

For the chosen block (``--stage res3 --block 0``) of a trained model's DCDC-ResNet backbone, the
operator's input is captured with a forward pre-hook while the backbone runs on the image, then:

* LSA (local spatial-adaptive): ``LSA.kernels(x)`` gives one K x K kernel per output pixel and
  kernel group; the kernels at ``--num-positions`` sampled positions are drawn (averaged over the
  groups, or one group with ``--group``) next to the image with the positions marked. Different
  contents give different kernels.
* GSI (global shift-invariant): ``GSI.dynamic_kernels(GSI.reduce(x))`` is one m x m x k x k
  kernel for the whole image; it is drawn as an m x m matrix (summed over the k x k taps).

Example::

    python tools/visualize_kernels.py --config-file configs/quickstart_panoptic_fpn_dcdc_shapes.yaml \\
        --input datasets/shapes/val/000001.jpg --output output/kernels.png --stage res3 \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth
"""
import sys

from dcdc.utils.errors import run_main
from dcdc.utils.visualization import visualize_kernels

if __name__ == "__main__":
    sys.exit(run_main("visualize_kernels.py", visualize_kernels))
