"""ImageNet-style pretraining of DCDC-ResNets (or any timm model) on an ImageFolder dataset.

The defaults are the paper's ImageNet recipe (Sec. IV-A1, the RedNet/mmcls protocol): SGD with
momentum 0.9 and weight decay 1e-4 on every parameter, lr 0.1 per 256 images, cosine decay with
5 epochs of linear warmup, 130 epochs, batch 256 (summed over processes), RandomResizedCrop +
horizontal flip at 224 px, centre crop 0.875 for evaluation. Label smoothing (RedNet's timm runs),
mixup/cutmix, EMA weights and mixed precision are options.

Everything is built from timm and torch pieces: the model comes from timm's registry (``import
dcdc`` registers ``dcdc_resnet*``, ``lsa_resnet*``, ``rednet*``), data from ``create_dataset`` /
``create_loader`` (timm's transforms, distributed samplers), ``create_optimizer_v2``,
``create_scheduler_v2`` (per-iteration cosine + warmup), ``torch.amp`` with timm's
``NativeScaler``, ``ModelEmaV3``, ``accuracy`` and ``CheckpointSaver``.

Without ``--data-dir`` it trains on a built-in dataset: crops of the objects of the shapes data
(``dcdc.data.shapes``, 4 classes: circle, triangle, square, star), cut into an ImageFolder under
``$DETECTRON2_DATASETS/shapes_cls``; the shapes COCO files are generated first if missing. That
run uses a small "shapes" recipe (64 px, batch 32, AdamW, four epochs, gradient clipping; see
``RECIPES``) so that it finishes on a CPU in minutes. Examples::

    python tools/train_classifier.py                        # built-in data, CPU is fine
    torchrun --nproc_per_node=8 tools/train_classifier.py --data-dir /data/imagenet \\
        --model dcdc_resnet50 --amp --output output/dcdc_r50_in1k  # the paper's run
    python tools/train_classifier.py --output output/x --resume auto    # continue a run
    python tools/train_classifier.py --eval-only --resume output/x/model_best.pth.tar

Checkpoints (``last.pth.tar``, ``model_best.pth.tar``: timm format, ``state_dict`` keys equal to
``dcdc.modeling.build_classifier``'s) go to ``--output`` with ``summary.csv``, ``log.txt`` and
``classes.json``; at the end, ``model_final.pth`` holds the final weights (tensors, and the input
size they expect), the
input of ``tools/convert_classifier_to_d2.py``.
"""
import argparse
import json
import logging
import os
import pickle
import sys
import time
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import timm
from timm.data import Mixup, create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import (
    AverageMeter,
    ParseKwargs,
    CheckpointSaver,
    ModelEmaV3,
    NativeScaler,
    accuracy,
    get_state_dict,
    init_distributed_device,
    random_seed,
    reduce_tensor,
    unwrap_model,
    update_summary,
)

from ..data.classification import ensure_shapes_imagefolder
from ..utils.errors import UserFileNotFoundError, UserValueError

logger = logging.getLogger("dcdc.train_classifier")

# Values used for the arguments left unset (None). "imagenet" is the paper's recipe; "shapes"
# is the built-in data's: small crops, few epochs, so that a CPU finishes in minutes.
RECIPES = {
    # The paper's: classical (not Nesterov) SGD momentum, wd 1e-4 on every parameter.
    "imagenet": dict(epochs=130, batch_size=256, img_size=224, warmup_epochs=5, opt="momentum",
                     lr_base=0.1, weight_decay=1e-4, scale=(0.08, 1.0), crop_pct=0.875,
                     vflip=0.0, workers=8, clip_grad=0.0),
    # - AdamW, because SGD does not learn this data from scratch in a few hundred iterations;
    #   lr_base 0.008 per 256 images is lr 1e-3 at batch 32.
    # - No RandomResizedCrop (scale 1: only flips): the crops are centred on one object and a
    #   crop of part of it changes what its outline looks like.
    # Gradient clipping guards the from-scratch start.
    "shapes": dict(epochs=4, batch_size=32, img_size=64, warmup_epochs=1, opt="adamw",
                   lr_base=0.008, weight_decay=0.05, scale=(1.0, 1.0), crop_pct=1.0, vflip=0.5,
                   workers=1, clip_grad=5.0),
}

# ----------------------------------------------------------------------------- arguments
def _recipe_values(key):
    """'0.1 imagenet, 0.008 shapes': a default per recipe, for the help texts."""
    return ", ".join(f"{recipe[key]} {name}" for name, recipe in RECIPES.items())


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="ImageFolder root holding the train/val splits; default: the built-in "
                   "shapes crops")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val")
    g.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="defaults for the unset options; 'shapes' without --data-dir, "
                   "else 'imagenet'")
    g.add_argument("--img-size", type=int, default=None, help="train/eval resolution")
    g.add_argument("--crop-pct", type=float, default=None, help="eval centre-crop fraction")
    g.add_argument("--scale", type=float, nargs=2, default=None,
                   help="RandomResizedCrop area range")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--vflip", type=float, default=None)
    g.add_argument("--color-jitter", type=float, default=0.0)
    g.add_argument("--aa", default=None, help="timm auto-augment policy, e.g. rand-m9-mstd0.5")
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    g.add_argument("--workers", type=int, default=None,
                   help="data loader processes per GPU/process")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="dcdc_resnet26", help="any timm model name")
    g.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                   help="KEY=VALUE arguments of the model, e.g. operator=conv "
                   "stem_out_channels=32 res2_out_channels=128 scratch_init=True")
    g.add_argument("--drop", type=float, default=0.0, help="dropout before the classifier")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    g.add_argument("--model-ema", action="store_true", help="also keep and evaluate EMA weights")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)

    g = p.add_argument_group("optimisation (paper recipe)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="total over all processes")
    g.add_argument("--lr", type=float, default=None, help="absolute lr; default --lr-base scaled")
    g.add_argument("--lr-base", type=float, default=None,
                   help=f"lr per --lr-base-size images (recipe: {_recipe_values('lr_base')})")
    g.add_argument("--lr-base-size", type=int, default=256)
    g.add_argument("--opt", default=None,
                   help="timm optimizer name (recipe: 'momentum' = SGD with classical momentum "
                   "for imagenet, 'adamw' for shapes; timm's 'sgd' is Nesterov)")
    g.add_argument("--momentum", type=float, default=0.9, help="for SGD-like optimizers")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"recipe: {_recipe_values('weight_decay')} (decoupled for AdamW)")
    g.add_argument("--no-wd-norm-bias", action="store_true",
                   help="exclude norm and bias parameters from weight decay (the paper decays all)")
    g.add_argument("--sched", default="cosine", help="timm scheduler name")
    g.add_argument("--warmup-epochs", type=int, default=None)
    g.add_argument("--warmup-lr", type=float, default=1e-5)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--smoothing", type=float, default=0.0, help="label smoothing (RedNet: 0.1)")
    g.add_argument("--clip-grad", type=float, default=None, help="gradient norm clipping (0: off)")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 + loss scaling on CUDA, bfloat16 on CPU")
    g.add_argument("--iters-per-epoch", type=int, default=None,
                   help="stop each epoch after this many iterations (smoke tests)")

    g = p.add_argument_group("run")
    g.add_argument("--output", default=None, help="default: output/classifier/<model>_<data>")
    g.add_argument("--resume", default="",
                   help="checkpoint to continue from, or 'auto' (last.pth.tar)")
    g.add_argument("--eval-only", action="store_true", help="evaluate --resume and exit")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--log-interval", type=int, default=20, help="iterations between progress lines")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="per-epoch checkpoints kept")
    return p


def resolve_args(args):
    """Fill the options left unset from the recipe and check the combination."""
    if args.recipe is None:
        args.recipe = "shapes" if args.data_dir is None else "imagenet"
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scale = tuple(args.scale)
    if args.lr is None:
        args.lr = args.lr_base * args.batch_size / args.lr_base_size
    if args.output is None:
        data = ("shapes" if args.data_dir is None
                else os.path.basename(os.path.normpath(args.data_dir)))
        args.output = os.path.join("output", "classifier", f"{args.model}_{data}")
    if args.resume == "auto":
        last = os.path.join(args.output, "last.pth.tar")
        args.resume = last if os.path.isfile(last) else ""
    if args.eval_only and not args.resume:
        raise UserValueError("--eval-only needs a checkpoint: pass --resume PATH.")
    if args.resume and not os.path.isfile(args.resume):
        raise UserFileNotFoundError(f"--resume {args.resume!r} does not exist (give a checkpoint "
                                    "that tools/train_classifier.py wrote, or --resume auto).")
    import dcdc.modeling.timm_models  # noqa: F401  (registers the DCDC models with timm)

    if not timm.is_model(args.model):
        import difflib

        close = difflib.get_close_matches(args.model, timm.list_models(), n=3)
        raise UserValueError(f"--model {args.model!r} is not a timm model (ours: dcdc_resnet26/38/"
                             "50/101, lsa_resnet*, rednet*)"
                             + (f"; did you mean {', '.join(close)}?" if close else "."))
    return args


# ----------------------------------------------------------------------------- train / eval
def _autocast(args, device):
    if not args.amp:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model, loader, device, topk=(1, 5), autocast=nullcontext, distributed=False):
    """Top-k accuracy (%) and mean cross-entropy of ``model`` on ``loader``.

    ``topk`` values larger than the number of classes are clipped to it. Counts are summed over
    processes when ``distributed``, so every rank returns the same numbers.
    """
    model.eval()
    sums = None
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with autocast():
            logits = model(images)
        logits = logits.float()
        ks = tuple(min(k, logits.shape[1]) for k in topk)
        n = targets.shape[0]
        batch = torch.tensor([n, nn.functional.cross_entropy(logits, targets, reduction="sum")]
                             + [a * n / 100.0 for a in accuracy(logits, targets, topk=ks)],
                             dtype=torch.float64, device=device)
        sums = batch if sums is None else sums + batch
    if sums is None:
        raise ValueError("the evaluation loader is empty")
    if distributed:
        dist.all_reduce(sums)
    n = sums[0].item()
    metrics = {"loss": sums[1].item() / n, "samples": int(n)}
    for k, correct in zip(topk, sums[2:].tolist()):
        metrics[f"top{k}"] = 100.0 * correct / n
    return metrics


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, device, lr_scheduler,
                    loss_scaler=None, model_ema=None, mixup_fn=None):
    model.train()
    num_iters = min(len(loader), args.iters_per_epoch or len(loader))
    losses, iter_time = AverageMeter(), AverageMeter()
    num_updates = epoch * num_iters
    end = start = time.time()
    for it, (images, targets) in enumerate(loader):
        if it >= num_iters:
            break
        images, targets = images.to(device), targets.to(device)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        with _autocast(args, device):
            loss = loss_fn(model(images), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} iteration {it}; "
                                     "lower --lr or check the data.")
        optimizer.zero_grad(set_to_none=True)
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=args.clip_grad or None,
                        parameters=model.parameters())
        else:
            loss.backward()
            if args.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
        num_updates += 1
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        lr_scheduler.step_update(num_updates=num_updates)

        reduced = loss.detach()
        if args.distributed:
            reduced = reduce_tensor(reduced, args.world_size)
        losses.update(reduced.item(), images.shape[0])
        iter_time.update(time.time() - end)
        end = time.time()
        if args.rank == 0 and ((it + 1) % args.log_interval == 0 or it + 1 == num_iters):
            eta = iter_time.avg * (num_iters - it - 1)
            logger.info(
                f"epoch {epoch + 1}/{args.epochs} iter {it + 1}/{num_iters}  loss {losses.val:.4f} "
                f"({losses.avg:.4f})  lr {optimizer.param_groups[0]['lr']:.5f}  "
                f"{args.batch_size / iter_time.avg:.1f} img/s  eta {timedelta(seconds=int(eta))}")
    return {"loss": losses.avg, "time": time.time() - start}


def setup_logging(args):
    handlers = [logging.StreamHandler(sys.stdout)]
    if args.rank == 0:
        os.makedirs(args.output, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(args.output, "log.txt")))
    logging.basicConfig(level=logging.INFO if args.rank == 0 else logging.WARNING,
                        format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", handlers=handlers,
                        force=True)


def main(argv=None):
    args = resolve_args(get_parser().parse_args(argv))
    device = init_distributed_device(args)  # torchrun: sets rank/world_size, NCCL or gloo
    setup_logging(args)
    if args.batch_size % args.world_size:
        raise UserValueError(f"--batch-size {args.batch_size} is not divisible by the "
                             f"{args.world_size} processes.")
    random_seed(args.seed, args.rank)
    import dcdc.modeling.timm_models  # noqa: F401  (registers the DCDC models with timm)

    if args.data_dir is None:
        if args.rank == 0:
            ensure_shapes_imagefolder()
        if args.distributed:
            dist.barrier()
        args.data_dir = ensure_shapes_imagefolder()
    splits = {}
    for split in (args.train_split, args.val_split):
        root = os.path.join(args.data_dir, split)
        if not os.path.isdir(root):
            raise UserFileNotFoundError(
                f"{root} not found: --data-dir must hold ImageFolder splits "
                f"'{args.train_split}/' and '{args.val_split}/' (class folders inside).")
        splits[split] = create_dataset("", root=root)
    train_set, val_set = splits[args.train_split], splits[args.val_split]
    classes = train_set.reader.class_to_idx
    if val_set.reader.class_to_idx != classes:
        raise UserValueError(f"train and val class folders differ: {sorted(classes)} vs "
                             f"{sorted(val_set.reader.class_to_idx)}")
    args.num_classes = len(classes)

    try:
        model = timm.create_model(args.model, num_classes=args.num_classes, drop_rate=args.drop,
                                  **args.model_kwargs)
    except TypeError as e:
        raise UserValueError(f"--model-kwargs {args.model_kwargs} do not fit {args.model}: "
                             f"{e}") from None
    # Re-seed after the model drew its weights: the data order and augmentations of one --seed
    # are then the same whatever the model (paired runs in the operator comparison).
    random_seed(args.seed, args.rank)
    data_config = resolve_data_config({"input_size": (3, args.img_size, args.img_size),
                                       "crop_pct": args.crop_pct}, model=model)
    if args.sync_bn and args.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay,
                                    filter_bias_and_bn=args.no_wd_norm_bias)
    loss_scaler = NativeScaler(device=device.type) if args.amp and device.type == "cuda" else None

    start_epoch = 0
    if args.resume:
        try:
            start_epoch = resume_checkpoint(model, args.resume, optimizer=optimizer,
                                            loss_scaler=loss_scaler, log_info=args.rank == 0) or 0
        except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError) as e:
            raise UserValueError(
                f"--resume {args.resume!r} cannot be loaded into {args.model} "
                f"({type(e).__name__}: {' '.join(str(e).split())[:300]}).") from None
    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
        if args.resume:
            load_checkpoint(model_ema.module, args.resume, use_ema=True)
    if args.distributed:
        model = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)

    per_process_batch = args.batch_size // args.world_size
    loader_kwargs = dict(input_size=data_config["input_size"],
                         interpolation=data_config["interpolation"], mean=data_config["mean"],
                         std=data_config["std"], num_workers=args.workers,
                         distributed=args.distributed, device=device, use_prefetcher=False,
                         pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    val_loader = create_loader(val_set, batch_size=per_process_batch * 2, is_training=False,
                               crop_pct=data_config["crop_pct"], **loader_kwargs)
    autocast = lambda: _autocast(args, device)  # noqa: E731
    if args.eval_only:
        metrics = evaluate(model, val_loader, device, autocast=autocast,
                           distributed=args.distributed)
        logger.info(f"eval {args.resume}: {metrics}")
        return metrics

    train_loader = create_loader(train_set, batch_size=per_process_batch, is_training=True,
                                 scale=args.scale, hflip=args.hflip, vflip=args.vflip,
                                 color_jitter=args.color_jitter, auto_augment=args.aa,
                                 **loader_kwargs)
    updates_per_epoch = len(train_loader) if args.iters_per_epoch is None else min(
        len(train_loader), args.iters_per_epoch)
    lr_scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch)
    lr_scheduler.step_update(start_epoch * updates_per_epoch)

    mixup_fn = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
                         label_smoothing=args.smoothing, num_classes=args.num_classes)
        loss_fn = SoftTargetCrossEntropy()
    elif args.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()

    saver = None
    if args.rank == 0:
        saver = CheckpointSaver(model=model, optimizer=optimizer, args=args, model_ema=model_ema,
                                amp_scaler=loss_scaler, checkpoint_dir=args.output,
                                recovery_dir=args.output, decreasing=False,
                                max_history=args.keep_checkpoints)
        same_dir = os.path.abspath(os.path.dirname(args.resume)) == os.path.abspath(args.output)
        if args.resume and same_dir:
            saver.load_state_dict_from_checkpoint(args.resume)  # keeps the best-checkpoint record
        with open(os.path.join(args.output, "classes.json"), "w") as f:
            json.dump(classes, f, indent=1)
        num_params = sum(p.numel() for p in model.parameters()) / 1e6
        logger.info(f"{args.model}: {num_params:.2f} M params, {args.num_classes} classes, "
                    f"{len(train_set)} train / {len(val_set)} val images, "
                    f"{args.world_size} process(es) on {device}, batch {args.batch_size}, "
                    f"lr {args.lr:g}, {args.epochs} epochs from epoch {start_epoch + 1}")
        logger.info("args: " + json.dumps(vars(args), default=str, sort_keys=True))

    metrics = {}
    for epoch in range(start_epoch, args.epochs):
        if args.distributed and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(epoch, model, train_loader, optimizer, loss_fn, args,
                                        device, lr_scheduler, loss_scaler, model_ema, mixup_fn)
        metrics = evaluate(model, val_loader, device, autocast=autocast,
                           distributed=args.distributed)
        if model_ema is not None:
            ema_metrics = evaluate(model_ema.module, val_loader, device, autocast=autocast,
                                   distributed=args.distributed)
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        if args.rank == 0:
            logger.info(f"epoch {epoch + 1}/{args.epochs} done in {train_metrics['time']:.0f}s: "
                        f"train loss {train_metrics['loss']:.4f}  val loss {metrics['loss']:.4f}  "
                        f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%"
                        + (f"  (EMA top-1 {metrics['ema_top1']:.2f}%)" if model_ema else ""))
            update_summary(epoch + 1, train_metrics, metrics,
                           os.path.join(args.output, "summary.csv"),
                           lr=optimizer.param_groups[0]["lr"])
            # timm convention: the checkpoint stores the 0-based epoch just finished (version 2).
            best, best_epoch = saver.save_checkpoint(epoch, metric=metrics["top1"])
            logger.info(f"saved {os.path.join(args.output, 'last.pth.tar')} "
                        f"(best top-1 {best:.2f}% after epoch {best_epoch + 1})")
    if args.rank == 0:
        # Tensors and plain values only (loads with torch.load(weights_only=True)), the input of
        # tools/convert_classifier_to_d2.py and of timm's pretrained_cfg_overlay=dict(file=...).
        # data_config: the input the weights expect (tools/grad_cam.py resizes images to it).
        final = {"state_dict": get_state_dict(model, unwrap_model),
                 "data_config": {"img_size": args.img_size, "crop_pct": args.crop_pct}}
        if model_ema is not None:
            final["state_dict_ema"] = get_state_dict(model_ema, unwrap_model)
        torch.save(final, os.path.join(args.output, "model_final.pth"))
        logger.info(f"wrote {os.path.join(args.output, 'model_final.pth')}")
    if args.distributed:
        dist.destroy_process_group()
    return metrics

