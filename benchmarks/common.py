"""Helpers shared by the benchmark suites."""
import torch


def synchronized(fn):
    """``fn`` wrapped so a timing includes the GPU work it queued (a no-op on the CPU)."""
    def call():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return call
