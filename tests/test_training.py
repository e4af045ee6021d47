import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import load_model, save_model
from napari_unet.progress import run_to_end
from napari_unet.training.augment import NO_AUGMENTATION
from napari_unet.training.data import make_training_image
from napari_unet.training.loop import iter_train
from napari_unet.training.loss import weighted_cross_entropy
from napari_unet.training.optimizers import learning_rate
from napari_unet.training.recipes import TrainConfig
from napari_unet.training.validation import (
    MARGIN_CHOSEN_AT,
    expected_maximum,
    start_model_margin_for,
)

ARCH = dict(depth=2, base_channels=8, scheme="3class", batch_norm=True, dropout=0.0)


@pytest.fixture(scope="module")
def data():
    train_set = [
        make_training_image(*synthetic_nuclei((96, 96), n_nuclei=8, seed=s), 1) for s in range(3)
    ]
    val_set = [make_training_image(*synthetic_nuclei((96, 96), n_nuclei=8, seed=10), 1)]
    return train_set, val_set


def small_config(**kw):
    base = dict(
        epochs=2,
        patches_per_epoch=8,
        batch_size=4,
        patch_size=92,
        augment=NO_AUGMENTATION,
        precision="float32",
        tune_postprocessing=False,
        warmup_steps=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_on_synthetic_data(data):
    train_set, _ = data
    events = []
    config = small_config(epochs=8, lr=3e-3, schedule="constant")
    model = run_to_end(iter_train(train_set, architecture=ARCH, config=config), events.append)
    losses = [e.info["loss"] for e in events if e.stage == "train"]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    assert model.training["steps"] == 16 and model.training["stopped_by"] == "epochs"


def test_validation_selects_and_reports(data):
    train_set, val_set = data
    events = []
    model = run_to_end(
        iter_train(
            train_set, val_set, architecture=ARCH, config=small_config(tune_postprocessing=True)
        ),
        events.append,
    )
    validations = [e for e in events if e.stage == "validate"]
    assert len(validations) == 2
    assert {"ap50", "ap70", "score"} <= set(validations[0].info)
    assert model.training["validation"]["epoch"] == model.training["best_epoch"]
    assert "postprocessing_tuning" in model.training


def test_stop_keeps_the_best_model(data):
    train_set, val_set = data
    stop = threading.Event()
    gen = iter_train(
        train_set, val_set, architecture=ARCH, config=small_config(epochs=100), stop=stop
    )
    events = []
    try:
        while True:
            e = next(gen)
            events.append(e)
            if e.stage == "validate":
                stop.set()
    except StopIteration as done:
        model = done.value
    assert model.training["stopped_by"] == "stop"
    assert model.training["best_epoch"] == 0
    assert sum(e.stage == "train" for e in events) == 2


def test_time_limit(data):
    train_set, _ = data
    model = run_to_end(
        iter_train(train_set, architecture=ARCH, config=small_config(epochs=10_000, minutes=0.05))
    )
    assert model.training["stopped_by"] == "time"
    assert model.training["time_s"] < 30


def test_resume_continues_from_checkpoint(data, tmp_path):
    train_set, _ = data
    ckpt = tmp_path / "run.ckpt.safetensors"
    first = run_to_end(
        iter_train(
            train_set, architecture=ARCH, config=small_config(epochs=1, seed=1), checkpoint=ckpt
        )
    )
    assert ckpt.exists() and first.training["steps"] == 2
    events = []
    resumed = run_to_end(
        iter_train(
            train_set,
            architecture=ARCH,
            config=small_config(epochs=3, seed=1),
            checkpoint=ckpt,
            resume=True,
        ),
        events.append,
    )
    assert resumed.training["steps"] == 6
    assert [e.info["epoch"] for e in events if e.stage == "train"][0] == 1
    with pytest.raises(UNetError, match="checkpoint"):
        run_to_end(
            iter_train(
                train_set,
                architecture=ARCH,
                config=small_config(),
                checkpoint=tmp_path / "x",
                resume=True,
            )
        )


def test_fine_tune_from_model_file_and_sgd(data, tiny_model, tmp_path):
    train_set, _ = data
    path = save_model(tiny_model, tmp_path / "start.safetensors")
    model = run_to_end(
        iter_train(train_set, init=path, config=small_config(epochs=1, optimizer="sgd"))
    )
    assert model.net.config == tiny_model.net.config
    assert not torch.equal(model.net.head.weight, tiny_model.net.head.weight)
    assert model.training["started_from"] == str(path)
    saved = load_model(save_model(model, tmp_path / "tuned.safetensors"))
    assert saved.training["steps"] == 2


def test_errors_for_bad_inputs(data):
    train_set, _ = data
    with pytest.raises(UNetError, match="at least one"):
        run_to_end(iter_train([], architecture=ARCH))
    rgb_item = make_training_image(np.zeros((40, 40, 3), np.uint8), np.ones((40, 40), np.int32), 3)
    with pytest.raises(UNetError, match="channels"):
        run_to_end(iter_train([rgb_item], architecture=ARCH, config=small_config()))
    with pytest.raises(UNetError, match="optimizer"):
        run_to_end(iter_train(train_set, architecture=ARCH, config=small_config(optimizer="lbfgs")))


def test_weighted_cross_entropy_ignores_zero_weight_pixels():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    w = torch.zeros(1, 4, 4)
    w[0, 0, 0] = 2.0
    expected = 2.0 * torch.nn.functional.cross_entropy(logits[:, :, :1, :1], target[:, :1, :1])
    assert torch.allclose(weighted_cross_entropy(logits, target, w), expected)


def test_learning_rate_schedule():
    config = TrainConfig(warmup_steps=10)
    assert learning_rate(1.0, 0.0, 0, config) == pytest.approx(0.1)
    assert learning_rate(1.0, 0.0, 20, config) == pytest.approx(1.0)
    assert learning_rate(1.0, 1.0, 20, config) == pytest.approx(0.02)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_lean_optimizers_match_torch(name):
    from napari_unet.training.loop import make_optimizer

    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = make_optimizer(name, a.parameters(), 1e-2, 1e-3)
    if name == "adam":
        theirs = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-3)
    else:
        theirs = torch.optim.SGD(b.parameters(), lr=1e-2, momentum=0.99, weight_decay=1e-3)
    for step in range(5):
        x = torch.randn(7, 5, generator=torch.Generator().manual_seed(step))
        for net, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # Its state survives a save/restore round trip in torch's layout.
    restored = make_optimizer(name, a.parameters(), 1e-2, 1e-3)
    restored.load_state_dict(ours.state_dict())
    assert restored.state.keys() == ours.state.keys()


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_start_decay_is_the_gradient_of_a_pull_toward_the_start_weights(name):
    """start_decay a adds the gradient of a/2 * |w - w_start|^2 to the loss's (L2-SP)."""
    from napari_unet.training.loop import make_optimizer

    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in b.parameters()]
    ours = make_optimizer(name, a.parameters(), 1e-2, 0.0, start_decay=0.5)
    plain = make_optimizer(name, b.parameters(), 1e-2, 0.0)
    for step in range(5):
        x = torch.randn(7, 5, generator=torch.Generator().manual_seed(step))
        ours.zero_grad()
        a(x).square().sum().backward()
        ours.step()
        plain.zero_grad()
        pull = sum((p - s).square().sum() for p, s in zip(b.parameters(), start))
        (b(x).square().sum() + 0.25 * pull).backward()
        plain.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _distance(net_a, net_b) -> float:
    return sum(
        float((p - q).detach().square().sum())
        for p, q in zip(net_a.parameters(), net_b.parameters())
    )


def test_fine_tuning_with_start_decay_stays_nearer_the_start_model(data, tiny_model):
    train_set, _ = data
    config = small_config(epochs=3, lr=3e-3, schedule="constant")
    free = run_to_end(iter_train(train_set, init=tiny_model, config=config))
    pulled = run_to_end(
        iter_train(train_set, init=tiny_model, config=replace(config, start_decay=10.0))
    )
    assert pulled.training["config"]["start_decay"] == 10.0
    assert 0 < _distance(pulled.net, tiny_model.net) < 0.5 * _distance(free.net, tiny_model.net)


def test_a_resumed_run_is_pulled_toward_the_start_model_not_the_checkpoint(
    data, tiny_model, tmp_path
):
    from napari_unet.training.loop import _TrainingRun

    train_set, _ = data
    ckpt = tmp_path / "run.ckpt.safetensors"
    config = small_config(epochs=1, lr=3e-2, schedule="constant", start_decay=1.0)
    run_to_end(iter_train(train_set, init=tiny_model, config=config, checkpoint=ckpt))
    resumed = _TrainingRun(train_set, [], tiny_model, None, config, ckpt, True)
    start = [p for p in tiny_model.net.parameters() if p.requires_grad]
    assert any(not torch.equal(p, s) for p, s in zip(resumed.net.parameters(), start))
    for anchor, s in zip(resumed.optimizer.pull.start, start):
        assert torch.equal(anchor, s)


def test_a_resumed_fine_tune_remembers_the_start_score_and_the_checkpoints_compared(
    data, tiny_model, tmp_path, monkeypatch
):
    import napari_unet.training.loop as training

    train_set, _ = data
    start = {k: v.clone() for k, v in tiny_model.net.state_dict().items()}
    ckpt = tmp_path / "run.ckpt.safetensors"
    # The start model scores 0.5 and the first checkpoint 0.9: it replaces the start model.
    scores = iter([0.5, 0.9])
    monkeypatch.setattr(
        training,
        "evaluate_model",
        lambda *a, **k: dict.fromkeys(("ap50", "ap70", "score"), next(scores)),
    )
    config = small_config(holdout_fraction=0.25, validate_start=True, epochs=1)
    first = run_to_end(iter_train(train_set, init=tiny_model, config=config, checkpoint=ckpt))
    assert first.training["best_epoch"] == 0 and first.training["checkpoints_compared"] == 1
    # Resumed: no second look at the start model, the earlier checkpoint still counts, and
    # with margins so large that 0.9 no longer clears them the start weights come back.
    scores = iter([0.6])
    config = replace(config, epochs=2, start_model_margin=100.0)
    resumed = run_to_end(
        iter_train(train_set, init=tiny_model, config=config, checkpoint=ckpt, resume=True)
    )
    summary = resumed.training
    assert summary["checkpoints_compared"] == 2
    assert summary["kept_start_model"] and summary["best_epoch"] == -1
    for name, value in resumed.net.state_dict().items():
        torch.testing.assert_close(value, start[name])


def test_training_from_scratch_has_no_start_to_be_pulled_toward(data):
    train_set, _ = data
    from napari_unet.training.loop import _TrainingRun

    run = _TrainingRun(train_set, [], None, ARCH, small_config(start_decay=1.0), None, False)
    assert run.optimizer.pull is None


def test_stop_before_the_first_step_makes_no_model(data):
    from napari_unet.training.loop import TrainingStopped

    train_set, _ = data
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped, match="before its first step"):
        run_to_end(iter_train(train_set, architecture=ARCH, config=small_config(), stop=stop))


def test_progress_total_follows_a_binding_minutes_limit(data):
    train_set, _ = data
    events = []
    config = small_config(epochs=100_000, minutes=0.03)
    run_to_end(iter_train(train_set, architecture=ARCH, config=config), events.append)
    totals = [e.total for e in events if e.stage == "train"]
    steps_by_epochs = 100_000 * 2
    assert totals and max(totals[1:] or totals) < steps_by_epochs


def test_best_model_so_far_is_on_disk_during_training(data, tmp_path):
    train_set, _ = data
    out = tmp_path / "best.safetensors"
    gen = iter_train(train_set, architecture=ARCH, config=small_config(epochs=3), save_best_to=out)
    for event in gen:
        if event.stage == "train" and event.info["epoch"] == 1:
            break  # as if the process were killed during the second epoch
    crashed = load_model(out)
    assert crashed.training["provisional"] and crashed.training["best_epoch"] == 0


def test_a_checkpoint_is_not_a_model_and_says_how_to_resume(data, tmp_path):
    train_set, _ = data
    ckpt = tmp_path / "run.checkpoint.safetensors"
    run_to_end(
        iter_train(train_set, architecture=ARCH, config=small_config(epochs=1), checkpoint=ckpt)
    )
    with pytest.raises(UNetError, match="--resume"):
        load_model(ckpt)


def test_fine_tuning_brightfield_images_starts_from_the_companion(tmp_path, monkeypatch):
    import napari_unet.models.modelfile as mf
    from napari_unet.models.modelfile import new_model

    companion = new_model(**ARCH)
    path = mf.save_model(companion, tmp_path / "brightfield.safetensors")
    monkeypatch.setattr(mf, "builtin_model_path", lambda n: path if n == "brightfield" else None)
    start = new_model(**ARCH)
    start.companions = {"brightfield": "brightfield"}
    image, labels = synthetic_nuclei((96, 96), n_nuclei=8, seed=1)
    bright = (int(image.max()) - image.astype(np.int64)).astype(np.uint16)
    items = [make_training_image(bright, labels, 1)]
    assert items[0].image_type == "brightfield"
    model = run_to_end(iter_train(items, init=start, config=small_config(epochs=1)))
    assert model.training["started_from"] == "brightfield"
    fluo_items = [make_training_image(image, labels, 1)]
    model = run_to_end(iter_train(fluo_items, init=start, config=small_config(epochs=1)))
    assert model.training["started_from"] != "brightfield"


def test_without_validation_images_strips_are_held_out_and_the_start_model_competes(
    data, tiny_model, monkeypatch
):
    import napari_unet.training.loop as training

    train_set, _ = data
    start = {k: v.clone() for k, v in tiny_model.net.state_dict().items()}
    scores = iter([0.9, 0.1, 0.2])  # the start model scores best on the held-out strips
    seen_regions = []

    def fake_evaluate(net, images, params, device, precision="auto"):
        seen_regions.append([int(item.valid.sum()) for item in images])
        score = next(scores)
        return {"ap50": score, "ap70": score, "score": score}

    monkeypatch.setattr(training, "evaluate_model", fake_evaluate)
    events = []
    config = small_config(holdout_fraction=0.25, validate_start=True, tune_postprocessing=True)
    model = run_to_end(iter_train(train_set, init=tiny_model, config=config), events.append)
    assert model.training["kept_start_model"] and model.training["best_epoch"] == -1
    assert model.training["validated_on"] == "held-out strips of the training images"
    assert "postprocessing_tuning" not in model.training  # never tuned on the strips
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(value, start[name])
    # Each validation saw the bottom quarter of every training image.
    assert seen_regions[0] == [96 * 24] * len(train_set)

    assert [e.info["epoch"] for e in events if e.stage == "validate"] == [-1, 0, 1]


def test_training_that_beats_the_start_model_replaces_it(data, tiny_model, monkeypatch):
    import napari_unet.training.loop as training

    train_set, _ = data
    scores = iter([0.1, 0.9, 0.3])
    monkeypatch.setattr(
        training,
        "evaluate_model",
        lambda *a, **k: dict.fromkeys(("ap50", "ap70", "score"), next(scores)),
    )
    config = small_config(holdout_fraction=0.25, validate_start=True)
    model = run_to_end(iter_train(train_set, init=tiny_model, config=config))
    assert not model.training["kept_start_model"] and model.training["best_epoch"] == 0


@pytest.mark.parametrize("margin, kept", [(None, True), (0.0, False)])
def test_a_checkpoint_must_beat_the_start_model_by_more_than_chance(
    data, tiny_model, monkeypatch, margin, kept
):
    import napari_unet.training.loop as training

    train_set, _ = data
    scores = iter([0.50, 0.52, 0.51])  # a win by 0.02 on a few strips' nuclei: chance
    monkeypatch.setattr(
        training,
        "evaluate_model",
        lambda *a, **k: dict.fromkeys(("ap50", "ap70", "score"), next(scores)),
    )
    config = small_config(holdout_fraction=0.25, validate_start=True)
    if margin is not None:
        config = replace(config, start_model_margin=margin, start_model_image_margin=margin)
    model = run_to_end(iter_train(train_set, init=tiny_model, config=config))
    summary = model.training
    assert summary["kept_start_model"] is kept
    assert summary["validation_nuclei"] > 0
    expected = start_model_margin_for(
        config.start_model_margin,
        summary["validation_nuclei"],
        2,
        summary["n_val_images"],
        config.start_model_image_margin,
    )
    assert summary["checkpoints_compared"] == 2
    assert summary["start_model_margin"] == pytest.approx(expected, abs=1e-4)


def test_expected_maximum_matches_the_mean_largest_of_simulated_normal_draws():
    rng = np.random.default_rng(0)
    for k in (2, 5, 21, 54):
        simulated = rng.standard_normal((20_000, k)).max(axis=1).mean()
        assert expected_maximum(k) == pytest.approx(simulated, abs=0.02)
    assert expected_maximum(1) == 0.0


def test_the_margin_grows_past_the_checkpoints_it_was_chosen_at_and_shrinks_with_the_data():
    at_chosen = start_model_margin_for(0.25, 100, MARGIN_CHOSEN_AT, 4, 0.1)
    assert at_chosen == pytest.approx(0.025 + 0.05)  # the coefficients hold where chosen
    margins = [start_model_margin_for(0.25, 100, k, 4, 0.1) for k in (1, 9, 21, 54, 200)]
    assert margins[:3] == [at_chosen] * 3  # fewer checkpoints never lower the bar
    assert at_chosen < margins[3] < margins[4]
    assert margins[3] / at_chosen == pytest.approx(expected_maximum(55) / expected_maximum(22))
    # Four times the nuclei halve the nuclei term; four times the images, the image term.
    assert start_model_margin_for(0.25, 400, 21) == pytest.approx(0.025 / 2)
    assert start_model_margin_for(0.0, 9, 21, 16, 0.1) == pytest.approx(0.1 / 4)
    assert start_model_margin_for(0.0, 100, 54, 1, 0.0) == 0.0


def test_a_checkpoint_that_cleared_the_margin_early_falls_back_to_the_start_model_when_it_grows(
    data, tiny_model, monkeypatch
):
    """The best of many checkpoints must clear the margin for all of them, not for the first few."""
    import napari_unet.training.loop as training

    train_set, _ = data
    start = {k: v.clone() for k, v in tiny_model.net.state_dict().items()}
    nuclei, strips = [], []

    def fake_evaluate(net, images, *a, **k):
        nuclei.append(sum(len(np.unique(i.labels[i.valid & (i.labels > 0)])) for i in images))
        strips.append(len(images))
        return dict.fromkeys(("ap50", "ap70", "score"), next(scores))

    # Find the strips' nuclei count first, then place the first checkpoint's
    # lead between the margin at one checkpoint and the margin at 40.
    scores = iter([0.5, 0.5])
    monkeypatch.setattr(training, "evaluate_model", fake_evaluate)
    config = small_config(holdout_fraction=0.25, validate_start=True, epochs=1, patches_per_epoch=4)
    run_to_end(iter_train(train_set, init=tiny_model, config=config))
    c, d = config.start_model_margin, config.start_model_image_margin
    early, late = (start_model_margin_for(c, nuclei[0], k, strips[0], d) for k in (1, 40))
    lead = (early + late) / 2
    events = []
    scores = iter([0.5, 0.5 + lead] + [0.5] * 39)
    config = replace(config, epochs=40)
    model = run_to_end(iter_train(train_set, init=tiny_model, config=config), events.append)
    best = [e.info["best"] for e in events if e.stage == "validate"]
    assert best[:2] == [True, True]  # the first checkpoint cleared the margin for one
    summary = model.training
    assert summary["kept_start_model"] and summary["best_epoch"] == -1
    assert summary["checkpoints_compared"] == 40
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(value, start[name])


def test_hold_out_strips_split_each_image_in_two_and_skip_empty_strips():
    from napari_unet.training.data import hold_out_strips

    image, labels = synthetic_nuclei((80, 120), n_nuclei=10, seed=3)
    items = [make_training_image(image, labels, 1), make_training_image(image, labels, 1)]
    items[1].labels[:, 90:] = 0  # no object in its strip (a wide image's right quarter)
    train, held = hold_out_strips(items, 0.25)
    assert len(train) == 2 and len(held) == 1
    assert train[0].shape == (80, 90) and held[0].shape == (80, 30)  # a wide image's right quarter
    np.testing.assert_array_equal(held[0].labels, items[0].labels[:, 90:])
    np.testing.assert_array_equal(train[0].image, items[0].image[:, :, :90])
    assert train[1] is items[1]  # stays whole in training


def test_a_partial_annotation_gives_its_strip_from_the_annotated_region():
    # A region in the top-left corner of a tall image: the image's own last
    # quarter holds none of it; the region's own last quarter is held out.
    from napari_unet.training.data import hold_out_strips

    image, labels = synthetic_nuclei((200, 120), n_nuclei=40, seed=5)
    item = make_training_image(image, labels, 1)
    item.valid[...] = False
    item.valid[10:70, 20:100] = True  # 60 x 80: its longer side runs along X
    train, held = hold_out_strips([item], 0.25)
    assert len(held) == 1
    assert held[0].shape == (60, 20) and held[0].valid.all()
    np.testing.assert_array_equal(held[0].labels, labels[10:70, 80:100])
    # Training keeps the image up to the strip, never the strip itself.
    assert train[0].shape == (200, 80)
    np.testing.assert_array_equal(train[0].labels, item.labels[:, :80])


def test_a_held_out_share_outside_0_1_is_refused(data):
    train_set, _ = data
    with pytest.raises(UNetError, match="held-out share"):
        run_to_end(
            iter_train(train_set, architecture=ARCH, config=small_config(holdout_fraction=1.0))
        )


@pytest.fixture
def default_with_rgb_companion(tmp_path, monkeypatch):
    """A one-channel start model whose brightfield companion takes R, G, B (as the built-ins)."""
    import napari_unet.models.modelfile as mf
    from napari_unet.models.modelfile import new_model

    companion = new_model(**ARCH, in_channels=3)
    path = mf.save_model(companion, tmp_path / "brightfield.safetensors")
    monkeypatch.setattr(mf, "builtin_model_path", lambda n: path if n == "brightfield" else None)
    start = new_model(**ARCH)
    start.companions = {"brightfield": "brightfield"}
    return start


def stained(seed: int):
    """Synthetic dark nuclei on a bright, pinkish RGB background, and their labels."""
    image, labels = synthetic_nuclei((96, 96), n_nuclei=8, seed=seed)
    dark = 1.0 - image.astype(np.float32) / image.max()
    tint = np.array([0.95, 0.75, 0.9], np.float32)
    return (255 * dark[..., None] * tint).astype(np.uint8), labels


def test_fine_tuning_stained_images_trains_the_rgb_companion_on_colour(
    default_with_rgb_companion,
):
    start = default_with_rgb_companion
    items = [make_training_image(*stained(s), model=start) for s in (1, 2)]
    assert [(i.image.shape[0], i.image_type) for i in items] == [(3, "brightfield")] * 2
    # A fluorescence image among them is prepared for the one-channel network.
    grey = make_training_image(*synthetic_nuclei((96, 96), n_nuclei=8, seed=3), model=start)
    assert grey.image.shape[0] == 1
    model = run_to_end(iter_train(items + [grey], init=start, config=small_config(epochs=1)))
    assert model.training["started_from"] == "brightfield" and model.in_channels == 3
    # Mostly fluorescence: the one-channel network is trained, the RGB image adapted.
    fluo = [grey, make_training_image(*synthetic_nuclei((96, 96), n_nuclei=8, seed=4), model=start)]
    model = run_to_end(iter_train(fluo + items[:1], init=start, config=small_config(epochs=1)))
    assert model.in_channels == 1


@pytest.mark.parametrize("seed", range(3))
def test_adapting_channels_equals_preparing_for_that_network(default_with_rgb_companion, seed):
    from napari_unet.images.normalize import Normalization
    from napari_unet.training.data import adapt_channels

    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    labels = np.zeros((40, 50), np.int32)
    labels[10:20, 10:20] = 1
    for image_type in ("brightfield", "fluorescence"):
        colour = make_training_image(rgb, labels, 3, image_type=image_type)
        grey = make_training_image(rgb, labels, 1, image_type=image_type)
        np.testing.assert_allclose(
            adapt_channels(colour, 1, Normalization()).image, grey.image, atol=1e-5
        )
        np.testing.assert_allclose(
            adapt_channels(grey, 3, Normalization()).image,
            np.repeat(grey.image, 3, axis=0),
            atol=1e-6,
        )


def test_a_training_image_needs_channels_or_a_model():
    with pytest.raises(TypeError, match="in_channels or model"):
        make_training_image(*synthetic_nuclei((64, 64), n_nuclei=3, seed=0))


def test_a_trained_model_records_the_image_types_it_saw_and_its_start_saw(
    default_with_rgb_companion,
):
    start = default_with_rgb_companion
    items = [make_training_image(*stained(s), model=start) for s in (1, 2)]
    model = run_to_end(iter_train(items, init=start, config=small_config(epochs=1)))
    assert model.training["image_types"] == ["brightfield"]
    grey = make_training_image(*synthetic_nuclei((96, 96), n_nuclei=8, seed=3), model=model)
    again = run_to_end(iter_train([grey], init=model, config=small_config(epochs=1)))
    assert again.training["image_types"] == ["brightfield", "fluorescence"]


@pytest.mark.parametrize("field", ["start_model_margin", "start_model_image_margin"])
@pytest.mark.parametrize("margin", [-0.1, float("nan"), float("inf")])
def test_a_negative_or_nan_start_model_margin_is_refused_before_any_step(data, field, margin):
    train_set, _ = data
    events = []
    with pytest.raises(UNetError, match="margin"):
        run_to_end(
            iter_train(train_set, architecture=ARCH, config=small_config(**{field: margin})),
            events.append,
        )
    assert events == []


@pytest.mark.parametrize("decay", [-0.1, float("nan"), float("inf")])
def test_a_negative_or_non_finite_start_decay_is_refused_before_any_step(data, tiny_model, decay):
    train_set, _ = data
    events = []
    with pytest.raises(UNetError, match="start model"):
        run_to_end(
            iter_train(train_set, init=tiny_model, config=small_config(start_decay=decay)),
            events.append,
        )
    assert events == []


@pytest.mark.parametrize("scores, keeps", [((0.9, 0.1, 0.2), True), ((0.1, 0.9, 0.3), False)])
def test_only_a_kept_start_model_keeps_its_size_model(data, tiny_model, monkeypatch, scores, keeps):
    # A size model reads its own network's features: trained weights must not inherit it.
    import napari_unet.training.loop as training
    from napari_unet.models.size_model import SizeModel, feature_count

    train_set, _ = data
    n = feature_count(tiny_model.net)
    start = replace(tiny_model, size_model=SizeModel(np.zeros(n), np.ones(n), np.zeros(n), 6.0))
    scores = iter(scores)
    monkeypatch.setattr(
        training,
        "evaluate_model",
        lambda *a, **k: dict.fromkeys(("ap50", "ap70", "score"), next(scores)),
    )
    config = small_config(
        holdout_fraction=0.25,
        validate_start=True,
        start_model_margin=0.0,
        start_model_image_margin=0.0,
    )
    model = run_to_end(iter_train(train_set, init=start, config=config))
    assert model.training["kept_start_model"] is keeps
    assert (model.size_model is start.size_model) is keeps
    assert keeps or model.size_model is None


def _segment_scales(image, model, **kwargs) -> list[float]:
    from napari_unet.progress import Stage
    from napari_unet.segmenting.segmentation import iter_segment

    scales = []
    run_to_end(
        iter_segment(image, model, **kwargs),
        lambda e: scales.append(e.info["scale"]) if e.stage == Stage.SEGMENT else None,
    )
    return scales


@pytest.mark.parametrize("start", ["scratch", "model"])
def test_whole_cells_are_trained_and_segmented_at_one_working_scale(tmp_path, tiny_model, start):
    from napari_unet.images.synthetic import synthetic_cells
    from napari_unet.models.sizes import WORKING_CELL_DIAMETER, median_diameter

    pairs = [synthetic_cells((200, 200), diameter=70, seed=s) for s in range(2)]
    items = [
        make_training_image(image, labels, 1)
        if start == "scratch"
        else make_training_image(image, labels, model=tiny_model)
        for image, labels in pairs
    ]
    areas = [float(np.median(np.bincount(lab.ravel())[1:])) for _, lab in pairs]
    for item, area in zip(items, areas):
        assert item.cells
        assert item.scale == pytest.approx(WORKING_CELL_DIAMETER / median_diameter(area))
        assert item.image.shape[1:] == item.labels.shape and item.labels.shape[0] < 200
    model = run_to_end(
        iter_train(
            items,
            init=None if start == "scratch" else tiny_model,
            architecture=ARCH,
            config=small_config(
                epochs=1, holdout_fraction=0.0, validate_start=False, start_decay=1.0
            ),
        )
    )
    assert model.objects.kind == "cells"
    assert model.objects.scale == pytest.approx(np.median([i.scale for i in items]), abs=1e-3)
    # A nuclei model's thresholds and its pull do not carry over to cells.
    from napari_unet.training.recipes import (
        CELL_MIN_SIZE_SHARE,
        CELL_SEED_DEPTH_SHARE,
        CELL_THRESHOLDS,
    )

    params = model.postprocessing
    assert {k: getattr(params, k) for k in CELL_THRESHOLDS} == CELL_THRESHOLDS
    # Seeds from the interior's distance map, as deep as a share of the working diameter.
    working_diameter = model.objects.diameter * model.objects.scale
    assert params.seed_distance_h == pytest.approx(
        working_diameter * CELL_SEED_DEPTH_SHARE, abs=0.05
    )
    assert params.min_size == round(model.size_rule.object_area * CELL_MIN_SIZE_SHARE)
    assert model.training["start_decay"] == 0.0
    # From a nuclei model: a new network of its architecture, not its weights.
    assert model.training["new_network_for_cells"] is (start != "scratch")
    assert model.net.config == tiny_model.net.config or start == "scratch"
    # The working-scale area is what the network saw: a given diameter compares with it.
    working = model.objects.diameter * model.objects.scale
    assert median_diameter(model.size_rule.object_area) == pytest.approx(working, rel=1e-3)
    loaded = load_model(save_model(model, tmp_path / "cells.safetensors"))
    assert loaded.objects == model.objects
    # Segmenting resizes by the training scale, with no first pass to guess it...
    new_image, _ = synthetic_cells((160, 160), diameter=70, seed=9)
    assert _segment_scales(new_image, loaded) == [pytest.approx(loaded.objects.scale, abs=1e-3)]
    # ...and a given diameter brings cells of that size to the same working size.
    scales = _segment_scales(new_image, loaded, diameter=2 * model.objects.diameter)
    assert scales == [pytest.approx(loaded.objects.scale / 2, abs=1e-3)]


def test_cells_from_a_nuclei_model_start_from_a_new_network_unless_told(tiny_model, monkeypatch):
    """A new network is built (cells_from_new_network) or the start weights trained (False)."""
    from napari_unet.images.synthetic import synthetic_cells
    from napari_unet.training import loop as training

    built = []

    class Spy(training.UNet):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training, "UNet", Spy)
    image, labels = synthetic_cells((192, 192), diameter=70, seed=2)
    items = [make_training_image(image, labels, model=tiny_model)]
    config = small_config(epochs=1, holdout_fraction=0.0, validate_start=False)
    runs = {}
    for fresh in (True, False):
        built.clear()
        cfg = replace(config, cells_from_new_network=fresh, patches_per_epoch=2, batch_size=1)
        runs[fresh] = run_to_end(iter_train(items, init=tiny_model, config=cfg))
        assert len(built) == (1 if fresh else 0)
        assert runs[fresh].training["new_network_for_cells"] is fresh
        assert runs[fresh].net.config == tiny_model.net.config  # the same architecture
    assert runs[True].training["config"]["cells_from_new_network"] is True


def test_nuclei_keep_the_per_image_size_rule_and_record_their_size(data):
    model = run_to_end(
        iter_train(data[0], architecture=ARCH, config=small_config(epochs=1, holdout_fraction=0.0))
    )
    assert model.objects.kind == "nuclei" and model.objects.scale == 0
    assert 5 < model.objects.diameter < 40
    assert model.normalization.image_type == "auto"  # fluorescence has a polarity to detect


def test_the_start_model_pull_is_the_gradient_of_its_penalty():
    """The optimizer's pull equals adding decay/2 * ||w - w_start||^2 to the loss."""
    from napari_unet.training.loss import StartModelPull

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3))
    pull = StartModelPull([w], decay=0.7)
    with torch.no_grad():
        w.add_(torch.randn(5, 3))
    penalty = 0.5 * 0.7 * ((w - pull.start[0]) ** 2).sum()
    penalty.backward()
    torch.testing.assert_close(pull.gradient(0, w.detach()), w.grad)
    assert pull.penalty([w]) == pytest.approx(float(penalty))


def _dic_like(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A DIC-like frame of ``labels``: each cell's relief bright on one side, dark on the other."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    height = ndi.distance_transform_edt((labels > 0) & ~find_boundaries(labels))
    relief = ndi.sobel(ndi.gaussian_filter(height, 2), axis=1)
    noise = np.random.default_rng(seed).normal(0, 0.03, relief.shape)
    return (1000 + 300 * (relief / np.abs(relief).max() + noise)).astype(np.uint16)


def test_a_model_trained_on_dic_reads_every_image_as_its_frames_were(tiny_model):
    """DIC has no polarity: the model fixes the reading its frames got, whatever specks say."""
    from napari_unet.images.normalize import detect_image_type
    from napari_unet.images.synthetic import synthetic_cells
    from napari_unet.segmenting.notes import note_collector
    from napari_unet.segmenting.segmentation import iter_segment

    _, labels = synthetic_cells((192, 192), diameter=70, seed=2)
    dic = _dic_like(labels)
    item = make_training_image(dic, labels, model=tiny_model)
    assert item.unpolarised and item.image_type == "brightfield"
    config = small_config(epochs=1, holdout_fraction=0.0, validate_start=False)
    config = replace(config, patches_per_epoch=2, batch_size=1)
    model = run_to_end(iter_train([item], init=tiny_model, config=config))
    assert model.normalization.image_type == "brightfield"
    # A few bright specks: the bright-background rule alone would no longer invert it.
    specks = dic.copy()
    rng = np.random.default_rng(1)
    specks.flat[rng.choice(specks.size, specks.size // 200, replace=False)] = 5000
    assert detect_image_type(specks[None].astype(np.float32)) == "fluorescence"
    notes, events = [], []
    collect = note_collector(notes)
    run_to_end(iter_segment(specks, model), lambda e: (collect(e), events.append(e)))
    assert [e.info["image_type"] for e in events if e.stage == "segment"] == ["brightfield"]
    assert any("as this model's training images were" in n for n in notes), notes
    # The user's own choice still wins.
    events.clear()
    run_to_end(iter_segment(specks, model, image_type="fluorescence"), events.append)
    assert [e.info["image_type"] for e in events if e.stage == "segment"] == ["fluorescence"]
