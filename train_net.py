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

Before any model is built it checks that the config file exists, that the datasets' files exist
(naming the folder looked in and how to set ``DETECTRON2_DATASETS``), that ``MODEL.WEIGHTS`` /
``train.init_checkpoint`` exists, and that every config key given on the command line exists;
such a user error is one message, ``train_net.py: error: ...``, and exit status 2 (no
traceback). Training is kill-safe and ``--resume`` continues where the last checkpoint left off
(see :mod:`dcdc.engine`).

The DCDC / RedNet configs take RGB images normalized with the ImageNet mean / std
(``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD``): their data loaders convert.
"""
import os
import sys

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

import dcdc  # noqa: F401  registers the DCDC backbones and the built-in "shapes" datasets
from dcdc.config import get_dcdc_cfg
from dcdc.engine import (
    DCDCCheckpointer,
    Trainer,
    check_datasets,
    check_weights,
    do_eval_only,
    do_train,
    lazy_dataset_names,
    load_lazy_config,
)
from dcdc.utils.errors import UserError, UserValueError, report_user_error


def setup(args):
    """The frozen YAML config of ``args``, with the ``MODEL.DCDC`` keys added."""
    return get_dcdc_cfg(args.config_file, args.opts, freeze=True)


def _resuming(args, output_dir):
    return args.resume and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def checked_yaml_config(args):
    """The YAML config of ``args`` after the pre-flight checks (datasets, weights)."""
    cfg = setup(args)
    check_datasets(([] if args.eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST))
    if not _resuming(args, cfg.OUTPUT_DIR):
        check_weights(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS", eval_only=args.eval_only)
    return cfg


def checked_lazy_config(args):
    """The LazyConfig of ``args``, overrides applied, after the pre-flight checks (override
    keys, datasets, weights)."""
    cfg = load_lazy_config(args.config_file, args.opts)
    check_datasets(
        ([] if args.eval_only else lazy_dataset_names(cfg, "dataloader.train.dataset.names"))
        + lazy_dataset_names(cfg, "dataloader.test.dataset.names")
    )
    if not _resuming(args, cfg.train.output_dir):
        check_weights(cfg.train.init_checkpoint, "train.init_checkpoint", eval_only=args.eval_only)
    return cfg


def main_yaml(args):
    cfg = checked_yaml_config(args)
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
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


def main_lazy(args):
    cfg = checked_lazy_config(args)
    default_setup(cfg, args)
    if args.eval_only:
        return do_eval_only(cfg)
    return do_train(cfg, resume=args.resume)


def _config_kind(args):
    if args.config_file.endswith(".py"):
        return "lazy"
    if args.config_file.endswith((".yaml", ".yml")):
        return "yaml"
    example = "" if args.config_file else " (none given: e.g. configs/mask_rcnn_dcdc_r50.yaml)"
    raise UserValueError(
        "--config-file must be a .yaml (detectron2 CfgNode) or .py (LazyConfig) file, got "
        f"'{args.config_file}'{example}.")


def main(args):
    return main_lazy(args) if _config_kind(args) == "lazy" else main_yaml(args)


def invoke_main(argv=None) -> int:
    """Run train_net.py with the command-line arguments ``argv``; returns the exit status (a
    user error: one message, status 2)."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        if args.num_gpus * args.num_machines > 1:
            # one message here rather than a traceback from every worker process
            checked = checked_lazy_config if _config_kind(args) == "lazy" else checked_yaml_config
            checked(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except UserError as e:
        return report_user_error("train_net.py", e)
    return 0


if __name__ == "__main__":
    sys.exit(invoke_main())  # pragma: no cover
