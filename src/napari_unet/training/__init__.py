"""From annotated images to a model: training data, augmentation, the border
weight map, the loss, optimizers, validation, checkpoints, recipes and the
training loop (``loop``)."""
