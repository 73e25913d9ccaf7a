"""``duplex train-policy``: train the duplex predictor (:mod:`policies.train`).

Same seed, same data, same thread count → identical weights.
"""

from __future__ import annotations

import argparse
import logging

from policies.train import add_arguments as train_arguments
from policies.train import run as train



def add_arguments(p: argparse.ArgumentParser) -> None:
    train_arguments(p)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("policies").setLevel(logging.INFO)  # training reports progress in the log
    return int(train(args))
