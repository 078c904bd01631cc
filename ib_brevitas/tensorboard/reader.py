"""Records and phase events back out of a run's TensorBoard event files (no TensorBoard server).

`RunDir.load` falls back to this for runs that have event files but no
`mi.jsonl`; it decodes the plugin's data exactly as the dashboard does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ib_brevitas.records import LayerMI, record_from_dict


@dataclass
class _Datum:
    step: int
    wall_time: float
    numpy: Any


def read_event_files(paths: Iterable[Path]) -> tuple[list[LayerMI], list[Any]]:
    """(records sorted by layer and epoch, phase events) of the plugin's data in these files."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    from ib_brevitas.phases import PhaseEvent
    from ib_brevitas.tensorboard import LAYER_TAG_PREFIX, PHASES_TAG
    from ib_brevitas.tensorboard.plugin import current_data

    data: dict[str, list[_Datum]] = defaultdict(list)
    for path in paths:
        for event in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value if event.HasField("summary") else ():
                if value.tag.startswith(LAYER_TAG_PREFIX) or value.tag == PHASES_TAG:
                    data[value.tag].append(_Datum(event.step, event.wall_time, tensor_util.make_ndarray(value.tensor)))
    layer_tags = [t for t in data if t.startswith(LAYER_TAG_PREFIX)]
    current = current_data(data, layer_tags)  # drops what a resumed run re-wrote
    records = [
        record_from_dict(json.loads(d.numpy.item()), f"{tag} at step {d.step}")
        for tag in layer_tags for d in current[tag]
    ]
    events, seen = [], set()
    for d in current.get(PHASES_TAG, []):
        for e in json.loads(d.numpy.item()):
            key = json.dumps(e, sort_keys=True)
            if key not in seen:
                seen.add(key)
                events.append(PhaseEvent.from_dict(e))
    return sorted(records, key=lambda r: (r.layer_index, r.epoch)), events
