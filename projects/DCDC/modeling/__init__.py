from .resnet import DEPTHS, DCDCBottleneckBlock, DCDCStem, build_classifier, make_dcdc_stages

__all__ = [k for k in globals().keys() if not k.startswith("_")]
