"""The models the widgets can choose from: built-in ones, opened files, trained ones.

One registry per process, shared by the Segment and Train widgets, so a model
trained or opened anywhere is selectable everywhere at once.
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from ..models.modelfile import SegmentationModel, builtin_model_path, load_model


class ModelRegistry:
    changed = Signal()
    added = Signal(str)  # the name of a model just trained or opened: widgets select it

    def __init__(self) -> None:
        self._models: dict[str, SegmentationModel | str] = {}
        for name in ("default", "brightfield"):  # built-in; "default" hands stained images on
            path = builtin_model_path(name)
            if path is not None and path.is_file():
                self._models[name] = name

    def names(self) -> list[str]:
        return list(self._models)

    def add(self, name: str, model: SegmentationModel | str) -> str:
        """Register a model (object or file path) under a unique name; returns the name."""
        base, n = name, 2
        while name in self._models and self._models[name] is not model:
            name = f"{base} ({n})"
            n += 1
        self._models[name] = model
        self.changed.emit()
        self.added.emit(name)
        return name

    def add_file(self, path: str | Path) -> str:
        """Register a model file (once: opening the same file again selects its entry)."""
        source = str(Path(path).absolute())
        for name, entry in self._models.items():
            if isinstance(entry, SegmentationModel) and entry.source == source:
                self.added.emit(name)
                return name
        model = load_model(path)  # raises UNetError with a clear message
        model.source = source
        return self.add(Path(path).stem, model)

    def get(self, name: str) -> SegmentationModel:
        entry = self._models[name]
        if isinstance(entry, str):
            entry = load_model(entry)
            self._models[name] = entry
        return entry


_REGISTRY: ModelRegistry | None = None


def registry() -> ModelRegistry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = ModelRegistry()
    return _REGISTRY
