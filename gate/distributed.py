"""More than one GPU on one runner: generation split across processes with accelerate.

    accelerate launch --multi_gpu --num_processes 4 -m gate check --device cuda ...

Every process loads the model on its own device (``cuda:<local rank>``) and makes its share of
each side's uncached images (the batches a single process would make, dealt round-robin by
rank, so that every image comes out of the same batch, bit for bit) into the image
cache, which is how the images travel: they are the same files a single-process run writes,
under the same keys. After each side the processes wait for each other; the main process then
reads every image from the cache, scores, judges, writes the reports and tracks; the others
exit 0. The pre-screen runs on the main process only. A single process (no ``WORLD_SIZE``, or 1)
is the plain path. On a CPU the same works with ``--device cpu`` (gloo; how it is tested here).

accelerate turns any process's non-zero exit into its own exit 1 (with a launcher traceback):
under it, read the verdict from the main process's report.json and its last line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gate.errors import BadInput


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def split(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, items: list) -> list:
        """This process's share of ``items`` (round-robin by rank)."""
        return items[self.rank :: self.world]

    def device(self, requested: str) -> str:
        """Each process on its own GPU: ``cuda`` means ``cuda:<local rank>`` under a launcher."""
        if self.split and requested == "cuda":
            return f"cuda:{self.local_rank}"
        if self.split and requested.startswith("cuda:"):
            raise BadInput(
                f"--device {requested}: under accelerate launch give --device cuda; each process takes its own GPU"
            )
        return requested


def current(device: str) -> Processes:
    """The process group this run is part of (a single process unless launched with several)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=str(device).startswith("cpu"))
    return Processes(state.process_index, state.num_processes, state.local_process_index, state)
