#!/usr/bin/env python
"""Print the parameter counts of our DCDC-ResNet / RedNet classifiers beside the paper's.

Usage: python tools/param_table.py   (1000-class ImageNet heads, as in Tables I, III, IV)
"""
import argparse

from tabulate import tabulate

from dcdc.modeling.analysis import classifier_param_table


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    rows = [(name, f"{ours:.2f}", f"{paper:.2f}", f"{diff:+.2%}")
            for name, ours, paper, diff in classifier_param_table()]
    print(tabulate(rows, headers=["model", "ours #Params (M)", "paper #Params (M)", "diff"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    main()
