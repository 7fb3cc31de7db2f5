"""Triton kernels, one file per fused op (installed as meshtalk_fast.kernels)."""
