"""Tests of adaptiveclick.data.build: the training sample stream in detectron2's delivery order, its
continuation after a resume (with and without DataLoader workers), and a resumed training run that reaches
the weights of an uninterrupted one on the real loader."""

import itertools
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.build import build_batch_data_loader
from detectron2.data.common import DatasetFromList, ToIterableDataset
from PIL import Image

from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.data.build import TrainSampleStream, build_click_train_loader, find_sample_stream

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingSampler(torch.utils.data.Sampler):
    """An infinite, deterministic index stream: 0, 1, 2, ... modulo ``n`` with a fixed shuffle."""

    def __init__(self, n):
        self.order = np.random.default_rng(0).permutation(n).tolist()

    def __iter__(self):
        i = 0
        while True:
            yield self.order[i % len(self.order)]
            i += 1


class RecordingMapper:
    """Returns (dataset index, worker, call index) for every call, like a mapper whose output depends only
    on its input and its per-call generator."""

    def call_rng(self, index, worker=None):
        if worker is None:
            info = torch.utils.data.get_worker_info()
            worker = 0 if info is None else info.id
        return (worker, index)

    def __call__(self, d, rng=None):
        if rng is None:  # detectron2's own path: count calls per worker
            self.calls = getattr(self, "calls", -1) + 1
            rng = self.call_rng(self.calls)
        return {"i": d["i"], "worker": rng[0], "call": rng[1], "width": 8, "height": 8}


def _delivered(dataset, batch, workers, n_batches, grouping):
    loader = build_batch_data_loader(dataset, None, batch, aspect_ratio_grouping=grouping, num_workers=workers)
    out = []
    for b, samples in enumerate(loader):
        out.extend((s["i"], s["worker"], s["call"]) for s in samples)
        if b + 1 == n_batches:
            return out


@pytest.mark.parametrize("grouping", [True, False])
@pytest.mark.parametrize("workers", [0, 2, 3])
def test_stream_delivers_detectron2s_order(workers, grouping):
    # the same samples, from the same worker and call index, as ToIterableDataset over detectron2's MapDataset
    from detectron2.data.common import MapDataset

    dicts = DatasetFromList([{"i": i} for i in range(11)], copy=False)
    ours = _delivered(TrainSampleStream(dicts, CountingSampler(11), RecordingMapper(), 4,
                                        batched_in_workers=not grouping), 4, workers, 6, grouping)
    d2 = _delivered(ToIterableDataset(MapDataset(dicts, RecordingMapper()), CountingSampler(11),
                                      shard_chunk_size=4), 4, workers, 6, grouping)
    assert ours == d2
    if workers:
        assert {w for _, w, _ in ours} == set(range(workers))


@pytest.mark.parametrize("grouping", [True, False])
@pytest.mark.parametrize("workers,skip_batches", [(0, 3), (2, 3), (3, 4), (3, 1)])
def test_skipped_stream_continues_the_uninterrupted_one(workers, skip_batches, grouping):
    dicts = DatasetFromList([{"i": i} for i in range(7)], copy=False)

    def stream():
        return TrainSampleStream(dicts, CountingSampler(7), RecordingMapper(), 2, batched_in_workers=not grouping)

    full = _delivered(stream(), 2, workers, 9, grouping)
    resumed = stream()
    resumed.skip(skip_batches * 2)
    assert _delivered(resumed, 2, workers, 9 - skip_batches, grouping) == full[skip_batches * 2:]
    if workers > 1:  # the old way, the sampler stream skipped as a whole, is not the continuation
        cut = TrainSampleStream(dicts, itertools.islice(CountingSampler(7), skip_batches * 2, None),
                                RecordingMapper(), 2, batched_in_workers=not grouping)
        assert _delivered(cut, 2, workers, 9 - skip_batches, grouping) != full[skip_batches * 2:]


def test_delivered_by_worker_hand_computed():
    # 7 samples, 3 workers, round-robin: workers 0, 1, 2, 0, 1, 2, 0
    assert [TrainSampleStream.delivered_by_worker(7, w, 3) for w in range(3)] == [3, 2, 2]
    assert [TrainSampleStream.delivered_by_worker(1, w, 3) for w in range(3)] == [1, 0, 0]
    assert [TrainSampleStream.delivered_by_worker(0, w, 2) for w in range(2)] == [0, 0]
    assert TrainSampleStream.delivered_by_worker(5, 0, 1) == 5


def test_stream_argument_checks():
    dicts = DatasetFromList([{"i": 0}], copy=False)
    with pytest.raises(TypeError, match="call_rng"):
        TrainSampleStream(dicts, CountingSampler(1), lambda d, rng=None: d, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        TrainSampleStream(dicts, CountingSampler(1), RecordingMapper(), 0)
    with pytest.raises(ValueError, match="num_samples"):
        TrainSampleStream(dicts, CountingSampler(1), RecordingMapper(), 2).skip(-1)
    stream = TrainSampleStream(dicts, CountingSampler(1), RecordingMapper(), 2, batched_in_workers=True)
    stream.skip(3)
    with pytest.raises(ValueError, match="inside a batch"):
        next(iter(stream))


# ----------------------------------------------------------------------------------------------------------
# the real loader and a resumed run


def _register(tmp_path, name, n=5, size=48):
    from adaptiveclick.data.datasets.common import make_annotation

    rng = np.random.default_rng(1)
    dicts = []
    for i in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        mask = np.zeros((size, size), dtype=bool)
        r, c = rng.integers(2, size // 2, 2)
        mask[r:r + 14, c:c + 18] = True
        dicts.append({"file_name": str(tmp_path / f"{i}.png"), "height": size, "width": size, "image_id": str(i),
                      "annotations": [make_annotation(mask)]})
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])


def _cfg(out, name, *opts):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/tiny.yaml"))
    cfg.merge_from_list(["OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", (name,), "SEED", 7,
                         "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "INPUT.AUG.CROP_SIZE", [64, 64],
                         "TRAINER.EVAL_AFTER_TRAIN", False, "TRAINER.TRAIN_IOU_PERIOD", 0, "SOLVER.MAX_ITER", 6,
                         "SOLVER.STEPS", (4,), "SOLVER.CHECKPOINT_PERIOD", 3] + list(opts))
    return cfg


def test_loader_rejects_other_samplers_and_carries_its_stream(tmp_path):
    name = "test_train_loader_checks"
    _register(tmp_path, name)
    try:
        from adaptiveclick.data.mapper import ClickTrainingMapper

        cfg = _cfg(tmp_path, name)
        loader = build_click_train_loader(cfg, ClickTrainingMapper(cfg, is_train=True))
        assert find_sample_stream(loader).chunk_size == 2
        assert len(next(iter(loader))) == 2
        cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
        with pytest.raises(ValueError, match="SAMPLER_TRAIN"):
            build_click_train_loader(cfg, ClickTrainingMapper(cfg, is_train=True))
    finally:
        DatasetCatalog.remove(name)


def _train(cfg, resume):
    import adaptiveclick.modeling  # noqa: F401
    from adaptiveclick.engine import ClickTrainer

    from detectron2.utils.env import seed_all_rng

    seed_all_rng(cfg.SEED)  # as detectron2's default_setup does in tools/train_net.py
    trainer = ClickTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_on_the_real_loader_reaches_the_uninterrupted_weights(tmp_path, workers):
    # the interrupted run's checkpoint after iteration 2 (of 0..5); before the loader continued its stream, the
    # resumed run trained iterations 3-5 on the batches of iterations 0-2 again (weights ~3e-4 apart).  With 2
    # workers and batches of 3, the 9 samples of the finished iterations leave the rotation of the workers at
    # worker 1: the resumed loader's worker 0 continues the stream of the interrupted run's worker 1.
    name = f"test_train_loader_resume_{workers}"
    _register(tmp_path, name)
    opts = ["MODEL.ADAPTIVECLICK.DROPOUT", 0.1, "DATALOADER.NUM_WORKERS", workers, "SOLVER.IMS_PER_BATCH", 3]
    try:
        full = _train(_cfg(tmp_path / "full", name, *opts), resume=False)
        resumed_dir = tmp_path / "resumed"
        resumed_dir.mkdir()
        os.link(tmp_path / "full" / "model_0000002.pth", resumed_dir / "model_0000002.pth")
        (resumed_dir / "last_checkpoint").write_text("model_0000002.pth")
        resumed = _train(_cfg(resumed_dir, name, *opts), resume=True)
        assert resumed.start_iter == 3 and find_sample_stream(resumed._trainer.data_loader).start == 9
        for (key, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
            assert torch.equal(a, b), key
    finally:
        DatasetCatalog.remove(name)
