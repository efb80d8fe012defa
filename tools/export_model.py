#!/usr/bin/env python
"""Export a detector config to TorchScript or ONNX (detectron2's ``tools/deploy/export_model.py``
flags), check the exported model against eager, optionally evaluate it.

Arguments and examples: :mod:`dcdc.export.cli`.
"""
import sys

from dcdc.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
