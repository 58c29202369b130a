"""Run by tests/test_parallel.py under `torchrun --nproc_per_node 2` (CPU, gloo): not a test module itself.

1. `ssl3d pretrain` as the command line runs it (the same function), in two processes.
2. One epoch of RPL under `data_parallel`, recording the (scan, crop) pairs each process
   iterated and a checksum of the weights it ended with; each rank writes them to OUT/rank<r>.json.
"""
import json, sys
from pathlib import Path
from fastai.callback.core import Callback
from ssl3d_nb.cli import pretrain
from ssl3d_nb.data import ScanDL, scan_dls
from ssl3d_nb.io import find_scans
from ssl3d_nb.preprocess import Preprocess
from ssl3d_nb.parallel import data_parallel, init_distributed
from ssl3d_nb.tasks import pretrain_learner
from ssl3d_nb.core import set_seed

data, out = Path(sys.argv[1]), Path(sys.argv[2])
rank, world = init_distributed()
pretrain(task='rpl', data=str(data), out=str(out/'run'), epochs=2, steps=3, bs=2, size=48)


ORDERS = []          # every order `ScanDL.get_idxs` made during the fit, in this process
_scan_order = ScanDL.get_idxs
def recording(self):
    idxs = _scan_order(self)
    if RECORD: ORDERS.append([[int(i), list(map(int, c))] for i, c in idxs])
    return idxs
ScanDL.get_idxs = recording
RECORD = False


class Seen(Callback):
    "What this process trained on: its shard of the epoch, the number of batches, the model's type during the fit."
    order = 0
    def before_fit(self):
        global RECORD; RECORD = True
        self.batches, self.shard = 0, None
    def before_batch(self):
        if not self.training: return
        self.batches += 1; self.model_type = type(self.learn.model).__name__
        if self.shard is None: self.shard = [[int(i), list(map(int, c))] for i, c in self.dl._DataLoader__idxs]


set_seed(0)
dls = scan_dls(find_scans(data), 48, pre=Preprocess(norm='zscore'), bs=2, seed=0, samples_per_scan=4)
seen = Seen()
learn = pretrain_learner('rpl', dls, seed=0, cbs=[seen])
with learn.no_bar(), learn.no_logging(), data_parallel(learn): learn.fit(1, 1e-3)
checksum = sum(float(p.double().sum()) for p in learn.model.parameters())
(out/f'rank{rank}.json').write_text(json.dumps(dict(rank=rank, world=world, shard=seen.shard, full=ORDERS[0], checksum=checksum,
                                                    model=seen.model_type, batches=seen.batches, n_train=dls.train.n)))
