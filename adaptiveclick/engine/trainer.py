"""Iterative-click training (model.md §6.4, protocol.md B.4): :class:`ClickTrainer` and its inner loop.

Per iteration (:meth:`IterativeClickTrainer.run_step`):

1. take a batch of mapped samples (``ClickTrainingMapper``: image, ``gt_mask``, ``ignore_mask``, ``clicks``);
2. draw n uniformly from {0, ..., N} (N = ``INPUT.CLICKS.MAX_NUM_NEXT_CLICKS``, 3), once for the batch;
3. n times, without gradients and with the model in eval mode (the official loop calls ``eval()``): predict,
   turn the logits into probabilities (the next ``prev_mask``), and add one click per sample from the error
   of that prediction with :func:`adaptiveclick.clicks.next_training_click`, written into slot K - i
   (positive) or 2K - i (negative) of the sample's click array (:func:`add_training_clicks`);
4. the training forward with the final clicks and ``prev_mask`` returns the loss dict; non-finite terms
   raise :class:`FloatingPointError` naming the iteration and the terms (on every process together, before
   any parameter changes); backward (through a gradient scaler for fp16 AMP); without the fp16 scaler (which
   skips such steps itself) non-finite gradients raise the same way, naming the parameters, before the
   optimizer step; optional clipping, step.

The random draws of step 2-3 come from a NumPy generator seeded by (seed, rank, iteration), and torch's
generators (dropout, drop-path, sampled points) are reseeded from (seed, rank, iteration) at the start of every
step, so a resumed run makes the same draws as an uninterrupted one; the training loader continues its
sample stream where the interrupted run stopped (:mod:`adaptiveclick.data.build`).  The event storage
receives every loss, ``total_loss``, ``click_rounds`` (n), ``num_clicks`` (mean clicks per sample in the
final input) and, every ``TRAINER.TRAIN_IOU_PERIOD`` iterations, ``train_iou``: the mean IoU (probability
> 0.49, ignored pixels excluded) of the final prediction, from an extra no-grad forward with the same inputs
and weights.
"""

import logging
import math
import os
import time
import weakref
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from adaptiveclick.clicks import PREV_THRESHOLD, next_training_click, write_iterative_click
from adaptiveclick.data.build import build_click_train_loader, find_sample_stream
from adaptiveclick.utils.host import host_arrays

from .checkpoint import AtomicCheckpointer
from .solver import CLIP_TYPES, build_optimizer, clip_gradients

__all__ = ["AMP_DTYPES", "unwrap_model", "pin_train_batches", "add_training_clicks", "training_iou",
           "IterativeClickTrainer", "NoCEvalHook", "ClickTrainer"]

logger = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def pin_train_batches(cfg) -> bool:
    """Whether the training loader pins its batches: DATALOADER.PIN_MEMORY, the model on CUDA and CUDA usable
    (pinning needs a CUDA context; the PyTorch loader warns and ignores it without an accelerator)."""
    return bool(cfg.DATALOADER.PIN_MEMORY) and torch.device(cfg.MODEL.DEVICE).type == "cuda" \
        and torch.cuda.is_available()


def loss_scalars(loss_dict: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """The scalar losses as Python floats, copied to the host together (one wait on a GPU, where a ``float()``
    per term waited once per term: ~30 terms with the decoder's auxiliary losses)."""
    names = list(loss_dict)
    for k in names:
        v = loss_dict[k]
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise TypeError(f"loss {k!r} must be a one-element tensor, got "
                            f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    arrays = host_arrays([loss_dict[k].detach().float().reshape(()) for k in names])
    return {k: float(a) for k, a in zip(names, arrays)}


def all_finite(tensors) -> bool:
    """Whether every element of ``tensors`` is finite (one host synchronisation per device).

    Uses the fused check of PyTorch's gradient scaler (``torch._amp_foreach_non_finite_check_and_unscale_``,
    here with scale 1, which leaves the values as they are): on the CPU 0.24 ms for the 191 gradients of the
    tiny model against 4.4 ms for ``get_total_norm(inf)``; the latter where the private op is missing."""
    groups = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t.detach())
    check = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
    for (device, dtype), group in groups.items():
        if check is not None and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            found = torch.zeros(1, device=device)
            check(group, found, torch.ones(1, device=device))
            if bool(found.item()):
                return False
        elif not all(bool(torch.isfinite(t).all()) for t in group):
            return False
    return True


def _numpy_ignore(sample: dict) -> Optional[np.ndarray]:
    ignore = sample.get("ignore_mask")
    if ignore is None:
        return None
    ignore = ignore.detach().cpu().numpy().astype(bool)
    return ignore if ignore.any() else None


def add_training_clicks(batched_inputs: Sequence[dict], probs: Sequence[torch.Tensor], iteration: int,
                        rng: np.random.Generator) -> List[dict]:
    """One no-grad round of iterative training (protocol.md B.4) for a batch.

    Args:
        batched_inputs: mapped samples with ``gt_mask`` (H, W), ``clicks`` (2K, 3) int64 in the training slot
            layout and optional ``ignore_mask`` (H, W) bool (its pixels never become error).
        probs: per sample, the (1, H, W) probabilities of the current prediction.
        iteration: the round i (1-based); the click goes to slot K - i (positive) or 2K - i (negative).
        rng: the generator of :func:`~adaptiveclick.clicks.next_training_click`.

    Returns new sample dicts (the inputs are not modified) whose ``clicks`` hold the added click (unchanged
    when the prediction has no error) and whose ``prev_mask`` is the float32 (1, H, W) ``probs``.
    """
    if len(probs) != len(batched_inputs):
        raise ValueError(f"got {len(probs)} probability maps for {len(batched_inputs)} samples")
    for j, (sample, prob) in enumerate(zip(batched_inputs, probs)):
        gt = sample["gt_mask"]
        if not isinstance(prob, torch.Tensor) or tuple(prob.shape) != (1,) + tuple(gt.shape):
            raise ValueError(f"probs[{j}] must be a (1, H, W) = {(1,) + tuple(gt.shape)} tensor, got "
                             f"{tuple(prob.shape) if isinstance(prob, torch.Tensor) else type(prob).__name__}")
    probs = [p.detach().float() for p in probs]
    host = host_arrays(probs)
    out = []
    for sample, prob, prob_host in zip(batched_inputs, probs, host):
        gt = sample["gt_mask"]
        click = next_training_click(gt.detach().cpu().numpy().astype(bool), prob_host[0], rng,
                                    ignore=_numpy_ignore(sample))
        clicks = sample["clicks"].detach().cpu().numpy().astype(np.int64, copy=True)
        if click is not None:
            write_iterative_click(clicks, click, iteration)
        new = dict(sample)
        new["clicks"] = torch.from_numpy(clicks)
        new["prev_mask"] = prob
        out.append(new)
    return out


def training_iou(batched_inputs: Sequence[dict], probs: Sequence[torch.Tensor],
                 threshold: float = PREV_THRESHOLD) -> Optional[float]:
    """Mean IoU of (probs > threshold) against ``gt_mask`` over the non-ignored pixels; samples whose
    prediction and target are both empty are skipped (None if every sample is)."""
    counts = []  # (intersection, union) per sample, brought to the host together
    for sample, prob in zip(batched_inputs, probs):
        pred = prob.detach()[0] > threshold
        gt = sample["gt_mask"].to(pred.device) > 0
        valid = torch.ones_like(gt) if sample.get("ignore_mask") is None else ~sample["ignore_mask"].to(pred.device)
        counts.append(torch.stack([(pred & gt & valid).sum(), ((pred | gt) & valid).sum()]))
    ious = [int(inter) / int(union) for inter, union in host_arrays(counts) if union]
    return float(np.mean(ious)) if ious else None


def random_init_warning(cfg, resumed: bool) -> Optional[str]:
    """The warning for a training run whose ViT starts from random weights (None when it does not): the paper's
    recipe starts from MAE ImageNet-1k weights (model.md §6.3), and the shipped SBD / COCO+LVIS configs leave
    ``MODEL.VIT.PRETRAINED`` empty because the file is local to each user."""
    if resumed or cfg.MODEL.WEIGHTS or cfg.MODEL.VIT.PRETRAINED:
        return None
    return ("MODEL.VIT.PRETRAINED and MODEL.WEIGHTS are both empty: the ViT trains from random initialisation. "
            "The paper's recipe starts from MAE ImageNet-1k weights: pass MODEL.VIT.PRETRAINED "
            "path/to/mae_pretrain_vit_{base,large,huge}.pth (README, 'Pretrained weights'); fine for the synthetic "
            "quick start.")


def _num_clicks(sample: dict) -> int:
    # the click rows are host data (the loader's, or add_training_clicks'): counted in NumPy, no torch operator
    clicks = sample["clicks"].detach().cpu().numpy()
    return int(((clicks[:, 0] >= 0) & (clicks[:, 1] >= 0)).sum())


class IterativeClickTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose step adds the no-grad click rounds, AMP, clipping and the non-finite check.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer`` (the model may be DDP-wrapped).
        max_click_rounds: N, the number of rounds is uniform in {0, ..., N} (official 3).
        seed: base seed of the per-iteration generators.
        amp_dtype: None (fp32), ``torch.float16`` (with a gradient scaler) or ``torch.bfloat16``.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16 (default: a new one for the model's device).
        clip_type: None (no clipping) or one of ``CLIP_TYPES``; clip_value, clip_norm_type: its parameters.
        train_iou_period: log ``train_iou`` every this many iterations (0 = never).
    """

    def __init__(self, model, data_loader, optimizer, *, max_click_rounds: int = 3, seed: int = 0,
                 amp_dtype: Optional[torch.dtype] = None, grad_scaler=None, clip_type: Optional[str] = None,
                 clip_value: float = 1.0, clip_norm_type: float = 2.0, train_iou_period: int = 20):
        super().__init__(model, data_loader, optimizer)
        if isinstance(max_click_rounds, bool) or not isinstance(max_click_rounds, int) or max_click_rounds < 0:
            raise ValueError(f"max_click_rounds must be an integer >= 0, got {max_click_rounds!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if amp_dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"amp_dtype must be None, torch.float16 or torch.bfloat16, got {amp_dtype!r}")
        if clip_type is not None and clip_type not in CLIP_TYPES:
            raise ValueError(f"clip_type must be None or one of {CLIP_TYPES}, got {clip_type!r}")
        if clip_type is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be > 0, got {clip_value!r}")
        if isinstance(train_iou_period, bool) or not isinstance(train_iou_period, int) or train_iou_period < 0:
            raise ValueError(f"train_iou_period must be an integer >= 0, got {train_iou_period!r}")
        self.max_click_rounds = max_click_rounds
        self.seed = seed
        self.amp_dtype = amp_dtype
        self.device_type = next(unwrap_model(model).parameters()).device.type
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type, enabled=amp_dtype == torch.float16)
        self.grad_scaler = grad_scaler
        self.clip_type = clip_type
        self.clip_value = clip_value
        self.clip_norm_type = clip_norm_type
        self.train_iou_period = train_iou_period

    # -- pieces of a step ---------------------------------------------------------------------------------

    def iteration_rng(self) -> np.random.Generator:
        """The generator of this iteration's draws: seeded by (seed, rank, iteration)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, comm.get_rank(), int(self.iter)]))

    def iteration_torch_seed(self) -> int:
        """The seed of torch's generators for this iteration (dropout, drop-path, the matcher's sampled
        points): from (seed, rank, iteration), apart from :meth:`iteration_rng`'s stream, so that a resumed run
        draws what an uninterrupted one draws."""
        sequence = np.random.SeedSequence([self.seed, comm.get_rank(), int(self.iter), 1])
        return int(sequence.generate_state(1, dtype=np.uint64)[0])

    def nonfinite_gradients(self) -> Optional[str]:
        """None when every parameter gradient is finite, else a message naming (some of) the parameters whose
        gradients are not (one host synchronisation; the names are looked up only on failure)."""
        named = [(n, p.grad) for n, p in unwrap_model(self.model).named_parameters() if p.grad is not None]
        if all_finite(g for _, g in named):
            return None
        bad = [n for n, g in named if not bool(torch.isfinite(g).all())]
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return f"non-finite gradients at iteration {self.iter} (the loss was finite) in {shown}"

    def _autocast(self):
        return torch.autocast(self.device_type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def predict_probs(self, batched_inputs: Sequence[dict]) -> List[torch.Tensor]:
        """Probabilities (1, H, W) per sample from a no-grad forward in eval mode (the train/eval mode of the
        model is restored).  Raises FloatingPointError on non-finite logits."""
        module = unwrap_model(self.model)
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                outputs = module(list(batched_inputs))
        finally:
            self.model.train()
        logits = [o["mask_logits"].float() for o in outputs]
        # one flag for the batch (on a GPU every read of a value is a wait of the host)
        if not all_finite(logits):
            raise FloatingPointError("the model predicted non-finite mask logits")
        return [t.sigmoid() for t in logits]

    def click_rounds(self, batched_inputs: Sequence[dict], rounds: int, rng: np.random.Generator) -> List[dict]:
        """``rounds`` times: predict, then :func:`add_training_clicks` (the new prediction becomes prev_mask)."""
        batch = list(batched_inputs)
        for i in range(1, rounds + 1):
            try:
                probs = self.predict_probs(batch)
            except FloatingPointError as e:
                raise FloatingPointError(f"click round {i}: {e}") from e
            batch = add_training_clicks(batch, probs, i, rng)
        return batch

    def _sync_failure(self, message: Optional[str]) -> None:
        """Raise FloatingPointError on every process if any process reports a failure message (a collective
        call in distributed runs, so that no process is left waiting in the next all-reduce)."""
        if comm.get_world_size() > 1:
            messages = [f"{m} (process {rank})" for rank, m in enumerate(comm.all_gather(message)) if m]
        else:
            messages = [message] if message else []
        if messages:
            raise FloatingPointError("; ".join(messages))

    # -- the step -------------------------------------------------------------------------------------------

    def run_step(self):
        assert self.model.training, "[IterativeClickTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        rng = self.iteration_rng()
        torch.manual_seed(self.iteration_torch_seed())
        rounds = int(rng.integers(0, self.max_click_rounds + 1))
        failure = None
        loss_dict = None
        try:
            data = self.click_rounds(data, rounds, rng)
        except FloatingPointError as e:
            failure = f"non-finite prediction at iteration {self.iter}, {e}"
        if failure is None:
            with self._autocast():
                loss_dict = self.model(data)
            if not isinstance(loss_dict, dict) or not loss_dict:
                raise TypeError(f"the training forward must return a non-empty dict of losses, got "
                                f"{type(loss_dict).__name__}")
            loss_values = loss_scalars(loss_dict)
            bad = {k: v for k, v in sorted(loss_values.items()) if not math.isfinite(v)}
            if bad:
                failure = (f"non-finite loss at iteration {self.iter}: "
                           + ", ".join(f"{k} = {v}" for k, v in bad.items()))
        self._sync_failure(failure)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        if not self.grad_scaler.is_enabled():
            # fp16's scaler skips steps with non-finite gradients itself; otherwise they would reach the weights
            self._sync_failure(self.nonfinite_gradients())
        if self.clip_type is not None:
            self.grad_scaler.unscale_(self.optimizer)
            clip_gradients(unwrap_model(self.model).parameters(), self.clip_type, self.clip_value,
                           self.clip_norm_type)

        extra = {"click_rounds": float(rounds), "num_clicks": float(np.mean([_num_clicks(x) for x in data]))}
        if self.train_iou_period and (self.iter + 1) % self.train_iou_period == 0:
            iou = training_iou(data, self.predict_probs(data))
            if iou is not None:
                extra["train_iou"] = iou
        self._write_step_metrics(loss_values, data_time, extra)

        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def _write_step_metrics(self, loss_values: Dict[str, float], data_time: float,
                            extra: Dict[str, float]) -> None:
        """Gather the losses (host floats, :func:`loss_scalars`) and extra scalars of all processes; the main
        process averages and stores them."""
        record = {"losses": dict(loss_values), "data_time": data_time, "extra": extra}
        records = comm.gather(record)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(r["data_time"] for r in records))
        losses = {k: float(np.mean([r["losses"][k] for r in records])) for k in records[0]["losses"]}
        storage.put_scalar("total_loss", sum(losses.values()))
        storage.put_scalars(**losses)
        keys = sorted({k for r in records for k in r["extra"]})
        storage.put_scalars(**{k: float(np.mean([r["extra"][k] for r in records if k in r["extra"]]))
                               for k in keys})

    def state_dict(self):
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if state_dict.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class NoCEvalHook(hooks.EvalHook):
    """detectron2's ``EvalHook`` that evaluates after training only when training finished successfully
    (not after an exception in the last iteration)."""

    def after_train(self):
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        del self._func


class ClickTrainer(DefaultTrainer):
    """``DefaultTrainer`` for interactive segmentation.

    Differences to detectron2's: the inner loop is :class:`IterativeClickTrainer` (click rounds, AMP on any
    device, clipping, non-finite check); the train loader maps with ``ClickTrainingMapper``; the optimizer
    comes from :func:`adaptiveclick.engine.solver.build_optimizer`; checkpoints are atomic
    (:class:`AtomicCheckpointer`) and resuming restores model, optimizer, scheduler, gradient scaler and
    iteration and continues the training sample stream (no replay of the first batches); evaluation is the
    NoC protocol (``noc_test``) every ``TEST.EVAL_PERIOD`` iterations and after training, writing
    ``OUTPUT_DIR/noc/...`` and the example picture ``OUTPUT_DIR/example.png``.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.wrap_ddp(cfg, model)
        self._trainer = IterativeClickTrainer(model, data_loader, optimizer, **self.inner_trainer_kwargs(cfg))
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True, *, strict: bool = True):
        """detectron2's, then a warning when the ViT starts from random weights (:func:`random_init_warning`).

        Loading is strict (:class:`AtomicCheckpointer`): a checkpoint whose tensors do not fit the model raises
        :class:`~.checkpoint.CheckpointError`.  ``strict=False`` loads only the tensors of ``MODEL.WEIGHTS``
        that fit (fine-tuning from another model); resuming from ``OUTPUT_DIR`` is strict either way, since the
        optimizer state must match the model."""
        resuming = resume and self.checkpointer.has_checkpoint()
        previous = self.checkpointer.strict
        self.checkpointer.strict = strict or resuming
        try:
            super().resume_or_load(resume=resume)
        finally:
            self.checkpointer.strict = previous
        if self.start_iter > 0:
            self._continue_sample_stream()
        message = random_init_warning(self.cfg, resumed=self.start_iter > 0)
        if message and comm.is_main_process():
            logger.warning(message)

    def _continue_sample_stream(self) -> None:
        """Make the training loader skip the samples of the iterations before ``start_iter``."""
        stream = find_sample_stream(self._trainer.data_loader)
        if stream is None:
            logger.warning(f"Resuming at iteration {self.start_iter}: the training loader (a custom "
                           f"build_train_loader?) starts its sample stream from the beginning")
            return
        skipped = self.start_iter * stream.chunk_size
        stream.skip(skipped)
        logger.info(f"Resuming at iteration {self.start_iter}: the training loader skips the {skipped} samples "
                    f"of this process's earlier iterations")

    @staticmethod
    def wrap_ddp(cfg, model: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel`` around ``model`` when running with several processes (CPU models get
        no device ids, so gloo works)."""
        if comm.get_world_size() == 1:
            return model
        on_cuda = next(model.parameters()).is_cuda
        return DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if on_cuda else None,
                                       broadcast_buffers=False,
                                       find_unused_parameters=cfg.TRAINER.FIND_UNUSED_PARAMETERS)

    @staticmethod
    def inner_trainer_kwargs(cfg) -> dict:
        """Keyword arguments of :class:`IterativeClickTrainer` from the config."""
        amp = cfg.SOLVER.AMP
        if amp.PRECISION not in AMP_DTYPES:
            raise ValueError(f"SOLVER.AMP.PRECISION must be one of {sorted(AMP_DTYPES)}, got {amp.PRECISION!r}")
        clip = cfg.SOLVER.CLIP_GRADIENTS
        rounds = cfg.INPUT.CLICKS.MAX_NUM_NEXT_CLICKS
        if rounds > cfg.INPUT.CLICKS.MAX_NUM_POINTS:
            raise ValueError(f"INPUT.CLICKS.MAX_NUM_NEXT_CLICKS ({rounds}) must not exceed "
                             f"INPUT.CLICKS.MAX_NUM_POINTS ({cfg.INPUT.CLICKS.MAX_NUM_POINTS}): round i writes slot K - i")
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return {"max_click_rounds": rounds, "seed": int(seed),
                "amp_dtype": AMP_DTYPES[amp.PRECISION] if amp.ENABLED else None,
                "clip_type": clip.CLIP_TYPE if clip.ENABLED else None, "clip_value": clip.CLIP_VALUE,
                "clip_norm_type": clip.NORM_TYPE, "train_iou_period": cfg.TRAINER.TRAIN_IOU_PERIOD}

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader of :func:`adaptiveclick.data.build.build_click_train_loader` (detectron2's batched
        loader over a stream that a resumed run continues) with our :class:`ClickTrainingMapper`, pinning its
        batches when the model trains on CUDA and DATALOADER.PIN_MEMORY is set (:func:`pin_train_batches`).

        With DATALOADER.SAMPLE_WEIGHTS.FILE set, images are drawn i.i.d. with the file's probabilities
        (:class:`adaptiveclick.data.samplers.WeightedTrainingSampler`, the official SBD recipe), with
        DATALOADER.SAMPLE_WITH_REPLACEMENT i.i.d. uniformly (the official COCO+LVIS recipe), else in
        detectron2's shuffled epochs (:func:`adaptiveclick.data.build.build_train_sampler`)."""
        from adaptiveclick.data.mapper import ClickTrainingMapper

        return build_click_train_loader(cfg, ClickTrainingMapper(cfg, is_train=True),
                                        pin_memory=pin_train_batches(cfg))

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                                  max_to_keep=cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP or None))
        if cfg.TEST.EVAL_PERIOD > 0 or cfg.TRAINER.EVAL_AFTER_TRAIN:
            # after the checkpointer: if evaluation fails, the checkpoint exists
            ret.append(NoCEvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate, cfg.TRAINER.EVAL_AFTER_TRAIN))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return ret

    def _evaluate(self):
        final = self.iter >= self.max_iter
        out = os.path.join(self.cfg.OUTPUT_DIR, "noc")
        if not final:
            out = os.path.join(out, f"iter_{self.iter + 1:07d}")
        example = os.path.join(self.cfg.OUTPUT_DIR, "example.png") if final else None
        self._last_eval_results = self.test(self.cfg, self.model, output_dir=out, example_path=example)
        return self._last_eval_results

    @classmethod
    def test(cls, cfg, model, output_dir: Optional[str] = None, example_path: Optional[str] = None):
        """NoC evaluation (``noc_test``) of ``model`` on ``TEST.NOC.DATASETS`` or ``DATASETS.TEST``; returns
        ``{dataset: {"noc": metrics}}`` (metrics on the main process only).  With ``example_path`` and a
        non-empty ``TRAINER.EXAMPLE_CLICKS`` the main process also writes the example picture there."""
        from adaptiveclick.evaluation import noc_test

        from .example import write_example_figure

        model = unwrap_model(model)
        results = noc_test(cfg, model, output_dir=output_dir)
        if example_path and len(cfg.TRAINER.EXAMPLE_CLICKS) and comm.is_main_process():
            write_example_figure(cfg, model, example_path)
        comm.synchronize()
        return results

    def train(self):
        """Run training; returns the results of the last evaluation (None if there was none)."""
        super().train()
        return getattr(self, "_last_eval_results", None)
