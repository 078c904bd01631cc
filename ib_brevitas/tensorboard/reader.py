"""Records and phase events back out of a run's TensorBoard event files (no TensorBoard server).

`RunDir.load` falls back to this for runs that have event files but no
`mi.jsonl`; it decodes both wire formats exactly as the dashboard does (see
`wire`). Unlike the dashboard, which skips and counts bad data, a file that
holds bad or future-version data is refused here with a message: what
`plot` and `phases` compute from it must not be silently incomplete.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ib_brevitas.records import LayerMI


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
    from ib_brevitas.tensorboard import LAYER_TAG_PREFIX, PHASES_TAG, PLUGIN_NAME, wire
    from ib_brevitas.tensorboard.views import current_data

    paths = list(paths)
    data: dict[str, list[_Datum]] = defaultdict(list)
    contents: dict[str, dict[str, Any]] = {}
    for path in paths:
        for event in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value if event.HasField("summary") else ():
                if not (wire.is_measurement_tag(value.tag) or value.tag == PHASES_TAG):
                    continue
                if value.tag not in contents and value.metadata.plugin_data.plugin_name == PLUGIN_NAME:
                    try:
                        contents[value.tag] = json.loads(value.metadata.plugin_data.content or b"{}")
                    except ValueError:
                        contents[value.tag] = {}
                data[value.tag].append(_Datum(event.step, event.wall_time, tensor_util.make_ndarray(value.tensor)))
    where = ", ".join(str(p) for p in paths)
    tags = [t for t in data if wire.is_measurement_tag(t)]
    current = current_data(data, tags)  # drops what a resumed run re-wrote
    decoded = wire.Decoded()
    for tag in tags:
        content = contents.get(tag, {})
        problem = wire.check_version(content if isinstance(content, dict) else {}, tag)
        if problem:
            raise ValueError(f"{where}: {problem}")
        arrays = [d.numpy for d in current[tag]]
        if tag.startswith(LAYER_TAG_PREFIX):
            wire.decode_v1(decoded, tag, arrays)
        else:
            wire.decode_v2(decoded, tag, content, arrays)
    if decoded.skipped or decoded.warnings:
        raise ValueError(f"{where}: {decoded.skipped} information-plane values are corrupt "
                         f"{'; '.join(decoded.warnings)}; the run's mi.jsonl (if you have it) holds the records")
    events, seen = [], set()
    for d in current.get(PHASES_TAG, []):
        for e in wire.load_json(d.numpy):
            key = json.dumps(e, sort_keys=True)
            if key not in seen:
                seen.add(key)
                events.append(PhaseEvent.from_dict(e))
    return wire.to_records(decoded.finish()), events
