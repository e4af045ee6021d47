"""From an image to labels: the per-plane pipeline (``segmentation``), what
the user is told about an input (``notes``), the options every face shares,
many files (``batch``), images bigger than memory (``blockwise``), and whole
cells grown from seeds."""
