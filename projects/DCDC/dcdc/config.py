"""Config keys of the DCDC backbones and necks (``MODEL.DCDC``).

The DCDC backbones otherwise read detectron2's own keys: ``MODEL.RESNETS.{DEPTH, NORM,
OUT_FEATURES, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS}``, ``MODEL.BACKBONE.FREEZE_AT`` and
``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}``. The norms inside the backbone
operators' kernel generators follow ``MODEL.RESNETS.NORM`` (so ``FREEZE_AT`` and FrozenBN freeze
them with the rest of the block).
"""
import difflib
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .layers.dcdc_conv import OPERATOR_DEFAULTS
from .modeling.htc import ROI_HEADS_DEFAULTS, SEMANTIC_HEAD_DEFAULTS, SEMANTIC_POOLER_RESOLUTION
from .utils.errors import UserFileNotFoundError, UserKeyError, UserValueError

__all__ = ["add_dcdc_config", "add_htc_config", "get_dcdc_cfg", "merge_yaml_config", "suggest_key",
           "operator_kwargs_from_cfg"]


def add_dcdc_config(cfg):
    """Add the ``MODEL.DCDC`` and ``MODEL.HTC`` keys (and ``DATALOADER.SKIP_UNREADABLE_IMAGES``)
    to a detectron2 config, in place."""
    _C = cfg
    _C.MODEL.DCDC = CN()
    # The operator hyperparameters default to dcdc.layers.dcdc_conv.OPERATOR_DEFAULTS (DCDCConv2d's).
    # The spatial operator that replaces the 3x3 conv of every bottleneck and of the stem:
    # "dcdc" (LSA + GSI, the paper), "lsa" (LSA branch only, Table III), "involution" (RedNet's
    # involution: no depth-wise convs in the kernel generator, no GSI branch) or "conv" (a plain
    # 3x3 conv in the same deep-stem layout).
    _C.MODEL.DCDC.OPERATOR = "dcdc"
    # LSA kernel size K of the bottleneck operators (the stem's operator always uses 3).
    _C.MODEL.DCDC.KERNEL_SIZE = 7
    # The operator hyperparameters, one key per DCDCConv2d argument of OPERATOR_DEFAULTS
    # (upper-cased), with its default:
    #   GROUP_CHANNELS: channels sharing one LSA kernel; the operator has C / GROUP_CHANNELS
    #     kernel groups.
    #   REDUCTION: 1 / alpha, width reduction inside the LSA kernel generator (alpha = 0.25 in
    #     the paper).
    #   DW_KERNEL_SIZE: k_dw of the two depth-wise convs in the LSA kernel generator (Eq. 7; 3 in
    #     the paper, 5 / 7 in Table IV). Ignored by "involution", which has none.
    #   GSI_KERNEL_SIZE: k_gsi, spatial size of the per-sample GSI kernel (1 in the paper, 3 / 5
    #     in Table IV).
    #   GSI_SCALE: lambda; the GSI branch works on m = round(lambda * sqrt(C)) channels (1.0 in
    #     the paper).
    for name, default in OPERATOR_DEFAULTS.items():
        _C.MODEL.DCDC[name.upper()] = default

    # The FPN's per-level 3x3 output convs: "conv" (detectron2's FPN unchanged), "dcdc" (the
    # paper's DCDC neck: a DCDC operator on OUT_CHANNELS channels) or "involution" (RedNet's
    # involution neck). Lateral 1x1 convs and RetinaNet's P6/P7 convs stay plain convs.
    _C.MODEL.DCDC.NECK = "conv"
    # LSA kernel size of the neck operators (7 in the paper).
    _C.MODEL.DCDC.NECK_KERNEL_SIZE = 7
    # Norm inside the neck operators' kernel generators (they train from scratch, so a norm that
    # learns, not FrozenBN). MODEL.FPN.NORM, if set, is applied after each neck operator, as
    # detectron2's FPN applies it after each output conv.
    _C.MODEL.DCDC.NECK_OPERATOR_NORM = "BN"

    # Initialisation of the DCDC backbone and neck for training from scratch, the same for every
    # OPERATOR (as official RedNet and detectron2's ResNet): every conv, the operators' kernel
    # generators included, Kaiming normal (fan_out, ReLU; detectron2's c2_msra_fill) with bias 0;
    # every norm (BN, SyncBN, GN, FrozenBN) weight 1 / bias 0; the last norm of each residual
    # block weight 0 (zero_init_residual; a frozen one stays 1). Otherwise each module keeps its
    # own init: PyTorch's default for every conv of the DCDC-ResNet and of the neck operators,
    # c2_xavier_fill for the FPN's lateral / output convs and P6/P7.
    # None (YAML null) or "auto": on iff MODEL.WEIGHTS is empty ("": from scratch), off when
    # weights are loaded (they overwrite it). True / False: always / never; True with weights
    # initialises what the checkpoint does not hold (e.g. a DCDC neck over converted classifier
    # weights). Applied where the backbone is built (dcdc.modeling.build_dcdc_resnet /
    # build_dcdc_fpn); a LazyConfig sets it as model.backbone.bottom_up.scratch_init (the neck
    # follows it) and "auto" reads train.init_checkpoint. (None, not "auto", is the default so
    # that True / False merge: yacs keeps a key's type.)
    _C.MODEL.DCDC.SCRATCH_INIT = None

    # Training images that cannot be read (truncated, not an image, missing): True logs the
    # file name and trains on another image; False stops with an error naming the file.
    # Evaluation always stops, since skipping images would bias the metrics.
    _C.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    add_htc_config(cfg)


def add_htc_config(cfg):
    """Add the ``MODEL.HTC`` keys of the Hybrid Task Cascade heads (dcdc/modeling/htc.py), in
    place; :func:`add_dcdc_config` calls it. The defaults are the heads' own
    (``dcdc.modeling.htc.ROI_HEADS_DEFAULTS`` / ``SEMANTIC_HEAD_DEFAULTS``)."""
    _C = cfg
    roi, semantic = ROI_HEADS_DEFAULTS, SEMANTIC_HEAD_DEFAULTS
    _C.MODEL.HTC = CN()
    _C.MODEL.HTC.INTERLEAVED = roi["interleaved"]
    _C.MODEL.HTC.MASK_INFO_FLOW = roi["mask_info_flow"]
    # The semantic branch; its features are added to the RoI features of SEMANTIC_FUSION.
    _C.MODEL.HTC.SEMANTIC_ON = True
    _C.MODEL.HTC.SEMANTIC_FUSION = tuple(roi["semantic_fusion"])
    _C.MODEL.HTC.SEMANTIC_IN_FEATURES = list(semantic["in_features"])
    # Level the semantic branch works at (and its RoIs are pooled from): p3, stride 8.
    _C.MODEL.HTC.SEMANTIC_FUSION_LEVEL = semantic["fusion_level"]
    _C.MODEL.HTC.SEMANTIC_NUM_CONVS = semantic["num_convs"]
    _C.MODEL.HTC.SEMANTIC_CONV_DIM = semantic["conv_dim"]
    _C.MODEL.HTC.SEMANTIC_NORM = semantic["norm"]
    # Stuff+thing classes of the semantic maps (133 for maps made from COCO panoptic).
    _C.MODEL.HTC.SEMANTIC_NUM_CLASSES = semantic["num_classes"]
    _C.MODEL.HTC.SEMANTIC_IGNORE_VALUE = semantic["ignore_value"]
    _C.MODEL.HTC.SEMANTIC_LOSS_WEIGHT = semantic["loss_weight"]
    _C.MODEL.HTC.SEMANTIC_POOLER_RESOLUTION = SEMANTIC_POOLER_RESOLUTION
    _C.MODEL.HTC.STAGE_LOSS_WEIGHTS = tuple(roi["stage_loss_weights"])


def operator_kwargs_from_cfg(cfg):
    """The operator hyperparameters of ``MODEL.DCDC`` as keyword arguments of
    :func:`dcdc.layers.build_operator` (kernel size, stride and norm excluded)."""
    return {name: cfg.MODEL.DCDC[name.upper()] for name in OPERATOR_DEFAULTS}


def get_dcdc_cfg(config_file=None, opts=(), freeze=False):
    """detectron2's default config with the ``MODEL.DCDC`` keys, ``config_file`` (YAML) and the
    ``KEY VALUE`` list ``opts`` merged in by :func:`merge_yaml_config`.

    Every entry point (train_net.py, demo.py, tools/) builds its config with this.
    """
    cfg = get_cfg()
    add_dcdc_config(cfg)
    merge_yaml_config(cfg, config_file, opts)
    if freeze:
        cfg.freeze()
    return cfg


def _all_keys(cfg, prefix=""):
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, CN):
            keys += _all_keys(v, prefix + k + ".")
    return keys


def suggest_key(key, candidates):
    """" Did you mean X?" for the closest of ``candidates`` to ``key``, or ""."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


def merge_yaml_config(cfg, config_file=None, opts=()):
    """``merge_from_file`` + ``merge_from_list``; a user error raises a
    :class:`~dcdc.utils.errors.UserError` that says what is wrong: a missing file
    (``UserFileNotFoundError``), a key typo (``UserKeyError``, naming the key, where it came from
    and the closest existing keys), overrides that are not ``KEY VALUE`` pairs or a value of the
    wrong type (``UserValueError``).

    (yacs raises ``KeyError("Non-existent config key: K")`` for a file and
    ``AssertionError("Non-existent key: K")`` for the command line.)
    """
    opts = list(opts)
    if config_file and not os.path.isfile(config_file):
        raise UserFileNotFoundError(
            f"Config file '{config_file}' does not exist (this project's are in configs/, e.g. "
            "configs/mask_rcnn_dcdc_r50.yaml; dcdc.model_zoo.list_configs() names them).")
    if any("=" in str(t) for t in opts[:1]):
        raise UserValueError(
            f"Overrides of a YAML config are KEY VALUE pairs (e.g. MODEL.WEIGHTS "
            f"model_final.pth), got {' '.join(map(str, opts))!r}.")
    steps = [("the command line", cfg.merge_from_list, opts)]
    if config_file:
        steps.insert(0, (f"'{config_file}' (or one of its _BASE_ files)", cfg.merge_from_file,
                         config_file))
    for source, merge, arg in steps:
        try:
            merge(arg)
        except (KeyError, AssertionError) as e:
            msg = str(e.args[0]) if e.args else ""
            if not msg.startswith(("Non-existent config key:", "Non-existent key:")):
                if isinstance(e, AssertionError) and merge == cfg.merge_from_list:
                    # "Override list has odd length", type mismatches
                    raise UserValueError(
                        f"Cannot apply the overrides {' '.join(map(str, opts))!r}: {msg}. They "
                        "are KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth.") from None
                raise
            bad = msg.split(":", 1)[1].strip()
            raise UserKeyError(
                f"Config key {bad} from {source} does not exist."
                f"{suggest_key(bad, _all_keys(cfg))} DCDC keys live under MODEL.DCDC "
                "(dcdc/config.py); detectron2's in detectron2/config/defaults.py."
            ) from None
        except ValueError as e:  # yacs: a value of the wrong type
            if merge != cfg.merge_from_list:
                raise
            raise UserValueError(f"Cannot apply the overrides {' '.join(map(str, opts))!r}: "
                                 f"{' '.join(str(e).split())}") from None
    return cfg
