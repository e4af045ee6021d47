"""Small pieces shared by the widgets: layer pickers, error display, running generators."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Generator

import napari
import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..errors import UNetError
from ..progress import Progress, TimeLeft, minutes_seconds

# Set in the metadata of layers the widgets compute (probability maps, weight
# maps): the layer choices do not jump to them when they appear.
DERIVED_KEY = "napari_unet_derived"


def report_error(exc: BaseException) -> None:
    """A user's mistake as a one-line notification; anything else with its type, never a dialog."""
    if isinstance(exc, UNetError):
        show_error(str(exc))
    else:
        show_error(f"napari-unet: {type(exc).__name__}: {exc}")


def connect_while_alive(owner: QWidget, signal, slot: Callable) -> None:
    """Connect ``slot`` to a napari or psygnal ``signal`` for as long as ``owner`` lives.

    Some signals outlive a widget (the model registry, the viewer's layer
    list): without this, they would call into a closed dock widget whose Qt
    half is gone and fail there.
    """
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: _disconnect(signal, slot))


def _disconnect(signal, slot: Callable) -> None:
    with contextlib.suppress(Exception):  # already gone: nothing to undo
        signal.disconnect(slot)


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept up to date.

    ``also`` lists other layers it accepts (a mask opened as an image layer):
    listed after the others, chosen by the user, and followed when opened
    only when ``follow_also`` says so.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_types: tuple,
        allow_none: bool = False,
        parent=None,
        follow_new: bool = True,
        also: Callable[[object], bool] | None = None,
        follow_also: Callable[[object], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer_types = layer_types
        self.also = also
        self.follow_also = follow_also
        self.allow_none = allow_none
        # An optional choice (a nuclear channel) must not jump to every image opened.
        self.follow_new = follow_new
        compact(self)
        events = viewer.layers.events
        for ev in (events.removed, events.moved, events.changed):
            connect_while_alive(self, ev, self.refresh)
        connect_while_alive(self, events.inserted, self._inserted)
        refresh = self.refresh

        def forget_layer_names(*_) -> None:
            # The viewer may be closing too (napari's proxy of it then fails on any
            # lookup): its layers go with it, and there is nothing to disconnect.
            try:
                layers = list(viewer.layers)
            except Exception:
                return
            for layer in layers:
                _disconnect(layer.events.name, refresh)

        self.destroyed.connect(forget_layer_names)
        self.refresh()

    def _inserted(self, event=None) -> None:
        """A newly opened layer of the right type becomes the choice (the user just opened it)."""
        self.refresh()
        layer = getattr(event, "value", None)
        derived = layer is not None and layer.metadata.get(DERIVED_KEY, False)
        wanted = layer is not None and (
            isinstance(layer, self.layer_types)
            or (self.follow_also is not None and self.follow_also(layer))
        )
        if self.follow_new and wanted and not derived:
            self.set_layer(layer)

    def refresh(self, event=None) -> None:
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        if self.allow_none:
            self.addItem("(none)")
        listed = [x for x in self.viewer.layers if isinstance(x, self.layer_types)]
        if self.also is not None:
            listed += [
                x
                for x in self.viewer.layers
                if not isinstance(x, self.layer_types) and self.also(x)
            ]
        for layer in listed:
            self.addItem(layer.name)
            layer.events.name.disconnect(self.refresh)
            layer.events.name.connect(self.refresh)
        index = self.findText(current)
        if index < 0 and not self.allow_none:
            # Prefer the selected layer when the previous choice is gone.
            active = self.viewer.layers.selection.active
            index = (
                self.findText(active.name)
                if active is not None and isinstance(active, self.layer_types)
                else 0
            )
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self):
        name = self.currentText()
        if not name or name == "(none)" or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def set_layer(self, layer) -> None:
        self.refresh()
        index = self.findText(layer.name)
        if index >= 0:
            self.setCurrentIndex(index)


class _FrozenHeap:
    """Keep the objects that existed before a task out of the garbage collector's full passes.

    A full collection walks every object of the process (napari's included)
    while holding the GIL: started by a worker's allocations, it froze the
    viewer for 250-300 ms. While tasks run, what existed at their start is
    frozen (``gc.freeze``), so full passes only walk the task's own objects;
    when the last task ends it is unfrozen, so nothing stays uncollectable.
    """

    running = 0

    @classmethod
    def task_started(cls) -> None:
        if cls.running == 0:
            gc.freeze()
        cls.running += 1

    @classmethod
    def task_finished(cls) -> None:
        cls.running = max(cls.running - 1, 0)
        if cls.running == 0:
            gc.unfreeze()


# Tasks expected to take longer than this show the time left on their bar.
ETA_FROM_S = 5.0


class TaskBar(QWidget):
    """A progress bar with a Cancel/Stop button, driving a core generator in a thread worker."""

    def __init__(
        self, stop_text: str = "Cancel", napari_activity: bool = True, parent=None
    ) -> None:
        super().__init__(parent)
        # Whether tasks also appear in napari's activity panel. That panel's
        # busy indicator animates for as long as a task runs, and every frame
        # recomposes the OpenGL canvas: with software GL (Xvfb, remote
        # desktops) on 2 cores, an hour-long training ran at half speed.
        self.napari_activity = napari_activity
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("idle")
        self.bar.setTextVisible(True)
        self.stop_button = QPushButton(stop_text)
        self.stop_button.setEnabled(False)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.stop_button)
        self.worker: GeneratorWorker | None = None
        self._pbar: napari_progress | None = None
        self._on_stop: Callable[[], None] | None = None
        self._stop_requested = False
        self.stop_button.clicked.connect(self.request_stop)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def run(
        self,
        make_generator: Callable[[], Generator[Progress, None, object]],
        on_event: Callable[[Progress], None] | None = None,
        on_done: Callable[[object], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        description: str = "working",
        on_error: Callable[[BaseException], bool | None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> GeneratorWorker:
        """Start ``make_generator()`` in a thread; events and the result come back in the GUI thread.

        ``on_stop`` is what the button does (default: abort the worker at its
        next yield, discarding the result). ``on_finished`` runs when the task
        ends in any way (done, stopped or failed): connected before the worker
        starts, so a task that fails at once still calls it (a handler
        connected after ``start()`` can miss a fast failure and leave a button
        disabled for good). ``on_error`` returning True means the exception
        was a normal outcome it has reported itself (a stop before any work):
        no error notification, and the bar says "stopped".
        """
        if self.worker is not None:
            raise UNetError("a task is already running; wait for it or stop it first")

        def drive():
            return (yield from make_generator())

        # Errors are reported once, here (report_error), not re-raised in the
        # event loop as a second message with a console traceback.
        worker = create_worker(drive, _start_thread=False, _ignore_errors=True)
        self.worker = worker
        self._on_stop = on_stop
        self._stop_requested = False
        if self.napari_activity:
            self._pbar = napari_progress(total=0, desc=f"U-Net: {description}")
        self.bar.setRange(0, 0)
        self.bar.setFormat(description)
        self.stop_button.setEnabled(True)
        time_left = TimeLeft()
        began = time.perf_counter()

        def yielded(event: Progress) -> None:
            text = description
            if event.total:
                self.bar.setRange(0, int(event.total))
                self.bar.setValue(int(event.step))
                text = f"{description}: {event.step}/{event.total}"
                if self._pbar is not None:
                    self._pbar.total = int(event.total)
                    self._pbar.n = int(event.step)
                    self._pbar.refresh()
            left = time_left.update(event)
            if left is not None and time.perf_counter() - began + left > ETA_FROM_S:
                text += f", {minutes_seconds(left)} left"
            if not self._stop_requested:  # "stopping…" / "stopped" stay until the end
                self.bar.setFormat(text)
            if on_event is not None:
                on_event(event)

        def returned(value) -> None:
            if on_done is not None:
                on_done(value)

        def finished() -> None:
            _FrozenHeap.task_finished()
            if on_finished is not None:
                on_finished()
            self.worker = None
            self.stop_button.setEnabled(False)
            self.bar.setRange(0, 1)
            ended_well = self.bar.format() not in ("stopped", "failed")
            self.bar.setValue(1 if ended_well else 0)
            if ended_well:
                self.bar.setFormat("done")
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None

        def errored(exc: BaseException) -> None:
            if on_error is not None and on_error(exc):
                self.bar.setFormat("stopped")
                return
            self.bar.setFormat("failed")
            report_error(exc)

        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        _FrozenHeap.task_started()
        worker.start()
        return worker

    def request_stop(self) -> None:
        if self.worker is None:
            return
        self._stop_requested = True
        if self._on_stop is not None:
            self._on_stop()
            self.bar.setFormat("stopping after this step...")
        else:
            self.worker.quit()
            self.bar.setFormat("stopped")
            show_info("U-Net: cancelled")
        self.stop_button.setEnabled(False)


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s form inside a scroll area.

    A dock then needs little height: the form scrolls, while the primary
    actions (:func:`pinned_layout`) stay in view below it.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    return QVBoxLayout(inner)


def pinned_layout(widget: QWidget) -> QVBoxLayout:
    """A layout under :func:`scrolling_layout`'s area that never scrolls.

    For a widget's primary actions, progress and status: on a laptop screen
    (1366x768), docked alone or with the others, they are always in view.
    """
    pinned = QWidget()
    pinned.setObjectName("pinned_actions")
    layout = QVBoxLayout(pinned)
    layout.setContentsMargins(9, 4, 9, 6)
    widget.layout().addWidget(pinned)
    return layout


def folded(title: str, *widgets: QWidget) -> QWidget:
    """A collapsed section holding ``widgets``: settings most users never change."""
    section = QCollapsible(title)
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    section.addWidget(body)
    return section


# Marks the widgets of this plugin, whatever napari wraps them in.
DOCK_PROPERTY = "napari_unet_widget"
# Width (px) the plugin's dock opens at: on a 1366 px screen, next to napari's
# layer list, the canvas keeps over half of the window.
DOCK_WIDTH = 310


class _JoinDocksOnShow(QObject):
    """Tabs a napari-unet dock together with the plugin's docks already open.

    napari stacks the plugin's docks one under another: with all four open
    on a 1366x768 screen each got under 150 px and their buttons went out of
    sight. As tabs of one dock, each has the full height, and the canvas
    keeps the width (napari's own ``add_dock_widget(tabify=True)`` does the same).
    """

    def __init__(self, widget: QWidget) -> None:
        super().__init__(widget)
        self._widget = widget
        self._done = False
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if not self._done and event.type() == QEvent.Type.Show:
            self._done = True
            QTimer.singleShot(0, self._join)
        return False

    def _join(self) -> None:
        dock = _ancestor(self._widget, QDockWidget)
        window = _ancestor(dock, QMainWindow) if dock is not None else None
        if dock is None or window is None or dock.isFloating():
            return
        # Narrow (the user may drag it wider): the canvas keeps most of a laptop's width,
        # but wide enough for the form, so that it never scrolls sideways.
        width = max(DOCK_WIDTH, _form_width(dock))
        if dock.width() > width:
            window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            if (
                other is not dock
                and other.isVisible()
                and not other.isFloating()
                and window.dockWidgetArea(other) == area
                and _holds_plugin_widget(other)
            ):
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                # The tabs share one width: wide enough for this form too.
                QTimer.singleShot(0, lambda: _fit_width(window, dock))
                return


def _fit_width(window: QMainWindow, dock: QDockWidget) -> None:
    needed = _form_width(dock)
    if dock.width() < needed:
        window.resizeDocks([dock], [needed], Qt.Orientation.Horizontal)


def _form_width(dock: QDockWidget) -> int:
    """The width the dock needs to show its widest scrolling form without a horizontal bar."""
    needed = dock.minimumSizeHint().width()
    for area in dock.findChildren(QScrollArea):
        if area.widget() is not None:
            chrome = dock.width() - area.viewport().width()
            needed = max(needed, area.widget().minimumSizeHint().width() + chrome)
    return needed


def _ancestor(widget: QWidget | None, kind: type) -> QWidget | None:
    while widget is not None and not isinstance(widget, kind):
        widget = widget.parentWidget()
    return widget


def _holds_plugin_widget(dock: QDockWidget) -> bool:
    inner = dock.widget()
    if inner is None:
        return False
    return bool(inner.property(DOCK_PROPERTY)) or any(
        child.property(DOCK_PROPERTY) for child in inner.findChildren(QWidget)
    )


def join_plugin_docks(widget: QWidget) -> None:
    """Mark ``widget`` as this plugin's and tab its dock with the plugin's other docks when shown."""
    widget.setProperty(DOCK_PROPERTY, True)
    _JoinDocksOnShow(widget)


# File names of masks opened as image layers (File > Open reads a mask TIFF as an image).
MASK_NAME_ENDINGS = ("_labels", "_label", "_masks", "_mask", "_seg", "_gt")


def is_integer_image(layer) -> bool:
    """An image layer that can be read as labels: one channel, integer pixels, one scale."""
    if not isinstance(layer, napari.layers.Image) or layer.rgb or layer.multiscale:
        return False
    return np.issubdtype(np.dtype(layer.dtype), np.integer)


def is_mask_image(layer) -> bool:
    """An integer image layer named like a mask file (``cells_masks``, ``img_labels``...)."""
    return is_integer_image(layer) and layer.name.lower().endswith(MASK_NAME_ENDINGS)


def compact(combo: QComboBox, characters: int = 10) -> QComboBox:
    """A combo box whose width does not grow with its longest item (the dock stays narrow)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    return combo


def folder_row(parent: QWidget, edit: QLineEdit, title: str) -> QWidget:
    """``edit`` (a folder path) with a "…" button that opens a folder chooser titled ``title``."""
    browse = QPushButton("…")
    browse.setMaximumWidth(30)
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    layout.addWidget(browse)
    browse.clicked.connect(
        lambda: edit.setText(QFileDialog.getExistingDirectory(parent, title) or edit.text())
    )
    return row


def labeled(text: str, widget: QWidget) -> QWidget:
    """``widget`` after a label, in one row (combo boxes made :func:`compact`)."""
    if isinstance(widget, QComboBox):
        compact(widget)
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(text)
    label.setMinimumWidth(90)
    layout.addWidget(label)
    layout.addWidget(widget, 1)
    return row
