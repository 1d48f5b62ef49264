"""Self-contained HTML reports: figures are embedded as base64 PNG, so no network is needed to
view one.
"""

from .dataset_inference import write_dataset_inference_report
from .demo import write_demo_report
from .extract import write_extract_report
from .kk import write_kk_report
from .mia import write_mia_report
from .overlap import write_overlap_report
from .recall import write_recall_report
from .retention import write_retention_report
from .temporal import write_temporal_report
from .traps import write_traps_report
from .unlearn import write_unlearn_report

__all__ = [
    "write_dataset_inference_report",
    "write_demo_report",
    "write_extract_report",
    "write_kk_report",
    "write_mia_report",
    "write_overlap_report",
    "write_recall_report",
    "write_retention_report",
    "write_temporal_report",
    "write_traps_report",
    "write_unlearn_report",
]
