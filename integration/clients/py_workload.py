#!/usr/bin/env python3
"""A small Python program for real profilers to record (py-spy, pyinstrument): the main
thread and two named worker threads burn CPU in distinctively named functions.

    python py_workload.py SECONDS
"""
import sys
import threading
import time


def flamepipe_fib(n):
    if n < 2:
        return n
    return flamepipe_fib(n - 1) + flamepipe_fib(n - 2)


def flamepipe_spin(deadline):
    acc = 0
    while time.time() < deadline:
        for i in range(10000):
            acc = (acc * 31 + i) % 1000003
    return acc


def flamepipe_worker(deadline):
    while time.time() < deadline:
        flamepipe_fib(20)


def main(seconds):
    deadline = time.time() + seconds
    workers = [threading.Thread(target=flamepipe_worker, args=(deadline,), name="worker-%d" % i) for i in range(2)]
    for w in workers:
        w.start()
    flamepipe_spin(deadline)
    for w in workers:
        w.join()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
