"""What the command-line tools share: the config of a ``default_argument_parser`` run."""

from typing import Sequence

__all__ = ["setup_cfg"]


def setup_cfg(args, extra_opts: Sequence = ()):
    """Frozen config from ``args.config_file``, ``args.opts`` then ``extra_opts`` (KEY, VALUE, ... with any
    value type), with detectron2's ``default_setup`` (output folder, config dump, environment log, seed) and
    the ``adaptiveclick`` logger writing to ``OUTPUT_DIR``.  Unknown keys raise, naming the key."""
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + list(extra_opts))
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="adaptiveclick")
    return cfg
