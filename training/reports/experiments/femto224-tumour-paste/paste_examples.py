"""Draw 16 training no-tumour slices beside themselves with a pasted tumour (left: as packed, right: pasted).

usage: python paste_examples.py PACK RUN_DIR OUT.jpg   (from the repository root; the run's split.json names the
training slices)
"""
import json
import sys

import cv2
import numpy as np
import torch

from training.data import PackedDataset
from training.sources import GLIOMA, NOTUMOR
from training.train import TrainSplit
from training.tumour_paste import paste_pools, paste_tumours

pack, run, out = sys.argv[1:4]
data = PackedDataset.load(pack)
train = TrainSplit.from_json(json.load(open(f"{run}/split.json"))).train
pools = paste_pools(data.sequence, data.labels, data.masks, data.mask_known, train, GLIOMA, NOTUMOR)
print("donors per sequence", {k: len(v) for k, v in pools.donors.items()}, "recipients", int(pools.recipient.sum()))
generator = torch.Generator().manual_seed(1)
recipients = torch.nonzero(pools.recipient).flatten()
batch = recipients[torch.randperm(len(recipients), generator=generator)[:16]]
images = torch.from_numpy(data.images[batch.numpy()]).unsqueeze(1)
pasted, _ = paste_tumours(images, torch.from_numpy(data.labels[batch.numpy()]).long(), batch,
                          torch.from_numpy(data.images).unsqueeze(1), torch.from_numpy(data.masks), pools, 1.0, GLIOMA,
                          generator)
pairs = [np.hstack([images[i, 0].numpy(), pasted[i, 0].numpy()]) for i in range(16)]
cv2.imwrite(out, np.vstack([np.hstack(pairs[i:i + 4]) for i in range(0, 16, 4)]), [cv2.IMWRITE_JPEG_QUALITY, 85])
