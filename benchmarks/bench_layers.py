"""Layer-level CPU inference benchmark at the shapes of DCDC-ResNet-50 on a 1x3x800x1216 input.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_layers

Two tables, each summed over the layers of one DCDC-ResNet-50 / ResNet-50 forward:

* ``operator``: the spatial operator of every bottleneck and of the stem, a 3x3 conv
  (ResNet-50) vs ``DCDCConv2d`` (eval, BatchNorm on running statistics), one row per shape with
  its count in the network.
* ``1x1``: the blocks' stride-1 1x1 convs with their BatchNorm, detectron2's ``Conv2d`` module
  (oneDNN conv, then the norm) vs ``dcdc.layers.folded_conv`` (what the DCDC-ResNet blocks call
  in eager inference).

Each implementation runs all shapes of its table in one process (median of ``--repeat`` calls
per shape after a warm-up); the implementations of a table alternate over ``--rounds`` rounds
of separate processes, and each shape keeps its fastest round. The per-round range is that of
the summed ratio.
"""
import argparse
import json
import sys

import torch

from benchmarks.common import format_table, machine_line, run_case, time_call

# (channels, input H, W, stride, count in DCDC-ResNet-50): the stem's operator, then each
# stage's operators (the first block of res3..res5 has stride 2).
OPERATOR_SHAPES = [(32, 400, 608, 1, 1), (64, 200, 304, 1, 3), (128, 200, 304, 2, 1),
                   (128, 100, 152, 1, 3), (256, 100, 152, 2, 1), (256, 50, 76, 1, 5),
                   (512, 50, 76, 2, 1), (512, 25, 38, 1, 2)]
# (in, out, H, W, count): conv1 and conv3 of every bottleneck, and res2's stride-1 shortcut.
POINTWISE_SHAPES = [(64, 64, 200, 304, 1), (64, 256, 200, 304, 4), (256, 64, 200, 304, 2),
                    (256, 128, 200, 304, 1), (128, 512, 100, 152, 4), (512, 128, 100, 152, 3),
                    (512, 256, 100, 152, 1), (256, 1024, 50, 76, 6), (1024, 256, 50, 76, 5),
                    (1024, 512, 50, 76, 1), (512, 2048, 25, 38, 3), (2048, 512, 25, 38, 2)]
IMPLEMENTATIONS = {"operator": ("3x3 conv", "DCDCConv2d"), "1x1": ("Conv2d module", "folded_conv")}


def _random_stats(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return module.eval()


def _case(args):
    from detectron2.layers import Conv2d

    from dcdc.layers import DCDCConv2d, folded_conv

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    times = []
    if args["table"] == "operator":
        for channels, height, width, stride, _ in OPERATOR_SHAPES:
            if args["impl"] == 0:
                op = Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
            else:
                op = _random_stats(DCDCConv2d(channels, 3 if channels == 32 else 7, stride))
            x = torch.randn(1, channels, height, width)
            with torch.no_grad():
                times.append(time_call(lambda: op(x), args["repeat"], cpu))
    else:
        for cin, cout, height, width, _ in POINTWISE_SHAPES:
            conv = _random_stats(Conv2d(cin, cout, 1, bias=False,
                                        norm=torch.nn.BatchNorm2d(cout)))
            x = torch.randn(1, cin, height, width)
            fn = conv if args["impl"] == 0 else (lambda x, conv=conv: folded_conv(conv, x))
            with torch.no_grad():
                times.append(time_call(lambda: fn(x), args["repeat"], cpu))
    return {"seconds": times}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_case(json.loads(args.case))))
        return

    print(f"{machine_line(torch.device('cpu'))}\n")
    for table, shapes in (("operator", OPERATOR_SHAPES), ("1x1", POINTWISE_SHAPES)):
        names = IMPLEMENTATIONS[table]
        runs = [[], []]
        for round_ in range(args.rounds):
            for impl in (0, 1):
                r = run_case("benchmarks.bench_layers",
                             {"table": table, "impl": impl, "repeat": args.repeat})
                if "error" in r:
                    raise SystemExit(f"{table} / {names[impl]} failed: {r['error']}")
                runs[impl].append(r["seconds"])
            print(f"  round {round_ + 1}/{args.rounds}  {table}: done", file=sys.stderr,
                  flush=True)
        best = [[min(t[i] for t in runs[impl]) for i in range(len(shapes))] for impl in (0, 1)]
        counts = [shape[-1] for shape in shapes]
        rows = [[str(shape[:-1]), count, f"{1e3 * a:.1f}", f"{1e3 * b:.1f}", f"{b / a:.2f}x"]
                for shape, count, a, b in zip(shapes, counts, *best)]
        total = [sum(c * t for c, t in zip(counts, impl_best)) for impl_best in best]
        per_round = [sum(c * t for c, t in zip(counts, b)) / sum(c * t for c, t in zip(counts, a))
                     for a, b in zip(*runs)]
        rows.append(["network total (x count)", "", f"{1e3 * total[0]:.0f}",
                     f"{1e3 * total[1]:.0f}",
                     f"{total[1] / total[0]:.2f}x ({min(per_round):.2f}-{max(per_round):.2f}x)"])
        head = "(C, H, W, stride)" if table == "operator" else "(in, out, H, W)"
        print(f"\n{table}: {names[0]} vs {names[1]}, fp32 inference, ms per call\n")
        print(format_table([head, "count", names[0], names[1], "ratio"], rows), "\n", flush=True)


if __name__ == "__main__":
    main()
