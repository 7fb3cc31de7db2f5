"""One file per op, each with its PyTorch reference and its public function (``backend="auto"`` dispatch):
mel, vertex_losses, smoothing, blendshapes; audio holds loading, windows and the frame clock."""
