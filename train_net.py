#!/usr/bin/env python
"""Train and evaluate DCDC detectors with detectron2.

One entry point for both config systems, chosen by the extension of ``--config-file``:

* ``configs/<name>.yaml``: detectron2's ``DefaultTrainer`` (as detectron2's tools/train_net.py),
  with ``MODEL.DCDC`` keys from :func:`dcdc.add_dcdc_config`;
* ``configs/<name>.py``: a LazyConfig, trained like detectron2's tools/lazyconfig_train_net.py.

Examples::

    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml --num-gpus 8
    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.py --num-gpus 8
    python train_net.py --config-file configs/mask_rcnn_dcdc_r50.yaml --eval-only \\
        MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file configs/faster_rcnn_dcdc_r50.yaml MODEL.DEVICE cpu \\
        SOLVER.IMS_PER_BATCH 2

Before any model is built it checks that the datasets' files exist (naming the folder looked in
and how to set ``DETECTRON2_DATASETS``), that ``MODEL.WEIGHTS`` / ``train.init_checkpoint``
exists, and that every config key given on the command line exists.
"""
import difflib
import inspect
import logging
import os
import weakref

from omegaconf import DictConfig, OmegaConf

import detectron2.utils.comm as comm
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.utils.logger import setup_logger
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)
from detectron2.utils.registry import locate

import dcdc  # noqa: F401  registers the DCDC backbones and the built-in "shapes" datasets
from dcdc import add_dcdc_config
from dcdc.engine import (
    DCDCCheckpointer,
    ResumableTrainingSampler,
    SkipUnreadableImages,
    check_norms_for_device,
    create_ddp_model,
    drop_degenerate_annotations,
)

logger = logging.getLogger("dcdc")

# Files of detectron2's builtin COCO datasets, relative to $DETECTRON2_DATASETS (see
# detectron2/data/datasets/builtin.py and datasets/README.md in the detectron2 repository).
COCO_LAYOUT = """\
  coco/annotations/instances_{train,val}2017.json
  coco/{train,val}2017/                      the images
and, for the panoptic configs (*_panoptic_separated datasets):
  coco/annotations/panoptic_{train,val}2017.json
  coco/panoptic_{train,val}2017/             PNGs from annotations/panoptic_annotations_trainval2017.zip
  coco/panoptic_stuff_{train,val}2017/       made by detectron2's datasets/prepare_panoptic_fpn.py"""


# ------------------------------------------------------------------------------------------
# Checks that fail at once, with what was wrong and how to fix it
# ------------------------------------------------------------------------------------------
def check_datasets(names):
    """Raise if a dataset is unregistered, or if a file that one of detectron2's builtin COCO
    datasets (``coco_*``, ``keypoints_coco_*``) points to is missing.

    Other datasets are left to their loaders (dcdc's built-in "shapes" generates its files on
    first use, under the same ``$DETECTRON2_DATASETS``).
    """
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    for name in names:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
            raise KeyError(
                f"Dataset '{name}' is not registered."
                + (f" Did you mean {close}?" if close else "")
                + " Register it with detectron2.data.datasets.register_coco_instances."
            )
        if not name.startswith(("coco_", "keypoints_coco_")):
            continue
        meta = MetadataCatalog.get(name)
        paths = [meta.get(k) for k in ("json_file", "image_root", "panoptic_json",
                                       "panoptic_root", "sem_seg_root")]
        paths = [p for p in paths if p]
        for path in paths:
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Dataset '{name}' needs '{path}', which does not exist.\n"
                    f"detectron2 looks for its builtin datasets under $DETECTRON2_DATASETS, "
                    f"now '{root}' (= '{os.path.abspath(root)}'). Set DETECTRON2_DATASETS to the "
                    f"folder holding COCO, laid out as\n{COCO_LAYOUT}\n"
                    "(https://detectron2.readthedocs.io/en/latest/tutorials/builtin_datasets.html)."
                    " To try the pipeline without COCO, use the built-in shapes dataset: "
                    "configs/quickstart*."
                )


def check_weights(path, key):
    """Raise if a local checkpoint path does not exist (URLs are left to detectron2)."""
    if not path or "://" in path or os.path.isfile(path):
        return
    raise FileNotFoundError(
        f"{key} = '{path}' does not exist. The DCDC / RedNet configs start from ImageNet "
        "weights converted to detectron2's format; produce them from a dcdc.modeling classifier "
        f"checkpoint with\n  python tools/convert_classifier_to_d2.py CLASSIFIER.pth {path}\n"
        f"or train from scratch with {key} \"\" (then use a norm that trains, e.g. "
        "MODEL.RESNETS.NORM \"BN\" / \"GN\" / \"SyncBN\" and MODEL.BACKBONE.FREEZE_AT 0: "
        "FrozenBN without pretrained statistics diverges)."
    )


def _all_keys(cfg, prefix=""):
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, CfgNode):
            keys += _all_keys(v, prefix + k + ".")
    return keys


def _suggest(key, candidates):
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


def merge_yaml_config(cfg, config_file, opts):
    """``merge_from_file`` + ``merge_from_list``; a key typo names the key and close matches.

    (yacs raises ``KeyError("Non-existent config key: K")`` for a file and
    ``AssertionError("Non-existent key: K")`` for the command line.)
    """
    for source, merge, arg in ((f"'{config_file}' (or one of its _BASE_ files)",
                                cfg.merge_from_file, config_file),
                               ("the command line", cfg.merge_from_list, opts)):
        try:
            merge(arg)
        except (KeyError, AssertionError) as e:
            msg = str(e.args[0]) if e.args else ""
            if not msg.startswith(("Non-existent config key:", "Non-existent key:")):
                raise
            bad = msg.split(":", 1)[1].strip()
            raise KeyError(
                f"Config key {bad} from {source} does not exist."
                f"{_suggest(bad, _all_keys(cfg))} DCDC keys live under MODEL.DCDC "
                "(projects/DCDC/dcdc/config.py); detectron2's in detectron2/config/defaults.py."
            ) from None
    return cfg


def _accepts(target, name):
    """Whether the LazyCall target ``target`` takes keyword argument ``name``."""
    if isinstance(target, str):
        target = locate(target)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_lazy_overrides(cfg, overrides):
    """Reject ``a.b.c=value`` overrides whose key neither exists in the LazyConfig nor is an
    argument of the object the enclosing ``LazyCall`` builds (omegaconf would add it silently)."""
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if not isinstance(parent, DictConfig):
            raise KeyError(f"Config key '{parent_key}' of override '{override}' does not exist.")
        if leaf in parent:
            continue
        target = parent.get("_target_", None)
        if target is not None and _accepts(target, leaf):
            continue
        raise KeyError(
            f"Config key '{key}' of override '{override}' does not exist."
            + _suggest(leaf, [str(k) for k in parent.keys()])
        )


# ------------------------------------------------------------------------------------------
# YAML configs: detectron2's DefaultTrainer
# ------------------------------------------------------------------------------------------
def build_evaluator(cfg, dataset_name, output_folder=None):
    """Evaluators from the dataset's ``evaluator_type``: COCO instances -> COCOEvaluator;
    COCO panoptic -> COCOPanopticEvaluator + SemSegEvaluator + COCOEvaluator."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"No evaluator for dataset '{dataset_name}' with evaluator_type {evaluator_type!r}; "
            "train_net.py evaluates 'coco', 'coco_panoptic_seg' and 'sem_seg' datasets."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_resumable_train_loader(cfg):
    """detectron2's train loader with a :class:`ResumableTrainingSampler` (returned too, or None
    for other samplers), degenerate annotations dropped with a warning, and a mapper that names
    unreadable images."""
    mapper = SkipUnreadableImages(DatasetMapper(cfg, True),
                                  skip=cfg.DATALOADER.SKIP_UNREADABLE_IMAGES)
    dataset = drop_degenerate_annotations(get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
        if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    ))
    seed = cfg.SEED if cfg.SEED >= 0 else None
    sampler = None  # detectron2 builds the other samplers, which restart their stream on resume
    if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
        sampler = ResumableTrainingSampler(len(dataset), seed=seed)
    # seed: the DataLoader draws its base seed from its own generator, not from the global RNG
    # that the checkpoint restores (a draw there would shift every later random choice).
    loader = build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler,
                                          seed=seed)
    return loader, sampler


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer, built in the same order, made to survive kills and bad input.

    * Checkpoints are written atomically and carry the RNG states; ``--resume`` continues the
      training sampler's stream where the checkpoint left it, so with a fixed ``SEED`` and
      ``DATALOADER.NUM_WORKERS 0`` a resumed run ends with the weights of an uninterrupted one
      (with workers, the augmentations' randomness differs; with aspect-ratio grouping over
      mixed aspect ratios, the few images waiting in a group's buffer at the kill are skipped).
    * DDP also runs on CPU (gloo), and SyncBN on CPU is refused with a clear message.
    * A checkpoint with other tensor shapes than the model (outside the class predictors) is
      refused, listing the keys; unreadable images are named (see
      ``DATALOADER.SKIP_UNREADABLE_IMAGES``); evaluators come from :func:`build_evaluator`.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        check_norms_for_device(model, cfg.MODEL.DEVICE)
        optimizer = self.build_optimizer(cfg, model)
        data_loader, self.train_sampler = build_resumable_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DCDCCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        if self.train_sampler is not None:
            self.train_sampler.skip(self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH)

    def train(self):
        try:
            return super().train()
        except FloatingPointError as e:
            raise FloatingPointError(stopped_on_nan_message(e, self.checkpointer)) from None

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg)[0]

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = SkipUnreadableImages(DatasetMapper(cfg, False), skip=False)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


def stopped_on_nan_message(error, checkpointer):
    """detectron2's non-finite-loss error, plus where the last good weights are and what to try."""
    last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    kept = f"The last good checkpoint is '{last}'." if last else "No checkpoint was written yet."
    return (
        f"{error}\nTraining stopped before the optimizer applied this step. {kept} Lower "
        "SOLVER.BASE_LR, lengthen SOLVER.WARMUP_ITERS or enable SOLVER.CLIP_GRADIENTS, then "
        "restart with --resume to continue from that checkpoint."
    )


def setup(args):
    """The frozen YAML config of ``args``, with the ``MODEL.DCDC`` keys added."""
    cfg = get_cfg()
    add_dcdc_config(cfg)
    merge_yaml_config(cfg, args.config_file, args.opts)
    cfg.freeze()
    return cfg


def _resuming(args, output_dir):
    return args.resume and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def main_yaml(args):
    cfg = setup(args)
    check_datasets(([] if args.eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST))
    if not _resuming(args, cfg.OUTPUT_DIR):
        check_weights(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        check_norms_for_device(model, cfg.MODEL.DEVICE)
        DCDCCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


# ------------------------------------------------------------------------------------------
# LazyConfigs: detectron2's tools/lazyconfig_train_net.py
# ------------------------------------------------------------------------------------------
def do_test(cfg, model):
    if "evaluator" in cfg.dataloader:
        ret = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
        print_csv_format(ret)
        return ret


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    check_norms_for_device(model, cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DCDCCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    resuming = args.resume and checkpointer.has_checkpoint()
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    try:
        trainer.train(trainer.iter + 1 if resuming else 0, cfg.train.max_iter)
    except FloatingPointError as e:
        raise FloatingPointError(stopped_on_nan_message(e, checkpointer)) from None


def _dataset_names(cfg, key):
    names = OmegaConf.select(cfg, key, default=None)
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def main_lazy(args):
    cfg = LazyConfig.load(args.config_file)
    check_lazy_overrides(cfg, args.opts)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    check_datasets(
        ([] if args.eval_only else _dataset_names(cfg, "dataloader.train.dataset.names"))
        + _dataset_names(cfg, "dataloader.test.dataset.names")
    )
    if not _resuming(args, cfg.train.output_dir):
        check_weights(cfg.train.init_checkpoint, "train.init_checkpoint")
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        DCDCCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)


def main(args):
    if args.config_file.endswith(".py"):
        return main_lazy(args)
    if args.config_file.endswith((".yaml", ".yml")):
        return main_yaml(args)
    raise ValueError(
        f"--config-file must be a .yaml (detectron2 CfgNode) or .py (LazyConfig) file, got "
        f"'{args.config_file}'."
    )


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
