"""detectron2's ``DefaultTrainer`` for the YAML configs, through the overrides it offers."""
import os
import weakref
from unittest import mock

from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from detectron2.utils import comm

from .checkpoint import DCDCCheckpointer, periodic_checkpointer
from .distributed import create_ddp_model
from .guards import SkipUnreadableImages, check_norms_for_device, drop_degenerate_annotations
from .sampler import ResumableTrainingSampler

__all__ = ["Trainer", "build_evaluator", "build_resumable_train_loader", "stopped_on_nan_message"]


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
            "the DCDC trainer evaluates 'coco', 'coco_panoptic_seg' and 'sem_seg' datasets."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_resumable_train_loader(cfg):
    """detectron2's train loader of ``cfg`` with degenerate annotations dropped (with a
    warning), a mapper that names unreadable images, and, for ``DATALOADER.SAMPLER_TRAIN
    "TrainingSampler"``, a :class:`ResumableTrainingSampler`, also kept as the loader's
    ``resumable_sampler`` attribute (None for detectron2's other samplers, which restart their
    stream on resume)."""
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
    sampler = None
    if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
        sampler = ResumableTrainingSampler(len(dataset), seed=seed)
    # seed: the DataLoader draws its base seed from its own generator, not from the global RNG
    # that the checkpoint restores (a draw there would shift every later random choice).
    loader = build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler,
                                          seed=seed)
    loader.resumable_sampler = sampler
    return loader


def stopped_on_nan_message(error, checkpointer):
    """detectron2's non-finite-loss error, plus where the last good weights are and what to try."""
    last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    kept = f"The last good checkpoint is '{last}'." if last else "No checkpoint was written yet."
    return (
        f"{error}\nTraining stopped before the optimizer applied this step. {kept} Lower the "
        "learning rate (SOLVER.BASE_LR; optimizer.lr in a LazyConfig), lengthen the warm-up "
        "(SOLVER.WARMUP_ITERS) or clip gradients (SOLVER.CLIP_GRADIENTS), then restart with "
        "--resume to continue from that checkpoint."
    )


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer``, made to survive kills and bad input.

    * Checkpoints are written atomically and carry every rank's RNG states; ``--resume``
      continues the training sampler's stream where the checkpoint left it, so with a fixed
      ``SEED`` and ``DATALOADER.NUM_WORKERS 0`` a resumed run ends with the weights of an
      uninterrupted one, with one process or several (with workers, the augmentations'
      randomness differs; with aspect-ratio grouping over mixed aspect ratios, the few images
      waiting in a group's buffer at the kill are skipped).
    * DDP also runs on CPU (gloo), and SyncBN on CPU is refused with a clear message.
    * A checkpoint with other tensor shapes than the model (outside the class predictors) is
      refused, listing the keys; unreadable images are named (see
      ``DATALOADER.SKIP_UNREADABLE_IMAGES``); degenerate annotations are dropped with a
      warning; evaluators come from :func:`build_evaluator`; a non-finite loss names the last
      good checkpoint.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ wraps the model with the create_ddp_model of its own module,
        # which passes device_ids to DDP, and DDP refuses device ids for CPU modules; during
        # __init__ it is dcdc's (the same, with device_ids=None on the CPU).
        with mock.patch.object(d2_defaults, "create_ddp_model", create_ddp_model):
            super().__init__(cfg)

    def build_hooks(self):
        # Called at the end of DefaultTrainer.__init__, before any hook holds the checkpointer.
        self.checkpointer = DCDCCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR,
                                             trainer=weakref.proxy(self))
        ret = super().build_hooks()
        if not comm.is_main_process():  # see periodic_checkpointer; before evaluation, as there
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(at, periodic_checkpointer(self.checkpointer,
                                                 self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return ret

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        sampler = getattr(self._trainer.data_loader, "resumable_sampler", None)
        if sampler is not None:
            sampler.skip(self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH)

    def train(self):
        try:
            return super().train()
        except FloatingPointError as e:
            raise FloatingPointError(stopped_on_nan_message(e, self.checkpointer)) from None

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        check_norms_for_device(model, cfg.MODEL.DEVICE)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = SkipUnreadableImages(DatasetMapper(cfg, False), skip=False)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
