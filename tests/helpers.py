"""Shared by the tests."""
from pathlib import Path

# the repository root: configs/, tools/ and train_net.py are found from it
REPO = Path(__file__).resolve().parents[1]
