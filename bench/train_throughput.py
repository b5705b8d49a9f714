"""Training throughput of FIANet-tiny on this machine (samples/s, steady state).

Usage: python bench/train_throughput.py [--img-size 192] [--batch-size 8] [--iters 10]

Measures what one training iteration of ``rrsis_geo.train.loop`` does with a frozen text encoder
(cached text features): image branch forward + loss + backward + fused AdamW step, plus an
eval forward pass. Prints the 1-minute load average too: on shared machines other processes
slow the numbers down.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--img-size", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from rrsis_geo.model import FIANet, FIANetConfig
    from rrsis_geo.train.loop import make_optimizer, param_groups
    from rrsis_geo.train.losses import fianet_loss

    model = FIANet(FIANetConfig.tiny())
    b, s = a.batch_size, a.img_size
    ids = torch.randint(1000, 2000, (b, 20))
    ones = torch.ones(b, 20, dtype=torch.long)
    with torch.no_grad():
        text = model.encode_text(ids, ones, ones, ones)
    opt = make_optimizer(param_groups(model, 1e-4, 0.01), 1e-4, 0.01)
    x = torch.randn(b, 3, s, s)
    y = (torch.rand(b, s, s) > 0.8).long()
    model.train()
    times = []
    for i in range(a.iters + 2):
        t = time.perf_counter()
        loss = fianet_loss(model.segment_image(x, text), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        model.segment_image(x, text)
        t = time.perf_counter()
        for _ in range(3):
            model.segment_image(x, text)
        ev = (time.perf_counter() - t) / 3
    times.sort()
    med = times[len(times) // 2]
    print(f"FIANet-tiny train {s}² batch {b}, {a.threads} threads: median {med:.3f} s/iter = "
          f"{b / med:.1f} samples/s (best {b / times[0]:.1f}); eval {b / ev:.1f} samples/s; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
