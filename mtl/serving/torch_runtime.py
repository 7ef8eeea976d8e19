"""The torch runtime: the folder's PyTorch weights, loaded by `mtl.load`. Every folder fits (the table's last
resort for `auto`): a folder that is no model is then refused by `mtl.load`'s own message."""
from pathlib import Path

import torch

from mtl.predictor import Predictor
from mtl.serving.predictor_model import PredictorModel
from mtl.serving.runtime import LoadOptions


class TorchRuntime:
    """`mtl.load` on the device and precision asked for (with any folders of adapter tasks beside it, over one
    encoder); `threads` sets torch's intra-op threads."""

    def fits(self, folder: Path) -> bool:
        return True

    def load(self, folder: Path, options: LoadOptions) -> PredictorModel:
        if options.threads:
            torch.set_num_threads(options.threads)
        predictor = Predictor.from_folders([folder, *options.beside], options.device, options.precision,
                                           trust_code=options.trust_code, allowed_modules=list(options.allowed_modules),
                                           base=options.base)
        return PredictorModel(predictor, "torch")
