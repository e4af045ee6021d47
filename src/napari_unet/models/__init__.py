"""The network and what a model knows: the U-Net and its tiled prediction, the
safetensors model file (weights plus a checked JSON config), the size rule and
the size model, bioimage.io packages, and the built-in models (the
``.safetensors`` files beside this one)."""
