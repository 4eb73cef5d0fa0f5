"""The answer-token loss head: chunked ``linear_cross_entropy`` against logits + ``F.cross_entropy``.

Both take the labelled rows' hidden states through Gemma's tied 262k-vocabulary head (frozen, as in
projection-only training) to a mean cross-entropy and back to the hidden states. Reported per
variant: seconds for forward + backward (median of ``--repeats``), the bytes autograd keeps
between forward and backward (``saved_mib``, measured with saved-tensor hooks on any device) and,
on a GPU, the peak memory above the inputs (``peak_mib``). The last line is one JSON object.

    python bench/loss_head.py                          # GPU: Gemma3-4B head, 2 x 704 labelled rows
    python bench/loss_head.py --vocab 32768 --hidden 256 --rows 512   # a CPU-sized run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from theworld.loss import linear_cross_entropy

MiB = 2**20


def full_logits(hidden, weight, targets):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets)


def chunked(hidden, weight, targets):
    return linear_cross_entropy(hidden, weight, targets)[0]


def measure(name, loss_fn, hidden, weight, targets, repeats: int) -> dict:
    cuda = hidden.device.type == "cuda"
    times, saved_peak = [], 0
    for i in range(repeats + 1):  # the first pass warms up kernels and the allocator
        h = hidden.detach().requires_grad_()
        saved: dict[int, int] = {}

        def pack(tensor):
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
            return tensor

        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = loss_fn(h, weight, targets)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        # Inputs autograd keeps anyway (the hidden rows, the weight) are not the head's own cost.
        saved_peak = sum(size for key, size in saved.items() if key not in (id(h), id(weight)))
    result = {"name": name, "step_s": round(statistics.median(times), 5), "saved_mib": round(saved_peak / MiB, 1)}
    if cuda:
        result["peak_mib"] = round((torch.cuda.max_memory_allocated() - base) / MiB, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2 * 704, help="labelled positions in the batch")
    parser.add_argument("--vocab", type=int, default=262208)
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    weight = torch.randn(args.vocab, args.hidden, device=device, dtype=dtype) * 0.02
    hidden = torch.randn(args.rows, args.hidden, device=device, dtype=dtype)
    targets = torch.randint(0, args.vocab, (args.rows,), device=device)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {}
    for name, fn in (("full_logits", full_logits), ("chunked", chunked)):
        results[name] = measure(name, fn, hidden, weight, targets, args.repeats)
        print(json.dumps({**results[name], "device": device_name}), flush=True)
    summary = {"device": device_name, "rows": args.rows, "vocab": args.vocab, "hidden": args.hidden,
               **{f"{name}.{k}": v for name, r in results.items() for k, v in r.items() if k != "name"},
               "time_ratio": round(results["chunked"]["step_s"] / results["full_logits"]["step_s"], 3)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
