"""Named layer groups (the unit of hybrid precision and sensitivity analysis): defined in
engines/groups.py, since the hf engine applies hybrid precision at load; re-exported here."""

from voxmeter.engines.groups import (
    CONV,
    DECODER,
    EMBED,
    ENCODER,
    PROJ,
    group_of,
    is_linear,
    layer_groups,
)

__all__ = ["CONV", "DECODER", "EMBED", "ENCODER", "PROJ", "group_of", "is_linear", "layer_groups"]
