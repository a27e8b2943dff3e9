"""Config keys of adaptiveclick, added to a detectron2 config by :func:`add_adaptiveclick_config`.

Every key carries its default and a comment.  Paper/official defaults are the defaults; the synthetic
configs under ``configs/synthetic/`` override values for speed only.  Sections are grouped by the part of
the library that reads them, one helper function per section.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_adaptiveclick_config"]


def _add_msda_config(cfg):
    # Multi-scale deformable attention operator (adaptiveclick.layers.ms_deform_attn).
    cfg.MODEL.MSDA = CN()
    # "" = automatic (CUDA kernel for CUDA tensors if built, else the C++ CPU kernel if built, else the
    # pure-PyTorch reference); or one of "cuda", "cpu", "pytorch" to force an implementation.  The
    # environment variable ADAPTIVECLICK_MSDA_IMPL takes precedence over this key.
    cfg.MODEL.MSDA.IMPL = ""


def _add_model_config(cfg):
    # The AdaptiveClick model (adaptiveclick.modeling; /work/shared/spec/model.md §0-§5, §7).  Defaults are
    # the official ViT-B/448 model (configs/adaptiveclick_plainvit_base448.yaml of lab206/AdaptiveClick);
    # every "official quirk" has a switch documented at its key.
    cfg.MODEL.META_ARCHITECTURE = "AdaptiveClick"
    # Normalisation inside the model: RGB (cfg.INPUT.FORMAT = "RGB"), ImageNet mean/std on the 0..255 scale
    # (official: x / 255, then mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.BACKBONE.NAME = "ClickViTBackbone"

    # Click-fused plain ViT + GN1 simple feature pyramid (adaptiveclick.modeling.backbone).
    cfg.MODEL.VIT = CN()
    # Patch size (ViT-B/L 16; ViT-H 14 as the official huge config).
    cfg.MODEL.VIT.PATCH_SIZE = 16
    # Width / depth / heads: B 768/12/12, L 1024/24/16, H 1280/32/16.
    cfg.MODEL.VIT.EMBED_DIM = 768
    cfg.MODEL.VIT.DEPTH = 12
    cfg.MODEL.VIT.NUM_HEADS = 12
    cfg.MODEL.VIT.MLP_RATIO = 4.0
    cfg.MODEL.VIT.QKV_BIAS = True
    # Stochastic depth rate (linearly increasing over blocks); the official blocks have none (0).
    cfg.MODEL.VIT.DROP_PATH_RATE = 0.0
    # Training input size: the stored position embedding has (IMG_SIZE / PATCH_SIZE)^2 slots (+ the unused
    # class slot) and is bicubically resized on the fly for other inputs (e.g. 672 for DAVIS).
    cfg.MODEL.VIT.IMG_SIZE = 448
    # Window side in tokens of the window-attention blocks: 224 input pixels (14 for patch 16, 16 for patch 14).
    cfg.MODEL.VIT.WINDOW_SIZE = 14
    # 0-based blocks with global attention (the last of each run): B [5, 11]; L [5, 11, 17, 23];
    # H [7, 15, 23, 31].  All other blocks use window attention.
    cfg.MODEL.VIT.GLOBAL_BLOCK_INDEXES = [5, 11]
    # SimpleFPN output channels of res2..res5: B/L [256, 512, 1024, 2048]; H [512, 1024, 2048, 4096].
    cfg.MODEL.VIT.FPN_OUT_DIMS = [256, 512, 1024, 2048]
    # Path of an MAE checkpoint (mae_pretrain_vit_{base,large,huge}.pth) loaded into the ViT when the model is
    # built (official behaviour), with pos-embed interpolation and a missing/unused-key report; "" = none.
    cfg.MODEL.VIT.PRETRAINED = ""
    # Random initialisation of the ViT before any MAE weights: "official" (the official ViT's: xavier-uniform
    # linear layers and patch embedding, N(0, 0.02) position embedding) or "detectron2" (its ViT's truncated
    # N(0, 0.02) linear layers).  Matters only when training without MODEL.VIT.PRETRAINED.
    cfg.MODEL.VIT.INIT = "official"

    cfg.MODEL.ADAPTIVECLICK = CN()
    # Disk radius of the click maps in network-input pixels (official norm_radius 5, use_disks=True).
    cfg.MODEL.ADAPTIVECLICK.CLICK_RADIUS = 5.0
    # Inference only: a click outside the image raises ("error") or is drawn partially ("draw", the official
    # DistMaps behaviour, needed when a zoom-in crop maps earlier clicks outside the crop).  Training raises.
    cfg.MODEL.ADAPTIVECLICK.OUTSIDE_CLICKS = "draw"
    # Registered names of the pixel decoder and the mask decoder.
    cfg.MODEL.ADAPTIVECLICK.PIXEL_DECODER_NAME = "PMMDPixelDecoder"
    cfg.MODEL.ADAPTIVECLICK.TRANSFORMER_DECODER_NAME = "CAMDDecoder"
    # PMMD (pixel decoder): channels of its maps and of the mask features, norm of its convs.
    cfg.MODEL.ADAPTIVECLICK.CONVS_DIM = 256
    cfg.MODEL.ADAPTIVECLICK.MASK_DIM = 256
    cfg.MODEL.ADAPTIVECLICK.NORM = "GN"
    # Backbone levels fed to the deformable encoder, and the stride of the mask features.
    cfg.MODEL.ADAPTIVECLICK.DEFORMABLE_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ADAPTIVECLICK.COMMON_STRIDE = 4
    # Deformable encoder: layers (official 4; Mask2Former 6), FFN width (official DIM_FEEDFORWARD // 2),
    # heads and sampling points per head and level.
    cfg.MODEL.ADAPTIVECLICK.ENC_LAYERS = 4
    cfg.MODEL.ADAPTIVECLICK.ENC_DIM_FEEDFORWARD = 1024
    cfg.MODEL.ADAPTIVECLICK.ENC_NHEADS = 8
    cfg.MODEL.ADAPTIVECLICK.ENC_N_POINTS = 4
    # CAMD (mask decoder): width, heads, FFN width, queries; DEC_LAYERS counts predictions (the one from the
    # learnable queries + one per transformer layer), so 10 = 9 layers.  Dropout of encoder and decoder.
    cfg.MODEL.ADAPTIVECLICK.HIDDEN_DIM = 256
    cfg.MODEL.ADAPTIVECLICK.NHEADS = 8
    cfg.MODEL.ADAPTIVECLICK.DIM_FEEDFORWARD = 2048
    cfg.MODEL.ADAPTIVECLICK.NUM_QUERIES = 10
    cfg.MODEL.ADAPTIVECLICK.DEC_LAYERS = 10
    cfg.MODEL.ADAPTIVECLICK.DROPOUT = 0.0
    # Clicks-aware attention module: "official" (pooled positive-click map opens attention for queries
    # classified as the object) or "off" (plain Mask2Former masked attention, for ablations).
    cfg.MODEL.ADAPTIVECLICK.CAAM = CN()
    cfg.MODEL.ADAPTIVECLICK.CAAM.MODE = "official"
    # How the positive-click map is brought to a level: "official" (floor(log2(W_in / w)) 3x3/2 max-pools, then
    # a bilinear shrink; with patch 14 a click can vanish, quirk 11) or "adaptive_max" (adaptive max-pool
    # straight to the level size; a click always survives).
    cfg.MODEL.ADAPTIVECLICK.CAAM.POOLING = "official"
    # Output mask: "weighted_logits" (official: sum_q sigmoid(class_q[1]) * mask logits_q) or "best_query"
    # (paper: the query with the best click confidence x mean foreground mask probability).
    cfg.MODEL.ADAPTIVECLICK.MERGE = "weighted_logits"
    # Training targets: "official" (duplicated background targets from unique() of the resized GT, quirk 1)
    # or "clean" (one target per image: the resized GT >= 0.5, label 1).
    cfg.MODEL.ADAPTIVECLICK.TARGETS = "official"
    # Class weights of the click CE: "official" ([1, NO_OBJECT_WEIGHT]: the object class index 1 is
    # down-weighted, quirk 2) or "clean" ([NO_OBJECT_WEIGHT, 1]: the unmatched class 0 is down-weighted).
    cfg.MODEL.ADAPTIVECLICK.CLASS_WEIGHTS = "official"
    cfg.MODEL.ADAPTIVECLICK.NO_OBJECT_WEIGHT = 0.1
    # Loss weights lambda_cls, lambda_mask (AFL or MODEL.LOSS.NAME), lambda_dice.
    cfg.MODEL.ADAPTIVECLICK.CLASS_WEIGHT = 2.0
    cfg.MODEL.ADAPTIVECLICK.MASK_WEIGHT = 5.0
    cfg.MODEL.ADAPTIVECLICK.DICE_WEIGHT = 5.0
    # Extra factors of the official total loss for (class, dice, mask) terms: 0.3 / 0.3 / 0.4.  The paper has
    # only the lambdas: use [1.0, 1.0, 1.0].
    cfg.MODEL.ADAPTIVECLICK.LOSS_MIX = [0.3, 0.3, 0.4]
    # Overall factor of the instance losses (official instance_loss_weight 1.0).
    cfg.MODEL.ADAPTIVECLICK.INSTANCE_LOSS_WEIGHT = 1.0
    # Supervise every decoder prediction (10) with its own matching.
    cfg.MODEL.ADAPTIVECLICK.DEEP_SUPERVISION = True
    # Mask losses on Mask2Former's importance-sampled points instead of the full stride-4 grid.  The official
    # code computes them on the full grid (False); its 12544 / 3.0 / 0.75 settings are carried but unused.
    cfg.MODEL.ADAPTIVECLICK.POINT_SAMPLING = False
    cfg.MODEL.ADAPTIVECLICK.TRAIN_NUM_POINTS = 12544
    cfg.MODEL.ADAPTIVECLICK.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.ADAPTIVECLICK.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Hungarian matcher: cost weights; mask cost "afl" (the official pairwise AFL variant, quirk 3), "bce" or
    # "focal"; NUM_POINTS 0 = full grid (official), > 0 = shared uniform random points (Mask2Former).
    cfg.MODEL.ADAPTIVECLICK.MATCHER = CN()
    cfg.MODEL.ADAPTIVECLICK.MATCHER.COST_CLASS = 2.0
    cfg.MODEL.ADAPTIVECLICK.MATCHER.COST_MASK = 5.0
    cfg.MODEL.ADAPTIVECLICK.MATCHER.COST_DICE = 5.0
    cfg.MODEL.ADAPTIVECLICK.MATCHER.COST_MASK_TYPE = "afl"
    cfg.MODEL.ADAPTIVECLICK.MATCHER.NUM_POINTS = 0
    # Parameters of the AFL matching cost (official epsilon 0.5, gamma0 2, delta 0.4, alpha 1).
    cfg.MODEL.ADAPTIVECLICK.MATCHER.AFL_EPSILON = 0.5
    cfg.MODEL.ADAPTIVECLICK.MATCHER.AFL_GAMMA = 2.0
    cfg.MODEL.ADAPTIVECLICK.MATCHER.AFL_DELTA = 0.4
    cfg.MODEL.ADAPTIVECLICK.MATCHER.AFL_ALPHA = 1.0
    # Parameters of the focal matching cost.
    cfg.MODEL.ADAPTIVECLICK.MATCHER.FOCAL_ALPHA = 0.25
    cfg.MODEL.ADAPTIVECLICK.MATCHER.FOCAL_GAMMA = 2.0

    # SimpleClickBaseline head (meta-architecture "SimpleClickBaseline"; its loss is MODEL.LOSS.NAME).
    cfg.MODEL.SIMPLE_HEAD = CN()
    cfg.MODEL.SIMPLE_HEAD.CHANNELS = 256
    cfg.MODEL.SIMPLE_HEAD.DROPOUT = 0.1
    cfg.MODEL.SIMPLE_HEAD.NORM = "BN"
    cfg.MODEL.SIMPLE_HEAD.LOSS_WEIGHT = 1.0


def _add_loss_config(cfg):
    # Adaptive Focal Loss and loss zoo (adaptiveclick.losses; model.md §5.4-§5.5).
    cfg.MODEL.LOSS = CN()
    # Mask loss of the criterion (and of SimpleClickBaseline): adaptive_focal_loss (afl), bce, weighted_bce
    # (wbce), balanced_ce, soft_iou, focal (fl), normalized_focal (nfl), poly, dice.
    cfg.MODEL.LOSS.NAME = "adaptive_focal_loss"
    cfg.MODEL.LOSS.WBCE = CN()
    # Weight of the positive term; illegible in the paper, 2.0 is our choice.
    cfg.MODEL.LOSS.WBCE.POS_WEIGHT = 2.0
    cfg.MODEL.LOSS.FOCAL = CN()
    # alpha-balancing (alpha < 0: off) and gamma; defaults of the isegm code base.
    cfg.MODEL.LOSS.FOCAL.ALPHA = 0.25
    cfg.MODEL.LOSS.FOCAL.GAMMA = 2.0
    cfg.MODEL.LOSS.NFL = CN()
    # RITM's normalised focal loss; RITM/SimpleClick training configs use ALPHA 0.5.
    cfg.MODEL.LOSS.NFL.ALPHA = 0.25
    cfg.MODEL.LOSS.NFL.GAMMA = 2.0
    cfg.MODEL.LOSS.POLY = CN()
    # Poly-1 focal loss: focal (alpha-balancing off by default) + EPSILON * (1 - p_t)^(gamma + 1).
    cfg.MODEL.LOSS.POLY.ALPHA = -1.0
    cfg.MODEL.LOSS.POLY.GAMMA = 2.0
    cfg.MODEL.LOSS.POLY.EPSILON = 1.0
    # Adaptive Focal Loss, official defaults (criterion.py L122-165 of lab206/AdaptiveClick; delta 0.4 is the
    # paper's Table XII choice).  EPSILON < 0 turns off the class weighting epsilon*y + (1-epsilon)*(1-y);
    # ADA False keeps gamma fixed; AGR False sets the gradient re-weighting factor to 1.
    cfg.MODEL.AFL = CN()
    cfg.MODEL.AFL.EPSILON = 0.5
    cfg.MODEL.AFL.GAMMA = 2.0
    cfg.MODEL.AFL.DELTA = 0.4
    cfg.MODEL.AFL.ALPHA = 1.0
    cfg.MODEL.AFL.EPS = 1e-12
    cfg.MODEL.AFL.ADA = True
    cfg.MODEL.AFL.AGR = True


def _add_clicks_config(cfg):
    # Click simulation (adaptiveclick.clicks) and the training mapper (adaptiveclick.data.mapper).
    # Defaults: AdaptiveClick's SBD recipe (models/iter_mask/adaptiveclick_base448_sbd_itermask.py;
    # /work/shared/spec/protocol.md B.1-B.5).  COCO+LVIS configs override the keys marked "COCO+LVIS".
    # Images are RGB throughout (data contract); the mapper refuses any other format.
    cfg.INPUT.FORMAT = "RGB"

    cfg.INPUT.CLICKS = CN()
    # K: the most clicks of each polarity; the mapped "clicks" array has 2K rows (positive slots 0..K-1,
    # negative slots K..2K-1).
    cfg.INPUT.CLICKS.MAX_NUM_POINTS = 24
    # Click counts: P(n+ = 1 + j) and P(n- = j) proportional to PROB_GAMMA ** j.
    cfg.INPUT.CLICKS.PROB_GAMMA = 0.8
    # Probability of merging objects into one target when the sample has >= 2 objects.
    cfg.INPUT.CLICKS.MERGE_OBJECTS_PROB = 0.15
    # The most objects merged into one target (k uniform in [2, min(#objects, this)]).
    cfg.INPUT.CLICKS.MAX_NUM_MERGED_OBJECTS = 2
    # Width of the "border" negative region: ceil(EXPAND_RATIO * sqrt(target area)) 3x3 dilations.
    cfg.INPUT.CLICKS.EXPAND_RATIO = 0.1
    # Positives are sampled from the object eroded POSITIVE_ERODE_ITERS times (3x3) with this probability
    # (the eroded mask is used only if more than 10 pixels remain).
    cfg.INPUT.CLICKS.POSITIVE_ERODE_PROB = 0.9
    cfg.INPUT.CLICKS.POSITIVE_ERODE_ITERS = 3
    # Probabilities of the negative regions (background, other objects, border ring) per negative click.
    cfg.INPUT.CLICKS.NEGATIVE_STRATEGY_PROBS = [0.1, 0.4, 0.5]
    # Objects smaller than this (pixels, after augmentation) are removed. AdaptiveClick SBD 20
    # (SimpleClick/RITM SBD 80); COCO+LVIS 1000.
    cfg.INPUT.CLICKS.MIN_OBJECT_AREA = 20
    # Probability of accepting an augmentation that left no object (else redrawn). COCO+LVIS 0.05.
    cfg.INPUT.CLICKS.KEEP_BACKGROUND_PROB = 0.01
    # Probability that a sample's stuff segments (COCO+LVIS ids >= num_instance_masks) join as target objects;
    # otherwise they are erased to background (RITM CocoLvisDataset stuff_prob; COCO+LVIS recipe 0.30).
    cfg.INPUT.CLICKS.STUFF_PROB = 0.0
    # Iterative training: the number of extra no-grad click rounds per batch is uniform in
    # [0, MAX_NUM_NEXT_CLICKS] (read by the trainer; adaptiveclick.clicks.next_training_click).
    cfg.INPUT.CLICKS.MAX_NUM_NEXT_CLICKS = 3

    # Training augmentation (albumentations 0.5.2 semantics of the official recipes).
    cfg.INPUT.AUG = CN()
    # (H, W) of the training crop; smaller images are zero-padded (centred) first.
    cfg.INPUT.AUG.CROP_SIZE = [448, 448]
    # Uniform resize factor range, one factor for both sides. COCO+LVIS [0.75, 1.40].
    cfg.INPUT.AUG.SCALE_RANGE = [0.75, 1.25]
    # "any" (horizontal / vertical / both, uniformly), "horizontal" (COCO+LVIS) or "none".
    cfg.INPUT.AUG.FLIP = "any"
    cfg.INPUT.AUG.FLIP_PROB = 0.5
    # Probability of k quarter turns, k uniform in 0..3. COCO+LVIS 0.0.
    cfg.INPUT.AUG.ROTATE90_PROB = 0.5
    # ShiftScaleRotate without scaling: probability (COCO+LVIS 0.0), shift limit (fraction of the side),
    # rotation limit (degrees); constant 0 border.
    cfg.INPUT.AUG.SHIFT_ROTATE_PROB = 0.75
    cfg.INPUT.AUG.SHIFT_LIMIT = 0.03
    cfg.INPUT.AUG.ROTATE_LIMIT = 3.0
    # RandomBrightnessContrast: v -> clip((1 + c) * v + b * 255), b ~ U(BRIGHTNESS_RANGE), c ~ U(CONTRAST_RANGE).
    cfg.INPUT.AUG.BRIGHTNESS_RANGE = [-0.25, 0.25]
    cfg.INPUT.AUG.CONTRAST_RANGE = [-0.15, 0.4]
    cfg.INPUT.AUG.BRIGHTNESS_CONTRAST_PROB = 0.75
    # RGBShift: each channel shifted by U(-RGB_SHIFT, RGB_SHIFT) grey levels, with probability RGB_SHIFT_PROB.
    cfg.INPUT.AUG.RGB_SHIFT = 10.0
    cfg.INPUT.AUG.RGB_SHIFT_PROB = 0.75
    # The most augmentation draws per sample while looking for one that keeps an object (the official
    # loop is unbounded); after that the empty sample is used, with a warning.
    cfg.INPUT.AUG.MAX_ATTEMPTS = 100


def _add_noc_config(cfg):
    # NoC evaluation (adaptiveclick.evaluation; /work/shared/spec/protocol.md A.2-A.7).  Defaults: the
    # AdaptiveClick/SimpleClick evaluation script (scripts/evaluate_model.py, "cvpr" zoom-in mode, flip on).
    cfg.TEST.NOC = CN()
    # Clicks per instance; an instance that never reaches a threshold gets NoC = MAX_CLICKS (a failure).
    cfg.TEST.NOC.MAX_CLICKS = 20
    # IoU thresholds of the reported NoC@t / NoF@t (each must be <= STOP_IOU).
    cfg.TEST.NOC.IOU_THRESHOLDS = [0.85, 0.90]
    # tau: an instance stops at the first click with IoU >= STOP_IOU.  Set > 1 (e.g. 1.01) to run all
    # MAX_CLICKS clicks, which mIoU@k and the IoU-vs-clicks curve need.
    cfg.TEST.NOC.STOP_IOU = 0.90
    # Binary prediction for IoU and oracle: probability > PRED_THRESHOLD (strict).
    cfg.TEST.NOC.PRED_THRESHOLD = 0.49
    # Horizontal-flip test-time augmentation (logits of the image and its mirror averaged).
    cfg.TEST.NOC.FLIP = True
    # Datasets evaluated by tools/evaluate_noc.py and noc_test() when none are named; empty = DATASETS.TEST.
    cfg.TEST.NOC.DATASETS = []
    # Zoom-in (protocol.md A.5): crop the network input to an ROI around the previous mask and the
    # positive clicks, resized to TARGET_SIZE (aspect ratio not preserved).
    cfg.TEST.NOC.ZOOM_IN = CN()
    cfg.TEST.NOC.ZOOM_IN.ENABLED = True
    # (H, W) of the network input after zoom-in.
    cfg.TEST.NOC.ZOOM_IN.TARGET_SIZE = [448, 448]
    # Datasets (names, case-insensitive) evaluated with LARGE_TARGET_SIZE instead (official: DAVIS, 672).
    cfg.TEST.NOC.ZOOM_IN.LARGE_TARGET_DATASETS = ["davis"]
    cfg.TEST.NOC.ZOOM_IN.LARGE_TARGET_SIZE = [672, 672]
    # ROI = box of (previous probability > PROB_THRESHOLD) and positive clicks, each side scaled by
    # EXPANSION_RATIO about its centre and at least MIN_CROP_SIZE pixels.
    cfg.TEST.NOC.ZOOM_IN.EXPANSION_RATIO = 1.4
    cfg.TEST.NOC.ZOOM_IN.MIN_CROP_SIZE = 200
    cfg.TEST.NOC.ZOOM_IN.PROB_THRESHOLD = 0.5
    # The stored ROI is replaced when a positive click leaves it or the new box's IoU with it is below this.
    cfg.TEST.NOC.ZOOM_IN.RECOMPUTE_IOU = 0.5


def _add_datasets_config(cfg):
    # Dataset roots and the synthetic dataset (adaptiveclick.data.datasets; expected trees in datasets/README.md).
    # Importing adaptiveclick.data registers every built-in name with these defaults;
    # adaptiveclick.data.datasets.register_datasets_from_config(cfg) re-registers them from a config.
    # Folder holding every dataset's sub-folder (SBD/dataset, GrabCut, DAVIS, ...); "" = the environment
    # variable ADAPTIVECLICK_DATASETS, else ./datasets.
    cfg.DATASETS.ROOT = ""
    # PascalVOC object labels: "grey" (official: palette colours converted to grey, void 220; instances with
    # palette indices 1/16, 3/18, 6/21, 9/24 merge) or "index" (palette indices, void 255; protocol.md A.8).
    cfg.DATASETS.PASCALVOC_LABELS = "grey"
    # ssTEM objects: the 8- or 4-connected components of the mitochondria mask.  8 is what the official loader
    # computes (it means 4, but passes it where OpenCV expects the labels output; folders.SSTEM_CONNECTIVITY).
    cfg.DATASETS.SSTEM_CONNECTIVITY = 8
    # Built-in synthetic dataset "synthetic_train" / "synthetic_val" (procedural images, no download);
    # register_synthetic_from_config(cfg) re-registers both with these values.
    cfg.DATASETS.SYNTHETIC = CN()
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN = 2000
    cfg.DATASETS.SYNTHETIC.NUM_VAL = 50
    # Side of the square images in pixels (>= 32).
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 256
    # Generation seeds of the training and validation images; they must differ.
    cfg.DATASETS.SYNTHETIC.SEED = 0
    cfg.DATASETS.SYNTHETIC.VAL_SEED = 1
    # Where generated images are cached (PNG + RLE JSON); "" = $ADAPTIVECLICK_CACHE, else ~/.cache/adaptiveclick.
    cfg.DATASETS.SYNTHETIC.CACHE_DIR = ""


def _add_trainer_config(cfg):
    # Iterative-click training (adaptiveclick.engine, tools/train_net.py; model.md §6, protocol.md B.4/B.7).
    # Defaults: the official recipe (models/iter_mask/adaptiveclick_*_itermask.py of lab206/AdaptiveClick):
    # Adam, lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0, fp32, no warm-up, no clipping; SBD at
    # batch 32 = 265 iterations per epoch, 60 epochs, one x0.1 drop after epoch 40.
    cfg.SOLVER.IMS_PER_BATCH = 32
    cfg.SOLVER.BASE_LR = 5e-5
    cfg.SOLVER.MAX_ITER = 15900
    # detectron2's WarmupMultiStepLR: the LR is multiplied by GAMMA at each of STEPS (iterations).
    cfg.SOLVER.STEPS = (10600,)
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    # "ADAM" (official), "ADAMW" (decoupled weight decay) or "SGD" (SOLVER.MOMENTUM / NESTEROV).
    cfg.SOLVER.OPTIMIZER = "ADAM"
    cfg.SOLVER.BETAS = [0.9, 0.999]
    cfg.SOLVER.EPS = 1e-8
    # Adam/AdamW through PyTorch's fused kernel (fused=True: one kernel per parameter group, where the default
    # implementation dispatches ~18 operators per parameter, ~3500 per ViT-B step, each a kernel launch on a
    # GPU; on the 2-core CPU a ViT-B update took 139 ms instead of 469 ms).  The same update up to float
    # rounding.  Used where the installed torch supports it for the parameters' device (else the default
    # implementation, with a log line); False = always the default implementation.
    cfg.SOLVER.FUSED = True
    # LR factor of every parameter under model.backbone (ViT + simple pyramid); official 1.0.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Layer-wise LR decay of the ViT (BEiT/MAE rule: embeddings x d^(L+1), block i x d^(L-i), rest x 1;
    # L = depth).  1.0 = off (official scripts; SimpleClick's trainer offers 0.75 but never enables it).
    cfg.SOLVER.LAYER_DECAY = 1.0
    # Gradient clipping (detectron2 keys; official: off).  CLIP_TYPE "value" (each gradient entry), "norm"
    # (each parameter's gradient norm) or "full_model" (the norm of all gradients together).  With AMP the
    # gradients are unscaled before clipping.
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    # Mixed precision: SOLVER.AMP.ENABLED (detectron2 key; official fp32 = False) and the autocast dtype:
    # "float16" (with a gradient scaler) or "bfloat16" (no scaler; the only choice that helps on CPU).
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Periodic checkpoints (SOLVER.CHECKPOINT_PERIOD, detectron2 key) are written atomically; keep only the
    # newest CHECKPOINT_MAX_TO_KEEP of them (0 = keep all; model_final.pth is never deleted).
    cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0

    cfg.TRAINER = CN()
    # Training IoU of the final prediction (an extra no-grad forward) is logged every this many iterations
    # (0 = never); the losses, the click rounds and the clicks per sample are logged every iteration.
    cfg.TRAINER.TRAIN_IOU_PERIOD = 20
    # DistributedDataParallel(find_unused_parameters=...): needed only for models with unused parameters.
    cfg.TRAINER.FIND_UNUSED_PARAMETERS = False
    # NoC evaluation (TEST.NOC, on TEST.NOC.DATASETS or DATASETS.TEST) every TEST.EVAL_PERIOD iterations
    # (0 = never) and, if EVAL_AFTER_TRAIN, once after the last iteration.
    cfg.TRAINER.EVAL_AFTER_TRAIN = True
    # After the final evaluation (and with --eval-only), OUTPUT_DIR/example.png shows the first object of
    # the first evaluated dataset with its clicks and predicted mask after each of these click counts
    # (empty = no picture).
    cfg.TRAINER.EXAMPLE_CLICKS = [1, 2, 3, 5]
    # The training loader pins its batches in page-locked host memory when the model trains on CUDA, so that
    # the model's host-to-device copies (non_blocking) overlap with the GPU's work (issue 10's data-loading
    # lever); ignored on the CPU.  Workers: DATALOADER.NUM_WORKERS (detectron2 key, default 4 per process).
    cfg.DATALOADER.PIN_MEMORY = True
    # detectron2 key, default changed: images without objects (SBD images whose every object fails the
    # box-fill filter, COCO+LVIS images of stuff only) stay in training as background samples, as in RITM /
    # the official code, where they reach the sampler and become empty samples (no positive click).
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Images drawn with probabilities (1 - score) ** GAMMA from a RITM sample-weights file (the official SBD
    # recipe: assets/sbd_samples_weights.pkl of RITM / lab206/AdaptiveClick, gamma 1.25; model.md §6.1) instead
    # of detectron2's shuffled epochs.  FILE: a list of (index, image id, score) tuples; a relative path is
    # looked up from the working directory, then under the datasets root.  "" = no weights (see
    # DATALOADER.SAMPLE_WITH_REPLACEMENT).
    cfg.DATALOADER.SAMPLE_WEIGHTS = CN()
    cfg.DATALOADER.SAMPLE_WEIGHTS.FILE = ""
    cfg.DATALOADER.SAMPLE_WEIGHTS.GAMMA = 1.0
    # Without a weights file: True draws every training image i.i.d. uniformly, with replacement, as the
    # official COCO+LVIS recipe (RITM's ISDataset with epoch_len: np.random.randint over the whole dataset per
    # sample; the COCO+LVIS configs set it); False walks detectron2's shuffled epochs (TrainingSampler).  The
    # expected number of draws per image is the same either way.  With a weights file drawing is always i.i.d.
    cfg.DATALOADER.SAMPLE_WITH_REPLACEMENT = False


def add_adaptiveclick_config(cfg):
    """Add every adaptiveclick key (with its default) to a detectron2 ``CfgNode``, in place."""
    import torch

    # detectron2 defaults MODEL.DEVICE to "cuda"; we default to the GPU only when one is usable, so that every
    # config also runs on a CPU-only machine (set MODEL.DEVICE explicitly to override).
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    _add_msda_config(cfg)
    _add_model_config(cfg)
    _add_loss_config(cfg)
    _add_clicks_config(cfg)
    _add_noc_config(cfg)
    _add_datasets_config(cfg)
    _add_trainer_config(cfg)
    return cfg


def load_config_file(config_file, opts=()):
    """A new (unfrozen) config: detectron2 defaults + the adaptiveclick keys + ``config_file`` + ``opts``
    (KEY VALUE ...).  A missing file raises FileNotFoundError naming it, an odd ``opts`` ValueError; unknown
    keys raise as in detectron2, naming the key."""
    import os

    from detectron2.config import get_cfg

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file!r}")
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got an odd number: {opts}")
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg
