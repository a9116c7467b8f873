"""A timm model of your choice trained by a plain PyTorch loop from the teacher cache, then
scored on the test split; with --no-teacher the same loop on the labels alone.

    python docs/examples/own_loop.py --dataset demo            # after: luigi --module tasks CacheTeacher --dataset demo
    python docs/examples/own_loop.py --store S.zarr --cache C.zarr --no-teacher
"""
import argparse

import timm
import torch

from pipeline.api import DistillationLoss, open_cached

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", help="a [datasets] name of luigi.cfg")
parser.add_argument("--store", help="or the paths of a finished image store and teacher cache")
parser.add_argument("--cache")
parser.add_argument("--model", default="resnet18")
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--no-teacher", action="store_true", help="labels only: the baseline")
args = parser.parse_args()

data = open_cached(args.dataset, store=args.store, cache=args.cache)
torch.manual_seed(0)
model = timm.create_model(args.model, num_classes=len(data.classes))
loss_fn = DistillationLoss(alpha=0.7, temperature=4.0)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
loader = data.loader(args.batch_size, teacher=not args.no_teacher)
for epoch in range(args.epochs):
    model.train()
    for batch in loader.epoch(epoch):
        loss = loss_fn(model(batch.images), batch.labels, batch.teacher_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}")

model.eval()
with torch.no_grad():
    right = total = 0
    for images, labels in data.eval_batches("test"):
        right += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
print(f"test top-1 {100 * right / total:.1f}% ({'labels only' if args.no_teacher else 'with the teacher cache'})")
