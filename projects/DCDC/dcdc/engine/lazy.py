"""Training and evaluation of LazyConfigs (``configs/*.py``), as detectron2's
tools/lazyconfig_train_net.py, with the guarantees of the YAML :class:`~dcdc.engine.Trainer`:
kill-safe checkpoints with every rank's RNG states, a train sampler that continues its stream on
``--resume``, unreadable images named (and skipped in training), degenerate annotations dropped,
SyncBN on CPU refused, a non-finite loss naming the last good checkpoint, and the expected
results verified.

Besides detectron2's ``train.*`` keys (common/train.py) these read three optional ones
(:data:`OPTIONAL_TRAIN_KEYS`), which a config or a command-line override may set.
"""
import logging

from omegaconf import OmegaConf

from detectron2.config import CfgNode, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format, verify_results
from detectron2.utils import comm
from detectron2.utils.registry import locate

from .checkpoint import DCDCCheckpointer, periodic_checkpointer
from .defaults import stopped_on_nan_message
from .distributed import create_ddp_model
from .guards import SkipUnreadableImages, check_norms_for_device, drop_degenerate_annotations
from .sampler import ResumableTrainingSampler

__all__ = ["OPTIONAL_TRAIN_KEYS", "build_lazy_train_loader", "build_lazy_test_loader",
           "do_test", "do_train", "do_eval_only", "verify_lazy_results"]

logger = logging.getLogger(__name__)

# Optional ``train.*`` keys of a LazyConfig and their defaults:
OPTIONAL_TRAIN_KEYS = {
    # detectron2's default_setup seeds rank r with seed + r; < 0: a random seed. Also seeds the
    # train sampler's shuffle and the DataLoader's base seed, as cfg.SEED does for YAML configs.
    "seed": -1,
    # Training images that cannot be read: True logs the file and trains on another image;
    # False stops with an error naming it (as DATALOADER.SKIP_UNREADABLE_IMAGES).
    "skip_unreadable_images": True,
    # [[task, metric, expected, tolerance], ...] checked after evaluation, as
    # TEST.EXPECTED_RESULTS; a mismatch exits with status 1.
    "expected_results": [],
}


def _train_option(cfg, key):
    return OmegaConf.select(cfg, f"train.{key}", default=OPTIONAL_TRAIN_KEYS[key])


def _call(loader_cfg, name, **given):
    """``instantiate(loader_cfg)`` with the arguments in ``given`` passed as they are."""
    missing = [k for k in ("_target_", "dataset", "mapper") if k not in loader_cfg]
    if missing:
        raise ValueError(
            f"{name} has no {missing}: it must be a LazyCall of a loader that takes a dataset "
            "and a mapper, e.g. L(build_detection_train_loader)(dataset=..., mapper=..., ...) "
            "as in detectron2's model_zoo/configs/common/data/coco.py."
        )
    target = loader_cfg._target_
    target = locate(target) if isinstance(target, str) else target
    kwargs = {k: instantiate(v) for k, v in loader_cfg.items()
              if k != "_target_" and k not in given}
    return target(**kwargs, **given)


def build_lazy_train_loader(cfg):
    """``cfg.dataloader.train`` built with degenerate annotations dropped, a mapper that names
    unreadable images and, unless the config sets a ``sampler``, a
    :class:`ResumableTrainingSampler`, kept as the loader's ``resumable_sampler`` (None with
    the config's own sampler, whose stream restarts on resume)."""
    loader_cfg = cfg.dataloader.train
    dataset = instantiate(loader_cfg.dataset)
    if isinstance(dataset, list):
        dataset = drop_degenerate_annotations(dataset)
    mapper = SkipUnreadableImages(instantiate(loader_cfg.mapper),
                                  skip=_train_option(cfg, "skip_unreadable_images"))
    seed = _train_option(cfg, "seed")
    seed = seed if seed >= 0 else None
    given = {"dataset": dataset, "mapper": mapper}
    sampler = None
    if loader_cfg.get("sampler", None) is None:
        given["sampler"] = sampler = ResumableTrainingSampler(len(dataset), seed=seed)
    if seed is not None and "seed" not in loader_cfg:
        given["seed"] = seed  # the DataLoader's base seed; see build_resumable_train_loader
    loader = _call(loader_cfg, "dataloader.train", **given)
    loader.resumable_sampler = sampler
    return loader


def build_lazy_test_loader(cfg):
    """``cfg.dataloader.test`` with a mapper that stops on an unreadable image, naming it
    (skipping would bias the metrics)."""
    loader_cfg = cfg.dataloader.test
    mapper = SkipUnreadableImages(instantiate(loader_cfg.mapper), skip=False)
    return _call(loader_cfg, "dataloader.test", mapper=mapper)


def do_test(cfg, model):
    """Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``; None if
    the config has no evaluator."""
    if "evaluator" in cfg.dataloader:
        ret = inference_on_dataset(model, build_lazy_test_loader(cfg),
                                   instantiate(cfg.dataloader.evaluator))
        print_csv_format(ret)
        return ret


def verify_lazy_results(cfg, results):
    """detectron2's ``verify_results`` for the LazyConfig's ``train.expected_results``."""
    expected = _train_option(cfg, "expected_results")
    if not len(expected):
        return True
    if results is None:
        raise ValueError("train.expected_results is set but the config has no "
                         "dataloader.evaluator to produce results.")
    expected = [list(e) for e in expected]  # yacs takes lists, not omegaconf's ListConfigs
    return verify_results(CfgNode({"TEST": CfgNode({"EXPECTED_RESULTS": expected})}), results)


def _build_model(cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    check_norms_for_device(model, cfg.train.device)
    return model


def do_eval_only(cfg):
    """Evaluate ``train.init_checkpoint``; returns the results, verified on the main process."""
    model = create_ddp_model(_build_model(cfg))
    DCDCCheckpointer(model).load(cfg.train.init_checkpoint)
    results = do_test(cfg, model)
    if comm.is_main_process():
        verify_lazy_results(cfg, results)
    return results


def do_train(cfg, resume=False):
    """Train as detectron2's lazyconfig_train_net.py; returns the last evaluation's results."""
    model = _build_model(cfg)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = build_lazy_train_loader(cfg)

    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DCDCCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    results = {}

    def test_and_keep_results():
        results["last"] = do_test(cfg, model)
        return results["last"]

    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        periodic_checkpointer(checkpointer, **cfg.train.checkpointer),
        hooks.EvalHook(cfg.train.eval_period, test_and_keep_results),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if train_loader.resumable_sampler is not None:
        train_loader.resumable_sampler.skip(start_iter * cfg.dataloader.train.total_batch_size)
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:
        raise FloatingPointError(stopped_on_nan_message(e, checkpointer)) from None
    if comm.is_main_process() and "last" in results:
        verify_lazy_results(cfg, results["last"])
    return results.get("last")
