"""The paper's published numbers, one named record per table row.

* :data:`CLASSIFIER_ROWS`: ImageNet classifiers of Tables I, III and IV (#Params).
* :data:`DETECTOR_ROWS`: COCO detectors / segmentors of Tables V-VII (#Params, FLOPs, and the
  box / mask AP, AP_S/M/L and PQ / SQ / RQ columns), each tied to the config stem under
  ``configs/`` that builds it.

A value the paper does not print (e.g. the FLOPs of Table VII) is ``None``. Table VI prints the
box and the mask AP of a row as one "bbox/seg" cell; they are two fields here.
"""
from dataclasses import dataclass
from typing import Optional

__all__ = ["ClassifierRow", "DetectorRow", "CLASSIFIER_ROWS", "DETECTOR_ROWS", "BASELINES",
           "detector_row"]


@dataclass(frozen=True)
class ClassifierRow:
    """One ImageNet row: ``build_kwargs`` are :func:`dcdc.modeling.build_classifier`'s."""
    table: str
    name: str
    build_kwargs: dict
    params_m: float


@dataclass(frozen=True)
class DetectorRow:
    """One COCO row of Tables V-VII; ``config`` is the stem of ``configs/<config>.yaml|.py``."""
    table: str
    detector: str
    backbone: str
    neck: str
    config: str
    params_m: float
    flops_g: Optional[float] = None
    box_ap: Optional[float] = None
    box_ap_s: Optional[float] = None
    box_ap_m: Optional[float] = None
    box_ap_l: Optional[float] = None
    mask_ap: Optional[float] = None
    mask_ap_s: Optional[float] = None
    mask_ap_m: Optional[float] = None
    mask_ap_l: Optional[float] = None
    pq: Optional[float] = None
    pq_th: Optional[float] = None
    pq_st: Optional[float] = None
    sq: Optional[float] = None
    sq_th: Optional[float] = None
    sq_st: Optional[float] = None
    rq: Optional[float] = None
    rq_th: Optional[float] = None
    rq_st: Optional[float] = None


def _table1(prefix, operator, params):
    return [ClassifierRow("I", f"{prefix}-{d}", dict(depth=d, operator=operator), p)
            for d, p in params]


CLASSIFIER_ROWS = [
    *_table1("RedNet", "involution", ((26, 9.23), (38, 12.39), (50, 15.54), (101, 25.65))),
    *_table1("DCDC-ResNet", "dcdc", ((26, 9.36), (38, 12.58), (50, 15.8), (101, 26.19))),
    ClassifierRow("III", "DCDC-26 LSA only", dict(depth=26, operator="lsa"), 9.26),
    ClassifierRow("III", "DCDC-26 Conv_small", dict(depth=26, global_branch="conv_small"), 9.34),
    ClassifierRow("III", "DCDC-26 Conv_large", dict(depth=26, global_branch="conv_large"), 14.32),
    ClassifierRow("IV", "DCDC-26 k_dw=5", dict(depth=26, dw_kernel_size=5), 9.39),
    ClassifierRow("IV", "DCDC-26 k_dw=7", dict(depth=26, dw_kernel_size=7), 9.45),
    ClassifierRow("IV", "DCDC-26 k_gsi=3", dict(depth=26, gsi_kernel_size=3), 9.61),
    ClassifierRow("IV", "DCDC-26 k_gsi=5", dict(depth=26, gsi_kernel_size=5), 10.12),
    ClassifierRow("IV", "DCDC-26 lambda=1.5", dict(depth=26, gsi_scale=1.5), 9.46),
    ClassifierRow("IV", "DCDC-26 lambda=2.0", dict(depth=26, gsi_scale=2.0), 9.64),
]


def _box(table, detector, backbone, neck, config, params, flops, ap, s, m, l):
    return DetectorRow(table, detector, backbone, neck, config, params, flops,
                       box_ap=ap, box_ap_s=s, box_ap_m=m, box_ap_l=l)


def _mask(detector, backbone, neck, config, params, flops, box, mask):
    """``box`` / ``mask``: (AP, AP_S, AP_M, AP_L), Table VI's two halves of each cell."""
    return DetectorRow("VI", detector, backbone, neck, config, params, flops,
                       *box, *mask)


def _panoptic(backbone, neck, config, params, pq, sq, rq):
    """``pq`` / ``sq`` / ``rq``: (all, things, stuff) of Table VII."""
    return DetectorRow("VII", "Panoptic FPN", backbone, neck, config, params, None,
                       pq=pq[0], pq_th=pq[1], pq_st=pq[2], sq=sq[0], sq_th=sq[1], sq_st=sq[2],
                       rq=rq[0], rq_th=rq[1], rq_st=rq[2])


DETECTOR_ROWS = [
    _box("V", "RetinaNet", "DCDC-ResNet26", "DCDC", "retinanet_dcdc_r26_dcdc_neck", 20.2, 179.4,
         37.3, 20.6, 41.4, 49.2),
    _box("V", "RetinaNet", "ResNet50", "Convolution", "retinanet_r50", 37.7, 239.3,
         36.6, 20.9, 40.6, 47.5),
    _box("V", "RetinaNet", "RedNet50", "Convolution", "retinanet_rednet50", 27.8, 208.6,
         38.3, 21.1, 41.8, 50.9),
    _box("V", "RetinaNet", "DCDC-ResNet50", "Convolution", "retinanet_dcdc_r50", 28.1, 210.0,
         39.6, 22.7, 43.5, 53.2),
    _box("V", "RetinaNet", "RedNet50", "Involution", "retinanet_rednet50_involution_neck", 26.3,
         197.7, 38.2, 21.8, 41.6, 50.7),
    _box("V", "RetinaNet", "DCDC-ResNet50", "DCDC", "retinanet_dcdc_r50_dcdc_neck", 26.5, 199.3,
         39.5, 23.3, 43.2, 52.4),
    _box("V", "Faster R-CNN", "DCDC-ResNet26", "DCDC", "faster_rcnn_dcdc_r26_dcdc_neck", 23.5,
         114.5, 38.7, 22.4, 42.2, 50.8),
    _box("V", "Faster R-CNN", "ResNet50", "Convolution", "faster_rcnn_r50", 41.5, 207.1,
         37.7, 21.7, 41.6, 48.4),
    _box("V", "Faster R-CNN", "RedNet50", "Convolution", "faster_rcnn_rednet50", 31.6, 176.4,
         39.5, 23.3, 42.9, 52.2),
    _box("V", "Faster R-CNN", "DCDC-ResNet50", "Convolution", "faster_rcnn_dcdc_r50", 31.9, 177.7,
         40.4, 24.0, 43.8, 52.6),
    _box("V", "Faster R-CNN", "RedNet50", "Involution", "faster_rcnn_rednet50_involution_neck",
         29.5, 132.0, 40.2, 24.2, 43.3, 52.7),
    _box("V", "Faster R-CNN", "DCDC-ResNet50", "DCDC", "faster_rcnn_dcdc_r50_dcdc_neck", 29.8,
         134.4, 40.9, 24.6, 44.1, 53.5),
    _mask("Mask R-CNN", "DCDC-ResNet26", "DCDC", "mask_rcnn_dcdc_r26_dcdc_neck", 26.1, 167.6,
          (39.5, 22.8, 43.2, 51.7), (35.4, 16.7, 38.1, 51.6)),
    _mask("Mask R-CNN", "ResNet50", "Convolution", "mask_rcnn_r50", 44.2, 260.1,
          (38.4, 21.9, 42.3, 49.7), (35.1, 18.5, 38.6, 46.9)),
    _mask("Mask R-CNN", "RedNet50", "Convolution", "mask_rcnn_rednet50", 34.2, 229.5,
          (40.2, 24.2, 43.4, 52.5), (36.1, 19.9, 39.3, 48.9)),
    _mask("Mask R-CNN", "DCDC-ResNet50", "Convolution", "mask_rcnn_dcdc_r50", 34.5, 230.8,
          (40.9, 23.9, 44.4, 52.8), (36.5, 17.4, 39.5, 52.2)),
    _mask("Mask R-CNN", "RedNet50", "Involution", "mask_rcnn_rednet50_involution_neck", 32.2,
          185.1, (40.8, 24.2, 44.0, 53.0), (36.4, 19.9, 39.4, 49.1)),
    _mask("Mask R-CNN", "DCDC-ResNet50", "DCDC", "mask_rcnn_dcdc_r50_dcdc_neck", 32.5, 187.4,
          (41.7, 25.8, 45.1, 53.7), (37.1, 19.1, 39.9, 53.0)),
    _mask("HTC", "ResNet50", "Convolution", "htc_r50", 80.0, 441.4,
          (43.3, 24.3, 46.4, 57.7), (38.3, 19.9, 41.0, 53.0)),
    _mask("HTC", "DCDC-ResNet50", "DCDC", "htc_dcdc_r50_dcdc_neck", 68.3, 368.7,
          (46.1, 28.9, 49.2, 60.7), (40.6, 21.1, 43.2, 58.8)),
    _panoptic("ResNet50", "Convolution", "panoptic_fpn_r50", 46.0,
              (40.3, 47.8, 29.0), (77.8, 80.9, 73.2), (49.4, 57.6, 37.0)),
    _panoptic("RedNet50", "Convolution", "panoptic_fpn_rednet50", 36.0,
              (42.4, 49.3, 32.0), (78.4, 81.0, 74.5), (51.8, 59.3, 40.5)),
    _panoptic("DCDC-ResNet50", "Convolution", "panoptic_fpn_dcdc_r50", 36.3,
              (43.1, 50.0, 32.7), (78.6, 81.1, 74.9), (52.6, 60.1, 41.2)),
    _panoptic("RedNet50", "Involution", "panoptic_fpn_rednet50_involution_neck", 34.0,
              (42.8, 49.8, 32.1), (78.4, 80.8, 74.8), (52.3, 60.2, 40.4)),
    _panoptic("DCDC-ResNet50", "DCDC", "panoptic_fpn_dcdc_r50_dcdc_neck", 34.3,
              (43.3, 50.3, 32.7), (78.9, 81.0, 75.7), (52.7, 60.5, 40.9)),
]

# The row each detector's deltas are taken against: its ResNet-50 baseline.
BASELINES = {"RetinaNet": "retinanet_r50", "Faster R-CNN": "faster_rcnn_r50",
             "Mask R-CNN": "mask_rcnn_r50", "HTC": "htc_r50", "Panoptic FPN": "panoptic_fpn_r50"}


def detector_row(config):
    """The :data:`DETECTOR_ROWS` record of a config stem (``configs/<config>.yaml``)."""
    for row in DETECTOR_ROWS:
        if row.config == config:
            return row
    raise KeyError(f"No paper row for config {config!r}; rows: "
                   f"{[r.config for r in DETECTOR_ROWS]}.")
