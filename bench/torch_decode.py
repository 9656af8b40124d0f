#!/usr/bin/env python3
"""torch SDPA bf16 GQA decode at the shapes of bench/bench_decode.cu (the peer column).

32 query heads / 8 kv heads, head_dim 128, one query token, dense bf16 K/V [batch, 8, kv_len,
128]; F.scaled_dot_product_attention(enable_gqa=True) (repeat_interleave on older torch).
Timing, like bench/bench_decode.cu: device us per call from CUDA-graph replays of 10 calls, each
after an L2 flush (a 256 MiB buffer read and summed), minus the same graph without the calls (the
headline "us"); and CUDA events around each Python call, L2 flushed before it, median of >= 20
runs ("call us": includes the host's work; that flush overwrites the buffer). Bytes counted: K + V + Q + O. Prints a table;
--json FILE writes the rows.

    python3 bench/torch_decode.py [--quick] [--json FILE] [--runs N]
"""
import argparse
import json
import math
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        print(f"torch_decode: torch not available ({e})")
        if args.json:
            json.dump({"bench": "torch_decode", "skipped": str(e), "rows": []}, open(args.json, "w"))
        return 0
    if not torch.cuda.is_available():
        print("torch_decode: no CUDA device")
        if args.json:
            json.dump({"bench": "torch_decode", "skipped": "no CUDA device", "rows": []}, open(args.json, "w"))
        return 0
    dev = torch.device("cuda")
    runs = max(20, args.runs)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev).fill_(0x5A)
    flush_sink = torch.zeros((), dtype=torch.int64, device=dev)

    def time_us(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(runs):
            flush.fill_(0x5A)
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1000.0)
        return statistics.median(ts)

    def graph_us(fn, calls=10, replays=9):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graphs = []
        for with_calls in (True, False):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(calls):
                    flush_sink.copy_(flush.view(torch.int32).sum(dtype=torch.int64))  # read-based flush
                    if with_calls:
                        fn()
            graphs.append(g)
        ts = ([], [])
        for r in range(replays + 1):
            for k, g in enumerate(graphs):
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                g.replay()
                b.record()
                b.synchronize()
                if r:
                    ts[k].append(a.elapsed_time(b) * 1000.0)
        return (statistics.median(ts[0]) - statistics.median(ts[1])) / calls

    # copy bandwidth (read + write), same method as bench/main.cu
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    copy_us = time_us(lambda: dst.copy_(src))
    copy_tbps = 2 * src.numel() / (copy_us * 1e-6) / 1e12
    del src, dst

    hq, hk, d = 32, 8, 128
    shapes = [(16, 8192), (1, 32768)] if args.quick else \
        [(b, l) for b in (1, 16, 64, 128) for l in (1024, 8192, 32768)] + [(1, 131072)]
    has_gqa = "enable_gqa" in F.scaled_dot_product_attention.__doc__ if F.scaled_dot_product_attention.__doc__ else False
    rows = []
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; copy {copy_tbps:.2f} TB/s; "
          f"SDPA GQA via {'enable_gqa' if has_gqa else 'repeat_interleave'}")
    print(f"{'batch':>5} {'kv':>5} {'torch us':>9} {'TB/s':>6} {'%copy':>6} {'rel err':>8} {'call us':>9}")
    for batch, kv_len in shapes:
        g = torch.Generator(device=dev).manual_seed(batch * 100003 + kv_len)
        q = torch.randn(batch, hq, 1, d, device=dev, dtype=torch.bfloat16, generator=g)
        k = torch.randn(batch, hk, kv_len, d, device=dev, dtype=torch.bfloat16, generator=g)
        v = torch.randn(batch, hk, kv_len, d, device=dev, dtype=torch.bfloat16, generator=g)
        if has_gqa:
            fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # noqa: E731
        else:
            fn = lambda: F.scaled_dot_product_attention(  # noqa: E731
                q, k.repeat_interleave(hq // hk, 1), v.repeat_interleave(hq // hk, 1))
        out = fn()
        # correctness once: fp32 math on the first request
        kk = k[:1].float().repeat_interleave(hq // hk, 1)
        vv = v[:1].float().repeat_interleave(hq // hk, 1)
        ref = torch.softmax(q[:1].float() @ kk.transpose(-1, -2) / math.sqrt(d), -1) @ vv
        rel = ((out[:1].float() - ref).norm() / ref.norm()).item()
        assert rel < 1e-2 and torch.isfinite(out).all(), rel
        us = graph_us(fn)
        call_us = time_us(fn)
        nbytes = 2 * k.numel() * 2 + 2 * q.numel() * 2
        tbps = nbytes / (us * 1e-6) / 1e12
        rows.append({"bench": "torch_decode", "batch": batch, "kv_len": kv_len, "us": us, "tbps": tbps,
                     "pct_copy": tbps / copy_tbps, "rel_err": rel, "call_us": call_us,
                     "timing": "cuda graph replays of 10 calls, each after a read-based L2 flush; flush-only graph subtracted"})
        print(f"{batch:>5} {kv_len // 1024:>4}K {us:>9.1f} {tbps:>6.2f} {100 * tbps / copy_tbps:>5.0f}% {rel:>8.1e} "
              f"{call_us:>9.1f}")
        del q, k, v, out, kk, vv, ref
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": "torch_decode", "device": torch.cuda.get_device_name(), "copy_tbps": copy_tbps,
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
