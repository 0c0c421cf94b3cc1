"""Dataset audit: explain, embed and assess every image of a folder, then cluster the explanations to hunt
shortcuts (SpRAy-style), with a resumable, streaming pipeline on this machine or on Ray.

- ``pipeline``: the per-batch step (decode, trust assessment, embedding, maps, summaries) both engines run.
- ``summaries``: thorax-box, border and corner shares of a map; the small stored copy of each map.
- ``store``: the audit folder (settings, atomic Parquet parts, results) and resuming.
- ``engines``: local and Ray Data execution, and ``audit`` which runs a whole audit.
- ``clusters`` / ``finish``: clustering of the maps, per-cluster statistics, the edge ranking, the result files.
"""

from core.audit.clusters import cluster_maps, edge_ranking
from core.audit.engines import ENGINES, audit
from core.audit.finish import finish, load
from core.audit.pipeline import AuditConfig, Auditor, list_items
from core.audit.summaries import summarise

__all__ = ["ENGINES", "AuditConfig", "Auditor", "audit", "cluster_maps", "edge_ranking", "finish", "list_items",
           "load", "summarise"]
