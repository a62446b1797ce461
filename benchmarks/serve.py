"""Latency and throughput of `keras-cifar serve` (docs/serving.md has the numbers and the machine).

Starts `keras-cifar serve EXPORT_DIR --port 0` in a subprocess and sends it TF Serving :predict requests
of random uint8 images with the standard library's HTTP client: for a batch of 1 and of 64 images, first
one request at a time (latency p50 and p99 of the whole round trip, JSON included), then CLIENTS threads
at once (throughput in images per second). Prints a Markdown table. Usage:

    python benchmarks/serve.py EXPORT_DIR [--seconds 10] [--clients 4]
"""

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def start(folder: Path) -> tuple[subprocess.Popen, str]:
    """`keras-cifar serve` on a free port; returns the process and the model's URL once it serves."""
    command = [sys.executable, "-m", "keras_cifar", "serve", str(folder), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if found := re.match(r"serving \S+ at (\S+)", line):
            return server, found.group(1)
    raise SystemExit(f"keras-cifar serve ended with exit code {server.wait()}")


def post(url: str, body: bytes) -> float:
    """Seconds for one :predict request (the answer read and parsed)."""
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        json.loads(answer.read())
    return time.perf_counter() - start


def measure(url: str, batch: int, seconds: float, clients: int) -> dict[str, float]:
    """p50/p99 latency (ms) one request at a time, and images/s with `clients` threads, each for `seconds`."""
    images = np.random.default_rng(batch).integers(0, 256, (batch, 32, 32, 3))
    body = json.dumps({"signature_name": "serve_uint8", "instances": images.tolist()}).encode()
    for _ in range(3):  # warm-up
        post(url, body)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        latencies.append(post(url, body))

    def client(_: int) -> int:
        done = 0
        while time.perf_counter() < stop:
            post(url, body)
            done += 1
        return done

    stop = time.perf_counter() + seconds
    with ThreadPoolExecutor(clients) as pool:
        requests = sum(pool.map(client, range(clients)))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {"p50": p50, "p99": p99, "sequential": len(latencies), "throughput": requests * batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=4, help="threads sending requests at once")
    args = parser.parse_args()
    server, url = start(args.export_dir)
    try:
        print(f"| images per request | p50 latency | p99 latency | requests timed | throughput, {args.clients} clients |")
        print("| --- | --- | --- | --- | --- |")
        for batch in (1, 64):
            m = measure(url + ":predict", batch, args.seconds, args.clients)
            print(
                f"| {batch} | {m['p50']:.1f} ms | {m['p99']:.1f} ms | {m['sequential']:.0f} | {m['throughput']:.0f} images/s |"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
