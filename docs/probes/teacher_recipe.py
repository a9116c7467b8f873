"""Does the from-scratch Stanford 40 teacher learn under a recipe? (docs/results.md,
"Stanford 40 with the recipe")

Run: `python docs/probes/teacher_recipe.py STORE RECIPE EPOCHS LR [THREADS]` with STORE the
Stanford 40 image store (work/stanford40/store-*/store.zarr, made by PrepareDataset under
configs/stanford40-recipe.cfg) and RECIPE one of RECIPES. Trains the teacher of that config
(convnext_femto, 64 px, batch 64, warm-up 1 epoch, cosine over EPOCHS) into a temporary
folder and prints each epoch's training loss and validation top-1; stop it early to see the
start of a long schedule.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from pipeline.data.imagestore import ImageStore
from pipeline.training.build import TrainSetup, build_run
from pipeline.training.settings import TrainSettings
from pipeline.training.train import fit
from pipeline.views.records import Recipe

# name -> (recipe, label smoothing)
RECIPES = {"off": (Recipe(), 0.0), "ra9": (Recipe((2, 9)), 0.0), "ra5": (Recipe((2, 5)), 0.0),
           "mix": (Recipe((0, 0), 0.8, 1.0), 0.1), "all9": (Recipe((2, 9), 0.8, 1.0), 0.1),
           "all5": (Recipe((2, 5), 0.8, 1.0), 0.1)}


def main(store: str, name: str, epochs: str, lr: str, threads: str = "2") -> None:
    torch.set_num_threads(int(threads))
    recipe, smoothing = RECIPES[name]
    settings = TrainSettings(epochs=int(epochs), batch_size=64, lr=float(lr), weight_decay=0.05, warmup_epochs=1,
                             image_size=64, seed=0, augment=True, order="random", order_window=1, recipe=recipe,
                             label_smoothing=smoothing)
    progress = lambda done, total, text="": text and print(f"{name} lr {lr} epoch {done}/{total}: {text}", flush=True)  # noqa: E731
    setup = TrainSetup(model="convnext_femto", kwargs={"drop_path_rate": 0.1}, settings=settings)
    fit(build_run(setup, ImageStore(store)), Path(tempfile.mkdtemp()), progress)


if __name__ == "__main__":
    main(*sys.argv[1:])
